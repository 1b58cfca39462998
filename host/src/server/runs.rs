//! `/api/runs`: start, list, inspect and control runs; their steps, logs
//! and checkpoints.

use std::path::{Path, PathBuf};

use axum::extract::{Path as UrlPath, State};
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};
use utoipa::{IntoParams, ToSchema};

use super::extract::{Body, Params};
use super::problem::Problem;
use super::state::ApiState;
use crate::app::{background, control, runs, status};

/// `POST /api/runs`: the workflow (a file the server can read, or a posted
/// definition) and its arguments.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartRun {
    /// Path of a workflow file on the server (absolute, or relative to the
    /// server's working directory).
    pub workflow: Option<String>,
    /// Or the workflow itself (YAML or JSON text, at most 1 MiB).
    pub definition: Option<String>,
    /// The syntax of `definition`: `yaml` (default) or `json`.
    pub format: Option<String>,
    /// The run's arguments.
    #[schema(value_type = Object)]
    pub args: Option<Map<String, Value>>,
    /// Who or what starts it (shown by `status`).
    pub triggered_by: Option<String>,
    /// Its priority (default 0).
    pub priority: Option<i64>,
}

/// Filters and paging of `GET /api/runs`.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct RunsQuery {
    /// Only runs in this status (`stale`: its driver died).
    pub status: Option<String>,
    /// Only runs of the workflow with this name.
    pub workflow: Option<String>,
    /// At most this many (default 50, at most 1000).
    pub limit: Option<usize>,
    /// Skip this many of the newest first.
    pub offset: Option<usize>,
}

/// Paging of a step's log.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct LogQuery {
    /// Only lines after this event id.
    pub after: Option<i64>,
    /// At most this many lines (default 500, at most 5000).
    pub limit: Option<usize>,
}

/// The answer to a control request.
#[derive(Debug, serde::Serialize, ToSchema)]
pub struct ControlDone {
    /// The run.
    pub run_id: String,
    /// `requested` (its driver acts within a second), `cancelled`, or
    /// `resumed` (a driver was started).
    pub result: String,
}

/// The event that marks a run as started by the server.
pub(super) const OWNED_EVENT: &str = "run_started_by_server";

/// A run's id, or a unique prefix of one, resolved.
pub(super) fn resolve(state: &ApiState, run: &str) -> Result<String, Problem> {
    if run.is_empty() || run.len() > 64 || !run.chars().all(|c| c.is_ascii_alphanumeric()) {
        return Err(Problem::not_found(format!(
            "no run '{}'",
            run.chars().take(64).collect::<String>()
        )));
    }
    state.store.resolve_run_id(run).map_err(Problem::from)
}

/// List runs, newest first.
#[utoipa::path(get, path = "/api/runs", params(RunsQuery), tag = "runs",
    responses((status = 200, description = "`{runs: [...], total}`", body = Value)))]
pub async fn list_runs(
    State(state): State<ApiState>,
    Params(query): Params<RunsQuery>,
) -> Result<Json<Value>, Problem> {
    let limit = query.limit.unwrap_or(50).clamp(1, 1000);
    let offset = query.offset.unwrap_or(0);
    let mut all = state.store.runs()?;
    if let Some(wanted) = &query.status {
        all.retain(|run| {
            let shown = if run.stale {
                "stale"
            } else {
                run.status.as_str()
            };
            shown == wanted
        });
    }
    if let Some(name) = &query.workflow {
        all.retain(|run| &run.workflow == name);
    }
    let total = all.len();
    let page: Vec<_> = all.into_iter().skip(offset).take(limit).collect();
    Ok(Json(
        json!({ "runs": page, "total": total, "offset": offset, "limit": limit }),
    ))
}

/// Start a run: it is recorded, then driven by a background driver (as
/// `wfhost run --detach`), so it outlives the server; with a PostgreSQL
/// store it is queued for the workers (`queued: true`, no driver).
#[utoipa::path(post, path = "/api/runs", request_body = StartRun, tag = "runs",
    responses((status = 201, description = "`{id, status, driver_pid}` (`queued: true` and no driver with a PostgreSQL store)", body = Value),
              (status = 422, description = "the workflow or its arguments do not validate")))]
