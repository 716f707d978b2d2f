//! Scheduler: runs steps once (`once`, `check`) or on their schedules (`server`, spec §12) and
//! gathers their outcomes into reports.
//!
//! `server`: every step with a schedule (`schedule`, else `@every <interval>`) gets the initial
//! missing-only pass, then a timer loop of its own that fires it in copy mode. A firing while
//! the step's previous run is still going is skipped. Every step run ends with one `Step
//! summary` line and is added to the step's [`StepStats`]. The server stops when the run's
//! cancellation token fires (SIGINT/SIGTERM from `main`, or the first error with
//! `--abort-on-error`): timers stop, running steps see the cancellation (image copies are
//! dropped before their tag is pushed) and are waited for.

use super::messages::{GetSchedulerState, ListStep, Reload, ReloadSummary, RunSteps, Serve};
use super::report::{Counters, RunReport, SchedulerState, StepRunReport, StepState};
use super::tag_lister::TagLister;
use super::{CopyError, Mode, RunCtx, StepCtx};
use crate::cron::{self, Clock, Schedule};
use actix::{Actor, Addr, Context, Handler, MessageResult, ResponseFuture};
use futures::future::{join_all, BoxFuture};
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

type Stats = Arc<Mutex<Book>>;

pub struct Scheduler {
    run: Arc<RunCtx>,
    lister: Addr<TagLister>,
    stats: Stats,
    started: SystemTime,
    /// The running `server`, once [`Serve`] started it (what [`Reload`] changes).
    server: Option<Arc<Server>>,
}

impl Scheduler {
    pub fn new(run: Arc<RunCtx>, lister: Addr<TagLister>) -> Self {
        Scheduler {
            run,
            lister,
            stats: Stats::default(),
            started: SystemTime::now(),
            server: None,
        }
    }
}

/// The scheduler's bookkeeping of step runs: the one place `/metrics`, `/status` and
/// `/readyz` read from (through [`GetSchedulerState`]).
#[derive(Debug, Default)]
struct Book {
    steps: BTreeMap<usize, StepBook>,
    serving: bool,
    initial_pass_done: bool,
    /// Set once `server`'s schedules run: where "now" comes from for the next firings.
    firing: Option<Clock>,
}

#[derive(Debug, Default)]
struct StepBook {
    state: StepState,
    schedule: Option<Schedule>,
    /// The counters of the run in progress (read live, moved into `state.counts` at its end).
    running: Option<Arc<Counters>>,
}

/// Firings looked at to find a schedule's period (a weekday cron's longest gap is the weekend).
const PERIOD_FIRINGS: usize = 10;

/// The longest gap between the next [`PERIOD_FIRINGS`] firings of `schedule` after `now`.
fn period_of(
    schedule: &Schedule,
    now: chrono::DateTime<chrono::Utc>,
) -> Option<std::time::Duration> {
    let mut at = schedule.next(now)?;
    let mut longest = None;
    for _ in 0..PERIOD_FIRINGS {
        let Some(next) = schedule.next(at) else { break };
        let gap = (next - at).to_std().ok();
        longest = longest.max(gap);
        at = next;
    }
    longest
}

/// The step's last run as the state database remembers it (a restarted `server` shows it on
/// `/status` until the step runs again).
fn restore(state: &mut StepState, step: &StepCtx) {
    let key = step.state_key();
    let Some(r) = step.run.restored_runs.iter().find(|r| r.step == key) else {
        return;
    };
    let at = |secs: Option<i64>| {
        secs.and_then(|s| u64::try_from(s).ok())
            .map(|s| SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(s))
    };
    state.last_start = at(r.last_start);
    state.last_end = at(r.last_end);
    state.last_success = at(r.last_success);
    state.last_ok = r.result.as_deref().map(|x| x == "ok");
    if let (Some(a), Some(b)) = (state.last_start, state.last_end) {
        state.last_duration = b.duration_since(a).ok();
    }
}

