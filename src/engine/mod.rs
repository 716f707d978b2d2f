//! The sync engine: actix actors that decide, tokio tasks that move bytes.
//!
//! Scheduler → TagLister → ManifestResolver → BlobMover, with one RegistryThrottler per
//! registry host owning its request limits. See `docs`-style overview in the README.

pub mod blob_mover;
pub mod host_stats;
pub mod manifest_resolver;
pub mod messages;
pub mod rate_limit_watcher;
pub mod report;

pub use crate::copy::run_scope;
pub use crate::copy::CopyError;
pub mod scheduler;
pub mod tag_lister;
pub mod throttler;

use crate::config::{Config, SyncStep};
use crate::ocidir::OciDirStore;
use crate::reference::{Reference, Scheme};
use crate::registry::{HostConfig, RegistryError, RegistryStore};
use crate::store::Store;
use actix::{Actor, Addr};
use report::{Counters, RunReport};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// What a run does with each image (spec §5.5).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Copy everything that differs.
    Copy,
    /// Copy only images absent from the target (`--missing`, server's first pass).
    Missing,
    /// Report differences, write nothing.
    Check,
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Hooks(#[from] crate::hooks::HookError),
}

/// Both storage schemes; the copy algorithm asks for the one a reference names.
pub struct Stores {
    pub registry: RegistryStore,
    pub ocidir: OciDirStore,
}

impl Stores {
    pub fn for_ref(&self, r: &Reference) -> &dyn Store {
        match r.scheme {
            Scheme::Reg => &self.registry,
            Scheme::OciDir => &self.ocidir,
        }
    }
}

impl crate::copy::StoreFor for Stores {
    fn store_for(&self, r: &Reference) -> &dyn Store {
        self.for_ref(r)
    }
}

/// What every actor of one run shares: stores, counters, logger, cancellation.
pub struct RunCtx {
    pub stores: Stores,
    /// The run's total: every step run's counters add to it.
    pub counters: Arc<Counters>,
    pub log: slog::Logger,
    pub cancel: CancellationToken,
    /// Every host's request limits (the registry store's gate).
    pub throttle: Arc<throttler::ThrottleGate>,
    pub abort_on_error: bool,
    /// `defaults.parallel`, read once (see [`Parallel`]).
    pub parallel: Parallel,
    /// Images dispatched and not finished, across every step of the run
    /// ([`Parallel::look_ahead`] permits): what keeps memory flat when a config has one step
    /// per repository and the steps run at once.
    pub image_slots: Arc<tokio::sync::Semaphore>,
    /// Step runs listing or copying at once, across the run (as many as image slots), taken
    /// by the scheduler before it hands a step run to the tag lister: a config of thousands
    /// of steps holds a bounded number of listings and step states, not one per step.
    pub step_slots: Arc<tokio::sync::Semaphore>,
    /// Manifest writes in flight, one per target repository and digest, whatever run they
    /// belong to (see [`run_scope`]).
    pub manifest_writes: run_scope::WriteLocks,
    /// Runs the steps' `hooks` (README "Hooks").
    pub hooks: crate::hooks::HookRunner,
    /// The state database (`--state`), owned by this run; `None` keeps regsync's stateless
    /// behaviour.
    pub state: Option<crate::state::StateHandle>,
    /// The steps' last runs as the database had them at start (`/status` after a restart).
    pub restored_runs: Vec<crate::state::StepRun>,
    /// `--shard`: the target repositories this process copies into (`0/1`: all).
    pub shard: crate::shard::Shard,
}

impl RunCtx {
    /// Record a failure; with `--abort-on-error` it stops the whole run.
    pub fn failed(&self) {
        if self.abort_on_error {
            self.cancel.cancel();
        }
    }
}

/// What `defaults.parallel` means, decided in this one place (spec §13): the number of image
/// copies in flight (at least 1), and whether steps run one after the other (`parallel` ≤ 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Parallel {
    /// Image copies in flight (the ManifestResolver's permits).
    pub copies: usize,
    /// Steps run in file order instead of at once.
    pub sequential_steps: bool,
}

impl Parallel {
    pub fn from_config(parallel: i64) -> Self {
        Parallel {
            copies: parallel.clamp(1, 1 << 16) as usize,
            sequential_steps: parallel <= 0,
        }
    }

    /// Images listed ahead of the copies, for the whole run: enough to keep `copies` busy
    /// while the lookups (HEADs) of later images run.
    pub fn look_ahead(&self) -> usize {
        self.copies * 4
    }

