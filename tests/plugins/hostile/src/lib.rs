//! `hostile`: a deliberately malicious step plugin for the escape suite
//! (`tests/escape.rs`).
//!
//! Each step performs the one attack its config names and reports what it
//! observed. Every attack is really attempted with the plain standard
//! library (or the `process` import), never simulated:
//!
//! - the attack **worked** → `Ok` with what it got (the test then fails,
//!   since a contained attack must fail the step);
//! - the attack **was refused** → `Err` with the refusal, explained through
//!   the SDK where it can name the missing grant.
//!
//! Config: `{ attack: "<name>", ...params }`:
//!
//! | attack    | params                         | does                                                        |
//! |-----------|--------------------------------|-------------------------------------------------------------|
//! | `read`    | `path`, `cwd`?                 | `std::fs::read` of `path` as given (after `chdir(cwd)`)     |
//! | `write`   | `path`, `content`?             | `std::fs::write` of `path` as given                         |
//! | `env`     | `var`, `needle`?               | `std::env::var(var)`; any variable whose value has `needle` |
//! | `exec`    | `program`, `args`?             | `process::run`                                              |
//! | `connect` | `host`?, `port`                | `std::net::TcpStream::connect`, then writes to it           |
//! | `loop`    |                                | spins forever                                               |
//! | `memory`  | `mib`? (default 2048)          | allocates and touches 1 MiB blocks until `mib` are held     |
//! | `recurse` |                                | unbounded recursion                                         |
//! | `huge-output` | `mib`                      | returns an output of `mib` MiB                              |
//! | `huge-error`  | `mib`                      | fails with an error message of `mib` MiB                    |
//! | `progress-flood` | `count`, `kib`          | reports progress `count` times, `kib` KiB each              |
//! | `socket-flood` | `count`                   | creates `count` TCP sockets (raw WASI) and holds them all   |
//! | `open-files` | `path`, `count`             | opens the file `path` `count` times and holds every handle  |
//! | `resolve` | `host`                         | looks the name up (`ToSocketAddrs`, WASI ip-name-lookup)    |
//! | `plant`   | `mib`? (default 8)             | fills heap and stack with a marker and leaves it there      |
//! | `scan`    | `grow_mib`? (default 16)       | grows its memory, then counts markers in all of it          |
//! | `plant-and-scan` |                         | both in one instance: proves `scan` finds a marker          |
//! | `plant-and-recurse` |                      | plants, then overflows its stack (the instance traps)       |
//! | `plant-and-loop` |                         | plants, then spins until the timeout stops it               |
//! | `suspend-loop` |                           | suspends for 0 ms again and again, never finishing          |
//! | `suspend-huge` | `kib`                     | suspends with a state of `kib` KiB                          |
//! | `suspend-recall` | `ms`                    | sets a static, suspends `ms`; resumed, reports the static   |
//! | `suspend-progress` | `count`               | reports progress `count` times, suspends, then `count` more |

use std::hint::black_box;
use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};

use serde_json::{json, Value};
use wfhost_sdk::process::{self, Command};
use wfhost_sdk::{fs, log, progress, Info, Plugin, Request, StepError};

struct Hostile;

impl Plugin for Hostile {
    fn describe() -> Info {
        Info::new(
            "hostile",
            env!("CARGO_PKG_VERSION"),
            "Test-only: performs the attack named by `attack` and reports whether it worked.",
        )
        .schema(json!({
            "type": "object",
            "required": ["attack"],
            "properties": { "attack": { "type": "string" } }
        }))
    }

