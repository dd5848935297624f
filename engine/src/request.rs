//! What a caller submits to an [`crate::Engine`] and what it gets back.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use cocoon_runtime::generate::Generation;
use cocoon_runtime::{Error, SamplingParams};
use tokio::sync::mpsc::UnboundedReceiver;

/// One generation request: prompt ids (already through the chat template when there is one),
/// sampling parameters, stop sequences and an optional deadline.
#[derive(Clone, Debug)]
pub struct Request {
    /// Prompt token ids.
    pub input_ids: Vec<u32>,
    /// Sampling parameters (`max_tokens` bounds the answer).
    pub params: SamplingParams,
    /// Generation ends at the first of these in the text (not shown; finish `stop`).
    pub stop: Vec<String>,
    /// When passed, the request is cancelled (finish `cancelled`).
    pub deadline: Option<Instant>,
}

impl Request {
    /// A request for `input_ids` with `params`, no stop sequence and no deadline.
    pub fn new(input_ids: Vec<u32>, params: SamplingParams) -> Self {
        Request {
            input_ids,
            params,
            stop: Vec::new(),
            deadline: None,
        }
    }
}

/// What a request's stream carries.
#[derive(Debug)]
pub enum Event {
    /// The next piece of the answer's text.
    Piece(String),
    /// The end: the whole result, or why the request failed.
    Done(Result<Generation, Error>),
}

/// Why a request was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum SubmitError {
    /// The queue holds its maximum of waiting requests.
    #[error("the queue is full ({0} requests waiting); try again later")]
    QueueFull(usize),
    /// The engine is shutting down.
    #[error("the engine is shutting down")]
    ShuttingDown,
    /// The request can never run (empty or too long prompt, bad parameters, more KV memory
    /// than the pool has).
    #[error(transparent)]
    Invalid(#[from] Error),
}

/// A submitted request: its stream of [`Event`]s, readable from sync code
/// ([`Handle::blocking_next`], [`Handle::wait`]) or async code ([`Handle::next`]). Dropping
/// the handle cancels the request and frees its place in the batch.
#[derive(Debug)]
pub struct Handle {
    pub(crate) events: UnboundedReceiver<Event>,
    pub(crate) cancel: Arc<AtomicBool>,
}

impl Handle {
    /// The next event, waiting for it; `None` once the stream ended. Not for async code (use
    /// [`Handle::next`] there).
    pub fn blocking_next(&mut self) -> Option<Event> {
        self.events.blocking_recv()
    }

    /// The next event; `None` once the stream ended.
    pub async fn next(&mut self) -> Option<Event> {
        self.events.recv().await
    }

    /// Asks the engine to stop this request; its stream still ends with `Done` (finish
    /// `cancelled`).
    pub fn cancel(&self) {
        self.cancel.store(true, Ordering::Relaxed);
    }

    /// Waits for the end, giving each piece of text to `on_piece` (returning `false` cancels
    /// the request; no piece is given after that), and returns the result. The scheduler sees
    /// the cancellation at its next pass, so the result may hold a few tokens more than were
    /// shown.
    pub fn wait(mut self, on_piece: &mut dyn FnMut(&str) -> bool) -> Result<Generation, Error> {
        let mut listening = true;
        while let Some(event) = self.blocking_next() {
            match event {
                Event::Piece(p) => {
                    if listening && !on_piece(&p) {
                        listening = false;
                        self.cancel();
                    }
                }
                Event::Done(result) => return result,
            }
        }
        Err(Error::Backend(
            "the engine stopped before the request finished".into(),
        ))
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.cancel();
    }
}
