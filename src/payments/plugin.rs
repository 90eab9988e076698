//! How payments join the daemon: the fleet registry as the [`Directory`], the engine's
//! start-up reconcile, the payment and webhook routes, and the readers' live state.

use super::directory::{Directory, Fee, MerchantInfo, ReaderInfo};
use super::engine::{Engine, EngineConfig};
use super::machine::ChargeType;
use crate::api::AppState;
use crate::daemon::{DaemonError, Plugin, PluginParts, Shutdown};
use crate::fleet::{self as fleet_mod, Fleet, LiveState, ReaderLive};
use futures_util::future::BoxFuture;
use std::sync::{Arc, OnceLock};

/// The fleet registry seen through the payment flow's questions.
pub struct FleetDirectory(pub Arc<Fleet>);

impl Directory for FleetDirectory {
    fn merchant(&self, id: &str) -> Option<MerchantInfo> {
        let m = self.0.merchant(id).ok()??;
        Some(MerchantInfo {
            id: m.id.clone(),
            account: m.account.clone(),
            charge_type: match m.charge_type {
                fleet_mod::ChargeType::Direct => ChargeType::Direct,
                fleet_mod::ChargeType::Destination => ChargeType::Destination,
            },
            enabled: m.can_charge(),
            country: m.country.clone(),
            currency: m.default_currency.clone(),
            fee: m.application_fee_amount.map(|fixed| Fee {
                fixed,
                basis_points: 0,
            }),
        })
    }

    fn reader(&self, id_or_label: &str) -> Option<ReaderInfo> {
        let r = self.0.find_reader(id_or_label).ok()??;
        if r.gone {
            return None;
        }
        let country = r
            .location
            .as_deref()
            .and_then(|l| self.0.location(l).ok().flatten())
            .and_then(|l| l.address.country);
        Some(ReaderInfo {
            id: r.id,
            label: Some(r.label),
            country,
            allowed_merchants: r.merchants,
        })
    }

    fn reader_ids(&self) -> Vec<String> {
        self.0
            .readers()
            .map(|rs| rs.into_iter().map(|r| r.id).collect())
            .unwrap_or_default()
    }

    fn reader_missing(&self, id: &str) {
        // One read by the fleet confirms it and marks the reader gone, so that no new
        // payment is accepted for it before the next sync.
        let fleet = self.0.clone();
        let id = id.to_string();
        tokio::spawn(async move {
            if let Err(e) = fleet.refresh_reader(&id).await {
                tracing::warn!(reader = %id, error = %e, "missing reader not recorded");
            }
        });
    }

    fn observe_reader(&self, reader: &crate::stripe::wire::Reader) {
        if let Err(e) = self.0.observe_reader(reader) {
            tracing::warn!(reader = %reader.id, error = %e, "reader state not recorded");
        }
    }
}

/// The engine as the fleet API's source of reader live state.
struct Live(Engine);

impl LiveState for Live {
    fn reader(&self, reader_id: &str) -> ReaderLive {
        let l = self.0.reader_live(reader_id);
        ReaderLive {
            busy: l.busy,
            queue_depth: l.queue_depth,
        }
    }
}

/// The payments plugin. Keeps a handle on the engine it starts, for the demo and tests.
#[derive(Clone, Default)]
pub struct PaymentsPlugin {
    /// Overrides `[payments]` of the daemon's config when set.
    config: Option<EngineConfig>,
    engine: Arc<OnceLock<Engine>>,
}

impl PaymentsPlugin {
    pub fn new(config: EngineConfig) -> Self {
        PaymentsPlugin {
            config: Some(config),
            engine: Arc::new(OnceLock::new()),
        }
    }

    /// The engine, once the daemon has started the plugin.
    pub fn engine(&self) -> Option<Engine> {
        self.engine.get().cloned()
    }
}

impl Plugin for PaymentsPlugin {
    fn name(&self) -> &'static str {
        "payments"
    }

    fn start(
        &self,
        state: AppState,
        shutdown: Shutdown,
    ) -> BoxFuture<'static, Result<PluginParts, DaemonError>> {
        let config = self
            .config
            .clone()
            .unwrap_or_else(|| state.config.payments.engine());
        let slot = self.engine.clone();
        Box::pin(async move {
            let directory = Arc::new(FleetDirectory(state.fleet.clone()));
            let engine = Engine::new(
                state.registry.clone(),
                state.stripe.clone(),
                directory,
                config,
            );
            engine.set_metrics(state.metrics.clone());
            engine.set_liveness(state.liveness.clone());
            engine.set_drain_flag(state.draining.clone());
            let resumed = engine.start().await.map_err(|e| DaemonError::Plugin {
                name: "payments",
                message: e.to_string(),
            })?;
            if resumed > 0 {
                tracing::info!(resumed, "unfinished payments reconciled and resumed");
            }
            let _ = slot.set(engine.clone());
            let routes = crate::api::payments::routes(engine.clone())
                .merge(crate::api::events::routes(engine.clone()))
                .merge(crate::api::webhooks::routes(engine.clone()));
            let sweeper = tokio::spawn(sweep_loop(engine.clone(), shutdown));
            Ok(PluginParts {
                routes: Some(routes),
                live: Some(Arc::new(Live(engine))),
                tasks: vec![sweeper],
            })
        })
    }
}

/// How often authorised and declined payments are re-read (webhooks make it sooner).
pub const SWEEP_INTERVAL: std::time::Duration = std::time::Duration::from_secs(600);

/// Re-reads payments that wait off the reader every [`SWEEP_INTERVAL`] until shutdown.
async fn sweep_loop(engine: Engine, shutdown: Shutdown) {
    loop {
        tokio::select! {
            _ = shutdown.wait() => return,
            _ = tokio::time::sleep(SWEEP_INTERVAL) => {}
        }
        let n = engine.sweep().await;
        tracing::debug!(payments = n, "authorised and declined payments re-read");
    }
}
