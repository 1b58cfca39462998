//! A fresh home's database, copied from an empty one made in advance.
//!
//! Creating the schema statement by statement costs SQLite 1–1.5 ms (each
//! `CREATE` is parsed, checked against the schema and written), which is a
//! tenth of a one-step run in a new home. So the binary carries
//! `empty.db`: an empty database of the current schema (`user_version` set,
//! WAL mode recorded in its header), and a home without a database gets a
//! copy of it. Its test checks that the copy is what the schema makes
//! (`WFHOST_WRITE_DB_TEMPLATE=1 cargo test -p wfhost template` makes it
//! again after a migration is added).
//!
//! The copy is written to a file without a name (`O_TMPFILE`) and linked
//! into place, which fails when a database appeared meanwhile: processes
//! opening a new home at once never see a half-written file, an existing
//! database is never replaced, and a process killed mid-copy leaves nothing
//! behind. Where the file system has no unnamed files (or `/proc` is not
//! mounted), the copy is written under a name of its own and hard-linked
//! into place instead. Where neither can be done (a database or WAL already
//! there, a file system without hard links), the caller lets SQLite create
//! the database as before.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::store::Durability;

/// The empty database of the current schema.
const EMPTY: &[u8] = include_bytes!("empty.db");

/// Make `db` a copy of the empty database, unless it (or a WAL beside it)
/// exists. Returns whether it did; an error leaves nothing behind.
pub(super) fn create_if_absent(db: &Path, durability: Durability) -> std::io::Result<bool> {
    let wal = sibling(db, "-wal");
    if db.symlink_metadata().is_ok() || wal.symlink_metadata().is_ok() {
        return Ok(false);
    }
    let linked = match write_unnamed_then_link(db, durability) {
        Err(error) if unnamed_files_unsupported(&error) => write_named_then_link(db, durability),
        other => other,
    };
    match linked {
        Ok(()) => Ok(true),
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(error) => Err(error),
    }
}

/// Write the copy to an unnamed file in `db`'s directory, then give it
/// `db` as its name.
fn write_unnamed_then_link(db: &Path, durability: Durability) -> std::io::Result<()> {
    let dir = directory_of(db);
    // The permissions SQLite gives the databases it creates.
    let file = OpenOptions::new()
        .write(true)
        .mode(0o644)
        .custom_flags(libc::O_TMPFILE)
        .open(dir)?;
    let file = fill(file, durability)?;
    // An unnamed file gets its name through its /proc link (linkat with
    // AT_EMPTY_PATH would need CAP_DAC_READ_SEARCH).
    let link = format!("/proc/self/fd/{}", file.as_raw_fd());
    link_following(Path::new(&link), db)?;
    drop(file);
    sync_directory(dir, durability)
}

/// Write the copy under a name of its own beside `db`, then hard-link it
/// as `db` and remove that name.
fn write_named_then_link(db: &Path, durability: Durability) -> std::io::Result<()> {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.subsec_nanos())
        .unwrap_or_default();
    let draft = sibling(db, &format!(".{}-{nanos}.new", std::process::id()));
    let linked = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o644)
        .open(&draft)
        .and_then(|file| fill(file, durability))
        .and_then(|_| std::fs::hard_link(&draft, db));
    let _ = std::fs::remove_file(&draft);
    linked?;
    sync_directory(directory_of(db), durability)
}

/// `file` holding the empty database (synced under `full`).
fn fill(mut file: std::fs::File, durability: Durability) -> std::io::Result<std::fs::File> {
    file.write_all(EMPTY)?;
    if durability == Durability::Full {
        file.sync_all()?;
    }
    Ok(file)
}

/// Whether `error` says that unnamed files cannot be made here (the file
/// system, or the kernel, has no `O_TMPFILE`; `/proc` is not mounted).
fn unnamed_files_unsupported(error: &std::io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::EOPNOTSUPP | libc::EISDIR | libc::EINVAL | libc::ENOSYS)
    ) || (error.kind() == std::io::ErrorKind::NotFound && !Path::new("/proc/self/fd").exists())
}

