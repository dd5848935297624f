//! The LLaMA-family forward pass, written once for every [`Backend`].
//!
//! Per block: `h = x + o_proj(attn(rope(q_proj(n)), rope(k_proj(n)), v_proj(n)))` with
//! `n = rms_norm(x)`, then `x' = h + down(silu(gate(m)) · up(m))` with `m = rms_norm(h)`;
//! after the last block a final RMSNorm and the LM head (the embedding matrix when tied).

use std::sync::atomic::{AtomicU64, Ordering};

use crate::backend::{
    blocks_for, AttentionShape, Backend, Batch, HostTensor, KvType, Logits as BatchLogits, RowKind,
};
use crate::error::{Error, Result};
use crate::model::config::LlamaConfig;
use crate::model::rope::inv_freq;
use crate::model::CheckedModel;

struct Block<W> {
    attn_norm: W,
    q: W,
    k: W,
    v: W,
    o: W,
    mlp_norm: W,
    gate: W,
    up: W,
    down: W,
}

/// A model loaded on a backend.
pub struct Llama<B: Backend> {
    /// Hyper-parameters.
    pub config: LlamaConfig,
    backend: B,
    embed: B::Weight,
    blocks: Vec<Block<B::Weight>>,
    norm: B::Weight,
    lm_head: Option<B::Weight>,
    inv_freq: Vec<f32>,
    weight_bytes: u64,
    kv: KvType,
    id: u64,
}

/// One sequence with a KV pool of its own: the single-request path (`Runtime::generate`,
/// `cocoon logits`) on the same batched pass the engine runs.
pub struct Session<B: Backend> {
    pool: B::Pool,
    table: Vec<u32>,
    len: usize,
    capacity: usize,
    model: u64,
    work: Workspace<B>,
}

impl<B: Backend> Session<B> {
    /// Positions already in the cache.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing was fed yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Positions the session can hold.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Its KV pool (the CPU backend's tells the memory it holds).
    pub fn pool(&self) -> &B::Pool {
        &self.pool
    }
}

/// The activations of a pass of `rows` rows of which `count` get logits.
pub struct Buffers<B: Backend> {
    x: B::Buf,
    n: B::Buf,
    q: B::Buf,
    k: B::Buf,
    v: B::Buf,
    att: B::Buf,
    proj: B::Buf,
    gate: B::Buf,
    up: B::Buf,
    selected: B::Buf,
    normed: B::Buf,
    logits: B::Buf,
}

impl<B: Backend> Buffers<B> {
    fn new(
        be: &B,
        c: &LlamaConfig,
        shape: AttentionShape,
        rows: usize,
        count: usize,
    ) -> Result<Self> {
        let h = c.hidden_size;
        Ok(Buffers {
            x: be.alloc(rows * h)?,
            n: be.alloc(rows * h)?,
            q: be.alloc(rows * shape.q_dim())?,
            k: be.alloc(rows * shape.kv_dim())?,
            v: be.alloc(rows * shape.kv_dim())?,
            att: be.alloc(rows * shape.q_dim())?,
            proj: be.alloc(rows * h)?,
            gate: be.alloc(rows * c.intermediate_size)?,
            up: be.alloc(rows * c.intermediate_size)?,
            selected: be.alloc(count * h)?,
            normed: be.alloc(count * h)?,
            logits: be.alloc(count * c.vocab_size)?,
        })
    }

    /// Gives every buffer back to the backend ([`Backend::recycle`]).
    fn recycle(self, be: &B) {
        let Buffers {
            x,
            n,
            q,
            k,
            v,
            att,
            proj,
            gate,
            up,
            selected,
            normed,
            logits,
        } = self;
        for buf in [x, n, q, k, v, att, proj, gate, up, selected, normed, logits] {
            be.recycle(buf);
        }
    }
}

/// Activation buffers kept between passes. The buffers of a pass made only of decode rows are
/// kept per row count, for as long as the workspace lives: a backend that records such a pass
/// (CUDA graphs) finds the same buffers when it replays it. Passes with prompt rows get buffers
/// of their size from the backend and give them back after the pass ([`Backend::recycle`]).
pub struct Workspace<B: Backend> {
    decode: Vec<(usize, Buffers<B>)>,
}

