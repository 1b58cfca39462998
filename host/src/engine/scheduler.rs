//! The ready queue: which steps may start now, given what has finished.
//!
//! Pure bookkeeping, no I/O. A step becomes ready the moment its last need
//! completes (not level by level); when a step fails, every step that
//! depends on it, directly or not, is skipped.

use std::collections::{HashMap, VecDeque};

/// Where a step is in its life, as far as scheduling is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    /// Some needs are unfinished.
    Waiting,
    /// All needs completed; queued to start.
    Ready,
    /// Started, not finished.
    Running,
    /// Finished with an output.
    Completed,
    /// Finished with an error.
    Failed,
    /// Will not run.
    Skipped,
}

/// Ready-queue state of one run.
#[derive(Debug)]
pub struct Scheduler {
    slots: Vec<Slot>,
    unmet: Vec<usize>,
    dependents: Vec<Vec<usize>>,
    ready: VecDeque<usize>,
    held: Vec<usize>,
}

impl Scheduler {
    /// Build from `(id, needs)` pairs in file order. Needs naming unknown
    /// steps are ignored (validation has rejected them already).
    pub fn new<'a>(steps: impl IntoIterator<Item = (&'a str, &'a [String])>) -> Scheduler {
        let steps: Vec<(&str, &[String])> = steps.into_iter().collect();
        let index: HashMap<&str, usize> = steps
            .iter()
            .enumerate()
            .map(|(i, (id, _))| (*id, i))
            .collect();
        let mut unmet = vec![0; steps.len()];
        let mut dependents = vec![Vec::new(); steps.len()];
        for (i, (_, needs)) in steps.iter().enumerate() {
            for need in needs.iter() {
                if let Some(&dep) = index.get(need.as_str()) {
                    unmet[i] += 1;
                    dependents[dep].push(i);
                }
            }
        }
        let mut slots = vec![Slot::Waiting; steps.len()];
        let mut ready = VecDeque::new();
        for (i, count) in unmet.iter().enumerate() {
            if *count == 0 {
                slots[i] = Slot::Ready;
                ready.push_back(i);
            }
        }
        Scheduler {
            slots,
            unmet,
            dependents,
            ready,
            held: Vec::new(),
        }
    }

    /// The step [`Scheduler::next_ready`] would take, without taking it.
    pub fn peek_ready(&self) -> Option<usize> {
        self.ready.front().copied()
    }

    /// Take the next ready step (file order among those that became ready
    /// together), marking it running.
    pub fn next_ready(&mut self) -> Option<usize> {
        let next = self.ready.pop_front()?;
        self.slots[next] = Slot::Running;
        Some(next)
    }

    /// Record a completion; dependents whose needs are now all met become ready.
    pub fn complete(&mut self, step: usize) {
        self.slots[step] = Slot::Completed;
        let mut newly_ready = Vec::new();
        for &dependent in &self.dependents[step] {
            self.unmet[dependent] = self.unmet[dependent].saturating_sub(1);
            if self.unmet[dependent] == 0 && self.slots[dependent] == Slot::Waiting {
                newly_ready.push(dependent);
            }
        }
        newly_ready.sort_unstable();
        for dependent in newly_ready {
            self.slots[dependent] = Slot::Ready;
            self.ready.push_back(dependent);
        }
    }

    /// Record a failure; returns the steps skipped because of it, each with
    /// the step whose failure or skip caused it.
    pub fn fail(&mut self, step: usize) -> Vec<(usize, usize)> {
        self.slots[step] = Slot::Failed;
        let mut skipped = Vec::new();
        let mut stack = vec![step];
        while let Some(cause) = stack.pop() {
            for &dependent in &self.dependents[cause] {
                if matches!(self.slots[dependent], Slot::Waiting | Slot::Ready)
                    && !self.held.contains(&dependent)
                {
                    self.slots[dependent] = Slot::Skipped;
                    self.ready.retain(|&queued| queued != dependent);
                    skipped.push((dependent, cause));
                    stack.push(dependent);
                }
            }
        }
        skipped
    }

    /// Take a step out of the normal flow before the run (re)starts: it
    /// will be settled by [`Scheduler::complete`] or [`Scheduler::fail`],
    /// or re-queued by [`Scheduler::requeue`].
    pub fn settle(&mut self, step: usize) {
        self.ready.retain(|&queued| queued != step);
        self.slots[step] = Slot::Running;
    }

    /// A step waits for a retry timer (counts as running for the queue).
    pub fn mark_waiting_retry(&mut self, step: usize) {
        self.slots[step] = Slot::Running;
    }

    /// Queue a step again (its retry is due).
    pub fn requeue(&mut self, step: usize) {
        if !matches!(
            self.slots[step],
            Slot::Completed | Slot::Skipped | Slot::Failed
        ) {
            self.slots[step] = Slot::Ready;
            self.ready.retain(|&queued| queued != step);
            self.ready.push_back(step);
        }
    }

    /// Keep a step out of the run until [`Scheduler::release_held`] (for
    /// `finally` steps: they run after everything else).
    pub fn hold(&mut self, step: usize) {
        self.ready.retain(|&queued| queued != step);
        self.slots[step] = Slot::Waiting;
        self.unmet[step] = usize::MAX / 2;
        self.held.push(step);
    }

    /// Queue every held step (file order); true when there were any.
    pub fn release_held(&mut self) -> bool {
        let held = std::mem::take(&mut self.held);
        for &step in &held {
            if self.slots[step] == Slot::Waiting {
                self.slots[step] = Slot::Ready;
                self.ready.push_back(step);
            }
        }
        !held.is_empty()
    }

    /// Record that a step will not run (its condition was false); its
    /// dependents are skipped too and returned as by [`Scheduler::fail`].
    pub fn skip(&mut self, step: usize) -> Vec<(usize, usize)> {
        let skipped = self.fail(step);
        self.slots[step] = Slot::Skipped;
        self.ready.retain(|&queued| queued != step);
        skipped
    }

    /// Settle every step that has not finished (cancellation); returns them.
    pub fn close_open(&mut self) -> Vec<usize> {
        let open: Vec<usize> = (0..self.slots.len())
            .filter(|&i| {
                !matches!(
                    self.slots[i],
                    Slot::Completed | Slot::Failed | Slot::Skipped
                )
            })
            .filter(|i| !self.held.contains(i))
            .collect();
        for &step in &open {
            self.slots[step] = Slot::Skipped;
        }
        self.ready.clear();
        open
    }

    #[cfg(test)]
    /// Slot of one step.
    pub fn slot(&self, step: usize) -> Slot {
        self.slots[step]
    }

    /// Whether every step reached a final slot.
    pub fn is_finished(&self) -> bool {
        self.slots
            .iter()
            .all(|slot| matches!(slot, Slot::Completed | Slot::Failed | Slot::Skipped))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(spec: &[(&'static str, &[&str])]) -> (Scheduler, Vec<(String, Vec<String>)>) {
        let owned: Vec<(String, Vec<String>)> = spec
            .iter()
            .map(|(id, needs)| {
                (
                    id.to_string(),
                    needs.iter().map(|n| n.to_string()).collect(),
                )
            })
            .collect();
        let scheduler = Scheduler::new(
            owned
                .iter()
                .map(|(id, needs)| (id.as_str(), needs.as_slice())),
        );
        (scheduler, owned)
    }

    #[test]
    fn a_step_starts_as_soon_as_its_own_needs_complete() {
        // a → c, b (slow) → d: c must be ready after a alone, not after b.
        let (mut s, _) = build(&[("a", &[]), ("b", &[]), ("c", &["a"]), ("d", &["b"])]);
        assert_eq!(s.next_ready(), Some(0));
        assert_eq!(s.next_ready(), Some(1));
        assert_eq!(s.next_ready(), None);
        s.complete(0);
        assert_eq!(s.next_ready(), Some(2), "c is ready while b still runs");
        assert_eq!(s.slot(3), Slot::Waiting);
        s.complete(1);
        assert_eq!(s.next_ready(), Some(3));
    }

    #[test]
    fn a_join_waits_for_all_needs() {
        let (mut s, _) = build(&[("a", &[]), ("b", &[]), ("j", &["a", "b"])]);
        s.next_ready();
        s.next_ready();
        s.complete(0);
        assert_eq!(s.next_ready(), None);
        s.complete(1);
        assert_eq!(s.next_ready(), Some(2));
        s.complete(2);
        assert!(s.is_finished());
    }

    #[test]
    fn failure_skips_transitive_dependents_only() {
        let (mut s, _) = build(&[
            ("a", &[]),
            ("b", &["a"]),
            ("c", &["b"]),
            ("x", &[]),
            ("y", &["x"]),
        ]);
        assert_eq!(s.next_ready(), Some(0));
        let skipped = s.fail(0);
        assert_eq!(skipped, vec![(1, 0), (2, 1)]);
        assert_eq!(s.slot(2), Slot::Skipped);
        assert_eq!(s.next_ready(), Some(3), "independent branch keeps going");
        s.complete(3);
        assert_eq!(s.next_ready(), Some(4));
        s.complete(4);
        assert!(s.is_finished());
    }

    #[test]
    fn diamond_skips_join_once() {
        let (mut s, _) = build(&[("a", &[]), ("b", &["a"]), ("c", &["a"]), ("d", &["b", "c"])]);
        s.next_ready();
        s.complete(0);
        s.next_ready();
        s.next_ready();
        let skipped = s.fail(1);
        assert_eq!(skipped, vec![(3, 1)]);
        s.complete(2);
        assert_eq!(s.next_ready(), None);
        assert!(s.is_finished());
    }
}
