//! Loading the regsync YAML config (spec §3): parsing with regsync's YAML quirks, load-time
//! validation, defaults merging, the template hook, and the per-registry host table.
//!
//! `Config::load` = read → [`Config::parse_yaml`] → [`validate()`] → version 0 becomes 1 →
//! durations rewritten in Go form (`60m` → `1h0m0s`, unset → `0s`) and `tls` lowered →
//! [`merge_defaults`] → [`expand_templates`].

mod de;
pub mod defaults;
pub mod hosts;
pub mod print;
pub mod schema;
pub mod template;
pub mod validate;

use crate::gocompat::duration::duration_of;
pub use defaults::merge_defaults;
pub use hosts::merge_hosts;
pub use print::config_yaml;
pub use schema::*;
pub use template::{check_template, expand_templates, render_backup};
pub use validate::{check_step, validate};

use crate::gocompat::gotext::os_error_text;
use crate::registry::HostConfig;
use serde::Deserialize;
use std::io::Read;

/// A config load failure. `Display` is one line naming the file (when known) and the problem,
/// e.g. `config.yml: [3:7] invalid type: ...`.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ConfigError {
    /// `-c ""`.
    #[error("required input missing")]
    MissingInput,
    /// The file could not be opened or read: `open <path>: no such file or directory`.
    #[error("{op} {path}: {reason}")]
    Io {
        op: &'static str,
        path: String,
        reason: String,
    },
    /// YAML syntax or type error; line/column are 1-based when known.
    #[error("{}{}{message}", file_prefix(.file), location(.line, .column))]
    Yaml {
        file: String,
        line: Option<usize>,
        column: Option<usize>,
        message: String,
    },
    /// `version` > 1.
    #[error("{}unsupported config version", file_prefix(.file))]
    UnsupportedVersion { file: String, version: i64 },
    /// A load-time check failed; `context` names the entry (`sync[1] (source "alpine")`).
    #[error("{}{context}: {message}", file_prefix(.file))]
    Invalid {
        file: String,
        context: String,
        message: String,
    },
    /// A template failed to parse or execute; `message` starts with the field
    /// (`target: template: out:1: ...`).
    #[error("{}{context}: {message}", file_prefix(.file))]
    Template {
        file: String,
        context: String,
        message: String,
    },
}

fn file_prefix(file: &str) -> String {
    if file.is_empty() {
        String::new()
    } else {
        format!("{file}: ")
    }
}

fn location(line: &Option<usize>, column: &Option<usize>) -> String {
    match (line, column) {
        (Some(l), Some(c)) => format!("[{l}:{c}] "),
        _ => String::new(),
    }
}

impl ConfigError {
    pub(crate) fn invalid(context: &str, message: impl Into<String>) -> Self {
        ConfigError::Invalid {
            file: String::new(),
            context: context.to_string(),
            message: message.into(),
        }
    }

    /// Sets the file name shown in `Display` (where the variant has one).
    pub fn with_file(mut self, name: &str) -> Self {
        match &mut self {
            ConfigError::Yaml { file, .. }
            | ConfigError::UnsupportedVersion { file, .. }
            | ConfigError::Invalid { file, .. }
            | ConfigError::Template { file, .. } => *file = name.to_string(),
            ConfigError::MissingInput | ConfigError::Io { .. } => {}
        }
        self
    }
}

