//! `/api/approvals`: agents' tool calls held for a person.

use axum::extract::{Path as UrlPath, State};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa::{IntoParams, ToSchema};

use super::extract::{Body, Params};
use super::problem::Problem;
use super::runs::resolve;
use super::state::ApiState;

/// Which approvals to list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ApprovalsQuery {
    /// Only this run's.
    pub run: Option<String>,
    /// Answered ones too.
    pub all: Option<bool>,
}

/// An answer to a held call.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Answer {
    /// A note for the record (approve), or the reason the agent is told
    /// (deny; required).
    pub note: Option<String>,
}

/// Held tool calls (pending ones unless `all`).
#[utoipa::path(get, path = "/api/approvals", tag = "approvals", params(ApprovalsQuery),
    responses((status = 200, body = Value)))]
pub async fn list_approvals(
    State(state): State<ApiState>,
    Params(query): Params<ApprovalsQuery>,
) -> Result<Json<Value>, Problem> {
    let run = match &query.run {
        Some(run) => Some(resolve(&state, run)?),
        None => None,
    };
    Ok(Json(json!(state
        .store
        .approvals(run.as_deref(), query.all.unwrap_or(false))?)))
}

/// Approve a held call: the agent's call goes ahead.
#[utoipa::path(post, path = "/api/runs/{id}/approvals/{approval}/approve", tag = "approvals",
    params(("id" = String, Path, description = "Run id or a unique prefix"),
           ("approval" = i64, Path, description = "Approval id")),
    request_body = Answer,
    responses((status = 200, body = Value), (status = 409, description = "no such pending approval")))]
pub async fn approve(
    State(state): State<ApiState>,
    UrlPath((id, approval)): UrlPath<(String, i64)>,
    Body(answer): Body<Answer>,
) -> Result<Json<Value>, Problem> {
    answer_call(&state, &id, approval, true, answer.note)
}

/// Deny a held call: the reason goes back to the agent's model.
#[utoipa::path(post, path = "/api/runs/{id}/approvals/{approval}/deny", tag = "approvals",
    params(("id" = String, Path, description = "Run id or a unique prefix"),
           ("approval" = i64, Path, description = "Approval id")),
    request_body = Answer,
    responses((status = 200, body = Value), (status = 400, description = "no reason given"),
              (status = 409, description = "no such pending approval")))]
pub async fn deny(
    State(state): State<ApiState>,
    UrlPath((id, approval)): UrlPath<(String, i64)>,
    Body(answer): Body<Answer>,
) -> Result<Json<Value>, Problem> {
    if answer.note.as_deref().is_none_or(|n| n.trim().is_empty()) {
        return Err(Problem::bad_request(
            "a denial needs a `note`: it is what the agent is told",
        ));
    }
    answer_call(&state, &id, approval, false, answer.note)
}

fn answer_call(
    state: &ApiState,
    id: &str,
    approval: i64,
    approved: bool,
    note: Option<String>,
) -> Result<Json<Value>, Problem> {
    if note.as_ref().is_some_and(|n| n.chars().count() > 2000) {
        return Err(Problem::bad_request(
            "the note is longer than 2000 characters",
        ));
    }
    let run_id = resolve(state, id)?;
    match state
        .store
        .answer_approval(&run_id, approval, approved, note.as_deref())?
    {
        Ok(record) => Ok(Json(json!(record))),
        Err(problem) => Err(Problem::new(axum::http::StatusCode::CONFLICT, problem)),
    }
}
