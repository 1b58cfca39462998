//! Live events as Server-Sent Events: every event carries the store's
//! event id, and a client that reconnects with `Last-Event-ID` (or
//! `?after=`) gets what it missed from the store first, so a dropped
//! connection never loses an event.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path as UrlPath, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::stream::{self, Stream};
use serde::Deserialize;
use serde_json::json;
use utoipa::IntoParams;

use super::extract::Params;
use super::problem::Problem;
use super::runs::resolve;
use super::state::ApiState;

/// How often the store is read for new events.
const POLL: Duration = Duration::from_millis(150);

/// The most events sent per read.
const BATCH: usize = 500;

/// Where a stream starts.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    /// Events after this id (the `Last-Event-ID` header wins); `-1`: only
    /// events from now on.
    pub after: Option<i64>,
    /// The bearer token, for clients that cannot send headers
    /// (`EventSource`); read by the token check, declared so that it is
    /// not an unknown parameter.
    #[allow(dead_code)]
    pub token: Option<String>,
}

fn start_after(state: &ApiState, headers: &HeaderMap, query: &EventsQuery) -> i64 {
    let given = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<i64>().ok())
        .or(query.after)
        .unwrap_or(0);
    if given < 0 {
        return state.store.latest_seq().unwrap_or(0);
    }
    given
}

/// Every run's events, live (SSE; each event's `id` is the store's).
#[utoipa::path(get, path = "/api/events", tag = "events", params(EventsQuery),
    responses((status = 200, description = "text/event-stream of `{run_id, seq, step, at, kind, data}`")))]
pub async fn all_events(
    State(state): State<ApiState>,
    headers: HeaderMap,
    Params(query): Params<EventsQuery>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let after = start_after(&state, &headers, &query);
    stream_events(state, None, after)
}

/// One run's events, live (SSE; each event's `id` is the store's).
#[utoipa::path(get, path = "/api/runs/{id}/events", tag = "events",
    params(("id" = String, Path, description = "Run id or a unique prefix"), EventsQuery),
    responses((status = 200, description = "text/event-stream of `{run_id, seq, step, at, kind, data}`"),
              (status = 404, description = "no such run")))]
pub async fn run_events(
    State(state): State<ApiState>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
    Params(query): Params<EventsQuery>,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, Problem> {
    let run_id = resolve(&state, &id)?;
    let after = start_after(&state, &headers, &query);
    Ok(stream_events(state, Some(run_id), after))
}

fn stream_events(
    state: ApiState,
    run_id: Option<String>,
    after: i64,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let pending: std::collections::VecDeque<Event> = Default::default();
    let stream = stream::unfold(
        (state, run_id, after, pending),
        |(state, run_id, mut after, mut pending)| async move {
            loop {
                if let Some(event) = pending.pop_front() {
                    return Some((Ok(event), (state, run_id, after, pending)));
                }
                let read = match &run_id {
                    Some(run) => state.store.events_after(run, after).map(|events| {
                        events
                            .into_iter()
                            .take(BATCH)
                            .map(|e| (run.clone(), e))
                            .collect::<Vec<_>>()
                    }),
                    None => state.store.events_since(after, BATCH),
                };
                match read {
                    Ok(events) if !events.is_empty() => {
                        for (run, event) in events {
                            after = after.max(event.seq);
                            let data = json!({
                                "run_id": run,
                                "seq": event.seq,
                                "step": event.step,
                                "at": event.at,
                                "kind": event.kind,
                                "data": event.data,
                            });
                            pending.push_back(
                                // Unnamed, so an `EventSource`'s `onmessage`
                                // sees every kind (it is in the data).
                                Event::default()
                                    .id(event.seq.to_string())
                                    .data(data.to_string()),
                            );
                        }
                    }
                    Ok(_) => tokio::time::sleep(POLL).await,
                    Err(error) => {
                        tracing::warn!("event stream: {error}");
                        tokio::time::sleep(POLL * 4).await;
                    }
                }
            }
        },
    );
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}
