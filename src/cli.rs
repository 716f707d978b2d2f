//! The command line, regsync-compatible (spec §2). One clap definition drives parsing, help
//! and shell completions; [`parse`] maps clap's errors to regsync's (cobra's) texts and
//! [`Cli::check`] applies regsync's checks in cobra's order (positional args, verbosity,
//! required `-c`).

use crate::config::template::VersionInfo;
use crate::log::Verbosity;
use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{Args, CommandFactory, Parser, Subcommand};
use std::error::Error as _;

const ROOT_HELP: &str = "\
{before-help}\
Usage:
  regsync <cmd> [flags]
  regsync [command]

Available Commands:
{subcommands}

Flags:
{options}

Use \"regsync [command] --help\" for more information about a command.
";

const SUB_HELP: &str = "\
{before-help}\
Usage:
  {usage}

Available Commands:
{subcommands}

Flags:
{options}

Use \"regsync completion [command] --help\" for more information about a command.
";

const CMD_HELP: &str = "\
{before-help}\
Usage:
  {usage}

Flags:
{options}
{after-help}";

#[derive(Parser, Debug)]
#[command(
    name = "regsync",
    bin_name = "regsync",
    about = "Utility for mirroring docker repositories",
    before_help = "Utility for mirroring docker repositories\nMore details at <https://regclient.org>",
    disable_version_flag = true,
    disable_help_flag = true,
    disable_help_subcommand = true,
    help_template = ROOT_HELP,
    subcommand_value_name = "command",
    next_display_order = None
)]
pub struct Cli {
    /// help for regsync
    #[arg(short = 'h', long = "help", action = clap::ArgAction::Help, global = true)]
    pub help: Option<bool>,
    /// Log level (trace, debug, info, warn, error)
    #[arg(
        short = 'v',
        long = "verbosity",
        default_value = "INFO",
        global = true,
        value_name = "string",
        allow_hyphen_values = true
    )]
    pub verbosity: String,
    /// Log options
    #[arg(
        long = "logopt",
        global = true,
        value_name = "stringArray",
        allow_hyphen_values = true
    )]
    pub logopt: Vec<String>,
    /// Config file
    #[arg(
        short = 'c',
        long = "config",
        global = true,
        value_name = "string",
        allow_hyphen_values = true,
        value_hint = clap::ValueHint::FilePath
    )]
    pub config: Option<String>,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// run the regsync server
    #[command(
        before_help = "Sync registries according to the configuration.",
        override_usage = "regsync server [flags]",
        help_template = CMD_HELP
    )]
    Server(RunFlags),
    /// processes each sync command once, ignoring cron schedule
    #[command(
        before_help = "Processes each sync command in the configuration file in order.\nNo jobs are run in parallel, and the command returns after any error or last\nsync step is finished.",
        override_usage = "regsync once [flags]",
        help_template = CMD_HELP
    )]
    Once(OnceFlags),
    /// processes each sync command once but skip actual copy
    #[command(
        before_help = "Processes each sync command in the configuration file in order.\nManifests are checked to see if a copy is needed, but only log, skip copying.\nNo jobs are run in parallel, and the command returns after any error or last\nsync step is finished.",
        override_usage = "regsync check [flags]",
        help_template = CMD_HELP
    )]
    Check(RunFlags),
    /// Show the config
    #[command(
        before_help = "Show the config",
        override_usage = "regsync config [flags]",
        help_template = CMD_HELP
    )]
    Config(NoFlags),
    /// Show the version
    #[command(
        before_help = "Show the version of regsync. Note that docker image builds will always be marked \"dirty\".",
        override_usage = "regsync version [flags]",
        after_help = "Examples:\n\n# display full version details\nregsync version\n\n# retrieve the version number\nregsync version --format '{{.VCSTag}}'\n",
        help_template = CMD_HELP
    )]
    Version(VersionFlags),
    /// Generate the autocompletion script for the specified shell
    #[command(
        before_help = "Generate the autocompletion script for regsync for the specified shell.\nSee each sub-command's help for details on how to use the generated script.",
        override_usage = "regsync completion [command]",
        subcommand_value_name = "command",
        disable_help_subcommand = true,
        help_template = SUB_HELP
    )]
    Completion(CompletionFlags),
    /// Read and edit the state database (--state)
    #[command(
        before_help = "Read and edit the state database of --state: the target tags regsync-rs wrote, the\nsteps' last runs and the tags pruning deleted.",
        override_usage = "regsync state [command]",
        subcommand_value_name = "command",
        disable_help_subcommand = true,
        help_template = SUB_HELP
    )]
    State(StateFlags),
    /// Help about any command
    #[command(
        before_help = "Help provides help for any command in the application.\nSimply type regsync help [path to command] for full details.",
        override_usage = "regsync help [command] [flags]",
        help_template = CMD_HELP
    )]
    Help(HelpFlags),
}

