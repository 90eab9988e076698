//! The command line: the daemon, the emulator, the demo, and the API client commands.
//! Each command's arguments live beside the code that runs it.

use clap::{Parser, Subcommand};
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
    /// The stateful Stripe emulator as a standalone server.
    Sim(crate::sim::SimArgs),
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Sim(args) => crate::sim::run(args),
    }
}
