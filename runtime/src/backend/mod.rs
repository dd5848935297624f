//! Compute backends. The forward pass ([`crate::model::llama`]) is written once against
//! [`Backend`]; each backend owns its weights, activations and a paged KV pool.
//!
//! Operations are at the granularity of the CUDA kernels: one call is one kernel launch there.
//! Activations are f32, row-major `[rows, width]`; weights keep their stored dtype. A pass runs
//! over a [`Batch`] of rows from any number of sequences, staged in the pool first
//! ([`Backend::stage`]); every operation treats each row on its own, so a row's values do not
//! depend on which other rows share its pass.

pub mod batch;
pub mod bf16_products;
pub mod cpu;
mod cpu_attention;
mod cpu_memory;
pub mod cuda;
pub mod dot;
#[cfg(target_arch = "x86_64")]
mod dot_v3;

pub use batch::{blocks_for, Batch, Logits, RowKind, KV_BLOCK};
pub use cocoon_kernels::shapes::KvType;

use crate::error::Result;
use crate::model::weights::DType;

/// A weight as stored in a verified file: dtype, shape and little-endian bytes.
#[derive(Clone, Copy, Debug)]
pub struct HostTensor<'a> {
    /// Stored dtype.
    pub dtype: DType,
    /// Shape, row-major (`[rows, cols]` for matrices, `[len]` for vectors).
    pub shape: &'a [usize],
    /// The bytes, `len · dtype.size()` of them.
    pub bytes: &'a [u8],
}

/// Attention geometry of one model.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttentionShape {
    /// Query heads.
    pub heads: usize,
    /// Key/value heads (divides `heads`).
    pub kv_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
}

impl AttentionShape {
    /// Width of all query heads.
    pub fn q_dim(&self) -> usize {
        self.heads * self.head_dim
    }

    /// Width of all key (or value) heads.
    pub fn kv_dim(&self) -> usize {
        self.kv_heads * self.head_dim
    }
}

/// The operations of a LLaMA forward pass.
pub trait Backend: Send + Sync {
    /// A weight uploaded to the backend.
    type Weight: Send + Sync;
    /// An f32 activation buffer.
    type Buf: Send;
    /// A paged key/value pool of [`KV_BLOCK`]-position blocks for every layer, with the staged
    /// inputs of the pass being run ([`Backend::stage`]) and the greedy choices of its last
    /// pass ([`Backend::choose`]).
    type Pool: Send;

    /// Human-readable name, as recorded in receipts (`cpu`, `cuda:<device>`).
    fn name(&self) -> String;

