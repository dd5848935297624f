//! The scheduler thread: admits waiting requests when the pool can hold them, builds each
//! pass from the running requests (every decode row, then prompt chunks up to the step's row
//! budget), runs it, samples each request's next token, streams text, and retires requests.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use cocoon_runtime::backend::{Backend, Batch, Logits, RowKind, KV_BLOCK};
use cocoon_runtime::generate::{Finish, Generation};
use cocoon_runtime::model::llama::{Output, Workspace};
use cocoon_runtime::sampling::Sampler;
use cocoon_runtime::tokenizer::TextStream;
use cocoon_runtime::{Error, Runtime};

use crate::blocks::BlockAllocator;
use crate::engine::{EngineConfig, Queued, Shared};
use crate::request::Event;
use crate::stop::{truncate_at_stop, StopFilter};

/// A running request.
struct Seq<'a> {
    q: Queued,
    sampler: Sampler,
    table: Vec<u32>,
    /// Blocks promised to it and not yet taken.
    unused: usize,
    /// Positions in its cache.
    fed: usize,
    output: Vec<u32>,
    stream: TextStream<'a>,
    filter: StopFilter,
    emitted: String,
    started: Instant,
    first_token: Option<Instant>,
    finish: Option<Finish>,
}

impl Seq<'_> {
    /// The ids its next pass feeds: the rest of its prompt (up to `budget`), or its last token.
    fn next_ids(&self, budget: usize) -> &[u32] {
        let prompt = &self.q.request.input_ids;
        if self.fed < prompt.len() {
            let end = prompt.len().min(self.fed + budget);
            &prompt[self.fed..end]
        } else {
            let last = self.output.len() - 1;
            &self.output[last..]
        }
    }

    fn in_prompt(&self) -> bool {
        self.fed < self.q.request.input_ids.len()
    }

    fn send(&mut self, event: Event) {
        if self.q.events.send(event).is_err() {
            // The handle was dropped: nobody is listening.
            self.q.cancel.store(true, Ordering::Relaxed);
        }
    }
}

