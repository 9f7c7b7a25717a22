//! `aimon`: the command line of aimon. See `aimon --help`.
#![deny(unsafe_code)]

mod bench;
mod chart;
mod cli;
mod commands;
mod config;
mod demo;
mod error;
mod footprint;
mod output;
mod progress;
mod serve;
mod sim;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use clap::error::ErrorKind as ClapErrorKind;
use tracing_subscriber::EnvFilter;

use cli::{Cli, Command, RetentionCommand};
use config::{Fallback, Storage};
use error::Result;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(e),
    };
    init_tracing(cli.global.verbose);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Help and version print as clap renders them; any other parse error becomes one line on
/// stderr and exit code 2.
fn usage_error(e: clap::Error) -> ExitCode {
    if matches!(
        e.kind(),
        ClapErrorKind::DisplayHelp
            | ClapErrorKind::DisplayVersion
            | ClapErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        let _ = e.print();
        return ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2));
    }
    // clap quotes the user's arguments, which may hold escape sequences.
    eprintln!(
        "{}",
        aimon::error::printable(&one_line(&e.render().to_string()))
    );
    ExitCode::from(2)
}

/// clap's message without the usage block and hints, on one line.
fn one_line(rendered: &str) -> String {
    let text = rendered
        .lines()
        .take_while(|l| !l.starts_with("Usage:"))
        .map(str::trim)
        .filter(|l| {
            !l.is_empty() && !l.starts_with("For more information") && !l.starts_with("tip:")
        })
        .collect::<Vec<_>>()
        .join(" ");
    if text.starts_with("error:") {
        text
    } else {
        format!("error: {text}")
    }
}

/// The log filter without `-v`: warnings of aimon's crates (`aimon` matches every target that
/// starts with it: `aimon_core`, `aimon_redis`…), nothing of the libraries.
const QUIET: &str = "off,aimon=warn";

fn init_tracing(verbose: u8) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new(match verbose {
            // Without -v, aimon's own warnings only: a library's warning repeats the error aimon
            // returns on its one line (the Redis cluster client's "Failed to connect to node"),
            // or is about its internals (the embedded Qdrant engine's "Feature flags not
            // initialized!" at every start), which no user can act on.
            0 => QUIET,
            1 => "info",
            2 => "debug",
            _ => "trace",
        })
    });
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

async fn run(cli: Cli) -> Result<()> {
    let global = &cli.global;
    match &cli.command {
        Command::Backends => return commands::backends(global),
        Command::Migrate(args) => return commands::migrate(global, args).await,
        Command::Bench(args) if args.codecs => return bench::codecs_bench(global),
        _ => {}
    }
    // The bench measures; it writes into the user's store only when told which one.
    let fallback = match &cli.command {
        Command::Bench(_) => Fallback::TemporarySqlite,
        _ => Fallback::DefaultFile,
    };
    let storage = Storage::open(global, fallback).await?;
    let result = match &cli.command {
        Command::Demo(args) => demo::run(&storage, global, args).await,
        Command::Query(query) => commands::query(&storage, global, query).await,
        Command::History(args) => commands::history(&storage, global, args).await,
        Command::Stats => commands::stats(&storage, global).await,
        Command::Backup(args) => commands::backup(&storage, global, args).await,
        Command::Restore(args) => commands::restore(&storage, global, args).await,
        Command::Retention(RetentionCommand::Apply) => {
            commands::retention_apply(&storage, global).await
        }
        Command::Bench(args) => bench::run(&storage, global, args).await,
        Command::Serve(args) => serve::run(&storage, global, args).await,
        Command::Backends | Command::Migrate(_) => Ok(()),
    };
    let closed = storage.close().await;
    result?;
    closed
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Without `-v`: aimon's crates warn, libraries print nothing.
    #[test]
    fn the_quiet_filter_keeps_aimons_warnings_only() {
        use std::sync::{Arc, Mutex};
        #[derive(Clone, Default)]
        struct Buffer(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buffer {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_env_filter(EnvFilter::new(QUIET))
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(target: "aimon_influxdb::retention", "ours");
            tracing::warn!(target: "aimon_cli::bench", "the cli's");
            tracing::info!(target: "aimon_core::archive", "not at info");
            tracing::warn!(target: "redis::cluster_handling", "the library's");
            tracing::error!(target: "sqlx_postgres::options", "the library's error");
        });
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        assert!(
            text.contains("ours") && text.contains("the cli's"),
            "{text}"
        );
        assert!(
            !text.contains("not at info") && !text.contains("library"),
            "{text}"
        );
    }

    #[test]
    fn clap_errors_become_one_line() {
        let rendered = "error: invalid value 'novalue' for '--tag <KEY=VALUE>': invalid pair \"novalue\"; expected KEY=VALUE\n\nFor more information, try '--help'.\n";
        assert_eq!(
            one_line(rendered),
            "error: invalid value 'novalue' for '--tag <KEY=VALUE>': invalid pair \"novalue\"; expected KEY=VALUE"
        );
        let missing = "error: the following required arguments were not provided:\n  <NAME>\n\nUsage: aimon history <NAME>\n\nFor more information, try '--help'.\n";
        assert_eq!(
            one_line(missing),
            "error: the following required arguments were not provided: <NAME>"
        );
    }
}
