//! Two builds of a big component: its first use runs on a quick build
//! (Winch, [`crate::runtime::engine::baseline`]: an 18 MB componentize-py
//! component in ~1.5 s instead of ~6 s here) while an optimized build is
//! made by a background process at the lowest priority and cached; later
//! runs find the optimized build and use it.
//!
//! The background process is this binary started again with
//! [`OPTIMIZER_ARG`] (the `main` of the binary serves it, see
//! [`serve_optimizer_if_asked`]). It is handed the component's bytes through
//! `pending/KEY.wasm` in the cache directory, which also stands for "an
//! optimized build of KEY is under way": one process per component at a
//! time, taken over when older than [`PENDING_STALE`] (a process that died).

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::Result;
use sha2::Digest;
use wasmtime::component::Component;

use super::progress::{compile_showing_progress, Build};
use super::{engine_tag, entry, ComponentCache};
use crate::runtime::engine;

/// Components this big or bigger get a quick build first: below it,
/// Cranelift takes well under a second anyway.
pub const QUICK_SIZE: usize = 4 << 20;

/// The argument that makes the binary an optimizer (see the module docs).
pub const OPTIMIZER_ARG: &str = "__wfhost-optimize-component";

/// The cache directory's folder of components waiting for their optimized
/// build.
pub(super) const PENDING: &str = "pending";

/// A pending build older than this is taken to have died with its process.
pub(super) const PENDING_STALE: Duration = Duration::from_secs(600);

/// The program started as the optimizer, once enabled by the binary.
static OPTIMIZER: OnceLock<PathBuf> = OnceLock::new();

/// Let this process start background optimizers (the binary's `main`
/// calls this; without it, a quick build is all a process makes).
pub fn enable_optimizer() {
    // The binary's own path (as `ps` shows it), else the link to it.
    let program = std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/proc/self/exe"));
    let _ = OPTIMIZER.set(program);
}

/// The quick build of `wasm` (read from the cache, else compiled and
/// cached), with its optimized build started in the background.
pub(super) fn quick_build(dir: &Path, wasm: &[u8], label: &str, key: &str) -> Result<Component> {
    let engine = engine::baseline().map_err(anyhow::Error::msg)?;
    let path = dir.join(format!("{key}-{}.cwasm", engine_tag(engine)));
    let component = match entry::load(engine, &path) {
        Some(component) => component,
        None => {
            let component = compile_showing_progress(engine, wasm, label, Build::Quick)?;
            if let Err(error) = entry::store(dir, &path, &component) {
                tracing::warn!("cannot write component cache {}: {error:#}", path.display());
            }
            component
        }
    };
    if let Err(error) = optimize_in_background(dir, wasm, key) {
        tracing::debug!("cannot start the optimized build of {label}: {error:#}");
    }
    Ok(component)
}

/// Hand `wasm` to a background optimizer, unless one has it already.
fn optimize_in_background(dir: &Path, wasm: &[u8], key: &str) -> Result<()> {
    let Some(program) = OPTIMIZER.get() else {
        return Ok(());
    };
    let pending = dir.join(PENDING);
    std::fs::create_dir_all(&pending)?;
    let file = pending.join(format!("{key}.wasm"));
    let under_way = std::fs::metadata(&file)
        .and_then(|m| m.modified())
        .is_ok_and(|at| at.elapsed().unwrap_or_default() < PENDING_STALE);
    if under_way {
        return Ok(());
    }
    // Written whole under another name, then renamed: the optimizer never
    // reads a torn file (and checks the bytes hash to their key anyway).
    entry::replace(&file, wasm)?;
    // In a process group of its own: a Ctrl-C at the terminal stops the
    // run, not the build the next runs wait for (it would otherwise hold
    // the pending file, and the optimized build, off for PENDING_STALE).
    let mut optimizer = Command::new(program)
        .arg(OPTIMIZER_ARG)
        .arg(dir)
        .arg(&file)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .env_clear()
        .process_group(0)
        .spawn()?;
    // Reaped when it ends, so a long-lived host (a server, a worker)
    // leaves no zombie behind; a short run simply exits before it.
    std::thread::Builder::new()
        .name("wfhost-optimizer-wait".into())
        .spawn(move || optimizer.wait())?;
    Ok(())
}

/// When this process was started as an optimizer, make the optimized
/// build it was handed and exit; otherwise return at once. Called first
/// thing in the binary's `main`.
pub fn serve_optimizer_if_asked() {
    let args: Vec<_> = std::env::args_os().skip(1).collect();
    if let [arg, dir, file] = args.as_slice() {
        if arg == OPTIMIZER_ARG {
            std::process::exit(optimize(Path::new(dir), Path::new(file)));
        }
    }
}

/// The optimizer: compile the pending component with the shared
/// (optimizing) engine into the cache, at the lowest CPU priority, then
/// remove the pending file. Exit status 0 when the build is cached.
fn optimize(dir: &Path, file: &Path) -> i32 {
    // SAFETY: setpriority has no memory-safety preconditions; threads made
    // after this (the compiler's) inherit the priority.
    unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 19) };
    let built = (|| -> Result<()> {
        let wasm = std::fs::read(file)?;
        let key = hex::encode(sha2::Sha256::digest(&wasm));
        if file.file_stem() != Some(std::ffi::OsStr::new(&key)) {
            anyhow::bail!("{} does not hold the component it names", file.display());
        }
        let engine = engine::shared().map_err(anyhow::Error::msg)?;
        let cache: ComponentCache<Component> = ComponentCache::new(engine, Some(dir.into()));
        cache.compile(engine, &wasm, &key, &key)?;
        Ok(())
    })();
    let _ = std::fs::remove_file(file);
    match built {
        Ok(()) => 0,
        Err(_) => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn component() -> Vec<u8> {
        wat::parse_str(r#"(component (core module (func (export "f"))))"#).unwrap()
    }

    #[test]
    fn the_optimizer_builds_what_it_was_handed_and_refuses_a_misnamed_file() {
        let dir = tempfile::tempdir().unwrap();
        let pending = dir.path().join(PENDING);
        std::fs::create_dir_all(&pending).unwrap();
        let wasm = component();
        let key = hex::encode(sha2::Sha256::digest(&wasm));

        // Bytes that do not hash to the name: nothing is built, the file goes.
        let misnamed = pending.join(format!("{}.wasm", "0".repeat(64)));
        std::fs::write(&misnamed, &wasm).unwrap();
        assert_eq!(optimize(dir.path(), &misnamed), 1);
        assert!(!misnamed.exists());

        let file = pending.join(format!("{key}.wasm"));
        std::fs::write(&file, &wasm).unwrap();
        assert_eq!(optimize(dir.path(), &file), 0);
        assert!(!file.exists(), "the pending file is removed");
        let engine = engine::shared().unwrap();
        let built = dir
            .path()
            .join(format!("{key}-{}.cwasm", engine_tag(engine)));
        assert!(
            entry::load(engine, &built).is_some(),
            "the optimized build is cached"
        );
    }
}