/// Removes serde_yaml's ` at line L column C` position texts from a message (the problem's
/// position is shown as `[L:C]`; libyaml may add a second one for its context).
fn strip_location(msg: &str) -> String {
    const AT_LINE: &str = " at line ";
    let mut out = String::with_capacity(msg.len());
    let mut rest = msg;
    while let Some(i) = rest.find(AT_LINE) {
        let after = &rest[i + AT_LINE.len()..];
        let line_len = after.bytes().take_while(u8::is_ascii_digit).count();
        let col_part = after[line_len..].strip_prefix(" column ");
        match col_part {
            Some(c) if line_len > 0 && c.bytes().next().is_some_and(|b| b.is_ascii_digit()) => {
                let col_len = c.bytes().take_while(u8::is_ascii_digit).count();
                out.push_str(&rest[..i]);
                rest = &c[col_len..];
            }
            _ => {
                out.push_str(&rest[..i + AT_LINE.len()]);
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

fn yaml_error(name: &str, e: &serde_yaml::Error) -> ConfigError {
    match e.location() {
        Some(loc) => ConfigError::Yaml {
            file: name.to_string(),
            line: Some(loc.line()),
            column: Some(loc.column()),
            message: strip_location(&e.to_string()),
        },
        None => ConfigError::Yaml {
            file: name.to_string(),
            line: None,
            column: None,
            message: e.to_string(),
        },
    }
}

/// A type error found decoding the (merged) tree has no position; decoding the text directly
/// (no merge keys) usually hits the same error with a position and a field path, which is then
/// reported instead.
fn typed_error(name: &str, text: &str, e: serde_yaml::Error) -> ConfigError {
    let msg = e.to_string();
    if let Some(doc) = serde_yaml::Deserializer::from_str(text).next() {
        if let Err(direct) = Config::deserialize(doc) {
            if let Some(loc) = direct.location() {
                let m = strip_location(&direct.to_string());
                if m == msg || m.ends_with(&format!(": {msg}")) {
                    return ConfigError::Yaml {
                        file: name.to_string(),
                        line: Some(loc.line()),
                        column: Some(loc.column()),
                        message: m,
                    };
                }
            }
        }
    }
    ConfigError::Yaml {
        file: name.to_string(),
        line: None,
        column: None,
        message: msg,
    }
}

/// Rewrites duration fields in Go's canonical form and lowers `tls` values; run after
/// [`validate()`] succeeded.
fn normalize(config: &mut Config) {
    fn norm(s: &mut String) {
        *s = duration_of(s).to_string();
    }
    for c in &mut config.creds {
        c.tls = c.tls.to_lowercase();
    }
    let d = &mut config.defaults;
    norm(&mut d.interval);
    norm(&mut d.cache_time);
    norm(&mut d.ratelimit.retry);
    for s in &mut config.sync {
        let s = std::sync::Arc::make_mut(s);
        norm(&mut s.interval);
        norm(&mut s.ratelimit.retry);
    }
}

impl Config {
    /// `cleanupTags` needs to know which tags regsync-rs wrote: without a state database
    /// (`--state`) a step asking for it is an error naming the step (at start-up and on a
    /// reload alike).
    pub fn check_cleanup_has_state(&self, has_state: bool) -> Result<(), String> {
        if has_state {
            return Ok(());
        }
        match self
            .sync
            .iter()
            .enumerate()
            .find(|(_, st)| st.cleanup_tags == Some(true) && st.kind != "image")
        {
            Some((i, st)) => Err(format!(
                "{}: cleanupTags: needs --state (or REGSYNC_STATE): only the state database \
                 knows which target tags regsync-rs wrote, and no other tag is ever deleted",
                validate::step_context(i, st)
            )),
            None => Ok(()),
        }
    }

    /// The settings of `new` that differ from this config's and that a running engine reads
    /// only once (its host table and global defaults); a reload names them and keeps the
    /// old values until a restart. Everything else lives in the steps (defaults are merged
    /// into them at load).
    pub fn settings_needing_restart(&self, new: &Config) -> Vec<&'static str> {
        let (a, b) = (&self.defaults, &new.defaults);
        [
            ("creds", self.creds != new.creds),
            ("defaults.parallel", a.parallel != b.parallel),
            ("defaults.userAgent", a.user_agent != b.user_agent),
            ("defaults.cacheCount", a.cache_count != b.cache_count),
            ("defaults.cacheTime", a.cache_time != b.cache_time),
            (
                "defaults.skipDockerConfig",
                a.skip_docker_config != b.skip_docker_config,
            ),
        ]
        .into_iter()
        .filter_map(|(name, changed)| changed.then_some(name))
        .collect()
    }

    /// Reads and loads a config file; `-` reads stdin (empty input = empty config), `""` is
    /// `required input missing`.
    pub fn load(path: &str) -> Result<Config, ConfigError> {
        if path.is_empty() {
            return Err(ConfigError::MissingInput);
        }
        let mut text = String::new();
        if path == "-" {
            std::io::stdin()
                .read_to_string(&mut text)
                .map_err(|e| ConfigError::Io {
                    op: "read",
                    path: "stdin".to_string(),
                    reason: os_error_text(&e),
                })?;
            return Config::from_yaml(&text, "stdin");
        }
        let mut file = std::fs::File::open(path).map_err(|e| ConfigError::Io {
            op: "open",
            path: path.to_string(),
            reason: os_error_text(&e),
        })?;
        file.read_to_string(&mut text)
            .map_err(|e| ConfigError::Io {
                op: "read",
                path: path.to_string(),
                reason: os_error_text(&e),
            })?;
        Config::from_yaml(&text, path)
    }

    /// Loads a config from YAML text; `name` is used in error messages. Validates, merges
    /// defaults and expands templates (see the module doc).
    pub fn from_yaml(text: &str, name: &str) -> Result<Config, ConfigError> {
        let mut config = Config::parse_yaml(text, name)?;
        validate(&config).map_err(|e| e.with_file(name))?;
        if config.version == 0 {
            config.version = 1;
        }
        normalize(&mut config);
        merge_defaults(&mut config);
        expand_templates(&mut config).map_err(|e| e.with_file(name))?;
        Ok(config)
    }

    /// Only decodes the YAML (first document; anchors, `<<:` merges in document order,
    /// duplicate keys with the later one winning, unknown keys ignored, scalars converted as
    /// in spec §3.1): no validation, no defaults.
    pub fn parse_yaml(text: &str, name: &str) -> Result<Config, ConfigError> {
        let doc = match serde_yaml::Deserializer::from_str(text).next() {
            Some(doc) => doc,
            None => return Ok(Config::default()),
        };
        let de::Tree(tree) = de::Tree::deserialize(doc).map_err(|e| yaml_error(name, &e))?;
        if tree.is_null() {
            return Ok(Config::default());
        }
        Config::deserialize(tree).map_err(|e| typed_error(name, text, e))
    }

    /// The per-registry host table from `creds` (see [`merge_hosts`]).
    pub fn hosts(&self) -> Vec<HostConfig> {
        self.hosts_with_warnings().0
    }

    /// Like [`Config::hosts`], with the warnings to log.
    pub fn hosts_with_warnings(&self) -> (Vec<HostConfig>, Vec<String>) {
        merge_hosts(Vec::new(), &self.creds)
    }
}

#[cfg(test)]
mod tests;
