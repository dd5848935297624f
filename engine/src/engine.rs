//! The [`Engine`]: a loaded model on a scheduler thread, and the bounded queue in front of it.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::replay::ReplayReport;
use crate::replay_job::{replay_job, ReplayJob};
use cocoon_runtime::backend::{blocks_for, Backend};
use cocoon_runtime::generate::Generation;
use cocoon_runtime::model::config::LlamaConfig;
use cocoon_runtime::notary::{Attestation, ReceiptRequest};
use cocoon_runtime::receipt::Receipt;
use cocoon_runtime::tokenizer::{ChatMessage, TextTokenizer};
use cocoon_runtime::{with_runtime, Error, Opened, Pin, Runtime, SamplingParams};
use tokio::sync::mpsc::{unbounded_channel, UnboundedSender};

use crate::request::{Event, Handle, Request, SubmitError};
use crate::scheduler;

/// How an engine batches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EngineConfig {
    /// Most requests running at once.
    pub max_batch: usize,
    /// Most requests waiting; one more is refused ([`SubmitError::QueueFull`]).
    pub max_queue: usize,
    /// Most rows of one pass: decode rows first, the rest for prompt chunks. Smaller keeps the
    /// time to the next token of running requests short while a long prompt is prefilled.
    pub step_tokens: usize,
    /// Blocks of the KV pool (`KV_BLOCK`, 8, positions each); `None`: enough for `max_batch` requests of
    /// the whole context, within [`EngineConfig::kv_memory_bytes`].
    pub kv_blocks: Option<usize>,
    /// Bound on the KV pool's memory when `kv_blocks` is `None`.
    pub kv_memory_bytes: u64,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            max_batch: 16,
            max_queue: 64,
            step_tokens: 128,
            kv_blocks: None,
            kv_memory_bytes: 4 << 30,
        }
    }
}

impl EngineConfig {
    /// The pool's blocks for a model of `config` whose cache holds values of `value_bytes`
    /// bytes (4 for f32, 2 for a BF16 cache).
    pub fn pool_blocks(&self, config: &LlamaConfig, value_bytes: usize) -> usize {
        if let Some(b) = self.kv_blocks {
            return b.max(1);
        }
        let block_bytes = (config.num_hidden_layers
            * 2
            * cocoon_runtime::backend::KV_BLOCK
            * config.num_key_value_heads
            * config.head_dim
            * value_bytes)
            .max(1) as u64;
        let by_memory = (self.kv_memory_bytes / block_bytes).max(1) as usize;
        let wanted = self
            .max_batch
            .max(1)
            .saturating_mul(blocks_for(config.max_position_embeddings));
        wanted.min(by_memory).min(1 << 24)
    }
}

/// Counters of an engine since it started, and its state now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EngineStats {
    /// Requests waiting.
    pub queued: u64,
    /// Requests running.
    pub running: u64,
    /// Requests that finished (stop or length).
    pub completed: u64,
    /// Requests cancelled (by the caller, a dropped handle or a deadline).
    pub cancelled: u64,
    /// Requests that failed.
    pub failed: u64,
    /// Prompt tokens computed.
    pub prompt_tokens: u64,
    /// Tokens generated.
    pub output_tokens: u64,
    /// Passes run.
    pub steps: u64,
    /// Rows computed by those passes.
    pub rows: u64,
    /// KV blocks holding positions now.
    pub kv_blocks_taken: u64,
    /// Positions the running requests hold in those blocks now (a block holds
    /// [`cocoon_runtime::backend::KV_BLOCK`] positions: `kv_blocks_taken · KV_BLOCK` over this is
    /// the KV memory held per position needed).
    pub kv_positions_held: u64,
    /// KV blocks of the pool.
    pub kv_blocks_total: u64,
}

#[derive(Default)]
pub(crate) struct Counters {
    pub running: AtomicU64,
    pub completed: AtomicU64,
    pub cancelled: AtomicU64,
    pub failed: AtomicU64,
    pub prompt_tokens: AtomicU64,
    pub output_tokens: AtomicU64,
    pub steps: AtomicU64,
    pub rows: AtomicU64,
    pub kv_blocks_taken: AtomicU64,
    pub kv_positions_held: AtomicU64,
    pub kv_blocks_total: AtomicU64,
}

/// A request waiting for its turn.
pub(crate) struct Queued {
    pub request: Request,
    pub events: UnboundedSender<Event>,
    pub cancel: Arc<AtomicBool>,
    /// Tokens it may generate (its `max_tokens`, bounded by the context).
    pub budget: usize,
    /// Blocks it may need: prompt plus budget.
    pub blocks: usize,
}

#[derive(Default)]
pub(crate) struct Queue {
    pub waiting: VecDeque<Queued>,
    pub closing: bool,
    /// When set, running requests are cancelled at this instant.
    pub cancel_at: Option<Instant>,
}

pub(crate) struct Shared {
    pub queue: Mutex<Queue>,
    pub wake: Condvar,
    pub counters: Counters,
}

