//! One typed launch wrapper per kernel. Each checks its shapes ([`crate::shapes`]) and then
//! launches on the device's stream; `unsafe` is confined to the launch itself, whose SAFETY
//! comment ties the argument list to the kernel's signature and the checked shapes to the
//! indices the kernel touches.

use std::sync::{Arc, PoisonError};

use cudarc::driver::{CudaSlice, CudaStream, DeviceRepr, LaunchConfig, ValidAsZeroBits};

use crate::error::{shape, Result};
use crate::gpu::Gpu;
use crate::graph::StepGraphs;
use crate::launch::{ByValue, Launch};
use crate::shapes::{self, GemmPlan, Heads, KvType, WeightType, ATT_WARPS, GEMV_WARPS};

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

/// What the pass about to run staged on the device.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Staged {
    /// Rows (tokens) of the pass.
    pub rows: usize,
    /// Rows that get logits.
    pub logit_rows: usize,
    /// The first rows, computed as prompt rows.
    pub prompt_rows: usize,
    /// The largest position of any row.
    pub max_pos: usize,
    /// The largest staged id (checked against the embedding table before the gather).
    pub max_id: u32,
    /// Tiles of the tensor-core prefill attention over the prompt rows
    /// ([`shapes::prefill_tiles`]).
    pub prefill_tiles: usize,
}

/// Room on the device for the staged inputs of passes of up to `rows` rows and `tables`
/// table entries.
struct StageBufs {
    ids: CudaSlice<u32>,
    positions: CudaSlice<i32>,
    row_table: CudaSlice<i32>,
    tables: CudaSlice<i32>,
    logit_rows: CudaSlice<i32>,
    chosen: CudaSlice<u32>,
    workspace: CudaSlice<f32>,
    /// (first row, rows) of each prefill attention tile: at most one a row.
    tiles: CudaSlice<i32>,
    rows: usize,
    table_len: usize,
}

/// The paged key/value pool on the device: per layer a key slab and a value slab of
/// `blocks · KV_BLOCK` slots of `kv_dim` values (f32 or bf16, [`KvType`]), the staged inputs
/// of the pass being run (ids, positions, block tables, logit rows and prefill tiles, read by
/// the kernels from device memory so that a recorded step replays with new ones), the split-K
/// workspace, the greedy choices of the last pass, and the recorded decode steps.
pub struct KvPool {
    k: CudaSlice<u8>,
    v: CudaSlice<u8>,
    kv: KvType,
    stage: Option<StageBufs>,
    staged: Option<Staged>,
    pub(crate) graphs: StepGraphs,
    heads: Heads,
    layers: usize,
    blocks: usize,
    layer_len: usize,
}

impl KvPool {
    /// Blocks of the pool.
    pub fn blocks(&self) -> usize {
        self.blocks
    }

    /// Slots (positions) of the pool.
    pub fn slots(&self) -> usize {
        self.blocks * shapes::KV_BLOCK
    }

    /// What [`Gpu::stage`] last staged.
    pub fn staged(&self) -> Result<Staged> {
        self.staged
            .ok_or_else(|| shape("kv pool", "no token ids were staged for this pass"))
    }

    fn bufs(&self) -> Result<&StageBufs> {
        self.stage
            .as_ref()
            .ok_or_else(|| shape("kv pool", "no token ids were staged for this pass"))
    }

    /// What the pool stores.
    pub fn kv_type(&self) -> KvType {
        self.kv
    }

    /// The bytes of `layer`'s key (or value) slab.
    fn slab(&self, layer: usize) -> Result<std::ops::Range<usize>> {
        if layer >= self.layers {
            return Err(shape(
                "kv pool",
                format!("layer {layer} of {}", self.layers),
            ));
        }
        let bytes = self.layer_len * self.kv.size();
        Ok(layer * bytes..(layer + 1) * bytes)
    }

    /// The split-K grid's chunk count for the staged pass.
    pub fn split_chunks(&self) -> Result<usize> {
        Ok(shapes::split_grid_chunks(
            self.staged()?.max_pos,
            self.slots(),
        ))
    }
}

/// The host side of a staged pass: per row its id, position and the start of its sequence's
/// block table in `tables`; the tables; the rows that get logits.
#[derive(Clone, Copy, Debug)]
pub struct StageInput<'a> {
    /// Token ids, one a row.
    pub ids: &'a [u32],
    /// Positions, one a row.
    pub positions: &'a [u32],
    /// Per row, where its sequence's table starts in `tables`.
    pub row_table: &'a [u32],
    /// The block tables, one after the other.
    pub tables: &'a [u32],
    /// Rows whose logits are computed, in order.
    pub logit_rows: &'a [u32],
    /// The first rows, computed as prompt rows.
    pub prompt_rows: usize,
}

