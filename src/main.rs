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
    limit_malloc_arenas();
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

/// glibc gives threads that allocate arenas of their own (up to eight per core) and keeps what
/// is freed in them: two arenas hold a long run's resident memory near its live heap (README
/// "Performance"). `MALLOC_ARENA_MAX` in the environment still decides when set.
fn limit_malloc_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only sets an allocator parameter; called before any other thread.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
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
                Some(Command::State(_)) => cli::state_help(),
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
        Command::State(flags) => {
            if let Some(verb) = &flags.verb {
                print_out(&regsync::state::command::run(verb).map_err(one)?);
            }
            Ok(())
        }
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
    let report_to = flags.report.clone();
    if let Some(path) = &report_to {
        if matches!(job, Job::Serve) {
            return Err(vec![
                "--report is for once and check (a server shows its runs on /status)".into(),
            ]);
        }
        path.check().map_err(|e| vec![e])?;
    }
    // Which repositories this process copies: bad values end the command before any request.
    let shard = regsync::shard::resolve(
        flags.shard.and_then(|f| f.0),
        &regsync::shard::ShardEnv::from_process(),
    )
    .map_err(|e| vec![e])?;
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
    config
        .check_cleanup_has_state(flags.state.is_some())
        .map_err(|e| vec![e])?;
    // Opened and checked before anything runs: a corrupt or locked file is one line. `check`
    // writes nothing, so it only reads (also while a `server` holds the file); `once` and
    // `server` are its one writer.
    let (state, restored_runs) = match &flags.state {
        Some(path) => {
            let open = match job {
                Job::Once(Mode::Check) => regsync::state::Db::open_read,
                Job::Once(_) | Job::Serve => regsync::state::Db::open,
            };
            let db = open(path).map_err(|e| vec![e.to_string()])?;
            let runs = db.step_runs().map_err(|e| vec![e.to_string()])?;
            (Some(regsync::state::StateHandle::spawn(db)), runs)
        }
        None => (None, Vec::new()),
    };
    let shutdown_timeout = flags.shutdown_timeout;
    let listen = flags.listen.clone();
    let start = std::time::SystemTime::now();
    if shard.is_sharded() {
        slog::info!(log, "Copying only the target repositories this shard owns";
            "shard" => shard.to_string());
    }
    let mut options = engine_options(&config, flags.abort_on_error, shard, &log);
    options.state = state.clone();
    options.restored_runs = restored_runs;
    let display = &mut progress;
    // Closed on every way out once opened, failures at start included: a process that exits
    // with the connection open leaves the last writes in FILE-wal. Not when work was abandoned
    // at the shutdown deadline: that work may still queue writes.
    let closing = state.clone();
    let state_at_end = state.clone();
    let abandoned = std::rc::Rc::new(std::cell::Cell::new(false));
    let abandoned_at_deadline = abandoned.clone();
    let report = system().block_on(async move {
        let report = async move {
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
        let engine = std::rc::Rc::new(engine);
        if let Job::Serve = job {
            let path = cli.config_path().map_err(|e| vec![e])?.to_string();
            reload_on_sighup(engine.clone(), config.clone(), path, log.clone())
                .map_err(|e| vec![format!("failed to install signal handlers: {e}")])?;
        }
        let started = std::time::Instant::now();
        let work = async {
            let report = match job {
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
            };
            report
        };
        let deadline = async {
            cancel.cancelled().await;
            tokio::time::sleep(shutdown_timeout).await;
        };
        tokio::pin!(deadline);
        let mut report = tokio::select! {
            report = work => report,
            _ = &mut deadline => {
                let counts = engine.run.counters.snapshot();
                counts.log(&log, started.elapsed().as_secs_f64(), engine.run.shard);
                let mut lines = vec![format!(
                    "shutdown timed out: work still running {} after the signal was abandoned \
                     (--shutdown-timeout)",
                    regsync::gocompat::duration::GoDuration::from_std(shutdown_timeout)
                )];
                if let (Some(path), Job::Once(mode)) = (&report_to, job) {
                    let run = regsync::engine::report::RunReport {
                        errors: lines.clone(),
                        counts,
                        steps: Vec::new(),
                    };
                    if let Err(e) = write_report(path, &config, &engine, mode, start, true, &run) {
                        lines.push(e);
                    }
                }
                abandoned_at_deadline.set(true);
                return Err(lines);
            }
        };
        // Blob moves still running now belong to images that failed or were stopped: nothing
        // waits for them. Stopping them deletes their upload sessions, which exiting at once
        // would leave on the targets for the registry's purge (a week in distribution).
        cancel.cancel();
        if let (Job::Once(_), Some(sig)) = (job, signalled.get()) {
            report
                .errors
                .push(format!("interrupted by {sig} before every step finished"));
        }
        if let (Some(path), Job::Once(mode)) = (&report_to, job) {
            let interrupted = signalled.get().is_some();
            if let Err(e) = write_report(path, &config, &engine, mode, start, interrupted, &report)
            {
                report.errors.push(e);
            }
        }
        // The run is recorded before the wait for those deletes: a signal during it ends the
        // process at once. (Closed again below: a second close does nothing.)
        if let Some(state) = &state_at_end {
            state.close().await;
        }
        // The wait is the shutdown's, not work's: bounded by the registry layer's clean-up
        // grace and by the deadline (from the signal, or from now), without making the run
        // one that timed out.
        tokio::select! {
            _ = engine.run.stores.registry.cleanups_done() => {}
            _ = &mut deadline => {}
        }
        Ok::<_, Vec<String>>(report)
        }
        .await;
        // Every queued state write is done, and the database closed, before the process ends.
        if let Some(state) = closing.filter(|_| !abandoned.get()) {
            state.close().await;
        }
        report
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

/// SIGHUP in `server`: read the config file again and hand its steps to the engine. A file
/// that does not load keeps the running config (one error line naming the problem). Settings
/// outside the steps (`creds`, global `defaults` like `parallel`) are read once at start-up:
/// a change to them is named in a warning and waits for a restart.
fn reload_on_sighup(
    engine: std::rc::Rc<Engine>,
    mut running: Config,
    path: String,
    log: slog::Logger,
) -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = signal(SignalKind::hangup())?;
    let cancel = engine.run.cancel.clone();
    // The engine's actors live on this thread's arbiter: a local task, not a pool one.
    actix::spawn(async move {
        loop {
            tokio::select! {
                _ = hup.recv() => {}
                _ = cancel.cancelled() => return,
            }
            if path == "-" {
                slog::error!(log, "Config reload failed, keeping the running config";
                    "err" => "the config was read from stdin: nothing to read again");
                continue;
            }
            let loaded = Config::load(&path)
                .map_err(|e| e.to_string())
                .and_then(|c| {
                    c.check_cleanup_has_state(engine.run.state.is_some())
                        .map(|()| c)
                });
            let config = match loaded {
                Ok(c) => c,
                Err(e) => {
                    slog::error!(log, "Config reload failed, keeping the running config";
                        "err" => e.lines().next().unwrap_or_default().to_string());
                    continue;
                }
            };
            let restart = running.settings_needing_restart(&config);
            if !restart.is_empty() {
                slog::warn!(log, "Config reload: these settings apply after a restart";
                    "settings" => restart.join(", "));
            }
            match engine.reload(&config).await {
                Ok(sum) => {
                    slog::info!(log, "Config reloaded";
                        "file" => &path, "unchanged" => sum.unchanged, "changed" => sum.changed,
                        "added" => sum.added, "removed" => sum.removed, "moved" => sum.moved);
                    running.sync = config.sync;
                }
                Err(e) => {
                    slog::error!(log, "Config reload failed, keeping the running config";
                        "err" => e);
                }
            }
        }
    });
    Ok(())
}

/// `--report`: the run's document, written whole.
fn write_report(
    path: &regsync::service::report::ReportPath,
    config: &Config,
    engine: &Engine,
    mode: Mode,
    start: std::time::SystemTime,
    interrupted: bool,
    run: &regsync::engine::report::RunReport,
) -> Result<(), String> {
    use regsync::service::report::{document, RunInfo};
    let info = RunInfo {
        version: env!("CARGO_PKG_VERSION"),
        mode: if mode == Mode::Check { "check" } else { "once" },
        missing: mode == Mode::Missing,
        start,
        end: std::time::SystemTime::now(),
        interrupted,
        shard: engine.run.shard,
    };
    let registries = engine.run.throttle.stats().snapshot();
    path.write(&document(&info, config, run, &registries))
}

/// The first SIGINT or SIGTERM cancels the run and is remembered (its name is returned
/// through the cell); a second one ends the process at once. So does the first one once the
/// run is stopping for another reason (`--abort-on-error`, or its end while upload sessions
/// are being deleted): the watcher keeps the signals it took over from their default action,
/// and must not leave them ignored.
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
        let first_signal = tokio::select! {
            _ = cancel.cancelled() => None,
            _ = term.recv() => Some("SIGTERM"),
            _ = int.recv() => Some("SIGINT"),
        };
        if let Some(name) = first_signal {
            let _ = first.set(name);
            // regsync's message and level.
            slog::debug!(log, "Interrupt received, stopping"; "signal" => name);
            cancel.cancel();
        }
        let (code, name) = tokio::select! {
            _ = term.recv() => (128 + 15, "SIGTERM"),
            _ = int.recv() => (128 + 2, "SIGINT"),
        };
        let which = if first_signal.is_some() {
            "second "
        } else {
            ""
        };
        slog::warn!(log, "Interrupt received while stopping, exiting now"; "signal" => name);
        eprintln!(
            "regsync: {which}{name} while stopping: exiting without waiting for running work"
        );
        std::process::exit(code);
    });
    Ok(seen)
}

/// Read before the runtime starts: Docker's `credsStore` runs a blocking helper process.
fn engine_options(
    config: &Config,
    abort_on_error: bool,
    shard: regsync::shard::Shard,
    log: &slog::Logger,
) -> EngineOptions {
    EngineOptions {
        abort_on_error,
        shard,
        docker_hosts: regsync::engine::docker_hosts(config, log),
        state: None,
        restored_runs: Vec::new(),
    }
}

fn load(cli: &Cli) -> Result<Config, Vec<String>> {
    let path = cli.config_path().map_err(|e| vec![e])?;
    Config::load(path).map_err(|e| vec![e.to_string()])
}