    fn run(req: Request) -> Result<Value, StepError> {
        let attack = string(&req, "attack")?;
        log::info(format!("attack: {attack}"));
        match attack.as_str() {
            "read" => read(&req),
            "write" => write(&req),
            "env" => env(&req),
            "exec" => exec(&req),
            "connect" => connect(&req),
            "loop" => spin(),
            "memory" => memory(&req),
            "recurse" => recurse_attack(),
            "huge-output" => huge_output(&req),
            "huge-error" => huge_error(&req),
            "progress-flood" => progress_flood(&req),
            "socket-flood" => socket_flood(&req),
            "open-files" => open_files(&req),
            "resolve" => resolve(&req),
            "plant" => plant(&req),
            "scan" => scan(&req),
            "plant-and-scan" => {
                plant(&req)?;
                scan(&req)
            }
            "plant-and-recurse" => {
                plant(&req)?;
                recurse_attack()
            }
            "plant-and-loop" => {
                plant(&req)?;
                spin()
            }
            "suspend-loop" => wfhost_sdk::suspend(std::time::Duration::ZERO, "again"),
            "suspend-huge" => {
                let kib = req.config["kib"].as_u64().unwrap_or(65) as usize;
                wfhost_sdk::suspend(std::time::Duration::ZERO, "s".repeat(kib * 1024))
            }
            "suspend-recall" => suspend_recall(&req),
            "suspend-progress" => {
                let count = number(&req, "count")?;
                for _ in 0..count {
                    progress("p", None);
                }
                if wfhost_sdk::resumed().is_none() {
                    wfhost_sdk::suspend(std::time::Duration::ZERO, "again");
                }
                Ok(json!({ "reported": 2 * count }))
            }
            other => Err(StepError::permanent(format!("unknown attack '{other}'"))),
        }
    }
}

wfhost_sdk::export_plugin!(Hostile);

fn string(req: &Request, key: &str) -> Result<String, StepError> {
    req.config[key].as_str().map(str::to_string).ok_or_else(|| {
        StepError::permanent(format!("invalid config: `{key}` (a string) is required"))
    })
}

fn optional(req: &Request, key: &str) -> Option<String> {
    req.config[key].as_str().map(str::to_string)
}

/// A contained attack: the step fails with what stopped it.
fn contained(message: String) -> Result<Value, StepError> {
    log::warn(format!("contained: {message}"));
    Err(StepError::permanent(message))
}

/// `chdir(cwd)` if asked; returns the directory relative paths resolve
/// against (for the SDK's explanation of a refusal).
fn enter(req: &Request) -> Result<Option<PathBuf>, StepError> {
    let Some(cwd) = optional(req, "cwd") else {
        return Ok(None);
    };
    std::env::set_current_dir(&cwd).map_err(|e| {
        StepError::permanent(format!("setup: cannot change directory to '{cwd}': {e}"))
    })?;
    Ok(Some(PathBuf::from(cwd)))
}

/// The path as the SDK should see it: `cwd/path` for a relative path read
/// after `chdir`.
fn as_seen(cwd: &Option<PathBuf>, path: &str) -> PathBuf {
    match cwd {
        Some(dir) if Path::new(path).is_relative() => dir.join(path),
        _ => PathBuf::from(path),
    }
}

/// Read a file exactly as named (no normalisation: `..` and symbolic links
/// go to the runtime as they are).
fn read(req: &Request) -> Result<Value, StepError> {
    let path = string(req, "path")?;
    let cwd = enter(req)?;
    match std::fs::read(&path) {
        Ok(bytes) => Ok(json!({
            "escaped": true,
            "path": path,
            "content": String::from_utf8_lossy(&bytes),
        })),
        Err(raw) => {
            // Ask the SDK for the explanation; it attempts the read again
            // on the lexically resolved path, which must fail too.
            let seen = as_seen(&cwd, &path);
            match fs::read(req, &seen) {
                Ok(bytes) => Ok(json!({
                    "escaped": true,
                    "path": seen,
                    "content": String::from_utf8_lossy(&bytes),
                })),
                Err(explained) => contained(format!("{explained} [raw error: {raw}]")),
            }
        }
    }
}

