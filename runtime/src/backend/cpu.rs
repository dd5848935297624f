//! The CPU backend: the reference and fallback. Weights stay in their stored dtype (BF16, F16
//! or F32) and are widened to f32 inside the dot products; accumulation is f32; work is split
//! over a private rayon pool. The dot products are in [`super::dot`]: one summation order for
//! every row, so a row's logits do not depend on the rows beside it or on the CPU's features.

use half::f16;
use half::slice::HalfFloatSliceExt;
use rayon::prelude::*;
use std::sync::Arc;

use super::bf16_products;
use super::cpu_attention::{attend, Head};
use super::cpu_memory::Spare;
use super::dot::{
    bf16_to_f32, dot, rows_dot_bf16, rows_dot_f16, rows_dot_f32, weight_rows_times, Blocking,
    PackedRows,
};
use super::{AttentionShape, Backend, Batch, HostTensor, KvType, KV_BLOCK};
use crate::error::{Error, Result};
use crate::model::weights::DType;
use crate::sampling::argmax;

/// Stored elements of a weight.
#[derive(Debug)]
enum Data {
    F32(Vec<f32>),
    BF16(Vec<u16>),
    F16(Vec<f16>),
}

/// A weight held in host memory in its stored dtype.
#[derive(Debug)]
pub struct CpuWeight {
    rows: usize,
    cols: usize,
    data: Data,
}

impl CpuWeight {
    /// Row `r` widened to f32 into `out` (`cols` values).
    fn row_into(&self, r: usize, out: &mut [f32]) {
        let span = r * self.cols..(r + 1) * self.cols;
        match &self.data {
            Data::F32(d) => out.copy_from_slice(&d[span]),
            Data::BF16(d) => {
                #[cfg(target_arch = "x86_64")]
                if super::dot_v3::widen_bf16(&d[span.clone()], out) {
                    return;
                }
                for (o, w) in out.iter_mut().zip(&d[span]) {
                    *o = bf16_to_f32(*w);
                }
            }
            Data::F16(d) => d[span].convert_to_f32_slice(out),
        }
    }

    /// `out[j] = x · row (first + j)` for each value of `out`.
    fn rows_dot(&self, first: usize, x: &[f32], out: &mut [f32]) {
        if self.cols == 0 {
            return out.fill(0.0);
        }
        let span = first * self.cols..(first + out.len()) * self.cols;
        match &self.data {
            Data::F32(d) => rows_dot_f32(x, &d[span], out),
            Data::BF16(d) => rows_dot_bf16(x, &d[span], out),
            Data::F16(d) => rows_dot_f16(x, &d[span], out),
        }
    }

    /// [`Self::rows_dot`] with BF16 products: `x` already rounded to BF16, the weight BF16.
    fn rows_dot_bf16_products(&self, first: usize, x: &[u16], out: &mut [f32]) {
        if let Data::BF16(d) = &self.data {
            let span = first * self.cols..(first + out.len()) * self.cols;
            bf16_products::rows_dot(x, &d[span], out);
        }
    }

    /// Bytes of weight data.
    pub fn bytes(&self) -> usize {
        match &self.data {
            Data::F32(d) => d.len() * 4,
            Data::BF16(d) => d.len() * 2,
            Data::F16(d) => d.len() * 2,
        }
    }
}

/// The paged key/value pool in host memory. Each block holds, for every layer, the keys and
/// then the values of [`KV_BLOCK`] positions (`[layers][2][KV_BLOCK][kv_dim]` f32); a block gets
/// its memory when a staged batch first names it and gives it back at [`Backend::release`], so
/// the memory held follows the tokens held (given back, it is kept by the backend for reuse,
/// within a bound: [`super::cpu_memory`]).
#[derive(Debug)]
pub struct CpuPool {
    layers: usize,
    kv_dim: usize,
    blocks: Vec<Option<Vec<f32>>>,
    staged: Batch,
    chosen: Vec<u32>,
    spare: Arc<Spare>,
}

impl Drop for CpuPool {
    fn drop(&mut self) {
        for block in self.blocks.drain(..).flatten() {
            self.spare.keep(block);
        }
    }
}

impl CpuPool {
    /// Blocks that hold memory now.
    pub fn allocated_blocks(&self) -> usize {
        self.blocks.iter().filter(|b| b.is_some()).count()
    }

    /// Bytes of key/value memory held now.
    pub fn allocated_bytes(&self) -> usize {
        self.allocated_blocks() * self.block_len() * 4
    }

    fn block_len(&self) -> usize {
        self.layers * 2 * KV_BLOCK * self.kv_dim
    }

    fn staged(&self) -> Result<&Batch> {
        if self.staged.is_empty() {
            return Err(Error::Backend(
                "no token ids were staged for this pass".into(),
            ));
        }
        Ok(&self.staged)
    }

    fn check_layer(&self, layer: usize) -> Result<()> {
        if layer >= self.layers {
            return Err(Error::Backend(format!(
                "layer {layer} of a pool of {}",
                self.layers
            )));
        }
        Ok(())
    }

