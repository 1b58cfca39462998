//! Which wfhost home a command uses: `--home`/`WFHOST_HOME`, else the
//! nearest `.wfhost` directory found upward from the current directory (as
//! git finds `.git`; `wfhost init` makes one), else one per-user home in
//! the XDG data directory (`$XDG_DATA_HOME/wfhost`, by default
//! `~/.local/share/wfhost`). So runs do not vanish after a `cd`, and a
//! grant over a project folder does not cover the store unless the project
//! chose to keep its runs in it.

use std::path::{Path, PathBuf};

/// The name of a project's home directory.
pub const PROJECT_HOME: &str = ".wfhost";

/// A home and how it was chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Home {
    /// The directory.
    pub path: PathBuf,
    /// How it was chosen.
    pub source: HomeSource,
}

/// How a [`Home`] was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HomeSource {
    /// `--home` or `WFHOST_HOME`.
    Given,
    /// A `.wfhost` directory here or above.
    Project,
    /// The per-user home.
    User,
}

/// Whether `path` belongs to the user this process runs as.
fn owned_by_this_user(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    std::fs::metadata(path).is_ok_and(|metadata| metadata.uid() == me)
}

/// Whether a store was ever created in the home at `path`.
pub fn has_store(path: &Path) -> bool {
    path.join("wfhost.db").is_file()
}

/// The home to use: `given`, else the nearest `.wfhost` upward from `cwd`,
/// else the per-user one (from `XDG_DATA_HOME` or `HOME`; `.wfhost` in
/// `cwd` when neither is set).
pub fn find(given: Option<&Path>, cwd: &Path) -> Home {
    if let Some(path) = given {
        return Home {
            path: path.to_path_buf(),
            source: HomeSource::Given,
        };
    }
    for dir in cwd.ancestors() {
        let candidate = dir.join(PROJECT_HOME);
        if !candidate.is_dir() {
            continue;
        }
        // As git's `safe.directory`: a home someone else put in a folder
        // (a cloned repository, a shared /tmp) is not trusted with runs.
        if !owned_by_this_user(&candidate) {
            tracing::warn!(
                "ignoring {}: it belongs to another user (pass --home to use it)",
                candidate.display()
            );
            continue;
        }
        return Home {
            path: candidate,
            source: HomeSource::Project,
        };
    }
    let data = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .filter(|dir| dir.is_absolute())
        .or_else(|| {
            std::env::var_os("HOME")
                .map(PathBuf::from)
                .filter(|dir| dir.is_absolute())
                .map(|home| home.join(".local/share"))
        });
    match data {
        Some(data) => Home {
            path: data.join("wfhost"),
            source: HomeSource::User,
        },
        None => Home {
            path: cwd.join(PROJECT_HOME),
            source: HomeSource::Project,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn given_wins_then_the_nearest_project_home_upward() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("a/b/c");
        std::fs::create_dir_all(&deep).unwrap();
        let given = dir.path().join("elsewhere");
        assert_eq!(find(Some(&given), &deep).path, given);
        std::fs::create_dir_all(dir.path().join("a/.wfhost")).unwrap();
        let found = find(None, &deep);
        assert_eq!(found.path, dir.path().join("a/.wfhost"));
        assert_eq!(found.source, HomeSource::Project);
        assert!(!has_store(&found.path));
    }

    #[test]
    fn a_project_home_of_another_user_is_passed_over() {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            assert_ne!(
                std::env::var("CI").as_deref(),
                Ok("true"),
                "this test changes a directory's owner: it needs root"
            );
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let outer = dir.path().join(".wfhost");
        let theirs = dir.path().join("repo/.wfhost");
        std::fs::create_dir_all(&theirs).unwrap();
        std::fs::create_dir_all(&outer).unwrap();
        std::os::unix::fs::chown(&theirs, Some(12345), Some(12345)).unwrap();
        let found = find(None, &dir.path().join("repo"));
        assert_eq!(found.path, outer, "the other user's home is skipped");
    }
}
