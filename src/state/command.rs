//! `regsync state list|show|forget`: read and edit the database by hand. Each verb opens the
//! file with the same checks and one-line errors as a run and answers on stdout. `list` and
//! `show` only read, so they work while a `server` holds the file; `forget` is a writer and
//! is refused while another regsync process holds it (see [`Db::open`]).

use super::{time_text, Db, StateError};
use crate::cli::StateVerb;
use crate::reference::Reference;
use std::path::{Path, PathBuf};

/// How a verb opens the file: [`Db::open_read`] or [`Db::open`].
fn open(path: &Option<PathBuf>, how: fn(&Path) -> Result<Db, StateError>) -> Result<Db, String> {
    let path = path
        .as_ref()
        .ok_or("required flag \"--state\" (or REGSYNC_STATE) not set")?;
    how(path).map_err(|e| e.to_string())
}

/// `<target repository>` and the tag, as the records name them (the reference parsed like a
/// step's target, so `alpine:3` means `docker.io/library/alpine`, tag `3`).
fn split(text: &str) -> Result<(String, Option<String>), String> {
    let r = Reference::parse(text).map_err(|e| format!("invalid target {text:?}: {e}"))?;
    Ok((r.repo_only().common_name(), r.tag.clone()))
}

fn opt_time(t: Option<i64>) -> String {
    t.map(time_text).unwrap_or_else(|| "-".into())
}

/// Runs one verb; `Ok` is the text for stdout.
pub fn run(verb: &StateVerb) -> Result<String, String> {
    let q = |e: StateError| e.to_string();
    let mut out = String::new();
    match verb {
        StateVerb::List { what, path } => {
            let db = open(&path.state, Db::open_read)?;
            match what.as_str() {
                "tags" => {
                    for r in db.all_tags().map_err(q)? {
                        out.push_str(&format!(
                            "{}:{}\t{}\t{}\t{}\n",
                            r.target,
                            r.tag,
                            r.target_digest,
                            time_text(r.last_confirmed),
                            r.step
                        ));
                    }
                }
                "runs" => {
                    for r in db.step_runs().map_err(q)? {
                        out.push_str(&format!(
                            "{}\t{}\t{}\t{}\t{}\t{}\n",
                            r.step,
                            r.mode,
                            opt_time(r.last_start),
                            opt_time(r.last_end),
                            r.result.as_deref().unwrap_or("running"),
                            opt_time(r.last_success)
                        ));
                    }
                }
                "deletions" => {
                    for d in db.deletions(None).map_err(q)? {
                        out.push_str(&format!(
                            "{}\t{}:{}\t{}\t{}\t{}\n",
                            time_text(d.at),
                            d.target,
                            d.tag,
                            d.digest,
                            d.reason,
                            d.step
                        ));
                    }
                }
                other => {
                    return Err(format!(
                        "state list: unknown list {other:?} (expected tags, runs or deletions)"
                    ))
                }
            }
        }
        StateVerb::Show { target, path } => {
            let db = open(&path.state, Db::open_read)?;
            let (repo, tag) = split(target)?;
            let records = db.tags_of(&repo, tag.as_deref()).map_err(q)?;
            if records.is_empty() {
                return Err(format!(
                    "state database {}: no record of {target}",
                    db.path().display()
                ));
            }
            for r in records {
                out.push_str(&format!(
                    "target: {}:{}\nstep: {}\nsource: {}\nsource_digest: {}\ntarget_digest: {}\n\
                     media_type: {}\nfirst_written: {}\nlast_confirmed: {}\n\n",
                    r.target,
                    r.tag,
                    r.step,
                    r.source,
                    r.source_digest,
                    r.target_digest,
                    r.media_type,
                    time_text(r.first_written),
                    time_text(r.last_confirmed)
                ));
            }
        }
        StateVerb::Forget { target, path } => {
            let mut db = open(&path.state, Db::open)?;
            let (repo, tag) = split(target)?;
            let n = db.forget(&repo, tag.as_deref()).map_err(q)?;
            out.push_str(&format!("forgot {n} record(s) of {target}\n"));
        }
    }
    Ok(out)
}
