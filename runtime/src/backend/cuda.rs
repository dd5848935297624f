//! The CUDA backend: the same operations as [`super::cpu`], each one launch of a hand-written
//! kernel from `cocoon-kernels` on the device's single stream.
//!
//! Weights are uploaded once, in their stored dtype, from the verified bytes of the pinned
//! files. Activations and the paged KV pool (f32) live on the device; a forward pass uploads
//! its staged rows (ids, positions, block tables) and downloads only the logits or the greedy
//! ids it returns. Nothing synchronises with the host
//! between launches. Reductions run in a fixed order (no atomics): two runs give identical
//! results.

use cocoon_kernels::cache::KernelCache;
use cocoon_kernels::gpu::Gpu;
use cocoon_kernels::nvrtc::KernelOptions;
use cocoon_kernels::ops::{DeviceWeight, KvPool, StageInput};
use cocoon_kernels::shapes::{Heads, WeightType};
use cudarc::driver::CudaSlice;

use super::{AttentionShape, Backend, Batch, HostTensor, KvType};
use crate::error::{Error, Result};
use crate::model::weights::DType;

/// A CUDA device with the kernels loaded.
#[derive(Debug)]
pub struct CudaBackend {
    gpu: Gpu,
    /// `COCOON_CUDA_KV=f32`: keep f32 KV caches for 16-bit models too.
    f32_kv: bool,
}

impl From<cocoon_kernels::Error> for Error {
    fn from(e: cocoon_kernels::Error) -> Self {
        Error::Backend(format!("cuda: {e}"))
    }
}

fn heads(shape: AttentionShape) -> Heads {
    Heads {
        heads: shape.heads,
        kv_heads: shape.kv_heads,
        head_dim: shape.head_dim,
    }
}

impl CudaBackend {
    /// Opens device `ordinal`, compiling the kernels for it (or loading them from the kernel
    /// cache, [`KernelCache::default_dir`]). Without a driver, a device or NVRTC: an error.
    /// Decode steps are recorded in CUDA graphs unless the environment sets
    /// `COCOON_CUDA_GRAPHS=0` (see [`Gpu::set_graphs`]); 16-bit models keep a BF16 KV cache
    /// unless it sets `COCOON_CUDA_KV=f32`.
    pub fn new(ordinal: usize) -> Result<Self> {
        CudaBackend::with_kernel_options(ordinal, KernelOptions::default())
    }

    /// [`CudaBackend::new`] with the kernels compiled under `kernel` options (`ci/gpu-check`
    /// times a technique against its absence this way; results are the same).
    pub fn with_kernel_options(ordinal: usize, kernel: KernelOptions) -> Result<Self> {
        let cache = KernelCache::default_dir().map(KernelCache::new);
        let gpu = Gpu::open_with(ordinal, cache.as_ref(), kernel)?;
        if std::env::var_os("COCOON_CUDA_GRAPHS").is_some_and(|v| v == "0") {
            gpu.set_graphs(false);
        }
        let f32_kv = std::env::var_os("COCOON_CUDA_KV").is_some_and(|v| v == "f32");
        Ok(CudaBackend { gpu, f32_kv })
    }

    /// The device.
    pub fn gpu(&self) -> &Gpu {
        &self.gpu
    }
}

impl Backend for CudaBackend {
    type Weight = DeviceWeight;
    type Buf = CudaSlice<f32>;
    type Pool = KvPool;

    fn name(&self) -> String {
        format!("cuda:{}", self.gpu.name())
    }

    fn upload(&self, t: HostTensor<'_>) -> Result<DeviceWeight> {
        let (rows, cols) = match *t.shape {
            [n] => (1, n),
            [r, c] => (r, c),
            ref s => {
                return Err(Error::Backend(format!(
                    "weights of shape {s:?} are not supported"
                )))
            }
        };
        let dtype = match t.dtype {
            DType::F32 => WeightType::F32,
            DType::BF16 => WeightType::BF16,
            DType::F16 => WeightType::F16,
        };
        Ok(self.gpu.upload_weight(dtype, rows, cols, t.bytes)?)
    }

    fn alloc(&self, len: usize) -> Result<CudaSlice<f32>> {
        Ok(self.gpu.alloc(len)?)
    }

    /// BF16 for BF16 and F16 models unless `COCOON_CUDA_KV=f32` was set when the backend
    /// was made; f32 for f32 models.
    fn kv_type(&self, weights: DType) -> KvType {
        match weights {
            DType::BF16 | DType::F16 if !self.f32_kv => KvType::BF16,
            _ => KvType::F32,
        }
    }

    fn new_pool(
        &self,
        layers: usize,
        blocks: usize,
        shape: AttentionShape,
        kv: KvType,
    ) -> Result<KvPool> {
        Ok(self.gpu.new_pool(layers, blocks, heads(shape), kv)?)
    }

    fn pool_blocks(&self, pool: &KvPool) -> usize {
        pool.blocks()
    }

    fn release(&self, _pool: &mut KvPool, _blocks: &[u32]) -> Result<()> {
        // Device memory is allocated with the pool; a released block is simply reused.
        Ok(())
    }

    fn stage(&self, pool: &mut KvPool, batch: &Batch) -> Result<()> {
        let (seq_of_row, starts, _) = batch.table_index();
        let row_table: Vec<u32> = seq_of_row.iter().map(|s| starts[*s as usize]).collect();
        Ok(self.gpu.stage(
            pool,
            &StageInput {
                ids: batch.ids(),
                positions: batch.positions(),
                row_table: &row_table,
                tables: batch.tables(),
                logit_rows: batch.logit_rows(),
                prompt_rows: batch.prompt_rows(),
            },
        )?)
    }

