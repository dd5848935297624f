//! The LLaMA-family forward pass, written once for every [`Backend`].
//!
//! Per block: `h = x + o_proj(attn(rope(q_proj(n)), rope(k_proj(n)), v_proj(n)))` with
//! `n = rms_norm(x)`, then `x' = h + down(silu(gate(m)) · up(m))` with `m = rms_norm(h)`;
//! after the last block a final RMSNorm and the LM head (the embedding matrix when tied).

use std::sync::atomic::{AtomicU64, Ordering};

use crate::backend::{AttentionShape, Backend, HostTensor};
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
    id: u64,
}

/// The state of one sequence: its cache on the backend, how many positions it holds and can
/// hold, and the buffers of its one-token passes (kept, so that a recorded decode step finds
/// them again).
pub struct Session<B: Backend> {
    cache: B::Cache,
    len: usize,
    capacity: usize,
    model: u64,
    one: Option<Buffers<B>>,
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
}

/// The activations of a pass of `rows` rows whose last `count` rows get logits.
struct Buffers<B: Backend> {
    x: B::Buf,
    n: B::Buf,
    q: B::Buf,
    k: B::Buf,
    v: B::Buf,
    att: B::Buf,
    proj: B::Buf,
    gate: B::Buf,
    up: B::Buf,
    /// The rows that get logits, when not all of `x`.
    selected: Option<B::Buf>,
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
            selected: if count < rows {
                Some(be.alloc(count * h)?)
            } else {
                None
            },
            normed: be.alloc(count * h)?,
            logits: be.alloc(count * c.vocab_size)?,
        })
    }
}

/// Takes a pass's result from its buffers or the sequence's cache.
type ReadOut<'a, B, R> = dyn FnMut(&B, &Buffers<B>, &<B as Backend>::Cache) -> Result<R> + 'a;

/// Distinct ids of loaded models, so that a session is only fed to the model that made it.
static MODEL_IDS: AtomicU64 = AtomicU64::new(1);

/// Which positions' logits a forward pass returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Logits {
    /// Only the last position's.
    Last,
    /// Every position's, row after row.
    All,
}

impl Logits {
    /// Rows of logits a pass over `fed` tokens returns.
    fn rows(self, fed: usize) -> usize {
        match self {
            Logits::Last => 1,
            Logits::All => fed,
        }
    }
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

    fn attention_shape(&self) -> AttentionShape {
        let c = &self.config;
        AttentionShape {
            heads: c.num_attention_heads,
            kv_heads: c.num_key_value_heads,
            head_dim: c.head_dim,
        }
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
        Ok(Session {
            cache: self
                .backend
                .new_cache(c.num_hidden_layers, capacity, self.attention_shape())?,
            len: 0,
            capacity,
            model: self.id,
            one: None,
        })
    }

    /// Feeds `ids` after what `session` holds and returns logits (`vocab` per returned row).
    pub fn forward(
        &self,
        session: &mut Session<B>,
        ids: &[u32],
        which: Logits,
    ) -> Result<Vec<f32>> {
        let vocab = self.config.vocab_size;
        let rows = which.rows(ids.len());
        self.pass(session, ids, which, &mut |be, bufs, _| {
            be.read_rows(&bufs.logits, vocab, 0, rows)
        })
    }

    /// Feeds `ids` after what `session` holds and returns the id of the last position's
    /// largest logit (the first on ties), chosen on the backend: only the id comes back.
    pub fn forward_greedy(&self, session: &mut Session<B>, ids: &[u32]) -> Result<u32> {
        self.pass(session, ids, Logits::Last, &mut |be, _, cache| {
            be.chosen(cache)
        })
    }

    /// Checks and stages the pass, runs it (a one-token pass through [`Backend::step`], which
    /// may replay a recording of it), then lets `read` take the result from the buffers.
    fn pass<R>(
        &self,
        session: &mut Session<B>,
        ids: &[u32],
        which: Logits,
        read: &mut ReadOut<'_, B, R>,
    ) -> Result<R> {
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
        if let Some(bad) = ids.iter().find(|id| **id as usize >= c.vocab_size) {
            return Err(Error::InvalidRequest(format!(
                "token id {bad} is outside the vocabulary of {}",
                c.vocab_size
            )));
        }
        let be = &self.backend;
        let shape = self.attention_shape();
        let count = which.rows(rows);
        be.stage(&mut session.cache, ids, session.len)?;
        let mut fresh;
        let bufs = if rows == 1 {
            match &mut session.one {
                Some(b) => b,
                none => none.insert(Buffers::new(be, c, shape, 1, 1)?),
            }
        } else {
            fresh = Buffers::new(be, c, shape, rows, count)?;
            &mut fresh
        };
        be.step(&mut session.cache, &mut |cache| {
            self.layers(cache, bufs, rows, count)
        })?;
        session.len += rows;
        read(be, bufs, &session.cache)
    }

    /// The launches of one pass over the staged ids: the blocks, the final norm of the last
    /// `count` rows, the LM head, and the greedy choice when one row gets logits.
    fn layers(
        &self,
        cache: &mut B::Cache,
        b: &mut Buffers<B>,
        rows: usize,
        count: usize,
    ) -> Result<()> {
        let c = &self.config;
        let be = &self.backend;
        let shape = self.attention_shape();
        let (h, inter, eps) = (c.hidden_size, c.intermediate_size, c.rms_norm_eps);

        // The residual add that ends each half-block is fused with the norm that follows it;
        // `proj` holds the pending down-projection between blocks.
        be.embed(&self.embed, cache, &mut b.x)?;
        for (l, w) in self.blocks.iter().enumerate() {
            if l == 0 {
                be.rms_norm(&b.x, &w.attn_norm, eps, rows, &mut b.n)?;
            } else {
                be.add_rms_norm(&mut b.x, &b.proj, &w.attn_norm, eps, rows, h, &mut b.n)?;
            }
            be.matmul(&b.n, &w.q, rows, &mut b.q)?;
            be.matmul(&b.n, &w.k, rows, &mut b.k)?;
            be.matmul(&b.n, &w.v, rows, &mut b.v)?;
            be.rope_and_cache(&mut b.q, &b.k, &b.v, cache, l, shape, &self.inv_freq)?;
            be.attention(&b.q, cache, l, shape, &mut b.att)?;
            be.matmul(&b.att, &w.o, rows, &mut b.proj)?;
            be.add_rms_norm(&mut b.x, &b.proj, &w.mlp_norm, eps, rows, h, &mut b.n)?;
            be.matmul(&b.n, &w.gate, rows, &mut b.gate)?;
            be.matmul(&b.n, &w.up, rows, &mut b.up)?;
            be.swiglu(&mut b.gate, &b.up, rows * inter)?;
            be.matmul(&b.gate, &w.down, rows, &mut b.proj)?;
        }
        if !self.blocks.is_empty() {
            be.add(&mut b.x, &b.proj, rows * h)?;
        }
        let last = match &mut b.selected {
            Some(selected) => {
                be.copy_rows(&b.x, h, rows - count, count, selected)?;
                &*selected
            }
            None => &b.x,
        };
        be.rms_norm(last, &self.norm, eps, count, &mut b.normed)?;
        let head = self.lm_head.as_ref().unwrap_or(&self.embed);
        be.matmul(&b.normed, head, count, &mut b.logits)?;
        if count == 1 {
            be.choose(&b.logits, c.vocab_size, cache)?;
        }
        Ok(())
    }
}
