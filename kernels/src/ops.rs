//! One typed launch wrapper per kernel. Each checks its shapes ([`crate::shapes`]) and then
//! launches on the device's stream; `unsafe` is confined to the launch itself, whose SAFETY
//! comment ties the argument list to the kernel's signature and the checked shapes to the
//! indices the kernel touches.

use cudarc::driver::{CudaSlice, DeviceRepr, LaunchConfig, PushKernelArg};

use crate::error::{shape, Result};
use crate::gpu::Gpu;
use crate::graph::StepGraphs;
use crate::shapes::{self, Heads, WeightType, ATT_WARPS, GEMM_TILE, GEMV_WARPS};

/// A weight on the device in its stored type, row-major `[rows, cols]`.
pub struct DeviceWeight {
    data: CudaSlice<u8>,
    dtype: WeightType,
    rows: usize,
    cols: usize,
}

impl DeviceWeight {
    /// Stored type.
    pub fn dtype(&self) -> WeightType {
        self.dtype
    }

    /// `[rows, cols]`.
    pub fn shape(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }

    /// Bytes on the device.
    pub fn bytes(&self) -> usize {
        self.data.len()
    }

    /// The device bytes.
    pub fn data(&self) -> &CudaSlice<u8> {
        &self.data
    }
}

/// The token ids and first position of the pass about to run, as staged on the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Staged {
    /// Rows (tokens) of the pass.
    pub rows: usize,
    /// Position of the first row.
    pub pos0: usize,
    /// The largest staged id (checked against the embedding table before the gather).
    pub max_id: u32,
}

/// One sequence on the device: a key/value cache of `layers` slabs of `[positions, kv_dim]`
/// f32 for keys and for values, the split-K workspace of decode attention, the staged inputs
/// of the pass being run (token ids and first position, read by the kernels from device
/// memory so that a recorded step replays with new ones), the greedy choice of the last pass,
/// and the recorded decode steps.
pub struct KvCache {
    k: CudaSlice<f32>,
    v: CudaSlice<f32>,
    workspace: CudaSlice<f32>,
    ids: CudaSlice<u32>,
    pos0: CudaSlice<i32>,
    chosen: CudaSlice<u32>,
    staged: Option<Staged>,
    pub(crate) graphs: StepGraphs,
    layers: usize,
    positions: usize,
    kv_dim: usize,
}

impl KvCache {
    /// Positions per layer.
    pub fn positions(&self) -> usize {
        self.positions
    }

    /// What [`Gpu::stage`] last staged.
    pub fn staged(&self) -> Result<Staged> {
        self.staged
            .ok_or_else(|| shape("kv cache", "no token ids were staged for this pass"))
    }

    fn slab(&self, layer: usize) -> Result<std::ops::Range<usize>> {
        if layer >= self.layers {
            return Err(shape(
                "kv cache",
                format!("layer {layer} of {}", self.layers),
            ));
        }
        let n = self.positions * self.kv_dim;
        Ok(layer * n..(layer + 1) * n)
    }
}

/// RoPE frequencies passed by value (`struct InvFreq` in rope.cu).
#[repr(C)]
#[derive(Clone, Copy)]
struct InvFreq([f32; shapes::ROPE_MAX_HALF]);

// SAFETY: a plain array of f32 with C layout, the same size and layout as rope.cu's
// `struct InvFreq { float f[ROPE_MAX_HALF]; }` (the constant is checked against the source).
unsafe impl DeviceRepr for InvFreq {}

