//! `GET /v1/events`: one Server-Sent Events stream of every payment change the caller may
//! see (the operator console's live view, and any POS that follows more than one payment).
//!
//! The stream opens with `event: ready` once the subscription is in place, so a client
//! that reads the list after `ready` misses nothing; then one `event: payment` per change
//! (status, amounts, what it waits for), the whole payment as `GET /v1/payments/{id}` shows
//! it. When the daemon could not keep up with a slow client, `event: resync` says that
//! changes were skipped and the list should be read again. Every payment goes through
//! [`scope::allows`], so a pos client receives its merchants' payments only. The stream
//! ends when the daemon starts to drain for shutdown, so an open console never holds a
//! shutdown back; clients connect again.

use super::payments::payment_json;
use super::scope::{self, Object};
use super::{AppState, Caller, Routes};
use crate::payments::{Engine, Payment};
use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::IntoResponse;
use axum::Extension;
use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;

/// How often an idle stream looks whether the daemon is draining.
const DRAIN_CHECK: Duration = Duration::from_millis(500);

/// The event stream's route; the engine rides along as an extension.
pub fn routes(engine: Engine) -> Routes {
    Routes::new().get("/v1/events", events).extension(engine)
}

/// What the stream sends next.
enum Next {
    Payment(Box<Payment>),
    Resync,
    End,
}

struct Stream {
    rx: tokio::sync::broadcast::Receiver<Payment>,
    caller: Caller,
    state: AppState,
    ready_sent: bool,
}

impl Stream {
    async fn next(&mut self) -> Next {
        loop {
            if self.state.draining.load(Ordering::SeqCst) {
                return Next::End;
            }
            let received = tokio::time::timeout(DRAIN_CHECK, self.rx.recv()).await;
            match received {
                Err(_) => continue, // idle: look at the drain flag again
                Ok(Ok(p)) => {
                    if scope::allows(&self.caller, Object::Payment(&p)) {
                        return Next::Payment(Box::new(p));
                    }
                }
                Ok(Err(RecvError::Lagged(_))) => return Next::Resync,
                Ok(Err(RecvError::Closed)) => return Next::End,
            }
        }
    }
}

async fn events(
    State(state): State<AppState>,
    Extension(engine): Extension<Engine>,
    caller: Caller,
) -> impl IntoResponse {
    let st = Stream {
        rx: engine.subscribe(),
        caller,
        state,
        ready_sent: false,
    };
    let stream = futures_util::stream::unfold(st, |mut st| async move {
        if !st.ready_sent {
            st.ready_sent = true;
            let ev = Event::default().event("ready").data("{}");
            return Some((Ok::<Event, Infallible>(ev), st));
        }
        let ev = match st.next().await {
            Next::Payment(p) => Event::default()
                .event("payment")
                .data(payment_json(&p).to_string()),
            Next::Resync => Event::default().event("resync").data("{}"),
            Next::End => return None,
        };
        Some((Ok(ev), st))
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}
