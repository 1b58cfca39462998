//! Pruning the disk cache (`wfhost prune --cache`): compiled code this
//! build can never load, what a killed writer left, records pointing at
//! nothing, and (when asked) entries not used for a while. Everything
//! removed is rebuilt on demand, so pruning never loses anything but time.
//!
//! Only names the cache itself writes are touched; anything else in the
//! directory is left alone, and a symbolic link is removed as a link,
//! never followed.

use std::collections::HashSet;
use std::fs::{self, DirEntry, Metadata};
use std::io;
use std::path::Path;
use std::time::{Duration, SystemTime};

use super::SOURCES;

/// How old a temporary file (`.NAME.tmp`) must be to be taken for one a
/// killed writer left: a live writer renames it within moments.
const STALE_TEMP: Duration = Duration::from_secs(3600);

/// What [`prune`] removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pruned {
    /// Compiled components removed (each with its digest record).
    pub entries: usize,
    /// Files removed in all (entries, records, leftovers).
    pub files: usize,
    /// Their size in bytes.
    pub bytes: u64,
}

/// Prune the cache directory `dir`, whose current engines tag their
/// entries with `tags`:
/// - compiled entries (`KEY-TAG.cwasm` and `KEY-TAG.cwasm.sha256`) of any
///   other tag: code of another wfhost build or engine setting, which this
///   one never loads;
/// - with `unused_for`, also current entries not used for that long (the
///   later of the file's access and modification times: on a file system
///   mounted `noatime`, since it was compiled);
/// - digest records without their entry, temporary files older than an
///   hour, pending quick builds older than `stale_pending`;
/// - file records in `sources/` naming a key no entry is left for.
///
/// A missing directory is an empty cache.
pub fn prune(
    dir: &Path,
    tags: &[String],
    unused_for: Option<Duration>,
    stale_pending: Duration,
) -> io::Result<Pruned> {
    let mut pruned = Pruned::default();
    let now = SystemTime::now();
    let Some(entries) = read_dir_if_present(dir)? else {
        return Ok(pruned);
    };
    let mut kept_keys = HashSet::new();
    let mut records = Vec::new();
    for entry in entries {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Ok(metadata) = entry.metadata() else {
            continue;
        };
        if let Some(entry_name) = name.strip_suffix(".sha256") {
            records.push((entry, entry_name.to_string(), metadata));
            continue;
        }
        if is_temporary(name) {
            if older_than(&metadata, now, STALE_TEMP) {
                remove(&entry, &metadata, &mut pruned)?;
            }
            continue;
        }
        let Some((key, tag)) = compiled_entry_name(name) else {
            continue;
        };
        let current = tags.iter().any(|t| t == tag);
        let unused = unused_for.is_some_and(|age| !used_within(&metadata, now, age));
        if current && !unused {
            kept_keys.insert(key.to_string());
            continue;
        }
        if remove(&entry, &metadata, &mut pruned)? {
            pruned.entries += 1;
        }
    }
    for (record, entry_name, metadata) in records {
        if !dir.join(&entry_name).exists() {
            remove(&record, &metadata, &mut pruned)?;
        }
    }
    prune_folder(
        &dir.join(super::tiers::PENDING),
        &mut pruned,
        |name, metadata| name.ends_with(".wasm") && older_than(metadata, now, stale_pending),
    )?;
    let sources = dir.join(SOURCES);
    prune_folder(&sources, &mut pruned, |name, metadata| {
        if is_temporary(name) {
            return older_than(metadata, now, STALE_TEMP);
        }
        recorded_key(&sources.join(name)).is_none_or(|key| !kept_keys.contains(&key))
    })?;
    Ok(pruned)
}

/// The key a `sources/` record holds, read from the opened file: `None`
/// unless it is a regular file (a link is not followed) of at most
/// [`MAX_RECORD`] bytes.
fn recorded_key(path: &Path) -> Option<String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let file = fs::File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .ok()?;
    if !file.metadata().ok()?.is_file() {
        return None;
    }
    let mut key = String::new();
    file.take(MAX_RECORD + 1).read_to_string(&mut key).ok()?;
    (key.len() as u64 <= MAX_RECORD).then(|| key.trim().to_string())
}