/// A step run begins or ends: the state database keeps the times (`--state`; `check` runs
/// are not syncs and are not kept). Queued, never awaited under the book's lock.
fn persist(step: &StepCtx, mode: Mode, ended: Option<bool>) {
    let Some(state) = &step.run.state else {
        return;
    };
    if mode == Mode::Check {
        return;
    }
    let key = step.state_key();
    let mode = match mode {
        Mode::Copy => "copy",
        Mode::Missing => "missing",
        Mode::Check => "check",
    };
    let now = crate::state::now();
    state.send(step.run.log.clone(), move |db| match ended {
        None => db.run_started(&key, mode, now),
        Some(ok) => db.run_ended(&key, now, ok),
    });
}

fn lock(stats: &Stats) -> std::sync::MutexGuard<'_, Book> {
    stats.lock().unwrap_or_else(|e| e.into_inner())
}

impl Book {
    /// A step of the run about to start, with its schedule text and (in `server`) the parsed
    /// schedule.
    fn register(&mut self, step: &StepCtx, schedule: Option<String>, parsed: Option<Schedule>) {
        let s = &step.step;
        let period = parsed
            .as_ref()
            .and_then(|p| period_of(p, chrono::Utc::now()));
        // A step changed by a reload keeps its history (runs, counts, last success): its
        // counters stay monotonic and a stale mirror stays stale.
        if let Some(b) = self.steps.get_mut(&step.index) {
            b.state.kind = s.kind.clone();
            b.state.source = s.source.clone();
            b.state.target = s.target.clone();
            b.state.schedule = schedule;
            b.state.period = period;
            b.schedule = parsed;
            return;
        }
        let mut state = StepState {
            step: step.index,
            kind: s.kind.clone(),
            source: s.source.clone(),
            target: s.target.clone(),
            schedule,
            period,
            ..StepState::default()
        };
        restore(&mut state, step);
        self.steps.insert(
            step.index,
            StepBook {
                state,
                schedule: parsed,
                running: None,
            },
        );
    }

    fn begin(&mut self, step: &StepCtx) {
        let b = self.steps.entry(step.index).or_default();
        let now = SystemTime::now();
        b.state.running_since = Some(now);
        b.state.last_start = Some(now);
        b.running = Some(step.counters.clone());
    }

    fn end(&mut self, report: &StepRunReport) {
        // A step removed by a reload while it ran is not brought back by its last run.
        let Some(b) = self.steps.get_mut(&report.step) else {
            return;
        };
        // One lock: the run's counts leave `running` and enter the totals together, so a
        // scrape never sees them twice or not at all.
        b.running = None;
        b.state.record(report, SystemTime::now());
    }

    fn skipped(&mut self, index: usize) {
        self.steps.entry(index).or_default().state.skipped_firings += 1;
    }

    fn state(&self, run: &RunCtx, started: SystemTime) -> SchedulerState {
        let now = self.firing.as_ref().map(Clock::now);
        let steps = self
            .steps
            .values()
            .map(|b| {
                let mut st = b.state.clone();
                if let Some(c) = &b.running {
                    st.counts.add(&c.snapshot());
                }
                if let (Some(now), Some(schedule)) = (now, &b.schedule) {
                    st.next_run = schedule.next(now).map(SystemTime::from);
                }
                st
            })
            .collect();
        SchedulerState {
            started,
            serving: self.serving,
            initial_pass_done: self.initial_pass_done,
            totals: run.counters.snapshot(),
            images_in_flight: run.counters.images_in_flight(),
            steps,
            registries: run.throttle.stats().snapshot(),
            shard: run.shard,
        }
    }
}

impl Actor for Scheduler {
    type Context = Context<Self>;
}

impl Handler<RunSteps> for Scheduler {
    type Result = ResponseFuture<RunReport>;

