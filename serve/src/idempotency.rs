//! `Idempotency-Key`: a retried request with the same key and body gets the stored answer and
//! receipt without generating again; the same key with another body is a 409. Answers are kept
//! for [`IdempotencyStore::ttl`] at least, in bounded memory (docs/design.md §11).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use tokio::sync::watch;

use crate::answer::Answer;
use crate::error::ApiError;

/// Longest key accepted, bytes.
pub const MAX_KEY_BYTES: usize = 255;

/// Checks a key: 1 to [`MAX_KEY_BYTES`] visible ASCII characters.
pub fn check_key(key: &[u8]) -> Result<String, ApiError> {
    if key.is_empty() || key.len() > MAX_KEY_BYTES || !key.iter().all(u8::is_ascii_graphic) {
        return Err(ApiError::invalid(format!(
            "Idempotency-Key must be 1 to {MAX_KEY_BYTES} visible ASCII characters"
        )));
    }
    Ok(String::from_utf8_lossy(key).into_owned())
}

/// What became of the first request with a key.
type Outcome = Option<Result<Arc<Answer>, ()>>;

struct Entry {
    body_sha256: [u8; 32],
    outcome: watch::Receiver<Outcome>,
    /// When the answer was stored (entries in flight have none and are never evicted).
    stored: Option<Instant>,
    bytes: usize,
}

#[derive(Default)]
struct Entries {
    map: HashMap<String, Entry>,
    bytes: usize,
}

/// Answers by idempotency key.
pub struct IdempotencyStore {
    entries: Arc<Mutex<Entries>>,
    ttl: Duration,
    max_entries: usize,
    max_bytes: usize,
}

/// What to do with a request that carries a key.
pub enum Begin {
    /// The first with this key: run it, then [`Ticket::finish`].
    Run(Ticket),
    /// Answered before: send this again.
    Replay(Arc<Answer>),
    /// The first is still running: wait for it.
    Wait(watch::Receiver<Outcome>),
}

/// The right and duty to answer a key; dropped without [`Ticket::finish`], the key is freed
/// (a failed or cancelled request may be retried).
pub struct Ticket {
    entries: Arc<Mutex<Entries>>,
    key: String,
    tx: Option<watch::Sender<Outcome>>,
}

fn lock(m: &Mutex<Entries>) -> MutexGuard<'_, Entries> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl IdempotencyStore {
    /// A store keeping answers for `ttl`, holding at most `max_entries` keys and about
    /// `max_bytes` of answers.
    pub fn new(ttl: Duration, max_entries: usize, max_bytes: usize) -> Self {
        IdempotencyStore {
            entries: Arc::default(),
            ttl,
            max_entries,
            max_bytes,
        }
    }

    /// How long answers are kept.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Keys held now.
    pub fn len(&self) -> usize {
        lock(&self.entries).map.len()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Looks `key` up for a request whose body hashes to `body_sha256`.
    pub fn begin(&self, key: String, body_sha256: [u8; 32]) -> Result<Begin, ApiError> {
        let mut e = lock(&self.entries);
        let now = Instant::now();
        let ttl = self.ttl;
        let mut freed = 0;
        e.map.retain(|_, v| {
            let keep = v.stored.is_none_or(|t| now.duration_since(t) < ttl);
            if !keep {
                freed += v.bytes;
            }
            keep
        });
        e.bytes -= freed;
        if let Some(entry) = e.map.get(&key) {
            if entry.body_sha256 != body_sha256 {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "idempotency_key_reused",
                    "this Idempotency-Key was used with another body",
                ));
            }
            return Ok(match &*entry.outcome.borrow() {
                Some(Ok(answer)) => Begin::Replay(Arc::clone(answer)),
                _ => Begin::Wait(entry.outcome.clone()),
            });
        }
        if e.map.len() >= self.max_entries || e.bytes >= self.max_bytes {
            return Err(ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "idempotency_store_full",
                "too many recent requests with an Idempotency-Key are held; retry later",
            ));
        }
        let (tx, rx) = watch::channel(None);
        e.map.insert(
            key.clone(),
            Entry {
                body_sha256,
                outcome: rx,
                stored: None,
                bytes: 0,
            },
        );
        Ok(Begin::Run(Ticket {
            entries: Arc::clone(&self.entries),
            key,
            tx: Some(tx),
        }))
    }
}

