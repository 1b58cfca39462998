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
        if candidate.is_dir() {
            return Home {
                path: candidate,
                source: HomeSource::Project,
            };
        }
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
}
