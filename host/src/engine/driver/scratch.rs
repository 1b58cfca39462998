//! The scratch folders of a run's program steps, made ahead of the steps on
//! a thread of their own. Making a directory is one of the dearest things a
//! script step does on its way (on ext4 it can take a millisecond: the inode
//! allocator skips over the inodes freed lately), and a chain of steps would
//! pay it one step after the other; made ahead, it overlaps the steps before.
//! A step still makes its folder itself when it comes first (the same call,
//! which keeps an existing folder), so nothing waits for this thread.

use std::path::PathBuf;

use crate::step::executor::ResolvedGrants;
use crate::store::files::{create_private_dir, RunFiles};
use crate::workflow::model::Step;

/// Most folders made ahead for one run: the rest are made by their steps.
const MOST_AHEAD: usize = 10_000;

/// Start making, in the steps' order, the scratch folders of the steps that
/// may start programs (those with an `exec` grant).
pub(super) fn make_ahead(files: &RunFiles, steps: &[Step], grants: &[ResolvedGrants]) {
    let dirs: Vec<PathBuf> = steps
        .iter()
        .zip(grants)
        .filter(|(_, grants)| !grants.exec.is_empty())
        .map(|(step, _)| files.scratch_dir(&step.id))
        .take(MOST_AHEAD)
        .collect();
    let Some(parent) = dirs.first().and_then(|dir| dir.parent()).map(PathBuf::from) else {
        return;
    };
    let spawned = std::thread::Builder::new()
        .name("wfhost-scratch".into())
        .spawn(move || {
            // A failure is the step's to report, when it makes its folder.
            if create_private_dir(&parent).is_ok() {
                make_each(&dirs);
            }
        });
    if let Err(error) = spawned {
        tracing::debug!(%error, "cannot start the thread that makes scratch folders ahead");
    }
}

/// Make each folder (not its parents), until one's parent is gone: a run
/// removed meanwhile (it ended and was pruned) is not made again.
fn make_each(dirs: &[PathBuf]) {
    use std::os::unix::fs::DirBuilderExt;
    for dir in dirs {
        let made = std::fs::DirBuilder::new().mode(0o700).create(dir);
        if made.is_err_and(|error| error.kind() == std::io::ErrorKind::NotFound) {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;
    use std::time::{Duration, Instant};

    use super::*;
    use crate::step::grants::ExecGrant;

    #[test]
    fn the_folders_of_program_steps_are_made_ahead_and_private() {
        let home = tempfile::tempdir().unwrap();
        let files = RunFiles::new(home.path().join("runs").join("r1"));
        let step = |id: &str| -> Step {
            serde_json::from_value(serde_json::json!({ "id": id, "run": "true" })).unwrap()
        };
        let steps = [step("script"), step("function"), step("other")];
        let exec = ResolvedGrants {
            exec: vec![ExecGrant {
                name: "true".into(),
                path: PathBuf::from("/bin/true"),
            }],
            ..ResolvedGrants::default()
        };
        let grants = [exec.clone(), ResolvedGrants::default(), exec];
        make_ahead(&files, &steps, &grants);

        let deadline = Instant::now() + Duration::from_secs(10);
        while !files.scratch_dir("other").is_dir() {
            assert!(Instant::now() < deadline, "the folders were not made");
            std::thread::sleep(Duration::from_millis(5));
        }
        for id in ["script", "other"] {
            let mode = std::fs::metadata(files.scratch_dir(id))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o700, "{id}'s folder is not private");
        }
        assert!(
            !files.scratch_dir("function").exists(),
            "a step that cannot start programs got a folder"
        );
    }

    #[test]
    fn a_removed_run_s_folders_are_not_made_again() {
        let home = tempfile::tempdir().unwrap();
        let scratch = home.path().join("runs/r1/scratch");
        std::fs::create_dir_all(&scratch).unwrap();
        let dirs: Vec<PathBuf> = ["a", "b", "c"].iter().map(|id| scratch.join(id)).collect();
        make_each(&dirs[..1]);
        assert!(dirs[0].is_dir());
        // The run was pruned: nothing of it comes back.
        std::fs::remove_dir_all(home.path().join("runs/r1")).unwrap();
        make_each(&dirs[1..]);
        assert!(
            !home.path().join("runs/r1").exists(),
            "a pruned run's folder was made again"
        );
    }
}