pub async fn start_run(
    State(state): State<ApiState>,
    Body(start): Body<StartRun>,
) -> Result<(StatusCode, Json<Value>), Problem> {
    let path =
        match (&start.workflow, &start.definition) {
            (Some(path), None) => PathBuf::from(path),
            (None, Some(text)) => posted_definition(&state.home, text, start.format.as_deref())?,
            _ => return Err(Problem::bad_request(
                "give exactly one of `workflow` (a file path) or `definition` (the workflow text)",
            )),
        };
    let config = state.config.as_deref().map(PathBuf::as_path);
    let run_id = runs::create_run(
        &state.home,
        config,
        &*state.store,
        runs::NewRunRequest {
            path: &path,
            args: start.args.unwrap_or_default(),
            triggered_by: start.triggered_by.as_deref(),
            priority: start.priority.unwrap_or(0),
        },
    )?;
    if state.store.url().is_some() {
        // PostgreSQL: the run is queued for the workers, as `wfhost run
        // --detach` queues it.
        return Ok((
            StatusCode::CREATED,
            Json(json!({ "id": run_id, "status": "pending", "driver_pid": null, "queued": true })),
        ));
    }
    // The server owns it: a restarted server resumes it if its driver died.
    state
        .store
        .append_event(&run_id, None, OWNED_EVENT, &json!({ "by": "wfhost serve" }))?;
    let started = background::start_driver(&state.home, config, &*state.store, &run_id)?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "id": run_id, "status": "pending", "driver_pid": started.pid })),
    ))
}

/// A posted definition is kept as a file in `<home>/workflows/` (named by
/// its hash), so the run has a directory to resolve relative paths in.
fn posted_definition(home: &Path, text: &str, format: Option<&str>) -> Result<PathBuf, Problem> {
    let extension = match format.unwrap_or("yaml") {
        "yaml" | "yml" => "yaml",
        "json" => "json",
        other => {
            return Err(Problem::bad_request(format!(
                "format '{}' is not yaml or json",
                other.chars().take(20).collect::<String>()
            )))
        }
    };
    let dir = home.join("workflows");
    std::fs::create_dir_all(&dir)
        .map_err(|e| Problem::from(anyhow::anyhow!("cannot create {}: {e}", dir.display())))?;
    let name = hex::encode(&Sha256::digest(text.as_bytes())[..12]);
    let path = dir.join(format!("posted-{name}.{extension}"));
    std::fs::write(&path, text)
        .map_err(|e| Problem::from(anyhow::anyhow!("cannot write {}: {e}", path.display())))?;
    Ok(path)
}

/// A run with its steps, counts, current phase and pending approvals.
#[utoipa::path(get, path = "/api/runs/{id}", tag = "runs",
    params(("id" = String, Path, description = "Run id or a unique prefix")),
    responses((status = 200, description = "as `wfhost status --json`", body = Value),
              (status = 404, description = "no such run")))]
pub async fn get_run(
    State(state): State<ApiState>,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<Value>, Problem> {
    let run_id = resolve(&state, &id)?;
    Ok(Json(status::status_json(&*state.store, &run_id)?))
}

/// Ask the run's driver to pause: no new step starts, running ones finish.
#[utoipa::path(post, path = "/api/runs/{id}/pause", tag = "runs",
    params(("id" = String, Path, description = "Run id or a unique prefix")),
    responses((status = 202, body = ControlDone), (status = 409, description = "not running")))]
pub async fn pause_run(
    State(state): State<ApiState>,
    UrlPath(id): UrlPath<String>,
) -> Result<(StatusCode, Json<ControlDone>), Problem> {
    let run_id = resolve(&state, &id)?;
    control::pause(&*state.store, &run_id)?;
    Ok(done(run_id, "requested"))
}

/// Cancel the run: running steps stop, their programs are killed.
#[utoipa::path(post, path = "/api/runs/{id}/cancel", tag = "runs",
    params(("id" = String, Path, description = "Run id or a unique prefix")),
    responses((status = 202, body = ControlDone), (status = 409, description = "already finished")))]
pub async fn cancel_run(
    State(state): State<ApiState>,
    UrlPath(id): UrlPath<String>,
) -> Result<(StatusCode, Json<ControlDone>), Problem> {
    let run_id = resolve(&state, &id)?;
    let result = match control::cancel(&*state.store, &run_id)? {
        control::Done::Requested => "requested",
        control::Done::Settled => "cancelled",
    };
    Ok(done(run_id, result))
}

