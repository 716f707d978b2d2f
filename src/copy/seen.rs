//! The seen table of one copy (spec §6.1) and why a manifest copy stops.

use super::{lock, CopyError};
use std::collections::HashMap;
use std::sync::Mutex as StdMutex;
use tokio::sync::watch;

/// Why a manifest copy stopped: an error, or a loop between manifests (spec §6.2 step 1),
/// which referrer and digest-tag copies defer and everything else passes up.
#[derive(Clone, Debug)]
pub(super) enum Fail {
    Loop(String),
    Copy(CopyError),
}

impl From<CopyError> for Fail {
    fn from(e: CopyError) -> Self {
        Fail::Copy(e)
    }
}

impl Fail {
    /// A cancellation, of the copy or of a request under it ([`CopyError::is_canceled`]).
    pub(super) fn canceled(&self) -> bool {
        matches!(self, Fail::Copy(e) if e.is_canceled())
    }

    pub(super) fn into_copy(self) -> CopyError {
        match self {
            Fail::Loop(key) => CopyError::Invalid(format!("loop detected copying {key}")),
            Fail::Copy(e) => e,
        }
    }
}

pub(super) type Outcome = Option<Result<(), Fail>>;

/// The seen table (spec §6.1): a copy in progress (its result arrives on the channel) or done.
pub(super) enum Seen {
    Running(watch::Receiver<Outcome>),
    Done,
}

/// Ownership of one seen entry. Finishing publishes the result (a failure removes the entry
/// so that it can be retried); dropping it unfinished (cancelled) publishes a cancellation.
pub(super) struct SeenGuard<'c> {
    pub(super) seen: &'c StdMutex<HashMap<String, Seen>>,
    pub(super) key: String,
    pub(super) tx: Option<watch::Sender<Outcome>>,
}

impl SeenGuard<'_> {
    pub(super) fn finish(mut self, result: &Result<(), Fail>) {
        self.publish(result.clone());
    }

    fn publish(&mut self, result: Result<(), Fail>) {
        let Some(tx) = self.tx.take() else { return };
        {
            let mut seen = lock(self.seen);
            if result.is_ok() {
                seen.insert(self.key.clone(), Seen::Done);
            } else {
                seen.remove(&self.key);
            }
        }
        let _ = tx.send(Some(result));
    }
}

impl Drop for SeenGuard<'_> {
    fn drop(&mut self) {
        self.publish(Err(Fail::Copy(CopyError::Canceled)));
    }
}
