//! Helpers for end-to-end tests: run the real `wfhost` binary against a
//! private store, and read what it recorded.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

/// The repository root.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A test-only component of `tests/plugins/` (`hostile`, `hostile_policy`),
/// built for `wasm32-wasip2` on first use in this test process (cargo's lock
/// on the target directory serialises test binaries building it at once).
/// The `wfhost` build does not build them, so a user's `cargo run` never
/// waits for them.
pub fn test_plugin(name: &str) -> PathBuf {
    static BUILT: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    let dir = BUILT.get_or_init(|| {
        let target_dir = repo().join("target/wasm-test-plugins");
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let output = Command::new(cargo)
            .args(["build", "--release", "--quiet", "--target", "wasm32-wasip2"])
            .arg("--manifest-path")
            .arg(repo().join("tests/plugins/Cargo.toml"))
            .arg("--target-dir")
            .arg(&target_dir)
            // What the outer `cargo test` set for its own build.
            .env_remove("RUSTFLAGS")
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .env_remove("CARGO_BUILD_TARGET")
            .env_remove("CARGO_TARGET_DIR")
            .output()
            .expect("cargo runs");
        assert!(
            output.status.success(),
            "building tests/plugins failed:\n{}",
            text(&output.stderr)
        );
        target_dir.join("wasm32-wasip2/release")
    });
    let path = dir.join(format!("{name}.wasm"));
    assert!(path.is_file(), "{} was not built", path.display());
    path
}

/// A scratch directory with its own wfhost home.
pub struct Sandbox {
    pub dir: tempfile::TempDir,
}

impl Sandbox {
    pub fn new() -> Sandbox {
        Sandbox {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    /// Write a file (e.g. a workflow) into the sandbox; returns its path.
    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&path, text).unwrap();
        path
    }

    /// `wfhost <args>` with this sandbox's home, from the sandbox directory.
    pub fn wfhost(&self, args: &[&str]) -> Output {
        self.command(args).output().unwrap()
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_wfhost"));
        command
            .args(args)
            .current_dir(self.dir.path())
            .env("WFHOST_HOME", self.home())
            .env(
                "WFHOST_CACHE_DIR",
                Path::new(env!("CARGO_TARGET_TMPDIR")).join("component-cache"),
            )
            .env("NO_COLOR", "1")
            .env_remove("RUST_LOG");
        command
    }

    /// Run a workflow file; returns the output and the run id (from --json).
    pub fn run(&self, workflow: &Path, extra: &[&str]) -> (Output, Option<Value>) {
        let mut args = vec!["run", workflow.to_str().unwrap(), "--json"];
        args.extend_from_slice(extra);
        let output = self.wfhost(&args);
        let status = serde_json::from_slice(&output.stdout).ok();
        (output, status)
    }

    /// Start `wfhost run FILE --json --quiet` in the background.
    pub fn spawn_run(&self, workflow: &Path) -> std::process::Child {
        self.command(&["run", workflow.to_str().unwrap(), "--json", "--quiet"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// `wfhost status RUN --json`.
    pub fn status(&self, run: &str) -> Value {
        let output = self.wfhost(&["status", run, "--json"]);
        assert!(
            output.status.success(),
            "status failed: {}",
            text(&output.stderr)
        );
        serde_json::from_slice(&output.stdout).unwrap()
    }

    /// `wfhost export RUN DIR` into a fresh folder of the sandbox; the folder.
    pub fn export(&self, run: &str) -> PathBuf {
        let dir = self.path().join(format!("export-{run}"));
        let _ = std::fs::remove_dir_all(&dir);
        let output = self.wfhost(&["export", run, dir.to_str().unwrap()]);
        assert!(
            output.status.success(),
            "export failed: {}",
            text(&output.stderr)
        );
        dir
    }
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The step with this id in a status document.
pub fn step<'a>(status: &'a Value, id: &str) -> &'a Value {
    status["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == id)
        .unwrap_or_else(|| panic!("no step {id} in {status:#}"))
}

/// Parse an RFC 3339 timestamp into milliseconds since the epoch.
pub fn millis(timestamp: &Value) -> i64 {
    chrono::DateTime::parse_from_rfc3339(timestamp.as_str().unwrap())
        .unwrap()
        .timestamp_millis()
}

/// Assert the process exited with `code`, showing its output otherwise.
pub fn assert_exit(output: &Output, code: i32) {
    assert_eq!(
        output.status.code(),
        Some(code),
        "expected exit {code}\nstdout:\n{}\nstderr:\n{}",
        text(&output.stdout),
        text(&output.stderr)
    );
}