    fn handle(&mut self, msg: RunSteps, _ctx: &mut Context<Self>) -> Self::Result {
        let run = self.run.clone();
        let lister = self.lister.clone();
        let stats = self.stats.clone();
        {
            let mut book = lock(&stats);
            for step in &msg.steps {
                let s = &step.step;
                book.register(step, cron::step_schedule(&s.schedule, &s.interval), None);
            }
        }
        Box::pin(async move {
            let started = std::time::Instant::now();
            let list = |step: Arc<StepCtx>| {
                let lister = lister.clone();
                let stats = stats.clone();
                let cancel = run.cancel.clone();
                async move {
                    // Cancelled while waiting for a slot: the step run never starts.
                    let slot = step_slot(&step.run, &cancel).await?;
                    lock(&stats).begin(&step);
                    persist(&step, msg.mode, None);
                    let step_started = std::time::Instant::now();
                    let errors = match lister
                        .send(ListStep {
                            step: step.clone(),
                            mode: msg.mode,
                            slot,
                        })
                        .await
                    {
                        Ok(r) => r.errors,
                        Err(e) => vec![format!("internal error: tag lister: {e}")],
                    };
                    let cancelled = cancel.is_cancelled();
                    let report = StepRunReport {
                        step: step.index,
                        mode: msg.mode,
                        errors: errors
                            .iter()
                            .filter(|e| !(cancelled && is_cancellation(e)))
                            .cloned()
                            .collect(),
                        counts: step.counters.snapshot(),
                        duration: step_started.elapsed(),
                    };
                    lock(&stats).end(&report);
                    persist(&step, msg.mode, Some(report.errors.is_empty()));
                    Some((errors, report))
                }
            };
            let mut errors = Vec::new();
            let mut steps = Vec::new();
            // Steps run in file order when `parallel` ≤ 0 and always for `check` (spec §13).
            if run.parallel.sequential_steps || msg.mode == Mode::Check {
                for step in msg.steps {
                    if run.cancel.is_cancelled() {
                        break;
                    }
                    if let Some((e, report)) = list(step).await {
                        errors.extend(e);
                        steps.push(report);
                    }
                }
            } else {
                for (e, report) in join_all(msg.steps.into_iter().map(list))
                    .await
                    .into_iter()
                    .flatten()
                {
                    errors.extend(e);
                    steps.push(report);
                }
            }
            // After a signal (or `--abort-on-error`) the copies it stopped are not errors of
            // their own; the caller says why the run ended.
            if run.cancel.is_cancelled() {
                errors.retain(|e| !is_cancellation(e));
            }
            lock(&stats).initial_pass_done = true;
            let counts = run.counters.snapshot();
            counts.log(&run.log, started.elapsed().as_secs_f64(), run.shard);
            RunReport {
                errors,
                counts,
                steps,
            }
        })
    }
}

impl Handler<Serve> for Scheduler {
    type Result = ResponseFuture<RunReport>;

    fn handle(&mut self, msg: Serve, _ctx: &mut Context<Self>) -> Self::Result {
        let server = Arc::new(Server {
            run: self.run.clone(),
            lister: self.lister.clone(),
            stats: self.stats.clone(),
            errors: Mutex::default(),
            loops: Mutex::default(),
        });
        self.server = Some(server.clone());
        Box::pin(server.serve(msg.steps, msg.clock))
    }
}

impl Handler<Reload> for Scheduler {
    type Result = MessageResult<Reload>;

    fn handle(&mut self, msg: Reload, _ctx: &mut Context<Self>) -> Self::Result {
        MessageResult(match &self.server {
            Some(server) => Ok(server.reload(msg.steps)),
            None => Err("no server is running".into()),
        })
    }
}

impl Handler<GetSchedulerState> for Scheduler {
    type Result = MessageResult<GetSchedulerState>;

    fn handle(&mut self, _msg: GetSchedulerState, _ctx: &mut Context<Self>) -> Self::Result {
        MessageResult(lock(&self.stats).state(&self.run, self.started))
    }
}

/// One `server` lifetime.
struct Server {
    run: Arc<RunCtx>,
    lister: Addr<TagLister>,
    stats: Stats,
    /// The errors of each step's last run, and counts (decide the exit status).
    errors: Mutex<ServerErrors>,
    /// The steps in force and their fire loops.
    loops: Mutex<Loops>,
}

/// The steps of the config in force (the start-up one, then each reload's), by index, and
/// once the schedules run, each step's fire loop.
#[derive(Default)]
struct Loops {
    steps: BTreeMap<usize, Arc<StepCtx>>,
    /// Set when the initial pass has ended: steps registered from then on start firing at
    /// once.
    firing: Option<Clock>,
    /// Stops a step's loop (a child of the run's cancellation): it fires no more, and its
    /// run in progress finishes.
    stops: BTreeMap<usize, CancellationToken>,
    /// Every loop started, stopped ones included: the server waits for all of them.
    handles: Vec<JoinHandle<()>>,
}