#[derive(Args, Debug, Default)]
pub struct HelpFlags {
    /// The command to show the help of.
    #[arg(hide = true)]
    pub command: Vec<String>,
}

#[derive(Args, Debug, Default)]
pub struct NoFlags {
    /// Positional arguments (none are accepted; counted for regsync's error text).
    #[arg(hide = true)]
    pub args: Vec<String>,
}

#[derive(Args, Debug, Default)]
pub struct RunFlags {
    /// Immediately abort on any errors
    #[arg(long = "abort-on-error", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", default_value = "false", value_parser = parse_bool,
          value_name = "bool", hide_default_value = true, hide_possible_values = true)]
    pub abort_on_error: bool,
    /// After SIGINT/SIGTERM, how long running copies may take to stop before the process exits
    /// anyway (a second signal exits at once)
    #[arg(long = "shutdown-timeout", default_value = "30s", value_name = "duration",
          value_parser = parse_shutdown_timeout, hide_default_value = true)]
    pub shutdown_timeout: std::time::Duration,
    /// Serve /metrics, /healthz, /readyz and /status on this address (host:port or :port);
    /// without it no port is opened
    #[arg(long = "listen", env = "REGSYNC_LISTEN", value_name = "addr",
          value_parser = clap::value_parser!(crate::service::ListenAddr), hide_env_values = true)]
    pub listen: Option<crate::service::ListenAddr>,
    /// Copy only the repositories this shard owns, I of N (0-based; also REGSYNC_SHARD; else
    /// REGSYNC_SHARDS=N with JOB_COMPLETION_INDEX or the hostname's -ORDINAL)
    #[arg(long = "shard", env = "REGSYNC_SHARD", value_name = "I/N",
          value_parser = clap::value_parser!(crate::shard::ShardFlag), hide_env_values = true)]
    pub shard: Option<crate::shard::ShardFlag>,
    /// once, check: write a JSON report of the run to this file at its end (- for stdout)
    #[arg(long = "report", value_name = "file",
          value_parser = clap::value_parser!(crate::service::report::ReportPath))]
    pub report: Option<crate::service::report::ReportPath>,
    /// Live progress while stderr is a terminal (default true; once and check, never with
    /// --logopt json)
    #[arg(long = "progress", env = "REGSYNC_PROGRESS", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", default_value = "true", value_parser = parse_bool,
          value_name = "bool", hide_default_value = true, hide_possible_values = true,
          hide_env_values = true)]
    pub progress: bool,
    /// State database file: remembers the tags regsync-rs wrote (needed by cleanupTags) and
    /// the steps' last runs
    #[arg(
        long = "state",
        env = "REGSYNC_STATE",
        value_name = "file",
        hide_env_values = true
    )]
    pub state: Option<std::path::PathBuf>,
    #[arg(hide = true)]
    pub args: Vec<String>,
}

#[derive(Args, Debug, Default)]
pub struct StateFlags {
    #[command(subcommand)]
    pub verb: Option<StateVerb>,
}

/// The state database file of `regsync state`.
#[derive(Args, Debug, Default, Clone)]
pub struct StatePath {
    /// State database file (an SQLite file; see README "Pruning")
    #[arg(
        long = "state",
        env = "REGSYNC_STATE",
        value_name = "file",
        hide_env_values = true
    )]
    pub state: Option<std::path::PathBuf>,
}

