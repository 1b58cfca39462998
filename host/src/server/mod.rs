//! `wfhost serve`: the REST API and live events over HTTP (axum), on the
//! same `app` wiring as the CLI. Runs it starts are driven by background
//! drivers (see [`crate::app::background`]) with the lease rules of any
//! driver, so they outlive the server; control requests go through the
//! store, as the CLI's do.
//!
//! Loopback by default; any other address needs a bearer token on every
//! request (`wfhost token create`). Request bodies are JSON of at most
//! 1 MiB with no unknown fields; errors are `application/problem+json`;
//! `/api/openapi.json` is generated from the handlers.

mod approvals;
mod auth;
mod events;
mod extract;
mod notes;
mod problem;
mod runs;
mod state;
mod workflows;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::Json;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use auth::{new_token, token_hash};
use problem::Problem;
use state::ApiState;

/// A line on stderr that never panics (a closed stderr must not stop the
/// server).
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

#[derive(OpenApi)]
#[openapi(info(
    title = "wfhost",
    description = "Runs, steps, events and approvals of a wfhost home."
))]
struct ApiDoc;

/// The API's router and its OpenAPI document: every route registered here
/// is in the document, because both come from the same handler list.
fn api(state: ApiState) -> (axum::Router, utoipa::openapi::OpenApi) {
    let (router, openapi) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(runs::list_runs, runs::start_run))
        .routes(routes!(runs::get_run))
        .routes(routes!(runs::pause_run))
        .routes(routes!(runs::resume_run))
        .routes(routes!(runs::cancel_run))
        .routes(routes!(runs::get_step))
        .routes(routes!(runs::step_logs))
        .routes(routes!(runs::checkpoints, runs::add_checkpoint))
        .routes(routes!(runs::retry_run))
        .routes(routes!(runs::restore_run))
        .routes(routes!(notes::list_artifacts))
        .routes(routes!(notes::get_artifact))
        .routes(routes!(notes::list_comments, notes::add_comment))
        .routes(routes!(events::all_events))
        .routes(routes!(events::run_events))
        .routes(routes!(workflows::list_workflows))
        .routes(routes!(workflows::get_workflow))
        .routes(routes!(workflows::validate))
        .routes(routes!(approvals::list_approvals))
        .routes(routes!(approvals::approve))
        .routes(routes!(approvals::deny))
        .split_for_parts();
    let document = openapi.clone();
    let router = router
        .route(
            "/api/openapi.json",
            axum::routing::get(move || {
                let document = document.clone();
                async move { Json(document) }
            }),
        )
        .fallback(|| async { Problem::not_found("no such route (see /api/openapi.json)") })
        .method_not_allowed_fallback(|| async {
            Problem::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "this route does not take that method",
            )
        })
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ))
        .layer(DefaultBodyLimit::max(extract::MAX_BODY_BYTES))
        .with_state(state)
        // The board: one embedded page that uses only the public API (it
        // holds no data itself, so it needs no token; its requests do).
        .route("/", axum::routing::get(board))
        .route("/board", axum::routing::get(board));
    (router, openapi)
}

/// The board's page (embedded; no CDN, works offline).
const BOARD: &str = include_str!("board/index.html");

async fn board() -> impl axum::response::IntoResponse {
    (
        [
            (axum::http::header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (
                axum::http::header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                 connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; \
                 frame-ancestors 'none'",
            ),
            (axum::http::header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        BOARD,
    )
}

/// How to serve.
pub struct ServeOptions {
    /// The wfhost home.
    pub home: PathBuf,
    /// The host config file, if given.
    pub config: Option<PathBuf>,
    /// Where to listen.
    pub bind: SocketAddr,
    /// Require a token even on loopback.
    pub require_token: bool,
    /// The PostgreSQL store (`--store`), if given.
    pub store: Option<String>,
}

/// Serve until SIGINT or SIGTERM. A non-loopback `bind` needs at least one
/// token in the store.
pub fn serve(options: ServeOptions) -> anyhow::Result<()> {
    let store = crate::app::open_store(
        &options.home,
        options.config.as_deref(),
        options.store.as_deref(),
    )?;
    let require_token = options.require_token || !options.bind.ip().is_loopback();
    if require_token && store.token_count()? == 0 {
        return Err(crate::app::Invalid(format!(
            "--bind {} needs a bearer token on every request ({}), and this home has none: \
             make one with `wfhost token create` first",
            options.bind,
            if options.require_token {
                "--require-token"
            } else {
                "not a loopback address"
            }
        ))
        .into());
    }
    let state = ApiState {
        home: Arc::new(options.home.clone()),
        config: options.config.clone().map(Arc::new),
        store,
        require_token,
    };
    resume_owned(&state, options.config.as_deref());
    let (router, _) = api(state);
    let runtime = crate::app::tokio_runtime()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(options.bind)
            .await
            .map_err(|e| crate::app::Invalid(format!("cannot listen on {}: {e}", options.bind)))?;
        let address = listener.local_addr()?;
        say!(
            "wfhost serve: listening on http://{address}/api/ (home {}){}",
            options.home.display(),
            if require_token {
                "; bearer token required"
            } else {
                ""
            }
        );
        axum::serve(listener, router)
            .with_graceful_shutdown(shutdown())
            .await?;
        say!("wfhost serve: stopped");
        anyhow::Ok(())
    })
}

/// Runs this server started whose driver died (stale) are resumed by a new
/// background driver; resuming follows the CLI's rules, so a step that was
/// interrupted and is not idempotent leaves the run blocked with the reason.
fn resume_owned(state: &ApiState, config: Option<&std::path::Path>) {
    let Ok(runs) = state.store.runs() else { return };
    for run in runs.into_iter().filter(|r| r.stale) {
        let owned = state
            .store
            .latest_event(&run.id, runs::OWNED_EVENT)
            .ok()
            .flatten()
            .is_some();
        if !owned {
            continue;
        }
        match crate::app::background::start_driver(&state.home, config, &*state.store, &run.id) {
            Ok(started) => say!(
                "wfhost serve: resuming run {} (its driver had stopped; pid {})",
                run.id,
                started.pid
            ),
            Err(error) => say!("wfhost serve: cannot resume run {}: {error:#}", run.id),
        }
    }
}

async fn shutdown() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = async {
            match term.as_mut() {
                Some(term) => { term.recv().await; }
                None => std::future::pending::<()>().await,
            }
        } => {}
    }
}