/// Error lines of one step run kept for the final report; the rest are counted.
const KEPT_ERRORS_PER_STEP: usize = 100;

/// What `server` remembers of its errors: the lines of each step's last run (bounded) and
/// how many there were before, so that a server running for months keeps a bounded list and
/// its exit status still says whether anything failed.
#[derive(Debug, Default)]
struct ServerErrors {
    /// Errors that are not a step run's (a schedule that does not parse), at most one per step.
    setup: BTreeMap<usize, String>,
    /// By step index: the last run's lines (bounded) and how many that run had.
    last: BTreeMap<usize, (Vec<String>, u64)>,
    /// By step index: error lines of the runs before the last one.
    earlier: BTreeMap<usize, u64>,
}

impl ServerErrors {
    fn setup(&mut self, step: usize, line: String) {
        self.setup.insert(step, line);
    }

    /// A step removed or changed by a reload: its errors no longer decide the exit status.
    fn forget(&mut self, step: usize) {
        self.setup.remove(&step);
        self.last.remove(&step);
        self.earlier.remove(&step);
    }

    /// Step `step` finished a run with `errors`; it replaces the step's previous run.
    fn run(&mut self, step: usize, mut errors: Vec<String>) {
        let count = errors.len() as u64;
        dedup_keep_order(&mut errors);
        errors.truncate(KEPT_ERRORS_PER_STEP);
        if let Some((_, before)) = self.last.insert(step, (errors, count)) {
            *self.earlier.entry(step).or_default() += before;
        }
    }

    /// The report's lines: setup errors, each step's last run, and one line per step that
    /// failed only in earlier runs or had more lines than were kept.
    fn lines(&self) -> Vec<String> {
        let mut out: Vec<String> = self.setup.values().cloned().collect();
        for (step, (lines, count)) in &self.last {
            out.extend(lines.iter().cloned());
            let hidden = count.saturating_sub(lines.len() as u64);
            let earlier = self.earlier.get(step).copied().unwrap_or(0);
            if hidden > 0 {
                out.push(format!(
                    "sync[{step}]: {hidden} more error(s) in its last run"
                ));
            }
            if earlier > 0 {
                out.push(format!(
                    "sync[{step}]: {earlier} error(s) in earlier runs of this server"
                ));
            }
        }
        dedup_keep_order(&mut out);
        out
    }
}

impl Server {
    fn log(&self) -> &slog::Logger {
        &self.run.log
    }

    fn errors(&self) -> std::sync::MutexGuard<'_, ServerErrors> {
        self.errors.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A run of the step `def` at `index` ended with `errors`: they decide the exit status
    /// only while that step is still the one in force (a reload may have removed or changed
    /// it while it ran).
    fn record_run(&self, def: &crate::config::SyncStep, index: usize, errors: Vec<String>) {
        let in_force = self
            .loops()
            .steps
            .get(&index)
            .is_some_and(|s| &s.step == def);
        if in_force {
            self.errors().run(index, errors);
        }
    }

    fn loops(&self) -> std::sync::MutexGuard<'_, Loops> {
        self.loops.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The schedule of `step`: `Ok(None)` when it has none (logged, the step never fires),
    /// `Err` when it does not parse or never fires (logged and kept as an error line).
    fn schedule_of(&self, step: &StepCtx) -> Result<Option<Schedule>, ()> {
        let s = &step.step;
        let Some(sched) = cron::step_schedule(&s.schedule, &s.interval) else {
            slog::error!(self.log(), "No schedule or interval found, ignoring";
                "source" => &s.source, "target" => &s.target, "type" => &s.kind);
            return Ok(None);
        };
        slog::debug!(self.log(), "Scheduled task";
            "source" => &s.source, "target" => &s.target, "type" => &s.kind,
            "sched" => &sched);
        // A spec that parses but never fires (`0 0 30 2 *`) is an error too, not a step
        // that silently never runs.
        let parsed =
            cron::parse(&sched).and_then(|schedule| match schedule.next(chrono::Utc::now()) {
                Some(_) => Ok(schedule),
                None => Err(cron::CronError("the schedule never fires".into())),
            });
        parsed.map(Some).map_err(|e| {
            slog::error!(self.log(), "Failed to schedule cron";
                "source" => &s.source, "target" => &s.target, "sched" => &sched,
                "err" => %e);
            self.errors().setup(
                step.index,
                format!(
                    "{} source {:?} target {:?}: failed to schedule cron {sched:?}: {e}",
                    step.name(),
                    s.source,
                    s.target
                ),
            );
        })
    }

