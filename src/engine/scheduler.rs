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
use futures::StreamExt;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

type Stats = Arc<Mutex<Book>>;

/// A step for as long as it is in force, whatever its position in the file: what the book, a
/// server's errors and its fire loops know the step by. A reload that finds a step again (by
/// what it copies, see [`pair_steps`]) keeps its id, so its history and its loop stay with it
/// and only its position ([`StepState::step`], [`StepCtx::index`]) changes. `once` and
/// `check` use the position: nothing moves during their one run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct StepId(usize);

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
    /// By id; `/status` lists them by position.
    /// Boxed: a B-tree node holds eleven entries, and a half-full node of 500-byte books
    /// cost ~1 KB a step in a config of one step per repository.
    steps: BTreeMap<StepId, Box<StepBook>>,
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
    fn register(
        &mut self,
        id: StepId,
        step: &StepCtx,
        schedule: Option<String>,
        parsed: Option<Schedule>,
    ) {
        let s = &step.step;
        let period = parsed
            .as_ref()
            .and_then(|p| period_of(p, chrono::Utc::now()));
        // A step changed by a reload keeps its history (runs, counts, last success): its
        // counters stay monotonic and a stale mirror stays stale.
        if self.steps.contains_key(&id) {
            self.moved(id, step.index);
        }
        if let Some(b) = self.steps.get_mut(&id) {
            b.state.def = s.clone();
            b.state.schedule = schedule;
            b.state.period = period;
            b.schedule = parsed;
            return;
        }
        let mut state = StepState {
            step: step.index,
            def: s.clone(),
            schedule,
            period,
            ..StepState::default()
        };
        restore(&mut state, step);
        self.steps.insert(
            id,
            Box::new(StepBook {
                state,
                schedule: parsed,
                running: None,
            }),
        );
    }

    /// A step kept by a reload is at `index` in the new file.
    fn moved(&mut self, id: StepId, index: usize) {
        if let Some(b) = self.steps.get_mut(&id) {
            let from = std::mem::replace(&mut b.state.step, index);
            if let Some(line) = &mut b.state.last_error {
                renumber(line, from, index);
            }
        }
    }

    fn begin(&mut self, id: StepId, step: &StepCtx) {
        // A step removed by a reload just before its run began is not brought back by it.
        let Some(b) = self.steps.get_mut(&id) else {
            return;
        };
        let now = SystemTime::now();
        b.state.running_since = Some(now);
        b.state.last_start = Some(now);
        b.running = Some(step.counters.clone());
    }

    fn end(&mut self, id: StepId, report: &StepRunReport) {
        // A step removed by a reload while it ran is not brought back by its last run.
        let Some(b) = self.steps.get_mut(&id) else {
            return;
        };
        // One lock: the run's counts leave `running` and enter the totals together, so a
        // scrape never sees them twice or not at all.
        b.running = None;
        b.state.record(report, SystemTime::now());
    }

    fn skipped(&mut self, id: StepId) {
        if let Some(b) = self.steps.get_mut(&id) {
            b.state.skipped_firings += 1;
        }
    }

    fn state(&self, run: &RunCtx, started: SystemTime) -> SchedulerState {
        let now = self.firing.as_ref().map(Clock::now);
        let mut steps: Vec<StepState> = self
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
        steps.sort_by_key(|st| st.step);
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
                let schedule = cron::step_schedule(&s.schedule, &s.interval);
                book.register(StepId(step.index), step, schedule, None);
            }
        }
        Box::pin(async move {
            let started = std::time::Instant::now();
            // A step's run, once it has its slot.
            let list = |step: Arc<StepCtx>, slot: tokio::sync::OwnedSemaphorePermit| {
                let lister = lister.clone();
                let stats = stats.clone();
                let cancel = run.cancel.clone();
                async move {
                    let id = StepId(step.index);
                    lock(&stats).begin(id, &step);
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
                    lock(&stats).end(id, &report);
                    persist(&step, msg.mode, Some(report.errors.is_empty()));
                    (errors, report)
                }
            };
            let mut errors = Vec::new();
            let mut steps = Vec::new();
            // Steps run in file order when `parallel` ≤ 0 and always for `check` (spec §13).
            if run.parallel.sequential_steps || msg.mode == Mode::Check {
                for step in msg.steps {
                    // Cancelled while waiting for a slot: the step run never starts.
                    let Some(slot) = step_slot(&run, &run.cancel).await else {
                        break;
                    };
                    let (e, report) = list(step, slot).await;
                    errors.extend(e);
                    steps.push(report);
                }
            } else {
                // A step's run (its future) is made only once it has its slot: with one step
                // per repository, thousands of waiting futures were most of the memory that
                // grew with the catalog. The slot is taken in file order; the runs it starts
                // go on alongside (`buffer_unordered` without a bound of its own).
                let mut done: Vec<_> = futures::stream::iter(msg.steps)
                    .then(|step| {
                        let run = run.clone();
                        async move { step_slot(&run, &run.cancel).await.map(|slot| (step, slot)) }
                    })
                    .take_while(|started| std::future::ready(started.is_some()))
                    .filter_map(std::future::ready)
                    .map(|(step, slot)| list(step, slot))
                    .buffer_unordered(usize::MAX)
                    .collect()
                    .await;
                // Reported, and their errors listed, in file order.
                done.sort_by_key(|(_, report)| report.step);
                for (e, report) in done {
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
            running: Mutex::default(),
        });
        // In force before the handler returns: a reload handled next finds them.
        let steps = server.adopt(msg.steps);
        self.server = Some(server.clone());
        Box::pin(server.serve(steps, msg.clock))
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
    /// Steps with a scheduled run in progress. A fire loop skips its own firings while its
    /// previous run goes on; this also covers the loop a reload starts for a changed step
    /// (same id) while the old definition's run still goes on: two runs of one target at
    /// once would interleave their copies and their pruning.
    running: Mutex<std::collections::BTreeSet<StepId>>,
}

/// A scheduled run of a step in progress ([`Server::claim_run`]); dropping it ends the claim.
struct RunClaim<'a> {
    server: &'a Server,
    id: StepId,
}

