//! Whether a file named as a component can be one, checked at validation
//! from its first bytes (a run would fail on it anyway, later and less
//! plainly): missing, a directory, empty, not WebAssembly, or a core module
//! rather than a component.

use std::io::Read;
use std::path::Path;

/// The WebAssembly magic number.
const MAGIC: [u8; 4] = *b"\0asm";
/// Version and layer of a component (a core module has `1, 0, 0, 0`).
const COMPONENT_VERSION: [u8; 4] = [0x0d, 0x00, 0x01, 0x00];
const MODULE_VERSION: [u8; 4] = [0x01, 0x00, 0x00, 0x00];

/// What is wrong with `path` as a component file, if anything: a phrase
/// that follows the file's name ("is a directory").
pub(super) fn problem(path: &Path) -> Option<String> {
    let metadata = match std::fs::metadata(path) {
        Ok(metadata) => metadata,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            return Some(format!("not found (looked for {})", path.display()))
        }
        Err(error) => return Some(format!("cannot be read: {error}")),
    };
    if metadata.is_dir() {
        return Some(format!("is a directory ({})", path.display()));
    }
    if !metadata.is_file() {
        return Some(format!("is not a regular file ({})", path.display()));
    }
    if metadata.len() == 0 {
        return Some(format!("is empty ({})", path.display()));
    }
    let mut header = [0u8; 8];
    let read = std::fs::File::open(path).and_then(|mut file| file.read_exact(&mut header));
    if read.is_err() || header[..4] != MAGIC {
        return Some(format!(
            "is not WebAssembly (it does not start with `\\0asm`: {})",
            path.display()
        ));
    }
    let version = &header[4..];
    match version {
        v if v == COMPONENT_VERSION => None,
        v if v == MODULE_VERSION => Some(format!(
            "is a core WebAssembly module, not a component (make one with `wasm-tools \
             component new`, or build for wasm32-wasip2): {}",
            path.display()
        )),
        _ => Some(format!(
            "has an unknown WebAssembly version or layer: {}",
            path.display()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_kind_of_wrong_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let at = |name: &str, bytes: &[u8]| {
            let path = dir.path().join(name);
            std::fs::write(&path, bytes).unwrap();
            problem(&path).unwrap_or_default()
        };
        assert!(problem(&dir.path().join("none.wasm"))
            .unwrap()
            .starts_with("not found"));
        assert!(problem(dir.path()).unwrap().starts_with("is a directory"));
        assert!(at("empty.wasm", b"").starts_with("is empty"));
        assert!(at("text.wasm", b"garbage!!").starts_with("is not WebAssembly"));
        assert!(at("short.wasm", b"\0as").starts_with("is not WebAssembly"));
        assert!(at("core.wasm", b"\0asm\x01\0\0\0").starts_with("is a core WebAssembly module"));
        assert_eq!(at("component.wasm", b"\0asm\x0d\0\x01\0"), "");
    }
}