/// Resume a paused, blocked or stale run in a background driver.
#[utoipa::path(post, path = "/api/runs/{id}/resume", tag = "runs",
    params(("id" = String, Path, description = "Run id or a unique prefix")),
    responses((status = 202, body = ControlDone), (status = 409, description = "finished, or driven")))]
pub async fn resume_run(
    State(state): State<ApiState>,
    UrlPath(id): UrlPath<String>,
) -> Result<(StatusCode, Json<ControlDone>), Problem> {
    let run_id = resolve(&state, &id)?;
    control::check_resumable(&*state.store, &run_id)?;
    let config = state.config.as_deref().map(PathBuf::as_path);
    background::start_driver(&state.home, config, &*state.store, &run_id)?;
    Ok(done(run_id, "resumed"))
}

/// `POST /api/runs/{id}/retry`: which steps run again.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryRequest {
    /// Re-run this step and everything downstream of it.
    pub from: Option<String>,
    /// Or re-run only this step.
    pub only: Option<String>,
}

/// Re-run part of a finished (or stopped) run in a background driver, as
/// `wfhost retry --from|--only`.
#[utoipa::path(post, path = "/api/runs/{id}/retry", tag = "runs",
    params(("id" = String, Path, description = "Run id or a unique prefix")),
    request_body = RetryRequest,
    responses((status = 202, body = ControlDone), (status = 400, description = "neither or both of from/only"),
              (status = 404, description = "no such step"), (status = 409, description = "still running")))]
pub async fn retry_run(
    State(state): State<ApiState>,
    UrlPath(id): UrlPath<String>,
    Body(request): Body<RetryRequest>,
) -> Result<(StatusCode, Json<ControlDone>), Problem> {
    let run_id = resolve(&state, &id)?;
    let (flag, step) = match (&request.from, &request.only) {
        (Some(step), None) => ("--from", step),
        (None, Some(step)) => ("--only", step),
        _ => return Err(Problem::bad_request("give exactly one of `from` or `only`")),
    };
    if !state.store.steps(&run_id)?.iter().any(|s| &s.id == step) {
        return Err(Problem::not_found(format!(
            "run {run_id} has no step '{}'",
            safe(step)
        )));
    }
    let run = state.store.run(&run_id)?;
    if control::driven(&run) {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            format!("run {run_id} is still running: wait for it, or cancel it first"),
        ));
    }
    let config = state.config.as_deref().map(PathBuf::as_path);
    background::start_command(
        &state.home,
        config,
        &*state.store,
        &run_id,
        &["retry", &run_id, flag, step],
    )?;
    Ok(done(run_id, "retrying"))
}

/// `POST /api/runs/{id}/checkpoints`: a labelled checkpoint.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCheckpoint {
    /// What this point is, for people (1 to 200 characters).
    pub label: String,
}

/// Mark the run's present state with a label (as `wfhost checkpoint`).
#[utoipa::path(post, path = "/api/runs/{id}/checkpoints", tag = "runs",
    params(("id" = String, Path, description = "Run id or a unique prefix")),
    request_body = NewCheckpoint,
    responses((status = 201, description = "`{checkpoint, label}`", body = Value), (status = 400, description = "bad label")))]
pub async fn add_checkpoint(
    State(state): State<ApiState>,
    UrlPath(id): UrlPath<String>,
    Body(request): Body<NewCheckpoint>,
) -> Result<(StatusCode, Json<Value>), Problem> {
    let run_id = resolve(&state, &id)?;
    crate::app::notes::checkpoint_label(&request.label).map_err(Problem::bad_request)?;
    let made = crate::app::notes::add_checkpoint(&*state.store, &run_id, &request.label)?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "checkpoint": made.seq, "label": made.label, "size_bytes": made.size_bytes })),
    ))
}

/// `POST /api/runs/{id}/restore`: which checkpoint.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RestoreRequest {
    /// A checkpoint id from `GET /api/runs/{id}/checkpoints`.
    pub checkpoint: i64,
}

/// Put a run back as it was at a checkpoint and drive it on in a background
/// driver (steps that finished after it run again), as `wfhost restore`.
#[utoipa::path(post, path = "/api/runs/{id}/restore", tag = "runs",
    params(("id" = String, Path, description = "Run id or a unique prefix")),
    request_body = RestoreRequest,
    responses((status = 202, body = ControlDone), (status = 404, description = "no such checkpoint of this run"),
              (status = 409, description = "still running")))]