impl Drop for RunClaim<'_> {
    fn drop(&mut self) {
        self.server
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.id);
    }
}

/// The steps of the config in force (the start-up one, then each reload's), by id, and once
/// the schedules run, each step's fire loop.
#[derive(Default)]
struct Loops {
    /// Each step as in force now: its context carries its current position.
    steps: BTreeMap<StepId, Arc<StepCtx>>,
    /// The id the next new step gets (ids are never reused).
    next_id: usize,
    /// Set when the initial pass has ended: steps registered from then on start firing at
    /// once.
    firing: Option<Clock>,
    /// Stops a step's loop (a child of the run's cancellation): it fires no more, and its
    /// run in progress finishes.
    stops: BTreeMap<StepId, CancellationToken>,
    /// Every loop started, stopped ones included: the server waits for all of them.
    handles: Vec<JoinHandle<()>>,
}

impl Loops {
    fn new_id(&mut self) -> StepId {
        self.next_id += 1;
        StepId(self.next_id - 1)
    }

    /// The steps in force and their positions, in file order.
    fn positions(&self) -> Vec<(StepId, usize)> {
        let mut at: Vec<(StepId, usize)> =
            self.steps.iter().map(|(id, s)| (*id, s.index)).collect();
        at.sort_by_key(|&(_, index)| index);
        at
    }
}

/// How a reload pairs a step of the new file with one in force ([`pair_steps`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pairing {
    /// The same definition: it keeps its id, history, schedule and loop.
    Unchanged(StepId),
    /// The same type, source and target, another definition: it keeps its id and history,
    /// and starts on its (new) schedule.
    Changed(StepId),
    /// Nothing in force copies the same: a new step.
    Added,
}

