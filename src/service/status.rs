//! `GET /status` (JSON) and the `/readyz` verdict, both read from one [`SchedulerState`].

use crate::engine::host_stats::HostSnapshot;
use crate::engine::report::{CountSnapshot, SchedulerState, StepState};
use serde_json::{json, Value};
use std::time::SystemTime;

/// RFC 3339 in UTC, milliseconds.
pub fn time(t: Option<SystemTime>) -> Value {
    match t {
        Some(t) => Value::String(
            chrono::DateTime::<chrono::Utc>::from(t)
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        ),
        None => Value::Null,
    }
}

/// One registry host's numbers (`/status` and `--report` alike): requests by method, kind
/// and status in a fixed order, so two documents of the same work diff line by line.
pub fn registry(h: &HostSnapshot) -> Value {
    let requests: Vec<Value> = h
        .requests
        .iter()
        .map(|(k, n)| {
            json!({
                "method": k.method,
                "kind": k.kind.as_str(),
                "code": k.code_label(),
                "count": n,
            })
        })
        .collect();
    json!({
        "registry": h.registry,
        "requests": h.request_count(),
        "retries": h.retries,
        "in_flight": h.in_flight,
        "requests_by_kind": requests,
        "rate_limit_remaining": h.rate_limit_remaining,
        "rate_limit_waits": h.rate_limit_waits,
        "rate_limit_wait_seconds": h.rate_limit_wait_seconds,
        "paused_until": time(h.paused_until),
        "bytes_read": h.bytes_read,
        "bytes_written": h.bytes_written,
    })
}

pub fn counts(c: &CountSnapshot) -> Value {
    json!({
        "images_checked": c.images_checked,
        "images_copied": c.images_copied,
        "images_matched": c.images_matched,
        "images_skipped": c.images_skipped,
        "images_failed": c.images_failed,
        "images_canceled": c.images_canceled,
        "blobs_copied": c.blobs_copied,
        "blobs_mounted": c.blobs_mounted,
        "blobs_skipped": c.blobs_skipped,
        "blobs_deduped": c.blobs_deduped,
        "manifests_pushed": c.manifests_pushed,
        "bytes_copied": c.bytes_copied,
        "tags_pruned": c.tags_pruned,
    })
}

/// `--shard` and what came of it (`/status` and `--report` alike): `index` of `count`, and
/// the target repositories `c` owned and left to the other shards.
pub fn shard(shard: crate::shard::Shard, c: &CountSnapshot) -> Value {
    json!({
        "index": shard.index,
        "count": shard.count,
        "repositories_owned": c.repos_owned,
        "repositories_other_shards": c.repos_other_shards,
    })
}

/// Whether `s` is a stale mirror at `now`: a scheduled step (`server`) whose last success —
/// or, when it never succeeded, the start of the server — is older than twice its period.
pub fn is_stale(state: &SchedulerState, s: &StepState, now: SystemTime) -> bool {
    let Some(period) = s.period.filter(|_| state.serving) else {
        return false;
    };
    let since = s.last_success.unwrap_or(state.started);
    now.duration_since(since)
        .is_ok_and(|age| age > period.saturating_mul(2))
}

/// `/readyz`: `Ok` once the initial pass has finished and no step is stale; otherwise the
/// reason, one line.
pub fn readiness(state: &SchedulerState, now: SystemTime) -> Result<(), String> {
    if !state.initial_pass_done {
        return Err("initial pass running".into());
    }
    let stale: Vec<String> = state
        .steps
        .iter()
        .filter(|s| is_stale(state, s, now))
        .map(|s| format!("sync[{}]", s.step))
        .collect();
    if stale.is_empty() {
        Ok(())
    } else {
        Err(format!("stale: {}", stale.join(" ")))
    }
}

/// The `/status` document.
pub fn document(state: &SchedulerState, version: &str, now: SystemTime) -> Value {
    let steps: Vec<Value> = state
        .steps
        .iter()
        .map(|s| {
            json!({
                "step": s.step,
                "name": format!("sync[{}]", s.step),
                "type": s.def.kind,
                "source": s.def.source,
                "target": s.def.target,
                "schedule": s.schedule,
                "period_seconds": s.period.map(|p| p.as_secs_f64()),
                "next_run": time(s.next_run),
                "running_since": time(s.running_since),
                "last_start": time(s.last_start),
                "last_end": time(s.last_end),
                "last_result": s.last_ok.map(|ok| if ok { "ok" } else { "failed" }),
                "last_duration_seconds": s.last_duration.map(|d| d.as_secs_f64()),
                "last_error": s.last_error,
                "last_success": time(s.last_success),
                "stale": is_stale(state, s, now),
                "runs": s.runs,
                "failed_runs": s.failed_runs,
                "skipped_firings": s.skipped_firings,
                "counts": counts(&s.counts),
            })
        })
        .collect();
    json!({
        "version": version,
        "started": time(Some(state.started)),
        "mode": if state.serving { "server" } else { "once" },
        "shard": shard(state.shard, &state.totals),
        "initial_pass_done": state.initial_pass_done,
        "ready": readiness(state, now).is_ok(),
        "images_in_flight": state.images_in_flight,
        "totals": counts(&state.totals),
        "steps": steps,
        "registries": state.registries.iter().map(registry).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const MIN: Duration = Duration::from_secs(60);

    fn state(serving: bool, done: bool, steps: Vec<StepState>) -> SchedulerState {
        SchedulerState {
            started: SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000),
            serving,
            initial_pass_done: done,
            totals: CountSnapshot::default(),
            images_in_flight: 0,
            steps,
            registries: Vec::new(),
            shard: crate::shard::Shard::default(),
        }
    }

    fn step(index: usize, period: Option<Duration>, success_ago: Option<Duration>) -> StepState {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(2_000_000);
        StepState {
            step: index,
            period,
            last_success: success_ago.map(|a| now - a),
            ..Default::default()
        }
    }

    #[test]
    fn ready_after_the_initial_pass_unless_a_step_is_stale() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(2_000_000);
        let st = state(true, false, vec![step(0, Some(MIN), Some(MIN))]);
        assert_eq!(readiness(&st, now), Err("initial pass running".into()));
        let st = state(true, true, vec![step(0, Some(MIN), Some(MIN))]);
        assert_eq!(readiness(&st, now), Ok(()));
        // Twice the period is still fresh; beyond it is stale.
        let st = state(
            true,
            true,
            vec![
                step(0, Some(MIN), Some(2 * MIN)),
                step(1, Some(MIN), Some(2 * MIN + Duration::from_secs(1))),
                // Never succeeded, and the server started long ago.
                step(2, Some(MIN), None),
                // No schedule: never stale.
                step(3, None, None),
            ],
        );
        assert_eq!(readiness(&st, now), Err("stale: sync[1] sync[2]".into()));
        let doc = document(&st, "9.9.9", now);
        assert_eq!(doc["ready"], false);
        assert_eq!(doc["steps"][0]["stale"], false);
        assert_eq!(doc["steps"][1]["stale"], true);
        assert_eq!(doc["steps"][1]["name"], "sync[1]");
        assert_eq!(doc["shard"]["index"], 0);
        assert_eq!(doc["shard"]["count"], 1);
        // `once`/`check` have no schedules to fall behind.
        let st = state(false, true, vec![step(0, Some(MIN), None)]);
        assert_eq!(readiness(&st, now), Ok(()));
    }
}