    /// Offset in a block of position `p % KV_BLOCK` of `layer`'s keys (`kv` 0) or values (1).
    fn offset(&self, layer: usize, kv: usize, p: usize) -> usize {
        ((layer * 2 + kv) * KV_BLOCK + p % KV_BLOCK) * self.kv_dim
    }
}

/// How the CPU backend multiplies activations with BF16 weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Products {
    /// f32 activations times the weights widened to f32 ([`super::dot`]): the same bits on every
    /// x86-64 CPU; the receipt's `backend` is `cpu`.
    F32,
    /// Activations rounded to BF16 and multiplied by AVX512-BF16's `vdpbf16ps`
    /// ([`super::bf16_products`], emulated where the CPU lacks it): about twice the arithmetic
    /// rate, other bits; the receipt's `backend` is `cpu:avx512bf16`. F32 and F16 weights are
    /// multiplied as with [`Products::F32`].
    Bf16,
}

/// The CPU backend, with its own thread pool.
#[derive(Debug)]
pub struct CpuBackend {
    pool: rayon::ThreadPool,
    blocking: Blocking,
    products: Products,
    /// Matmul results before they are copied into the output rows, buffers of passes with
    /// prompt rows and KV blocks of finished sequences, kept for reuse (bounded;
    /// [`super::cpu_memory`]), shared with the pools this backend makes.
    spare: Arc<Spare>,
}

impl CpuBackend {
    /// A backend using `threads` threads (0: one per core).
    pub fn new(threads: usize) -> Result<Self> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("cocoon-cpu-{i}"))
            .build()
            .map_err(|e| Error::Backend(format!("cpu thread pool: {e}")))?;
        Ok(CpuBackend {
            pool,
            blocking: Blocking::detect(),
            products: Products::F32,
            spare: Default::default(),
        })
    }

    /// The same backend multiplying as `products` says. [`Products::Bf16`] on a CPU without
    /// AVX512-BF16 is emulated: the same bits, many times slower (for replaying a receipt made
    /// with it, not for serving).
    pub fn with_products(self, products: Products) -> Self {
        if products == Products::Bf16 && !bf16_products::hardware() {
            tracing::warn!(
                "this CPU has no AVX512-BF16: its products are emulated (same bits, much slower)"
            );
        }
        CpuBackend { products, ..self }
    }

    /// How this backend multiplies.
    pub fn products(&self) -> Products {
        self.products
    }

    /// The same backend with multi-row matmuls blocked as given instead of as detected (for
    /// tests and benches: every blocking gives the same bits).
    pub fn with_blocking(self, blocking: Blocking) -> Self {
        CpuBackend { blocking, ..self }
    }

    /// Threads in the pool.
    pub fn threads(&self) -> usize {
        self.pool.current_num_threads()
    }

    /// One kept buffer of `rows × weight rows` values for each weight (contents unspecified:
    /// every value is written before it is read).
    fn take_scratch(&self, ws: &[&CpuWeight], rows: usize) -> Vec<Vec<f32>> {
        ws.iter()
            .map(|w| self.spare.take(w.rows * rows, false))
            .collect()
    }

    fn keep_scratch(&self, buffers: Vec<Vec<f32>>) {
        for b in buffers {
            self.spare.keep(b);
        }
    }
}

impl CpuBackend {
    /// [`Backend::matmul_shared`] with [`Products::Bf16`], every weight BF16: the rows rounded
    /// to BF16 once, then the same split of the work as with f32 products.
    fn matmul_bf16_products(
        &self,
        x: &[f32],
        ws: &[&CpuWeight],
        (rows, k): (usize, usize),
        outs: &mut [&mut Vec<f32>],
    ) -> Result<()> {
        let xb = bf16_products::round_all(x);
        if rows == 1 {
            self.pool.install(|| {
                one_row_tasks(ws, outs)
                    .into_par_iter()
                    .for_each(|(w, first, o)| w.rows_dot_bf16_products(first, &xb, o))
            });
            return Ok(());
        }
        // Results computed transposed (a task's block contiguous) while they fit in cache, as
        // the f32 products do; large outputs (the output projection's rows) land in place.
        let out_bytes: usize = ws.iter().map(|w| w.rows * rows * 4).sum();
        if out_bytes <= IN_PLACE_BYTES {
            let mut transposed = self.take_scratch(ws, rows);
            self.pool.install(|| {
                let mut blocks: Vec<(&[u16], usize, &mut [f32])> = Vec::new();
                for (w, t) in ws.iter().zip(transposed.iter_mut()) {
                    if let Data::BF16(d) = &w.data {
                        let chunks = t.chunks_mut(rows * 16).enumerate();
                        blocks.extend(chunks.map(|(c, b)| (&d[..], c * 16, b)));
                    }
                }
                blocks.into_par_iter().for_each(|(d, first, block)| {
                    bf16_products::rows_times_transposed(&xb, rows, k, d, first, block)
                });
                put_back(&transposed, ws, rows, outs);
            });
            self.keep_scratch(transposed);
            return Ok(());
        }
        // In place: a task is a range of weight rows (a multiple of 16; about 256 tasks for the
        // largest weights) for every input row, written into each output row's piece.
        let mut tasks: Vec<InPlaceTask<'_>> = Vec::new();
        for (w, out) in ws.iter().zip(outs.iter_mut()) {
            let (n, Data::BF16(d)) = (w.rows, &w.data) else {
                continue;
            };
            if n == 0 {
                continue;
            }
            let width = (n / 256).next_multiple_of(16).max(16);
            let mut pieces: Vec<Vec<&mut [f32]>> = (0..n.div_ceil(width))
                .map(|_| Vec::with_capacity(rows))
                .collect();
            for row in out[..rows * n].chunks_mut(n) {
                for (p, piece) in pieces.iter_mut().zip(row.chunks_mut(width)) {
                    p.push(piece);
                }
            }
            let starts = (0..).step_by(width);
            tasks.extend(starts.zip(pieces).map(|(first, p)| (&d[..], first, p)));
        }
        self.pool.install(|| {
            tasks.into_par_iter().for_each(|(d, first, mut pieces)| {
                bf16_products::rows_times(&xb, k, d, first, &mut pieces)
            })
        });
        Ok(())
    }
}

