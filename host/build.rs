//! Builds the guest components (`plugins/`, a cargo workspace of its own) for
//! `wasm32-wasip2` and copies every resulting `.wasm` into `OUT_DIR`, where
//! `src/runtime/builtin.rs` embeds them with `include_bytes!`.
//!
//! The inner build runs
//! `cargo build --release --target wasm32-wasip2 --manifest-path <ws>/Cargo.toml
//! --target-dir <root>/target/<ws target dir>`: its own target directory, so
//! it never waits on the lock of the outer build, and always `--release`
//! (small, fast components whatever the host's profile). Variables the outer
//! cargo sets for build scripts (RUSTFLAGS, CARGO_TARGET_DIR, CARGO_FEATURE_*,
//! the jobserver ...) are removed from its environment.
//!
//! When the `wasm32-wasip2` target is missing, `rustup target add
//! wasm32-wasip2` is run first; if that fails the build fails with a message
//! saying what to do.

use std::collections::BTreeMap;
use std::env;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const WASM_TARGET: &str = "wasm32-wasip2";

/// A cargo workspace of guest crates built by this script.
struct GuestWorkspace {
    /// Directory of the workspace, relative to the repository root.
    dir: &'static str,
    /// Target directory, relative to `<root>/target`.
    target_dir: &'static str,
}

/// Every guest workspace built here: the built-in plugins, embedded in the
/// binary. The test-only hostile components (`tests/plugins/`) are built by
/// the tests that use them (`tests/common.rs`), so that a user's first
/// `cargo run` never waits for them.
const WORKSPACES: &[GuestWorkspace] = &[GuestWorkspace {
    dir: "plugins",
    target_dir: "wasm-plugins",
}];