    /// Tells `/status` about `step` (a new one, or a changed one keeping its history).
    fn register(&self, step: &StepCtx) {
        let s = &step.step;
        let text = cron::step_schedule(&s.schedule, &s.interval);
        let parsed = text.as_deref().and_then(|t| cron::parse(t).ok());
        lock(&self.stats).register(step, text, parsed);
    }

    /// Starts the fire loop of `step` (the loops table is locked by the caller).
    fn start_loop(self: &Arc<Self>, loops: &mut Loops, step: Arc<StepCtx>, schedule: Schedule) {
        let Some(clock) = loops.firing.clone() else {
            return;
        };
        let stop = self.run.cancel.child_token();
        loops.stops.insert(step.index, stop.clone());
        // Every firing is a run of its own (see `step_loop`).
        let step = Arc::new(step.new_run());
        loops.handles.push(tokio::spawn(
            self.clone().step_loop(step, schedule, clock, stop),
        ));
    }

    async fn serve(self: Arc<Self>, steps: Vec<Arc<StepCtx>>, clock: Clock) -> RunReport {
        let run = self.run.clone();
        let started = std::time::Instant::now();
        let sequential = run.parallel.sequential_steps;
        let mut initial: Vec<BoxFuture<'static, ()>> = Vec::new();
        lock(&self.stats).serving = true;
        // Every step is known to `/status` from the start, with or without a schedule.
        for step in &steps {
            self.register(step);
            self.loops().steps.insert(step.index, step.clone());
        }
        for step in steps {
            if run.cancel.is_cancelled() {
                break;
            }
            match self.schedule_of(&step) {
                // Without a schedule a step never runs, not even in the initial pass.
                Ok(None) => continue,
                Err(()) if run.abort_on_error => {
                    run.cancel.cancel();
                    break;
                }
                // regsync still gives a step whose schedule is invalid its initial pass
                // (spec §16 quirk 7).
                Ok(Some(_)) | Err(()) => {}
            }
            let me = self.clone();
            let pass = async move {
                let (index, step_def) = (step.index, step.step.clone());
                let stop = me.run.cancel.clone();
                if let Some(errors) = me.run_step(step, Mode::Missing, &stop).await {
                    me.record_run(&step_def, index, errors);
                }
            };
            if sequential {
                pass.await;
            } else {
                initial.push(Box::pin(pass));
            }
        }
        join_all(initial).await;
        lock(&self.stats).initial_pass_done = true;
        if !run.cancel.is_cancelled() {
            lock(&self.stats).firing = Some(clock.clone());
            // Only now: a long initial pass delays every schedule. The steps are those in
            // force now (a reload during the initial pass counts).
            {
                let mut loops = self.loops();
                loops.firing = Some(clock.clone());
                let steps: Vec<Arc<StepCtx>> = loops.steps.values().cloned().collect();
                for step in steps {
                    let s = &step.step;
                    let schedule = cron::step_schedule(&s.schedule, &s.interval)
                        .and_then(|t| cron::parse(&t).ok())
                        .filter(|p| p.next(chrono::Utc::now()).is_some());
                    if let Some(schedule) = schedule {
                        self.start_loop(&mut loops, step, schedule);
                    }
                }
            }
            run.cancel.cancelled().await;
            slog::info!(self.log(), "Stopping server");
            slog::debug!(self.log(), "Waiting on running tasks");
            let handles = std::mem::take(&mut self.loops().handles);
            join_all(handles).await;
        }
        // The whole lifetime, like the one line that closes `once`.
        let counts = run.counters.snapshot();
        counts.log(&run.log, started.elapsed().as_secs_f64(), run.shard);
        let errors = self.errors().lines();
        RunReport {
            errors,
            counts,
            steps: Vec::new(),
        }
    }