/// The tasks of a one-row matmul: 64 weight rows (and their outputs) each.
fn one_row_tasks<'a>(
    ws: &[&'a CpuWeight],
    outs: &'a mut [&mut Vec<f32>],
) -> Vec<(&'a CpuWeight, usize, &'a mut [f32])> {
    let mut tasks = Vec::new();
    for (w, out) in ws.iter().zip(outs.iter_mut()) {
        let chunks = out[..w.rows].chunks_mut(64).enumerate();
        tasks.extend(chunks.map(|(c, o)| (*w, c * 64, o)));
    }
    tasks
}

/// A task of [`CpuBackend::matmul_bf16_products`] in place: BF16 weight data, its first row,
/// and the piece of each output row it writes.
type InPlaceTask<'a> = (&'a [u16], usize, Vec<&'a mut [f32]>);

/// Outputs of a matmul above this size are written in place by BF16 products, not transposed
/// and put back: measured, 1.25× faster for the output projection at 16 rows (3 MB of
/// results), but 0.85× for the MLP's (393 KB) at 64 rows, and 0.95× for a whole 16-request
/// decode step with every output in place (bench/RESULTS.md).
const IN_PLACE_BYTES: usize = 2 << 20;

/// Matmul results computed in blocks of 16 weight rows, each block row by row (`[rows][16]`,
/// [`weight_rows_times`]'s layout), copied into `[rows, n]` order: each row's 16 values one
/// contiguous copy (a strided copy of single values, as from a transposed layout, took ~6 % of
/// a prefill). 16 output rows a task, on the calling pool.
fn put_back_blocks(
    blocks: &[Vec<f32>],
    ws: &[&CpuWeight],
    rows: usize,
    outs: &mut [&mut Vec<f32>],
) {
    row_groups(blocks, ws, rows, outs)
        .into_par_iter()
        .for_each(|(t, n, r0, rows_out)| {
            for (b, block) in t.chunks(rows * 16).enumerate() {
                let width = block.len() / rows;
                for (i, out_row) in rows_out.chunks_exact_mut(n).enumerate() {
                    let r = r0 + i;
                    out_row[b * 16..b * 16 + width]
                        .copy_from_slice(&block[r * width..(r + 1) * width]);
                }
            }
        });
}

/// Matmul results computed transposed (`[n, rows]` a weight) put back in `[rows, n]` order, 16
/// rows a task: each weight row's 16 values are one contiguous read, and each output row is
/// written in order. Runs on the calling pool.
fn put_back(transposed: &[Vec<f32>], ws: &[&CpuWeight], rows: usize, outs: &mut [&mut Vec<f32>]) {
    row_groups(transposed, ws, rows, outs)
        .into_par_iter()
        .for_each(|(t, n, r0, rows_out)| {
            let count = rows_out.len() / n;
            for (j, col) in t.chunks_exact(rows).enumerate() {
                for (i, v) in col[r0..r0 + count].iter().enumerate() {
                    rows_out[i * n + j] = *v;
                }
            }
        });
}

/// The tasks of a put-back: for each weight (of `n` rows) its computed results (`rows × n`
/// values), `n`, the first output row of the group and the group's 16 output rows.
#[allow(clippy::type_complexity)]
fn row_groups<'a>(
    results: &'a [Vec<f32>],
    ws: &[&CpuWeight],
    rows: usize,
    outs: &'a mut [&mut Vec<f32>],
) -> Vec<(&'a [f32], usize, usize, &'a mut [f32])> {
    let mut groups = Vec::new();
    for ((w, t), out) in ws.iter().zip(results).zip(outs.iter_mut()) {
        let n = w.rows;
        if n == 0 {
            continue;
        }
        let chunks = out[..rows * n].chunks_mut(16 * n).enumerate();
        groups.extend(chunks.map(|(b, o)| (&t[..rows * n], n, b * 16, o)));
    }
    groups
}