    /// Entries per table of a run's [`run_scope::RunScope`]: 256 for each image being
    /// copied, ample for the blobs and manifests of the images a run writes at once (the
    /// images listed ahead of them are only looked up), and never more than 100,000 (~10 MB).
    pub fn scope_entries(&self) -> usize {
        (self.copies * 256).min(100_000)
    }
}

/// One sync step with its position in the file, as every actor sees it, bound to one run
/// (`scope`: what that run saw land in its targets).
pub struct StepCtx {
    pub index: usize,
    pub step: Arc<SyncStep>,
    pub run: Arc<RunCtx>,
    pub scope: Arc<run_scope::RunScope>,
    /// This step run's own counters (its `Step summary`); every bump also reaches the run's.
    pub counters: Arc<Counters>,
}

impl StepCtx {
    /// The same step for a new run (a `server` firing): nothing of earlier runs is trusted.
    pub fn new_run(&self) -> StepCtx {
        StepCtx {
            index: self.index,
            step: self.step.clone(),
            run: self.run.clone(),
            scope: run_scope::RunScope::new(self.run.parallel.scope_entries()),
            counters: Arc::new(Counters::under(self.run.counters.clone())),
        }
    }

    pub fn log(&self) -> &slog::Logger {
        &self.run.log
    }

    /// `sync[2]` — how error lines name the step.
    pub fn name(&self) -> String {
        format!("sync[{}]", self.index)
    }

    pub fn flag(&self, v: Option<bool>) -> bool {
        v.unwrap_or(false)
    }

    /// The step's name in the state database.
    pub fn state_key(&self) -> String {
        crate::state::step_key(&self.step.kind, &self.step.source, &self.step.target)
    }
}

/// The wired-up actors. Build inside a running actix `System`.
pub struct Engine {
    pub run: Arc<RunCtx>,
    pub scheduler: Addr<scheduler::Scheduler>,
}

pub struct EngineOptions {
    pub abort_on_error: bool,
    /// Host entries from Docker's config ([`docker_hosts`]), read before the runtime started.
    pub docker_hosts: Vec<HostConfig>,
    /// The state database (`--state`), opened and checked before the runtime started.
    pub state: Option<crate::state::StateHandle>,
    /// Its step runs, read at the same time.
    pub restored_runs: Vec<crate::state::StepRun>,
    /// `--shard` (resolved from the environment by the caller).
    pub shard: crate::shard::Shard,
}

/// Host entries from Docker's config, unless `defaults.skipDockerConfig`. Call before the
/// async runtime starts: a `credsStore` runs its helper's `list`, a blocking child process
/// (bounded by the helper timeout).
pub fn docker_hosts(config: &Config, log: &slog::Logger) -> Vec<HostConfig> {
    if config.defaults.skip_docker_config {
        return Vec::new();
    }
    crate::registry::docker_config_hosts(log).unwrap_or_else(|e| {
        slog::warn!(log, "Failed to load docker creds"; "err" => e.to_string());
        Vec::new()
    })
}

impl Engine {
    pub fn start(
        config: &Config,
        opts: EngineOptions,
        log: slog::Logger,
    ) -> Result<Engine, EngineError> {
        let rate_limits = rate_limit_watcher::RateLimitWatcher::new(log.clone()).start();
        let throttle =
            Arc::new(throttler::ThrottleGate::new(log.clone()).with_watcher(rate_limits.clone()));
        let (mut hosts, warnings) =
            crate::config::hosts::merge_host_table(opts.docker_hosts, &config.creds);
        for h in &mut hosts {
            h.skip_docker_certs = config.defaults.skip_docker_config;
        }
        for w in &warnings {
            w.log(&log);
        }
        let user_agent = if config.defaults.user_agent.is_empty() {
            format!(
                "regclient/regsync (regsync-rs {})",
                env!("CARGO_PKG_VERSION")
            )
        } else {
            config.defaults.user_agent.clone()
        };
        // The run's cancellation reaches every request, retry wait and host pause.
        let cancel = CancellationToken::new();
        let registry = RegistryStore::new(
            hosts,
            throttle.clone(),
            crate::registry::RegistryOptions::new(user_agent.clone())
                .with_cache(config.defaults.cache_count, &config.defaults.cache_time)
                .with_cancel(cancel.clone()),
            log.clone(),
        )?;
        let hooks = crate::hooks::HookRunner::new(&user_agent, log.clone());
        hooks.prepare(config.sync.iter().map(|s| &s.hooks))?;
        let parallel = Parallel::from_config(config.defaults.parallel);
        let run = Arc::new(RunCtx {
            stores: Stores {
                registry,
                ocidir: OciDirStore::new(log.clone()),
            },
            counters: Arc::default(),
            log: log.clone(),
            cancel,
            throttle,
            abort_on_error: opts.abort_on_error,
            parallel,
            image_slots: Arc::new(tokio::sync::Semaphore::new(parallel.look_ahead())),
            step_slots: Arc::new(tokio::sync::Semaphore::new(parallel.look_ahead())),
            manifest_writes: run_scope::WriteLocks::default(),
            hooks,
            state: opts.state,
            restored_runs: opts.restored_runs,
            shard: opts.shard,
        });
        let blob_mover = blob_mover::BlobMover::new(run.clone()).start();
        let resolver = manifest_resolver::ManifestResolver::new(run.clone(), blob_mover.clone())
            .with_rate_limits(rate_limits)
            .start();
        let lister = tag_lister::TagLister::new(resolver).start();
        let scheduler = scheduler::Scheduler::new(run.clone(), lister).start();
        Ok(Engine { run, scheduler })
    }

