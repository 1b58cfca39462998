//! One compiled component on disk: `KEY-ENGINE.cwasm` and, beside it,
//! `.cwasm.sha256` recording the SHA-256 of the bytes the host wrote and
//! the entry's [`FileStamp`] once written.
//!
//! Compiled code is native code that wasmtime loads without checking it,
//! so an entry is loaded only when it is the file the host wrote: its stamp
//! (taken on the open handle) matches the recorded one, or else its bytes
//! match the recorded digest (an entry copied from elsewhere, or written
//! by an older wfhost). The stamp makes a warm start cheap: a 35 MB entry is
//! mapped, not read and hashed. Anything that rewrites or replaces the
//! entry changes its stamp; whoever can write the directory can also write
//! the record, so neither check is a defence against them (the directory
//! is the user's own cache).

use std::fs::File;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use anyhow::Result;
use sha2::Digest;
use wasmtime::component::Component;
use wasmtime::Engine;

use super::stamp::FileStamp;

/// The file recording an entry's digest and stamp.
pub(super) fn record_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_os_string();
    name.push(".sha256");
    PathBuf::from(name)
}

/// What the record says: the digest, and the stamp if one was recorded.
fn read_record(path: &Path) -> Option<(String, Option<FileStamp>)> {
    let text = std::fs::read_to_string(record_path(path)).ok()?;
    let mut lines = text.lines();
    let digest = lines.next()?.trim().to_string();
    Some((digest, lines.next().and_then(FileStamp::parse)))
}

/// The compiled component at `path`, if it is the one the host wrote
/// there; `None` (with a warning when the bytes were changed) if not.
pub(super) fn load(engine: &Engine, path: &Path) -> Option<Component> {
    let mut file = File::open(path).ok()?;
    let stamp = FileStamp::of(&file.metadata().ok()?);
    let Some((digest, recorded)) = read_record(path) else {
        // Written by an older wfhost (or its record not yet written): not
        // trusted, quietly compiled again.
        tracing::debug!(
            "cache entry {} has no recorded digest; compiling again",
            path.display()
        );
        return None;
    };
    if recorded == Some(stamp) {
        // The path of the open handle: wasmtime maps the very file whose
        // stamp was checked, whatever the name points at now.
        let handle = format!("/proc/self/fd/{}", file.as_raw_fd());
        // SAFETY: the file is the one `store` wrote from
        // `Component::serialize` for an engine with the same compatibility
        // hash (its stamp is unchanged since), and entries are replaced by
        // rename, never written in place, so the mapping stays as it is.
        match unsafe { Component::deserialize_file(engine, handle) } {
            Ok(component) => return Some(component),
            // E.g. no /proc: checked by its digest below instead.
            Err(error) => tracing::debug!("cannot map {}: {error:#}", path.display()),
        }
    }
    let mut bytes = Vec::with_capacity(stamp_size(&file));
    file.read_to_end(&mut bytes).ok()?;
    if digest != hex::encode(sha2::Sha256::digest(&bytes)) {
        tracing::warn!(
            "cache entry {} does not match the digest recorded when it was compiled; compiling again",
            path.display()
        );
        return None;
    }
    // The bytes are the ones written: record the stamp they have now, so
    // the next load maps the file instead of hashing it.
    if recorded != Some(stamp) {
        if let Err(error) = write_record(path, &digest) {
            tracing::debug!("cannot update {}: {error:#}", path.display());
        }
    }
    // SAFETY: these are the exact bytes `Component::serialize` wrote for an
    // engine with the same compatibility hash: their SHA-256 matches the
    // one recorded when they were written.
    match unsafe { Component::deserialize(engine, &bytes) } {
        Ok(component) => Some(component),
        Err(error) => {
            tracing::warn!(
                "ignoring unusable cache entry {}: {error:#}",
                path.display()
            );
            None
        }
    }
}

fn stamp_size(file: &File) -> usize {
    file.metadata().map_or(0, |m| m.len() as usize)
}

/// Write the entry, then its record, each through a temporary file and a
/// rename: a reader sees either a matching pair or a mismatch (and
/// recompiles), never a torn file.
pub(super) fn store(dir: &Path, path: &Path, component: &Component) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    let bytes = component.serialize()?;
    let digest = hex::encode(sha2::Sha256::digest(&bytes));
    replace(path, &bytes)?;
    write_record(path, &digest)
}

/// Record `digest` and the stamp the entry at `path` has now.
fn write_record(path: &Path, digest: &str) -> Result<()> {
    let stamp = FileStamp::of(&File::open(path)?.metadata()?);
    replace(
        &record_path(path),
        format!("{digest}\n{}\n", stamp.to_text()).as_bytes(),
    )
}

/// Put `contents` at `target` through a temporary file and a rename.
pub(super) fn replace(target: &Path, contents: &[u8]) -> Result<()> {
    let dir = target.parent().unwrap_or(Path::new("."));
    let temp = dir.join(format!(".{}.tmp", uuid::Uuid::new_v4().simple()));
    std::fs::write(&temp, contents)?;
    std::fs::rename(&temp, target).inspect_err(|_| {
        let _ = std::fs::remove_file(&temp);
    })?;
    Ok(())
}
