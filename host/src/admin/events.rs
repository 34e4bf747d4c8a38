//! `GET /api/events`: the node's event log ([`crate::event_log`]). As JSON
//! (`?after=SEQ`: the history after a sequence number), or, when the request
//! accepts `text/event-stream`, as server-sent events: the history after
//! `?after=` or `Last-Event-ID`, then live events, each with `id:` = its
//! sequence number, and keep-alive comments. Bounded: at most
//! [`MAX_STREAMS`] streams at once (503 past it), a reader that falls
//! [`SUBSCRIBER_LAG`](crate::event_log::SUBSCRIBER_LAG) events behind is
//! sent a `lagged` event and dropped, and every stream ends when the admin
//! server stops.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::Stream;
use tokio::sync::{broadcast, watch, OwnedSemaphorePermit, Semaphore};

use super::api::ApiError;
use super::contract::{EventsView, StreamGap};
use super::AdminState;
use crate::event_log::{EventLog, NodeEvent};

/// Event streams one node serves at once; one more is answered 503.
pub const MAX_STREAMS: usize = 16;

/// How often an idle stream sends a keep-alive comment.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// The server-sent-event streams of one kind open now (their permits, at
/// most `max`) and the admin server's stop. The node event log's streams
/// and the cache entry streams each have one.
pub(in crate::admin) struct Streams {
    permits: Arc<Semaphore>,
    max: usize,
    /// Turns true when the admin server stops: every stream ends.
    closing: watch::Receiver<bool>,
}

impl Streams {
    pub(in crate::admin) fn new(max: usize, closing: watch::Receiver<bool>) -> Self {
        Streams { permits: Arc::new(Semaphore::new(max)), max, closing }
    }

    /// A slot for one more stream (held while it lives) and the server's
    /// stop, or 503: `full(max)` says what is open and what to do.
    pub(in crate::admin) fn admit(
        &self,
        full: impl FnOnce(usize) -> String,
    ) -> Result<(OwnedSemaphorePermit, watch::Receiver<bool>), ApiError> {
        match self.permits.clone().try_acquire_owned() {
            Ok(permit) => Ok((permit, self.closing.clone())),
            Err(_) => Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, full(self.max))),
        }
    }
}

/// Whether the request accepts `text/event-stream` (asks for a stream).
pub(in crate::admin) fn wants_stream(headers: &HeaderMap) -> bool {
    headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|accept| accept.contains("text/event-stream"))
}

/// `stream` as a server-sent-events response, with keep-alive comments.
pub(in crate::admin) fn sse_response(
    stream: impl Stream<Item = Result<Event, Infallible>> + Send + 'static,
) -> Response {
    Sse::new(stream).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)).into_response()
}

/// `?after=SEQ`.
#[derive(Debug, serde::Deserialize)]
pub(super) struct After {
    after: Option<String>,
}

fn parse_seq(text: &str, what: &str) -> Result<u64, ApiError> {
    text.trim().parse::<u64>().map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            format!(
                "{what} {} is not an event sequence number; give a whole number (0 for the whole history)",
                crate::text::clip_debug(text)
            ),
        )
    })
}

/// `GET /api/events[?after=SEQ]`, JSON or (with `Accept: text/event-stream`) a stream.
pub(super) async fn events(
    State(state): State<AdminState>,
    Query(query): Query<After>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let log = state.ctx().cluster.event_log().clone();
    let streaming = wants_stream(&headers);
    let resumed = headers.get("last-event-id").and_then(|v| v.to_str().ok());
    // Last-Event-ID (a browser's reconnect) wins over the URL it reconnects to.
    let after = match (resumed, &query.after) {
        (Some(id), _) if streaming => parse_seq(id, "Last-Event-ID")?,
        (_, Some(after)) => parse_seq(after, "?after=")?,
        _ => 0,
    };
    if !streaming {
        let sub = log.since(after);
        let view = EventsView {
            node: state.ctx().cluster.node().to_string(),
            last_seq: sub.backlog.last().map(|e| e.seq).unwrap_or(after.min(log.last_seq())),
            missed: sub.missed,
            events: sub.backlog,
        };
        return Ok(Json(view).into_response());
    }
    let (permit, closing) = state.shared.streams.admit(|max| {
        format!(
            "{max} event streams are open on this node, the most it serves at once; close one (a console tab or a `cluster events --follow`) or read the history with GET /api/events?after=SEQ"
        )
    })?;
    Ok(sse_response(event_stream(&log, after, closing, permit)))
}

/// Where a stream is.
enum Phase {
    /// Sending the history (and first, if some fell out of it, a `missed` event).
    Backlog { gap: Option<StreamGap>, events: VecDeque<NodeEvent> },
    /// Sending live events.
    Live,
    /// The last event was sent.
    Done,
}

struct Feed {
    phase: Phase,
    live: broadcast::Receiver<NodeEvent>,
    closing: watch::Receiver<bool>,
    /// Held while the stream lives: its slot among [`MAX_STREAMS`].
    _permit: OwnedSemaphorePermit,
}

fn json_event(event: &NodeEvent) -> Event {
    let data = serde_json::to_string(event).unwrap_or_default();
    Event::default().id(event.seq.to_string()).data(data)
}

