//! Joined steps: what a finished task ended with, and recording its
//! completion, its retry or its failure.

use std::time::Duration;

use anyhow::Result;
use serde_json::Value;

use super::{RunLoop, StepResult};
use crate::engine::driver::state::{describe_failure, within_total};
use crate::engine::driver::RunEvent;
use crate::step::executor::StepFailure;
use crate::store::{Change, StepStatus};
use crate::workflow::Step;

impl RunLoop<'_> {
    /// Handle steps joined together: take in their completions (those of
    /// plain steps are committed with the starts they release, by
    /// `commit_prepared`), schedule their retries or record their failures.
    pub(super) fn on_finished(&mut self, finished: Vec<StepResult>) -> Result<()> {
        let mut plain = Vec::new();
        let mut others = Vec::new();
        for (index, attempt, elapsed, result) in finished {
            self.state.running.remove(&index);
            if let Some(counter) = self.state.item_attempts.remove(&index) {
                let used = counter.load(std::sync::atomic::Ordering::SeqCst);
                self.state.attempts[index] = self.state.attempts[index].max(used);
            }
            match result {
                Ok(output) if self.workflow.def.steps[index].stage_loop.is_none() => {
                    plain.push((index, attempt, elapsed, output));
                }
                result => others.push((index, attempt, elapsed, result)),
            }
        }
        self.on_completed_together(plain)?;
        if !others.is_empty() {
            self.commit_prepared()?;
        }
        for (index, attempt, elapsed, result) in others {
            let step = &self.workflow.def.steps[index];
            let policy = &self.setup.policies[index];
            match result {
                Ok(output) => self.on_stage_completed(index, attempt, elapsed, output)?,
                Err(failure)
                    if step.for_each.is_none()
                        && policy.should_retry(&failure.kind, &failure.message, attempt)
                        && within_total(step, &self.state, index, policy.delay(attempt, 0.0)) =>
                {
                    self.schedule_retry(index, attempt, &failure)?;
                }
                Err(failure) => {
                    self.state.board.finished(index, "failed", elapsed);
                    self.record_failure(index, attempt, &failure)?;
                }
            }
        }
        Ok(())
    }

    /// Take in the completions of steps outside stage loops. Their records
    /// are committed with the starts they lead to (see `commit_prepared`),
    /// unless a step keeps artifacts: those are copied before any later
    /// step can change their files.
    fn on_completed_together(&mut self, done: Vec<(usize, u32, Duration, Value)>) -> Result<()> {
        let mut keeps_artifacts = false;
        for (index, attempt, elapsed, output) in done {
            self.state.note_completion(index, &output);
            self.state.complete(index, output);
            self.completing.push((index, attempt, elapsed));
            keeps_artifacts |= !self.workflow.def.steps[index].artifacts.is_empty();
        }
        if keeps_artifacts {
            self.commit_prepared()?;
        }
        Ok(())
    }

    /// Record the completion of a stage loop's step, with what follows it
    /// when it is the stage's last.
    fn on_stage_completed(
        &mut self,
        index: usize,
        attempt: u32,
        elapsed: Duration,
        output: Value,
    ) -> Result<()> {
        let (driver, run_id, workflow) = (self.driver, self.run_id, self.workflow);
        self.state.note_completion(index, &output);
        self.state.complete(index, output.clone());
        let step = &workflow.def.steps[index];
        let completion = completion(step, attempt, &output);
        let completed = driver.close_stage(
            run_id,
            workflow,
            &self.templates,
            &mut self.state,
            (index, attempt),
            completion,
        )?;
        if completed {
            self.after_completion(index, elapsed)?;
        }
        Ok(())
    }

    /// What follows a recorded completion: the step's artifacts, the board
    /// and the listener.
    pub(super) fn after_completion(&mut self, index: usize, elapsed: Duration) -> Result<()> {
        let step = &self.workflow.def.steps[index];
        if !step.artifacts.is_empty() {
            self.keep_artifacts(index)?;
        }
        self.state.board.finished(index, "completed", elapsed);
        self.driver.listener.on_event(&RunEvent::StepCompleted {
            step: step.id.clone(),
            elapsed,
        });
        Ok(())
    }

    /// Copy a completed step's `artifacts:` into the run folder and record
    /// them; a file left out (too big, not a regular file) is an event.
    fn keep_artifacts(&mut self, index: usize) -> Result<()> {
        let (driver, run_id, workflow) = (self.driver, self.run_id, self.workflow);
        let step = &workflow.def.steps[index];
        let into = driver.store.run_files(run_id).dir().join("artifacts");
        let grants = &self.setup.grants[index];
        let (kept, skipped) = crate::store::blocking::offload(|| {
            crate::engine::artifacts::collect(&step.artifacts, &workflow.dir, grants, &into)
        });
        for artifact in kept {
            if driver.store.keeps_artifact_content() {
                let path = into.join(&artifact.sha256);
                let bytes =
                    std::fs::read(&path).map_err(|source| crate::store::StoreError::Io {
                        path: path.clone(),
                        source,
                    })?;
                driver
                    .store
                    .put_artifact_content(run_id, &artifact.sha256, &bytes)?;
            }
            let id = driver.store.add_artifact(
                run_id,
                &step.id,
                &artifact.name,
                artifact.size,
                &artifact.sha256,
                &artifact.media_type,
            )?;
            driver.store.append_event(
                run_id,
                Some(&step.id),
                "artifact_kept",
                &serde_json::json!({ "id": id, "name": artifact.name, "size": artifact.size, "sha256": artifact.sha256 }),
            )?;
        }
        for why in skipped {
            driver.store.append_event(
                run_id,
                Some(&step.id),
                "artifact_skipped",
                &serde_json::json!({ "reason": why }),
            )?;
        }
        Ok(())
    }

    /// Record that a failed attempt will be tried again and start its timer.
    pub(super) fn schedule_retry(
        &mut self,
        index: usize,
        attempt: u32,
        failure: &StepFailure,
    ) -> Result<()> {
        let step = &self.workflow.def.steps[index];
        let policy = &self.setup.policies[index];
        let delay = policy.delay(attempt, rand::random::<f64>());
        let due = chrono::Utc::now()
            + chrono::Duration::from_std(delay).unwrap_or_else(|_| chrono::Duration::zero());
        let due = due.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let message = describe_failure(failure);
        self.driver
            .store
            .schedule_retry(self.run_id, &step.id, attempt, &message, &due)?;
        self.state.board.retrying(index);
        self.driver.listener.on_event(&RunEvent::StepRetrying {
            step: step.id.clone(),
            attempt,
            max_attempts: policy.max_attempts,
            delay,
            error: message,
        });
        self.state.waiting.insert(index);
        self.timers.spawn(async move {
            tokio::time::sleep(delay).await;
            index
        });
        Ok(())
    }
}

/// A step's completion as a change: its attempt's (or, for a `for_each`
/// step, the step's).
pub(super) fn completion<'o>(step: &'o Step, attempt: u32, output: &'o Value) -> Change<'o> {
    if step.for_each.is_some() {
        Change::CompleteStep {
            step: &step.id,
            output,
        }
    } else {
        Change::FinishAttempt {
            step: &step.id,
            attempt,
            status: StepStatus::Completed,
            outcome: Ok(output),
        }
    }
}