fn check_len(what: &str, have: usize, need: usize) -> Result<()> {
    if have < need {
        return Err(Error::Backend(format!(
            "{what}: buffer of {have} values, {need} needed"
        )));
    }
    Ok(())
}

impl Backend for CpuBackend {
    type Weight = CpuWeight;
    type Buf = Vec<f32>;
    type Pool = CpuPool;

    fn name(&self) -> String {
        match self.products {
            Products::F32 => "cpu".into(),
            Products::Bf16 => "cpu:avx512bf16".into(),
        }
    }

    fn upload(&self, t: HostTensor<'_>) -> Result<CpuWeight> {
        let (rows, cols) = match *t.shape {
            [n] => (1, n),
            [r, c] => (r, c),
            ref s => {
                return Err(Error::Backend(format!(
                    "weights of shape {s:?} are not supported"
                )))
            }
        };
        let n = rows * cols;
        if t.bytes.len() != n * t.dtype.size() {
            return Err(Error::Backend(format!(
                "weight of shape {:?}: {} bytes for {n} {:?} values",
                t.shape,
                t.bytes.len(),
                t.dtype
            )));
        }
        let data = match t.dtype {
            DType::F32 => Data::F32(
                t.bytes
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect(),
            ),
            DType::BF16 => Data::BF16(
                t.bytes
                    .chunks_exact(2)
                    .map(|b| u16::from_le_bytes([b[0], b[1]]))
                    .collect(),
            ),
            DType::F16 => Data::F16(
                t.bytes
                    .chunks_exact(2)
                    .map(|b| f16::from_le_bytes([b[0], b[1]]))
                    .collect(),
            ),
        };
        Ok(CpuWeight { rows, cols, data })
    }

    fn alloc(&self, len: usize) -> Result<Vec<f32>> {
        Ok(self.spare.take(len, true))
    }

    fn recycle(&self, buf: Vec<f32>) {
        self.spare.keep(buf);
    }

    fn new_pool(
        &self,
        layers: usize,
        blocks: usize,
        shape: AttentionShape,
        kv: KvType,
    ) -> Result<CpuPool> {
        if kv != KvType::F32 {
            return Err(Error::Backend(format!(
                "the CPU backend keeps its KV cache in f32, not {kv:?}"
            )));
        }
        Ok(CpuPool {
            layers,
            kv_dim: shape.kv_dim(),
            blocks: (0..blocks).map(|_| None).collect(),
            staged: Batch::new(),
            chosen: Vec::new(),
            spare: Arc::clone(&self.spare),
        })
    }

    fn pool_blocks(&self, pool: &CpuPool) -> usize {
        pool.blocks.len()
    }

    fn release(&self, pool: &mut CpuPool, blocks: &[u32]) -> Result<()> {
        for b in blocks {
            if let Some(block) = pool.blocks.get_mut(*b as usize).and_then(Option::take) {
                pool.spare.keep(block);
            }
        }
        Ok(())
    }

    fn stage(&self, pool: &mut CpuPool, batch: &Batch) -> Result<()> {
        if batch.is_empty() {
            return Err(Error::InvalidRequest("no tokens to feed".into()));
        }
        let blocks = pool.blocks.len();
        if let Some(b) = batch.max_block().filter(|b| *b as usize >= blocks) {
            return Err(Error::InvalidRequest(format!(
                "block {b} is past the pool's {blocks} blocks"
            )));
        }
        let len = pool.block_len();
        for b in batch.tables() {
            let block = &mut pool.blocks[*b as usize];
            if block.is_none() {
                // Every value of a block is written (by `rope_and_cache`) before it is read.
                *block = Some(pool.spare.take(len, false));
            }
        }
        pool.staged.clone_from(batch);
        Ok(())
    }

    fn embed(&self, table: &CpuWeight, pool: &CpuPool, out: &mut Vec<f32>) -> Result<()> {
        let ids = pool.staged()?.ids();
        check_len("embed", out.len(), ids.len() * table.cols)?;
        for (row, id) in out.chunks_exact_mut(table.cols).zip(ids) {
            let id = *id as usize;
            if id >= table.rows {
                return Err(Error::InvalidRequest(format!(
                    "token id {id} is outside the vocabulary of {}",
                    table.rows
                )));
            }
            table.row_into(id, row);
        }
        Ok(())
    }

    fn rms_norm(
        &self,
        x: &Vec<f32>,
        weight: &CpuWeight,
        eps: f32,
        rows: usize,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        let width = weight.cols;
        check_len("rms_norm", x.len().min(out.len()), rows * width)?;
        let mut w = vec![0f32; width];
        weight.row_into(0, &mut w);
        for (xr, or) in x
            .chunks_exact(width)
            .zip(out.chunks_exact_mut(width))
            .take(rows)
        {
            let mean_sq = dot(xr, xr) / width as f32;
            let scale = 1.0 / (mean_sq + eps).sqrt();
            for ((o, xv), wv) in or.iter_mut().zip(xr).zip(&w) {
                *o = wv * (xv * scale);
            }
        }
        Ok(())
    }