    /// SIGHUP: `steps` replace the steps in force (see [`Reload`]).
    fn reload(self: &Arc<Self>, steps: Vec<Arc<StepCtx>>) -> ReloadSummary {
        let mut sum = ReloadSummary::default();
        let mut loops = self.loops();
        let old = std::mem::take(&mut loops.steps);
        let kept: std::collections::BTreeSet<usize> = steps.iter().map(|s| s.index).collect();
        for index in old.keys().filter(|i| !kept.contains(i)) {
            sum.removed += 1;
            if let Some(stop) = loops.stops.remove(index) {
                stop.cancel();
            }
            lock(&self.stats).steps.remove(index);
            self.errors().forget(*index);
        }
        for step in steps {
            match old.get(&step.index) {
                Some(was) if was.step == step.step => {
                    sum.unchanged += 1;
                    loops.steps.insert(step.index, was.clone());
                    continue;
                }
                Some(_) => {
                    sum.changed += 1;
                    if let Some(stop) = loops.stops.remove(&step.index) {
                        stop.cancel();
                    }
                    self.errors().forget(step.index);
                }
                None => sum.added += 1,
            }
            self.register(&step);
            loops.steps.insert(step.index, step.clone());
            if let Ok(Some(schedule)) = self.schedule_of(&step) {
                self.start_loop(&mut loops, step, schedule);
            }
        }
        sum
    }

    /// Fires `step` on `schedule` until the server stops.
    async fn step_loop(
        self: Arc<Self>,
        step: Arc<StepCtx>,
        schedule: Schedule,
        clock: Clock,
        stop: CancellationToken,
    ) {
        let s = &step.step;
        let (source, target, kind) = (s.source.clone(), s.target.clone(), s.kind.clone());
        let log = self.run.log.clone();
        let stats = self.stats.clone();
        let index = step.index;
        fire_loop(
            &schedule,
            &clock,
            &stop,
            || {
                slog::debug!(log, "Running task";
                    "source" => &source, "target" => &target, "type" => &kind);
                let me = self.clone();
                // A run of its own: nothing an earlier firing saw land is trusted.
                let step = Arc::new(step.new_run());
                let stop = stop.clone();
                async move {
                    let step_def = step.step.clone();
                    if let Some(errors) = me.run_step(step, Mode::Copy, &stop).await {
                        me.record_run(&step_def, index, errors);
                    }
                }
            },
            || {
                slog::debug!(log, "Skipping task, previous run still running";
                    "source" => &source, "target" => &target, "type" => &kind);
                lock(&stats).skipped(index);
            },
        )
        .await;
    }

    /// One run of one step: its errors (cancellations left out), a `Step summary` line and
    /// the step's statistics. `None`: `stop` (the server's end, or a reload that removed or
    /// changed the step) came while the run waited for a step slot, and it never started.
    async fn run_step(
        &self,
        step: Arc<StepCtx>,
        mode: Mode,
        stop: &CancellationToken,
    ) -> Option<Vec<String>> {
        let slot = step_slot(&self.run, stop).await?;
        lock(&self.stats).begin(&step);
        persist(&step, mode, None);
        let started = tokio::time::Instant::now();
        let errors = match self
            .lister
            .send(ListStep {
                step: step.clone(),
                mode,
                slot,
            })
            .await
        {
            Ok(r) => r.errors,
            Err(e) => vec![format!("internal error: tag lister: {e}")],
        };
        let cancelled = self.run.cancel.is_cancelled();
        let errors: Vec<String> = errors
            .into_iter()
            .filter(|e| !(cancelled && is_cancellation(e)))
            .collect();
        let report = StepRunReport {
            step: step.index,
            mode,
            errors,
            counts: step.counters.snapshot(),
            duration: started.elapsed(),
        };
        report.log(self.log(), &step);
        lock(&self.stats).end(&report);
        persist(&step, mode, Some(report.errors.is_empty()));
        Some(report.errors)
    }
}

/// One of the run's step slots ([`RunCtx::step_slots`]), handed to the tag lister with the
/// step run; `None` once `stop` is cancelled while waiting.
async fn step_slot(
    run: &RunCtx,
    stop: &CancellationToken,
) -> Option<tokio::sync::OwnedSemaphorePermit> {
    tokio::select! {
        biased;
        _ = stop.cancelled() => None,
        slot = run.step_slots.clone().acquire_owned() => slot.ok(),
    }
}

/// An error line that only says the work was cancelled (`... : task was canceled`).
fn is_cancellation(line: &str) -> bool {
    line.ends_with(&CopyError::Canceled.to_string())
}

