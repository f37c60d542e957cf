//! What `carrierd` and `carrierctl` share as programs (included by both with
//! `#[path]`, so it stays out of the library): logging
//! to stderr and turning an error into a message and an exit code.

use std::process::ExitCode;

/// Logs to stderr at `default` level unless `RUST_LOG` says otherwise.
pub(crate) fn init_logging(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // Colours only on a terminal: under systemd or in a file they are noise.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr).init();
}

/// Prints an error with its causes to stderr; success is exit code 0.
pub(crate) fn exit(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