/// `linkat(AT_FDCWD, from, AT_FDCWD, to, AT_SYMLINK_FOLLOW)`: a hard link
/// to what `from` (a /proc fd link) points at.
fn link_following(from: &Path, to: &Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let from = std::ffi::CString::new(from.as_os_str().as_bytes())?;
    let to = std::ffi::CString::new(to.as_os_str().as_bytes())?;
    // SAFETY: both are valid NUL-terminated paths for the call.
    let status = unsafe {
        libc::linkat(
            libc::AT_FDCWD,
            from.as_ptr(),
            libc::AT_FDCWD,
            to.as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        )
    };
    if status == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Under `full`, make the new name durable.
fn sync_directory(dir: &Path, durability: Durability) -> std::io::Result<()> {
    if durability == Durability::Full {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// The directory `db` is in (`.` for a bare name).
fn directory_of(db: &Path) -> &Path {
    match db.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    }
}

/// `db` with `suffix` appended to its file name.
fn sibling(db: &Path, suffix: &str) -> std::path::PathBuf {
    let mut name = db.as_os_str().to_os_string();
    name.push(suffix);
    name.into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use rusqlite::Connection;

    /// `type, name, table, sql` of every schema object, in a stable order.
    fn objects(conn: &Connection) -> Vec<(String, String, String, Option<String>)> {
        conn.prepare("SELECT type, name, tbl_name, sql FROM sqlite_schema ORDER BY type, name")
            .unwrap()
            .query_map([], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
            })
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    fn pragma(conn: &Connection, name: &str) -> String {
        conn.query_row(&format!("PRAGMA {name}"), [], |row| {
            row.get::<_, rusqlite::types::Value>(0)
        })
        .map(|value| format!("{value:?}"))
        .unwrap()
    }

    /// The carried database is what the schema makes of an empty one:
    /// the same objects with the same SQL, the same version, WAL mode,
    /// no rows.
    #[test]
    fn the_template_is_an_empty_database_of_the_current_schema() {
        let dir = tempfile::tempdir().unwrap();
        let made = dir.path().join("made.db");
        {
            let mut conn = Connection::open(&made).unwrap();
            conn.pragma_update(None, "journal_mode", "WAL").unwrap();
            super::super::schema::migrate(&mut conn).unwrap();
        }
        if std::env::var_os("WFHOST_WRITE_DB_TEMPLATE").is_some() {
            let path = concat!(env!("CARGO_MANIFEST_DIR"), "/src/store/sqlite/empty.db");
            std::fs::write(path, std::fs::read(&made).unwrap()).unwrap();
            return;
        }
        let copied = dir.path().join("copied.db");
        assert!(create_if_absent(&copied, Durability::Normal).unwrap());
        let (made, copied) = (
            Connection::open(&made).unwrap(),
            Connection::open(&copied).unwrap(),
        );
        let stale = "src/store/sqlite/empty.db is not what the current schema makes: \
                     `WFHOST_WRITE_DB_TEMPLATE=1 cargo test -p wfhost template` makes it again";
        assert_eq!(objects(&copied), objects(&made), "{stale}");
        assert!(objects(&copied).len() > 20, "{:?}", objects(&copied));
        for name in ["user_version", "journal_mode", "page_size", "encoding"] {
            assert_eq!(
                pragma(&copied, name),
                pragma(&made, name),
                "{name}: {stale}"
            );
        }
        assert_eq!(pragma(&copied, "journal_mode"), "Text(\"wal\")");
        assert_eq!(pragma(&copied, "integrity_check"), "Text(\"ok\")");
        let rows: i64 = copied
            .query_row("SELECT count(*) FROM runs", [], |row| row.get(0))
            .unwrap();
        assert_eq!(rows, 0);
    }

    /// An existing database, or a WAL left without one, is never replaced;
    /// nothing is left behind.
    #[test]
    fn an_existing_database_or_wal_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("wfhost.db");
        std::fs::write(&db, b"mine").unwrap();
        assert!(!create_if_absent(&db, Durability::Full).unwrap());
        assert_eq!(std::fs::read(&db).unwrap(), b"mine");

        let other = dir.path().join("other.db");
        std::fs::write(sibling(&other, "-wal"), b"left").unwrap();
        assert!(!create_if_absent(&other, Durability::Normal).unwrap());
        assert!(!other.exists());

        let fresh = dir.path().join("fresh.db");
        assert!(create_if_absent(&fresh, Durability::Full).unwrap());
        assert_eq!(std::fs::read(&fresh).unwrap(), EMPTY);
        let mut names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["fresh.db", "other.db-wal", "wfhost.db"]);
    }

    /// The copy made by way of a named draft (for file systems without
    /// unnamed files) is the same, and its draft is gone.
    #[test]
    fn the_named_draft_fallback_makes_the_same_copy_and_leaves_no_draft() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("wfhost.db");
        write_named_then_link(&db, Durability::Full).unwrap();
        assert_eq!(std::fs::read(&db).unwrap(), EMPTY);
        let error = write_named_then_link(&db, Durability::Normal).unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::AlreadyExists);
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        assert_eq!(names, ["wfhost.db"]);
    }

    /// The unnamed copy is what is used where the file system has them
    /// (the temporary directories of the tests do: ext4, tmpfs).
    #[test]
    fn the_copy_is_written_unnamed_where_the_file_system_can() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("wfhost.db");
        write_unnamed_then_link(&db, Durability::Normal).unwrap();
        assert_eq!(std::fs::read(&db).unwrap(), EMPTY);
        let error = write_unnamed_then_link(&db, Durability::Full).unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&db).unwrap(), EMPTY);
    }

    /// Where the directory cannot be written, the error is returned and
    /// the caller falls back to SQLite (which reports it).
    #[test]
    fn an_unwritable_place_is_an_error() {
        let error = create_if_absent(Path::new("/nonexistent-dir/wfhost.db"), Durability::Normal)
            .unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::NotFound);
    }
}
