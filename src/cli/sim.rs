//! `readerd sim`: the Stripe emulator ([`crate::sim`]) as a standalone server, with its
//! behaviour (seed, delays, fault shares, webhooks) set by flags.

use crate::sim::{serve, Faults, SimConfig, WebhookTarget};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

/// `readerd sim`: the emulator as a standalone server.
#[derive(clap::Args, Debug, Clone)]
pub struct SimArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:12111")]
    pub listen: SocketAddr,
    /// Seed for ids and fault draws (same seed + same requests = same run).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// How long an authorisation takes after a card is presented (e.g. `2s`, `500ms`);
    /// `cancel_action` is terminal_reader_busy meanwhile. 0s = inside the present call, as
    /// Stripe's simulated readers do.
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration)]
    pub auth_delay: Duration,
    /// Tap the default Visa by itself this long after `process_payment_intent` (demo mode).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub auto_present: Option<Duration>,
    /// With --auto-present: each customer taps after a delay drawn evenly (seeded) between
    /// --auto-present and this, like real customers who take their time.
    #[arg(long, value_parser = humantime::parse_duration, requires = "auto_present")]
    pub auto_present_max: Option<Duration>,
    /// Stop when standard input is closed: for a parent process that starts the emulator
    /// and keeps its stdin open, so that the emulator never outlives it.
    #[arg(long, hide = true)]
    pub exit_with_stdin: bool,
    /// Send webhook events to this URL.
    #[arg(long, requires = "webhook_secret")]
    pub webhook_url: Option<String>,
    /// Signing secret for webhook events (`whsec_…`).
    #[arg(long, env = "READERD_SIM_WEBHOOK_SECRET", hide_env_values = true)]
    pub webhook_secret: Option<String>,
    /// Requests per second over all /v1 calls before answering 429.
    #[arg(long)]
    pub rate_limit: Option<u32>,
    /// Latency added to every /v1 request (e.g. `50ms`).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub latency: Option<Duration>,
    /// Share (0..1) of /v1 requests answered 500 before doing any work.
    #[arg(long, default_value_t = 0.0)]
    pub error_rate: f64,
    /// Share of /v1 requests whose connection is dropped before the work is done.
    #[arg(long, default_value_t = 0.0)]
    pub drop_before_rate: f64,
    /// Share of /v1 requests whose connection is dropped after the work was done.
    #[arg(long, default_value_t = 0.0)]
    pub drop_after_rate: f64,
    /// Share of reader commands that take the action but answer terminal_reader_timeout.
    #[arg(long, default_value_t = 0.0)]
    pub reader_timeout_rate: f64,
    /// Share of process_payment_intent calls after which the reader goes offline.
    #[arg(long, default_value_t = 0.0)]
    pub offline_mid_action_rate: f64,
    /// Share of webhook events delivered twice.
    #[arg(long, default_value_t = 0.0)]
    pub webhook_duplicate_rate: f64,
    /// Delay before each webhook delivery (e.g. `1s`).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub webhook_delay: Option<Duration>,
    /// Shuffle webhook events queued during the delay.
    #[arg(long)]
    pub webhook_reorder: bool,
    /// Act as a platform without Stripe's platform-owned-reader preview: a platform reader
    /// finds no PaymentIntent of a connected account (direct charges fail).
    #[arg(long)]
    pub no_platform_owned_readers: bool,
    /// The platform account's country (its default currency follows: `FR` → `eur`), which
    /// decides where the platform's own charges may be taken.
    #[arg(long, default_value = "US")]
    pub platform_country: String,
}

impl SimArgs {
    /// The configuration these flags describe.
    pub fn config(&self) -> SimConfig {
        SimConfig {
            seed: self.seed,
            auth_delay: self.auth_delay,
            auto_present: self.auto_present,
            auto_present_max: self.auto_present_max,
            webhook: match (&self.webhook_url, &self.webhook_secret) {
                (Some(url), Some(secret)) => Some(WebhookTarget {
                    url: url.clone(),
                    secret: secret.clone(),
                }),
                _ => None,
            },
            faults: Faults {
                latency_ms: self.latency.map(|d| d.as_millis() as u64).unwrap_or(0),
                error_rate: self.error_rate,
                drop_before_rate: self.drop_before_rate,
                drop_after_rate: self.drop_after_rate,
                reader_timeout_rate: self.reader_timeout_rate,
                offline_mid_action_rate: self.offline_mid_action_rate,
                webhook_duplicate_rate: self.webhook_duplicate_rate,
                webhook_delay_ms: self
                    .webhook_delay
                    .map(|d| d.as_millis() as u64)
                    .unwrap_or(0),
                webhook_reorder: self.webhook_reorder,
                rules: Vec::new(),
            },
            rate_limit: self.rate_limit,
            platform_owned_readers: !self.no_platform_owned_readers,
            platform_country: self.platform_country.clone(),
        }
    }
}

/// Runs `readerd sim` until Ctrl-C.
pub fn run(args: SimArgs) -> ExitCode {
    let rates = [
        args.error_rate,
        args.drop_before_rate,
        args.drop_after_rate,
        args.reader_timeout_rate,
        args.offline_mid_action_rate,
        args.webhook_duplicate_rate,
    ];
    if rates.iter().any(|r| !(0.0..=1.0).contains(r)) {
        eprintln!("readerd sim: fault rates must be between 0 and 1");
        return ExitCode::from(64);
    }
    let Some(runtime) = super::runtime("readerd sim", true) else {
        return ExitCode::FAILURE;
    };
    crate::telemetry::init_default();
    runtime.block_on(async move {
        let listener = match tokio::net::TcpListener::bind(args.listen).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("readerd sim: cannot listen on {}: {e}", args.listen);
                return ExitCode::from(69);
            }
        };
        let addr = listener.local_addr().map(|a| a.to_string()).unwrap_or_default();
        println!("readerd sim: Stripe emulator listening on http://{addr} (any sk_test_ key; control routes under /_sim/)");
        let exit_with_stdin = args.exit_with_stdin;
        serve(listener, args.config(), async move {
            if exit_with_stdin {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = stdin_closed() => {}
                }
            } else {
                let _ = tokio::signal::ctrl_c().await;
            }
        })
        .await;
        ExitCode::SUCCESS
    })
}

/// Completes when standard input reaches its end or fails (the writing side is gone).
async fn stdin_closed() {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    // A plain thread: a blocking read of stdin cannot be cancelled, and this one must not
    // hold the runtime's shutdown.
    std::thread::spawn(move || {
        use std::io::Read;
        let mut stdin = std::io::stdin();
        let mut buf = [0u8; 64];
        while let Ok(n) = stdin.read(&mut buf) {
            if n == 0 {
                break;
            }
        }
        let _ = tx.send(());
    });
    let _ = rx.await;
}

#[cfg(test)]
mod tests {
    use super::SimArgs;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        sim: SimArgs,
    }

    #[test]
    fn the_preview_is_on_unless_switched_off() {
        let on = Cli::try_parse_from(["sim"]).unwrap().sim.config();
        assert!(on.platform_owned_readers);
        let off = Cli::try_parse_from(["sim", "--no-platform-owned-readers"])
            .unwrap()
            .sim
            .config();
        assert!(!off.platform_owned_readers);
    }
}
