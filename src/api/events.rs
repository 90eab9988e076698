//! `GET /v1/events`: one Server-Sent Events stream of every payment change the caller may
//! see (the operator console's live view, and any POS that follows more than one payment).
//!
//! The stream opens with `event: ready` once the subscription is in place, so a client
//! that reads the list after `ready` misses nothing; then one `event: payment` per change
//! (status, amounts, what it waits for), the whole payment as `GET /v1/payments/{id}` shows
//! it. When the daemon could not keep up with a slow client, `event: resync` says that
//! changes were skipped and the list should be read again. Every payment goes through
//! [`scope::allows`], so a pos client receives its merchants' payments only. The token is
//! checked again on every change and every half second, so a client removed or narrowed
//! by a reload (SIGHUP) loses its stream or sees the narrower scope at once, as a new
//! request would. The stream ends when the daemon starts to drain for shutdown, so an open
//! console never holds a shutdown back; clients connect again.

use super::error::Envelope;
use super::payments::PaymentView;
use super::scope::{self, Object};
use super::{AppState, Caller, Routes};
use crate::payments::{Engine, Payment};
use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::IntoResponse;
use axum::Extension;
use std::convert::Infallible;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast::error::RecvError;

/// How often an idle stream looks whether the daemon is draining and the token still holds.
pub(super) const DRAIN_CHECK: Duration = Duration::from_millis(500);

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
    /// The bearer token, to ask [`super::Auth`] again after a reload (never logged).
    token: String,
    caller: Arc<Caller>,
    state: AppState,
    ready_sent: bool,
}

impl Stream {
    async fn next(&mut self) -> Next {
        loop {
            if self.state.draining.load(Ordering::SeqCst) {
                return Next::End;
            }
            match self.state.auth.authenticate(&self.token) {
                Some(c) => self.caller = c,
                None => return Next::End, // the client was removed by a reload
            }
            let received = tokio::time::timeout(DRAIN_CHECK, self.rx.recv()).await;
            match received {
                Err(_) => continue, // idle: look at the drain flag again
                Ok(Ok(p)) => {
                    let still = self.state.auth.authenticate(&self.token);
                    let Some(caller) = still else {
                        return Next::End;
                    };
                    self.caller = caller;
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

#[utoipa::path(
    get,
    operation_id = "follow_all_payments",
    path = "/v1/events",
    tag = "payments",
    summary = "Every payment change the caller may see (Server-Sent Events)",
    responses((status = 200, description = "A stream that opens with a `ready` event once subscribed, then a `payment` event (a payment object, see PaymentView, as its JSON data) on every change of a payment the caller may see, or `resync` when the client fell behind and should read the list again; it ends when the daemon drains for shutdown", content_type = "text/event-stream", body = String), (status = 401, description = "No token, or an unknown one", body = Envelope)),
    security(("bearer" = []))
)]
pub(super) async fn events(
    State(state): State<AppState>,
    Extension(engine): Extension<Engine>,
    caller: Caller,
    headers: HeaderMap,
) -> impl IntoResponse {
    // `Caller` has accepted the header, so it holds a Bearer token.
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(|t| t.trim().to_string())
        .unwrap_or_default();
    let st = Stream {
        rx: engine.subscribe(),
        token,
        caller: Arc::new(caller),
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
                .data(serde_json::to_string(&PaymentView::from(&*p)).unwrap_or_default()),
            Next::Resync => Event::default().event("resync").data("{}"),
            Next::End => return None,
        };
        Some((Ok(ev), st))
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

/// An object a client can follow until it is final: a payment, an input collection, a
/// setup.
pub(super) trait Followed: Clone + Send + Sync + 'static {
    type Status: Copy + PartialEq + Send + Sync + 'static;
    fn id(&self) -> &str;
    fn status(&self) -> Self::Status;
    fn is_final(&self) -> bool;
}

impl Followed for Payment {
    type Status = crate::payments::Status;
    fn id(&self) -> &str {
        &self.id
    }
    fn status(&self) -> Self::Status {
        self.status
    }
    fn is_final(&self) -> bool {
        self.status.is_final()
    }
}

impl Followed for crate::payments::InputCollection {
    type Status = crate::payments::InputStatus;
    fn id(&self) -> &str {
        &self.id
    }
    fn status(&self) -> Self::Status {
        self.status
    }
    fn is_final(&self) -> bool {
        self.status.is_final()
    }
}

impl Followed for crate::payments::Setup {
    type Status = crate::payments::SetupStatus;
    fn id(&self) -> &str {
        &self.id
    }
    fn status(&self) -> Self::Status {
        self.status
    }
    fn is_final(&self) -> bool {
        self.status.is_final()
    }
}

/// Server-Sent Events for one object: `current` first, then one `event` per status change
/// read from `rx` (after a lag, `reload` says where it stands now), until a final status,
/// or until the daemon drains for shutdown, so a client following it never holds a restart
/// back. Subscribe `rx` before reading `current`, so that no change falls between the two.
pub(super) fn follow<T, V>(
    rx: tokio::sync::broadcast::Receiver<T>,
    current: T,
    draining: Arc<std::sync::atomic::AtomicBool>,
    event: &'static str,
    reload: impl Fn(&str) -> Option<T> + Send + Sync + 'static,
    view: impl Fn(&T) -> V + Send + Sync + 'static,
) -> impl IntoResponse
where
    T: Followed,
    V: serde::Serialize,
{
    struct St<T: Followed, R, W> {
        rx: tokio::sync::broadcast::Receiver<T>,
        id: String,
        first: Option<T>,
        last: Option<T::Status>,
        done: bool,
        draining: Arc<std::sync::atomic::AtomicBool>,
        reload: R,
        view: W,
    }
    let st = St {
        rx,
        id: current.id().to_string(),
        first: Some(current),
        last: None,
        done: false,
        draining,
        reload,
        view,
    };
    let stream = futures_util::stream::unfold(st, move |mut st| async move {
        if st.done {
            return None;
        }
        let next = match st.first.take() {
            Some(o) => o,
            None => loop {
                if st.draining.load(Ordering::SeqCst) {
                    return None;
                }
                let Ok(received) = tokio::time::timeout(DRAIN_CHECK, st.rx.recv()).await else {
                    continue; // idle: look at the drain flag again
                };
                match received {
                    Ok(o) if o.id() == st.id && Some(o.status()) != st.last => break o,
                    Ok(_) => continue,
                    // Missed some: the record tells where it stands now.
                    Err(RecvError::Lagged(_)) => match (st.reload)(&st.id) {
                        Some(o) if Some(o.status()) != st.last => break o,
                        _ => continue,
                    },
                    Err(RecvError::Closed) => return None,
                }
            },
        };
        st.last = Some(next.status());
        st.done = next.is_final();
        let ev = Event::default()
            .event(event)
            .json_data((st.view)(&next))
            .expect("a view serialises");
        Some((Ok::<Event, Infallible>(ev), st))
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}
