//! Go `text/template` expansion of config strings (spec §3.7, §4), on the `gtmpl` engine.
//!
//! * Load time ([`expand_templates`]): creds `registry`, `user`, `pass`, `regcert`,
//!   `clientCert`, `clientKey` with no data; steps `source`, `referrerSource`, `target`,
//!   `referrerTarget` in that order with `{ .Sync = <merged step> }` (Go field names). `target`
//!   sees the expanded `Source`/`ReferrerSrc` but `referrerTarget` still sees the unexpanded
//!   `Target` (regsync quirk, kept). A string without `{{` is left as is.
//! * Copy time ([`render_backup`]): `backup` with `{ .Ref, .Step, .Sync }`, trimmed; hook
//!   params ([`render_hook_param`] with [`HookVars`]), parsed at load ([`check_template`]).
//! * `version --format` ([`render_version`]).
//!
//! Functions: the 12 of regsync (`default env file join json jsonPretty printPretty lower upper
//! split trimSpace time`) and Go's built-ins (`and or not len index slice print printf println
//! eq ne lt le gt ge call html js urlquery`). Deliberate difference: `file` of a missing or
//! unreadable path is an error naming the path (regsync silently yields `""`).
//!
//! gtmpl is a partial port of Go's engine; the text is rewritten before parsing
//! ([`preprocess()`]) so that Go syntax behaves as in Go:
//! * method calls with arguments on data values (`(time).Now.Format "20060102"`,
//!   `$t.AddDate 0 -1 0`, `(time).Parse LAYOUT VALUE`) become calls of an internal `_method`
//!   function (gtmpl only calls argument-less methods, as `Func` fields of objects);
//! * the value of every output action goes through `_out`, which prints it the way Go's `%v`
//!   does (`[a b]`, `map[k:v]`, `<nil>`, time and duration values);
//! * string and character literals are decoded here (Go escapes) and handed to gtmpl in a form
//!   its lexer handles; integer literals with `0x`/`0o`/`0b`/`_`/leading-zero octal are
//!   rewritten in decimal.
//!
//! Limits (documented, not Go): `break`/`continue` are unsupported; a time value's `Month` and
//! `Weekday` are numbers (Go prints `January`/`Sunday`); the local time zone has no
//! abbreviation unless it is UTC (`MST` prints `+0100`); struct values print their fields in
//! Go field order but pointers print as the value, not an address; `eq` needs both sides of
//! the same kind (an int is not equal to a float); execution errors carry no column.
//!
//! Parts: [`data`] (the values given to templates), `funcs` (the functions and the methods of
//! data values), `preprocess` (the rewriting above); this module renders and shapes errors.
//! Go's time layouts, `%v`/JSON text and durations are in [`crate::gocompat`].

pub(crate) mod data;
mod funcs;
mod preprocess;
#[cfg(test)]
mod tests;

pub use data::VersionInfo;

use super::schema::{Config, SyncStep};
use super::validate::{creds_context, step_context};
use super::ConfigError;
use crate::reference::Reference;
use data::{ref_value, sync_value};
use funcs::{type_name, FUNCS};
use gtmpl::{Context, Template, Value};
use preprocess::preprocess;
use std::collections::HashMap;

/// The line (1-based) of byte `offset` in `src`.
fn line_of(src: &str, offset: usize) -> usize {
    src.as_bytes()[..offset.min(src.len())]
        .iter()
        .filter(|c| **c == b'\n')
        .count()
        + 1
}

/// One line: newlines and tabs escaped, very long texts cut.
fn one_line(s: &str) -> String {
    let s = s.replace('\n', "\\n").replace('\r', "\\r");
    if s.chars().count() > 300 {
        let cut: String = s.chars().take(300).collect();
        format!("{cut}...")
    } else {
        s
    }
}

/// A gtmpl parse error in Go's shape. gtmpl's line numbers are unreliable (and refer to the
/// rewritten text), so the line is 1 for a one-line template, the line of the unknown name
/// for an undefined function, else gtmpl's estimate within the template's lines.
fn parse_error_text(e: &gtmpl::error::ParseError, text: &str) -> String {
    use gtmpl::error::ParseError;
    let lines = text.lines().count().max(1);
    match e {
        ParseError::WithContext(ctx, msg) => {
            let mut msg = msg.clone();
            let mut line = ctx.line.saturating_sub(1).clamp(1, lines);
            if let Some(name) = msg
                .strip_prefix("function ")
                .and_then(|m| m.strip_suffix(" not defined"))
                .map(str::to_string)
            {
                if let Some(at) = text.find(&name) {
                    line = line_of(text, at);
                }
                msg = format!("function {name:?} not defined");
            }
            if lines == 1 {
                line = 1;
            }
            format!("template: out:{line}: {msg}")
        }
        other => format!("template: out: {other}"),
    }
}

fn exec_error_text(e: &gtmpl::error::ExecError) -> String {
    use gtmpl::error::ExecError;
    let msg = match e {
        ExecError::NoFiledFor(name, recv) => {
            format!("can't evaluate field {name} in type {}", type_name(recv))
        }
        ExecError::OnlyMapsAndObjectsHaveFields => {
            "can't evaluate field of a value that is not a struct or map".into()
        }
        ExecError::InvalidRange(v) => format!("range can't iterate over {}", type_name(v)),
        ExecError::FuncError(f) => f.to_string(),
        other => other.to_string(),
    };
    format!("template: out: executing \"out\": {msg}")
}

/// Renders Go template `text` with `data` (`Value::NoValue` for none); the error text is Go's
/// shape (`template: out:1: ...`), one line.
fn render(text: &str, data: Value) -> Result<String, String> {
    if !text.contains("{{") {
        return Ok(text.to_string());
    }
    parse(text)?
        .render(&Context::from(data))
        .map_err(|e| one_line(&exec_error_text(&e)))
}