fn main() {
    if let Err(message) = run() {
        // Cargo shows a build script's stderr when it fails.
        eprintln!("\nerror: building the wasm plugins failed:\n{message}\n");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let manifest_dir = PathBuf::from(env_var("CARGO_MANIFEST_DIR")?);
    let root = manifest_dir
        .parent()
        .ok_or("host crate has no parent directory")?
        .to_path_buf();
    let out_dir = PathBuf::from(env_var("OUT_DIR")?);

    println!("cargo:rerun-if-changed=build.rs");
    println!(
        "cargo:rerun-if-changed={}",
        root.join("plugins/sdk/wit").display()
    );

    ensure_wasm_target()?;

    for ws in WORKSPACES {
        let ws_dir = root.join(ws.dir);
        emit_rerun_if_changed(&ws_dir);
        let target_dir = root.join("target").join(ws.target_dir);
        let artifacts = cargo_build(&ws_dir, &target_dir)?;
        let dest_dir = out_dir.clone();
        fs::create_dir_all(&dest_dir)
            .map_err(|e| format!("cannot create {}: {e}", dest_dir.display()))?;
        for (name, path) in &artifacts {
            let dest = dest_dir.join(format!("{name}.wasm"));
            fs::copy(path, &dest).map_err(|e| {
                format!("cannot copy {} to {}: {e}", path.display(), dest.display())
            })?;
        }
        if artifacts.is_empty() {
            return Err(format!("{} produced no .wasm files", ws_dir.display()));
        }
    }
    Ok(())
}

fn env_var(name: &str) -> Result<String, String> {
    env::var(name).map_err(|_| format!("{name} is not set (not run by cargo?)"))
}

/// The `cargo` and `rustc` of the outer build: the same toolchain.
fn cargo() -> String {
    env::var("CARGO").unwrap_or_else(|_| "cargo".to_string())
}

fn rustc() -> String {
    env::var("RUSTC").unwrap_or_else(|_| "rustc".to_string())
}

/// Make sure the standard library for `wasm32-wasip2` is installed, running
/// `rustup target add` when it is not.
fn ensure_wasm_target() -> Result<(), String> {
    if wasm_target_installed() {
        return Ok(());
    }
    println!(
        "cargo:warning=the {WASM_TARGET} target is not installed; running `rustup target add {WASM_TARGET}`"
    );
    let status = Command::new("rustup")
        .args(["target", "add", WASM_TARGET])
        .stdout(Stdio::null())
        .status();
    match status {
        Ok(s) if s.success() && wasm_target_installed() => Ok(()),
        Ok(s) => Err(format!(
            "`rustup target add {WASM_TARGET}` failed ({s}); install the target by hand and build again"
        )),
        Err(e) => Err(format!(
            "the {WASM_TARGET} target is not installed and rustup could not be run ({e}); \
             install the target for this toolchain (`rustup target add {WASM_TARGET}`) and build again"
        )),
    }
}

fn wasm_target_installed() -> bool {
    let output = Command::new(rustc())
        .args(["--print", "target-libdir", "--target", WASM_TARGET])
        .stderr(Stdio::null())
        .output();
    match output {
        Ok(o) if o.status.success() => {
            let dir = String::from_utf8_lossy(&o.stdout).trim().to_string();
            // The directory exists (and holds libstd) only once installed.
            fs::read_dir(&dir).is_ok_and(|mut entries| {
                entries.any(|e| {
                    e.is_ok_and(|e| e.file_name().to_string_lossy().starts_with("libstd-"))
                })
            })
        }
        _ => false,
    }
}

/// Environment variables the outer cargo sets (for this build script or for
/// its own configuration) that must not reach the inner build.
fn must_clear(name: &str) -> bool {
    const EXACT: &[&str] = &[
        "RUSTFLAGS",
        "RUSTDOCFLAGS",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTC_LINKER",
        "CARGO_MAKEFLAGS",
        "MAKEFLAGS",
        "MFLAGS",
        "CARGO_PRIMARY_PACKAGE",
        "CARGO_CRATE_NAME",
        "CARGO_RUSTC_CURRENT_DIR",
        "CARGO_INCREMENTAL",
        "OUT_DIR",
        "TARGET",
        "HOST",
        "NUM_JOBS",
        "OPT_LEVEL",
        "DEBUG",
        "PROFILE",
    ];
    const PREFIXES: &[&str] = &[
        "CARGO_ENCODED_",  // CARGO_ENCODED_RUSTFLAGS, ..._RUSTDOCFLAGS
        "CARGO_TARGET_",   // CARGO_TARGET_DIR, CARGO_TARGET_<triple>_*
        "CARGO_BUILD_",    // CARGO_BUILD_TARGET, CARGO_BUILD_RUSTFLAGS, ...
        "CARGO_PROFILE_",  // the outer profile's settings
        "CARGO_FEATURE_",  // features of the host crate
        "CARGO_CFG_",      // cfg of the host target
        "CARGO_PKG_",      // the host package's metadata
        "CARGO_MANIFEST_", // the host's manifest
        "CARGO_BIN_",
        "CARGO_LLVM_",
        "DEP_", // `links` metadata
        "CLIPPY_",
        "__CARGO",
    ];
    EXACT.contains(&name) || PREFIXES.iter().any(|p| name.starts_with(p))
}

/// Build one workspace; returns component name → path of its `.wasm`: the
/// `cdylib` artifacts cargo reports for this build (never a stale file left
/// in the target directory by an older build or another crate).
fn cargo_build(ws_dir: &Path, target_dir: &Path) -> Result<BTreeMap<String, PathBuf>, String> {
    let manifest = ws_dir.join("Cargo.toml");
    let mut cmd = Command::new(cargo());
    cmd.args(["build", "--release", "--target", WASM_TARGET])
        .arg("--manifest-path")
        .arg(&manifest)
        .arg("--target-dir")
        .arg(target_dir)
        // Diagnostics rendered as usual on stderr; stdout carries one JSON
        // message per line, among them the artifacts.
        .args(["--message-format", "json-render-diagnostics"])
        .current_dir(ws_dir)
        .stdout(Stdio::piped())
        // Cargo shows this script's stderr only when it fails: then the
        // inner build's errors are what the user needs to see.
        .stderr(Stdio::inherit());
    for (name, _) in env::vars_os() {
        if must_clear(&name.to_string_lossy()) {
            cmd.env_remove(&name);
        }
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot run `{}`: {e}", cargo()))?;

    let mut artifacts = BTreeMap::new();
    let mut progress = Progress::new(ws_dir);
    let stdout = child.stdout.take().expect("stdout is piped");
    for line in BufReader::new(stdout).lines() {
        let line = line.map_err(|e| format!("reading cargo's output: {e}"))?;
        let Ok(message) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if message["reason"] != "compiler-artifact" {
            continue;
        }
        progress.compiled(
            message["target"]["name"].as_str().unwrap_or_default(),
            message["fresh"] == true,
        );
        let is_cdylib = message["target"]["kind"]
            .as_array()
            .is_some_and(|kinds| kinds.iter().any(|k| k == "cdylib"));
        if !is_cdylib {
            continue;
        }
        for file in message["filenames"].as_array().into_iter().flatten() {
            let Some(path) = file.as_str().map(PathBuf::from) else {
                continue;
            };
            if path.extension().is_some_and(|e| e == "wasm") {
                if let Some(stem) = path.file_stem() {
                    artifacts.insert(stem.to_string_lossy().into_owned(), path);
                }
            }
        }
    }
    let status = child
        .wait()
        .map_err(|e| format!("waiting for cargo: {e}"))?;
    progress.finish(status.success());
    if !status.success() {
        return Err(format!(
            "`cargo build --release --target {WASM_TARGET} --manifest-path {}` failed ({status}); \
             its errors are printed above",
            manifest.display()
        ));
    }
    Ok(artifacts)
}

/// Progress of the inner build: cargo shows a build script's output only
/// when it fails, so a first build (a minute or more of compiling the
/// plugins) would look stuck at `wfhost(build)`. Lines go to the terminal
/// directly (`/dev/tty`) when there is one; a build that compiled anything
/// ends with a one-line `cargo:warning` summary, which cargo shows.
struct Progress {
    workspace: String,
    tty: Option<fs::File>,
    started: std::time::Instant,
    compiled: usize,
}

impl Progress {
    fn new(ws_dir: &Path) -> Progress {
        let workspace = ws_dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tty = fs::OpenOptions::new().write(true).open("/dev/tty").ok();
        Progress {
            workspace,
            tty,
            started: std::time::Instant::now(),
            compiled: 0,
        }
    }

    fn say(&mut self, line: &str) {
        if let Some(tty) = self.tty.as_mut() {
            // `\r` and clear-line: cargo's progress bar may be on this line.
            let _ = write!(tty, "\r\x1b[K{line}\n");
        }
    }

    fn compiled(&mut self, crate_name: &str, fresh: bool) {
        if fresh {
            return;
        }
        self.compiled += 1;
        if self.compiled == 1 {
            let workspace = self.workspace.clone();
            self.say(&format!(
                "   wfhost: building the built-in plugins ({workspace}/) for {WASM_TARGET} (first build only)"
            ));
        }
        self.say(&format!("   wfhost: compiled {crate_name}"));
    }

    fn finish(&mut self, ok: bool) {
        if !ok || self.compiled == 0 {
            return;
        }
        let summary = format!(
            "built the built-in plugins ({}/) for {WASM_TARGET}: {} crate(s) in {:.0} s",
            self.workspace,
            self.compiled,
            self.started.elapsed().as_secs_f64()
        );
        self.say(&format!("   wfhost: {summary}"));
        println!("cargo:warning={summary}");
    }
}

/// `cargo:rerun-if-changed` for the files at the top of a guest workspace
/// (manifest, lock file) and each of its sub-directories (cargo scans a
/// directory recursively), skipping `target` and hidden directories.
fn emit_rerun_if_changed(ws_dir: &Path) {
    let Ok(entries) = fs::read_dir(ws_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if name == "target" || name.starts_with('.') {
            continue;
        }
        println!("cargo:rerun-if-changed={}", entry.path().display());
    }
}
