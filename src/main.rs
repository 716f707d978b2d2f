//! Thin binary: parse the command line, build the actix System on a multi-threaded tokio
//! runtime, run the engine, and map errors to one line each on stderr and an exit code.

use regsync::cli::{self, Cli, Command, Parsed};
use regsync::config::{config_yaml, template, Config};
use regsync::engine::cron::Clock;
use regsync::engine::{Engine, EngineOptions, Mode};
use regsync::log::{logger, Verbosity};
use std::io::Write;
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;

fn main() -> ExitCode {
    let cli = match cli::parse(std::env::args_os()) {
        Parsed::Run(c) => c,
        Parsed::Print(text) => {
            print_out(&text);
            return ExitCode::SUCCESS;
        }
        Parsed::Fail(message) => {
            eprintln!("{message}");
            return ExitCode::FAILURE;
        }
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(lines) => {
            for l in lines {
                eprintln!("{l}");
            }
            ExitCode::FAILURE
        }
    }
}

/// Writes to stdout, ignoring a closed pipe (`regsync completion bash | head`).
fn print_out(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

fn run(cli: Cli) -> Result<(), Vec<String>> {
    let one = |e: String| vec![e];
    let verbosity = match cli.check().map_err(one)? {
        Some(v) => v,
        None => {
            // no command (or `completion` without a shell): help on stdout, exit 0
            let help = match &cli.command {
                Some(Command::Completion(_)) => cli::completion_help(),
                Some(Command::Help(h)) => cli::help_for(&h.command),
                _ => cli::root_help(),
            };
            print_out(&help);
            return Ok(());
        }
    };
    let Some(command) = &cli.command else {
        return Ok(());
    };
    match command {
        Command::Version(flags) => {
            let text =
                template::render_version(&flags.format, &cli::version_info()).map_err(one)?;
            print_out(&text);
            Ok(())
        }
        Command::Completion(flags) => {
            if let Some(shell) = &flags.shell {
                let mut buf = Vec::new();
                cli::write_completion(shell, &mut buf);
                print_out(&String::from_utf8_lossy(&buf));
            }
            Ok(())
        }
        Command::Config(_) => {
            let config = load(&cli)?;
            print_out(&config_yaml(&config));
            Ok(())
        }
        Command::Once(flags) => {
            let mode = if flags.missing {
                Mode::Missing
            } else {
                Mode::Copy
            };
            run_engine(&cli, verbosity, mode, flags.run.abort_on_error)
        }
        Command::Check(flags) => run_engine(&cli, verbosity, Mode::Check, flags.abort_on_error),
        Command::Help(_) => Ok(()),
        Command::Server(flags) => run_server(&cli, verbosity, flags.abort_on_error),
    }
}

/// The multi-threaded tokio runtime every command runs the actix System on.
fn system() -> actix::SystemRunner {
    actix::System::with_tokio_rt(|| {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("tokio runtime")
    })
}

/// `regsync server` (spec §12): runs until SIGINT/SIGTERM (or the first error with
/// `--abort-on-error`); exit 1 when any error was recorded during its lifetime.
fn run_server(cli: &Cli, verbosity: Verbosity, abort_on_error: bool) -> Result<(), Vec<String>> {
    let (log, _log_flush) = logger(verbosity, cli.json_logs());
    let config = load(cli)?;
    let options = engine_options(&config, abort_on_error, &log);
    let report = system().block_on(async move {
        let engine =
            Engine::start(&config, options, log.clone()).map_err(|e| vec![e.to_string()])?;
        watch_signals(engine.run.cancel.clone(), log)
            .map_err(|e| vec![format!("failed to install signal handlers: {e}")])?;
        Ok::<_, Vec<String>>(engine.serve(&config, Clock::System).await)
    })?;
    if report.errors.is_empty() {
        Ok(())
    } else {
        Err(report.errors)
    }
}

/// The first SIGINT or SIGTERM cancels the run (in-flight requests, waits and copies stop;
/// nothing half-copied is tagged). The handlers stay installed, so later signals are ignored
/// instead of killing the process while it finishes.
fn watch_signals(cancel: CancellationToken, log: slog::Logger) -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
            _ = cancel.cancelled() => return,
        }
        slog::debug!(log, "Interrupt received, stopping");
        cancel.cancel();
    });
    Ok(())
}

/// Read before the runtime starts: Docker's `credsStore` runs a blocking helper process.
fn engine_options(config: &Config, abort_on_error: bool, log: &slog::Logger) -> EngineOptions {
    EngineOptions {
        abort_on_error,
        docker_hosts: regsync::engine::docker_hosts(config, log),
    }
}

fn load(cli: &Cli) -> Result<Config, Vec<String>> {
    let path = cli.config_path().map_err(|e| vec![e])?;
    Config::load(path).map_err(|e| vec![e.to_string()])
}

fn run_engine(
    cli: &Cli,
    verbosity: Verbosity,
    mode: Mode,
    abort_on_error: bool,
) -> Result<(), Vec<String>> {
    let (log, _log_flush) = logger(verbosity, cli.json_logs());
    let config = load(cli)?;
    let options = engine_options(&config, abort_on_error, &log);
    let report = system().block_on(async move {
        let engine = Engine::start(&config, options, log).map_err(|e| vec![e.to_string()])?;
        Ok::<_, Vec<String>>(engine.run_once(&config, mode).await)
    })?;
    if report.errors.is_empty() {
        Ok(())
    } else {
        Err(report.errors)
    }
}
