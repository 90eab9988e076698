//! Webhook delivery: events POSTed to the configured endpoint, signed with
//! `Stripe-Signature` as Stripe signs them, retried with backoff while the endpoint fails.
//! The faults can delay, duplicate and reorder deliveries, which Stripe is allowed to do.

use super::faults::Faults;
use super::WebhookTarget;
use crate::stripe::webhook;
use crate::stripe::wire::Event;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::Rng;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{mpsc, watch};

/// Attempts per event (the first included) before it is given up.
pub const MAX_ATTEMPTS: u32 = 5;

/// Delay before retry `n` (1-based): 1 s, 2 s, 4 s, 8 s.
pub fn backoff(n: u32) -> Duration {
    Duration::from_secs(1u64 << (n.saturating_sub(1)).min(10))
}

/// Runs until `shutdown` flips: takes events from `rx`, applies the webhook faults and
/// delivers them.
pub async fn run(
    target: WebhookTarget,
    mut rx: mpsc::UnboundedReceiver<Event>,
    faults: Arc<Mutex<Faults>>,
    rng: Arc<Mutex<StdRng>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "webhook client could not be built");
            return;
        }
    };
    loop {
        let first = tokio::select! {
            e = rx.recv() => match e { Some(e) => e, None => return },
            _ = shutdown.changed() => return,
        };
        let (delay, reorder, dup_rate) = {
            let f = faults.lock().unwrap_or_else(|p| p.into_inner());
            (
                Duration::from_millis(f.webhook_delay_ms),
                f.webhook_reorder,
                f.webhook_duplicate_rate,
            )
        };
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let mut batch = vec![first];
        while let Ok(e) = rx.try_recv() {
            batch.push(e);
        }
        {
            let mut rng = rng.lock().unwrap_or_else(|p| p.into_inner());
            if reorder {
                batch.shuffle(&mut *rng);
            }
            let mut out = Vec::with_capacity(batch.len());
            for e in batch {
                let twice = dup_rate > 0.0 && rng.gen::<f64>() < dup_rate;
                if twice {
                    out.push(e.clone());
                }
                out.push(e);
            }
            batch = out;
        }
        for event in batch {
            let Ok(body) = serde_json::to_vec(&event) else {
                continue;
            };
            if deliver(&client, &target, &body).await {
                continue;
            }
            // Failed: retry in the background so later events are not held up (Stripe
            // does not keep order either).
            let client = client.clone();
            let target = target.clone();
            tokio::spawn(async move {
                for n in 1..MAX_ATTEMPTS {
                    tokio::time::sleep(backoff(n)).await;
                    if deliver(&client, &target, &body).await {
                        return;
                    }
                }
                tracing::warn!("webhook event given up after {MAX_ATTEMPTS} attempts");
            });
        }
    }
}

async fn deliver(client: &reqwest::Client, target: &WebhookTarget, body: &[u8]) -> bool {
    let now = super::state::now_secs();
    let signature = webhook::header(&target.secret, now, body);
    let r = client
        .post(&target.url)
        .header("Content-Type", "application/json; charset=utf-8")
        .header("Stripe-Signature", signature)
        .header(
            "User-Agent",
            "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
        )
        .body(body.to_vec())
        .send()
        .await;
    matches!(r, Ok(resp) if resp.status().is_success())
}