pub async fn restore_run(
    State(state): State<ApiState>,
    UrlPath(id): UrlPath<String>,
    Body(request): Body<RestoreRequest>,
) -> Result<(StatusCode, Json<ControlDone>), Problem> {
    let run_id = resolve(&state, &id)?;
    if !state
        .store
        .checkpoints(&run_id)?
        .iter()
        .any(|c| c.seq == request.checkpoint)
    {
        return Err(Problem::not_found(format!(
            "run {run_id} has no checkpoint {}",
            request.checkpoint
        )));
    }
    let run = state.store.run(&run_id)?;
    if control::driven(&run) {
        return Err(Problem::new(
            StatusCode::CONFLICT,
            format!("run {run_id} is running: pause or cancel it before restoring"),
        ));
    }
    let config = state.config.as_deref().map(PathBuf::as_path);
    let checkpoint = request.checkpoint.to_string();
    background::start_command(
        &state.home,
        config,
        &*state.store,
        &run_id,
        &["restore", &checkpoint],
    )?;
    Ok(done(run_id, "restoring"))
}

fn done(run_id: String, result: &str) -> (StatusCode, Json<ControlDone>) {
    (
        StatusCode::ACCEPTED,
        Json(ControlDone {
            run_id,
            result: result.to_string(),
        }),
    )
}

/// One step of a run: status, attempts, input (of its latest attempt),
/// output, error.
#[utoipa::path(get, path = "/api/runs/{id}/steps/{step}", tag = "runs",
    params(("id" = String, Path, description = "Run id or a unique prefix"),
           ("step" = String, Path, description = "Step id")),
    responses((status = 200, body = Value), (status = 404, description = "no such run or step")))]
pub async fn get_step(
    State(state): State<ApiState>,
    UrlPath((id, step)): UrlPath<(String, String)>,
) -> Result<Json<Value>, Problem> {
    let run_id = resolve(&state, &id)?;
    let record = state
        .store
        .steps(&run_id)?
        .into_iter()
        .find(|s| s.id == step)
        .ok_or_else(|| Problem::not_found(format!("run {run_id} has no step '{}'", safe(&step))))?;
    let mut doc = json!(record);
    doc["input"] = state
        .store
        .latest_inputs(&run_id)?
        .remove(&step)
        .unwrap_or(Value::Null);
    Ok(Json(doc))
}

/// A step's log lines (and other events), paged by event id.
#[utoipa::path(get, path = "/api/runs/{id}/steps/{step}/logs", tag = "runs",
    params(("id" = String, Path, description = "Run id or a unique prefix"),
           ("step" = String, Path, description = "Step id"), LogQuery),
    responses((status = 200, description = "`{events: [...], next_after}`", body = Value)))]
pub async fn step_logs(
    State(state): State<ApiState>,
    UrlPath((id, step)): UrlPath<(String, String)>,
    Params(query): Params<LogQuery>,
) -> Result<Json<Value>, Problem> {
    let run_id = resolve(&state, &id)?;
    if !state.store.steps(&run_id)?.iter().any(|s| s.id == step) {
        return Err(Problem::not_found(format!(
            "run {run_id} has no step '{}'",
            safe(&step)
        )));
    }
    let after = query.after.unwrap_or(0);
    let limit = query.limit.unwrap_or(500).clamp(1, 5000);
    let events: Vec<_> = state
        .store
        .events(&run_id, Some(&step))?
        .into_iter()
        .filter(|e| e.seq > after)
        .take(limit)
        .collect();
    let next_after = events.last().map(|e| e.seq).unwrap_or(after);
    Ok(Json(json!({ "events": events, "next_after": next_after })))
}

/// The points the run can be restored to.
#[utoipa::path(get, path = "/api/runs/{id}/checkpoints", tag = "runs",
    params(("id" = String, Path, description = "Run id or a unique prefix")),
    responses((status = 200, body = Value)))]
pub async fn checkpoints(
    State(state): State<ApiState>,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<Value>, Problem> {
    let run_id = resolve(&state, &id)?;
    Ok(Json(json!(state.store.checkpoints(&run_id)?)))
}

/// Text from a request, short and on one line, for messages.
pub(super) fn safe(text: &str) -> String {
    text.chars().filter(|c| !c.is_control()).take(64).collect()
}