    /// Every step of `config`, numbered as in the file, bound to one new run (hand them to
    /// [`Engine::run_steps`]; their counters are what the progress display reads).
    pub fn step_ctxs(&self, config: &Config) -> Vec<Arc<StepCtx>> {
        let scope = run_scope::RunScope::new(self.run.parallel.scope_entries());
        config
            .sync
            .iter()
            .enumerate()
            .map(|(index, step)| {
                Arc::new(StepCtx {
                    index,
                    step: step.clone(),
                    run: self.run.clone(),
                    scope: scope.clone(),
                    counters: Arc::new(Counters::under(self.run.counters.clone())),
                })
            })
            .collect()
    }

    /// `regsync server` (spec §12): the initial pass, then every step on its schedule until
    /// `self.run.cancel` fires. The report holds the errors of each step's last run, and a
    /// count of earlier ones.
    pub async fn serve(&self, config: &Config, clock: crate::cron::Clock) -> RunReport {
        let steps = self.step_ctxs(config);
        match self.scheduler.send(messages::Serve { steps, clock }).await {
            Ok(report) => report,
            Err(e) => RunReport {
                errors: vec![format!("internal error: scheduler stopped: {e}")],
                counts: self.run.counters.snapshot(),
                steps: Vec::new(),
            },
        }
    }

    /// `regsync server` on SIGHUP: the steps of `config` replace those in force (see
    /// [`messages::Reload`]). Refused when they have an `http` hook whose client cannot be
    /// built ([`crate::hooks::HookRunner::prepare`]).
    pub async fn reload(&self, config: &Config) -> Result<messages::ReloadSummary, String> {
        self.run
            .hooks
            .prepare(config.sync.iter().map(|s| &s.hooks))
            .map_err(|e| e.to_string())?;
        let steps = self.step_ctxs(config);
        self.scheduler
            .send(messages::Reload { steps })
            .await
            .map_err(|e| format!("internal error: scheduler stopped: {e}"))?
    }

    /// Run every step of `config` once (`once`, `check`).
    pub async fn run_once(&self, config: &Config, mode: Mode) -> RunReport {
        self.run_steps(self.step_ctxs(config), mode).await
    }

    /// Run `steps` (from [`Engine::step_ctxs`]) once.
    pub async fn run_steps(&self, steps: Vec<Arc<StepCtx>>, mode: Mode) -> RunReport {
        match self
            .scheduler
            .send(messages::RunSteps { steps, mode })
            .await
        {
            Ok(report) => report,
            Err(e) => RunReport {
                errors: vec![format!("internal error: scheduler stopped: {e}")],
                counts: self.run.counters.snapshot(),
                steps: Vec::new(),
            },
        }
    }
}

/// Run a tokio task on the multi-threaded runtime and hand its result back to an actor's
/// response future (actors stay on their arbiter; the work uses every core).
pub(crate) async fn on_pool<T: Send + 'static>(
    fut: impl std::future::Future<Output = T> + Send + 'static,
    on_panic: impl FnOnce(String) -> T,
) -> T {
    match tokio::spawn(fut).await {
        Ok(v) => v,
        Err(e) => on_panic(format!("internal error: {e}")),
    }
}