#[derive(Subcommand, Debug, Clone)]
pub enum StateVerb {
    /// List records: tags (default), runs or deletions
    #[command(override_usage = "regsync state list [tags|runs|deletions] [flags]", help_template = CMD_HELP)]
    List {
        /// tags, runs or deletions
        #[arg(value_name = "what", default_value = "tags", hide_default_value = true)]
        what: String,
        #[command(flatten)]
        path: StatePath,
    },
    /// Show every record of a target tag (or repository)
    #[command(override_usage = "regsync state show <target>[:tag] [flags]", help_template = CMD_HELP)]
    Show {
        /// Target reference as the records name it, e.g. registry.example.org/hub/alpine:3.21
        #[arg(value_name = "target")]
        target: String,
        #[command(flatten)]
        path: StatePath,
    },
    /// Forget the record of a target tag (or of every tag of a repository): the tag is then
    /// unmanaged and never pruned
    #[command(override_usage = "regsync state forget <target>[:tag] [flags]", help_template = CMD_HELP)]
    Forget {
        /// Target reference as the records name it
        #[arg(value_name = "target")]
        target: String,
        #[command(flatten)]
        path: StatePath,
    },
}

#[derive(Args, Debug, Default)]
pub struct OnceFlags {
    #[command(flatten)]
    pub run: RunFlags,
    /// Only copy tags that are missing on target
    #[arg(long = "missing", num_args = 0..=1, require_equals = true,
          default_missing_value = "true", default_value = "false", value_parser = parse_bool,
          value_name = "bool", hide_default_value = true, hide_possible_values = true)]
    pub missing: bool,
}

#[derive(Args, Debug, Default)]
pub struct VersionFlags {
    /// Format output with go template syntax
    #[arg(
        long = "format",
        default_value = "{{printPretty .}}",
        value_name = "string",
        allow_hyphen_values = true
    )]
    pub format: String,
    #[arg(hide = true)]
    pub args: Vec<String>,
}

#[derive(Args, Debug, Default)]
pub struct CompletionFlags {
    #[command(subcommand)]
    pub shell: Option<Shell>,
}

#[derive(Args, Debug, Default, Clone)]
pub struct ShellFlags {
    /// disable completion descriptions
    #[arg(long = "no-descriptions")]
    pub no_descriptions: bool,
}

#[derive(Subcommand, Debug, Clone)]
pub enum Shell {
    /// Generate the autocompletion script for bash
    #[command(override_usage = "regsync completion bash", help_template = CMD_HELP)]
    Bash(ShellFlags),
    /// Generate the autocompletion script for fish
    #[command(override_usage = "regsync completion fish [flags]", help_template = CMD_HELP)]
    Fish(ShellFlags),
    /// Generate the autocompletion script for powershell
    #[command(override_usage = "regsync completion powershell [flags]", help_template = CMD_HELP)]
    Powershell(ShellFlags),
    /// Generate the autocompletion script for zsh
    #[command(override_usage = "regsync completion zsh [flags]", help_template = CMD_HELP)]
    Zsh(ShellFlags),
}

/// `--shutdown-timeout`: a Go duration (`30s`, `2m`), not negative.
fn parse_shutdown_timeout(s: &str) -> Result<std::time::Duration, String> {
    let d = crate::gocompat::duration::GoDuration::parse(s).map_err(|e| e.to_string())?;
    d.to_std()
        .ok_or_else(|| format!("--shutdown-timeout {s:?}: a duration must not be negative"))
}

/// pflag's `strconv.ParseBool`.
fn parse_bool(s: &str) -> Result<bool, String> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        _ => Err(format!("strconv.ParseBool: parsing {s:?}: invalid syntax")),
    }
}

/// What the command line asks for, before running anything.
#[derive(Debug)]
pub enum Parsed {
    /// Run this command line (see [`Cli::check`]).
    Run(Cli),
    /// Print this text to stdout and exit 0 (help).
    Print(String),
    /// Print this text to stderr and exit 1.
    Fail(String),
}

/// Parses `args` (including the program name) into a [`Parsed`].
pub fn parse<I, T>(args: I) -> Parsed
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let args: Vec<std::ffi::OsString> = args.into_iter().map(Into::into).collect();
    match Cli::try_parse_from(&args) {
        Ok(cli) => Parsed::Run(cli),
        Err(e) => {
            let strings: Vec<String> = args
                .iter()
                .map(|a| a.to_string_lossy().into_owned())
                .collect();
            map_error(e, &strings)
        }
    }
}

fn context_str(e: &clap::Error, kind: ContextKind) -> Option<String> {
    match e.get(kind) {
        Some(ContextValue::String(s)) => Some(s.clone()),
        Some(ContextValue::Strings(v)) => v.first().cloned(),
        _ => None,
    }
}