    fn matmul(
        &self,
        x: &Vec<f32>,
        w: &CpuWeight,
        rows: usize,
        prompt_rows: usize,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        self.matmul_shared(x, &[w], rows, prompt_rows, &mut [out])
    }

    fn matmul_shared(
        &self,
        x: &Vec<f32>,
        ws: &[&CpuWeight],
        rows: usize,
        _prompt_rows: usize,
        outs: &mut [&mut Vec<f32>],
    ) -> Result<()> {
        // Every row's sums are the same whether it is computed alone or with others (every
        // blocking of `dot::weight_rows_times` equals `dot`), so both kinds of rows take the
        // same path; and the same with other weights or alone, so weights that read the same
        // input share one parallel region (one fork and one join, not one per weight).
        let k = ws.first().map_or(0, |w| w.cols);
        if ws.len() != outs.len() || ws.iter().any(|w| w.cols != k) {
            return Err(Error::Backend(format!(
                "matmul: {} weights of widths {:?} for {} outputs: one width and one output each",
                ws.len(),
                ws.iter().map(|w| w.cols).collect::<Vec<_>>(),
                outs.len()
            )));
        }
        check_len("matmul input", x.len(), rows * k)?;
        for (w, out) in ws.iter().zip(outs.iter()) {
            check_len("matmul output", out.len(), rows * w.rows)?;
        }
        if rows == 0 {
            return Ok(());
        }
        let x = &x[..rows * k];
        let bf16 =
            self.products == Products::Bf16 && ws.iter().all(|w| matches!(w.data, Data::BF16(_)));
        if bf16 {
            return self.matmul_bf16_products(x, ws, (rows, k), outs);
        }
        if rows == 1 {
            self.pool.install(|| {
                one_row_tasks(ws, outs)
                    .into_par_iter()
                    .for_each(|(w, first, o)| w.rows_dot(first, x, o))
            });
            return Ok(());
        }
        // Each weight row is widened once and used for every input row, in register blocks of
        // rows × weight rows (`dot::weight_rows_times`); each task's results land in a block of
        // its own (`[rows][16]`), copied into `[rows, n]` order afterwards.
        let packed = PackedRows::new(self.blocking, x, rows, k);
        let mut results = self.take_scratch(ws, rows);
        self.pool.install(|| {
            let mut blocks: Vec<(&CpuWeight, usize, &mut [f32])> = Vec::new();
            for (w, t) in ws.iter().zip(results.iter_mut()) {
                let chunks = t.chunks_mut(rows * 16).enumerate();
                blocks.extend(chunks.map(|(c, b)| (*w, c * 16, b)));
            }
            blocks.into_par_iter().for_each(|(w, first, block)| {
                // A few rows times BF16 weights on x86-64-v3: weight rows streamed and widened
                // in registers (the same values).
                #[cfg(target_arch = "x86_64")]
                if let (Blocking::Narrow, Data::BF16(d)) = (self.blocking, &w.data) {
                    let span = first * k..(first + block.len() / rows) * k;
                    if super::dot_v3::few_rows_times_bf16(x, (rows, k), &d[span], block) {
                        return;
                    }
                }
                weight_rows_times(&packed, first, &|j, buf| w.row_into(j, buf), block)
            });
            put_back_blocks(&results, ws, rows, outs);
        });
        self.keep_scratch(results);
        Ok(())
    }

    fn step(
        &self,
        pool: &mut CpuPool,
        step: &mut (dyn FnMut(&mut CpuPool) -> Result<()> + Send),
    ) -> Result<()> {
        // The whole pass on a worker of the pool: each operation's parallel region is then a
        // fork and join among the workers, not a job injected from outside that the calling
        // thread sleeps on and is woken from (about 150 times a decode step).
        self.pool.install(|| step(pool))
    }

