//! The `readerd` binary: parses the command line and calls into the library.
#![forbid(unsafe_code)]

fn main() -> std::process::ExitCode {
    readerd::cli::main()
}
