//! Thin binary: parse the command line, build the actix System on a multi-threaded tokio
//! runtime, run the engine, and map errors to one line each on stderr and an exit code.

use regsync::cli::{self, Cli, Command, Parsed};
use regsync::config::{config_yaml, template, Config};
use regsync::cron::Clock;
use regsync::engine::{Engine, EngineOptions, Mode};
use regsync::log::{logger, logger_over, Verbosity};
use regsync::progress::{self, Progress, StepSource};
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
            run_engine(&cli, verbosity, Job::Once(mode), &flags.run)
        }
        Command::Check(flags) => run_engine(&cli, verbosity, Job::Once(Mode::Check), flags),
        Command::Help(_) => Ok(()),
        Command::Server(flags) => run_engine(&cli, verbosity, Job::Serve, flags),
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

/// What the engine is asked to do.
#[derive(Clone, Copy)]
enum Job {
    /// `once` / `check`: every step once.
    Once(Mode),
    /// `server` (spec §12): the initial pass, then every step on its schedule.
    Serve,
}

/// Runs `job` until it ends or a signal stops it. The first SIGINT/SIGTERM cancels the run
/// (requests, waits and copies stop; nothing half-copied is tagged) and starts the
/// `--shutdown-timeout` clock; when that runs out the summary is logged and the process exits
/// 1 whatever is still running. A second signal exits at once (128 + signal number, like a
/// shell). Exit 1 when anything failed, and for an interrupted `once`/`check` (the job is
/// not done); a `server` stopped by a signal with no error exits 0.
fn run_engine(
    cli: &Cli,
    verbosity: Verbosity,
    job: Job,
    flags: &cli::RunFlags,
) -> Result<(), Vec<String>> {
    let json = cli.json_logs();
    // Live progress (`once`/`check` on a terminal): log lines are written above its lines.
    let mut progress = progress::wanted(flags.progress, json, matches!(job, Job::Serve))
        .then(Progress::stderr)
        .flatten();
    let (log, log_flush) = match &progress {
        Some(p) => logger_over(std::io::stderr(), verbosity, json, p.overlay()),
        None => logger(verbosity, json),
    };
    let config = load(cli)?;
    let shutdown_timeout = flags.shutdown_timeout;
    let listen = flags.listen.clone();
    let options = engine_options(&config, flags.abort_on_error, &log);
    let display = &mut progress;
    let report = system().block_on(async move {
        // The port opens before any step runs: a bad address ends the command at once.
        let listener = match &listen {
            Some(addr) => Some(
                regsync::service::bind(addr)
                    .await
                    .map_err(|e| vec![e.to_string()])?,
            ),
            None => None,
        };
        let engine =
            Engine::start(&config, options, log.clone()).map_err(|e| vec![e.to_string()])?;
        if let Some(listener) = listener {
            regsync::service::serve(listener, engine.scheduler.clone().recipient(), log.clone());
        }
        let cancel = engine.run.cancel.clone();
        let signalled = watch_signals(cancel.clone(), log.clone())
            .map_err(|e| vec![format!("failed to install signal handlers: {e}")])?;
        let started = std::time::Instant::now();
        let work = async {
            match job {
                Job::Once(mode) => {
                    let steps = engine.step_ctxs(&config);
                    if let Some(p) = display {
                        let shown = steps.iter().map(|s| {
                            StepSource::new(
                                s.index,
                                &s.step.source,
                                &s.step.target,
                                s.counters.clone(),
                            )
                        });
                        p.watch(engine.run.counters.clone(), shown.collect());
                    }
                    engine.run_steps(steps, mode).await
                }
                Job::Serve => engine.serve(&config, Clock::System).await,
            }
        };
        let deadline = async {
            cancel.cancelled().await;
            tokio::time::sleep(shutdown_timeout).await;
        };
        let mut report = tokio::select! {
            report = work => report,
            _ = deadline => {
                let counts = engine.run.counters.snapshot();
                counts.log(&log, started.elapsed().as_secs_f64());
                return Err(vec![format!(
                    "shutdown timed out: work still running {} after the signal was abandoned \
                     (--shutdown-timeout)",
                    regsync::gocompat::duration::GoDuration::from_std(shutdown_timeout)
                )]);
            }
        };
        if let (Job::Once(_), Some(sig)) = (job, signalled.get()) {
            report
                .errors
                .push(format!("interrupted by {sig} before every step finished"));
        }
        Ok::<_, Vec<String>>(report)
    });
    // Down before the error lines below (it normally went before the `Sync summary`).
    if let Some(mut p) = progress.take() {
        p.finish();
    }
    let result = match report {
        Ok(r) if r.errors.is_empty() => Ok(()),
        Ok(r) => Err(r.errors),
        Err(lines) => Err(lines),
    };
    if !log_flush.flush() {
        // Nobody reads stderr (a full pipe): the error lines could not be written either, and
        // trying would hold the process for ever. The exit status still tells.
        std::process::exit(if result.is_ok() { 0 } else { 1 });
    }
    result
}

/// The first SIGINT or SIGTERM cancels the run and is remembered (its name is returned
/// through the cell); a second one ends the process at once.
fn watch_signals(
    cancel: CancellationToken,
    log: slog::Logger,
) -> std::io::Result<std::sync::Arc<std::sync::OnceLock<&'static str>>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let seen = std::sync::Arc::new(std::sync::OnceLock::new());
    let first = seen.clone();
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
            _ = cancel.cancelled() => return,
        };
        let _ = first.set(name);
        // regsync's message and level.
        slog::debug!(log, "Interrupt received, stopping"; "signal" => name);
        cancel.cancel();
        let (code, name) = tokio::select! {
            _ = term.recv() => (128 + 15, "SIGTERM"),
            _ = int.recv() => (128 + 2, "SIGINT"),
        };
        slog::warn!(log, "Second interrupt received, exiting now"; "signal" => name);
        eprintln!("regsync: second {name}: exiting without waiting for running copies");
        std::process::exit(code);
    });
    Ok(seen)
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