impl Ticket {
    /// Stores the answer and wakes the requests waiting for it.
    pub fn finish(mut self, answer: Arc<Answer>) {
        let bytes = answer.size();
        {
            let mut e = lock(&self.entries);
            if let Some(entry) = e.map.get_mut(&self.key) {
                entry.stored = Some(Instant::now());
                entry.bytes = bytes;
                e.bytes += bytes;
            }
        }
        if let Some(tx) = self.tx.take() {
            tx.send_replace(Some(Ok(answer)));
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if let Some(tx) = self.tx.take() {
            lock(&self.entries).map.remove(&self.key);
            tx.send_replace(Some(Err(())));
        }
    }
}

/// Waits for the first request with a key to end.
pub async fn wait(mut rx: watch::Receiver<Outcome>) -> Result<Arc<Answer>, ApiError> {
    let failed = || {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "idempotent_request_failed",
            "the first request with this Idempotency-Key did not finish; retry",
        )
    };
    match rx.wait_for(Option::is_some).await {
        Ok(outcome) => match &*outcome {
            Some(Ok(answer)) => Ok(Arc::clone(answer)),
            _ => Err(failed()),
        },
        Err(_) => Err(failed()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::answer::tests::answer;

    #[test]
    fn same_key_same_body_replays_other_body_conflicts() {
        let store = IdempotencyStore::new(Duration::from_secs(600), 4, 1 << 20);
        let Ok(Begin::Run(t)) = store.begin("k".into(), [1; 32]) else {
            panic!("first request must run")
        };
        assert!(matches!(
            store.begin("k".into(), [1; 32]),
            Ok(Begin::Wait(_))
        ));
        t.finish(Arc::new(answer("hello")));
        let Ok(Begin::Replay(a)) = store.begin("k".into(), [1; 32]) else {
            panic!("must replay")
        };
        assert_eq!(a.text, "hello");
        let e = store.begin("k".into(), [2; 32]).err().unwrap();
        assert_eq!(e.status, StatusCode::CONFLICT);
    }

    #[test]
    fn a_failed_first_request_frees_the_key_and_tells_its_waiters() {
        let store = IdempotencyStore::new(Duration::from_secs(600), 4, 1 << 20);
        let Ok(Begin::Run(t)) = store.begin("k".into(), [1; 32]) else {
            panic!()
        };
        let Ok(Begin::Wait(rx)) = store.begin("k".into(), [1; 32]) else {
            panic!()
        };
        drop(t);
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        assert!(rt.block_on(wait(rx)).is_err());
        assert!(store.is_empty());
        assert!(matches!(
            store.begin("k".into(), [1; 32]),
            Ok(Begin::Run(_))
        ));
    }

    #[test]
    fn memory_is_bounded_and_old_answers_expire() {
        let store = IdempotencyStore::new(Duration::from_millis(50), 2, 1 << 20);
        for k in ["a", "b"] {
            let Ok(Begin::Run(t)) = store.begin(k.into(), [0; 32]) else {
                panic!()
            };
            t.finish(Arc::new(answer(k)));
        }
        let e = store.begin("c".into(), [0; 32]).err().unwrap();
        assert_eq!(e.status, StatusCode::SERVICE_UNAVAILABLE);
        std::thread::sleep(Duration::from_millis(60));
        let Ok(Begin::Run(_running)) = store.begin("c".into(), [0; 32]) else {
            panic!("expired answers must make room")
        };
        assert_eq!(store.len(), 1);
    }

    #[test]
    fn keys_are_checked() {
        assert!(check_key(b"").is_err());
        assert!(check_key(b"a b").is_err());
        assert!(check_key(&[b'a'; 256]).is_err());
        assert_eq!(check_key(b"job-1").unwrap(), "job-1");
    }
}
