//! `GET /metrics`: the Prometheus text exposition of one [`SchedulerState`].
//!
//! Nothing is counted here: every value is read from the counters the copy already bumps
//! (`copy::counters`) and the scheduler's bookkeeping of step runs, copied out in one message
//! per scrape. A [`Collector`] writes them in a fixed order (steps by index), so two scrapes of
//! the same state are byte for byte the same. Label values come from the config only (step
//! index, type, source and target as written); never a tag or a digest.

use crate::engine::host_stats::Histogram;
use crate::engine::report::{SchedulerState, StepState};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use std::time::SystemTime;

/// The `Content-Type` of [`render`]'s text (Prometheus text format 0.0.4).
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// The exposition of `state` for a binary of `version`.
pub fn render(state: &SchedulerState, version: &str) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Exposition {
        state: state.clone(),
        version: version.to_string(),
    }));
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &registry);
    out
}

#[derive(Debug)]
struct Exposition {
    state: SchedulerState,
    version: String,
}

type Labels = Vec<(&'static str, String)>;

fn seconds(t: SystemTime) -> f64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// A step's series: its position and what it copies. A reload that moves a step (steps are
/// paired by type, source and target) then ends the series at the old position and starts
/// one at the new, each monotonic; with the position alone, the series of position 0 would
/// jump from one step's count to another's, a counter reset or a false increase to
/// Prometheus.
fn step_label(s: &StepState) -> Labels {
    vec![
        ("step", s.step.to_string()),
        ("type", s.def.kind.clone()),
        ("source", s.def.source.clone()),
        ("target", s.def.target.clone()),
    ]
}

fn step_result_label(s: &StepState, result: &str) -> Labels {
    let mut labels = step_label(s);
    labels.push(("result", result.to_string()));
    labels
}

/// One metric family: its descriptor, then one sample per label set.
fn family<M: EncodeMetric>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    samples: impl IntoIterator<Item = (Labels, M)>,
) -> Result<(), std::fmt::Error> {
    let mut metric = enc.encode_descriptor(name, help, None, kind)?;
    for (labels, m) in samples {
        m.encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

impl EncodeMetric for Histogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        // The encoder wants a count per bucket, writes them cumulated and adds `+Inf` (the
        // count of every observation) itself.
        let buckets: Vec<(f64, u64)> = self
            .bounds
            .iter()
            .copied()
            .zip(self.counts.iter().copied())
            .collect();
        encoder.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
            self.sum, self.count, &buckets, None,
        )
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

fn registry_label(name: &str) -> Labels {
    vec![("registry", name.to_string())]
}

fn counter(v: u64) -> ConstCounter<u64> {
    ConstCounter::new(v)
}

fn gauge(v: f64) -> ConstGauge<f64> {
    ConstGauge::new(v)
}

impl Collector for Exposition {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let st = &self.state;
        let steps = &st.steps;
        family(
            &mut enc,
            "regsync_build_info",
            "The running regsync-rs version (always 1).",
            MetricType::Gauge,
            [(vec![("version", self.version.clone())], gauge(1.0))],
        )?;
        family(
            &mut enc,
            "regsync_shard_info",
            "This process's shard (--shard I/N, 0-based; 0 of 1 when not sharded; always 1).",
            MetricType::Gauge,
            [(
                vec![
                    ("shard", st.shard.index.to_string()),
                    ("shards", st.shard.count.to_string()),
                ],
                gauge(1.0),
            )],
        )?;
        // Counter names go without `_total`: the encoder adds it.
        family(
            &mut enc,
            "regsync_step_runs",
            "Completed runs of a sync step, by result (failed: at least one error).",
            MetricType::Counter,
            steps.iter().flat_map(|s| {
                [
                    (step_result_label(s, "ok"), counter(s.runs - s.failed_runs)),
                    (step_result_label(s, "failed"), counter(s.failed_runs)),
                ]
            }),
        )?;
        family(
            &mut enc,
            "regsync_step_last_run_timestamp_seconds",
            "When the last completed run of a sync step ended (Unix time).",
            MetricType::Gauge,
            steps
                .iter()
                .filter_map(|s| Some((step_label(s), gauge(seconds(s.last_end?))))),
        )?;
        family(
            &mut enc,
            "regsync_step_last_success_timestamp_seconds",
            "When the last run of a sync step without an error ended (Unix time).",
            MetricType::Gauge,
            steps
                .iter()
                .filter_map(|s| Some((step_label(s), gauge(seconds(s.last_success?))))),
        )?;
        family(
            &mut enc,
            "regsync_step_next_run_timestamp_seconds",
            "When a sync step fires next (Unix time; server, once the schedules run).",
            MetricType::Gauge,
            steps
                .iter()
                .filter_map(|s| Some((step_label(s), gauge(seconds(s.next_run?))))),
        )?;
        family(
            &mut enc,
            "regsync_step_run_duration_seconds",
            "How long the completed runs of a sync step took.",
            MetricType::Histogram,
            steps
                .iter()
                .map(|s| (step_label(s), s.run_seconds.0.clone())),
        )?;
        family(
            &mut enc,
            "regsync_images",
            "Images a sync step handled, by result (the run in progress included).",
            MetricType::Counter,
            steps.iter().flat_map(|s| {
                let c = &s.counts;
                [
                    ("copied", c.images_copied),
                    ("matched", c.images_matched),
                    ("skipped", c.images_skipped),
                    ("failed", c.images_failed),
                ]
                .map(|(result, n)| (step_result_label(s, result), counter(n)))
            }),
        )?;
        family(
            &mut enc,
            "regsync_tags_pruned",
            "Target tags a sync step deleted because they are no longer selected (cleanupTags).",
            MetricType::Counter,
            steps
                .iter()
                .map(|s| (step_label(s), counter(s.counts.tags_pruned))),
        )?;
        let t = &st.totals;
        family(
            &mut enc,
            "regsync_blobs",
            "Blobs made present in a target, by how (copied, mounted, skipped: already there, \
             deduped: another image's copy of it was awaited).",
            MetricType::Counter,
            [
                ("copied", t.blobs_copied),
                ("mounted", t.blobs_mounted),
                ("skipped", t.blobs_skipped),
                ("deduped", t.blobs_deduped),
            ]
            .map(|(result, n)| (vec![("result", result.to_string())], counter(n))),
        )?;
        family(
            &mut enc,
            "regsync_copied_bytes",
            "Blob bytes written to targets.",
            MetricType::Counter,
            [(Labels::new(), counter(t.bytes_copied))],
        )?;
        family(
            &mut enc,
            "regsync_images_in_flight",
            "Images being synced now.",
            MetricType::Gauge,
            [(Labels::new(), gauge(st.images_in_flight as f64))],
        )?;
        let regs = &st.registries;
        family(
            &mut enc,
            "regsync_http_requests",
            "Registry HTTP requests sent (every retry and token fetch), by method, endpoint kind \
             and status (code=\"error\": no answer).",
            MetricType::Counter,
            regs.iter().flat_map(|r| {
                r.requests.iter().map(|(k, n)| {
                    (
                        vec![
                            ("registry", r.registry.clone()),
                            ("method", k.method.clone()),
                            ("kind", k.kind.as_str().to_string()),
                            ("code", k.code_label()),
                        ],
                        counter(*n),
                    )
                })
            }),
        )?;
        family(
            &mut enc,
            "regsync_http_request_duration_seconds",
            "Time from sending a registry request to its response headers (or its failure).",
            MetricType::Histogram,
            regs.iter().flat_map(|r| {
                r.durations.iter().map(|(kind, h)| {
                    (
                        vec![
                            ("registry", r.registry.clone()),
                            ("kind", kind.as_str().to_string()),
                        ],
                        h.clone(),
                    )
                })
            }),
        )?;
        family(
            &mut enc,
            "regsync_http_retries",
            "Registry requests sent again after a network error or a 408/429/5xx.",
            MetricType::Counter,
            regs.iter()
                .map(|r| (registry_label(&r.registry), counter(r.retries))),
        )?;
        family(
            &mut enc,
            "regsync_ratelimit_remaining",
            "The pull budget the registry reports (RateLimit-Remaining), while it reports one.",
            MetricType::Gauge,
            regs.iter().filter_map(|r| {
                Some((
                    registry_label(&r.registry),
                    gauge(r.rate_limit_remaining? as f64),
                ))
            }),
        )?;
        family(
            &mut enc,
            "regsync_ratelimit_waits",
            "Waits imposed by a registry's rate limit: each pause it asked for (429 / Retry-After) once, each image held back by ratelimit.min.",
            MetricType::Counter,
            regs.iter()
                .map(|r| (registry_label(&r.registry), counter(r.rate_limit_waits))),
        )?;
        family(
            &mut enc,
            "regsync_ratelimit_wait_seconds",
            "Time spent in those waits.",
            MetricType::Counter,
            regs.iter().map(|r| {
                (
                    registry_label(&r.registry),
                    ConstCounter::new(r.rate_limit_wait_seconds),
                )
            }),
        )?;
        family(
            &mut enc,
            "regsync_requests_in_flight",
            "Registry requests holding a slot now (a blob body being read or sent included).",
            MetricType::Gauge,
            regs.iter()
                .map(|r| (registry_label(&r.registry), gauge(r.in_flight as f64))),
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::report::CountSnapshot;
    use std::time::Duration;

    fn registry() -> crate::engine::host_stats::HostSnapshot {
        use crate::engine::host_stats::{RequestKey, REQUEST_SECONDS};
        use crate::registry::RequestKind;
        let mut h = Histogram::new(REQUEST_SECONDS);
        h.observe(0.002);
        h.observe(0.3);
        crate::engine::host_stats::HostSnapshot {
            registry: "r.example:5000".into(),
            requests: vec![
                (
                    RequestKey {
                        method: "HEAD".into(),
                        kind: RequestKind::Manifest,
                        code: Some(200),
                    },
                    2,
                ),
                (
                    RequestKey {
                        method: "GET".into(),
                        kind: RequestKind::Blob,
                        code: None,
                    },
                    1,
                ),
            ],
            durations: vec![(RequestKind::Manifest, h)],
            retries: 1,
            in_flight: 3,
            rate_limit_remaining: Some(9),
            rate_limit_waits: 1,
            rate_limit_wait_seconds: 1.5,
            ..Default::default()
        }
    }

    fn state() -> SchedulerState {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        SchedulerState {
            started: at,
            serving: true,
            initial_pass_done: true,
            totals: CountSnapshot {
                blobs_copied: 4,
                blobs_mounted: 1,
                bytes_copied: 1234,
                ..Default::default()
            },
            images_in_flight: 2,
            registries: vec![registry()],
            steps: vec![StepState {
                step: 0,
                def: std::sync::Arc::new(crate::config::SyncStep {
                    kind: "repository".into(),
                    source: "src.example:5000/a\"b".into(),
                    target: "dst.example/a".into(),
                    ..Default::default()
                }),
                runs: 3,
                failed_runs: 1,
                counts: CountSnapshot {
                    images_copied: 5,
                    images_matched: 7,
                    ..Default::default()
                },
                last_end: Some(at),
                last_success: Some(at - Duration::from_secs(60)),
                ..Default::default()
            }],
            shard: crate::shard::Shard { index: 2, count: 5 },
        }
    }

    #[test]
    fn exposition_names_labels_and_values() {
        let text = render(&state(), "1.2.3");
        for line in [
            "# TYPE regsync_build_info gauge",
            "regsync_build_info{version=\"1.2.3\"} 1.0",
            "# TYPE regsync_shard_info gauge",
            "regsync_shard_info{shard=\"2\",shards=\"5\"} 1.0",
            "# TYPE regsync_step_runs_total counter",
            "regsync_step_runs_total{step=\"0\",type=\"repository\",source=\"src.example:5000/a\\\"b\",target=\"dst.example/a\",result=\"ok\"} 2",
            "regsync_step_runs_total{step=\"0\",type=\"repository\",source=\"src.example:5000/a\\\"b\",target=\"dst.example/a\",result=\"failed\"} 1",
            "regsync_step_last_run_timestamp_seconds{step=\"0\",type=\"repository\",source=\"src.example:5000/a\\\"b\",target=\"dst.example/a\"} 1700000000.0",
            "regsync_step_last_success_timestamp_seconds{step=\"0\",type=\"repository\",source=\"src.example:5000/a\\\"b\",target=\"dst.example/a\"} 1699999940.0",
            "# TYPE regsync_step_next_run_timestamp_seconds gauge",
            "regsync_images_total{step=\"0\",type=\"repository\",source=\"src.example:5000/a\\\"b\",target=\"dst.example/a\",result=\"copied\"} 5",
            "regsync_images_total{step=\"0\",type=\"repository\",source=\"src.example:5000/a\\\"b\",target=\"dst.example/a\",result=\"matched\"} 7",
            "regsync_images_total{step=\"0\",type=\"repository\",source=\"src.example:5000/a\\\"b\",target=\"dst.example/a\",result=\"failed\"} 0",
            "regsync_blobs_total{result=\"copied\"} 4",
            "regsync_blobs_total{result=\"mounted\"} 1",
            "regsync_copied_bytes_total 1234",
            "regsync_images_in_flight 2.0",
            "# TYPE regsync_step_run_duration_seconds histogram",
            "regsync_step_run_duration_seconds_count{step=\"0\",type=\"repository\",source=\"src.example:5000/a\\\"b\",target=\"dst.example/a\"} 0",
            "# TYPE regsync_http_requests_total counter",
            "regsync_http_requests_total{registry=\"r.example:5000\",method=\"HEAD\",kind=\"manifest\",code=\"200\"} 2",
            "regsync_http_requests_total{registry=\"r.example:5000\",method=\"GET\",kind=\"blob\",code=\"error\"} 1",
            "# TYPE regsync_http_request_duration_seconds histogram",
            "regsync_http_request_duration_seconds_bucket{registry=\"r.example:5000\",kind=\"manifest\",le=\"0.005\"} 1",
            "regsync_http_request_duration_seconds_bucket{registry=\"r.example:5000\",kind=\"manifest\",le=\"+Inf\"} 2",
            "regsync_http_request_duration_seconds_count{registry=\"r.example:5000\",kind=\"manifest\"} 2",
            "regsync_http_retries_total{registry=\"r.example:5000\"} 1",
            "regsync_ratelimit_remaining{registry=\"r.example:5000\"} 9.0",
            "regsync_ratelimit_waits_total{registry=\"r.example:5000\"} 1",
            "regsync_ratelimit_wait_seconds_total{registry=\"r.example:5000\"} 1.5",
            "regsync_requests_in_flight{registry=\"r.example:5000\"} 3.0",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
        // No sample for a time that never happened.
        assert!(!text.contains("regsync_step_next_run_timestamp_seconds{"));
        // The same state renders the same text.
        assert_eq!(text, render(&state(), "1.2.3"));
    }
}