/// Pairs each step of `new` with one of `old` (the steps in force, in file order) by what it
/// copies, the state database's key (`'<type> <source> -> <target>'`), whatever the positions:
/// first the identical definitions, then the remaining steps with the same key. Steps sharing
/// a key are taken in file order, so the same two files always pair the same way. Returns the
/// pairing of each new step, and the steps of `old` left over (removed).
fn pair_steps(
    old: &[(StepId, &crate::config::SyncStep)],
    new: &[&crate::config::SyncStep],
) -> (Vec<Pairing>, Vec<StepId>) {
    use std::collections::HashMap;
    let key = |s: &crate::config::SyncStep| crate::state::step_key(&s.kind, &s.source, &s.target);
    // Positions in `old` by key, in file order; an entry is taken once it is paired.
    let mut by_key: HashMap<String, Vec<Option<usize>>> = HashMap::new();
    for (at, (_, s)) in old.iter().enumerate() {
        by_key.entry(key(s)).or_default().push(Some(at));
    }
    let mut pairs = vec![Pairing::Added; new.len()];
    for (pair, s) in pairs.iter_mut().zip(new) {
        let Some(candidates) = by_key.get_mut(&key(s)) else {
            continue;
        };
        let same = candidates
            .iter_mut()
            .find(|c| c.is_some_and(|at| old[at].1 == *s))
            .and_then(Option::take);
        if let Some(at) = same {
            *pair = Pairing::Unchanged(old[at].0);
        }
    }
    for (pair, s) in pairs.iter_mut().zip(new) {
        if *pair != Pairing::Added {
            continue;
        }
        let taken = by_key
            .get_mut(&key(s))
            .and_then(|candidates| candidates.iter_mut().find_map(Option::take));
        if let Some(at) = taken {
            *pair = Pairing::Changed(old[at].0);
        }
    }
    let paired: std::collections::BTreeSet<StepId> = pairs
        .iter()
        .filter_map(|p| match p {
            Pairing::Unchanged(id) | Pairing::Changed(id) => Some(*id),
            Pairing::Added => None,
        })
        .collect();
    let removed = old
        .iter()
        .map(|(id, _)| *id)
        .filter(|id| !paired.contains(id))
        .collect();
    (pairs, removed)
}

/// Error lines of one step run kept for the final report; the rest are counted.
const KEPT_ERRORS_PER_STEP: usize = 100;

/// What `server` remembers of its errors: the lines of each step's last run (bounded) and
/// how many there were before, so that a server running for months keeps a bounded list and
/// its exit status still says whether anything failed.
#[derive(Debug, Default)]
struct ServerErrors {
    /// Errors that are not a step run's (a schedule that does not parse), at most one per step.
    setup: BTreeMap<StepId, String>,
    /// By step: the last run's lines (bounded) and how many that run had.
    last: BTreeMap<StepId, (Vec<String>, u64)>,
    /// By step: error lines of the runs before the last one.
    earlier: BTreeMap<StepId, u64>,
}

impl ServerErrors {
    fn setup(&mut self, step: StepId, line: String) {
        self.setup.insert(step, line);
    }

    /// A step moved by a reload from position `from` to `to`: its kept lines name the new one.
    fn moved(&mut self, step: StepId, from: usize, to: usize) {
        let lines = self.setup.get_mut(&step).into_iter();
        for line in lines.chain(self.last.get_mut(&step).into_iter().flat_map(|(l, _)| l)) {
            renumber(line, from, to);
        }
    }

    /// A step removed or changed by a reload: its errors no longer decide the exit status.
    fn forget(&mut self, step: StepId) {
        self.setup.remove(&step);
        self.last.remove(&step);
        self.earlier.remove(&step);
    }

    /// Step `step` finished a run with `errors`; it replaces the step's previous run.
    fn run(&mut self, step: StepId, mut errors: Vec<String>) {
        let count = errors.len() as u64;
        dedup_keep_order(&mut errors);
        errors.truncate(KEPT_ERRORS_PER_STEP);
        if let Some((_, before)) = self.last.insert(step, (errors, count)) {
            *self.earlier.entry(step).or_default() += before;
        }
    }

    /// The report's lines of the steps `in_force` (id and position, in file order; the
    /// errors of any other step were forgotten): setup errors, each step's last run, and one
    /// line per step that failed only in earlier runs or had more lines than were kept.
    fn lines(&self, in_force: &[(StepId, usize)]) -> Vec<String> {
        let mut out: Vec<String> = in_force
            .iter()
            .filter_map(|(id, _)| self.setup.get(id).cloned())
            .collect();
        for (id, step) in in_force {
            let (lines, count) = match self.last.get(id) {
                Some((lines, count)) => (lines.as_slice(), *count),
                None => (&[][..], 0),
            };
            out.extend(lines.iter().cloned());
            let hidden = count.saturating_sub(lines.len() as u64);
            let earlier = self.earlier.get(id).copied().unwrap_or(0);
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
    /// Step `id` begins a scheduled run, unless one is in progress (`None`).
    fn claim_run(&self, id: StepId) -> Option<RunClaim<'_>> {
        let fresh = self
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id);
        // Not `then_some`: a claim made and dropped at once would end the claim in force.
        fresh.then(|| RunClaim { server: self, id })
    }

