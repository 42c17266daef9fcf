//! `carrel`: a container storage engine with a Docker-compatible command line.
//!
//! This binary is a face: it parses the command line, calls one `carrel_engine::Engine` method
//! and formats the answer the way the `docker` CLI does. It holds no storage logic.

mod cli;
mod commands;
mod format;
mod progress;

use std::process::ExitCode;

use clap::Parser;

use carrel_core::HasKind;

/// Exit status for a command that failed.
const EXIT_FAILURE: u8 = 1;
/// Exit status for a command line that could not be parsed (as `docker` uses).
const EXIT_USAGE: u8 = 125;

fn main() -> ExitCode {
    // `carrel images | head` must not panic on a closed pipe: restore the default SIGPIPE action.
    // SAFETY: setting a signal disposition to SIG_DFL at start-up, before any threads exist.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = match e.kind() {
                clap::error::ErrorKind::DisplayHelp
                | clap::error::ErrorKind::DisplayVersion
                | clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => 0,
                _ => EXIT_USAGE,
            };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    if let Some(usage) = cli.unknown_flag() {
        eprintln!("Error: {usage}");
        return ExitCode::from(EXIT_USAGE);
    }
    init_logging(&cli.global);
    match commands::run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            // A command that already printed its errors only passes its exit status up.
            if e.downcast_ref::<commands::ExitStatus>().is_none() {
                eprintln!("Error: {}", one_line(&e));
            }
            ExitCode::from(exit_code_of(&e))
        }
    }
}

/// The whole error chain on one line (`outer: inner`), without repeating text.
fn one_line(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let s = cause.to_string();
        if out.contains(&s) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&s);
    }
    out
}

fn exit_code_of(e: &anyhow::Error) -> u8 {
    if let Some(code) = e.downcast_ref::<commands::ExitStatus>() {
        return code.0;
    }
    if let Some(engine) = e.downcast_ref::<carrel_engine::EngineError>() {
        tracing::debug!(kind = %engine.kind(), "command failed");
    }
    EXIT_FAILURE
}

fn init_logging(global: &cli::GlobalOptions) {
    let level = if global.debug {
        "debug".to_string()
    } else {
        global.log_level.clone()
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("CARREL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("warn,carrel={level},carrel_engine={level},carrel_storage={level},carrel_archive={level},carrel_mount={level},carrel_meta={level}")));
    // Debug output carries the process id and microsecond timestamps, to follow a command
    // through its monitor.
    // (`CARREL_LOG`, which a command's container monitors inherit, counts as asking for it.)
    let verbose = global.debug
        || matches!(global.log_level.as_str(), "debug" | "trace")
        || std::env::var_os("CARREL_LOG").is_some();
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false);
    if verbose {
        let pid = std::process::id();
        let _ = builder
            .with_timer(tracing_subscriber::fmt::time::ChronoUtc::new(format!(
                "%H:%M:%S%.6f [{pid}]"
            )))
            .try_init();
        return;
    }
    let _ = builder.without_time().try_init();
}