impl<B: Backend> Default for Workspace<B> {
    fn default() -> Self {
        Workspace { decode: Vec::new() }
    }
}

/// Most positions one session may hold (its pool is sized to them).
pub const MAX_SESSION_POSITIONS: usize = 1 << 22;

/// Distinct ids of loaded models, so that a session is only fed to the model that made it.
static MODEL_IDS: AtomicU64 = AtomicU64::new(1);

/// What a pass brings back to the host.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Output {
    /// The logits of every logit row (`vocab` values a row).
    Logits,
    /// The greedy choice of every logit row, made on the backend (only ids come back).
    Greedy,
    /// Both.
    Both,
}

/// Which positions' logits a [`Llama::forward`] pass returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Logits {
    /// Only the last position's.
    Last,
    /// Every position's, row after row.
    All,
}

/// The result of a pass, one entry per logit row.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PassResult {
    /// Logits, `vocab` per row, when asked for.
    pub logits: Vec<f32>,
    /// Greedy choices, when asked for.
    pub chosen: Vec<u32>,
}

impl<B: Backend> Llama<B> {
    /// Uploads the verified weights of `model` to `backend`.
    pub fn load(model: &CheckedModel, backend: B) -> Result<Self> {
        let weight = |name: &str| -> Result<B::Weight> {
            let t = model.weights.get(name).ok_or_else(|| {
                Error::format("model.safetensors", format!("tensor {name} is missing"))
            })?;
            let file = model.files.required(&t.file)?;
            backend.upload(HostTensor {
                dtype: t.dtype,
                shape: &t.shape,
                bytes: &file[t.range.clone()],
            })
        };
        let c = &model.config;
        let blocks = (0..c.num_hidden_layers)
            .map(|l| {
                let p = format!("model.layers.{l}");
                Ok(Block {
                    attn_norm: weight(&format!("{p}.input_layernorm.weight"))?,
                    q: weight(&format!("{p}.self_attn.q_proj.weight"))?,
                    k: weight(&format!("{p}.self_attn.k_proj.weight"))?,
                    v: weight(&format!("{p}.self_attn.v_proj.weight"))?,
                    o: weight(&format!("{p}.self_attn.o_proj.weight"))?,
                    mlp_norm: weight(&format!("{p}.post_attention_layernorm.weight"))?,
                    gate: weight(&format!("{p}.mlp.gate_proj.weight"))?,
                    up: weight(&format!("{p}.mlp.up_proj.weight"))?,
                    down: weight(&format!("{p}.mlp.down_proj.weight"))?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        // The KV cache's type follows the embedding table's (16-bit models may keep a 16-bit
        // cache where the backend has one).
        let embed_dtype = model
            .weights
            .get("model.embed_tokens.weight")
            .map_or(crate::model::weights::DType::F32, |t| t.dtype);
        let kv = backend.kv_type(embed_dtype);
        let lm_head = if c.tie_word_embeddings {
            None
        } else {
            Some(weight("lm_head.weight")?)
        };
        Ok(Llama {
            config: c.clone(),
            embed: weight("model.embed_tokens.weight")?,
            norm: weight("model.norm.weight")?,
            blocks,
            lm_head,
            inv_freq: inv_freq(c),
            weight_bytes: model.weights.data_bytes(),
            kv,
            id: MODEL_IDS.fetch_add(1, Ordering::Relaxed),
            backend,
        })
    }

    /// The backend.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// Bytes of weights read per decoded token (all of them).
    pub fn weight_bytes(&self) -> u64 {
        self.weight_bytes
    }

    /// What the KV pools of this model store.
    pub fn kv_type(&self) -> KvType {
        self.kv
    }

    fn attention_shape(&self) -> AttentionShape {
        let c = &self.config;
        AttentionShape {
            heads: c.num_attention_heads,
            kv_heads: c.num_key_value_heads,
            head_dim: c.head_dim,
        }
    }

    /// A KV pool of `blocks` blocks for this model.
    pub fn new_pool(&self, blocks: usize) -> Result<B::Pool> {
        self.backend.new_pool(
            self.config.num_hidden_layers,
            blocks,
            self.attention_shape(),
            self.kv,
        )
    }

    /// A fresh sequence able to hold the whole context.
    pub fn session(&self) -> Result<Session<B>> {
        self.session_with_capacity(self.config.max_position_embeddings)
    }

    /// A fresh sequence able to hold `positions` positions (at most the model's context): a
    /// request needs its prompt plus its `max_tokens`, and the KV cache is sized to that
    /// rather than to a context that may be 128 K positions.
    pub fn session_with_capacity(&self, positions: usize) -> Result<Session<B>> {
        let c = &self.config;
        let capacity = positions.min(c.max_position_embeddings).max(1);
        if capacity > MAX_SESSION_POSITIONS {
            return Err(Error::InvalidRequest(format!(
                "a session of {capacity} positions is more than the {MAX_SESSION_POSITIONS} one sequence may hold"
            )));
        }
        let blocks = blocks_for(capacity);
        Ok(Session {
            pool: self.new_pool(blocks)?,
            table: (0..blocks as u32).collect(),
            len: 0,
            capacity,
            model: self.id,
            work: Workspace::default(),
        })
    }

    /// Feeds `ids` after what `session` holds and returns logits (`vocab` per returned row).
    pub fn forward(
        &self,
        session: &mut Session<B>,
        ids: &[u32],
        which: Logits,
    ) -> Result<Vec<f32>> {
        let which = match which {
            Logits::Last => BatchLogits::Last,
            Logits::All => BatchLogits::All,
        };
        Ok(self.feed(session, ids, which, Output::Logits)?.logits)
    }

    /// Feeds `ids` after what `session` holds and returns the id of the last position's
    /// largest logit (the first on ties), chosen on the backend: only the id comes back.
    pub fn forward_greedy(&self, session: &mut Session<B>, ids: &[u32]) -> Result<u32> {
        let chosen = self
            .feed(session, ids, BatchLogits::Last, Output::Greedy)?
            .chosen;
        chosen
            .first()
            .copied()
            .ok_or_else(|| Error::Backend("the pass chose nothing".into()))
    }

    /// Feeds `ids` to `session` as one chunk: prompt rows, or a decode row when it is one id.
    fn feed(
        &self,
        session: &mut Session<B>,
        ids: &[u32],
        which: BatchLogits,
        output: Output,
    ) -> Result<PassResult> {
        let c = &self.config;
        let rows = ids.len();
        if rows == 0 {
            return Err(Error::InvalidRequest("no tokens to feed".into()));
        }
        if session.model != self.id {
            return Err(Error::InvalidRequest(
                "the session belongs to another loaded model".into(),
            ));
        }
        if session.len + rows > session.capacity {
            return Err(Error::InvalidRequest(
                if session.capacity < c.max_position_embeddings {
                    format!(
                        "{} tokens exceed the session's capacity of {} positions",
                        session.len + rows,
                        session.capacity
                    )
                } else {
                    format!(
                        "{} tokens exceed the model's context of {} positions",
                        session.len + rows,
                        c.max_position_embeddings
                    )
                },
            ));
        }
        let kind = if rows == 1 {
            RowKind::Decode
        } else {
            RowKind::Prompt
        };
        // Only the blocks the positions so far need: a block gets its memory when a pass first
        // names it, so a session sized for its whole context holds what it has fed.
        let table = &session.table[..blocks_for(session.len + rows)];
        let mut batch = Batch::new();
        batch.push(table, session.len, ids, kind, which)?;
        let result = self.run(&mut session.pool, &mut session.work, &batch, output)?;
        session.len += rows;
        Ok(result)
    }

    /// Runs one pass over `batch` (its blocks in `pool`) and brings back what `output` asks
    /// for, one entry per logit row. Ids are checked against the vocabulary first; the caller
    /// owns the block tables (no two sequences may share a block).
    pub fn run(
        &self,
        pool: &mut B::Pool,
        work: &mut Workspace<B>,
        batch: &Batch,
        output: Output,
    ) -> Result<PassResult> {
        let c = &self.config;
        let rows = batch.rows();
        let count = batch.logit_rows().len();
        if rows == 0 {
            return Err(Error::InvalidRequest("no tokens to feed".into()));
        }
        if let Some(bad) = batch.ids().iter().find(|id| **id as usize >= c.vocab_size) {
            return Err(Error::InvalidRequest(format!(
                "token id {bad} is outside the vocabulary of {}",
                c.vocab_size
            )));
        }
        let be = &self.backend;
        let shape = self.attention_shape();
        be.stage(pool, batch)?;
        let prompt_rows = batch.prompt_rows();
        let mut fresh = None;
        let bufs = if prompt_rows == 0 && count == rows {
            match work.decode.iter().position(|(r, _)| *r == rows) {
                Some(i) => &mut work.decode[i].1,
                None => {
                    work.decode
                        .push((rows, Buffers::new(be, c, shape, rows, count)?));
                    let last = work.decode.len() - 1;
                    &mut work.decode[last].1
                }
            }
        } else {
            fresh.insert(Buffers::new(be, c, shape, rows, count)?)
        };
        be.step(pool, &mut |pool| {
            self.layers(pool, bufs, rows, prompt_rows, count)
        })?;
        let vocab = c.vocab_size;
        let mut result = PassResult::default();
        if count > 0 && matches!(output, Output::Logits | Output::Both) {
            result.logits = be.read_rows(&bufs.logits, vocab, 0, count)?;
        }
        if count > 0 && matches!(output, Output::Greedy | Output::Both) {
            result.chosen = be.chosen(pool)?;
        }
        if let Some(bufs) = fresh {
            bufs.recycle(be);
        }
        Ok(result)
    }

    /// The launches of one pass over the staged rows: the blocks, the final norm of the logit
    /// rows, the LM head, and the greedy choice of each logit row.
    fn layers(
        &self,
        pool: &mut B::Pool,
        b: &mut Buffers<B>,
        rows: usize,
        prompt_rows: usize,
        count: usize,
    ) -> Result<()> {
        let c = &self.config;
        let be = &self.backend;
        let shape = self.attention_shape();
        let (h, inter, eps) = (c.hidden_size, c.intermediate_size, c.rms_norm_eps);
        let p = prompt_rows;

        // The residual add that ends each half-block is fused with the norm that follows it;
        // `proj` holds the pending down-projection between blocks.
        be.embed(&self.embed, pool, &mut b.x)?;
        for (l, w) in self.blocks.iter().enumerate() {
            if l == 0 {
                be.rms_norm(&b.x, &w.attn_norm, eps, rows, &mut b.n)?;
            } else {
                be.add_rms_norm(&mut b.x, &b.proj, &w.attn_norm, eps, rows, h, &mut b.n)?;
            }
            be.matmul_shared(
                &b.n,
                &[&w.q, &w.k, &w.v],
                rows,
                p,
                &mut [&mut b.q, &mut b.k, &mut b.v],
            )?;
            be.rope_and_cache(&mut b.q, &b.k, &b.v, pool, l, shape, &self.inv_freq)?;
            be.attention(&b.q, pool, l, shape, &mut b.att)?;
            be.matmul(&b.att, &w.o, rows, p, &mut b.proj)?;
            be.add_rms_norm(&mut b.x, &b.proj, &w.mlp_norm, eps, rows, h, &mut b.n)?;
            be.gate_up_swiglu(&b.n, &w.gate, &w.up, rows, p, inter, &mut b.gate, &mut b.up)?;
            be.matmul(&b.gate, &w.down, rows, p, &mut b.proj)?;
        }
        if !self.blocks.is_empty() {
            be.add(&mut b.x, &b.proj, rows * h)?;
        }
        if count == 0 {
            return Ok(());
        }
        // The LM head runs on the logit rows alone, as decode rows: a row's logits do not
        // depend on how many sequences share the pass.
        be.gather_logit_rows(&b.x, h, pool, &mut b.selected)?;
        be.rms_norm(&b.selected, &self.norm, eps, count, &mut b.normed)?;
        let head = self.lm_head.as_ref().unwrap_or(&self.embed);
        be.matmul(&b.normed, head, count, 0, &mut b.logits)?;
        be.choose(&b.logits, c.vocab_size, count, pool)?;
        Ok(())
    }
}
