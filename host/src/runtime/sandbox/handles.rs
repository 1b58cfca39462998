//! Handles (`O_PATH`) of the files and directories that programs' Landlock
//! rules name besides their grants (the system directories, the programs
//! and their loaders), opened once per host process and reused while the
//! name still names the same file. A rule is always added on a handle,
//! never on a name; this only spares the `open`, `fstat` and `close` of
//! each rule of each program (one `stat` of the name stays, to notice a
//! program rebuilt or a system file replaced: its handle is opened again).

use std::collections::HashMap;
use std::fs::{File, Metadata};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Which file a name named: its device and inode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct FileId {
    dev: u64,
    ino: u64,
}

impl FileId {
    pub(super) fn of(meta: &Metadata) -> FileId {
        FileId {
            dev: meta.dev(),
            ino: meta.ino(),
        }
    }
}

/// Most handles kept; past it the cache starts over (a host whose
/// programs name more files than that opens them as it did before).
const MAX_HANDLES: usize = 256;

type Handles = HashMap<PathBuf, (FileId, Arc<File>)>;

static HANDLES: Mutex<Option<Handles>> = Mutex::new(None);

/// A handle of `path`, which a `stat` just found to name `id`: the one
/// kept from before when it is of that file, else a new one. The handle
/// is what the rule is made on, so a name swapped after the `stat` only
/// makes the rule name the file that was opened.
pub(super) fn handle(path: &Path, id: FileId) -> io::Result<Arc<File>> {
    let mut handles = HANDLES.lock().unwrap_or_else(|e| e.into_inner());
    let handles = handles.get_or_insert_with(HashMap::new);
    if let Some((kept, file)) = handles.get(path) {
        if *kept == id {
            return Ok(file.clone());
        }
    }
    let file = Arc::new(
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_CLOEXEC)
            .open(path)?,
    );
    if handles.len() >= MAX_HANDLES {
        handles.clear();
    }
    handles.insert(
        path.to_path_buf(),
        (FileId::of(&file.metadata()?), file.clone()),
    );
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_handle_is_kept_while_the_name_names_the_same_file_and_renewed_after() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tool");
        std::fs::write(&path, "one").unwrap();
        let first = handle(&path, FileId::of(&std::fs::metadata(&path).unwrap())).unwrap();
        let again = handle(&path, FileId::of(&std::fs::metadata(&path).unwrap())).unwrap();
        assert!(Arc::ptr_eq(&first, &again), "the handle was not kept");

        // Rebuilt: a new file under the same name gets a handle of its own.
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, "two").unwrap();
        let renewed = handle(&path, FileId::of(&std::fs::metadata(&path).unwrap())).unwrap();
        assert!(!Arc::ptr_eq(&first, &renewed), "a stale handle was reused");
        assert_eq!(
            FileId::of(&renewed.metadata().unwrap()),
            FileId::of(&std::fs::metadata(&path).unwrap())
        );
        assert_ne!(
            FileId::of(&first.metadata().unwrap()),
            FileId::of(&renewed.metadata().unwrap())
        );
    }

    #[test]
    fn a_name_that_names_nothing_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let id = FileId::of(&std::fs::metadata(dir.path()).unwrap());
        let error = handle(&dir.path().join("gone"), id).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::NotFound);
    }
}