/// The most a `sources/` record is read: the cache writes a 64-digit key.
const MAX_RECORD: u64 = 128;

/// Whether `name` is one of the cache's temporary files (`.NAME.tmp`).
fn is_temporary(name: &str) -> bool {
    name.starts_with('.') && name.ends_with(".tmp")
}

/// The entries of `dir`; `None` when it does not exist.
fn read_dir_if_present(dir: &Path) -> io::Result<Option<fs::ReadDir>> {
    match fs::read_dir(dir) {
        Ok(entries) => Ok(Some(entries)),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(error),
    }
}

/// `KEY-TAG.cwasm` split into its key (64 hex digits) and tag (16).
fn compiled_entry_name(name: &str) -> Option<(&str, &str)> {
    let stem = name.strip_suffix(".cwasm")?;
    let (key, tag) = stem.split_once('-')?;
    let hex = |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit());
    (hex(key, 64) && hex(tag, 16)).then_some((key, tag))
}

/// Remove the regular files (or links) of `folder` that `doomed` picks.
fn prune_folder(
    folder: &Path,
    pruned: &mut Pruned,
    doomed: impl Fn(&str, &Metadata) -> bool,
) -> io::Result<()> {
    let Some(entries) = read_dir_if_present(folder)? else {
        return Ok(());
    };
    for entry in entries {
        let entry = entry?;
        let Ok(metadata) = entry.metadata() else {
            continue;
        };
        let name = entry.file_name();
        if name.to_str().is_some_and(|name| doomed(name, &metadata)) {
            remove(&entry, &metadata, pruned)?;
        }
    }
    Ok(())
}

/// Remove one file (never a directory), counting it; one removed meanwhile
/// by another process counts as removed. Whether it was removed.
fn remove(entry: &DirEntry, metadata: &Metadata, pruned: &mut Pruned) -> io::Result<bool> {
    if metadata.is_dir() {
        return Ok(false);
    }
    let path = entry.path();
    match fs::remove_file(&path) {
        Ok(()) => {}
        Err(error) if error.kind() == io::ErrorKind::NotFound => {}
        Err(error) => {
            return Err(io::Error::new(
                error.kind(),
                format!("cannot remove {}: {error}", path.display()),
            ))
        }
    }
    pruned.files += 1;
    pruned.bytes += metadata.len();
    Ok(true)
}

fn older_than(metadata: &Metadata, now: SystemTime, age: Duration) -> bool {
    metadata
        .modified()
        .ok()
        .and_then(|modified| now.duration_since(modified).ok())
        .is_some_and(|elapsed| elapsed > age)
}

fn used_within(metadata: &Metadata, now: SystemTime, age: Duration) -> bool {
    let last_used = [metadata.accessed(), metadata.modified()]
        .into_iter()
        .filter_map(Result::ok)
        .max();
    last_used.is_none_or(|used| {
        now.duration_since(used)
            .map_or(true, |elapsed| elapsed <= age)
    })
}

#[cfg(test)]
mod tests {
    use std::fs::File;

    use super::*;

    const KEY_A: &str = "aa00000000000000000000000000000000000000000000000000000000000000";
    const KEY_B: &str = "bb00000000000000000000000000000000000000000000000000000000000000";
    const TAG: &str = "0123456789abcdef";
    const OLD_TAG: &str = "fedcba9876543210";