pub(crate) fn run<B: Backend>(
    rt: &Runtime<B>,
    mut pool: B::Pool,
    shared: &Shared,
    config: EngineConfig,
) {
    let model = rt.model();
    let be = model.backend();
    let tokenizer = rt.tokenizer();
    let vocab = model.config.vocab_size;
    let eos = tokenizer.eos_ids();
    let mut alloc = BlockAllocator::new(be.pool_blocks(&pool));
    let mut work = Workspace::default();
    let mut running: Vec<Seq<'_>> = Vec::new();
    let counters = &shared.counters;

    loop {
        // Admit what fits, in arrival order; sleep when there is nothing to run.
        {
            let mut q = shared.lock();
            loop {
                let past_grace = q.cancel_at.is_some_and(|t| Instant::now() >= t);
                if past_grace {
                    for s in &running {
                        s.q.cancel.store(true, Ordering::Relaxed);
                    }
                }
                // Requests cancelled (or whose handle went away) while waiting end here.
                let mut kept = std::collections::VecDeque::new();
                while let Some(w) = q.waiting.pop_front() {
                    if past_grace
                        || w.cancel.load(Ordering::Relaxed)
                        || w.events.is_closed()
                        || w.request.deadline.is_some_and(|d| Instant::now() >= d)
                    {
                        let g = empty_generation(&w.request.input_ids);
                        let _ = w.events.send(Event::Done(Ok(g)));
                        counters.cancelled.fetch_add(1, Ordering::Relaxed);
                    } else {
                        kept.push_back(w);
                    }
                }
                q.waiting = kept;
                while running.len() < config.max_batch {
                    let Some(front) = q.waiting.front() else {
                        break;
                    };
                    if !alloc.reserve(front.blocks) {
                        break;
                    }
                    let Some(w) = q.waiting.pop_front() else {
                        break;
                    };
                    match Sampler::new(w.request.params.clone()) {
                        Ok(sampler) => {
                            let filter = StopFilter::new(&w.request.stop);
                            running.push(Seq {
                                unused: w.blocks,
                                q: w,
                                sampler,
                                table: Vec::new(),
                                fed: 0,
                                output: Vec::new(),
                                stream: TextStream::new(tokenizer),
                                filter,
                                emitted: String::new(),
                                started: Instant::now(),
                                first_token: None,
                                finish: None,
                            });
                        }
                        Err(e) => {
                            alloc.give_back(&[], w.blocks);
                            let _ = w.events.send(Event::Done(Err(e)));
                            counters.failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
                counters
                    .running
                    .store(running.len() as u64, Ordering::Relaxed);
                if !running.is_empty() {
                    break;
                }
                if q.closing && q.waiting.is_empty() {
                    return;
                }
                q = shared
                    .wake
                    .wait_timeout(q, Duration::from_millis(50))
                    .map_or_else(|p| p.into_inner().0, |(g, _)| g);
            }
        }

        // Requests cancelled or past their deadline leave before the pass.
        let now = Instant::now();
        for s in running.iter_mut() {
            if s.q.cancel.load(Ordering::Relaxed)
                || s.q.events.is_closed()
                || s.q.request.deadline.is_some_and(|d| now >= d)
            {
                s.finish = Some(Finish::Cancelled);
            }
        }
        retire(&mut running, &mut alloc, be, &mut pool, tokenizer, shared);
        if running.is_empty() {
            continue;
        }

        // The pass: prompt chunks first (oldest first, within the row budget left by the
        // decode rows), then one decode row per request past its prompt.
        let decoding = running.iter().filter(|s| !s.in_prompt()).count();
        let mut budget = config.step_tokens.saturating_sub(decoding).max(1);
        let mut batch = Batch::new();
        let mut owners: Vec<usize> = Vec::new();
        let mut fed: Vec<(usize, usize)> = Vec::new();
        let mut failed: Option<Error> = None;
        for kind in [RowKind::Prompt, RowKind::Decode] {
            for (i, s) in running.iter_mut().enumerate() {
                if s.in_prompt() != (kind == RowKind::Prompt) {
                    continue;
                }
                if kind == RowKind::Prompt && budget == 0 {
                    continue;
                }
                let rows = s.next_ids(budget).len();
                // Take the blocks the new positions need (promised at admission).
                while s.table.len() * KV_BLOCK < s.fed + rows {
                    match alloc.take() {
                        Some(b) => {
                            s.table.push(b);
                            s.unused = s.unused.saturating_sub(1);
                        }
                        None => {
                            failed = Some(Error::Backend(
                                "the KV pool ran out of promised blocks".into(),
                            ));
                            break;
                        }
                    }
                }
                let completes = s.fed + rows >= s.q.request.input_ids.len();
                let logits = if kind == RowKind::Decode || completes {
                    Logits::Last
                } else {
                    Logits::None
                };
                if let Err(e) = batch.push(&s.table, s.fed, s.next_ids(budget), kind, logits) {
                    failed = Some(e);
                }
                if logits == Logits::Last {
                    owners.push(i);
                }
                fed.push((i, rows));
                if kind == RowKind::Prompt {
                    budget -= rows;
                }
            }
        }
        counters
            .kv_blocks_taken
            .store(alloc.taken() as u64, Ordering::Relaxed);
        let staged: usize = fed.iter().map(|(_, rows)| rows).sum();
        counters
            .kv_positions_held
            .store(positions_held(&running) + staged as u64, Ordering::Relaxed);
        let sampling = owners
            .iter()
            .any(|i| !running[*i].q.request.params.is_greedy());
        let output = if sampling {
            Output::Both
        } else {
            Output::Greedy
        };
        let result = match failed {
            Some(e) => Err(e),
            None => model.run(&mut pool, &mut work, &batch, output),
        };
        counters.steps.fetch_add(1, Ordering::Relaxed);
        counters
            .rows
            .fetch_add(batch.rows() as u64, Ordering::Relaxed);
        let result = match result {
            Ok(r) => r,
            Err(e) => {
                tracing::error!("a pass of {} rows failed: {e}", batch.rows());
                let message = e.to_string();
                for (i, _) in &fed {
                    let s = &mut running[*i];
                    s.send(Event::Done(Err(Error::Backend(message.clone()))));
                    s.finish = Some(Finish::Cancelled);
                    s.output.clear();
                    s.q.cancel.store(true, Ordering::Relaxed);
                }
                counters
                    .failed
                    .fetch_add(fed.len() as u64, Ordering::Relaxed);
                // Their streams already ended with the error; retire them without a result.
                retire_failed(&mut running, &mut alloc, be, &mut pool);
                continue;
            }
        };
        for (i, rows) in &fed {
            let s = &mut running[*i];
            if s.in_prompt() {
                counters
                    .prompt_tokens
                    .fetch_add(*rows as u64, Ordering::Relaxed);
            }
            s.fed += rows;
        }
        for (row, i) in owners.iter().enumerate() {
            let s = &mut running[*i];
            let id = if s.q.request.params.is_greedy() {
                result.chosen.get(row).copied()
            } else {
                result
                    .logits
                    .get(row * vocab..(row + 1) * vocab)
                    .map(|l| s.sampler.sample(l))
            };
            let Some(id) = id else {
                s.send(Event::Done(Err(Error::Backend(
                    "a pass returned fewer rows than it was asked for".into(),
                ))));
                s.finish = Some(Finish::Cancelled);
                s.q.cancel.store(true, Ordering::Relaxed);
                continue;
            };
            accept(s, id, eos);
        }
        counters
            .output_tokens
            .fetch_add(owners.len() as u64, Ordering::Relaxed);
        retire(&mut running, &mut alloc, be, &mut pool, tokenizer, shared);
    }
}

/// Takes the token `id` chosen for `s`: ends it on EOS, streams its text through the stop
/// filter, ends it on a stop sequence or at its budget.
fn accept(s: &mut Seq<'_>, id: u32, eos: &[u32]) {
    if s.first_token.is_none() {
        s.first_token = Some(Instant::now());
    }
    s.output.push(id);
    if eos.contains(&id) {
        s.finish = Some(Finish::Stop);
        return;
    }
    match s.stream.push(id) {
        Ok(Some(piece)) => {
            let (shown, stopped) = if s.filter.is_active() {
                s.filter.push(&piece)
            } else {
                (piece, false)
            };
            if !shown.is_empty() {
                s.emitted.push_str(&shown);
                s.send(Event::Piece(shown));
            }
            if stopped {
                s.finish = Some(Finish::Stop);
                return;
            }
        }
        Ok(None) => {}
        Err(e) => {
            s.send(Event::Done(Err(e)));
            s.finish = Some(Finish::Cancelled);
            s.q.cancel.store(true, Ordering::Relaxed);
            return;
        }
    }
    if s.output.len() >= s.q.budget {
        s.finish = Some(Finish::Length);
    }
}

/// Sends the result of every finished request and gives its blocks back.
fn retire<B: Backend>(
    running: &mut Vec<Seq<'_>>,
    alloc: &mut BlockAllocator,
    be: &B,
    pool: &mut B::Pool,
    tokenizer: &cocoon_runtime::tokenizer::TextTokenizer,
    shared: &Shared,
) {
    let counters = &shared.counters;
    let mut i = 0;
    while i < running.len() {
        let Some(finish) = running[i].finish else {
            i += 1;
            continue;
        };
        let mut s = running.swap_remove(i);
        release(&s, alloc, be, pool);
        // The counters are right before the caller hears of the end.
        counters
            .running
            .store(running.len() as u64, Ordering::Relaxed);
        counters
            .kv_blocks_taken
            .store(alloc.taken() as u64, Ordering::Relaxed);
        counters
            .kv_positions_held
            .store(positions_held(running), Ordering::Relaxed);
        if finish == Finish::Cancelled
            && s.q.cancel.load(Ordering::Relaxed)
            && s.q.events.is_closed()
        {
            counters.cancelled.fetch_add(1, Ordering::Relaxed);
            continue;
        }
        match finished(&s, finish, tokenizer) {
            Ok(g) => {
                // What the stream has not shown yet (text held back at the end).
                if let Some(rest) = g.text.strip_prefix(s.emitted.as_str()) {
                    if !rest.is_empty() {
                        let rest = rest.to_owned();
                        s.send(Event::Piece(rest));
                    }
                }
                let counter = match finish {
                    Finish::Cancelled => &counters.cancelled,
                    _ => &counters.completed,
                };
                counter.fetch_add(1, Ordering::Relaxed);
                s.send(Event::Done(Ok(g)));
            }
            Err(e) => {
                counters.failed.fetch_add(1, Ordering::Relaxed);
                s.send(Event::Done(Err(e)));
            }
        }
    }
    counters
        .running
        .store(running.len() as u64, Ordering::Relaxed);
    counters
        .kv_blocks_taken
        .store(alloc.taken() as u64, Ordering::Relaxed);
    counters
        .kv_positions_held
        .store(positions_held(running), Ordering::Relaxed);
}

/// Positions the running sequences have in the KV pool.
fn positions_held(running: &[Seq<'_>]) -> u64 {
    running.iter().map(|s| s.fed as u64).sum()
}

/// Drops requests whose stream already ended with an error.
fn retire_failed<B: Backend>(
    running: &mut Vec<Seq<'_>>,
    alloc: &mut BlockAllocator,
    be: &B,
    pool: &mut B::Pool,
) {
    let mut i = 0;
    while i < running.len() {
        if running[i].finish.is_some() && running[i].q.cancel.load(Ordering::Relaxed) {
            let s = running.swap_remove(i);
            release(&s, alloc, be, pool);
        } else {
            i += 1;
        }
    }
}

fn release<B: Backend>(s: &Seq<'_>, alloc: &mut BlockAllocator, be: &B, pool: &mut B::Pool) {
    if let Err(e) = be.release(pool, &s.table) {
        tracing::warn!("releasing KV blocks: {e}");
    }
    alloc.give_back(&s.table, s.unused);
}

/// The result of a finished request: the text of its ids (without a final EOS), cut at the
/// first stop sequence.
fn finished(
    s: &Seq<'_>,
    finish: Finish,
    tokenizer: &cocoon_runtime::tokenizer::TextTokenizer,
) -> Result<Generation, Error> {
    let end = Instant::now();
    let shown = match (finish, s.output.last()) {
        (Finish::Stop, Some(last)) if tokenizer.eos_ids().contains(last) => {
            &s.output[..s.output.len() - 1]
        }
        _ => &s.output[..],
    };
    let text = tokenizer.decode(shown)?;
    let text = truncate_at_stop(&text, &s.q.request.stop).0.to_owned();
    let first = s.first_token.unwrap_or(end);
    Ok(Generation {
        input_ids: s.q.request.input_ids.clone(),
        output_ids: s.output.clone(),
        text,
        finish,
        prefill_us: first.duration_since(s.started).as_micros() as u64,
        decode_us: end.duration_since(first).as_micros() as u64,
    })
}

fn empty_generation(input_ids: &[u32]) -> Generation {
    Generation {
        input_ids: input_ids.to_vec(),
        output_ids: Vec::new(),
        text: String::new(),
        finish: Finish::Cancelled,
        prefill_us: 0,
        decode_us: 0,
    }
}
