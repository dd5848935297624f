//! Compute backends. The forward pass ([`crate::model::llama`]) is written once against
//! [`Backend`]; each backend owns its weights, activations and KV cache.
//!
//! Operations are at the granularity of the CUDA kernels to come: one call is one kernel
//! launch there. Activations are f32, row-major `[rows, width]`; weights keep their stored
//! dtype.

pub mod cpu;
pub mod cuda;

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
    /// One sequence on the backend: its key/value cache, the staged inputs of the pass being
    /// run ([`Backend::stage`]) and the greedy choice of the last pass ([`Backend::choose`]).
    type Cache: Send;

    /// Human-readable name, as recorded in receipts (`cpu`, `cuda:<device>`).
    fn name(&self) -> String;

    /// Uploads a weight (the verified bytes of a pinned file).
    fn upload(&self, tensor: HostTensor<'_>) -> Result<Self::Weight>;

    /// A zeroed buffer of `len` f32.
    fn alloc(&self, len: usize) -> Result<Self::Buf>;

    /// A cache for `layers` layers of `max_positions` positions of the keys and values of
    /// `shape` (`shape.kv_dim()` wide).
    fn new_cache(
        &self,
        layers: usize,
        max_positions: usize,
        shape: AttentionShape,
    ) -> Result<Self::Cache>;

    /// Stages the token ids of the next pass and the position `pos0` of the first one in
    /// `cache`: [`Backend::embed`], [`Backend::rope_and_cache`] and [`Backend::attention`] take
    /// their rows and positions from there. Ids are checked against the vocabulary by
    /// `embed`; `pos0 + ids.len()` must fit the cache.
    fn stage(&self, cache: &mut Self::Cache, ids: &[u32], pos0: usize) -> Result<()>;

    /// `out[r] = table[ids[r]]` as f32 for the ids staged in `cache`.
    fn embed(&self, table: &Self::Weight, cache: &Self::Cache, out: &mut Self::Buf) -> Result<()>;

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

    /// `out[rows, n] = x[rows, k] · wᵀ` for a weight of shape `[n, k]`.
    fn matmul(
        &self,
        x: &Self::Buf,
        w: &Self::Weight,
        rows: usize,
        out: &mut Self::Buf,
    ) -> Result<()>;

    /// Rotates `q` (`[rows, q_dim]`) in place and `k` (`[rows, kv_dim]`) with RoPE for the
    /// staged positions `pos0..pos0 + rows` using `inv_freq` (`head_dim / 2` frequencies,
    /// rotate-half pairing), then writes the rotated keys and the values into the cache of
    /// `layer`.
    #[allow(clippy::too_many_arguments)]
    fn rope_and_cache(
        &self,
        q: &mut Self::Buf,
        k: &Self::Buf,
        v: &Self::Buf,
        cache: &mut Self::Cache,
        layer: usize,
        shape: AttentionShape,
        inv_freq: &[f32],
    ) -> Result<()>;

    /// Causal grouped-query attention of the staged `rows` queries at positions `pos0..` over
    /// the cache of `layer` (positions `0..pos0 + rows`): `out[rows, q_dim]`.
    fn attention(
        &self,
        q: &Self::Buf,
        cache: &mut Self::Cache,
        layer: usize,
        shape: AttentionShape,
        out: &mut Self::Buf,
    ) -> Result<()>;

    /// `gate = silu(gate) · up`, elementwise over `len` values, in place.
    fn swiglu(&self, gate: &mut Self::Buf, up: &Self::Buf, len: usize) -> Result<()>;

    /// `x += y` over `len` values.
    fn add(&self, x: &mut Self::Buf, y: &Self::Buf, len: usize) -> Result<()>;

    /// Copies rows `first..first + count` of width `width` of `x` to the start of `out`.
    fn copy_rows(
        &self,
        x: &Self::Buf,
        width: usize,
        first: usize,
        count: usize,
        out: &mut Self::Buf,
    ) -> Result<()>;

    /// Writes the index of the largest of `logits[0..width]` (the first on ties; NaN never
    /// wins; 0 if all are NaN) to `cache`'s choice slot: greedy decoding without copying the
    /// logits to the host.
    fn choose(&self, logits: &Self::Buf, width: usize, cache: &mut Self::Cache) -> Result<()>;

    /// The id the last [`Backend::choose`] on `cache` wrote.
    fn chosen(&self, cache: &Self::Cache) -> Result<u32>;

    /// Runs `step`, the operations of one pass over the inputs staged in `cache`. A backend may
    /// record a one-token pass the first time and replay the record afterwards without calling
    /// `step` (the CUDA backend's graphs), so `step` must do nothing but backend operations on
    /// buffers that stay the same from token to token. The default runs `step`.
    fn step(
        &self,
        cache: &mut Self::Cache,
        step: &mut dyn FnMut(&mut Self::Cache) -> Result<()>,
    ) -> Result<()> {
        step(cache)
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