    fn write(path: &Path, bytes: &[u8]) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, bytes).unwrap();
    }

    fn age(path: &Path, by: Duration) {
        let then = SystemTime::now() - by;
        File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_times(fs::FileTimes::new().set_accessed(then).set_modified(then))
            .unwrap();
    }

    fn prune_current(dir: &Path, unused_for: Option<Duration>) -> Pruned {
        prune(
            dir,
            &[TAG.to_string()],
            unused_for,
            Duration::from_secs(600),
        )
        .unwrap()
    }

    fn entry(dir: &Path, key: &str, tag: &str) -> std::path::PathBuf {
        let path = dir.join(format!("{key}-{tag}.cwasm"));
        write(&path, &[0; 1000]);
        write(&dir.join(format!("{key}-{tag}.cwasm.sha256")), b"digest\n");
        path
    }

    #[test]
    fn entries_of_other_engines_and_leftovers_go_and_current_ones_stay() {
        let dir = tempfile::tempdir().unwrap();
        let current = entry(dir.path(), KEY_A, TAG);
        let other = entry(dir.path(), KEY_B, OLD_TAG);
        write(&dir.path().join(SOURCES).join("stamp-a"), KEY_A.as_bytes());
        write(&dir.path().join(SOURCES).join("stamp-b"), KEY_B.as_bytes());
        let orphan = dir.path().join(format!("{KEY_B}-{TAG}.cwasm.sha256"));
        write(&orphan, b"digest\n");
        let stale_temp = dir.path().join(".0123.tmp");
        write(&stale_temp, b"half");
        age(&stale_temp, Duration::from_secs(7200));
        let fresh_temp = dir.path().join(".4567.tmp");
        write(&fresh_temp, b"being written");
        let unrelated = dir.path().join("sandbox-support.json");
        write(&unrelated, b"{}");

        let pruned = prune_current(dir.path(), None);

        assert_eq!(pruned.entries, 1);
        // The old engine's entry and record, the orphan record, the stale
        // temporary file and the record naming the removed key.
        assert_eq!(pruned.files, 5, "{pruned:?}");
        assert_eq!(pruned.bytes, 1000 + 7 + 7 + 4 + 64);
        assert!(
            current.exists()
                && dir
                    .path()
                    .join(format!("{KEY_A}-{TAG}.cwasm.sha256"))
                    .exists()
        );
        assert!(!other.exists() && !orphan.exists() && !stale_temp.exists());
        assert!(fresh_temp.exists() && unrelated.exists());
        assert!(dir.path().join(SOURCES).join("stamp-a").exists());
        assert!(!dir.path().join(SOURCES).join("stamp-b").exists());
    }

    #[test]
    fn with_an_age_entries_unused_for_longer_go_too() {
        let dir = tempfile::tempdir().unwrap();
        let used = entry(dir.path(), KEY_A, TAG);
        let unused = entry(dir.path(), KEY_B, TAG);
        age(&unused, Duration::from_secs(10 * 86_400));
        let week = Some(Duration::from_secs(7 * 86_400));

        let pruned = prune_current(dir.path(), week);

        assert_eq!((pruned.entries, pruned.files), (1, 2));
        assert!(used.exists() && !unused.exists());
    }

    #[test]
    fn a_record_is_read_only_from_a_small_regular_file_never_through_a_link() {
        let dir = tempfile::tempdir().unwrap();
        entry(dir.path(), KEY_A, TAG);
        let sources = dir.path().join(SOURCES);
        write(&sources.join("kept"), KEY_A.as_bytes());
        // A link to a file holding a kept key, and a record too big to be one.
        let outside = tempfile::tempdir().unwrap();
        let target = outside.path().join("key");
        write(&target, KEY_A.as_bytes());
        std::os::unix::fs::symlink(&target, sources.join("linked")).unwrap();
        write(
            &sources.join("big"),
            format!("{KEY_A}{}", " ".repeat(200)).as_bytes(),
        );

        prune_current(dir.path(), None);

        assert!(sources.join("kept").exists());
        assert!(!sources.join("linked").exists() && target.exists());
        assert!(!sources.join("big").exists());
    }

    #[test]
    fn a_missing_cache_is_empty_and_directories_and_links_are_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            prune(&dir.path().join("none"), &[], None, Duration::ZERO).unwrap(),
            Pruned::default()
        );
        // A link named like an old entry goes as a link; what it points at stays.
        let outside = tempfile::tempdir().unwrap();
        let target = outside.path().join("precious");
        write(&target, b"keep me");
        std::os::unix::fs::symlink(&target, dir.path().join(format!("{KEY_A}-{OLD_TAG}.cwasm")))
            .unwrap();
        fs::create_dir(dir.path().join(format!("{KEY_B}-{OLD_TAG}.cwasm"))).unwrap();

        prune(dir.path(), &[TAG.to_string()], None, Duration::ZERO).unwrap();

        assert!(target.exists());
        assert!(!dir.path().join(format!("{KEY_A}-{OLD_TAG}.cwasm")).exists());
        assert!(dir.path().join(format!("{KEY_B}-{OLD_TAG}.cwasm")).is_dir());
    }
}
