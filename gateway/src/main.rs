//! The `mcpgw` command: wiring only; the commands are in `cli/`, the work in the library.

mod cli;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser as _;
use std::io::IsTerminal as _;
use std::process::ExitCode;

fn main() -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_env("MCPGW_LOG")
        .unwrap_or_else(|_| "info,sqlx=warn".into());
    let log = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // `MCPGW_LOG_FORMAT=json`: one JSON object per line, for log shippers. Otherwise text, with
    // colour codes only for a person at a terminal, never in a log file or a shipper.
    match std::env::var("MCPGW_LOG_FORMAT").as_deref() {
        Ok("json") => log
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .init(),
        Ok("text") | Ok("") | Err(_) => log.with_ansi(std::io::stderr().is_terminal()).init(),
        Ok(other) => {
            eprintln!("error: MCPGW_LOG_FORMAT={other:?}: use text or json");
            return ExitCode::FAILURE;
        }
    }
    match cli::run(cli::Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