/// Write a file exactly as named.
fn write(req: &Request) -> Result<Value, StepError> {
    let path = string(req, "path")?;
    let content = optional(req, "content").unwrap_or_else(|| "pwned\n".to_string());
    let cwd = enter(req)?;
    match std::fs::write(&path, &content) {
        Ok(()) => Ok(json!({ "escaped": true, "written": path })),
        Err(raw) => {
            let seen = as_seen(&cwd, &path);
            match fs::write(req, &seen, &content) {
                Ok(()) => Ok(json!({ "escaped": true, "written": seen })),
                Err(explained) => contained(format!("{explained} [raw error: {raw}]")),
            }
        }
    }
}

/// Look for a variable by name, and for its value under any name.
fn env(req: &Request) -> Result<Value, StepError> {
    let var = string(req, "var")?;
    let needle = optional(req, "needle").filter(|n| !n.is_empty());
    let visible: Vec<(String, String)> = std::env::vars().collect();
    if let Ok(value) = std::env::var(&var) {
        return Ok(json!({ "escaped": true, "var": var, "value": value }));
    }
    if let Some(needle) = &needle {
        if let Some((name, value)) = visible.iter().find(|(_, v)| v.contains(needle.as_str())) {
            return Ok(json!({ "escaped": true, "var": name, "value": value }));
        }
    }
    let names: Vec<&str> = visible.iter().map(|(n, _)| n.as_str()).collect();
    contained(format!(
        "environment variable '{var}' is not visible to the step (visible: [{}])",
        names.join(", ")
    ))
}

