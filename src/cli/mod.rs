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
pub enum Command {}

/// Entry point of the binary.
#[allow(unreachable_code)] // until the first command lands
pub fn main() -> ExitCode {
    match Cli::parse().command {}
}