    fn log(&self) -> &slog::Logger {
        &self.run.log
    }

    fn errors(&self) -> std::sync::MutexGuard<'_, ServerErrors> {
        self.errors.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A run of the step `id` with the definition `def` ended with `errors`: they decide the
    /// exit status only while that definition is still the one in force (a reload may have
    /// removed or changed the step while it ran; one that only moved it keeps them).
    fn record_run(&self, id: StepId, def: &crate::config::SyncStep, errors: Vec<String>) {
        // Held while the errors are recorded: a reload cannot slip in between.
        let loops = self.loops();
        if loops.steps.get(&id).is_some_and(|s| *s.step == *def) {
            self.errors().run(id, errors);
        }
    }

    fn loops(&self) -> std::sync::MutexGuard<'_, Loops> {
        self.loops.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The schedule of `step`: `Ok(None)` when it has none (logged, the step never fires),
    /// `Err` when it does not parse or never fires (logged and kept as an error line).
    fn schedule_of(&self, id: StepId, step: &StepCtx) -> Result<Option<Schedule>, ()> {
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
                id,
                format!(
                    "{} source {:?} target {:?}: failed to schedule cron {sched:?}: {e}",
                    step.name(),
                    s.source,
                    s.target
                ),
            );
        })
    }

    /// Tells `book` about `step` (a new one, or a changed one keeping its history).
    fn register(book: &mut Book, id: StepId, step: &StepCtx) {
        let s = &step.step;
        let text = cron::step_schedule(&s.schedule, &s.interval);
        let parsed = text.as_deref().and_then(|t| cron::parse(t).ok());
        book.register(id, step, text, parsed);
    }

    /// Starts the fire loop of step `id` (the loops table is locked by the caller).
    fn start_loop(
        self: &Arc<Self>,
        loops: &mut Loops,
        id: StepId,
        step: &StepCtx,
        schedule: Schedule,
    ) {
        let Some(clock) = loops.firing.clone() else {
            return;
        };
        let stop = self.run.cancel.child_token();
        loops.stops.insert(id, stop.clone());
        let s = &step.step;
        let what = (s.source.clone(), s.target.clone(), s.kind.clone());
        loops.handles.push(tokio::spawn(
            self.clone().step_loop(id, what, schedule, clock, stop),
        ));
    }

    /// Puts the start-up config's steps in force, each with an id of its own: every step is
    /// known to `/status` from the start, with or without a schedule. Each gets its stop
    /// token at once, as a fire loop does: a reload during the initial pass that removes or
    /// changes a step stops its initial run if it has not begun yet (a run in progress
    /// finishes, as on any reload).
    fn adopt(&self, steps: Vec<Arc<StepCtx>>) -> Vec<(StepId, Arc<StepCtx>, CancellationToken)> {
        let mut loops = self.loops();
        let mut book = lock(&self.stats);
        book.serving = true;
        steps
            .into_iter()
            .map(|step| {
                let id = loops.new_id();
                Self::register(&mut book, id, &step);
                loops.steps.insert(id, step.clone());
                let stop = self.run.cancel.child_token();
                loops.stops.insert(id, stop.clone());
                (id, step, stop)
            })
            .collect()
    }

    /// The initial pass of the steps [`Server::adopt`] put in force, then their schedules.
    async fn serve(
        self: Arc<Self>,
        steps: Vec<(StepId, Arc<StepCtx>, CancellationToken)>,
        clock: Clock,
    ) -> RunReport {
        let run = self.run.clone();
        let started = std::time::Instant::now();
        let sequential = run.parallel.sequential_steps;
        let mut initial: Vec<BoxFuture<'static, ()>> = Vec::new();
        for (id, step, stop) in steps {
            if run.cancel.is_cancelled() {
                break;
            }
            match self.schedule_of(id, &step) {
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
                let step_def = step.step.clone();
                if let Some(errors) = me.run_step(id, step, Mode::Missing, &stop).await {
                    me.record_run(id, &step_def, errors);
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
                let steps: Vec<(StepId, Arc<StepCtx>)> =
                    loops.steps.iter().map(|(id, s)| (*id, s.clone())).collect();
                for (id, step) in steps {
                    let s = &step.step;
                    let schedule = cron::step_schedule(&s.schedule, &s.interval)
                        .and_then(|t| cron::parse(&t).ok())
                        .filter(|p| p.next(chrono::Utc::now()).is_some());
                    if let Some(schedule) = schedule {
                        self.start_loop(&mut loops, id, &step, schedule);
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
        let in_force = self.loops().positions();
        let errors = self.errors().lines(&in_force);
        RunReport {
            errors,
            counts,
            steps: Vec::new(),
        }
    }

    /// SIGHUP: `steps` replace the steps in force (see [`Reload`]), paired with them by what
    /// they copy ([`pair_steps`]), not by position.
    fn reload(self: &Arc<Self>, steps: Vec<Arc<StepCtx>>) -> ReloadSummary {
        let mut sum = ReloadSummary::default();
        let mut loops = self.loops();
        let mut old = std::mem::take(&mut loops.steps);
        let (pairs, removed) = {
            let mut in_force: Vec<(StepId, &crate::config::SyncStep)> =
                old.iter().map(|(id, s)| (*id, &*s.step)).collect();
            in_force.sort_by_key(|(id, _)| old[id].index);
            let new: Vec<&crate::config::SyncStep> = steps.iter().map(|s| &*s.step).collect();
            pair_steps(&in_force, &new)
        };
        // Steps that start (again) on their schedule once the book knows them all.
        let mut start = Vec::new();
        {
            // One lock of the book for the whole change: `/status` never sees two steps at
            // one position.
            let mut book = lock(&self.stats);
            for id in removed {
                sum.removed += 1;
                old.remove(&id);
                if let Some(stop) = loops.stops.remove(&id) {
                    stop.cancel();
                }
                book.steps.remove(&id);
                self.errors().forget(id);
            }
            for (step, pair) in steps.into_iter().zip(pairs) {
                let was = match pair {
                    Pairing::Unchanged(id) | Pairing::Changed(id) => old.remove(&id),
                    Pairing::Added => None,
                };
                if was.as_ref().is_some_and(|w| w.index != step.index) {
                    sum.moved += 1;
                }
                let id = match pair {
                    Pairing::Unchanged(id) => {
                        // Its loop keeps firing (and its schedule its phase); every firing
                        // takes the step as in force, at its new position.
                        sum.unchanged += 1;
                        book.moved(id, step.index);
                        if let Some(w) = was.as_ref().filter(|w| w.index != step.index) {
                            self.errors().moved(id, w.index, step.index);
                        }
                        loops.steps.insert(id, step);
                        continue;
                    }
                    Pairing::Changed(id) => {
                        sum.changed += 1;
                        if let Some(stop) = loops.stops.remove(&id) {
                            stop.cancel();
                        }
                        self.errors().forget(id);
                        id
                    }
                    Pairing::Added => {
                        sum.added += 1;
                        loops.new_id()
                    }
                };
                Self::register(&mut book, id, &step);
                loops.steps.insert(id, step.clone());
                start.push((id, step));
            }
        }
        for (id, step) in start {
            if let Ok(Some(schedule)) = self.schedule_of(id, &step) {
                self.start_loop(&mut loops, id, &step, schedule);
            }
        }
        sum
    }

    /// Fires step `id` on `schedule` until the server stops (`what`: its source, target and
    /// type, for the log).
    async fn step_loop(
        self: Arc<Self>,
        id: StepId,
        what: (String, String, String),
        schedule: Schedule,
        clock: Clock,
        stop: CancellationToken,
    ) {
        let (source, target, kind) = what;
        let log = self.run.log.clone();
        // A firing that runs nothing because a run of the step still goes on: this loop's
        // own previous run, or the run of the definition a reload changed.
        let skip = {
            let (log, stats) = (log.clone(), self.stats.clone());
            let (source, target, kind) = (source.clone(), target.clone(), kind.clone());
            Arc::new(move || {
                slog::debug!(log, "Skipping task, previous run still running";
                    "source" => &source, "target" => &target, "type" => &kind);
                lock(&stats).skipped(id);
            })
        };
        fire_loop(
            &schedule,
            &clock,
            &stop,
            || {
                slog::debug!(log, "Running task";
                    "source" => &source, "target" => &target, "type" => &kind);
                let me = self.clone();
                // The step as in force now: a reload may have moved it to another position.
                // Read under the loops' lock, where a reload that removes or changes the
                // step cancels `stop`: such a firing runs nothing.
                let current = {
                    let loops = me.loops();
                    loops
                        .steps
                        .get(&id)
                        .filter(|_| !stop.is_cancelled())
                        .cloned()
                };
                let stop = stop.clone();
                let skip = skip.clone();
                async move {
                    let Some(current) = current else {
                        return;
                    };
                    let Some(_claim) = me.claim_run(id) else {
                        // The run of the definition a reload changed still goes on.
                        skip();
                        return;
                    };
                    // A run of its own: nothing an earlier firing saw land is trusted.
                    let step = Arc::new(current.new_run());
                    let step_def = step.step.clone();
                    if let Some(errors) = me.run_step(id, step, Mode::Copy, &stop).await {
                        me.record_run(id, &step_def, errors);
                    }
                }
            },
            || skip(),
        )
        .await;
    }

    /// One run of step `id`: its errors (cancellations left out), a `Step summary` line and
    /// the step's statistics. `None`: `stop` (the server's end, or a reload that removed or
    /// changed the step) came while the run waited for a step slot, and it never started.
    async fn run_step(
        &self,
        id: StepId,
        step: Arc<StepCtx>,
        mode: Mode,
        stop: &CancellationToken,
    ) -> Option<Vec<String>> {
        let slot = step_slot(&self.run, stop).await?;
        lock(&self.stats).begin(id, &step);
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
        lock(&self.stats).end(id, &report);
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

/// An error line of the step at position `from` (`sync[N] ...`, `sync[N]: ...`) names the
/// position `to` instead; other lines are left as they are.
fn renumber(line: &mut String, from: usize, to: usize) {
    let old = format!("sync[{from}]");
    if line
        .strip_prefix(&old)
        .is_some_and(|rest| rest.starts_with([' ', ':']))
    {
        line.replace_range(..old.len(), &format!("sync[{to}]"));
    }
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
    #[test]
    fn renumbering_touches_only_the_lines_of_that_position() {
        let mut cases = [
            ("sync[1] a -> b: failed", "sync[3] a -> b: failed"),
            (
                "sync[1]: 2 more error(s) in its last run",
                "sync[3]: 2 more error(s) in its last run",
            ),
            ("sync[10] a -> b: failed", "sync[10] a -> b: failed"),
            ("internal error: sync[1] x", "internal error: sync[1] x"),
        ]
        .map(|(from, to)| (from.to_string(), to));
        for (line, want) in &mut cases {
            super::renumber(line, 1, 3);
            assert_eq!(line, want);
        }
    }
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
        let in_force = [(StepId(0), 0), (StepId(1), 1)];
        e.setup(StepId(1), "sync[1] bad cron".into());
        // A thousand failing firings of step 0, each with 150 distinct lines.
        for run in 0..1000 {
            let lines = (0..150)
                .map(|i| format!("sync[0] run {run} image {i}"))
                .collect();
            e.run(StepId(0), lines);
        }
        let lines = e.lines(&in_force);
        assert!(lines.len() <= KEPT_ERRORS_PER_STEP + 3, "{}", lines.len());
        assert_eq!(lines[0], "sync[1] bad cron");
        assert_eq!(lines[1], "sync[0] run 999 image 0");
        assert!(!lines.iter().any(|l| l.contains("run 998")));
        assert!(lines.contains(&"sync[0]: 50 more error(s) in its last run".to_string()));
        assert!(
            lines.contains(&"sync[0]: 149850 error(s) in earlier runs of this server".to_string())
        );
        // A clean last run: its lines are gone, the exit status still sees the earlier ones.
        e.run(StepId(0), Vec::new());
        assert_eq!(
            e.lines(&in_force),
            [
                "sync[1] bad cron",
                "sync[0]: 150000 error(s) in earlier runs of this server"
            ]
        );
        // Moved by a reload: the counts name the step at its new position.
        assert_eq!(
            e.lines(&[(StepId(1), 0), (StepId(0), 3)]),
            [
                "sync[1] bad cron",
                "sync[3]: 150000 error(s) in earlier runs of this server"
            ]
        );
        // A server that never failed reports nothing.
        let mut clean = ServerErrors::default();
        clean.run(StepId(0), Vec::new());
        clean.run(StepId(0), Vec::new());
        assert!(clean.lines(&in_force).is_empty());
    }

    fn sync_step(source: &str, target: &str, interval: &str) -> crate::config::SyncStep {
        crate::config::SyncStep {
            kind: "image".into(),
            source: source.into(),
            target: target.into(),
            interval: interval.into(),
            ..Default::default()
        }
    }

    /// Pairs `new` with `old` (ids 10, 11, ... in order) and names each pairing by letter:
    /// `u10` unchanged, `c10` changed, `a` added; the removed ids follow.
    fn pairing(
        old: &[crate::config::SyncStep],
        new: &[crate::config::SyncStep],
    ) -> (Vec<String>, Vec<usize>) {
        let old: Vec<(StepId, &crate::config::SyncStep)> = old
            .iter()
            .enumerate()
            .map(|(i, s)| (StepId(10 + i), s))
            .collect();
        let new: Vec<&crate::config::SyncStep> = new.iter().collect();
        let (pairs, removed) = pair_steps(&old, &new);
        let pairs = pairs
            .iter()
            .map(|p| match p {
                Pairing::Unchanged(id) => format!("u{}", id.0),
                Pairing::Changed(id) => format!("c{}", id.0),
                Pairing::Added => "a".into(),
            })
            .collect();
        (pairs, removed.iter().map(|id| id.0).collect())
    }

    #[test]
    fn a_reload_pairs_steps_by_what_they_copy_not_by_position() {
        let a = sync_step("s/a:1", "t/a:1", "1h");
        let b = sync_step("s/b:1", "t/b:1", "1h");
        let c = sync_step("s/c:1", "t/c:1", "1h");
        // a step inserted at the top: the others keep theirs
        assert_eq!(
            pairing(&[a.clone(), b.clone()], &[c.clone(), a.clone(), b.clone()]),
            (vec!["a".into(), "u10".into(), "u11".into()], vec![])
        );
        // another interval under the same type, source and target: changed, not new
        let b2 = sync_step("s/b:1", "t/b:1", "2h");
        assert_eq!(
            pairing(&[a.clone(), b.clone()], &[b2.clone(), a.clone()]),
            (vec!["c11".into(), "u10".into()], vec![])
        );
        // another source or target or type is another step
        let mut b_repo = b.clone();
        b_repo.kind = "repository".into();
        assert_eq!(
            pairing(
                &[a.clone(), b.clone()],
                &[sync_step("s/b:1", "t/x:1", "1h"), b_repo]
            ),
            (vec!["a".into(), "a".into()], vec![10, 11])
        );
    }

    #[test]
    fn steps_sharing_a_key_pair_identical_ones_first_then_in_file_order() {
        let a1 = sync_step("s/a:1", "t/a:1", "1h");
        let a2 = sync_step("s/a:1", "t/a:1", "2h");
        let a3 = sync_step("s/a:1", "t/a:1", "3h");
        // swapped: each finds its own definition
        assert_eq!(
            pairing(&[a1.clone(), a2.clone()], &[a2.clone(), a1.clone()]),
            (vec!["u11".into(), "u10".into()], vec![])
        );
        // two identical steps: in file order, the last one goes
        assert_eq!(
            pairing(&[a1.clone(), a1.clone()], std::slice::from_ref(&a1)),
            (vec!["u10".into()], vec![11])
        );
        // neither identical: the first in force goes to the first in the file
        assert_eq!(
            pairing(&[a1.clone(), a2.clone()], &[a3.clone(), a3.clone(), a3]),
            (vec!["c10".into(), "c11".into(), "a".into()], vec![])
        );
        // an identical one is found first even when it comes later in the file
        assert_eq!(
            pairing(&[a1.clone(), a2.clone()], std::slice::from_ref(&a2)),
            (vec!["u11".into()], vec![10])
        );
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