/// RoPE frequencies passed by value (`struct InvFreq` in rope.cu).
#[repr(C)]
#[derive(Clone, Copy)]
struct InvFreq([f32; shapes::ROPE_MAX_HALF]);

// SAFETY: a plain array of f32 with C layout, the same size and layout as rope.cu's
// `struct InvFreq { float f[ROPE_MAX_HALF]; }` (the constant is checked against the source).
unsafe impl DeviceRepr for InvFreq {}
impl ByValue for InvFreq {}

fn grid3(x: usize, y: usize, z: usize, block: usize) -> LaunchConfig {
    // Every caller bounded x, y and z by 65535 (shapes::attention).
    LaunchConfig {
        grid_dim: (x as u32, y as u32, z as u32),
        block_dim: (block as u32, 1, 1),
        shared_mem_bytes: 0,
    }
}

fn grid_xyz(g: [u32; 3], block: usize) -> LaunchConfig {
    LaunchConfig {
        grid_dim: (g[0], g[1], g[2]),
        block_dim: (block as u32, 1, 1),
        shared_mem_bytes: 0,
    }
}

fn grid(x: usize, y: usize, block: usize) -> LaunchConfig {
    // Every caller bounded x and y by i32 (shapes::dim) and y by 65535 (grid limit).
    LaunchConfig {
        grid_dim: (x as u32, y as u32, 1),
        block_dim: (block as u32, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// `slot`'s buffer, replaced by a zeroed one of `len` values first if it holds fewer.
fn grown<'a, T: DeviceRepr + ValidAsZeroBits>(
    stream: &Arc<CudaStream>,
    slot: &'a mut Option<CudaSlice<T>>,
    len: usize,
) -> Result<&'a mut CudaSlice<T>> {
    if slot.as_ref().is_none_or(|b| b.len() < len) {
        *slot = None; // freed in stream order before the larger one is allocated
        *slot = Some(stream.alloc_zeros::<T>(len.max(1))?);
    }
    slot.as_mut()
        .ok_or_else(|| shape("gemm", "workspace missing after allocation"))
}

/// The first of one to [`shapes::GEMV_MAX_WEIGHTS`] weights read in one launch, after checking
/// that there is one output each and that they share their dtype and width.
fn shared_weights<'a>(ws: &[&'a DeviceWeight], outs: usize) -> Result<&'a DeviceWeight> {
    let first = *ws
        .first()
        .ok_or_else(|| shape("gemv", "no weight to multiply by"))?;
    if ws.len() != outs {
        return Err(shape(
            "gemv",
            format!("{} weights for {outs} outputs", ws.len()),
        ));
    }
    if ws.len() > shapes::GEMV_MAX_WEIGHTS {
        return Err(shape(
            "gemv",
            format!(
                "{} weights in one launch (at most {})",
                ws.len(),
                shapes::GEMV_MAX_WEIGHTS
            ),
        ));
    }
    if let Some(w) = ws
        .iter()
        .find(|w| w.dtype != first.dtype || w.cols != first.cols)
    {
        return Err(shape(
            "gemv",
            format!(
                "weights read in one launch differ: {:?} × {} and {:?} × {}",
                first.dtype, first.cols, w.dtype, w.cols
            ),
        ));
    }
    Ok(first)
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

    /// A zeroed pool of `blocks` blocks for `layers` layers of `heads`, holding `kv` values.
    pub fn new_pool(
        &self,
        layers: usize,
        blocks: usize,
        heads: Heads,
        kv: KvType,
    ) -> Result<KvPool> {
        let (layer_len, total) = shapes::pool(heads, layers, blocks)?;
        let bytes = total
            .checked_mul(kv.size())
            .ok_or_else(|| shape("kv pool", "size overflows"))?;
        Ok(KvPool {
            k: self.stream.alloc_zeros::<u8>(bytes)?,
            v: self.stream.alloc_zeros::<u8>(bytes)?,
            kv,
            stage: None,
            staged: None,
            graphs: StepGraphs::default(),
            heads,
            layers,
            blocks,
            layer_len,
        })
    }

    /// Stages the inputs of the next pass in `pool` (small host-to-device copies): the
    /// embedding, RoPE, attention and gather launches that follow read them from there. The
    /// staging buffers grow to the largest pass seen (the block tables' buffer holds the whole
    /// pool's from the first pass); when they grow, the recorded steps, which hold the old
    /// buffers, are dropped.
    pub fn stage(&self, pool: &mut KvPool, input: &StageInput<'_>) -> Result<()> {
        let rows = input.ids.len();
        if input.positions.len() != rows || input.row_table.len() != rows {
            return Err(shape(
                "stage",
                "ids, positions and row tables differ in length",
            ));
        }
        let max_block = input.tables.iter().copied().max().unwrap_or(0) as usize;
        let max_pos = input.positions.iter().copied().max().unwrap_or(0) as usize;
        shapes::stage(rows, pool.blocks, max_block, max_pos)?;
        let positions_ok = input.positions.iter().zip(input.row_table).all(|(p, t)| {
            (*t as usize).saturating_add(*p as usize / shapes::KV_BLOCK) < input.tables.len()
        });
        let logits_ok = input.logit_rows.iter().all(|r| (*r as usize) < rows);
        if !positions_ok || !logits_ok {
            return Err(shape(
                "stage",
                "a row's position or a logit row is outside its table",
            ));
        }
        let count = input.logit_rows.len();
        let chunks = shapes::split_grid_chunks(max_pos, pool.slots());
        let need_ws = shapes::split_workspace(pool.heads, rows, chunks);
        let grow = pool.stage.as_ref().is_none_or(|b| {
            b.rows < rows || b.table_len < input.tables.len() || b.workspace.len() < need_ws
        });
        if grow {
            let old = pool
                .stage
                .as_ref()
                .map_or((0, 0), |b| (b.rows, b.table_len));
            let cap_rows = rows.max(old.0).next_power_of_two();
            // Room for every block of the pool from the start (4 bytes each): the tables of a
            // pass name each block at most once, and a sequence's table grows as it is fed, so
            // tables never make the buffers grow and drop the recorded steps.
            let cap_tables = input.tables.len().max(old.1).max(pool.blocks).max(1);
            let all_chunks = shapes::split_chunks(pool.slots());
            pool.graphs = StepGraphs::default();
            pool.stage = Some(StageBufs {
                ids: self.stream.alloc_zeros::<u32>(cap_rows)?,
                positions: self.stream.alloc_zeros::<i32>(cap_rows)?,
                row_table: self.stream.alloc_zeros::<i32>(cap_rows)?,
                tables: self.stream.alloc_zeros::<i32>(cap_tables)?,
                logit_rows: self.stream.alloc_zeros::<i32>(cap_rows)?,
                chosen: self.stream.alloc_zeros::<u32>(cap_rows)?,
                tiles: self.stream.alloc_zeros::<i32>(2 * cap_rows)?,
                workspace: self.alloc(shapes::split_workspace(pool.heads, cap_rows, all_chunks))?,
                rows: cap_rows,
                table_len: cap_tables,
            });
        }
        pool.staged = None;
        let as_i32 = |v: &[u32]| v.iter().map(|x| *x as i32).collect::<Vec<i32>>();
        let bufs = pool
            .stage
            .as_mut()
            .ok_or_else(|| shape("stage", "no staging buffers"))?;
        self.stream
            .memcpy_htod(input.ids, &mut bufs.ids.slice_mut(0..rows))?;
        self.stream.memcpy_htod(
            &as_i32(input.positions),
            &mut bufs.positions.slice_mut(0..rows),
        )?;
        self.stream.memcpy_htod(
            &as_i32(input.row_table),
            &mut bufs.row_table.slice_mut(0..rows),
        )?;
        if !input.tables.is_empty() {
            self.stream.memcpy_htod(
                &as_i32(input.tables),
                &mut bufs.tables.slice_mut(0..input.tables.len()),
            )?;
        }
        if count > 0 {
            self.stream.memcpy_htod(
                &as_i32(input.logit_rows),
                &mut bufs.logit_rows.slice_mut(0..count),
            )?;
        }
        let prompt_rows = input.prompt_rows.min(rows);
        let tiles = shapes::prefill_tiles(input.positions, input.row_table, prompt_rows);
        if !tiles.is_empty() {
            self.stream
                .memcpy_htod(&tiles, &mut bufs.tiles.slice_mut(0..tiles.len()))?;
        }
        let max_id = input.ids.iter().copied().max().unwrap_or(0);
        pool.staged = Some(Staged {
            rows,
            logit_rows: count,
            prompt_rows,
            max_pos,
            max_id,
            prefill_tiles: tiles.len() / 2,
        });
        Ok(())
    }

    /// `out[r] = table[ids[r]]` for the ids staged in `pool`.
    pub fn embed_staged(
        &self,
        table: &DeviceWeight,
        pool: &KvPool,
        out: &mut CudaSlice<f32>,
    ) -> Result<()> {
        let Staged { rows, max_id, .. } = pool.staged()?;
        if max_id as usize >= table.rows {
            return Err(shape(
                "embed",
                format!(
                    "token id {max_id} is outside a table of {} rows",
                    table.rows
                ),
            ));
        }
        self.embed(table, &pool.bufs()?.ids, rows, out)
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
        let mut b = Launch::new(self, f);
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
        let mut b = Launch::new(self, f);
        b.arg(x)
            .arg(&weight.data)
            .arg(out)
            .arg(&rows_i)
            .arg(&width_i)
            .arg(&eps);
        // SAFETY: rms_norm_* (x, w, out, rows, width, eps): x and out ≥ rows·width, w = width
        // (checked); one block of NORM_THREADS per row.
        unsafe { b.launch(grid(rows, 1, shapes::NORM_THREADS)) }?;
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
        let mut b = Launch::new(self, f);
        b.arg(x)
            .arg(y)
            .arg(&weight.data)
            .arg(out)
            .arg(&rows_i)
            .arg(&width_i)
            .arg(&eps);
        // SAFETY: add_rms_norm_* (x, y, w, out, rows, width, eps): x, y, out ≥ rows·width,
        // w = width (checked); one block of NORM_THREADS per row.
        unsafe { b.launch(grid(rows, 1, shapes::NORM_THREADS)) }?;
        Ok(())
    }

    /// `out[rows, n] = x[rows, k] · wᵀ`: the first `prompt_rows` rows with the tensor-core
    /// GEMM (BF16/F16 weights), the other rows with the GEMV. Each row's sums depend on its
    /// kernel alone, never on how many rows share the launch.
    pub fn matmul(
        &self,
        x: &CudaSlice<f32>,
        w: &DeviceWeight,
        rows: usize,
        prompt_rows: usize,
        out: &mut CudaSlice<f32>,
    ) -> Result<()> {
        self.matmul_shared(x, &[w], rows, prompt_rows, &mut [out])
    }

    /// `outs[p] = x · ws[p]ᵀ` for one to three weights of one dtype and width that read the
    /// same input (Q, K and V; gate and up): prompt rows through the GEMM, one GEMM per weight;
    /// decode rows through one GEMV launch over all the weights. Each output is exactly what
    /// [`Gpu::matmul`] gives for its weight alone.
    pub fn matmul_shared(
        &self,
        x: &CudaSlice<f32>,
        ws: &[&DeviceWeight],
        rows: usize,
        prompt_rows: usize,
        outs: &mut [&mut CudaSlice<f32>],
    ) -> Result<()> {
        let first = shared_weights(ws, outs.len())?;
        for (w, out) in ws.iter().zip(outs.iter()) {
            shapes::matmul(x.len(), w.rows, w.cols, rows, out.len())?;
        }
        if prompt_rows > rows {
            return Err(shape(
                "matmul",
                format!("{prompt_rows} prompt rows of {rows}"),
            ));
        }
        let gemm_rows = if first.dtype == WeightType::F32 {
            0
        } else {
            prompt_rows
        };
        if gemm_rows > 0 {
            for (w, out) in ws.iter().zip(outs.iter_mut()) {
                self.gemm(x, w, gemm_rows, out)?;
            }
        }
        if rows > gemm_rows {
            self.gemv(x, ws, gemm_rows, rows - gemm_rows, outs)?;
        }
        Ok(())
    }

    /// The MLP's first half: `gate = silu(x · wgᵀ) · (x · wuᵀ)` for `rows` rows of `x`. Prompt
    /// rows (the first `prompt_rows`, BF16/F16 weights) go through the GEMM into `gate` and
    /// `up` and then the swiglu kernel; decode rows through one fused GEMV launch that writes
    /// only `gate` (its bits those of [`Gpu::matmul_shared`] and [`Gpu::swiglu`]). `up` is
    /// scratch afterwards.
    #[allow(clippy::too_many_arguments)]
    pub fn gate_up_swiglu(
        &self,
        x: &CudaSlice<f32>,
        wg: &DeviceWeight,
        wu: &DeviceWeight,
        rows: usize,
        prompt_rows: usize,
        gate: &mut CudaSlice<f32>,
        up: &mut CudaSlice<f32>,
    ) -> Result<()> {
        shared_weights(&[wg, wu], 2)?;
        shapes::matmul(x.len(), wg.rows, wg.cols, rows, gate.len())?;
        shapes::matmul(x.len(), wu.rows, wu.cols, rows, up.len())?;
        if prompt_rows > rows {
            return Err(shape(
                "gate_up_swiglu",
                format!("{prompt_rows} prompt rows of {rows}"),
            ));
        }
        let n = wg.rows;
        let gemm_rows = if wg.dtype == WeightType::F32 {
            0
        } else {
            prompt_rows
        };
        if gemm_rows > 0 {
            self.gemm(x, wg, gemm_rows, gate)?;
            self.gemm(x, wu, gemm_rows, up)?;
            self.swiglu(gate, up, gemm_rows * n)?;
        }
        if rows == gemm_rows {
            return Ok(());
        }
        let (first, decode) = (gemm_rows, rows - gemm_rows);
        let g = shapes::gemv_grid(&[n], decode, 1)?;
        let f = self.function(wg.dtype.pick([
            "gemv_swiglu_f32",
            "gemv_swiglu_bf16",
            "gemv_swiglu_f16",
        ]))?;
        let k = wg.cols;
        let xs = x.slice(first * k..rows * k);
        let mut ys = gate.slice_mut(first * n..rows * n);
        let (n_i, rows_i, k_i) = (n as i32, decode as i32, k as i32);
        let mut b = Launch::new(self, f);
        b.arg(&wg.data)
            .arg(&wu.data)
            .arg(&mut ys)
            .arg(&n_i)
            .arg(&xs)
            .arg(&rows_i)
            .arg(&k_i);
        // SAFETY: gemv_swiglu_* (Wg, Wu, y, n, x, rows, k): Wg and Wu hold n·k elements of one
        // dtype (checked by shared_weights), the y view rows·n and the x view rows·k (both
        // checked by shapes::matmul for all rows); grid from shapes::gemv_grid (each axis ≤
        // 65535); warps past n and row groups past rows return.
        unsafe { b.launch(grid_xyz(g, 32 * GEMV_WARPS)) }?;
        Ok(())
    }

    /// The GEMV kernel for rows `first..first + rows` of `x` into the same rows of each of
    /// `outs`, one launch for all of `ws` (one to three weights of one dtype and width).
    pub fn gemv(
        &self,
        x: &CudaSlice<f32>,
        ws: &[&DeviceWeight],
        first: usize,
        rows: usize,
        outs: &mut [&mut CudaSlice<f32>],
    ) -> Result<()> {
        let w0 = shared_weights(ws, outs.len())?;
        let end = first
            .checked_add(rows)
            .ok_or_else(|| shape("gemv", "rows overflow"))?;
        for (w, out) in ws.iter().zip(outs.iter()) {
            shapes::matmul(x.len(), w.rows, w.cols, end, out.len())?;
        }
        shapes::dim("gemv", "rows", rows)?;
        let n: Vec<usize> = ws.iter().map(|w| w.rows).collect();
        let per_warp = shapes::gemv_per_warp(rows);
        let g = shapes::gemv_grid(&n, rows, per_warp)?;
        let f = self.function(match per_warp {
            4 => w0.dtype.pick(["gemv4_f32", "gemv4_bf16", "gemv4_f16"]),
            2 => w0.dtype.pick(["gemv2_f32", "gemv2_bf16", "gemv2_f16"]),
            _ => w0.dtype.pick(["gemv_f32", "gemv_bf16", "gemv_f16"]),
        })?;
        let k = w0.cols;
        let xs = x.slice(first * k..end * k);
        let mut ys: Vec<_> = outs
            .iter_mut()
            .zip(&n)
            .map(|(o, &n)| o.slice_mut(first * n..end * n))
            .collect();
        let mut ns = [0i32; shapes::GEMV_MAX_WEIGHTS];
        for (d, &s) in ns.iter_mut().zip(&n) {
            *d = s as i32; // bounded by shapes::matmul
        }
        let (rows_i, k_i, null) = (rows as i32, k as i32, 0u64);
        let mut b = Launch::new(self, f);
        for p in 0..shapes::GEMV_MAX_WEIGHTS {
            match ws.get(p) {
                Some(w) => b.arg(&w.data),
                None => b.arg(&null),
            };
        }
        let present = ys.len();
        for y in ys.iter_mut() {
            b.arg(y);
        }
        for _ in present..shapes::GEMV_MAX_WEIGHTS {
            b.arg(&null);
        }
        b.arg(&ns[0]).arg(&ns[1]).arg(&ns[2]);
        b.arg(&xs).arg(&rows_i).arg(&k_i);
        // SAFETY: gemv_* (W0, W1, W2, y0, y1, y2, n0, n1, n2, x, rows, k): each present W_p
        // holds n_p·k elements and its y_p view rows·n_p (checked: first + rows rows fit every
        // buffer); absent weights are null with n_p = 0 and get no blocks; the x view holds
        // rows·k; grid from shapes::gemv_grid (each axis ≤ 65535); warps past n_p, blocks past
        // the last weight's and row groups past rows return.
        unsafe { b.launch(grid_xyz(g, 32 * GEMV_WARPS)) }?;
        Ok(())
    }

    /// The tensor-core GEMM (BF16/F16 weights only), as [`shapes::gemm_plan_for`] plans it:
    /// on `wgmma` where [`Gpu::wgmma`] says so, else in gemm.cu's tiles.
    pub fn gemm(
        &self,
        x: &CudaSlice<f32>,
        w: &DeviceWeight,
        rows: usize,
        out: &mut CudaSlice<f32>,
    ) -> Result<()> {
        let plan = shapes::gemm_plan_for(rows, w.rows, w.cols, self.wgmma());
        self.gemm_planned(plan, x, w, rows, out)
    }

    /// The tensor-core GEMM as `plan` says (any tile shape gives the same bits for the same
    /// split width; benches compare their speeds). A split product runs in chunks of
    /// `plan.chunk_rows` rows through a workspace kept by the device (grown, never shrunk),
    /// each chunk's slices then summed in order.
    pub fn gemm_planned(
        &self,
        plan: GemmPlan,
        x: &CudaSlice<f32>,
        w: &DeviceWeight,
        rows: usize,
        out: &mut CudaSlice<f32>,
    ) -> Result<()> {
        shapes::matmul(x.len(), w.rows, w.cols, rows, out.len())?;
        plan.check(w.cols)?;
        if rows == 0 {
            return Ok(());
        }
        let name = plan
            .tile
            .kernel(w.dtype)
            .ok_or_else(|| shape("gemm", "f32 weights have no tensor-core path"))?;
        let f = self.function(name)?;
        let (n, k) = (w.rows, w.cols);
        let splits = plan.splits(k);
        let k_split = plan.k_split.min(k) as i32;
        if splits == 1 {
            let (gx, gy) = plan.tile.grid(rows, n);
            let mut b = Launch::new(self, f);
            b.arg(x).arg(&w.data).arg(out);
            b.arg(&(rows as i32))
                .arg(&(n as i32))
                .arg(&(k as i32))
                .arg(&k_split);
            // SAFETY: gemm_* (X, W, Y, m, n, k, k_split): X ≥ m·k, W = n·k, Y ≥ m·n (checked);
            // every load and store is guarded by m, n, k; grid (⌈n/bn⌉, ⌈m/bm⌉, 1) with
            // m ≤ 65535, the block the tile's threads (the kernel's launch bounds); one split
            // (k_split = k) writes Y itself.
            unsafe { b.launch(grid(gx, gy, plan.tile.threads())) }?;
            return Ok(());
        }
        let sum = self.function("gemm_sum_splits")?;
        let chunk = plan.chunk_rows.min(rows);
        let mut scratch = self
            .gemm_scratch
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let work = grown(&self.stream, &mut scratch.parts, splits * chunk * n)?;
        for r0 in (0..rows).step_by(chunk) {
            let m = chunk.min(rows - r0);
            let xs = x.slice(r0 * k..(r0 + m) * k);
            let (gx, gy) = plan.tile.grid(m, n);
            let mut b = Launch::new(self, f);
            b.arg(&xs).arg(&w.data).arg(&mut *work);
            b.arg(&(m as i32))
                .arg(&(n as i32))
                .arg(&(k as i32))
                .arg(&k_split);
            // SAFETY: as above over the chunk's m rows of X (a view of m·k); split z writes
            // the z-th m·n slice of `work` (splits·chunk·n ≥ splits·m·n values); z < splits =
            // ⌈k/k_split⌉, each split's columns inside k.
            unsafe { b.launch(grid3(gx, gy, splits, plan.tile.threads())) }?;
            let len = m * n;
            let mut ys = out.slice_mut(r0 * n..r0 * n + len);
            let mut b = Launch::new(self, sum);
            b.arg(&*work)
                .arg(&mut ys)
                .arg(&(len as i32))
                .arg(&(splits as i32));
            // SAFETY: gemm_sum_splits (P, Y, len, splits) reads P[z·len + i] for z < splits,
            // i < len (splits·len ≤ work's length) and writes Y[i], i < len (the view's
            // length); grid-stride over at most 1024 blocks.
            unsafe { b.launch(grid(len.div_ceil(256).min(1024), 1, 256)) }?;
        }
        Ok(())
    }

    /// Rotates `q` in place and `k` at the staged positions, writing keys and values to each
    /// staged row's slot of `layer` in `pool`.
    #[allow(clippy::too_many_arguments)]
    pub fn rope_cache(
        &self,
        q: &mut CudaSlice<f32>,
        k: &CudaSlice<f32>,
        v: &CudaSlice<f32>,
        pool: &mut KvPool,
        layer: usize,
        heads: Heads,
        inv_freq: &[f32],
    ) -> Result<()> {
        let Staged { rows, .. } = pool.staged()?;
        shapes::rope(
            heads,
            q.len(),
            k.len(),
            v.len(),
            pool.heads.kv_dim(),
            rows,
            inv_freq.len(),
        )?;
        let slab = pool.slab(layer)?;
        let mut freq = InvFreq([0.0; shapes::ROPE_MAX_HALF]);
        freq.0[..inv_freq.len()].copy_from_slice(inv_freq);
        let f = self.function(pool.kv.pick(["rope_cache_f32", "rope_cache_bf16"]))?;
        let bufs = pool
            .stage
            .as_ref()
            .ok_or_else(|| shape("rope_cache", "nothing staged"))?;
        let mut kc = pool.k.slice_mut(slab.clone());
        let mut vc = pool.v.slice_mut(slab);
        let (rows_i, h, kvh, d) = (
            rows as i32,
            heads.heads as i32,
            heads.kv_heads as i32,
            heads.head_dim as i32,
        );
        let mut b = Launch::new(self, f);
        b.arg(q).arg(k).arg(v).arg(&mut kc).arg(&mut vc);
        b.arg(&rows_i)
            .arg(&bufs.positions)
            .arg(&bufs.row_table)
            .arg(&bufs.tables)
            .arg(&h)
            .arg(&kvh)
            .arg(&d)
            .arg(&freq);
        // SAFETY: rope_cache_{f32,bf16} (q, k, v, k_pool, v_pool, rows, positions, row_table,
        // tables, heads, kv_heads, head_dim, InvFreq by value), the kernel of the pool's type:
        // q ≥ rows·q_dim, k and v ≥ rows·kv_dim, the layer slabs hold blocks·KV_BLOCK·kv_dim
        // values of that type; the staged positions, row tables and tables were checked at
        // staging (every table entry < blocks, every row's table index within the tables);
        // head_dim/2 frequencies ≤ 256 (checked); grid from shapes::rope_grid, threads past
        // the pairs return.
        let (gx, gy) = shapes::rope_grid(heads, rows);
        unsafe { b.launch(grid(gx as usize, gy as usize, shapes::ROPE_THREADS)) }?;
        Ok(())
    }

    /// Causal GQA attention of the staged rows over their sequences' keys and values of
    /// `layer`. With a bf16 pool and heads of 64 or 128, the prompt rows run on tensor cores
    /// (attention_prefill.cu, one block per staged tile and head); every other row runs split-K
    /// over [`KvPool::split_chunks`] chunks, then the combine.
    pub fn attention(
        &self,
        q: &CudaSlice<f32>,
        pool: &mut KvPool,
        layer: usize,
        heads: Heads,
        out: &mut CudaSlice<f32>,
    ) -> Result<()> {
        let Staged {
            rows,
            prompt_rows,
            prefill_tiles,
            ..
        } = pool.staged()?;
        let chunks = pool.split_chunks()?;
        let slab = pool.slab(layer)?;
        let kv = pool.kv;
        let bufs = pool
            .stage
            .as_mut()
            .ok_or_else(|| shape("attention", "nothing staged"))?;
        shapes::attention(
            heads,
            q.len(),
            pool.heads.kv_dim(),
            rows,
            chunks,
            out.len(),
            bufs.workspace.len(),
        )?;
        let kc = pool.k.slice(slab.clone());
        let vc = pool.v.slice(slab);
        let scale = 1.0 / (heads.head_dim as f32).sqrt();
        let (h, kvh, d) = (
            heads.heads as i32,
            heads.kv_heads as i32,
            heads.head_dim as i32,
        );
        let tensor_cores =
            kv == KvType::BF16 && shapes::prefill_head_dim(heads.head_dim) && prefill_tiles > 0;
        let first = if tensor_cores { prompt_rows } else { 0 };
        if tensor_cores {
            let f = self.function(if heads.head_dim == 64 {
                "attn_prefill_d64"
            } else {
                "attn_prefill_d128"
            })?;
            let mut b = Launch::new(self, f);
            b.arg(q).arg(&kc).arg(&vc).arg(&mut *out);
            b.arg(&bufs.positions)
                .arg(&bufs.row_table)
                .arg(&bufs.tables)
                .arg(&bufs.tiles)
                .arg(&h)
                .arg(&kvh)
                .arg(&scale);
            // SAFETY: attn_prefill_d{64,128} (q, k_pool, v_pool, out, positions, row_table,
            // tables, tiles, heads, kv_heads, scale) on a bf16 pool whose slabs hold
            // blocks·KV_BLOCK·kv_dim values, head_dim the kernel's: q and out ≥ rows·q_dim,
            // heads a multiple of kv_heads (checked); the staged tiles (prefill_tiles ≤ rows ≤
            // 65535 of them) cover prompt rows of one sequence at consecutive positions, each
            // within its table (checked at staging); grid (heads, tiles).
            unsafe {
                b.launch(LaunchConfig {
                    grid_dim: (heads.heads as u32, prefill_tiles as u32, 1),
                    block_dim: (shapes::PF_THREADS as u32, 1, 1),
                    shared_mem_bytes: 0,
                })
            }?;
        }
        if rows > first {
            let first_i = first as i32;
            let f = self.function(kv.pick(["attn_split_f32", "attn_split_bf16"]))?;
            let mut b = Launch::new(self, f);
            b.arg(q)
                .arg(&kc)
                .arg(&vc)
                .arg(&mut bufs.workspace)
                .arg(&mut *out);
            b.arg(&bufs.positions)
                .arg(&bufs.row_table)
                .arg(&bufs.tables)
                .arg(&first_i)
                .arg(&h)
                .arg(&kvh)
                .arg(&d)
                .arg(&scale);
            // SAFETY: attn_split_{f32,bf16} (q, k_pool, v_pool, partial, out, positions,
            // row_table, tables, first, heads, kv_heads, d, scale), the kernel of the pool's
            // type, whose slabs hold blocks·KV_BLOCK·kv_dim values of it: q and out ≥
            // rows·q_dim, the workspace ≥ rows·heads·chunks·(d + 2), d ≤ 256 and heads a
            // multiple of kv_heads (checked); the staged tables name blocks of the pool and
            // cover every row's positions (checked at staging); grid (heads, chunks, rows −
            // first) over rows first..rows; a chunk past a row's position reads no key; with
            // one chunk the kernel writes out's rows first..rows itself.
            unsafe { b.launch(grid3(heads.heads, chunks, rows - first, 32 * ATT_WARPS)) }?;
            if chunks > 1 {
                let chunks_i = chunks as i32;
                let f = self.function("attn_combine")?;
                let mut b = Launch::new(self, f);
                b.arg(&bufs.workspace)
                    .arg(out)
                    .arg(&first_i)
                    .arg(&chunks_i)
                    .arg(&d);
                // SAFETY: attn_combine (partial, out, first, chunks, d): the partials written
                // above for rows first..rows, out ≥ rows·heads·d (checked); grid (heads, rows −
                // first).
                unsafe { b.launch(grid(heads.heads, rows - first, 128)) }?;
            }
        }
        Ok(())
    }

    /// Copies the staged logit rows of `x` (width `width`) to the start of `out`.
    pub fn gather_logit_rows(
        &self,
        x: &CudaSlice<f32>,
        width: usize,
        pool: &KvPool,
        out: &mut CudaSlice<f32>,
    ) -> Result<()> {
        let Staged {
            rows, logit_rows, ..
        } = pool.staged()?;
        shapes::gather(x.len(), rows, logit_rows, width, out.len())?;
        let bufs = pool.bufs()?;
        let f = self.function("gather_rows")?;
        let (count, width_i) = (logit_rows as i32, width as i32);
        let mut b = Launch::new(self, f);
        b.arg(x)
            .arg(&bufs.logit_rows)
            .arg(out)
            .arg(&count)
            .arg(&width_i);
        // SAFETY: gather_rows (x, rows, out, count, width): the staged logit rows are each <
        // rows (checked at staging), x ≥ rows·width, out ≥ count·width (checked); one block
        // per gathered row.
        unsafe { b.launch(grid(logit_rows, 1, 256)) }?;
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
        let mut b = Launch::new(self, f);
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
        let mut b = Launch::new(self, f);
        b.arg(logits).arg(out).arg(&rows_i).arg(&width_i);
        // SAFETY: argmax_rows (logits, out, rows, width): logits ≥ rows·width, out ≥ rows
        // (checked); one block of ARGMAX_THREADS per row.
        unsafe { b.launch(grid(rows, 1, shapes::ARGMAX_THREADS)) }?;
        Ok(())
    }

    /// The index of the largest value of each of the `rows` rows of `logits` (first on ties,
    /// NaN never wins) into `pool`'s choices, read back with [`Gpu::chosen`].
    pub fn choose(
        &self,
        logits: &CudaSlice<f32>,
        width: usize,
        rows: usize,
        pool: &mut KvPool,
    ) -> Result<()> {
        let bufs = pool
            .stage
            .as_mut()
            .ok_or_else(|| shape("argmax_rows", "nothing staged"))?;
        self.argmax(logits, rows, width, &mut bufs.chosen)
    }

    /// The ids [`Gpu::choose`] wrote for the staged pass's logit rows (4 bytes a row; waits
    /// for the stream).
    pub fn chosen(&self, pool: &KvPool) -> Result<Vec<u32>> {
        let count = pool.staged()?.logit_rows;
        self.download(&pool.bufs()?.chosen, 0, count)
    }
}
