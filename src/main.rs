//! Thin binary: parse the command line, build the actix System on a multi-threaded tokio
//! runtime, run the engine, and map errors to one line each on stderr and an exit code.

use clap::Parser;
use regsync::cli::{Cli, Command};
use regsync::config::Config;
use regsync::engine::{Engine, EngineOptions, Mode};
use regsync::log::{logger, Verbosity};
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                let _ = e.print();
                return ExitCode::SUCCESS;
            }
            let text = e.to_string();
            let first = text.lines().next().unwrap_or("invalid arguments");
            eprintln!("{}", first.trim_start_matches("error: "));
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

fn run(cli: Cli) -> Result<(), Vec<String>> {
    let one = |e: String| vec![e];
    let verbosity = Verbosity::parse(&cli.verbosity).map_err(one)?;
    let log = logger(verbosity, cli.json_logs());
    let Some(command) = &cli.command else {
        use clap::CommandFactory;
        let _ = Cli::command().print_help();
        return Ok(());
    };
    match command {
        Command::Version { format: _ } => {
            println!("VCSTag:     {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
        Command::Config => {
            let config = load(&cli)?;
            let text = serde_yaml::to_string(&config).map_err(|e| one(e.to_string()))?;
            print!("{text}");
            Ok(())
        }
        Command::Once(flags) => {
            let mode = if flags.missing {
                Mode::Missing
            } else {
                Mode::Copy
            };
            run_engine(&cli, log, mode, flags.run.abort_on_error)
        }
        Command::Check(flags) => run_engine(&cli, log, Mode::Check, flags.abort_on_error),
        Command::Server(_) => Err(one(
            "server: not implemented yet in regsync-rs (use `once` from cron)".into(),
        )),
    }
}

fn load(cli: &Cli) -> Result<Config, Vec<String>> {
    let path = cli.config_path().map_err(|e| vec![e])?;
    Config::load(path).map_err(|e| vec![e.to_string()])
}

fn run_engine(
    cli: &Cli,
    log: slog::Logger,
    mode: Mode,
    abort_on_error: bool,
) -> Result<(), Vec<String>> {
    let config = load(cli)?;
    let system = actix::System::with_tokio_rt(|| {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("tokio runtime")
    });
    let report = system.block_on(async move {
        let engine = Engine::start(&config, EngineOptions { abort_on_error }, log)
            .map_err(|e| vec![e.to_string()])?;
        Ok::<_, Vec<String>>(engine.run_once(&config, mode).await)
    })?;
    if report.errors.is_empty() {
        Ok(())
    } else {
        Err(report.errors)
    }
}
