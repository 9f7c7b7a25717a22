//! `GET /api/v1/events`: the store's writes as Server-Sent Events.
//!
//! Each kind of data comes from the backend it is routed to: from the backend's own change
//! feed where it carries other processes' writes (Redis pub/sub, PostgreSQL `NOTIFY`), else
//! from this process's writes. A client that falls [`Limits::event_buffer`] events behind is
//! sent a final `dropped` event and disconnected: the server never buffers more for it.
//!
//! [`Limits::event_buffer`]: crate::config::Limits::event_buffer

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::time::Duration;

use aimon::{DataKind, EventStream, StorageBackend, StorageEvent};
use axum::extract::{RawQuery, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::{Stream, StreamExt};
use tokio::sync::mpsc;

use crate::error::{ApiError, ApiResult};
use crate::params::Params;
use crate::server::App;

/// Where events come from: a backend's own feed (`None`: this process's writes) and the
/// kinds of data taken from it.
type Source = (Option<std::sync::Arc<dyn StorageBackend>>, Vec<DataKind>);

/// The kind of data an event is about.
fn kind_of(event: &StorageEvent) -> DataKind {
    match event {
        StorageEvent::MetricWritten { .. } => DataKind::Metrics,
        StorageEvent::AlertWritten { .. } => DataKind::Alerts,
        StorageEvent::AgentStateWritten { .. } => DataKind::AgentStates,
    }
}

fn event_name(kind: DataKind) -> &'static str {
    match kind {
        DataKind::Metrics => "metric",
        DataKind::Alerts => "alert",
        DataKind::AgentStates => "agent_state",
    }
}

fn parse_kind(text: &str) -> ApiResult<DataKind> {
    match text.trim() {
        "metrics" | "metric" => Ok(DataKind::Metrics),
        "alerts" | "alert" => Ok(DataKind::Alerts),
        "agents" | "agent_states" | "agent_state" => Ok(DataKind::AgentStates),
        other => Err(ApiError::invalid(
            "kind",
            format!("unknown kind {other:?}; expected metrics, alerts or agents"),
        )),
    }
}

/// The store's writes as they happen: events `metric`, `alert` and `agent_state`, each with the
/// JSON of an `aimon::StorageEvent`; `kind=metrics,alerts` (repeatable or comma-separated)
/// selects. A `dropped` event ends the stream of a client that fell behind, a `shutdown` event
/// the streams of a server that is stopping.
#[utoipa::path(get, path = "/api/v1/events", tag = "events",
    params(("kind" = Option<Vec<String>>, Query, description = "metrics, alerts, agents; default all")),
    responses((status = 200, content_type = "text/event-stream", description = "Server-Sent Events")))]
pub async fn events(
    State(app): State<App>,
    RawQuery(query): RawQuery,
) -> ApiResult<Sse<impl Stream<Item = Result<Event, Infallible>>>> {
    let mut p = Params::new(query.as_deref());
    let mut kinds = Vec::new();
    for value in p.all("kind") {
        for part in value.split(',').filter(|s| !s.trim().is_empty()) {
            kinds.push(parse_kind(part)?);
        }
    }
    p.finish()?;
    if kinds.is_empty() {
        kinds = vec![DataKind::Metrics, DataKind::Alerts, DataKind::AgentStates];
    }
    // One source per backend: its own feed where it sees other processes, else this process's.
    let mut sources: BTreeMap<String, Source> = BTreeMap::new();
    for kind in kinds {
        let backend = app.manager.router().resolve(kind, None)?;
        let caps = backend.capabilities();
        let (key, feed) = if caps.pub_sub && caps.cross_process_events {
            (backend.name().to_owned(), Some(backend))
        } else {
            (String::new(), None)
        };
        sources
            .entry(key)
            .or_insert((feed, Vec::new()))
            .1
            .push(kind);
    }
    let mut streams: Vec<EventStream> = Vec::new();
    for (feed, wanted) in sources.into_values() {
        let stream = match feed {
            Some(backend) => backend.subscribe().await?,
            None => app.manager.subscribe(),
        };
        streams.push(Box::pin(
            stream.filter(move |e| std::future::ready(wanted.contains(&kind_of(e)))),
        ));
    }
    let mut merged = futures::stream::select_all(streams);
    // A forwarder reads the sources at their pace; the client reads the channel at its own.
    let (sender, receiver) = mpsc::channel::<StorageEvent>(app.limits.event_buffer.max(1));
    let telemetry = app.telemetry.clone();
    let forwarder = tokio::spawn(async move {
        while let Some(event) = merged.next().await {
            match sender.try_send(event) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => {
                    telemetry.slow_consumers.increment(1);
                    return true;
                }
                Err(mpsc::error::TrySendError::Closed(_)) => return false,
            }
        }
        false
    });
    // Ends when the client is gone (the stream is dropped, and the forwarder with it), or with
    // a `dropped` event once the forwarder found the client's buffer full.
    let closing = app.closing.clone();
    let stream = futures::stream::unfold(
        (receiver, Some(Forwarder(forwarder)), closing),
        |(mut receiver, forwarder, mut closing)| async move {
            let mut forwarder = forwarder?;
            let next = tokio::select! {
                // The server is stopping: a last event, then the end of the stream.
                _ = closing.wait_for(|closing| *closing) => None,
                next = receiver.recv() => Some(next),
            };
            let Some(next) = next else {
                let last = Event::default()
                    .event("shutdown")
                    .data(r#"{"reason":"the server is stopping; reconnect to resume"}"#);
                return Some((Ok(last), (receiver, None, closing)));
            };
            match next {
                Some(event) => {
                    let kind = kind_of(&event);
                    let data = serde_json::to_string(&event).unwrap_or_else(|_| "{}".to_owned());
                    let sse = Event::default().event(event_name(kind)).data(data);
                    Some((Ok(sse), (receiver, Some(forwarder), closing)))
                }
                None if (&mut forwarder.0).await.unwrap_or(false) => {
                    let dropped = Event::default()
                        .event("dropped")
                        .data(r#"{"reason":"the client fell behind; reconnect to resume"}"#);
                    Some((Ok(dropped), (receiver, None, closing)))
                }
                None => None,
            }
        },
    );
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))))
}

/// The forwarding task, stopped when the client's stream is dropped; it answers whether it
/// stopped because the client fell behind.
struct Forwarder(tokio::task::JoinHandle<bool>);

impl Drop for Forwarder {
    fn drop(&mut self) {
        self.0.abort();
    }
}