    /// Uploads a weight (the verified bytes of a pinned file).
    fn upload(&self, tensor: HostTensor<'_>) -> Result<Self::Weight>;

    /// A zeroed buffer of `len` f32.
    fn alloc(&self, len: usize) -> Result<Self::Buf>;

    /// Takes back a buffer [`Backend::alloc`] gave that is not needed any more: a backend may
    /// keep its memory for a later `alloc` (freeing it is also right).
    fn recycle(&self, buf: Self::Buf) {
        drop(buf);
    }

    /// What this backend's KV pool stores for a model whose weights are `weights`: f32 unless
    /// the backend keeps a 16-bit cache for 16-bit models (CUDA). The CPU keeps f32.
    fn kv_type(&self, weights: DType) -> KvType {
        let _ = weights;
        KvType::F32
    }

    /// A pool of `blocks` blocks for `layers` layers of keys and values of `shape`
    /// (`shape.kv_dim()` wide), holding `kv` values (one [`Backend::kv_type`] gave; another
    /// is an error). A backend may give a block memory only when a staged batch first names
    /// it, and take it back at [`Backend::release`].
    fn new_pool(
        &self,
        layers: usize,
        blocks: usize,
        shape: AttentionShape,
        kv: KvType,
    ) -> Result<Self::Pool>;

    /// Blocks of the pool.
    fn pool_blocks(&self, pool: &Self::Pool) -> usize;

    /// Says that `blocks` hold nothing any more (a sequence finished): a backend may free them.
    fn release(&self, pool: &mut Self::Pool, blocks: &[u32]) -> Result<()>;

    /// Stages the rows of the next pass in `pool`: [`Backend::embed`],
    /// [`Backend::rope_and_cache`], [`Backend::attention`] and [`Backend::gather_logit_rows`]
    /// take their ids, positions, slots and tables from there. Every block a table names must
    /// be in the pool; ids are checked against the vocabulary by `embed`.
    fn stage(&self, pool: &mut Self::Pool, batch: &Batch) -> Result<()>;

    /// `out[r] = table[ids[r]]` as f32 for the ids staged in `pool`.
    fn embed(&self, table: &Self::Weight, pool: &Self::Pool, out: &mut Self::Buf) -> Result<()>;

    /// `out[r] = x[r] / sqrt(mean(x[r]²) + eps) · weight` for each of `rows` rows.
    fn rms_norm(
        &self,
        x: &Self::Buf,
        weight: &Self::Weight,
        eps: f32,
        rows: usize,
        out: &mut Self::Buf,
    ) -> Result<()>;

    /// `x += y` over `rows` rows, then `out = rms_norm(x)`: the residual add fused with the
    /// norm that follows it. The default runs [`Backend::add`] then [`Backend::rms_norm`].
    #[allow(clippy::too_many_arguments)]
    fn add_rms_norm(
        &self,
        x: &mut Self::Buf,
        y: &Self::Buf,
        weight: &Self::Weight,
        eps: f32,
        rows: usize,
        width: usize,
        out: &mut Self::Buf,
    ) -> Result<()> {
        self.add(x, y, rows * width)?;
        self.rms_norm(x, weight, eps, rows, out)
    }

    /// `out[rows, n] = x[rows, k] · wᵀ` for a weight of shape `[n, k]`; the first
    /// `prompt_rows` rows are prompt rows, the rest decode rows ([`RowKind`]).
    fn matmul(
        &self,
        x: &Self::Buf,
        w: &Self::Weight,
        rows: usize,
        prompt_rows: usize,
        out: &mut Self::Buf,
    ) -> Result<()>;

    /// `outs[i] = x · ws[i]ᵀ` for several weights that read the same input (Q, K and V; gate and
    /// up), in one call so that a backend may run them as one parallel region. Each output is
    /// exactly what [`Backend::matmul`] gives for its weight; by default, one call each.
    fn matmul_shared(
        &self,
        x: &Self::Buf,
        ws: &[&Self::Weight],
        rows: usize,
        prompt_rows: usize,
        outs: &mut [&mut Self::Buf],
    ) -> Result<()> {
        for (w, out) in ws.iter().zip(outs.iter_mut()) {
            self.matmul(x, w, rows, prompt_rows, out)?;
        }
        Ok(())
    }

    /// Rotates `q` (`[rows, q_dim]`) in place and `k` (`[rows, kv_dim]`) with RoPE at each
    /// staged row's position using `inv_freq` (`head_dim / 2` frequencies, rotate-half
    /// pairing), then writes the rotated keys and the values to each row's slot of `layer`.
    #[allow(clippy::too_many_arguments)]
    fn rope_and_cache(
        &self,
        q: &mut Self::Buf,
        k: &Self::Buf,
        v: &Self::Buf,
        pool: &mut Self::Pool,
        layer: usize,
        shape: AttentionShape,
        inv_freq: &[f32],
    ) -> Result<()>;

    /// Causal grouped-query attention of each staged row over its own sequence's keys and
    /// values of `layer` at positions `0..=position`: `out[rows, q_dim]`.
    fn attention(
        &self,
        q: &Self::Buf,
        pool: &mut Self::Pool,
        layer: usize,
        shape: AttentionShape,
        out: &mut Self::Buf,
    ) -> Result<()>;

    /// `gate = silu(gate) · up`, elementwise over `len` values, in place.
    fn swiglu(&self, gate: &mut Self::Buf, up: &Self::Buf, len: usize) -> Result<()>;

    /// The MLP's first half, `gate = silu(x · gate_wᵀ) · (x · up_wᵀ)` for `rows` rows of
    /// width `width`: by default [`Backend::matmul_shared`] over both weights, then
    /// [`Backend::swiglu`]; a backend may fuse them with the same result. `up` is scratch
    /// afterwards.
    #[allow(clippy::too_many_arguments)]
    fn gate_up_swiglu(
        &self,
        x: &Self::Buf,
        gate_w: &Self::Weight,
        up_w: &Self::Weight,
        rows: usize,
        prompt_rows: usize,
        width: usize,
        gate: &mut Self::Buf,
        up: &mut Self::Buf,
    ) -> Result<()> {
        self.matmul_shared(
            x,
            &[gate_w, up_w],
            rows,
            prompt_rows,
            &mut [&mut *gate, &mut *up],
        )?;
        self.swiglu(gate, up, rows * width)
    }

    /// `x += y` over `len` values.
    fn add(&self, x: &mut Self::Buf, y: &Self::Buf, len: usize) -> Result<()>;

    /// Copies the staged logit rows of `x` (width `width`), in order, to the start of `out`.
    fn gather_logit_rows(
        &self,
        x: &Self::Buf,
        width: usize,
        pool: &Self::Pool,
        out: &mut Self::Buf,
    ) -> Result<()>;

    /// For each of the `rows` rows of `logits` (width `width`), writes the index of its largest
    /// value (the first on ties; NaN never wins; 0 if all are NaN) to `pool`'s choices: greedy
    /// decoding without copying the logits to the host.
    fn choose(
        &self,
        logits: &Self::Buf,
        width: usize,
        rows: usize,
        pool: &mut Self::Pool,
    ) -> Result<()>;

    /// The ids the last [`Backend::choose`] on `pool` wrote.
    fn chosen(&self, pool: &Self::Pool) -> Result<Vec<u32>>;

    /// Runs `step`, the operations of one pass over the inputs staged in `pool`. A backend may
    /// record a pass of decode rows the first time and replay the record afterwards without
    /// calling `step` (the CUDA backend's graphs), so `step` must do nothing but backend
    /// operations on buffers that stay the same from step to step; a backend may also run it on
    /// a thread of its own (the CPU backend runs the pass on a worker of its thread pool). The
    /// default runs `step`.
    fn step(
        &self,
        pool: &mut Self::Pool,
        step: &mut (dyn FnMut(&mut Self::Pool) -> Result<()> + Send),
    ) -> Result<()> {
        step(pool)
    }

    /// Copies rows `first..first + count` of width `width` out of `x` to the host.
    fn read_rows(
        &self,
        x: &Self::Buf,
        width: usize,
        first: usize,
        count: usize,
    ) -> Result<Vec<f32>>;
}