/// Start a program through the host's `process` import.
fn exec(req: &Request) -> Result<Value, StepError> {
    let program = string(req, "program")?;
    let args: Vec<String> = req.config["args"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    match process::run(Command::new(&program).args(args)) {
        Ok(out) => Ok(json!({
            "escaped": true,
            "program": program,
            "exit_code": out.exit_code,
            "stdout": out.stdout_text(),
            "stderr": out.stderr_text(),
        })),
        Err(e) => contained(e.to_string()),
    }
}

/// Open a TCP connection and send a few bytes.
fn connect(req: &Request) -> Result<Value, StepError> {
    let host = optional(req, "host").unwrap_or_else(|| "127.0.0.1".to_string());
    let port = req.config["port"]
        .as_u64()
        .and_then(|p| u16::try_from(p).ok())
        .ok_or_else(|| StepError::permanent("invalid config: `port` (a number) is required"))?;
    let addr: SocketAddr = format!("{host}:{port}")
        .parse()
        .map_err(|e| StepError::permanent(format!("invalid config: bad address: {e}")))?;
    match TcpStream::connect(addr) {
        Ok(mut stream) => {
            let sent = stream.write_all(b"escaped from wasm\n").is_ok();
            Ok(json!({ "escaped": true, "connected": addr.to_string(), "sent": sent }))
        }
        Err(e) => contained(format!("cannot connect to {addr}: {e}")),
    }
}

/// Spin forever; only the host can end this.
fn spin() -> Result<Value, StepError> {
    let mut n: u64 = 0;
    loop {
        n = black_box(n.wrapping_add(1));
        if black_box(n) == u64::MAX {
            // Unreachable in practice; keeps the loop observably finite to
            // the compiler without making it so.
            return Ok(json!({ "escaped": true, "iterations": n }));
        }
    }
}

/// Grow memory in touched 1 MiB blocks.
fn memory(req: &Request) -> Result<Value, StepError> {
    let target = req.config["mib"].as_u64().unwrap_or(2048) as usize;
    let mut blocks: Vec<Vec<u8>> = Vec::new();
    for i in 0..target {
        let mut block = vec![0u8; 1024 * 1024];
        for byte in block.iter_mut().step_by(4096) {
            *byte = i as u8 | 1;
        }
        blocks.push(black_box(block));
    }
    let held: usize = blocks.iter().map(Vec::len).sum();
    Ok(json!({ "escaped": true, "allocated_mib": held >> 20 }))
}

fn recurse_attack() -> Result<Value, StepError> {
    let depth = recurse(black_box(0));
    Ok(json!({ "escaped": true, "depth": depth }))
}

/// Non-tail recursion with a frame the optimiser cannot drop.
#[inline(never)]
fn recurse(depth: u64) -> u64 {
    let frame = black_box([depth; 32]);
    if black_box(depth) == u64::MAX {
        return depth;
    }
    let below = recurse(depth + 1);
    black_box(frame.iter().sum::<u64>()).wrapping_add(below)
}

fn number(req: &Request, key: &str) -> Result<u64, StepError> {
    req.config[key].as_u64().ok_or_else(|| {
        StepError::permanent(format!("invalid config: `{key}` (a number) is required"))
    })
}

/// `mib` MiB of `x`.
fn blob(req: &Request) -> Result<String, StepError> {
    Ok("x".repeat(number(req, "mib")? as usize * 1024 * 1024))
}

/// Hand the host an output of `mib` MiB.
fn huge_output(req: &Request) -> Result<Value, StepError> {
    Ok(json!({ "escaped": true, "blob": blob(req)? }))
}

/// Hand the host an error message of `mib` MiB.
fn huge_error(req: &Request) -> Result<Value, StepError> {
    Err(StepError::permanent(format!("huge error: {}", blob(req)?)))
}

/// Report progress `count` times with `kib` KiB messages.
fn progress_flood(req: &Request) -> Result<Value, StepError> {
    let count = number(req, "count")?;
    let message = "p".repeat(number(req, "kib")? as usize * 1024);
    for i in 0..count {
        progress(&message, (i as f32) / (count as f32));
    }
    Ok(json!({ "reported": count }))
}

/// `wasi:sockets/tcp-create-socket.create-tcp-socket`, called directly so
/// the socket is held for as long as the step runs (the standard library
/// closes a socket whose bind or connect failed).
mod raw {
    #[link(wasm_import_module = "wasi:sockets/tcp-create-socket@0.2.0")]
    extern "C" {
        #[link_name = "create-tcp-socket"]
        fn create_tcp_socket(family: i32, ret: *mut u8);
    }

    /// `result<own<tcp-socket>, error-code>` in canonical ABI layout.
    #[repr(C, align(4))]
    struct Ret([u8; 8]);

    /// A new IPv4 TCP socket's handle, or the WASI error code.
    pub fn tcp_socket() -> Result<u32, u8> {
        let mut ret = Ret([0; 8]);
        // SAFETY: the import writes its result into the 8-byte, 4-aligned
        // return area it is given.
        unsafe { create_tcp_socket(0, ret.0.as_mut_ptr()) };
        if ret.0[0] == 0 {
            Ok(u32::from_le_bytes([ret.0[4], ret.0[5], ret.0[6], ret.0[7]]))
        } else {
            Err(ret.0[4])
        }
    }
}

/// Create `count` sockets and hold them all.
fn socket_flood(req: &Request) -> Result<Value, StepError> {
    let count = number(req, "count")?;
    let mut held = Vec::new();
    for _ in 0..count {
        match raw::tcp_socket() {
            Ok(handle) => held.push(black_box(handle)),
            Err(code) => {
                return contained(format!(
                    "socket {} refused (WASI error code {code}) after {} were created",
                    held.len() + 1,
                    held.len()
                ))
            }
        }
    }
    Ok(json!({ "escaped": true, "sockets": held.len() }))
}

/// Open `path` `count` times and hold every handle.
fn open_files(req: &Request) -> Result<Value, StepError> {
    let path = string(req, "path")?;
    let count = number(req, "count")?;
    let mut held = Vec::new();
    for _ in 0..count {
        match std::fs::File::open(&path) {
            Ok(file) => held.push(file),
            Err(e) => {
                return contained(format!(
                    "open {} of '{path}' refused after {} were opened: {e}",
                    held.len() + 1,
                    held.len()
                ))
            }
        }
    }
    Ok(json!({ "escaped": true, "open": held.len() }))
}

/// Look a host name up.
fn resolve(req: &Request) -> Result<Value, StepError> {
    use std::net::ToSocketAddrs;
    let host = string(req, "host")?;
    match (host.as_str(), 80).to_socket_addrs() {
        Ok(found) => {
            let addresses: Vec<String> = found.map(|a| a.ip().to_string()).collect();
            Ok(json!({ "resolved": host, "addresses": addresses }))
        }
        Err(e) => contained(format!("cannot resolve '{host}': {e}")),
    }
}

/// The marker's length in bytes.
const MARKER_LEN: usize = 64;

/// Byte `i` of the marker. Computed from a seed the optimiser cannot see,
/// so the marker is never a constant in this component's data (where
/// `scan` would find it in any instance).
fn marker_byte(seed: u8, i: usize) -> u8 {
    (i as u8).wrapping_mul(37).wrapping_add(11) ^ seed
}

fn seed() -> u8 {
    black_box(0xA5)
}

/// Write the marker over `mib` MiB of heap and a stack frame, and leave
/// both in this instance's memory: a later instance in the same slot must
/// not see them.
fn plant(req: &Request) -> Result<Value, StepError> {
    let mib = req.config["mib"].as_u64().unwrap_or(8) as usize;
    let seed = seed();
    let mut heap = vec![0u8; mib << 20];
    for (i, byte) in heap.iter_mut().enumerate() {
        *byte = marker_byte(seed, i % MARKER_LEN);
    }
    let mut frame = [0u8; 16 * 1024];
    for (i, byte) in frame.iter_mut().enumerate() {
        *byte = marker_byte(seed, i % MARKER_LEN);
    }
    black_box(&frame);
    // Never freed: the pages stay dirty when the instance ends.
    std::mem::forget(black_box(heap));
    Ok(json!({ "planted_mib": mib }))
}

/// Grow the linear memory by `grow_mib` MiB (pages a previous instance of
/// the slot may have written) and count the places in all of it where the
/// marker starts.
fn scan(req: &Request) -> Result<Value, StepError> {
    let grow = req.config["grow_mib"].as_u64().unwrap_or(16) as usize;
    let pages = grow * 16;
    if core::arch::wasm32::memory_grow(0, pages) == usize::MAX {
        return Err(StepError::permanent(format!(
            "cannot grow memory by {grow} MiB"
        )));
    }
    let size = core::arch::wasm32::memory_size(0) * 65536;
    let seed = seed();
    let first = marker_byte(seed, 0);
    let mut found = 0u64;
    // Raw reads of the whole linear memory: address 0 is a valid address in
    // wasm, and every byte below `size` is readable.
    let base = core::ptr::null::<u8>();
    let read = |at: usize| unsafe { core::ptr::read_volatile(base.wrapping_add(at)) };
    let mut at = 0;
    while at + MARKER_LEN <= size {
        if read(at) == first && (1..MARKER_LEN).all(|i| read(at + i) == marker_byte(seed, i)) {
            found += 1;
            at += MARKER_LEN;
        } else {
            at += 1;
        }
    }
    Ok(json!({ "found": found, "scanned_mib": size >> 20 }))
}

/// Set by `suspend-recall` before it suspends: a call after the suspension
/// that still sees it would share the instance of the call before.
static RECALLED: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// First call: set [`RECALLED`] and suspend; the call after the wait
/// reports what it sees of the first one.
fn suspend_recall(req: &Request) -> Result<Value, StepError> {
    use std::sync::atomic::Ordering;
    match wfhost_sdk::resumed() {
        None => {
            RECALLED.store(0x5eed, Ordering::SeqCst);
            let ms = req.config["ms"].as_u64().unwrap_or(50);
            wfhost_sdk::suspend(std::time::Duration::from_millis(ms), "handed over")
        }
        Some(state) => Ok(json!({
            "state": state,
            "static_survived": RECALLED.load(Ordering::SeqCst) == 0x5eed,
        })),
    }
}
