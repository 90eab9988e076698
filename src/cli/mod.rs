//! The command line: the daemon, the emulator, the demo, and the API client commands.
//! Each command's arguments live beside the code that runs it.

pub mod bench;
pub mod client;
pub mod demo;
pub mod fleet;
pub mod history;
pub mod inputs;
pub mod migrate;
pub mod money;
pub mod payments;
pub mod setups;
pub mod sim;

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser, Debug)]
#[command(
    name = "readerd",
    version,
    about = "Run shared Stripe Terminal smart readers for many merchants"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the daemon.
    Run {
        /// The TOML config file (see config/readerd.example.toml).
        #[arg(long, value_name = "PATH")]
        config: PathBuf,
    },
    /// Validate a config file and the secrets it points to (exit 0, or 64).
    CheckConfig {
        /// The TOML config file to check.
        #[arg(long, value_name = "PATH")]
        config: PathBuf,
    },
    /// Merchants (Connect accounts) the daemon charges for.
    Merchants(fleet::MerchantsCmd),
    /// Terminal locations.
    Locations(fleet::LocationsCmd),
    /// Smart readers.
    Readers(fleet::ReadersCmd),
    /// The stateful Stripe emulator as a standalone server.
    Sim(sim::SimArgs),
    /// Everything on one machine: emulator, daemon, two merchants, two readers.
    Demo(demo::DemoArgs),
    /// Take a payment and follow it live.
    Pay(payments::PayCmd),
    /// Payments: list, show, cancel, capture, retry, refund, follow.
    Payments(payments::PaymentsCmd),
    /// Inputs on a reader's screen: collect (and follow), list, show, cancel.
    Inputs(inputs::InputsCmd),
    /// Cards saved on a reader for later payments: create (and follow), list, show, cancel.
    Setups(setups::SetupsCmd),
    /// The settlement report of a period: per merchant and currency, from readerd's records.
    Report(payments::ReportCmd),
    /// Benchmark the payment flow against the emulator in a child process (or, with
    /// `--fill-store`, fill a test store with a large history).
    Bench(bench::BenchArgs),
    /// Copy every record of a stopped daemon's store into an empty one (sled to PostgreSQL).
    MigrateStore(migrate::MigrateArgs),
    /// Payments created in a period, as JSON lines (through the API).
    Export(history::ExportCmd),
    /// Archive final payments now, or restore archive files (the daemon stopped).
    Archive(history::ArchiveCmd),
}

/// A tokio runtime for a command (multi-threaded or on the current thread), or `None` after
/// telling the user on stderr, under `command`'s name, why there is none.
pub fn runtime(command: &str, multi_thread: bool) -> Option<tokio::runtime::Runtime> {
    let mut builder = if multi_thread {
        tokio::runtime::Builder::new_multi_thread()
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    match builder.enable_all().build() {
        Ok(rt) => Some(rt),
        Err(e) => {
            eprintln!("{command}: cannot start the runtime: {e}");
            None
        }
    }
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Run { config } => crate::daemon::run(&config),
        Command::CheckConfig { config } => crate::daemon::check_config(&config),
        Command::Merchants(c) => c.run(),
        Command::Locations(c) => c.run(),
        Command::Readers(c) => c.run(),
        Command::Sim(args) => sim::run(args),
        Command::Demo(a) => demo::main(a),
        Command::Pay(c) => c.run(),
        Command::Payments(c) => c.run(),
        Command::Inputs(c) => c.run(),
        Command::Setups(c) => c.run(),
        Command::Report(c) => c.run(),
        Command::Bench(a) => bench::main(a),
        Command::Export(c) => c.run(),
        Command::Archive(c) => c.run(),
        Command::MigrateStore(a) => migrate::main(a),
    }
}
