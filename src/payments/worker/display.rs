//! A cart display job: shown only when the reader is free; it never replaces an action in
//! progress, and the reader's worker clears it before the next payment.

use super::backoff;
use crate::payments::engine::{Engine, ReaderSlot};
use crate::stripe::params::SetReaderDisplay;
use crate::stripe::wire::{ActionStatus, ActionType};
use tokio::time::{sleep, Instant};

/// A cart display job: shown only when the reader is free; it never replaces an action in
/// progress.
pub(super) async fn show(engine: &Engine, slot: &ReaderSlot, id: &str) {
    let Some(req) = engine.take_display(id) else {
        return;
    };
    slot.known_free
        .store(false, std::sync::atomic::Ordering::SeqCst);
    let until = Instant::now() + engine.config().busy_wait;
    let mut n = 0;
    loop {
        engine.count("retrieve_reader");
        let busy = match engine
            .stripe()
            .retrieve_reader_on(&req.reader, &slot.options())
            .await
        {
            Ok(r) => {
                engine.inner.directory.observe_reader(&r);
                r.action.as_ref().is_some_and(|a| {
                    a.status == ActionStatus::InProgress && a.kind != ActionType::SetReaderDisplay
                })
            }
            Err(e) => {
                tracing::warn!(reader = %req.reader, error = %e, "display: reader unreadable");
                true
            }
        };
        if !busy {
            break;
        }
        if Instant::now() >= until {
            tracing::warn!(reader = %req.reader, display = %id, "display dropped: the reader stayed busy");
            engine.display_over(&req.reader, id, false);
            return;
        }
        sleep(backoff(n)).await;
        n += 1;
    }
    engine.count("set_reader_display");
    let res = engine
        .stripe()
        .set_reader_display(
            &req.reader,
            &SetReaderDisplay { cart: req.cart },
            &slot.options().key(format!("readerd:display:{id}")),
        )
        .await;
    match &res {
        Ok(_) => *slot.shows_our_cart.lock().expect("display flag") = true,
        Err(e) => {
            tracing::warn!(reader = %req.reader, display = %id, error = %e, "display refused")
        }
    }
    engine.display_over(&req.reader, id, res.is_ok());
}