/// Flags whose value is the next word (`-c FILE`), read from the one clap definition of
/// every command (flags written `--flag=value` only, like `--missing`, are not among them).
fn value_flags() -> Vec<String> {
    fn collect(cmd: &clap::Command, out: &mut Vec<String>) {
        for arg in cmd.get_arguments() {
            if arg.is_positional()
                || arg.is_require_equals_set()
                || !arg.get_action().takes_values()
            {
                continue;
            }
            out.extend(arg.get_long().map(|l| format!("--{l}")));
            out.extend(arg.get_short().map(|c| format!("-{c}")));
        }
        for sub in cmd.get_subcommands() {
            collect(sub, out);
        }
    }
    let mut out = Vec::new();
    collect(&Cli::command(), &mut out);
    out
}

/// The non-flag arguments in order (skipping the program name and flag values).
fn words(args: &[String]) -> Vec<&str> {
    let value_flags = value_flags();
    let mut out = Vec::new();
    let mut i = 1;
    while i < args.len() {
        let a = args[i].as_str();
        if a == "--" {
            out.extend(args[i + 1..].iter().map(String::as_str));
            break;
        }
        if a.starts_with('-') && a.len() > 1 {
            if value_flags.iter().any(|f| f == a) {
                i += 1;
            }
        } else {
            out.push(a);
        }
        i += 1;
    }
    out
}

/// The command names of `path` (e.g. `["completion"]`) that cobra would suggest for `typed`.
fn suggestions(path: &[&str], typed: &str) -> Vec<String> {
    let mut cmd = Cli::command();
    for p in path {
        match cmd.find_subcommand(p) {
            Some(c) => cmd = c.clone(),
            None => return Vec::new(),
        }
    }
    let mut names: Vec<String> = cmd
        .get_subcommands()
        .filter(|c| !c.is_hide_set() && c.get_name() != "help")
        .map(|c| c.get_name().to_string())
        .filter(|name| {
            levenshtein(&typed.to_lowercase(), &name.to_lowercase()) <= 2
                || name.to_lowercase().starts_with(&typed.to_lowercase())
        })
        .collect();
    names.sort();
    names
}

fn levenshtein(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != cb);
            cur[j + 1] = (prev[j + 1] + 1).min(cur[j] + 1).min(prev[j] + cost);
        }
        prev = cur;
    }
    prev[b.len()]
}

fn unknown_command(args: &[String], typed: &str) -> String {
    let w = words(args);
    let pos = w.iter().position(|x| *x == typed).unwrap_or(0);
    let path: Vec<&str> = w[..pos].to_vec();
    let mut msg = format!(
        "unknown command {typed:?} for {:?}",
        std::iter::once("regsync")
            .chain(path.iter().copied())
            .collect::<Vec<_>>()
            .join(" ")
    );
    let sugg = suggestions(&path, typed);
    if !sugg.is_empty() {
        msg.push_str("\n\nDid you mean this?\n");
        for s in sugg {
            msg.push('\t');
            msg.push_str(&s);
            msg.push('\n');
        }
    }
    msg
}

