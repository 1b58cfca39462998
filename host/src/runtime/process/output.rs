//! What a started program returns: its stdout and stderr, capped at the
//! step's `max_output`, and the `WFHOST_OUTPUT` file it may write.

use std::path::{Path, PathBuf};

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::watch;

use super::lines::LineSplitter;
use crate::runtime::bindings::process::ProcessError;

/// Where the program may write its `WFHOST_OUTPUT` file: a fresh name in
/// its private directory `dir`, not created (a program that writes no
/// output costs no file; `>>` creates it).
pub(super) fn output_file_path(dir: &Path) -> PathBuf {
    dir.join(format!(
        ".wfhost-output-{}.env",
        uuid::Uuid::new_v4().simple()
    ))
}

/// Read the `WFHOST_OUTPUT` file the program wrote (none: no output),
/// refusing anything but a regular file of at most `budget` bytes (the
/// step's `max_output`). It lies in the program's own directory, so it is
/// opened without following a link and checked on the opened handle: the
/// size before anything is read, and the read itself stops past the
/// budget, so a sparse file of many gigabytes costs nothing.
pub(super) async fn read_output_file(path: &Path, budget: u64) -> Result<Vec<u8>, ProcessError> {
    use std::os::unix::fs::OpenOptionsExt;
    let failed = |what: String| ProcessError::Failed(format!("$WFHOST_OUTPUT: {what}"));
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
    {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(failed(format!("cannot open '{}': {error}", path.display()))),
    };
    let meta = file
        .metadata()
        .map_err(|error| failed(format!("cannot inspect '{}': {error}", path.display())))?;
    if !meta.is_file() {
        return Err(failed("is not a regular file".to_string()));
    }
    let too_big = |size: u64| {
        failed(format!(
            "the program wrote {size} bytes, more than the budget of {budget} bytes (the \
             step's max_output; grants: {{ max_output: ... }} raises it)"
        ))
    };
    if meta.len() > budget {
        return Err(too_big(meta.len()));
    }
    let mut bytes = Vec::with_capacity(meta.len().min(1 << 20) as usize);
    tokio::fs::File::from_std(file)
        .take(budget.saturating_add(1))
        .read_to_end(&mut bytes)
        .await
        .map_err(|error| failed(format!("cannot read '{}': {error}", path.display())))?;
    if bytes.len() as u64 > budget {
        return Err(too_big(bytes.len() as u64));
    }
    Ok(bytes)
}

pub(super) struct RemoveOnDrop(pub(super) PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Read a stream to its end (or until `stop`), keeping at most `cap` bytes
/// (the step's `max_output`) and noting how much was dropped. With `lines`,
/// the kept bytes are also passed on line by line as they arrive.
pub(super) async fn read_capped(
    stream: Option<impl AsyncRead + Unpin>,
    cap: usize,
    mut stop: watch::Receiver<bool>,
    mut lines: Option<LineSplitter>,
) -> Vec<u8> {
    let Some(mut stream) = stream else {
        return Vec::new();
    };
    let mut kept = Vec::new();
    let mut buffer = vec![0u8; 256 * 1024];
    let mut dropped = 0usize;
    loop {
        let read = tokio::select! {
            read = stream.read(&mut buffer) => read,
            _ = stop.wait_for(|stop| *stop) => break,
        };
        match read {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = cap.saturating_sub(kept.len());
                let keep = &buffer[..n.min(room)];
                if let Some(lines) = lines.as_mut() {
                    lines.feed(keep);
                }
                kept.extend_from_slice(keep);
                dropped += n.saturating_sub(room);
            }
        }
    }
    let marker =
        (dropped > 0).then(|| format!("\n[wfhost: output cut, {dropped} more bytes dropped]\n"));
    if let Some(lines) = lines.as_mut() {
        if let Some(marker) = &marker {
            lines.feed(marker.as_bytes());
        }
        lines.finish();
    }
    if let Some(marker) = marker {
        kept.extend_from_slice(marker.as_bytes());
    }
    kept
}
