//! Request bodies: in memory (sent again on a retry or after an auth challenge) or streamed
//! (sent once, watched for progress so a slow upload is told from a hung one).

use crate::store::{BlobStream, StoreError};
use bytes::Bytes;
use futures::StreamExt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Request bodies up to this size (manifests, token forms) count as small.
const SMALL_BODY: usize = 4 << 20;

/// A request body. Only in-memory bodies can be sent again (retries, auth challenge).
pub(crate) enum Body {
    Empty,
    Bytes(Bytes),
    Stream(BlobStream),
    /// A stream that has been handed to the HTTP client already.
    Consumed,
}

impl Body {
    pub(super) fn replayable(&self) -> bool {
        matches!(self, Body::Empty | Body::Bytes(_))
    }

    /// Whether the whole exchange should be quick enough to bound by [`IDLE_TIMEOUT`]; a big
    /// upload chunk or a streamed blob takes as long as the network needs.
    pub(super) fn is_small(&self) -> bool {
        match self {
            Body::Empty => true,
            Body::Bytes(b) => b.len() <= SMALL_BODY,
            Body::Stream(_) | Body::Consumed => false,
        }
    }

    /// The body for one attempt, plus, for a streamed body, where it records its own failure
    /// (so that the caller sees the source's error — short read, digest mismatch — rather
    /// than the generic "error sending request" it causes) and its progress.
    pub(super) fn for_attempt(&mut self) -> (Option<reqwest::Body>, Option<StreamWatch>) {
        match self {
            Body::Empty | Body::Consumed => (None, None),
            Body::Bytes(b) => (Some(reqwest::Body::from(b.clone())), None),
            Body::Stream(_) => {
                let Body::Stream(stream) = std::mem::replace(self, Body::Consumed) else {
                    unreachable!()
                };
                let watch = StreamWatch::new();
                let seen = watch.clone();
                // The HTTP client drops the body once it has sent all of it (with a
                // `Content-Length` it does not wait for the stream's end).
                let sent = Sent(watch.progress.clone());
                let stream = stream.map(move |item| {
                    let _sent = &sent;
                    seen.progress.touch();
                    if let Ok(chunk) = &item {
                        seen.progress.count(chunk.len());
                    }
                    if let Err(e) = &item {
                        seen.error.lock().unwrap().get_or_insert_with(|| e.clone());
                    }
                    item
                });
                (Some(reqwest::Body::wrap_stream(stream)), Some(watch))
            }
        }
    }
}

/// What a streamed request body reports while the HTTP client sends it.
#[derive(Clone)]
pub(super) struct StreamWatch {
    pub(super) error: Arc<Mutex<Option<StoreError>>>,
    pub(super) progress: Arc<Progress>,
}

impl StreamWatch {
    fn new() -> Self {
        StreamWatch {
            error: Arc::new(Mutex::new(None)),
            progress: Arc::new(Progress::new()),
        }
    }
}

/// Marks the body as sent when the HTTP client lets go of it.
struct Sent(Arc<Progress>);

impl Drop for Sent {
    fn drop(&mut self) {
        self.0.finish();
    }
}

/// When a streamed body last moved (a chunk taken by the HTTP client, or its end), to tell a
/// slow upload from a hung one.
pub(super) struct Progress {
    start: tokio::time::Instant,
    /// Milliseconds after `start`.
    last: AtomicU64,
    finished: AtomicBool,
    /// Body bytes taken by the HTTP client.
    bytes: AtomicU64,
}

impl Progress {
    pub(super) fn new() -> Self {
        Progress {
            start: tokio::time::Instant::now(),
            last: AtomicU64::new(0),
            finished: AtomicBool::new(false),
            bytes: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let ms = self.start.elapsed().as_millis();
        self.last
            .store(u64::try_from(ms).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    fn count(&self, n: usize) {
        self.bytes.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// Body bytes taken by the HTTP client so far.
    pub(super) fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    pub(super) fn finish(&self) {
        self.touch();
        self.finished.store(true, Ordering::Relaxed);
    }

    pub(super) fn finished(&self) -> bool {
        self.finished.load(Ordering::Relaxed)
    }

    /// Resolves once nothing has moved for `idle`: no chunk taken while sending, or no
    /// response `idle` after the last byte went out.
    pub(super) async fn stalled(&self, idle: Duration) {
        loop {
            let last = self.start + Duration::from_millis(self.last.load(Ordering::Relaxed));
            let deadline = last + idle;
            if tokio::time::Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}