fn map_error(e: clap::Error, args: &[String]) -> Parsed {
    match e.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
        | ErrorKind::DisplayVersion => Parsed::Print(e.render().to_string()),
        ErrorKind::UnknownArgument => {
            let arg = context_str(&e, ContextKind::InvalidArg).unwrap_or_default();
            if let Some(long) = arg.strip_prefix("--") {
                let name = long.split('=').next().unwrap_or(long);
                Parsed::Fail(format!("unknown flag: --{name}"))
            } else if let Some(short) = arg.strip_prefix('-').filter(|s| !s.is_empty()) {
                let c = short.chars().next().unwrap_or('-');
                let whole = args
                    .iter()
                    .find(|a| a.starts_with('-') && !a.starts_with("--") && a.contains(c))
                    .cloned()
                    .unwrap_or_else(|| arg.clone());
                Parsed::Fail(format!("unknown shorthand flag: '{c}' in {whole}"))
            } else {
                Parsed::Fail(unknown_command(args, &arg))
            }
        }
        ErrorKind::InvalidSubcommand => {
            let typed = context_str(&e, ContextKind::InvalidSubcommand).unwrap_or_default();
            Parsed::Fail(unknown_command(args, &typed))
        }
        ErrorKind::InvalidValue | ErrorKind::NoEquals
            if context_str(&e, ContextKind::InvalidValue)
                .unwrap_or_default()
                .is_empty() =>
        {
            let flag = context_str(&e, ContextKind::InvalidArg).unwrap_or_default();
            let long = flag
                .split([' ', '=', '['])
                .find(|p| p.starts_with("--"))
                .unwrap_or(&flag)
                .to_string();
            // a missing value is at the end; pflag names the short form when that was typed
            match args.last().filter(|a| a.len() == 2 && a.starts_with('-')) {
                Some(short) if !short.starts_with("--") => Parsed::Fail(format!(
                    "flag needs an argument: '{}' in {short}",
                    &short[1..]
                )),
                _ => Parsed::Fail(format!("flag needs an argument: {long}")),
            }
        }
        ErrorKind::ValueValidation | ErrorKind::InvalidValue => {
            let flag = context_str(&e, ContextKind::InvalidArg).unwrap_or_default();
            let long = flag
                .split([' ', '=', '['])
                .find(|p| p.starts_with("--"))
                .unwrap_or(&flag)
                .to_string();
            let value = context_str(&e, ContextKind::InvalidValue).unwrap_or_default();
            let reason = e
                .source()
                .map(|s| s.to_string())
                .unwrap_or_else(|| "invalid value".into());
            Parsed::Fail(format!(
                "invalid argument {value:?} for {long:?} flag: {reason}"
            ))
        }
        _ => {
            let text = e.to_string();
            let first = text.lines().next().unwrap_or("invalid arguments");
            Parsed::Fail(first.trim_start_matches("error: ").to_string())
        }
    }
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

    /// regsync's checks before running a command, in cobra's order: positional arguments,
    /// then the verbosity (root pre-run), then the required `-c`. `Ok(None)` when there is
    /// nothing to check (help is printed instead).
    pub fn check(&self) -> Result<Option<Verbosity>, String> {
        let Some(cmd) = &self.command else {
            return Ok(None);
        };
        let (extra, needs_config) = match cmd {
            Command::Server(f) | Command::Check(f) => (f.args.len(), true),
            Command::Once(f) => (f.run.args.len(), true),
            Command::Config(f) => (f.args.len(), true),
            Command::Version(f) => {
                if !f.args.is_empty() {
                    return Err(format!("accepts 0 arg(s), received {}", f.args.len()));
                }
                (0, false)
            }
            Command::Completion(f) => {
                if f.shell.is_none() {
                    return Ok(None);
                }
                (0, false)
            }
            Command::Help(_) => return Ok(None),
            Command::State(f) => {
                if f.verb.is_none() {
                    return Ok(None);
                }
                (0, false)
            }
        };
        if extra > 0 {
            return Err(format!("accepts between 0 and 0 arg(s), received {extra}"));
        }
        let verbosity = Verbosity::parse(&self.verbosity)?;
        if needs_config && self.config.is_none() {
            return Err("required flag(s) \"config\" not set".into());
        }
        Ok(Some(verbosity))
    }
}

/// The root help text (`regsync` without a command).
pub fn root_help() -> String {
    Cli::command().render_help().to_string()
}

/// `regsync help [command...]`: the command's help, or cobra's unknown-topic text and the
/// root help.
pub fn help_for(path: &[String]) -> String {
    let mut cmd = Cli::command();
    cmd.build();
    for (i, name) in path.iter().enumerate() {
        match cmd.find_subcommand(name) {
            Some(c) => cmd = c.clone(),
            None => {
                return format!(
                    "Unknown help topic [`{}`]\n{}",
                    path[i..].join(" "),
                    root_help()
                )
            }
        }
    }
    cmd.render_help().to_string()
}

/// The help text of `regsync completion`.
pub fn completion_help() -> String {
    let mut cmd = Cli::command();
    cmd.build();
    cmd.find_subcommand_mut("completion")
        .map(|c| c.render_help().to_string())
        .unwrap_or_default()
}

/// The help text of `regsync state`.
pub fn state_help() -> String {
    let mut cmd = Cli::command();
    cmd.build();
    cmd.find_subcommand_mut("state")
        .map(|c| c.render_help().to_string())
        .unwrap_or_default()
}