/// Parses `text` as a template without rendering it (hook params are rendered per image, but
/// a template that cannot parse fails the load).
pub fn check_template(text: &str) -> Result<(), String> {
    if !text.contains("{{") {
        return Ok(());
    }
    parse(text).map(|_| ())
}

/// `text` preprocessed (Go syntax gtmpl lacks) and parsed with our functions.
fn parse(text: &str) -> Result<Template, String> {
    let rewritten = preprocess(text).map_err(|e| {
        format!(
            "template: out:{}: {}",
            line_of(text, e.offset),
            one_line(&e.message)
        )
    })?;
    let mut tmpl = Template::with_name("out");
    tmpl.add_funcs(FUNCS);
    tmpl.parse(rewritten)
        .map_err(|e| one_line(&parse_error_text(&e, text)))?;
    Ok(tmpl)
}

/// What a hook's templates see (README "Hooks"): the step (`.Sync`, `.Step`), the image
/// (`.Source`, `.Target`, and `.Ref` = the target, as for `backup`), the hook (`.Hook`:
/// `pre`, `post` or `unchanged`), the source manifest's digest (`.Digest`, the one copied:
/// with `platform`, the selected platform's) and the target's digest before the copy
/// (`.TargetDigest`, `""` when the target was absent).
pub struct HookVars<'a> {
    pub hook: &'a str,
    pub step: &'a SyncStep,
    pub source: &'a Reference,
    pub target: &'a Reference,
    pub digest: &'a str,
    pub target_digest: &'a str,
}

impl HookVars<'_> {
    /// The data object, built once per hook run and rendered for each param.
    pub fn value(&self) -> Value {
        let sync = sync_value(self.step);
        let target = ref_value(self.target);
        let mut top = HashMap::new();
        top.insert("Hook".to_string(), Value::from(self.hook));
        top.insert("Source".to_string(), ref_value(self.source));
        top.insert("Target".to_string(), target.clone());
        top.insert("Ref".to_string(), target);
        top.insert("Digest".to_string(), Value::from(self.digest));
        top.insert("TargetDigest".to_string(), Value::from(self.target_digest));
        top.insert("Step".to_string(), sync.clone());
        top.insert("Sync".to_string(), sync);
        Value::Object(top)
    }
}

/// Renders one hook param with `data` (from [`HookVars::value`]); output as is (not trimmed:
/// it is an argv element or a body).
pub fn render_hook_param(text: &str, data: &Value) -> Result<String, String> {
    render(text, data.clone())
}

fn template_error(context: String, field: &str, message: String) -> ConfigError {
    ConfigError::Template {
        file: String::new(),
        context,
        message: format!("{field}: {message}"),
    }
}

/// The load-time expansion of spec §3.7 (see the module doc). Errors name the entry, the field
/// and the template error; the file name is added by the caller.
pub fn expand_templates(config: &mut Config) -> Result<(), ConfigError> {
    for (i, c) in config.creds.iter_mut().enumerate() {
        let context = creds_context(i, &c.registry);
        for (field, value) in [
            ("registry", &mut c.registry),
            ("user", &mut c.user),
            ("pass", &mut c.pass),
            ("regcert", &mut c.regcert),
            ("clientCert", &mut c.client_cert),
            ("clientKey", &mut c.client_key),
        ] {
            *value = render(value, Value::NoValue)
                .map_err(|m| template_error(context.clone(), field, m))?;
        }
    }
    for (i, step) in config.sync.iter_mut().enumerate() {
        let context = step_context(i, step);
        let templated = [
            &step.source,
            &step.target,
            &step.referrer_source,
            &step.referrer_target,
        ]
        .iter()
        .any(|s| s.contains("{{"));
        if !templated {
            continue;
        }
        let step = std::sync::Arc::make_mut(step);
        let mut data = step.clone();
        let data_value = |s: &SyncStep| {
            let mut top = HashMap::new();
            top.insert("Sync".to_string(), sync_value(s));
            Value::Object(top)
        };
        let expand = |text: &str, s: &SyncStep, field: &str| {
            render(text, data_value(s)).map_err(|m| template_error(context.clone(), field, m))
        };
        step.source = expand(&step.source, &data, "source")?;
        data.source = step.source.clone();
        step.referrer_source = expand(&step.referrer_source, &data, "referrerSource")?;
        data.referrer_source = step.referrer_source.clone();
        step.target = expand(&step.target, &data, "target")?;
        // regsync quirk: `.Sync.Target` stays unexpanded for referrerTarget
        step.referrer_target = expand(&step.referrer_target, &data, "referrerTarget")?;
    }
    Ok(())
}

/// Renders a step's `backup` template for the target `target` about to be overwritten (spec
/// §5.7): data `.Ref` (the target), `.Step` and `.Sync` (the step); the result is trimmed.
pub fn render_backup(
    template: &str,
    target: &Reference,
    step: &SyncStep,
) -> Result<String, ConfigError> {
    let sync = sync_value(step);
    let mut top = HashMap::new();
    top.insert("Ref".to_string(), ref_value(target));
    top.insert("Step".to_string(), sync.clone());
    top.insert("Sync".to_string(), sync);
    render(template, Value::Object(top))
        .map(|s| s.trim().to_string())
        .map_err(|m| template_error(step_context_backup(target), "backup", m))
}

fn step_context_backup(target: &Reference) -> String {
    format!("backup of {:?}", target.original)
}

/// Renders `version --format` with the build information (spec §2.3); output as is.
pub fn render_version(format: &str, info: &VersionInfo) -> Result<String, String> {
    render(format, info.value())
}
