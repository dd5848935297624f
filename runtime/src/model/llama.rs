//! The LLaMA-family forward pass, written once for every [`Backend`].
//!
//! Per block: `h = x + o_proj(attn(rope(q_proj(n)), rope(k_proj(n)), v_proj(n)))` with
//! `n = rms_norm(x)`, then `x' = h + down(silu(gate(m)) · up(m))` with `m = rms_norm(h)`;
//! after the last block a final RMSNorm and the LM head (the embedding matrix when tied).

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
}

/// The state of one sequence: its KV cache and how many positions it holds.
pub struct Session<B: Backend> {
    cache: B::Cache,
    len: usize,
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
}

/// Which positions' logits a forward pass returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Logits {
    /// Only the last position's.
    Last,
    /// Every position's, row after row.
    All,
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
        let c = &self.config;
        Ok(Session {
            cache: self.backend.new_cache(
                c.num_hidden_layers,
                c.max_position_embeddings,
                self.attention_shape(),
            )?,
            len: 0,
        })
    }

    /// Feeds `ids` after what `session` holds and returns logits (`vocab` per returned row).
    pub fn forward(
        &self,
        session: &mut Session<B>,
        ids: &[u32],
        which: Logits,
    ) -> Result<Vec<f32>> {
        let c = &self.config;
        let rows = ids.len();
        if rows == 0 {
            return Err(Error::InvalidRequest("no tokens to feed".into()));
        }
        if session.len + rows > c.max_position_embeddings {
            return Err(Error::InvalidRequest(format!(
                "{} tokens exceed the model's context of {} positions",
                session.len + rows,
                c.max_position_embeddings
            )));
        }
        if let Some(bad) = ids.iter().find(|id| **id as usize >= c.vocab_size) {
            return Err(Error::InvalidRequest(format!(
                "token id {bad} is outside the vocabulary of {}",
                c.vocab_size
            )));
        }
        let be = &self.backend;
        let shape = self.attention_shape();
        let (h, qd, kvd, inter) = (
            c.hidden_size,
            shape.q_dim(),
            shape.kv_dim(),
            c.intermediate_size,
        );
        let pos0 = session.len;

        let mut x = be.alloc(rows * h)?;
        let mut n = be.alloc(rows * h)?;
        let mut q = be.alloc(rows * qd)?;
        let mut k = be.alloc(rows * kvd)?;
        let mut v = be.alloc(rows * kvd)?;
        let mut att = be.alloc(rows * qd)?;
        let mut proj = be.alloc(rows * h)?;
        let mut gate = be.alloc(rows * inter)?;
        let mut up = be.alloc(rows * inter)?;

        // The residual add that ends each half-block is fused with the norm that follows it;
        // `proj` holds the pending down-projection between blocks.
        be.embed(&self.embed, ids, &mut x)?;
        let eps = c.rms_norm_eps;
        for (l, b) in self.blocks.iter().enumerate() {
            if l == 0 {
                be.rms_norm(&x, &b.attn_norm, eps, rows, &mut n)?;
            } else {
                be.add_rms_norm(&mut x, &proj, &b.attn_norm, eps, rows, h, &mut n)?;
            }
            be.matmul(&n, &b.q, rows, &mut q)?;
            be.matmul(&n, &b.k, rows, &mut k)?;
            be.matmul(&n, &b.v, rows, &mut v)?;
            be.rope_and_cache(
                &mut q,
                &k,
                &v,
                &mut session.cache,
                l,
                pos0,
                rows,
                shape,
                &self.inv_freq,
            )?;
            be.attention(&q, &mut session.cache, l, pos0, rows, shape, &mut att)?;
            be.matmul(&att, &b.o, rows, &mut proj)?;
            be.add_rms_norm(&mut x, &proj, &b.mlp_norm, eps, rows, h, &mut n)?;
            be.matmul(&n, &b.gate, rows, &mut gate)?;
            be.matmul(&n, &b.up, rows, &mut up)?;
            be.swiglu(&mut gate, &up, rows * inter)?;
            be.matmul(&gate, &b.down, rows, &mut proj)?;
        }
        if !self.blocks.is_empty() {
            be.add(&mut x, &proj, rows * h)?;
        }
        session.len += rows;

        let (first, count) = match which {
            Logits::Last => (rows - 1, 1),
            Logits::All => (0, rows),
        };
        let mut selected = be.alloc(count * h)?;
        be.copy_rows(&x, h, first, count, &mut selected)?;
        let mut normed = be.alloc(count * h)?;
        be.rms_norm(&selected, &self.norm, eps, count, &mut normed)?;
        let mut logits = be.alloc(count * c.vocab_size)?;
        be.matmul(
            &normed,
            self.lm_head.as_ref().unwrap_or(&self.embed),
            count,
            &mut logits,
        )?;
        be.read_rows(&logits, c.vocab_size, 0, count)
    }
}