    fn rope_and_cache(
        &self,
        q: &mut Vec<f32>,
        k: &Vec<f32>,
        v: &Vec<f32>,
        pool: &mut CpuPool,
        layer: usize,
        shape: AttentionShape,
        inv_freq: &[f32],
    ) -> Result<()> {
        let (qd, kvd, d) = (shape.q_dim(), shape.kv_dim(), shape.head_dim);
        let half = d / 2;
        if inv_freq.len() != half || kvd != pool.kv_dim {
            return Err(Error::Backend(
                "rope: frequency table or pool width does not match the heads".into(),
            ));
        }
        pool.check_layer(layer)?;
        let rows = pool.staged()?.rows();
        check_len("rope q", q.len(), rows * qd)?;
        check_len("rope k/v", k.len().min(v.len()), rows * kvd)?;
        let mut cos = vec![0f32; half];
        let mut sin = vec![0f32; half];
        let rotate = |x: &mut [f32], cos: &[f32], sin: &[f32]| {
            for head in x.chunks_exact_mut(d) {
                let (a, b) = head.split_at_mut(half);
                for i in 0..half {
                    let (x1, x2) = (a[i], b[i]);
                    a[i] = x1 * cos[i] - x2 * sin[i];
                    b[i] = x2 * cos[i] + x1 * sin[i];
                }
            }
        };
        let (ko, vo) = (pool.offset(layer, 0, 0), pool.offset(layer, 1, 0));
        for r in 0..rows {
            let batch = &pool.staged;
            let pos = batch.positions()[r] as usize;
            let slot = batch.slot_of(r);
            for i in 0..half {
                let angle = pos as f32 * inv_freq[i];
                cos[i] = angle.cos();
                sin[i] = angle.sin();
            }
            rotate(&mut q[r * qd..(r + 1) * qd], &cos, &sin);
            let block = pool.blocks[slot / KV_BLOCK]
                .as_mut()
                .ok_or_else(|| Error::Backend(format!("slot {slot} has no memory")))?;
            let at = (slot % KV_BLOCK) * kvd;
            let kdst = &mut block[ko + at..ko + at + kvd];
            kdst.copy_from_slice(&k[r * kvd..(r + 1) * kvd]);
            rotate(kdst, &cos, &sin);
            block[vo + at..vo + at + kvd].copy_from_slice(&v[r * kvd..(r + 1) * kvd]);
        }
        Ok(())
    }

    fn attention(
        &self,
        q: &Vec<f32>,
        pool: &mut CpuPool,
        layer: usize,
        shape: AttentionShape,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        let (d, qd, kvd) = (shape.head_dim, shape.q_dim(), shape.kv_dim());
        if kvd != pool.kv_dim {
            return Err(Error::Backend(
                "attention: pool width does not match the heads".into(),
            ));
        }
        pool.check_layer(layer)?;
        let group = shape.heads / shape.kv_heads;
        let pool = &*pool;
        let batch = pool.staged()?;
        if let Some(b) = batch
            .tables()
            .iter()
            .find(|b| pool.blocks[**b as usize].is_none())
        {
            return Err(Error::Backend(format!(
                "block {b} was released while staged"
            )));
        }
        let rows = batch.rows();
        check_len("attention q", q.len(), rows * qd)?;
        check_len("attention out", out.len(), rows * qd)?;
        let scale = 1.0 / (d as f32).sqrt();
        let (ko, vo) = (pool.offset(layer, 0, 0), pool.offset(layer, 1, 0));
        self.pool.install(|| {
            out[..rows * qd]
                .par_chunks_mut(d)
                .enumerate()
                .for_each_init(Vec::new, |scores, (i, o)| {
                    let (r, h) = (i / shape.heads, i % shape.heads);
                    let kv_off = (h / group) * d;
                    let qh = &q[r * qd + h * d..r * qd + (h + 1) * d];
                    let table = batch.table_of(r);
                    // Position t of the row's sequence: slot t % KV_BLOCK of block
                    // table[t / KV_BLOCK] (every staged block holds memory: checked above).
                    let at = |base: usize, t: usize| -> &[f32] {
                        let block = pool.blocks[table[t / KV_BLOCK] as usize]
                            .as_deref()
                            .unwrap_or_default();
                        let o = base + (t % KV_BLOCK) * kvd + kv_off;
                        &block[o..o + d]
                    };
                    let len = batch.positions()[r] as usize + 1;
                    let head = Head {
                        q: qh,
                        len,
                        key: |t| at(ko, t),
                        value: |t| at(vo, t),
                        scale,
                    };
                    attend(&head, scores, o);
                });
        });
        Ok(())
    }

    fn swiglu(&self, gate: &mut Vec<f32>, up: &Vec<f32>, len: usize) -> Result<()> {
        check_len("swiglu", gate.len().min(up.len()), len)?;
        for (g, u) in gate[..len].iter_mut().zip(up) {
            *g = *g / (1.0 + (-*g).exp()) * u;
        }
        Ok(())
    }

    fn add(&self, x: &mut Vec<f32>, y: &Vec<f32>, len: usize) -> Result<()> {
        check_len("add", x.len().min(y.len()), len)?;
        for (a, b) in x[..len].iter_mut().zip(y) {
            *a += b;
        }
        Ok(())
    }

    fn gather_logit_rows(
        &self,
        x: &Vec<f32>,
        width: usize,
        pool: &CpuPool,
        out: &mut Vec<f32>,
    ) -> Result<()> {
        let rows = pool.staged()?.logit_rows();
        check_len("gather output", out.len(), rows.len() * width)?;
        for (o, r) in out.chunks_exact_mut(width).zip(rows) {
            let r = *r as usize;
            check_len("gather", x.len(), (r + 1) * width)?;
            o.copy_from_slice(&x[r * width..(r + 1) * width]);
        }
        Ok(())
    }

    fn choose(
        &self,
        logits: &Vec<f32>,
        width: usize,
        rows: usize,
        pool: &mut CpuPool,
    ) -> Result<()> {
        check_len("choose", logits.len(), rows * width)?;
        pool.chosen.clear();
        pool.chosen
            .extend(logits.chunks_exact(width).take(rows).map(argmax));
        Ok(())
    }

