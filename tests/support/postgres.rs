//! A throw-away PostgreSQL server for tests: `initdb` and `postgres` in a
//! temporary directory on a free loopback port, started on first use by a
//! test process and removed when it exits. Each test takes a database of
//! its own ([`fresh_database`]).
//!
//! Needs PostgreSQL's server programs (Debian: `apt-get install
//! postgresql`; found on `PATH` or under `/usr/lib/postgresql/*/bin`). As
//! root (CI), they run as the `postgres` user: `initdb` refuses root. A
//! missing installation fails the test that asked, with what to install.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The running server.
struct Server {
    port: u16,
    dir: PathBuf,
    child: Mutex<Option<Child>>,
}

/// A URL of a new, empty database on the test process's server.
pub fn fresh_database() -> String {
    static COUNT: AtomicU32 = AtomicU32::new(0);
    let server = server();
    let name = format!(
        "wfhost_{}_{}",
        std::process::id(),
        COUNT.fetch_add(1, Ordering::SeqCst)
    );
    let mut admin = postgres::Client::connect(&url(server.port, "postgres"), postgres::NoTls)
        .expect("connect to the test server");
    admin
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .expect("create a test database");
    url(server.port, &name)
}

fn url(port: u16, database: &str) -> String {
    format!("postgres://postgres@127.0.0.1:{port}/{database}")
}

/// The test process's server, once started.
static SERVER: OnceLock<Server> = OnceLock::new();

fn server() -> &'static Server {
    SERVER.get_or_init(start)
}

/// The directory of PostgreSQL's server programs.
fn bin_dir() -> PathBuf {
    if let Ok(path) = std::env::var("PATH") {
        for dir in std::env::split_paths(&path) {
            if dir.join("initdb").is_file() && dir.join("postgres").is_file() {
                return dir;
            }
        }
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path().join("bin"))
        .filter(|bin| bin.join("initdb").is_file())
        .collect();
    found.sort_by_key(|bin| {
        bin.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    found.pop().unwrap_or_else(|| {
        panic!(
            "PostgreSQL's server programs (initdb, postgres) are not installed: \
             `apt-get install postgresql` (the PostgreSQL store's tests need them)"
        )
    })
}

/// Who runs the server: the `postgres` user when this process is root.
fn server_user() -> Option<(u32, u32)> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return None;
    }
    let name = std::ffi::CString::new("postgres").unwrap();
    // SAFETY: getpwnam with a valid C string; the record is copied at once.
    let entry = unsafe { libc::getpwnam(name.as_ptr()) };
    assert!(
        !entry.is_null(),
        "running as root, and there is no `postgres` user to run PostgreSQL as \
         (installing Debian's postgresql package makes one)"
    );
    // SAFETY: non-null, points to a static passwd record.
    let entry = unsafe { &*entry };
    Some((entry.pw_uid, entry.pw_gid))
}

fn as_server_user(command: &mut Command, user: Option<(u32, u32)>) {
    use std::os::unix::process::CommandExt;
    if let Some((uid, gid)) = user {
        command.uid(uid).gid(gid);
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("a free port")
}

fn start() -> Server {
    let bin = bin_dir();
    let user = server_user();
    let dir = tempfile::Builder::new()
        .prefix("wfhost-pg-")
        .tempdir()
        .expect("temp dir")
        .keep();
    if let Some((uid, gid)) = user {
        std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).expect("chown the test server's dir");
    }
    let data = dir.join("data");
    let mut initdb = Command::new(bin.join("initdb"));
    initdb
        .arg("-D")
        .arg(&data)
        .args(["-U", "postgres", "--auth=trust", "--no-sync", "-E", "UTF8"])
        .stdout(Stdio::null());
    as_server_user(&mut initdb, user);
    let out = initdb.output().expect("run initdb");
    assert!(
        out.status.success(),
        "initdb failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let port = free_port();
    // Started from a thread that lives as long as the process: the server
    // is told to die with its parent (PR_SET_PDEATHSIG), and "parent" is
    // the thread that started it.
    let (sender, receiver) = std::sync::mpsc::channel();
    let (data_dir, socket_dir) = (data.clone(), dir.clone());
    std::thread::spawn(move || {
        let mut postgres = Command::new(bin.join("postgres"));
        postgres
            .arg("-D")
            .arg(&data_dir)
            .arg("-p")
            .arg(port.to_string())
            .arg("-k")
            .arg(&socket_dir)
            .args(["-c", "listen_addresses=127.0.0.1"])
            .args(["-c", "max_connections=300"])
            // Durability of the test server itself is not under test.
            .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
            .args(["-c", "full_page_writes=off"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(socket_dir.join("server.log")).expect("server log"),
            ));
        as_server_user(&mut postgres, user);
        // SAFETY: prctl is async-signal-safe.
        unsafe {
            use std::os::unix::process::CommandExt;
            postgres.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = postgres.spawn();
        let _ = sender.send(child);
        loop {
            std::thread::park();
        }
    });
    let child = receiver
        .recv()
        .expect("the server thread answers")
        .expect("start postgres");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if postgres::Client::connect(&url(port, "postgres"), postgres::NoTls).is_ok() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the test PostgreSQL server did not start: {}",
            std::fs::read_to_string(dir.join("server.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // SAFETY: registering a plain function to run at exit.
    unsafe { libc::atexit(stop_at_exit) };
    Server {
        port,
        dir,
        child: Mutex::new(Some(child)),
    }
}

extern "C" fn stop_at_exit() {
    let Some(server) = SERVER.get() else {
        return;
    };
    if let Some(mut child) = server.child.lock().ok().and_then(|mut c| c.take()) {
        // SIGQUIT: immediate shutdown; the data is thrown away anyway.
        // SAFETY: signalling our own child.
        unsafe { libc::kill(child.id() as i32, libc::SIGQUIT) };
        let _ = child.wait();
    }
    let _ = std::fs::remove_dir_all(&server.dir);
}

/// The directory the server keeps its data in (for tests that look).
pub fn server_dir() -> &'static Path {
    &server().dir
}