fn grid(x: usize, y: usize, block: usize) -> LaunchConfig {
    // Every caller bounded x and y by i32 (shapes::dim) and y by 65535 (grid limit).
    LaunchConfig {
        grid_dim: (x as u32, y as u32, 1),
        block_dim: (block as u32, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// Blocks of a grid-stride loop over `len` values.
fn stride_blocks(len: usize) -> usize {
    len.div_ceil(256).clamp(1, 65_535)
}

impl Gpu {
    /// Copies a weight's verified bytes to the device.
    pub fn upload_weight(
        &self,
        dtype: WeightType,
        rows: usize,
        cols: usize,
        bytes: &[u8],
    ) -> Result<DeviceWeight> {
        let want = rows
            .checked_mul(cols)
            .and_then(|n| n.checked_mul(dtype.size()))
            .ok_or_else(|| shape("upload", format!("{rows} × {cols} overflows")))?;
        if bytes.len() != want {
            return Err(shape(
                "upload",
                format!(
                    "{} bytes for a {rows} × {cols} {dtype:?} weight ({want} expected)",
                    bytes.len()
                ),
            ));
        }
        Ok(DeviceWeight {
            data: self.stream.clone_htod(bytes)?,
            dtype,
            rows,
            cols,
        })
    }

    /// A zeroed f32 buffer.
    pub fn alloc(&self, len: usize) -> Result<CudaSlice<f32>> {
        Ok(self.stream.alloc_zeros::<f32>(len.max(1))?)
    }

    /// Copies host values to a new device buffer.
    pub fn upload<T: DeviceRepr>(&self, values: &[T]) -> Result<CudaSlice<T>> {
        Ok(self.stream.clone_htod(values)?)
    }

    /// Copies `x[first..first + len]` to the host (waits for the stream).
    pub fn download<T: DeviceRepr + Default + Clone>(
        &self,
        x: &CudaSlice<T>,
        first: usize,
        len: usize,
    ) -> Result<Vec<T>> {
        let view = x
            .try_slice(first..first.saturating_add(len))
            .ok_or_else(|| shape("download", format!("{first}..+{len} of {}", x.len())))?;
        Ok(self.stream.clone_dtoh(&view)?)
    }

    /// Copies `len` values from `x[first..]` to `out[at..]` on the device.
    pub fn copy(
        &self,
        x: &CudaSlice<f32>,
        first: usize,
        len: usize,
        out: &mut CudaSlice<f32>,
        at: usize,
    ) -> Result<()> {
        let (xl, ol) = (x.len(), out.len());
        let src = x
            .try_slice(first..first.saturating_add(len))
            .ok_or_else(|| shape("copy", format!("source {first}..+{len} of {xl}")))?;
        let mut dst = out
            .try_slice_mut(at..at.saturating_add(len))
            .ok_or_else(|| shape("copy", format!("destination {at}..+{len} of {ol}")))?;
        Ok(self.stream.memcpy_dtod(&src, &mut dst)?)
    }

    /// A zeroed cache for `layers` × `positions` × `kv_dim`, with its decode workspace and
    /// room to stage up to `positions` token ids.
    pub fn new_cache(&self, layers: usize, positions: usize, heads: Heads) -> Result<KvCache> {
        heads.check("kv cache")?;
        shapes::dim("kv cache", "positions", positions)?;
        if positions == 0 {
            return Err(shape("kv cache", "no positions"));
        }
        let kv_dim = heads.kv_dim();
        let n = layers
            .checked_mul(positions)
            .and_then(|n| n.checked_mul(kv_dim))
            .ok_or_else(|| shape("kv cache", "size overflows"))?;
        Ok(KvCache {
            k: self.alloc(n)?,
            v: self.alloc(n)?,
            workspace: self.alloc(shapes::decode_workspace(heads, positions))?,
            ids: self.stream.alloc_zeros::<u32>(positions)?,
            pos0: self.stream.alloc_zeros::<i32>(1)?,
            chosen: self.stream.alloc_zeros::<u32>(1)?,
            staged: None,
            graphs: StepGraphs::default(),
            layers,
            positions,
            kv_dim,
        })
    }

    /// Stages the token ids of the next pass and its first position `pos0` in `cache` (two
    /// small host-to-device copies): the embedding, RoPE and attention launches that follow
    /// read them from there.
    pub fn stage(&self, cache: &mut KvCache, ids: &[u32], pos0: usize) -> Result<()> {
        let rows = ids.len();
        if rows == 0 {
            return Err(shape("stage", "no token ids"));
        }
        if pos0
            .checked_add(rows)
            .is_none_or(|end| end > cache.positions)
        {
            return Err(shape(
                "stage",
                format!(
                    "positions {pos0}..{} are past the cache's {}",
                    pos0.saturating_add(rows),
                    cache.positions
                ),
            ));
        }
        let pos0_i = [shapes::dim("stage", "position", pos0)?];
        cache.staged = None;
        self.stream
            .memcpy_htod(ids, &mut cache.ids.slice_mut(0..rows))?;
        self.stream.memcpy_htod(&pos0_i, &mut cache.pos0)?;
        let max_id = ids.iter().copied().max().unwrap_or(0);
        cache.staged = Some(Staged { rows, pos0, max_id });
        Ok(())
    }

    /// `out[r] = table[ids[r]]` for the ids staged in `cache`.
    pub fn embed_staged(
        &self,
        table: &DeviceWeight,
        cache: &KvCache,
        out: &mut CudaSlice<f32>,
    ) -> Result<()> {
        let Staged { rows, max_id, .. } = cache.staged()?;
        if max_id as usize >= table.rows {
            return Err(shape(
                "embed",
                format!(
                    "token id {max_id} is outside a table of {} rows",
                    table.rows
                ),
            ));
        }
        self.embed(table, &cache.ids, rows, out)
    }

    /// `out[r] = table[ids[r]]` for `rows` ids already on the device.
    pub fn embed(
        &self,
        table: &DeviceWeight,
        ids: &CudaSlice<u32>,
        rows: usize,
        out: &mut CudaSlice<f32>,
    ) -> Result<()> {
        shapes::embed(table.rows, table.cols, ids.len(), rows, out.len())?;
        let f = self.function(table.dtype.pick(["embed_f32", "embed_bf16", "embed_f16"]))?;
        let (rows_i, width, vocab) = (rows as i32, table.cols as i32, table.rows as i32);
        let mut b = self.stream.launch_builder(f);
        b.arg(&table.data)
            .arg(ids)
            .arg(out)
            .arg(&rows_i)
            .arg(&width)
            .arg(&vocab);
        // SAFETY: embed_* (table, ids, out, rows, width, vocab): table holds vocab·width
        // elements of its type, ids ≥ rows, out ≥ rows·width (checked); one block per row.
        unsafe { b.launch(grid(rows, 1, 256)) }?;
        Ok(())
    }

    /// RMSNorm of `rows` rows of `x` into `out`.
    pub fn rms_norm(
        &self,
        x: &CudaSlice<f32>,
        weight: &DeviceWeight,
        eps: f32,
        rows: usize,
        out: &mut CudaSlice<f32>,
    ) -> Result<()> {
        let width = weight.rows * weight.cols;
        shapes::rms_norm(x.len(), width, rows, width, out.len())?;
        let f =
            self.function(
                weight
                    .dtype
                    .pick(["rms_norm_f32", "rms_norm_bf16", "rms_norm_f16"]),
            )?;
        let (rows_i, width_i) = (rows as i32, width as i32);
        let mut b = self.stream.launch_builder(f);
        b.arg(x)
            .arg(&weight.data)
            .arg(out)
            .arg(&rows_i)
            .arg(&width_i)
            .arg(&eps);
        // SAFETY: rms_norm_* (x, w, out, rows, width, eps): x and out ≥ rows·width, w = width
        // (checked); one block per row.
        unsafe { b.launch(grid(rows, 1, 256)) }?;
        Ok(())
    }

    /// `x += y`, then RMSNorm of `x` into `out` (the residual add fused with the next norm).
    pub fn add_rms_norm(
        &self,
        x: &mut CudaSlice<f32>,
        y: &CudaSlice<f32>,
        weight: &DeviceWeight,
        eps: f32,
        rows: usize,
        out: &mut CudaSlice<f32>,
    ) -> Result<()> {
        let width = weight.rows * weight.cols;
        shapes::rms_norm(x.len().min(y.len()), width, rows, width, out.len())?;
        let f = self.function(weight.dtype.pick([
            "add_rms_norm_f32",
            "add_rms_norm_bf16",
            "add_rms_norm_f16",
        ]))?;
        let (rows_i, width_i) = (rows as i32, width as i32);
        let mut b = self.stream.launch_builder(f);
        b.arg(x)
            .arg(y)
            .arg(&weight.data)
            .arg(out)
            .arg(&rows_i)
            .arg(&width_i)
            .arg(&eps);
        // SAFETY: add_rms_norm_* (x, y, w, out, rows, width, eps): x, y, out ≥ rows·width,
        // w = width (checked); one block per row.
        unsafe { b.launch(grid(rows, 1, 256)) }?;
        Ok(())
    }

    /// `out[rows, n] = x[rows, k] · wᵀ`: GEMV for one row or f32 weights, the tensor-core
    /// GEMM for several rows of BF16/F16 weights.
    pub fn matmul(
        &self,
        x: &CudaSlice<f32>,
        w: &DeviceWeight,
        rows: usize,
        out: &mut CudaSlice<f32>,
    ) -> Result<()> {
        shapes::matmul(x.len(), w.rows, w.cols, rows, out.len())?;
        if rows == 1 || w.dtype == WeightType::F32 {
            self.gemv(x, w, rows, out)
        } else {
            self.gemm(x, w, rows, out)
        }
    }

    /// The GEMV kernel for any number of rows (checked by the caller or here).
    pub fn gemv(
        &self,
        x: &CudaSlice<f32>,
        w: &DeviceWeight,
        rows: usize,
        out: &mut CudaSlice<f32>,
    ) -> Result<()> {
        shapes::matmul(x.len(), w.rows, w.cols, rows, out.len())?;
        let f = self.function(w.dtype.pick(["gemv_f32", "gemv_bf16", "gemv_f16"]))?;
        let (n, k) = (w.rows as i32, w.cols as i32);
        let mut b = self.stream.launch_builder(f);
        b.arg(&w.data).arg(x).arg(out).arg(&n).arg(&k);
        // SAFETY: gemv_* (W, x, y, n, k): W holds n·k elements, x ≥ rows·k, y ≥ rows·n
        // (checked); grid (⌈n/GEMV_WARPS⌉, rows), rows ≤ 65535; warps past n return.
        unsafe { b.launch(grid(w.rows.div_ceil(GEMV_WARPS), rows, 32 * GEMV_WARPS)) }?;
        Ok(())
    }

    /// The tensor-core GEMM (BF16/F16 weights only).
    pub fn gemm(
        &self,
        x: &CudaSlice<f32>,
        w: &DeviceWeight,
        rows: usize,
        out: &mut CudaSlice<f32>,
    ) -> Result<()> {
        shapes::matmul(x.len(), w.rows, w.cols, rows, out.len())?;
        let f = self.function(match w.dtype {
            WeightType::BF16 => "gemm_bf16",
            WeightType::F16 => "gemm_f16",
            WeightType::F32 => return Err(shape("gemm", "f32 weights have no tensor-core path")),
        })?;
        let (m, n, k) = (rows as i32, w.rows as i32, w.cols as i32);
        let mut b = self.stream.launch_builder(f);
        b.arg(x).arg(&w.data).arg(out).arg(&m).arg(&n).arg(&k);
        // SAFETY: gemm_* (X, W, Y, m, n, k): X ≥ m·k, W = n·k, Y ≥ m·n (checked); every load
        // and store is guarded by m, n, k; grid (⌈n/64⌉, ⌈m/64⌉) with m ≤ 65535.
        unsafe {
            b.launch(grid(
                w.rows.div_ceil(GEMM_TILE),
                rows.div_ceil(GEMM_TILE),
                shapes::GEMM_THREADS,
            ))
        }?;
        Ok(())
    }

    /// Rotates `q` in place and `k`, writing keys and values of the staged positions
    /// `pos0..pos0 + rows` into `layer` of `cache`.
    #[allow(clippy::too_many_arguments)]
    pub fn rope_cache(
        &self,
        q: &mut CudaSlice<f32>,
        k: &CudaSlice<f32>,
        v: &CudaSlice<f32>,
        cache: &mut KvCache,
        layer: usize,
        heads: Heads,
        inv_freq: &[f32],
    ) -> Result<()> {
        let Staged { rows, pos0, .. } = cache.staged()?;
        shapes::rope(
            heads,
            q.len(),
            k.len(),
            v.len(),
            cache.positions,
            cache.kv_dim,
            rows,
            pos0,
            inv_freq.len(),
        )?;
        let slab = cache.slab(layer)?;
        let mut freq = InvFreq([0.0; shapes::ROPE_MAX_HALF]);
        freq.0[..inv_freq.len()].copy_from_slice(inv_freq);
        let f = self.function("rope_cache")?;
        let mut kc = cache.k.slice_mut(slab.clone());
        let mut vc = cache.v.slice_mut(slab);
        let (rows_i, h, kvh, d) = (
            rows as i32,
            heads.heads as i32,
            heads.kv_heads as i32,
            heads.head_dim as i32,
        );
        let mut b = self.stream.launch_builder(f);
        b.arg(q).arg(k).arg(v).arg(&mut kc).arg(&mut vc);
        b.arg(&rows_i)
            .arg(&cache.pos0)
            .arg(&h)
            .arg(&kvh)
            .arg(&d)
            .arg(&freq);
        // SAFETY: rope_cache (q, k, v, k_cache, v_cache, rows, pos0p, heads, kv_heads,
        // head_dim, InvFreq by value): q ≥ rows·q_dim, k and v ≥ rows·kv_dim, the layer slabs
        // hold positions·kv_dim, *pos0p is the staged pos0 with pos0 + rows ≤ positions,
        // head_dim/2 frequencies ≤ 256 (checked); one block per row.
        unsafe { b.launch(grid(rows, 1, 128)) }?;
        Ok(())
    }

    /// Causal GQA attention of the staged `rows` queries at `pos0..` over `layer` of `cache`.
    /// One query row is decode: split-K over [`shapes::decode_grid_chunks`] chunks.
    pub fn attention(
        &self,
        q: &CudaSlice<f32>,
        cache: &mut KvCache,
        layer: usize,
        heads: Heads,
        out: &mut CudaSlice<f32>,
    ) -> Result<()> {
        let Staged { rows, pos0, .. } = cache.staged()?;
        shapes::attention(
            heads,
            q.len(),
            cache.positions,
            cache.kv_dim,
            rows,
            pos0,
            out.len(),
            cache.workspace.len(),
        )?;
        let slab = cache.slab(layer)?;
        let kc = cache.k.slice(slab.clone());
        let vc = cache.v.slice(slab);
        let scale = 1.0 / (heads.head_dim as f32).sqrt();
        let (h, kvh, d) = (
            heads.heads as i32,
            heads.kv_heads as i32,
            heads.head_dim as i32,
        );
        if rows > 1 {
            let rows_i = rows as i32;
            let f = self.function("attn_prefill")?;
            let mut b = self.stream.launch_builder(f);
            b.arg(q).arg(&kc).arg(&vc).arg(out);
            b.arg(&rows_i)
                .arg(&cache.pos0)
                .arg(&h)
                .arg(&kvh)
                .arg(&d)
                .arg(&scale);
            // SAFETY: attn_prefill (q, k_cache, v_cache, out, rows, pos0p, heads, kv_heads,
            // d, scale): q and out ≥ rows·q_dim, *pos0p is the staged pos0 and the slabs hold
            // ≥ (pos0 + rows)·kv_dim, d ≤ 256 and heads a multiple of kv_heads (checked); grid
            // (heads, ⌈rows/4⌉).
            unsafe { b.launch(grid(heads.heads, rows.div_ceil(ATT_WARPS), 32 * ATT_WARPS)) }?;
            return Ok(());
        }
        let chunks = shapes::decode_grid_chunks(pos0, cache.positions);
        let f = self.function("attn_decode")?;
        let mut b = self.stream.launch_builder(f);
        b.arg(q).arg(&kc).arg(&vc).arg(&mut cache.workspace);
        b.arg(&cache.pos0).arg(&h).arg(&kvh).arg(&d).arg(&scale);
        // SAFETY: attn_decode (q, k_cache, v_cache, partial, pos0p, heads, kv_heads, d,
        // scale): q ≥ q_dim, *pos0p is the staged pos0 and the slabs hold ≥ (pos0 + 1)·kv_dim,
        // the workspace ≥ heads·chunks·(d + 2) (checked); grid (heads, chunks), chunks within
        // the cache; a chunk past pos0 reads no key.
        unsafe { b.launch(grid(heads.heads, chunks, 32 * ATT_WARPS)) }?;
        let chunks_i = chunks as i32;
        let f = self.function("attn_decode_combine")?;
        let mut b = self.stream.launch_builder(f);
        b.arg(&cache.workspace).arg(out).arg(&chunks_i).arg(&d);
        // SAFETY: attn_decode_combine (partial, out, chunks, d): the partials written above,
        // out ≥ heads·d (checked); one block per head.
        unsafe { b.launch(grid(heads.heads, 1, 128)) }?;
        Ok(())
    }

    /// `gate = silu(gate) · up` over `len` values.
    pub fn swiglu(&self, gate: &mut CudaSlice<f32>, up: &CudaSlice<f32>, len: usize) -> Result<()> {
        self.elementwise("swiglu", gate, up, len)
    }

    /// `x += y` over `len` values.
    pub fn add(&self, x: &mut CudaSlice<f32>, y: &CudaSlice<f32>, len: usize) -> Result<()> {
        self.elementwise("add", x, y, len)
    }

    /// Launches a `kernel(float* x, const float* y, long long len)` grid-stride kernel.
    fn elementwise(
        &self,
        kernel: &'static str,
        x: &mut CudaSlice<f32>,
        y: &CudaSlice<f32>,
        len: usize,
    ) -> Result<()> {
        shapes::elementwise(kernel, x.len(), y.len(), len)?;
        let f = self.function(kernel)?;
        let n = len as i64;
        let mut b = self.stream.launch_builder(f);
        b.arg(x).arg(y).arg(&n);
        // SAFETY: swiglu and add both take (float* x, const float* y, long long len) and touch
        // indices < len; both buffers hold ≥ len values (checked); grid-stride loop.
        unsafe { b.launch(grid(stride_blocks(len), 1, 256)) }?;
        Ok(())
    }

    /// The index of each row's largest value (first on ties), into `out`.
    pub fn argmax(
        &self,
        logits: &CudaSlice<f32>,
        rows: usize,
        width: usize,
        out: &mut CudaSlice<u32>,
    ) -> Result<()> {
        shapes::argmax(logits.len(), rows, width, out.len())?;
        let f = self.function("argmax_rows")?;
        let (rows_i, width_i) = (rows as i32, width as i32);
        let mut b = self.stream.launch_builder(f);
        b.arg(logits).arg(out).arg(&rows_i).arg(&width_i);
        // SAFETY: argmax_rows (logits, out, rows, width): logits ≥ rows·width, out ≥ rows
        // (checked); one block of ARGMAX_THREADS per row.
        unsafe { b.launch(grid(rows, 1, shapes::ARGMAX_THREADS)) }?;
        Ok(())
    }

    /// The index of the largest value of `logits[0..width]` (first on ties, NaN never wins)
    /// into `cache`'s choice slot, read back with [`Gpu::chosen`].
    pub fn choose(&self, logits: &CudaSlice<f32>, width: usize, cache: &mut KvCache) -> Result<()> {
        self.argmax(logits, 1, width, &mut cache.chosen)
    }

    /// The id [`Gpu::choose`] wrote (a 4-byte copy; waits for the stream).
    pub fn chosen(&self, cache: &KvCache) -> Result<u32> {
        let id = self.download(&cache.chosen, 0, 1)?;
        id.first()
            .copied()
            .ok_or_else(|| shape("argmax_rows", "no choice was read back"))
    }
}