fn gap_event(kind: &str, gap: &StreamGap) -> Event {
    Event::default().event(kind).data(serde_json::to_string(gap).unwrap_or_default())
}

/// The stream of the events after `after`: the history, then live events,
/// until the reader lags (a `lagged` event, then the end) or `closing`
/// turns true (a `closing` event, then the end).
fn event_stream(
    log: &EventLog,
    after: u64,
    closing: watch::Receiver<bool>,
    permit: OwnedSemaphorePermit,
) -> impl Stream<Item = Result<Event, Infallible>> + Send + 'static {
    let sub = log.since(after);
    let gap = (sub.missed > 0).then(|| StreamGap {
        missed: sub.missed,
        reason: format!(
            "{} event(s) after #{after} are no longer in this node's history (it keeps the last {})",
            sub.missed,
            crate::event_log::HISTORY_EVENTS
        ),
    });
    let feed =
        Feed { phase: Phase::Backlog { gap, events: sub.backlog.into() }, live: sub.live, closing, _permit: permit };
    futures_util::stream::unfold(feed, |mut feed| async move {
        loop {
            match &mut feed.phase {
                Phase::Backlog { gap, events } => {
                    if let Some(gap) = gap.take() {
                        return Some((Ok(gap_event("missed", &gap)), feed));
                    }
                    match events.pop_front() {
                        Some(event) => return Some((Ok(json_event(&event)), feed)),
                        None => feed.phase = Phase::Live,
                    }
                }
                Phase::Live => {
                    if *feed.closing.borrow() {
                        feed.phase = Phase::Done;
                        let gap = StreamGap { missed: 0, reason: "the node is stopping".into() };
                        return Some((Ok(gap_event("closing", &gap)), feed));
                    }
                    tokio::select! {
                        received = feed.live.recv() => match received {
                            Ok(event) => return Some((Ok(json_event(&event)), feed)),
                            Err(broadcast::error::RecvError::Lagged(missed)) => {
                                feed.phase = Phase::Done;
                                let gap = StreamGap {
                                    missed,
                                    reason: format!(
                                        "this reader fell {missed} event(s) behind (more than {} unread) and was dropped; reconnect with Last-Event-ID or ?after= the last id it got",
                                        crate::event_log::SUBSCRIBER_LAG
                                    ),
                                };
                                tracing::info!("an event stream reader was dropped: it fell {missed} event(s) behind");
                                return Some((Ok(gap_event("lagged", &gap)), feed));
                            }
                            Err(broadcast::error::RecvError::Closed) => return None,
                        },
                        // A stop, or the admin server gone: the next turn says so.
                        changed = feed.closing.changed() => {
                            if changed.is_err() {
                                return None;
                            }
                        }
                    }
                }
                Phase::Done => return None,
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use futures_util::StreamExt;

    use super::*;
    use crate::event_log::What;

    fn joined(n: u32) -> What {
        What::MemberJoined { member: format!("n{n}"), local: false }
    }

    /// The text of each SSE frame the stream yields, until it ends.
    async fn frames(stream: impl Stream<Item = Result<Event, Infallible>>) -> Vec<String> {
        // An Event's Debug form is its wire text (`id:…\ndata:…`).
        stream.map(|e| format!("{:?}", e.unwrap())).collect().await
    }

    fn permit() -> OwnedSemaphorePermit {
        Arc::new(Semaphore::new(1)).try_acquire_owned().unwrap()
    }

    #[tokio::test]
    async fn a_reader_that_falls_behind_is_told_how_many_it_missed_and_dropped() {
        let log = EventLog::new(100, 1 << 20, 4);
        log.record(joined(0));
        let (_stop, closing) = watch::channel(false);
        let stream = event_stream(&log, 0, closing, permit());
        // Ten live events while the reader reads nothing: 4 fit in its lag.
        for n in 1..=10 {
            log.record(joined(n));
        }
        let frames = frames(stream).await;
        assert!(frames[0].contains("n0"), "{frames:?}");
        let last = frames.last().unwrap();
        // {"missed":6,…}: 10 live events, 4 kept for the reader, 6 lost.
        assert!(last.contains("event: lagged") && last.contains("missed") && last.contains(":6,"), "{frames:?}");
        assert_eq!(frames.len(), 2, "the history, then the lag notice: {frames:?}");
    }

    #[tokio::test]
    async fn a_stream_resumes_after_a_number_and_ends_when_the_server_stops() {
        let log = EventLog::default();
        for n in 1..=3 {
            log.record(joined(n));
        }
        let (stop, closing) = watch::channel(false);
        let mut stream = Box::pin(event_stream(&log, 1, closing, permit()));
        let first = format!("{:?}", stream.next().await.unwrap().unwrap());
        assert!(first.contains("n2"), "{first}");
        let second = format!("{:?}", stream.next().await.unwrap().unwrap());
        assert!(second.contains("n3"), "{second}");
        log.record(joined(4));
        let live = format!("{:?}", stream.next().await.unwrap().unwrap());
        assert!(live.contains("n4"), "{live}");
        stop.send(true).unwrap();
        let last = format!("{:?}", stream.next().await.unwrap().unwrap());
        assert!(last.contains("closing"), "{last}");
        assert!(stream.next().await.is_none());
    }
}
