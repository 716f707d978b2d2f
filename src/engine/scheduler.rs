//! Scheduler: runs steps (once/check now; cron and intervals for `server` come with the server
//! issue) and gathers their outcomes into one report.

use super::messages::{ListStep, RunSteps};
use super::report::RunReport;
use super::tag_lister::TagLister;
use super::{Mode, RunCtx};
use actix::{Actor, Addr, Context, Handler, ResponseFuture};
use futures::future::join_all;
use std::sync::Arc;

pub struct Scheduler {
    run: Arc<RunCtx>,
    lister: Addr<TagLister>,
}

impl Scheduler {
    pub fn new(run: Arc<RunCtx>, lister: Addr<TagLister>) -> Self {
        Scheduler { run, lister }
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
        Box::pin(async move {
            let started = std::time::Instant::now();
            let list = |step| {
                let lister = lister.clone();
                async move {
                    match lister
                        .send(ListStep {
                            step,
                            mode: msg.mode,
                        })
                        .await
                    {
                        Ok(r) => r.errors,
                        Err(e) => vec![format!("internal error: tag lister: {e}")],
                    }
                }
            };
            let mut errors = Vec::new();
            // Steps run in file order when `parallel` ≤ 0 and always for `check` (spec §13).
            if run.parallel <= 0 || msg.mode == Mode::Check {
                for step in msg.steps {
                    if run.cancel.is_cancelled() {
                        break;
                    }
                    errors.extend(list(step).await);
                }
            } else {
                for e in join_all(msg.steps.into_iter().map(list)).await {
                    errors.extend(e);
                }
            }
            let counts = run.counters.snapshot();
            counts.log(&run.log, started.elapsed().as_secs_f64());
            RunReport { errors, counts }
        })
    }
}