impl Shared {
    pub fn lock(&self) -> MutexGuard<'_, Queue> {
        // A panic while holding the lock leaves the queue as it was between operations.
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The facts about the loaded model that callers need, whatever its backend.
pub trait Loaded: Send + Sync {
    /// The model's pin.
    fn pin(&self) -> Pin;
    /// The backend's name, as receipts record it.
    fn backend_name(&self) -> String;
    /// The tokenizer and chat template.
    fn tokenizer(&self) -> &TextTokenizer;
    /// The model's configuration.
    fn config(&self) -> &LlamaConfig;
    /// Prompt ids: through the chat template unless `raw`.
    fn prompt_ids(&self, prompt: &str, raw: bool) -> Result<Vec<u32>, Error>;
    /// Prompt ids of a conversation, through the chat template.
    fn chat_ids(&self, messages: &[ChatMessage]) -> Result<Vec<u32>, Error>;
    /// The receipt of a finished generation ([`Runtime::receipt`]).
    fn receipt(
        &self,
        prompt: &str,
        chat_template: bool,
        params: &SamplingParams,
        generation: &Generation,
        attestation: &Attestation,
        request: &ReceiptRequest,
    ) -> Result<Receipt, Error>;
    /// Replays an answer ([`crate::replay_job::replay_job`]): one teacher-forced pass on this
    /// model, beside whatever the scheduler runs.
    fn replay(&self, job: &ReplayJob<'_>) -> Result<ReplayReport, Error>;
}

impl<B: Backend> Loaded for Runtime<B> {
    fn pin(&self) -> Pin {
        Runtime::pin(self)
    }
    fn backend_name(&self) -> String {
        self.model().backend().name()
    }
    fn tokenizer(&self) -> &TextTokenizer {
        Runtime::tokenizer(self)
    }
    fn config(&self) -> &LlamaConfig {
        &self.model().config
    }
    fn prompt_ids(&self, prompt: &str, raw: bool) -> Result<Vec<u32>, Error> {
        Runtime::prompt_ids(self, prompt, raw)
    }
    fn chat_ids(&self, messages: &[ChatMessage]) -> Result<Vec<u32>, Error> {
        Runtime::chat_ids(self, messages)
    }
    fn receipt(
        &self,
        prompt: &str,
        chat_template: bool,
        params: &SamplingParams,
        generation: &Generation,
        attestation: &Attestation,
        request: &ReceiptRequest,
    ) -> Result<Receipt, Error> {
        Runtime::receipt(
            self,
            prompt,
            chat_template,
            params,
            generation,
            attestation,
            request,
        )
    }
    fn replay(&self, job: &ReplayJob<'_>) -> Result<ReplayReport, Error> {
        replay_job(self, job)
    }
}

/// A loaded model serving many requests at once.
pub struct Engine {
    shared: Arc<Shared>,
    model: Arc<dyn Loaded>,
    config: EngineConfig,
    pool_blocks: usize,
    worker: Mutex<Option<JoinHandle<()>>>,
}

impl Engine {
    /// Starts the scheduler thread for `runtime`.
    pub fn start<B: Backend + 'static>(
        runtime: Runtime<B>,
        config: EngineConfig,
    ) -> Result<Engine, Error> {
        if config.max_batch == 0 || config.step_tokens == 0 {
            return Err(Error::InvalidRequest(
                "max_batch and step_tokens must be at least 1".into(),
            ));
        }
        let runtime = Arc::new(runtime);
        let model = runtime.model();
        let pool_blocks = config.pool_blocks(&model.config, model.kv_type().size());
        let pool = runtime.model().new_pool(pool_blocks)?;
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue::default()),
            wake: Condvar::new(),
            counters: Counters::default(),
        });
        shared
            .counters
            .kv_blocks_total
            .store(pool_blocks as u64, Ordering::Relaxed);
        let worker = {
            let (runtime, shared) = (Arc::clone(&runtime), Arc::clone(&shared));
            std::thread::Builder::new()
                .name("cocoon-engine".into())
                .spawn(move || scheduler::run(&runtime, pool, &shared, config))
                .map_err(|e| Error::Backend(format!("starting the engine thread: {e}")))?
        };
        Ok(Engine {
            shared,
            model: runtime,
            config,
            pool_blocks,
            worker: Mutex::new(Some(worker)),
        })
    }

    /// Starts an engine on whichever backend `opened` is on.
    pub fn from_opened(opened: Opened, config: EngineConfig) -> Result<Engine, Error> {
        with_runtime!(opened, |rt| Engine::start(rt, config))
    }

    /// The loaded model.
    pub fn model(&self) -> &dyn Loaded {
        &*self.model
    }

    /// The configuration it runs with.
    pub fn config(&self) -> EngineConfig {
        self.config
    }

    /// Blocks of its KV pool.
    pub fn pool_blocks(&self) -> usize {
        self.pool_blocks
    }

    /// Queues `request`. Refused at once when it can never run, when the queue is full or
    /// when the engine is shutting down.
    pub fn submit(&self, request: Request) -> Result<Handle, SubmitError> {
        if self.shared.lock().closing || !self.worker_alive() {
            return Err(SubmitError::ShuttingDown);
        }
        let (budget, blocks) = self.check(&request)?;
        let (tx, rx) = unbounded_channel();
        let cancel = Arc::new(AtomicBool::new(false));
        {
            let mut q = self.shared.lock();
            if q.closing {
                return Err(SubmitError::ShuttingDown);
            }
            if q.waiting.len() >= self.config.max_queue {
                return Err(SubmitError::QueueFull(q.waiting.len()));
            }
            q.waiting.push_back(Queued {
                request,
                events: tx,
                cancel: Arc::clone(&cancel),
                budget,
                blocks,
            });
        }
        self.shared.wake.notify_all();
        Ok(Handle { events: rx, cancel })
    }

    /// Submits `request` and waits for its end, giving each piece of text to `on_piece`
    /// (returning `false` cancels it).
    pub fn generate(
        &self,
        request: Request,
        on_piece: &mut dyn FnMut(&str) -> bool,
    ) -> Result<Generation, SubmitError> {
        Ok(self.submit(request)?.wait(on_piece)?)
    }

    /// Answers `prompt` (through the chat template unless `raw`) and issues its receipt, bound
    /// to the machine as `attestation` says: what `Runtime::generate_with_receipt` does, as
    /// one request among the others.
    #[allow(clippy::too_many_arguments)]
    pub fn generate_with_receipt(
        &self,
        prompt: &str,
        raw: bool,
        params: &SamplingParams,
        attestation: &Attestation,
        receipt_request: &ReceiptRequest,
        on_piece: &mut dyn FnMut(&str) -> bool,
    ) -> Result<(Generation, Receipt), SubmitError> {
        let ids = self.model.prompt_ids(prompt, raw)?;
        let generation = self.generate(Request::new(ids, params.clone()), on_piece)?;
        let receipt = self.receipt(
            prompt,
            !raw,
            params,
            &generation,
            attestation,
            receipt_request,
        )?;
        Ok((generation, receipt))
    }

    /// The receipt of a finished `generation` of `prompt`.
    pub fn receipt(
        &self,
        prompt: &str,
        chat_template: bool,
        params: &SamplingParams,
        generation: &Generation,
        attestation: &Attestation,
        receipt_request: &ReceiptRequest,
    ) -> Result<Receipt, Error> {
        self.model.receipt(
            prompt,
            chat_template,
            params,
            generation,
            attestation,
            receipt_request,
        )
    }

    /// The answer budget and the KV blocks `request` may need, or why it can never run.
    fn check(&self, request: &Request) -> Result<(usize, usize), Error> {
        let c = self.model.config();
        let context = c.max_position_embeddings;
        let n = request.input_ids.len();
        request.params.validate()?;
        if n == 0 {
            return Err(Error::InvalidRequest("the prompt has no tokens".into()));
        }
        if n >= context {
            return Err(Error::InvalidRequest(format!(
                "the prompt has {n} tokens; the model's context is {context}, leaving no room to generate"
            )));
        }
        if let Some(bad) = request
            .input_ids
            .iter()
            .find(|id| **id as usize >= c.vocab_size)
        {
            return Err(Error::InvalidRequest(format!(
                "token id {bad} is outside the vocabulary of {}",
                c.vocab_size
            )));
        }
        let budget = (request.params.max_tokens as usize).min(context - n);
        let blocks = blocks_for(n + budget);
        if blocks > self.pool_blocks {
            return Err(Error::InvalidRequest(format!(
                "the request may need {} positions ({blocks} KV blocks), more than the pool's {} blocks hold",
                n + budget,
                self.pool_blocks
            )));
        }
        Ok((budget, blocks))
    }

    /// Whether the scheduler thread still runs (a request queued to a stopped one would wait
    /// forever).
    fn worker_alive(&self) -> bool {
        self.worker
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .is_some_and(|w| !w.is_finished())
    }

    /// Counters and state now.
    pub fn stats(&self) -> EngineStats {
        let c = &self.shared.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        EngineStats {
            queued: self.shared.lock().waiting.len() as u64,
            running: get(&c.running),
            completed: get(&c.completed),
            cancelled: get(&c.cancelled),
            failed: get(&c.failed),
            prompt_tokens: get(&c.prompt_tokens),
            output_tokens: get(&c.output_tokens),
            steps: get(&c.steps),
            rows: get(&c.rows),
            kv_blocks_taken: get(&c.kv_blocks_taken),
            kv_positions_held: get(&c.kv_positions_held),
            kv_blocks_total: get(&c.kv_blocks_total),
        }
    }

    /// Stops accepting requests, lets the running and waiting ones finish for up to `grace`,
    /// cancels what is left, and stops the thread. Every handle's stream ends with `Done`.
    pub fn shutdown(&self, grace: Duration) {
        {
            let mut q = self.shared.lock();
            q.closing = true;
            q.cancel_at = Some(Instant::now() + grace);
        }
        self.shared.wake.notify_all();
        let worker = self.worker.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(w) = worker {
            if w.join().is_err() {
                tracing::error!("the engine thread panicked");
            }
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.shutdown(Duration::ZERO);
    }
}
