//! What a run needs before its first step: resolved grants (pinned to the
//! paths they led to when the run started), retry policies and loaded
//! components.

use serde_json::{Map, Value};

use super::Driver;
use crate::engine::step_types::{self, StepType};
use crate::engine::{grants, placement, retry};
use crate::step::executor::ResolvedGrants;
use crate::workflow::model::Step;
use crate::workflow::LoadedWorkflow;

/// Per step (by index): its resolved grants, retry policy, step type and
/// component.
pub(super) struct Setup {
    /// Resolved grants of each step.
    pub(super) grants: Vec<ResolvedGrants>,
    /// Retry policy of each step.
    pub(super) policies: Vec<retry::RetryPolicy>,
    /// The type of each step.
    pub(super) types: Vec<Box<dyn StepType>>,
    /// The component each step runs.
    pub(super) components: Vec<String>,
}

impl Driver {
    /// Resolve grants and retry policies and load every component; any
    /// problem is one message.
    pub(super) fn prepare(
        &self,
        run_id: &str,
        workflow: &LoadedWorkflow,
    ) -> std::result::Result<Setup, String> {
        let host = grants::HostState::new(self.store.home(), self.executor.cache_dir().as_deref());
        let placed = |step: &Step| self.placement.is_some() && placement::placeable(step);
        let all_grants = if self.placement.is_some() {
            // Steps placed on workers get their grants resolved (and
            // checked against the ceiling) there; here only their limits
            // are read.
            self.resolve_placed(workflow, &host)?
        } else {
            grants::resolve_all(workflow, self.ceiling.as_ref(), &host)
                .map_err(|d| format!("grants: {d}"))?
        };
        self.pin_grant_paths(run_id, workflow, &all_grants)?;
        let policies = retry::resolve_all(workflow).map_err(|d| format!("retry: {d}"))?;
        let types: Vec<Box<dyn StepType>> = workflow.def.steps.iter().map(step_types::of).collect();
        let components: Vec<String> = types.iter().map(|kind| kind.component(workflow)).collect();
        let mut unique: Vec<String> = workflow
            .def
            .steps
            .iter()
            .zip(&components)
            .filter(|(step, _)| !placed(step))
            .map(|(_, component)| component.clone())
            .collect();
        unique.sort();
        unique.dedup();
        self.executor
            .prepare(&unique)
            .map_err(|error| format!("cannot load plugins: {error}"))?;
        Ok(Setup {
            grants: all_grants,
            policies,
            types,
            components,
        })
    }

    /// Every step's grants when steps are placed on workers: a step that
    /// runs here must resolve them all; a placed step's are resolved as
    /// far as they go (its limits are what the driver reads).
    fn resolve_placed(
        &self,
        workflow: &LoadedWorkflow,
        host: &grants::HostState,
    ) -> std::result::Result<Vec<ResolvedGrants>, String> {
        let mut all = Vec::new();
        let mut problems = Vec::new();
        for step in &workflow.def.steps {
            let (resolved, trouble) =
                grants::resolve_with_problems(workflow, step, self.ceiling.as_ref(), host);
            if !placement::placeable(step) {
                problems.extend(trouble.iter().map(|p| format!("step '{}': {p}", step.id)));
            }
            all.push(resolved);
        }
        if problems.is_empty() {
            Ok(all)
        } else {
            Err(format!("grants: {}", problems.join("; ")))
        }
    }

    /// Check that every `files` grant resolves to the directory it resolved
    /// to when the run first started (a directory swapped for a symlink
    /// while the run was stopped must not widen a grant on resume), and
    /// record the grants seen for the first time.
    fn pin_grant_paths(
        &self,
        run_id: &str,
        workflow: &LoadedWorkflow,
        all_grants: &[ResolvedGrants],
    ) -> std::result::Result<(), String> {
        let store_error = |e: crate::store::StoreError| format!("store: {e}");
        let mut pinned = match self
            .store
            .latest_event(run_id, "grants_pinned")
            .map_err(store_error)?
        {
            Some(Value::Object(map)) => map,
            _ => Map::new(),
        };
        let mut added = false;
        for (step, resolved) in workflow.def.steps.iter().zip(all_grants) {
            if self.placement.is_some() && placement::placeable(step) {
                // Resolved on whichever worker runs it.
                continue;
            }
            let written = grants::merged(workflow, step).files;
            for (file, (path, _)) in written.iter().zip(&resolved.files) {
                let key = format!("{}:{}", step.id, file.path);
                let now = path.display().to_string();
                match pinned.get(&key).and_then(Value::as_str) {
                    Some(before) if before != now => {
                        return Err(format!(
                            "step '{}': files grant '{}' now leads to '{now}', not to '{before}' as when the run started (was the directory replaced by a link?); restore it, or start a new run",
                            step.id, file.path
                        ));
                    }
                    Some(_) => {}
                    None => {
                        pinned.insert(key, Value::String(now));
                        added = true;
                    }
                }
            }
        }
        if added {
            self.store
                .append_event(run_id, None, "grants_pinned", &Value::Object(pinned))
                .map_err(store_error)?;
        }
        Ok(())
    }
}
