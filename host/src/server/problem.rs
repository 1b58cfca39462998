//! Errors as `application/problem+json` (RFC 9457): a status, a title and
//! a detail that says what to fix.

use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::app::{Invalid, InvalidWorkflow};
use crate::store::StoreError;

/// An error answer of the API.
#[derive(Debug)]
pub struct Problem {
    /// The HTTP status.
    pub status: StatusCode,
    /// What went wrong, in a few words.
    pub detail: String,
    /// Diagnostics of a workflow that does not validate.
    pub diagnostics: Option<serde_json::Value>,
}

impl Problem {
    /// A problem with `status` and `detail`.
    pub fn new(status: StatusCode, detail: impl Into<String>) -> Problem {
        Problem {
            status,
            detail: detail.into(),
            diagnostics: None,
        }
    }

    /// 400: the request is wrong.
    pub fn bad_request(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::BAD_REQUEST, detail)
    }

    /// 404: no such thing.
    pub fn not_found(detail: impl Into<String>) -> Problem {
        Problem::new(StatusCode::NOT_FOUND, detail)
    }
}

impl From<anyhow::Error> for Problem {
    fn from(error: anyhow::Error) -> Problem {
        if let Some(invalid) = error.downcast_ref::<InvalidWorkflow>() {
            let diagnostics: Vec<serde_json::Value> = invalid
                .0
                .iter()
                .map(|d| {
                    json!({
                        "file": d.location.as_ref().map(|l| l.file.clone()),
                        "line": d.location.as_ref().map(|l| l.line),
                        "col": d.location.as_ref().map(|l| l.col),
                        "step": d.step,
                        "message": d.message,
                    })
                })
                .collect();
            return Problem {
                status: StatusCode::UNPROCESSABLE_ENTITY,
                detail: invalid.to_string(),
                diagnostics: Some(json!(diagnostics)),
            };
        }
        if let Some(invalid) = error.downcast_ref::<Invalid>() {
            return Problem::new(StatusCode::CONFLICT, invalid.0.clone());
        }
        if let Some(store) = error.downcast_ref::<StoreError>() {
            return Problem::from(store);
        }
        tracing::error!("request failed: {error:#}");
        Problem::new(StatusCode::INTERNAL_SERVER_ERROR, format!("{error:#}"))
    }
}

impl From<&StoreError> for Problem {
    fn from(error: &StoreError) -> Problem {
        match error {
            StoreError::UnknownRun(_) | StoreError::AmbiguousRun { .. } => {
                Problem::not_found(error.to_string())
            }
            other => Problem::new(StatusCode::INTERNAL_SERVER_ERROR, other.to_string()),
        }
    }
}

impl From<StoreError> for Problem {
    fn from(error: StoreError) -> Problem {
        Problem::from(&error)
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let mut body = json!({
            "type": "about:blank",
            "title": self.status.canonical_reason().unwrap_or("error"),
            "status": self.status.as_u16(),
            "detail": self.detail,
        });
        if let Some(diagnostics) = self.diagnostics {
            body["diagnostics"] = diagnostics;
        }
        (
            self.status,
            [(header::CONTENT_TYPE, "application/problem+json")],
            body.to_string(),
        )
            .into_response()
    }
}
