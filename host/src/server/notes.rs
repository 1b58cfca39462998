//! `/api/runs/{id}/artifacts` and `/api/runs/{id}/comments`.

use axum::extract::{Path as UrlPath, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use utoipa::{IntoParams, ToSchema};

use super::extract::{Body, Params};
use super::problem::Problem;
use super::runs::resolve;
use super::state::ApiState;

/// Which artifacts.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ArtifactsQuery {
    /// Only this step's.
    pub step: Option<String>,
}

/// A new comment.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewComment {
    /// What it says (1 to 10,000 characters).
    pub text: String,
    /// The step it is about, if any.
    pub step: Option<String>,
    /// Who writes it (default `api`).
    pub author: Option<String>,
}

/// A run's artifacts: id, step, name, size, sha256, media type.
#[utoipa::path(get, path = "/api/runs/{id}/artifacts", tag = "artifacts",
    params(("id" = String, Path, description = "Run id or a unique prefix"), ArtifactsQuery),
    responses((status = 200, body = Value)))]
pub async fn list_artifacts(
    State(state): State<ApiState>,
    UrlPath(id): UrlPath<String>,
    Params(query): Params<ArtifactsQuery>,
) -> Result<Json<Value>, Problem> {
    let run_id = resolve(&state, &id)?;
    Ok(Json(json!(state
        .store
        .artifacts(&run_id, query.step.as_deref())?)))
}

/// Download one artifact (by its id: names are never paths here).
#[utoipa::path(get, path = "/api/runs/{id}/artifacts/{artifact}", tag = "artifacts",
    params(("id" = String, Path, description = "Run id or a unique prefix"),
           ("artifact" = i64, Path, description = "Artifact id")),
    responses((status = 200, description = "the file, with its media type"),
              (status = 404, description = "no such artifact")))]
pub async fn get_artifact(
    State(state): State<ApiState>,
    UrlPath((id, artifact)): UrlPath<(String, i64)>,
) -> Result<Response, Problem> {
    let run_id = resolve(&state, &id)?;
    let Some(record) = state
        .store
        .artifacts(&run_id, None)?
        .into_iter()
        .find(|a| a.id == artifact)
    else {
        return Err(Problem::not_found(format!(
            "run {run_id} has no artifact {artifact}"
        )));
    };
    let bytes = crate::app::notes::artifact_bytes(&*state.store, &run_id, &record)?;
    let file_name: String = std::path::Path::new(&record.name)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        .collect();
    let disposition = format!(
        "attachment; filename=\"{}\"",
        if file_name.is_empty() {
            "artifact"
        } else {
            &file_name
        }
    );
    Ok((
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, record.media_type.clone()),
            (header::CONTENT_DISPOSITION, disposition),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff".to_string()),
        ],
        bytes,
    )
        .into_response())
}

/// A run's comments (the steps' included), oldest first.
#[utoipa::path(get, path = "/api/runs/{id}/comments", tag = "comments",
    params(("id" = String, Path, description = "Run id or a unique prefix")),
    responses((status = 200, body = Value)))]
pub async fn list_comments(
    State(state): State<ApiState>,
    UrlPath(id): UrlPath<String>,
) -> Result<Json<Value>, Problem> {
    let run_id = resolve(&state, &id)?;
    Ok(Json(json!(state.store.comments(&run_id)?)))
}

/// Comment on a run or one of its steps.
#[utoipa::path(post, path = "/api/runs/{id}/comments", tag = "comments",
    params(("id" = String, Path, description = "Run id or a unique prefix")),
    request_body = NewComment,
    responses((status = 201, body = Value), (status = 409, description = "empty, too long, or an unknown step")))]
pub async fn add_comment(
    State(state): State<ApiState>,
    UrlPath(id): UrlPath<String>,
    Body(comment): Body<NewComment>,
) -> Result<(StatusCode, Json<Value>), Problem> {
    let run_id = resolve(&state, &id)?;
    let record = crate::app::notes::add_comment(
        &*state.store,
        &run_id,
        comment.step.as_deref(),
        comment.author.as_deref().unwrap_or("api"),
        &comment.text,
    )?;
    Ok((StatusCode::CREATED, Json(json!(record))))
}