/// Writes the completion script for `shell` (clap_complete, driven by the same definition).
pub fn write_completion(shell: &Shell, out: &mut dyn std::io::Write) {
    use clap_complete::{generate, shells};
    let mut cmd = Cli::command();
    match shell {
        Shell::Bash(_) => generate(shells::Bash, &mut cmd, "regsync", out),
        Shell::Zsh(_) => generate(shells::Zsh, &mut cmd, "regsync", out),
        Shell::Fish(_) => generate(shells::Fish, &mut cmd, "regsync", out),
        Shell::Powershell(_) => generate(shells::PowerShell, &mut cmd, "regsync", out),
    }
}

/// Go's `GOOS/GOARCH` naming of the running platform.
fn platform() -> String {
    let os = std::env::consts::OS;
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "x86" => "386",
        "aarch64" => "arm64",
        "powerpc64" => "ppc64",
        "loongarch64" => "loong64",
        other => other,
    };
    let arch = if arch == "powerpc64" && cfg!(target_endian = "little") {
        "ppc64le"
    } else {
        arch
    };
    format!("{os}/{arch}")
}

/// Build information for `version` (values from `build.rs`; `unknown` when not known).
pub fn version_info() -> VersionInfo {
    let get =
        |v: Option<&'static str>| v.filter(|s| !s.is_empty()).unwrap_or("unknown").to_string();
    let commit = get(option_env!("REGSYNC_VCS_COMMIT"));
    let state = get(option_env!("REGSYNC_VCS_STATE"));
    let vcs_ref = if commit != "unknown" && state == "dirty" {
        format!("{commit}-dirty")
    } else {
        commit.clone()
    };
    let tag = option_env!("REGSYNC_VCS_TAG")
        .filter(|s| !s.is_empty())
        .unwrap_or(env!("CARGO_PKG_VERSION"))
        .to_string();
    VersionInfo {
        vcs_tag: tag,
        vcs_ref,
        vcs_commit: commit,
        vcs_state: state,
        vcs_date: get(option_env!("REGSYNC_VCS_DATE")),
        platform: platform(),
        go_ver: get(option_env!("REGSYNC_RUSTC_VERSION")),
        go_compiler: "rustc".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_flag_value_is_skipped_when_looking_for_the_command() {
        let args: Vec<String> = [
            "regsync",
            "--shutdown-timeout",
            "5s",
            "--listen",
            ":9090",
            "-c",
            "f.yml",
            "once",
            "--missing=true",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(words(&args), ["once"]);
    }

    fn fail(args: &[&str]) -> String {
        let mut v = vec!["regsync"];
        v.extend_from_slice(args);
        match parse(v) {
            Parsed::Fail(m) => m,
            Parsed::Run(cli) => cli.check().err().unwrap_or_else(|| panic!("ok: {args:?}")),
            Parsed::Print(p) => panic!("printed {p}"),
        }
    }

    fn run(args: &[&str]) -> Cli {
        let mut v = vec!["regsync"];
        v.extend_from_slice(args);
        match parse(v) {
            Parsed::Run(cli) => cli,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn regsync_error_texts() {
        assert_eq!(fail(&["once"]), "required flag(s) \"config\" not set");
        assert_eq!(fail(&["once", "--x"]), "unknown flag: --x");
        assert_eq!(fail(&["once", "--x=1"]), "unknown flag: --x");
        assert_eq!(fail(&["once", "-x"]), "unknown shorthand flag: 'x' in -x");
        assert_eq!(fail(&["foo"]), "unknown command \"foo\" for \"regsync\"");
        assert_eq!(
            fail(&["onc"]),
            "unknown command \"onc\" for \"regsync\"\n\nDid you mean this?\n\tonce\n"
        );
        assert_eq!(
            fail(&["once", "a", "-c", "x"]),
            "accepts between 0 and 0 arg(s), received 1"
        );
        assert_eq!(
            fail(&["config", "a", "b"]),
            "accepts between 0 and 0 arg(s), received 2"
        );
        assert_eq!(fail(&["version", "a"]), "accepts 0 arg(s), received 1");
        assert!(fail(&["-v", "TRACE", "version"]).starts_with("unable to parse verbosity TRACE: "));
        assert_eq!(
            fail(&["completion", "nosuchshell"]),
            "unknown command \"nosuchshell\" for \"regsync completion\""
        );
        assert_eq!(fail(&["once", "-c"]), "flag needs an argument: 'c' in -c");
        // pflag names a `--flag=value`-only flag without clap's `[=<bool>]`
        assert_eq!(
            fail(&["once", "--missing=maybe", "-c", "f"]),
            "invalid argument \"maybe\" for \"--missing\" flag: strconv.ParseBool: parsing \"maybe\": invalid syntax"
        );
        assert_eq!(
            fail(&["once", "--config"]),
            "flag needs an argument: --config"
        );
        // args are checked before the verbosity, the verbosity before -c
        assert_eq!(
            fail(&["-v", "bad", "once", "x"]),
            "accepts between 0 and 0 arg(s), received 1"
        );
        assert!(fail(&["-v", "bad", "once"]).starts_with("unable to parse verbosity bad"));
    }

    #[test]
    fn flags_anywhere() {
        let a = run(&["-c", "f.yml", "-v", "debug", "once", "--missing"]);
        let b = run(&["once", "--missing", "-c", "f.yml", "-v", "debug"]);
        for cli in [a, b] {
            assert_eq!(cli.config.as_deref(), Some("f.yml"));
            assert_eq!(cli.verbosity, "debug");
            match cli.command {
                Some(Command::Once(f)) => assert!(f.missing && !f.run.abort_on_error),
                other => panic!("{other:?}"),
            }
        }
        let c = run(&[
            "check",
            "--abort-on-error=true",
            "-c",
            "-",
            "--logopt",
            "json",
        ]);
        assert!(c.json_logs());
        assert_eq!(c.check().unwrap(), Some(Verbosity(0)));
        assert!(matches!(
            c.command,
            Some(Command::Check(RunFlags {
                abort_on_error: true,
                ..
            }))
        ));
        for (args, want) in [
            (&["once", "-c", "f"][..], true),
            (&["once", "--progress=false", "-c", "f"][..], false),
            (&["check", "--progress", "-c", "f"][..], true),
            (&["check", "--progress=0", "-c", "f"][..], false),
        ] {
            let progress = match run(args).command {
                Some(Command::Once(f)) => f.run.progress,
                Some(Command::Check(f)) => f.progress,
                other => panic!("{other:?}"),
            };
            assert_eq!(progress, want, "{args:?}");
        }
        assert!(fail(&["once", "--progress=maybe", "-c", "f"])
            .starts_with("invalid argument \"maybe\" for \"--progress\" flag: strconv.ParseBool"));
        let t = run(&["-v", "trace", "config", "-c", "x"]);
        assert_eq!(t.check().unwrap(), Some(Verbosity(Verbosity::TRACE)));
        let o = run(&["-v", "info+2", "version", "--format", "{{.VCSTag}}"]);
        assert_eq!(o.check().unwrap(), Some(Verbosity(2)));
    }

    #[test]
    fn help_goes_to_stdout() {
        for args in [
            vec!["regsync", "--help"],
            vec!["regsync", "once", "-h"],
            vec!["regsync", "-h", "once"],
        ] {
            match parse(args.clone()) {
                Parsed::Print(text) => assert!(text.contains("Usage"), "{args:?}: {text}"),
                other => panic!("{args:?}: {other:?}"),
            }
        }
        assert!(root_help().contains("Available Commands:"));
        assert!(help_for(&["once".to_string()]).contains("--missing"));
        assert!(help_for(&["nope".to_string()]).starts_with("Unknown help topic [`nope`]"));
        assert!(completion_help().contains("bash"));
    }

    #[test]
    fn completions() {
        for shell in ["bash", "zsh", "fish", "powershell"] {
            let cli = run(&["completion", shell]);
            let Some(Command::Completion(CompletionFlags { shell: Some(s) })) = &cli.command else {
                panic!("{shell}");
            };
            let mut out = Vec::new();
            write_completion(s, &mut out);
            let text = String::from_utf8(out).unwrap();
            assert!(text.contains("regsync"), "{shell}");
        }
    }

    #[test]
    fn version_defaults() {
        let v = version_info();
        assert!(!v.vcs_tag.is_empty());
        assert_eq!(v.go_compiler, "rustc");
        assert!(v.platform.contains('/'));
    }
}
