//! Driving a recorded run in a background process: `wfhost resume RUN` in
//! its own session, its output appended to `driver.log` in the run folder.
//! `wfhost run --detach` and the server start runs this way, so a run
//! outlives the terminal or the server that started it and keeps the same
//! lease rules as any other driver.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::store::EngineStore;

/// A background driver that was started.
#[derive(Debug, Clone)]
pub struct Started {
    /// Its process id.
    pub pid: u32,
    /// Where its output goes.
    pub log: PathBuf,
}

/// `wfhost ARGS... --home HOME [--config FILE]` for `run_id`, on the same
/// store, with no input and its output appended to the run folder's
/// `driver.log` (returned too).
pub fn driver_command(
    home: &Path,
    config: Option<&Path>,
    store: &dyn EngineStore,
    run_id: &str,
    args: &[&str],
) -> anyhow::Result<(std::process::Command, PathBuf)> {
    let dir = store.run_files(run_id).dir().to_path_buf();
    std::fs::create_dir_all(&dir)
        .with_context(|| format!("cannot create the run folder {}", dir.display()))?;
    let log_path = dir.join("driver.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("cannot open {}", log_path.display()))?;
    let exe = std::env::current_exe().context("cannot find the wfhost binary to start a driver")?;
    let mut command = std::process::Command::new(exe);
    command
        .args(args)
        .arg("--home")
        .arg(home)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .env("NO_COLOR", "1");
    if let Some(config) = config {
        command.arg("--config").arg(config);
    }
    // The same store; in the environment, not the command line, where
    // other users could read a password in it.
    match store.url() {
        Some(url) => command.env("WFHOST_STORE", url),
        None => command.env_remove("WFHOST_STORE"),
    };
    Ok((command, log_path))
}

/// Start `wfhost resume RUN` for `run_id` in the background, with the same
/// home and config.
pub fn start_driver(
    home: &Path,
    config: Option<&Path>,
    store: &dyn EngineStore,
    run_id: &str,
) -> anyhow::Result<Started> {
    start_command(home, config, store, run_id, &["resume", run_id])
}

/// Start `wfhost ARGS...` (a command that drives `run_id`: `resume`,
/// `retry`, `restore`) in the background, with the same home and config,
/// its output appended to the run's `driver.log`.
pub fn start_command(
    home: &Path,
    config: Option<&Path>,
    store: &dyn EngineStore,
    run_id: &str,
    args: &[&str],
) -> anyhow::Result<Started> {
    let (mut command, log_path) = driver_command(home, config, store, run_id, args)?;
    // Its own session: a closed terminal, a Ctrl-C or a stopped server does
    // not stop it.
    // SAFETY: setsid is async-signal-safe and has no preconditions.
    unsafe {
        command.pre_exec(|| {
            if libc::setsid() == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command
        .spawn()
        .context("cannot start the background driver")?;
    let pid = child.id();
    // Reap it when it ends (this process may live on, as the server does).
    std::thread::spawn(move || {
        let _ = child.wait();
    });
    Ok(Started { pid, log: log_path })
}
