//! Bearer tokens: required on every request when the server listens on
//! anything but loopback. Tokens are made by `wfhost token create` and
//! only their SHA-256 is stored; a request's token is hashed and looked up.

use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use super::problem::Problem;
use super::state::ApiState;

/// The SHA-256 (hex) of a token.
pub fn token_hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// A new random token (256 bits, hex).
pub fn new_token() -> String {
    let bytes: [u8; 32] = rand::random();
    format!("wfh_{}", hex::encode(bytes))
}

/// Middleware: let a request through when no token is required or it
/// carries a known one; else 401.
pub async fn require_token(
    State(state): State<ApiState>,
    request: Request,
    next: Next,
) -> Response {
    if !state.require_token {
        return next.run(request).await;
    }
    // The header, else `?token=` (what an `EventSource` or a download link
    // of the board can send).
    let from_query = request.uri().query().and_then(|query| {
        query
            .split('&')
            .find_map(|pair| pair.strip_prefix("token="))
            .map(str::to_string)
    });
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(|t| t.trim().to_string())
        .or(from_query);
    let given = given.as_deref();
    let Some(token) = given.filter(|t| !t.is_empty() && t.len() <= 256) else {
        return unauthorized("this server needs a bearer token: `Authorization: Bearer <token>` (make one with `wfhost token create`)");
    };
    match state.store.token_known(&token_hash(token)) {
        Ok(true) => next.run(request).await,
        Ok(false) => unauthorized("unknown token"),
        Err(error) => Problem::from(error).into_response(),
    }
}

fn unauthorized(detail: &str) -> Response {
    let mut response = Problem::new(StatusCode::UNAUTHORIZED, detail).into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    response
}