    fn chosen(&self, pool: &CpuPool) -> Result<Vec<u32>> {
        Ok(pool.chosen.clone())
    }

    fn read_rows(
        &self,
        x: &Vec<f32>,
        width: usize,
        first: usize,
        count: usize,
    ) -> Result<Vec<f32>> {
        check_len("read_rows", x.len(), (first + count) * width)?;
        Ok(x[first * width..(first + count) * width].to_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::{Logits, RowKind};

    #[test]
    fn matmul_rows_match_gemv() {
        // Bit for bit, over odd and even row counts, odd weight-row counts (a lone last row
        // in a block of 16) and widths with and without a tail past the 16 lanes.
        for blocking in [Blocking::Narrow, Blocking::Wide] {
            matmul_rows_match_gemv_with(CpuBackend::new(2).unwrap().with_blocking(blocking));
        }
    }

    #[test]
    fn with_bf16_products_matmul_rows_match_gemv() {
        let be = CpuBackend::new(2).unwrap().with_products(Products::Bf16);
        assert_eq!(be.name(), "cpu:avx512bf16");
        matmul_rows_match_gemv_with(be);
    }

    #[test]
    fn with_bf16_products_large_outputs_land_in_place_with_the_same_bits() {
        // 130 rows × 4100 outputs: over IN_PLACE_BYTES, so written in place (a last piece
        // narrower than the others, a tail past the last 32-value chunk); each row bit for bit
        // its one-row value.
        let be = CpuBackend::new(2).unwrap().with_products(Products::Bf16);
        let (n, k, rows) = (4100, 36, 130);
        assert!(n * rows * 4 > IN_PLACE_BYTES);
        let wv: Vec<f32> = (0..n * k)
            .map(|i| ((i * 37 % 23) as f32 - 11.0) / 8.0)
            .collect();
        let w = bf16_weight(&be, n, k, &wv);
        let x: Vec<f32> = (0..rows * k).map(|i| (i as f32 * 0.11).sin()).collect();
        let mut out = vec![0f32; rows * n];
        be.matmul(&x, &w, rows, rows, &mut out).unwrap();
        for r in [0, 1, 64, 129] {
            let mut one = vec![0f32; n];
            be.matmul(&x[r * k..(r + 1) * k].to_vec(), &w, 1, 0, &mut one)
                .unwrap();
            assert!(
                out[r * n..(r + 1) * n]
                    .iter()
                    .zip(&one)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "row {r}"
            );
        }
    }

    /// An `n × k` BF16 weight of the values `wv` (rounded to BF16).
    fn bf16_weight(be: &CpuBackend, n: usize, k: usize, wv: &[f32]) -> CpuWeight {
        let bytes: Vec<u8> = wv
            .iter()
            .flat_map(|v| half::bf16::from_f32(*v).to_le_bytes())
            .collect();
        be.upload(HostTensor {
            dtype: DType::BF16,
            shape: &[n, k],
            bytes: &bytes,
        })
        .unwrap()
    }

    fn matmul_rows_match_gemv_with(be: CpuBackend) {
        for (n, k, rows) in [
            (37, 20, 3),
            (37, 20, 4),
            (16, 48, 2),
            (33, 51, 5),
            (2, 7, 1),
            (37, 20, 13),
            (50, 40, 16),
        ] {
            let wv: Vec<f32> = (0..n * k)
                .map(|i| ((i * 31 % 17) as f32 - 8.0) / 16.0)
                .collect();
            let w = bf16_weight(&be, n, k, &wv);
            let x: Vec<f32> = (0..rows * k).map(|i| (i as f32).sin()).collect();
            let mut out = vec![0f32; rows * n];
            be.matmul(&x, &w, 0, 0, &mut out).unwrap(); // no rows: nothing to do, no panic
            be.matmul(&x, &w, rows, rows, &mut out).unwrap();
            for r in 0..rows {
                let mut one = vec![0f32; n];
                be.matmul(&x[r * k..(r + 1) * k].to_vec(), &w, 1, 0, &mut one)
                    .unwrap();
                assert_eq!(
                    &out[r * n..(r + 1) * n],
                    &one[..],
                    "{n}×{k}, row {r} of {rows}"
                );
                // With BF16 products, the activations are rounded to BF16 first.
                let xr = |c: usize| match be.products() {
                    Products::F32 => x[r * k + c],
                    Products::Bf16 => bf16_to_f32(bf16_products::round(x[r * k + c])),
                };
                let naive: f32 = (0..k).map(|c| xr(c) * wv[c]).sum();
                assert!((one[0] - naive).abs() < 1e-4, "{} vs {naive}", one[0]);
            }
        }
    }

    #[test]
    fn shared_matmuls_equal_one_matmul_each() {
        // Q, K and V (or gate and up) in one call: each output bit for bit what its own
        // matmul gives, for one row and for several, with either blocking.
        for blocking in [Blocking::Narrow, Blocking::Wide] {
            let be = CpuBackend::new(2).unwrap().with_blocking(blocking);
            let k = 40;
            let weight = |n: usize, seed: usize| {
                let wv: Vec<f32> = (0..n * k)
                    .map(|i| (((i + seed) * 31 % 17) as f32 - 8.0) / 16.0)
                    .collect();
                bf16_weight(&be, n, k, &wv)
            };
            let (q, kk, v) = (weight(37, 0), weight(16, 5), weight(70, 9));
            for rows in [1, 2, 7, 16] {
                let x: Vec<f32> = (0..rows * k).map(|i| (i as f32 * 0.37).cos()).collect();
                let mut outs: Vec<Vec<f32>> =
                    [37, 16, 70].iter().map(|n| vec![0f32; rows * n]).collect();
                let [a, b, c] = &mut outs[..] else {
                    unreachable!()
                };
                be.matmul_shared(&x, &[&q, &kk, &v], rows, 0, &mut [a, b, c])
                    .unwrap();
                for (w, got) in [&q, &kk, &v].iter().zip(&outs) {
                    let mut alone = vec![0f32; got.len()];
                    be.matmul(&x, w, rows, 0, &mut alone).unwrap();
                    assert_eq!(
                        got, &alone,
                        "{blocking:?}, {rows} rows, {} weight rows",
                        w.rows
                    );
                }
            }
            // Weights of different widths cannot share an input: an error, not a panic.
            let narrow = be
                .upload(HostTensor {
                    dtype: DType::F32,
                    shape: &[2, 3],
                    bytes: &[0; 24],
                })
                .unwrap();
            let (mut o1, mut o2) = (vec![0f32; 37], vec![0f32; 2]);
            assert!(be
                .matmul_shared(
                    &vec![0f32; k],
                    &[&q, &narrow],
                    1,
                    0,
                    &mut [&mut o1, &mut o2]
                )
                .is_err());
        }
    }

    #[test]
    fn buffers_too_small_are_errors_not_panics() {
        let be = CpuBackend::new(1).unwrap();
        let w = be
            .upload(HostTensor {
                dtype: DType::F32,
                shape: &[2, 2],
                bytes: &[0; 16],
            })
            .unwrap();
        assert!(be
            .matmul(&vec![0.0; 1], &w, 1, 0, &mut vec![0.0; 2])
            .is_err());
        let shape = AttentionShape {
            heads: 1,
            kv_heads: 1,
            head_dim: 2,
        };
        // The CPU keeps f32 caches, for 16-bit models too, and refuses another kind.
        assert_eq!(be.kv_type(DType::BF16), KvType::F32);
        let err = be.new_pool(1, 1, shape, KvType::BF16).err().unwrap();
        assert!(err.to_string().contains("in f32, not BF16"), "{err}");
        let mut pool = be.new_pool(1, 1, shape, KvType::F32).unwrap();
        // Nothing staged yet: RoPE and attention say so.
        let (mut q, kv) = (vec![0.0; 2], vec![0.0; 2]);
        let err = be
            .rope_and_cache(&mut q, &kv, &kv, &mut pool, 0, shape, &[1.0])
            .unwrap_err();
        assert!(
            err.to_string().contains("no token ids were staged"),
            "{err}"
        );
        // A block past the pool is refused; an id past the table is an error at embed.
        let mut past = Batch::new();
        past.push(&[1], 0, &[1], RowKind::Decode, Logits::Last)
            .unwrap();
        let err = be.stage(&mut pool, &past).unwrap_err();
        assert!(
            err.to_string().contains("past the pool's 1 blocks"),
            "{err}"
        );
        let mut one = Batch::new();
        one.push(&[0], 0, &[5], RowKind::Decode, Logits::Last)
            .unwrap();
        be.stage(&mut pool, &one).unwrap();
        assert_eq!(pool.allocated_blocks(), 1);
        assert!(be.embed(&w, &pool, &mut vec![0.0; 2]).is_err());
        // A layer the pool does not have.
        let err = be
            .attention(&q, &mut pool, 1, shape, &mut vec![0.0; 2])
            .unwrap_err();
        assert!(err.to_string().contains("layer 1 of a pool of 1"), "{err}");
        // A block released while staged is an error, not a panic; released memory is freed.
        be.release(&mut pool, &[0]).unwrap();
        assert_eq!(pool.allocated_blocks(), 0);
        let err = be
            .attention(&q, &mut pool, 0, shape, &mut vec![0.0; 2])
            .unwrap_err();
        assert!(err.to_string().contains("released while staged"), "{err}");
        // The greedy choice of each row, read back.
        be.choose(
            &vec![0.5, 2.0, f32::NAN, 2.0, 1.0, 0.0, 3.0, f32::NAN],
            4,
            2,
            &mut pool,
        )
        .unwrap();
        assert_eq!(be.chosen(&pool).unwrap(), [1, 2]);
        assert!(be.choose(&vec![0.5], 4, 1, &mut pool).is_err());
        assert!(be
            .upload(HostTensor {
                dtype: DType::F32,
                shape: &[2, 2],
                bytes: &[0; 15]
            })
            .is_err());
    }
}
