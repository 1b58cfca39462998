//! `/api/workflows`: the workflows that have runs, with their stats, and
//! validation of a posted definition.

use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa::ToSchema;

use super::extract::Body;
use super::problem::Problem;
use super::state::ApiState;

/// `POST /api/workflows/validate`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ValidateRequest {
    /// The workflow text.
    pub definition: Option<String>,
    /// Or the path of a workflow file on the server.
    pub workflow: Option<String>,
    /// `yaml` (default) or `json`.
    pub format: Option<String>,
}

/// Workflows with runs: executions, success rate, average duration.
#[utoipa::path(get, path = "/api/workflows", tag = "workflows",
    responses((status = 200, description = "as `wfhost workflows --json`", body = Value)))]
pub async fn list_workflows(State(state): State<ApiState>) -> Result<Json<Value>, Problem> {
    let runs = state.store.runs()?;
    Ok(Json(json!(crate::app::registry::stats(&runs))))
}

/// One workflow with runs: its stats, and its description and args schema
/// from the definition its latest run pinned.
#[utoipa::path(get, path = "/api/workflows/{name}", tag = "workflows",
    params(("name" = String, Path, description = "The workflow's name")),
    responses((status = 200, description = "stats, `args` (JSON Schema), `description`, `phases`", body = Value),
              (status = 404, description = "no runs of such a workflow")))]
pub async fn get_workflow(
    State(state): State<ApiState>,
    axum::extract::Path(name): axum::extract::Path<String>,
) -> Result<Json<Value>, Problem> {
    let runs = state.store.runs()?;
    let mut rows = crate::app::registry::stats(&runs);
    let Some(index) = rows.iter().position(|r| r["name"] == name.as_str()) else {
        return Err(Problem::not_found(format!(
            "no runs of a workflow named '{}'",
            super::runs::safe(&name)
        )));
    };
    let mut row = rows.swap_remove(index);
    // Runs are newest first: the latest run's pinned definition.
    if let Some(latest) = runs.iter().find(|r| r.workflow == name) {
        let format =
            crate::workflow::Format::from_path(std::path::Path::new(&latest.workflow_path));
        if let Ok(def) =
            crate::workflow::parse::parse_str(&latest.definition, &latest.workflow_path, format)
        {
            row["args"] = json!(def.args);
            row["description"] = json!(def.description);
            row["version"] = json!(def.version);
            row["phases"] = json!(def.phases.iter().map(|p| p.id.clone()).collect::<Vec<_>>());
        }
    }
    Ok(Json(row))
}

/// Validate a definition: `{valid, diagnostics, read_as, steps}`.
#[utoipa::path(post, path = "/api/workflows/validate", tag = "workflows",
    request_body = ValidateRequest,
    responses((status = 200, description = "`valid` true or false with diagnostics", body = Value)))]
pub async fn validate(
    State(state): State<ApiState>,
    Body(request): Body<ValidateRequest>,
) -> Result<Json<Value>, Problem> {
    let format = match request.format.as_deref().unwrap_or("yaml") {
        "yaml" | "yml" => crate::workflow::Format::Yaml,
        "json" => crate::workflow::Format::Json,
        other => {
            return Err(Problem::bad_request(format!(
                "format '{}' is not yaml or json",
                super::runs::safe(other)
            )))
        }
    };
    let agents = crate::app::runs::home_agents(Some(&state.home))?;
    let builtins = crate::runtime::builtin::names();
    let loaded =
        match (&request.definition, &request.workflow) {
            (Some(text), None) => {
                let dir = state.home.join("workflows");
                let name = match format {
                    crate::workflow::Format::Json => "posted.json",
                    crate::workflow::Format::Yaml => "posted.yaml",
                };
                crate::workflow::load_from_source_with(
                    text,
                    name,
                    &dir,
                    format,
                    &builtins,
                    agents.as_ref(),
                )
            }
            (None, Some(path)) => {
                crate::workflow::load_with(std::path::Path::new(path), &builtins, agents.as_ref())
            }
            _ => return Err(Problem::bad_request(
                "give exactly one of `definition` (the workflow text) or `workflow` (a file path)",
            )),
        };
    match loaded {
        Ok(workflow) => Ok(Json(json!({
            "valid": true,
            "workflow": workflow.def.name,
            "args": workflow.def.args,
            "steps": workflow.def.steps.iter().map(|s| json!({"id": s.id, "phase": s.phase, "needs": s.needs})).collect::<Vec<_>>(),
            "read_as": workflow.readings.iter().map(|r| json!({"place": r.place, "written": r.written, "read_as": r.read_as})).collect::<Vec<_>>(),
            "diagnostics": [],
        }))),
        Err(diagnostics) => Ok(Json(json!({
            "valid": false,
            "diagnostics": diagnostics.iter().map(|d| json!({
                "line": d.location.as_ref().map(|l| l.line),
                "col": d.location.as_ref().map(|l| l.col),
                "step": d.step,
                "message": d.message,
            })).collect::<Vec<_>>(),
        }))),
    }
}
