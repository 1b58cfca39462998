//! What identifies one state of a file without reading it: its device,
//! inode, size and change times, as `make` and git's index use them. A
//! write to the file changes its ctime (which no caller can set), and a new
//! file at the same name has another inode or ctime, so an unchanged stamp
//! means unchanged bytes; a file changed within the clock's granularity of
//! being stamped could keep its stamp, so only [`FileStamp::settled`] stamps
//! are recorded for files others write.

use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long after its last change a file's stamp is trusted to stand for
/// its bytes (well above any file system's timestamp granularity).
const SETTLE_TIME: Duration = Duration::from_secs(2);

/// One state of a file, from its metadata (taken on an open handle).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStamp {
    device: u64,
    inode: u64,
    size: u64,
    modified_ns: i128,
    changed_ns: i128,
}

impl FileStamp {
    /// The stamp of the file `metadata` describes.
    pub fn of(metadata: &Metadata) -> FileStamp {
        FileStamp {
            device: metadata.dev(),
            inode: metadata.ino(),
            size: metadata.size(),
            modified_ns: nanos(metadata.mtime(), metadata.mtime_nsec()),
            changed_ns: nanos(metadata.ctime(), metadata.ctime_nsec()),
        }
    }

    /// Whether the file last changed long enough ago that a change in the
    /// same clock tick as this stamp is ruled out.
    pub fn settled(self) -> bool {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i128);
        let settle = SETTLE_TIME.as_nanos() as i128;
        now - self.modified_ns.max(self.changed_ns) >= settle
    }

    /// The stamp as one line of text (also a file name: hex and `-` only).
    pub fn to_text(self) -> String {
        format!(
            "{:x}-{:x}-{:x}-{:x}-{:x}",
            self.device, self.inode, self.size, self.modified_ns, self.changed_ns
        )
    }

    /// The stamp [`FileStamp::to_text`] wrote, if `text` is one.
    pub fn parse(text: &str) -> Option<FileStamp> {
        let mut parts = text.trim().split('-');
        let mut next = || parts.next();
        let stamp = FileStamp {
            device: u64::from_str_radix(next()?, 16).ok()?,
            inode: u64::from_str_radix(next()?, 16).ok()?,
            size: u64::from_str_radix(next()?, 16).ok()?,
            modified_ns: i128::from_str_radix(next()?, 16).ok()?,
            changed_ns: i128::from_str_radix(next()?, 16).ok()?,
        };
        parts.next().is_none().then_some(stamp)
    }
}

fn nanos(seconds: i64, nanoseconds: i64) -> i128 {
    seconds as i128 * 1_000_000_000 + nanoseconds as i128
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_stamp_reads_back_from_its_text() {
        let file = tempfile::NamedTempFile::new().unwrap();
        let stamp = FileStamp::of(&file.as_file().metadata().unwrap());
        assert_eq!(FileStamp::parse(&stamp.to_text()), Some(stamp));
        assert_eq!(FileStamp::parse("1-2-3"), None);
        assert_eq!(FileStamp::parse(&format!("{}-0", stamp.to_text())), None);
        assert_eq!(FileStamp::parse("x-1-2-3-4"), None);
    }

    #[test]
    fn a_write_changes_the_stamp_and_a_fresh_file_is_not_settled() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        let before = FileStamp::of(&file.as_file().metadata().unwrap());
        assert!(!before.settled(), "just written");
        file.write_all(b"x").unwrap();
        let after = FileStamp::of(&file.as_file().metadata().unwrap());
        assert_ne!(before, after);
    }
}
