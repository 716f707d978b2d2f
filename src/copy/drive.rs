//! Driving the concurrent parts of one manifest copy (its children, blobs, referrers and
//! digest tags): the first error stops the group, a cancellation gives way to a real error.

use super::seen::Fail;
use futures::future::{BoxFuture, FutureExt};
use futures::stream::{FuturesUnordered, StreamExt};

pub(super) type Task<'c> = BoxFuture<'c, Result<(), Fail>>;

/// The first error `e` of a group: a cancellation gives way to a real error of the others.
async fn settle(e: Fail, tasks: &mut FuturesUnordered<Task<'_>>) -> Fail {
    if !e.canceled() {
        return e;
    }
    while let Some(r) = tasks.next().await {
        if let Err(x) = r {
            if !x.canceled() {
                return x;
            }
        }
    }
    e
}

/// Spec §6.2 step 8: only the results already in; an error drops (cancels) the rest.
pub(super) async fn check_now(tasks: &mut FuturesUnordered<Task<'_>>) -> Result<(), Fail> {
    while let Some(Some(r)) = tasks.next().now_or_never() {
        if let Err(e) = r {
            return Err(settle(e, tasks).await);
        }
    }
    Ok(())
}

/// Run `fut` while the tasks keep moving; a task error stops both.
pub(super) async fn drive<T>(
    tasks: &mut FuturesUnordered<Task<'_>>,
    fut: impl std::future::Future<Output = Result<T, Fail>>,
) -> Result<T, Fail> {
    tokio::pin!(fut);
    loop {
        if tasks.is_empty() {
            return fut.await;
        }
        tokio::select! {
            r = &mut fut => return r,
            Some(r) = tasks.next() => {
                if let Err(e) = r {
                    return Err(settle(e, tasks).await);
                }
            }
        }
    }
}

/// Spec §6.2 step 11: every task; the first error drops the rest.
pub(super) async fn wait_all(tasks: &mut FuturesUnordered<Task<'_>>) -> Result<(), Fail> {
    while let Some(r) = tasks.next().await {
        if let Err(e) = r {
            return Err(settle(e, tasks).await);
        }
    }
    Ok(())
}
