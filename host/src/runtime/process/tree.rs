//! A started program's process tree: signalling it, and making sure
//! nothing of it is left once the program is done.

use std::time::{Duration, Instant};

use crate::runtime::sandbox::Cgroup;

/// How long the host keeps killing what is left of a program's tree (and
/// waits to remove its cgroup) before it gives up.
const SWEEP_BUDGET: Duration = Duration::from_secs(10);
/// How long the host waits for a finished program's tree to be gone before
/// it leaves the rest to a background thread.
const FINISH_WAIT: Duration = Duration::from_millis(500);

/// A started program's tree: its process group and, when there is one, its
/// `pids` cgroup. Whatever is left of it is killed when it is finished or
/// dropped (the step was cancelled or timed out while the program ran).
pub(super) struct ChildTree {
    pub(super) pgid: Option<i32>,
    pub(super) cgroup: Option<Cgroup>,
}

impl ChildTree {
    /// Signal the whole tree: the group, and every process of the cgroup
    /// that left the group. Each process gets the signal once: a second
    /// SIGTERM could hit what a TERM handler started to clean up.
    pub(super) fn signal(&self, signal: i32) {
        let outside_group: Vec<i32> = match &self.cgroup {
            // SAFETY: getpgid has no memory-safety preconditions.
            Some(cgroup) => cgroup
                .pids()
                .into_iter()
                .filter(|pid| self.pgid != Some(unsafe { libc::getpgid(*pid) }))
                .collect(),
            None => Vec::new(),
        };
        if let Some(pgid) = self.pgid {
            // SAFETY: killpg has no memory-safety preconditions; the group
            // still has its leader (not reaped yet) so the id is ours.
            unsafe {
                libc::killpg(pgid, signal);
            }
        }
        for pid in outside_group {
            // SAFETY: as above; the pid was in our cgroup a moment ago.
            unsafe {
                libc::kill(pid, signal);
            }
        }
    }

    /// Kill what is left, wait a moment for it to be gone and remove the
    /// cgroup; what takes longer is left to a background thread, so the
    /// step is not held up.
    pub(super) async fn finish(mut self) {
        let (pgid, cgroup) = (self.pgid.take(), self.cgroup.take());
        let started = Instant::now();
        while started.elapsed() < FINISH_WAIT {
            if sweep_once(pgid, cgroup.as_ref()) && cgroup.as_ref().is_none_or(Cgroup::try_remove) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        finish_tree(pgid, cgroup);
    }
}

impl Drop for ChildTree {
    fn drop(&mut self) {
        finish_tree(self.pgid.take(), self.cgroup.take());
    }
}

fn finish_tree(pgid: Option<i32>, cgroup: Option<Cgroup>) {
    if pgid.is_none() && cgroup.is_none() {
        return;
    }
    // Usually everything is dead already (the pid namespace's init took
    // the tree with it): done without a thread.
    if sweep_once(pgid, cgroup.as_ref()) && cgroup.as_ref().is_none_or(Cgroup::try_remove) {
        return;
    }
    let spawned = std::thread::Builder::new()
        .name("wfhost-sweep".into())
        .spawn(move || sweep(pgid, cgroup));
    if let Err(error) = spawned {
        tracing::warn!(%error, "cannot start a thread to sweep a program's processes");
    }
}

/// SIGKILL the group and the cgroup once; true when nothing was left.
fn sweep_once(pgid: Option<i32>, cgroup: Option<&Cgroup>) -> bool {
    let mut left = false;
    if let Some(pgid) = pgid {
        // SAFETY: see `ChildTree::signal`; ESRCH means the group is gone.
        left |= unsafe { libc::killpg(pgid, libc::SIGKILL) } == 0;
    }
    if let Some(cgroup) = cgroup {
        left |= cgroup.signal(libc::SIGKILL) > 0;
    }
    !left
}

/// Kill until the group and cgroup are empty (or the budget is spent), then
/// remove the cgroup. The group id is never signalled once it was found
/// empty, so a reused id is safe.
fn sweep(mut pgid: Option<i32>, cgroup: Option<Cgroup>) {
    let deadline = Instant::now() + SWEEP_BUDGET;
    loop {
        if let Some(group) = pgid {
            // SAFETY: see `ChildTree::signal`.
            if unsafe { libc::killpg(group, libc::SIGKILL) } != 0 {
                pgid = None;
            }
        }
        let in_cgroup = cgroup
            .as_ref()
            .map_or(0, |cgroup| cgroup.signal(libc::SIGKILL));
        if (pgid.is_none() && in_cgroup == 0) || Instant::now() >= deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    if let Some(cgroup) = cgroup {
        cgroup.remove(deadline);
    }
}
