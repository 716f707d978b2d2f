//! The command line, regsync-compatible (spec §2). One clap definition drives parsing and help.

use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(
    name = "regsync",
    about = "Utility for mirroring docker repositories",
    version,
    disable_version_flag = true
)]
pub struct Cli {
    /// Log level (trace, debug, info, warn, error; offsets like info+2)
    #[arg(short = 'v', long = "verbosity", default_value = "info", global = true)]
    pub verbosity: String,
    /// Log options (json)
    #[arg(long = "logopt", global = true)]
    pub logopt: Vec<String>,
    /// Config file (`-` for stdin)
    #[arg(short = 'c', long = "config", global = true)]
    pub config: Option<String>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the regsync server
    Server(RunFlags),
    /// Processes each sync command once, ignoring cron schedule
    Once(OnceFlags),
    /// Processes each sync command once but skip actual copy
    Check(RunFlags),
    /// Show the config
    Config,
    /// Show the version
    Version {
        /// Format output with go template syntax
        #[arg(long = "format", default_value = "{{printPretty .}}")]
        format: String,
    },
}

#[derive(Args, Debug, Default)]
pub struct RunFlags {
    /// Abort on the first error
    #[arg(long = "abort-on-error")]
    pub abort_on_error: bool,
}

#[derive(Args, Debug, Default)]
pub struct OnceFlags {
    #[command(flatten)]
    pub run: RunFlags,
    /// Only copy tags that are missing on target
    #[arg(long = "missing")]
    pub missing: bool,
}

impl Cli {
    pub fn json_logs(&self) -> bool {
        self.logopt.iter().any(|o| o == "json")
    }

    /// The `-c` value for commands that need it, with regsync's error texts.
    pub fn config_path(&self) -> Result<&str, String> {
        match self.config.as_deref() {
            None => Err("required flag(s) \"config\" not set".into()),
            Some("") => Err("required input missing".into()),
            Some(p) => Ok(p),
        }
    }
}