/// A step failing on every firing repeats the same line; keep each once, in first-seen order.
fn dedup_keep_order(lines: &mut Vec<String>) {
    let mut seen = std::collections::HashSet::new();
    lines.retain(|l| seen.insert(l.clone()));
}

/// Longest single timer of [`fire_loop`].
const MAX_SLEEP: std::time::Duration = std::time::Duration::from_secs(60);

/// Starts `job` at every firing of `schedule` until `cancel` fires; a firing while the
/// previous job is still running calls `skipped` instead. Returns once the last started job
/// has finished. Time comes from `clock` and waits use tokio's timer (paused time in tests).
pub(crate) async fn fire_loop<J, F>(
    schedule: &Schedule,
    clock: &Clock,
    cancel: &CancellationToken,
    mut job: J,
    mut skipped: impl FnMut(),
) where
    J: FnMut() -> F,
    F: Future<Output = ()> + Send + 'static,
{
    let mut running: Option<JoinHandle<()>> = None;
    let mut now = clock.now();
    'firings: while let Some(next) = schedule.next(now) {
        // Sleep in bounded slices and re-read the clock: a wall clock that jumps is noticed,
        // and no timer outlives tokio's maximum (a Feb 29 schedule sleeps for years).
        loop {
            let wait = (next - clock.now()).to_std().unwrap_or_default();
            if wait.is_zero() {
                break;
            }
            tokio::select! {
                _ = tokio::time::sleep(wait.min(MAX_SLEEP)) => {}
                _ = cancel.cancelled() => break 'firings,
            }
        }
        if cancel.is_cancelled() {
            break;
        }
        // Never earlier than the firing itself, so a cron firing cannot repeat its second.
        now = clock.now().max(next);
        if running.as_ref().is_some_and(|h| !h.is_finished()) {
            skipped();
            continue;
        }
        running = Some(tokio::spawn(job()));
    }
    if let Some(h) = running {
        let _ = h.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, Utc};
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    /// Runs a fire loop with jobs that take `job_secs`, cancels it after `stop_after`, and
    /// returns (started jobs' virtual start seconds, skipped count, seconds until it returned).
    async fn drive(
        spec: &str,
        start: &str,
        job_secs: u64,
        stop_after: f64,
    ) -> (Vec<f64>, u32, f64) {
        let schedule = cron::parse(spec).unwrap();
        let clock = Clock::anchored(utc(start));
        let cancel = CancellationToken::new();
        let t0 = tokio::time::Instant::now();
        let starts = Arc::new(Mutex::new(Vec::new()));
        let skips = AtomicU32::new(0);
        let c2 = cancel.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs_f64(stop_after)).await;
            c2.cancel();
        });
        let s2 = starts.clone();
        fire_loop(
            &schedule,
            &clock,
            &cancel,
            || {
                s2.lock().unwrap().push(t0.elapsed().as_secs_f64());
                tokio::time::sleep(Duration::from_secs(job_secs))
            },
            || {
                skips.fetch_add(1, Ordering::Relaxed);
            },
        )
        .await;
        let v = starts.lock().unwrap().clone();
        (v, skips.load(Ordering::Relaxed), t0.elapsed().as_secs_f64())
    }

    fn round(v: &[f64]) -> Vec<f64> {
        v.iter().map(|x| (x * 1000.0).round() / 1000.0).collect()
    }

    #[tokio::test(start_paused = true)]
    async fn every_fires_on_whole_seconds_after_start() {
        // Started at .870: the first firing is at the next whole second, then every second.
        let (starts, skips, ended) = drive("@every 1s", "2024-01-01T00:00:00.870Z", 0, 3.5).await;
        assert_eq!(round(&starts), [0.13, 1.13, 2.13, 3.13]);
        assert_eq!(skips, 0);
        assert_eq!((ended * 1000.0).round() / 1000.0, 3.5);
    }

    #[tokio::test(start_paused = true)]
    async fn busy_step_skips_firings_and_stop_waits_for_the_running_job() {
        // Every 2 s, each run takes 3 s: 2 runs, 4 skipped, 6 runs, 8 skipped, 10 runs.
        let (starts, skips, ended) = drive("@every 2s", "2024-01-01T00:00:00Z", 3, 10.5).await;
        assert_eq!(round(&starts), [2.0, 6.0, 10.0]);
        assert_eq!(skips, 2);
        // Cancelled at 10.5, returned when the run started at 10 finished.
        assert_eq!((ended * 1000.0).round() / 1000.0, 13.0);
    }

    #[tokio::test(start_paused = true)]
    async fn cron_fires_at_matching_minutes() {
        let (starts, skips, _) =
            drive("TZ=UTC */2 * * * *", "2024-01-01T00:00:30Z", 0, 300.0).await;
        // 00:02, 00:04 (and 00:00:30 + 90 s, 210 s, 330 s would be past the stop)
        assert_eq!(round(&starts), [90.0, 210.0]);
        assert_eq!(skips, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn cancel_before_first_firing_runs_nothing() {
        let (starts, _, ended) = drive("@hourly", "2024-01-01T00:00:00Z", 0, 5.0).await;
        assert!(starts.is_empty());
        assert_eq!(ended.round(), 5.0);
    }

    #[tokio::test(start_paused = true)]
    async fn long_waits_are_sliced_and_still_fire_on_time() {
        let (starts, _, _) = drive("TZ=UTC @hourly", "2024-01-01T00:00:00Z", 0, 7300.0).await;
        assert_eq!(round(&starts), [3600.0, 7200.0]);
        let (starts, _, ended) =
            drive("TZ=UTC 0 0 29 2 *", "2025-03-01T00:00:00Z", 0, 7200.0).await;
        assert!(starts.is_empty());
        assert_eq!(ended.round(), 7200.0);
    }

    #[test]
    fn server_errors_keep_the_last_run_of_each_step_and_count_the_rest() {
        let mut e = ServerErrors::default();
        e.setup(1, "sync[1] bad cron".into());
        // A thousand failing firings of step 0, each with 150 distinct lines.
        for run in 0..1000 {
            let lines = (0..150)
                .map(|i| format!("sync[0] run {run} image {i}"))
                .collect();
            e.run(0, lines);
        }
        let lines = e.lines();
        assert!(lines.len() <= KEPT_ERRORS_PER_STEP + 3, "{}", lines.len());
        assert_eq!(lines[0], "sync[1] bad cron");
        assert_eq!(lines[1], "sync[0] run 999 image 0");
        assert!(!lines.iter().any(|l| l.contains("run 998")));
        assert!(lines.contains(&"sync[0]: 50 more error(s) in its last run".to_string()));
        assert!(
            lines.contains(&"sync[0]: 149850 error(s) in earlier runs of this server".to_string())
        );
        // A clean last run: its lines are gone, the exit status still sees the earlier ones.
        e.run(0, Vec::new());
        assert_eq!(
            e.lines(),
            [
                "sync[1] bad cron",
                "sync[0]: 150000 error(s) in earlier runs of this server"
            ]
        );
        // A server that never failed reports nothing.
        let mut clean = ServerErrors::default();
        clean.run(0, Vec::new());
        clean.run(0, Vec::new());
        assert!(clean.lines().is_empty());
    }

    #[test]
    fn a_schedule_period_is_its_longest_gap() {
        let at = utc("2024-01-03T12:00:00Z"); // a Wednesday
        let p = |spec: &str| period_of(&cron::parse(spec).unwrap(), at).map(|d| d.as_secs());
        assert_eq!(p("@every 90s"), Some(90));
        assert_eq!(p("TZ=UTC */15 * * * *"), Some(15 * 60));
        // Weekdays at 09:00: the weekend gap, not a day.
        assert_eq!(p("TZ=UTC 0 9 * * 1-5"), Some(3 * 24 * 3600));
        assert_eq!(p("0 0 30 2 *"), None);
    }

    #[test]
    fn cancellation_lines_and_dedup() {
        assert!(is_cancellation("sync[0] a:1 -> b:1: task was canceled"));
        assert!(!is_cancellation("sync[0] a:1 -> b:1: not found"));
        let mut v = vec![
            "a".to_string(),
            "b".into(),
            "a".into(),
            "c".into(),
            "b".into(),
        ];
        dedup_keep_order(&mut v);
        assert_eq!(v, ["a", "b", "c"]);
    }
}