    fn embed(&self, table: &DeviceWeight, pool: &KvPool, out: &mut CudaSlice<f32>) -> Result<()> {
        // The largest staged id is checked against the table's rows on the host first.
        Ok(self.gpu.embed_staged(table, pool, out)?)
    }

    fn rms_norm(
        &self,
        x: &CudaSlice<f32>,
        weight: &DeviceWeight,
        eps: f32,
        rows: usize,
        out: &mut CudaSlice<f32>,
    ) -> Result<()> {
        Ok(self.gpu.rms_norm(x, weight, eps, rows, out)?)
    }

    #[allow(clippy::too_many_arguments)]
    fn add_rms_norm(
        &self,
        x: &mut CudaSlice<f32>,
        y: &CudaSlice<f32>,
        weight: &DeviceWeight,
        eps: f32,
        rows: usize,
        width: usize,
        out: &mut CudaSlice<f32>,
    ) -> Result<()> {
        let (r, c) = weight.shape();
        if r * c != width {
            return Err(Error::Backend(format!(
                "add_rms_norm: weight of {} values for rows of {width}",
                r * c
            )));
        }
        Ok(self.gpu.add_rms_norm(x, y, weight, eps, rows, out)?)
    }

    fn matmul(
        &self,
        x: &CudaSlice<f32>,
        w: &DeviceWeight,
        rows: usize,
        prompt_rows: usize,
        out: &mut CudaSlice<f32>,
    ) -> Result<()> {
        Ok(self.gpu.matmul(x, w, rows, prompt_rows, out)?)
    }

    /// Q, K and V (or gate and up): decode rows in one GEMV launch over all the weights.
    fn matmul_shared(
        &self,
        x: &CudaSlice<f32>,
        ws: &[&DeviceWeight],
        rows: usize,
        prompt_rows: usize,
        outs: &mut [&mut CudaSlice<f32>],
    ) -> Result<()> {
        Ok(self.gpu.matmul_shared(x, ws, rows, prompt_rows, outs)?)
    }

    fn rope_and_cache(
        &self,
        q: &mut CudaSlice<f32>,
        k: &CudaSlice<f32>,
        v: &CudaSlice<f32>,
        pool: &mut KvPool,
        layer: usize,
        shape: AttentionShape,
        inv_freq: &[f32],
    ) -> Result<()> {
        Ok(self
            .gpu
            .rope_cache(q, k, v, pool, layer, heads(shape), inv_freq)?)
    }

    fn attention(
        &self,
        q: &CudaSlice<f32>,
        pool: &mut KvPool,
        layer: usize,
        shape: AttentionShape,
        out: &mut CudaSlice<f32>,
    ) -> Result<()> {
        Ok(self.gpu.attention(q, pool, layer, heads(shape), out)?)
    }

    fn swiglu(&self, gate: &mut CudaSlice<f32>, up: &CudaSlice<f32>, len: usize) -> Result<()> {
        Ok(self.gpu.swiglu(gate, up, len)?)
    }

    fn gate_up_swiglu(
        &self,
        x: &CudaSlice<f32>,
        gate_w: &DeviceWeight,
        up_w: &DeviceWeight,
        rows: usize,
        prompt_rows: usize,
        width: usize,
        gate: &mut CudaSlice<f32>,
        up: &mut CudaSlice<f32>,
    ) -> Result<()> {
        if gate_w.shape().0 != width {
            return Err(Error::Backend(format!(
                "gate_up_swiglu: a gate weight of {} rows for width {width}",
                gate_w.shape().0
            )));
        }
        Ok(self
            .gpu
            .gate_up_swiglu(x, gate_w, up_w, rows, prompt_rows, gate, up)?)
    }

    fn add(&self, x: &mut CudaSlice<f32>, y: &CudaSlice<f32>, len: usize) -> Result<()> {
        Ok(self.gpu.add(x, y, len)?)
    }

    fn gather_logit_rows(
        &self,
        x: &CudaSlice<f32>,
        width: usize,
        pool: &KvPool,
        out: &mut CudaSlice<f32>,
    ) -> Result<()> {
        Ok(self.gpu.gather_logit_rows(x, width, pool, out)?)
    }

    fn choose(
        &self,
        logits: &CudaSlice<f32>,
        width: usize,
        rows: usize,
        pool: &mut KvPool,
    ) -> Result<()> {
        Ok(self.gpu.choose(logits, width, rows, pool)?)
    }

    fn chosen(&self, pool: &KvPool) -> Result<Vec<u32>> {
        Ok(self.gpu.chosen(pool)?)
    }

    fn step(
        &self,
        pool: &mut KvPool,
        step: &mut (dyn FnMut(&mut KvPool) -> Result<()> + Send),
    ) -> Result<()> {
        self.gpu.step(pool, step)
    }

    fn read_rows(
        &self,
        x: &CudaSlice<f32>,
        width: usize,
        first: usize,
        count: usize,
    ) -> Result<Vec<f32>> {
        Ok(self.gpu.download(x, first * width, count * width)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_driver_the_backend_is_a_clear_error() {
        if cocoon_kernels::gpu::driver_present() {
            return; // ci/gpu-check exercises the backend on a GPU
        }
        let err = CudaBackend::new(0).unwrap_err().to_string();
        assert!(err.contains("no CUDA driver"), "{err}");
    }
}
