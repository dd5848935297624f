//! Shape and limit checks of every kernel, apart from the launches so that they can be
//! tested without a GPU. Each returns [`Error::Shape`] naming the kernel and what does not fit;
//! a launch happens only after its check passed, so no kernel indexes outside its buffers.

use crate::error::{shape, Result};

/// Warps (one output each) in a GEMV block (`GEMV_WARPS` in gemv.cu).
pub const GEMV_WARPS: usize = 4;
/// Activation rows a GEMV warp serves from one read of its weight row (`GEMV_ROWS`).
pub const GEMV_ROWS: usize = 4;
/// Rows of a GEMV launch from which each warp computes two outputs (`gemv2_*`,
/// `GEMV_PAIR_ROWS` in gemv.cu): same bits, half the loads of the activations.
pub const GEMV_PAIR_ROWS: usize = 8;
/// Rows of a GEMV launch from which each warp computes four outputs (`gemv4_*`,
/// `GEMV_QUAD_ROWS` in gemv.cu).
pub const GEMV_QUAD_ROWS: usize = 16;
/// Most weights one GEMV launch reads (Q, K and V).
pub const GEMV_MAX_WEIGHTS: usize = 3;
/// Threads of a norm block, one block per row (`NORM_THREADS` in norm.cu).
pub const NORM_THREADS: usize = 512;
/// Threads of a RoPE block (`ROPE_THREADS` in rope.cu), one (head, pair) each.
pub const ROPE_THREADS: usize = 128;
/// One tile shape of the tensor-core GEMM (two `GEMM_ENTRY` lines of gemm.cu, entry points
/// `gemm_<bm>x<bn>_{bf16,f16}`). Every shape gives every output
/// the same bits; they differ only in speed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GemmTile {
    /// Output rows (activation rows) of a block.
    pub bm: usize,
    /// Output columns (weight rows) of a block.
    pub bn: usize,
    /// Warps along the rows.
    pub warps_m: usize,
    /// Warps along the columns.
    pub warps_n: usize,
    /// Weight tiles in the `cp.async` ring.
    pub stages: usize,
    /// Its entry points for BF16 and for F16 weights.
    pub kernels: [&'static str; 2],
}

impl GemmTile {
    /// Threads of a block.
    pub fn threads(self) -> usize {
        32 * self.warps_m * self.warps_n
    }

    /// The entry point for weights of `dtype` (none for f32: no tensor-core path).
    pub fn kernel(self, dtype: WeightType) -> Option<&'static str> {
        match dtype {
            WeightType::BF16 => Some(self.kernels[0]),
            WeightType::F16 => Some(self.kernels[1]),
            WeightType::F32 => None,
        }
    }

    /// The grid (x over weight rows, y over activation rows) for `rows` × `n` outputs.
    pub fn grid(self, rows: usize, n: usize) -> (usize, usize) {
        (n.div_ceil(self.bn), rows.div_ceil(self.bm))
    }
}

/// Every tile shape gemm.cu instantiates.
pub const GEMM_TILES: [GemmTile; 3] = [
    gemm_tile_of(64, 64, 2, 2, 3, ["gemm_64x64_bf16", "gemm_64x64_f16"]),
    gemm_tile_of(64, 128, 1, 4, 3, ["gemm_64x128_bf16", "gemm_64x128_f16"]),
    gemm_tile_of(128, 128, 2, 4, 2, ["gemm_128x128_bf16", "gemm_128x128_f16"]),
];

/// The tile shapes of the Hopper GEMM (gemm_sm90.cu, `wgmma`, sm_90a only): one or two
/// warpgroups (four warps each, along the rows) of 64 × 128 outputs; W tiles in a ring of four
/// or three (48 KiB of static shared memory). Like [`GEMM_TILES`], every shape gives every
/// output the same bits.
pub const GEMM_WG_TILES: [GemmTile; 2] = [
    gemm_tile_of(
        64,
        128,
        4,
        1,
        4,
        ["gemm_wg_64x128_bf16", "gemm_wg_64x128_f16"],
    ),
    gemm_tile_of(
        128,
        128,
        8,
        1,
        3,
        ["gemm_wg_128x128_bf16", "gemm_wg_128x128_f16"],
    ),
];

const fn gemm_tile_of(
    bm: usize,
    bn: usize,
    warps_m: usize,
    warps_n: usize,
    stages: usize,
    kernels: [&'static str; 2],
) -> GemmTile {
    GemmTile {
        bm,
        bn,
        warps_m,
        warps_n,
        stages,
        kernels,
    }
}

/// Columns of k one GEMM split sums (`GEMM_BK` × 64): a longer k is split (split-K) into
/// partial products summed in order by `gemm_sum_splits`. It depends on k alone, so a row's
/// bits never depend on the rows launched with it.
pub const GEMM_SPLIT_K: usize = 2048;
/// The k step of the GEMM's pipeline (`GEMM_BK` in gemm.cu); a split width is a multiple.
pub const GEMM_BK: usize = 32;
/// Most f32 values of a split GEMM's workspace (64 MiB): more rows run in chunks.
pub const GEMM_WORKSPACE: usize = 16 << 20;
/// Blocks from which a tile shape fills the device (about one per SM of an H100/H200 with
/// 132; measured on the H200, bench/RESULTS.md): the launch takes the largest tile that still
/// gives this many blocks, or 1.5 times this for the 128 × 128 tile.
pub const GEMM_FULL_BLOCKS: usize = 128;

/// How one GEMM runs: its tile shape, its split width over k and the rows of a launch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GemmPlan {
    /// The tile shape (any of [`GEMM_TILES`]; every one gives the same bits).
    pub tile: GemmTile,
    /// Columns of k a split sums: k itself (no split) or a multiple of [`GEMM_BK`].
    pub k_split: usize,
    /// Rows a launch takes when split (the workspace holds splits × chunk_rows × n values).
    pub chunk_rows: usize,
}

impl GemmPlan {
    /// Splits of a width-`k` product.
    pub fn splits(self, k: usize) -> usize {
        k.div_ceil(self.k_split.max(1)).max(1)
    }

    /// Checks the plan against a product over width `k`.
    pub fn check(self, k: usize) -> Result<()> {
        const K: &str = "gemm";
        if !GEMM_TILES.contains(&self.tile) && !GEMM_WG_TILES.contains(&self.tile) {
            return Err(shape(K, "gemm.cu has no such tile shape"));
        }
        if self.chunk_rows == 0 {
            return Err(shape(K, "a launch of zero rows"));
        }
        if self.k_split < k && (self.k_split == 0 || !self.k_split.is_multiple_of(GEMM_BK)) {
            return Err(shape(
                K,
                format!(
                    "split width {} is not a multiple of {GEMM_BK}",
                    self.k_split
                ),
            ));
        }
        dim(K, "k_split", self.k_split.min(k)).map(|_| ())
    }
}

/// [`gemm_plan`], or on a device with `wgmma` (sm_90a, [`crate::nvrtc::Arch::has_wgmma`]) the
/// same split in one of [`GEMM_WG_TILES`]: the 128-row tile where it gives 1.5 times
/// [`GEMM_FULL_BLOCKS`] blocks, else the 64-row one. Never a mix of the two GEMMs, whose bits
/// may differ: a row's bits do not depend on how many rows came with it.
pub fn gemm_plan_for(rows: usize, n: usize, k: usize, wgmma: bool) -> GemmPlan {
    let plan = gemm_plan(rows, n, k);
    if !wgmma {
        return plan;
    }
    let [small, large] = GEMM_WG_TILES;
    let (x, y) = large.grid(plan.chunk_rows.min(rows.max(1)), n);
    let tile = if x * y * plan.splits(k) >= GEMM_FULL_BLOCKS * 3 / 2 {
        large
    } else {
        small
    };
    GemmPlan { tile, ..plan }
}

/// The plan of the GEMM for `rows` × `n` outputs over width `k`: the split width from k alone;
/// then the largest tile shape that still gives [`GEMM_FULL_BLOCKS`] blocks (128 × 128 tiles
/// only with 1.5 times that: they need two blocks an SM to hide their latency).
pub fn gemm_plan(rows: usize, n: usize, k: usize) -> GemmPlan {
    let k_split = if k > GEMM_SPLIT_K {
        GEMM_SPLIT_K
    } else {
        k.max(1)
    };
    let splits = k.div_ceil(k_split).max(1);
    let chunk_rows = if splits == 1 {
        rows.max(1)
    } else {
        (GEMM_WORKSPACE / (splits * n.max(1)) / 128 * 128).clamp(128, rows.max(128))
    };
    let blocks = |t: GemmTile| {
        let (x, y) = t.grid(chunk_rows.min(rows.max(1)), n);
        x * y * splits
    };
    let [small, wide, large] = GEMM_TILES;
    let tile = if blocks(large) >= GEMM_FULL_BLOCKS * 3 / 2 {
        large
    } else if blocks(wide) >= GEMM_FULL_BLOCKS {
        wide
    } else {
        small
    };
    GemmPlan {
        tile,
        k_split,
        chunk_rows,
    }
}

/// Warps (query rows) of an attention block (`ATT_WARPS` in attention.cu).
pub const ATT_WARPS: usize = 4;
/// Largest head width the attention kernels hold in registers (`ATT_MAX_D`).
pub const ATT_MAX_D: usize = 256;
/// Positions per split-K chunk of decode attention (`ATT_CHUNK`).
pub const ATT_CHUNK: usize = 128;
/// Query rows of a tile of the tensor-core prefill attention (`PF_ROWS` in
/// attention_prefill.cu).
pub const PF_ROWS: usize = 64;
/// Threads of a prefill attention block: a warp per 16 rows of its tile.
pub const PF_THREADS: usize = PF_ROWS / 16 * 32;
/// Largest number of RoPE frequencies passed by value (`ROPE_MAX_HALF` in rope.cu).
pub const ROPE_MAX_HALF: usize = 256;
/// Threads of an argmax block (`ARGMAX_THREADS` in argmax.cu).
pub const ARGMAX_THREADS: usize = 1024;

/// Stored type of a weight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightType {
    /// IEEE binary32.
    F32,
    /// bfloat16.
    BF16,
    /// IEEE binary16.
    F16,
}

impl WeightType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            WeightType::F32 => 4,
            WeightType::BF16 | WeightType::F16 => 2,
        }
    }

    /// The one of `[f32, bf16, f16]` kernel names specialised for it.
    pub fn pick(self, names: [&'static str; 3]) -> &'static str {
        match self {
            WeightType::F32 => names[0],
            WeightType::BF16 => names[1],
            WeightType::F16 => names[2],
        }
    }
}

/// What the KV pool stores: f32, or bf16 (`Kv<BF16>` in common.cuh) for 16-bit models.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KvType {
    /// IEEE binary32.
    F32,
    /// bfloat16, rounded to nearest even as it is written.
    BF16,
}

impl KvType {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            KvType::F32 => 4,
            KvType::BF16 => 2,
        }
    }

    /// The one of `[f32, bf16]` kernel names specialised for it.
    pub fn pick(self, names: [&'static str; 2]) -> &'static str {
        match self {
            KvType::F32 => names[0],
            KvType::BF16 => names[1],
        }
    }
}

/// Attention geometry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Heads {
    /// Query heads.
    pub heads: usize,
    /// Key/value heads.
    pub kv_heads: usize,
    /// Width of a head.
    pub head_dim: usize,
}

impl Heads {
    /// Width of the query heads.
    pub fn q_dim(&self) -> usize {
        self.heads * self.head_dim
    }

    /// Width of the key (or value) heads.
    pub fn kv_dim(&self) -> usize {
        self.kv_heads * self.head_dim
    }

    /// Whether the kernels support it.
    pub fn check(&self, kernel: &'static str) -> Result<()> {
        let Heads {
            heads,
            kv_heads,
            head_dim,
        } = *self;
        if heads == 0 || kv_heads == 0 || heads % kv_heads != 0 {
            return Err(shape(
                kernel,
                format!("{heads} query heads are not a multiple of {kv_heads} key/value heads"),
            ));
        }
        if head_dim == 0 || head_dim % 2 != 0 || head_dim > ATT_MAX_D {
            return Err(shape(
                kernel,
                format!("head width {head_dim} is not an even number in 2..={ATT_MAX_D}"),
            ));
        }
        dim(kernel, "query width", self.q_dim())?;
        Ok(())
    }
}

/// `value` as a kernel's `int` argument: positive and within i32.
pub fn dim(kernel: &'static str, what: &str, value: usize) -> Result<i32> {
    match i32::try_from(value) {
        Ok(v) if v > 0 => Ok(v),
        _ => Err(shape(
            kernel,
            format!("{what} {value} is not in 1..=2^31-1"),
        )),
    }
}

/// A buffer of `have` elements must hold `want`.
pub fn holds(kernel: &'static str, what: &str, have: usize, want: usize) -> Result<()> {
    if have < want {
        return Err(shape(
            kernel,
            format!("{what} holds {have} values, {want} are needed"),
        ));
    }
    Ok(())
}

fn product(kernel: &'static str, what: &str, a: usize, b: usize) -> Result<usize> {
    a.checked_mul(b)
        .ok_or_else(|| shape(kernel, format!("{what}: {a} × {b} overflows")))
}

/// Embedding: `table` `[vocab, width]`, `rows` ids, `out` ≥ rows·width.
pub fn embed(vocab: usize, width: usize, ids: usize, rows: usize, out: usize) -> Result<()> {
    const K: &str = "embed";
    dim(K, "vocabulary", vocab)?;
    dim(K, "width", width)?;
    dim(K, "rows", rows)?;
    holds(K, "ids", ids, rows)?;
    holds(K, "output", out, product(K, "output", rows, width)?)
}

/// RMSNorm: `x` and `out` ≥ rows·width, `weight` = width.
pub fn rms_norm(x: usize, weight: usize, rows: usize, width: usize, out: usize) -> Result<()> {
    const K: &str = "rms_norm";
    dim(K, "rows", rows)?;
    dim(K, "width", width)?;
    if weight != width {
        return Err(shape(
            K,
            format!("weight of {weight} values for rows of {width}"),
        ));
    }
    let n = product(K, "input", rows, width)?;
    holds(K, "input", x, n)?;
    holds(K, "output", out, n)
}

/// Matrix product: `x` ≥ rows·k, weight `[n, k]`, `out` ≥ rows·n.
pub fn matmul(x: usize, n: usize, k: usize, rows: usize, out: usize) -> Result<()> {
    const K: &str = "matmul";
    dim(K, "rows", rows)?;
    dim(K, "weight rows", n)?;
    dim(K, "weight columns", k)?;
    holds(K, "input", x, product(K, "input", rows, k)?)?;
    holds(K, "output", out, product(K, "output", rows, n)?)?;
    // Grid limits: GEMV puts rows on grid.y (≤ 65535) and n / GEMV_WARPS on grid.x.
    if rows > 65_535 {
        return Err(shape(K, format!("{rows} rows exceed the grid's 65535")));
    }
    Ok(())
}

/// The RoPE kernel's grid `(x, y)` for `rows` rows: x the rows, y the blocks of
/// [`ROPE_THREADS`] (head, pair) slots of q then k.
pub fn rope_grid(heads: Heads, rows: usize) -> (u32, u32) {
    let pairs = (heads.heads + heads.kv_heads) * (heads.head_dim / 2);
    // Bounded by shapes::rope: rows ≤ i32::MAX, heads and head_dim small.
    (rows as u32, pairs.div_ceil(ROPE_THREADS).max(1) as u32)
}

/// Outputs a GEMV warp computes for a launch over `rows` rows: 4 (`gemv4_*`) from
/// [`GEMV_QUAD_ROWS`] rows, 2 (`gemv2_*`) from [`GEMV_PAIR_ROWS`], else 1 (`gemv_*`).
pub fn gemv_per_warp(rows: usize) -> usize {
    if rows >= GEMV_QUAD_ROWS {
        4
    } else if rows >= GEMV_PAIR_ROWS {
        2
    } else {
        1
    }
}

/// The GEMV's grid `[x, y, z]` for weights of `n[p]` rows (one to [`GEMV_MAX_WEIGHTS`], read
/// in one launch) over `rows` activation rows, `per_warp` outputs a warp: x the groups of
/// [`GEMV_ROWS`] rows (fastest, so the groups reading one weight block run together), y +
/// z·y_dim the blocks of each weight in turn (y at most 65535).
pub fn gemv_grid(n: &[usize], rows: usize, per_warp: usize) -> Result<[u32; 3]> {
    const K: &str = "gemv";
    if n.is_empty() || n.len() > GEMV_MAX_WEIGHTS {
        return Err(shape(
            K,
            format!(
                "{} weights in one launch (1 to {GEMV_MAX_WEIGHTS})",
                n.len()
            ),
        ));
    }
    let blocks: usize = n
        .iter()
        .map(|n| n.div_ceil(GEMV_WARPS * per_warp.max(1)))
        .sum();
    let groups = rows.div_ceil(GEMV_ROWS);
    if groups == 0 || groups > 65_535 {
        return Err(shape(
            K,
            format!("{rows} rows: {groups} row groups (1 to 65535)"),
        ));
    }
    let y = blocks.clamp(1, 65_535);
    let z = blocks.div_ceil(y);
    if z > 65_535 {
        return Err(shape(K, format!("{blocks} blocks exceed the grid")));
    }
    Ok([groups as u32, y as u32, z as u32])
}

/// Whether the tensor-core prefill attention takes heads of `head_dim` (64 and 128).
pub fn prefill_head_dim(head_dim: usize) -> bool {
    head_dim == 64 || head_dim == 128
}

/// The tiles of the tensor-core prefill attention over the first `prompt_rows` rows: runs of
/// rows of one sequence (the same table start) at consecutive positions, cut into tiles of at
/// most [`PF_ROWS`] rows, each as (first row, row count), flattened.
pub fn prefill_tiles(positions: &[u32], row_table: &[u32], prompt_rows: usize) -> Vec<i32> {
    let n = prompt_rows.min(positions.len()).min(row_table.len());
    let mut tiles = Vec::new();
    let mut start = 0;
    while start < n {
        let mut end = start + 1;
        while end < n
            && end - start < PF_ROWS
            && row_table[end] == row_table[start]
            && positions[end - 1].checked_add(1) == Some(positions[end])
        {
            end += 1;
        }
        tiles.extend([start as i32, (end - start) as i32]);
        start = end;
    }
    tiles
}

/// Positions per block of the paged KV pool (`KV_BLOCK` in common.cuh).
pub const KV_BLOCK: usize = 8;

/// A pool of `blocks` blocks of [`KV_BLOCK`] positions for `layers` layers of `heads`: the
/// floats of one of its key or value slabs per layer, and of all layers.
pub fn pool(heads: Heads, layers: usize, blocks: usize) -> Result<(usize, usize)> {
    const K: &str = "kv pool";
    heads.check(K)?;
    dim(K, "layers", layers)?;
    dim(K, "blocks", blocks)?;
    let slots = product(K, "slots", blocks, KV_BLOCK)?;
    dim(K, "slots", slots)?;
    let layer = product(K, "layer slab", slots, heads.kv_dim())?;
    Ok((layer, product(K, "pool", layer, layers)?))
}

/// A staged batch: `rows` rows, every table entry below `blocks`, every position and table
/// index within i32 (the kernels' index type).
pub fn stage(rows: usize, blocks: usize, max_block: usize, max_position: usize) -> Result<()> {
    const K: &str = "stage";
    dim(K, "rows", rows)?;
    if max_block >= blocks {
        return Err(shape(
            K,
            format!("block {max_block} is past the pool's {blocks} blocks"),
        ));
    }
    dim(K, "last position", max_position + 1)?;
    Ok(())
}

/// RoPE + pool write for `rows` staged rows into slabs of `pool_kv_dim`.
pub fn rope(
    heads: Heads,
    q: usize,
    k: usize,
    v: usize,
    pool_kv_dim: usize,
    rows: usize,
    inv_freq: usize,
) -> Result<()> {
    const K: &str = "rope_cache";
    heads.check(K)?;
    dim(K, "rows", rows)?;
    if inv_freq != heads.head_dim / 2 || inv_freq > ROPE_MAX_HALF {
        return Err(shape(
            K,
            format!(
                "{inv_freq} frequencies for heads of width {}",
                heads.head_dim
            ),
        ));
    }
    pool_fits(K, heads, pool_kv_dim)?;
    holds(K, "q", q, product(K, "q", rows, heads.q_dim())?)?;
    holds(K, "k", k, rows * heads.kv_dim())?;
    holds(K, "v", v, rows * heads.kv_dim())
}

fn pool_fits(kernel: &'static str, heads: Heads, kv_dim: usize) -> Result<()> {
    if kv_dim != heads.kv_dim() {
        return Err(shape(
            kernel,
            format!(
                "pool rows of {kv_dim} for key/value width {}",
                heads.kv_dim()
            ),
        ));
    }
    Ok(())
}

/// Chunks of split-K attention over `positions` keys.
pub fn split_chunks(positions: usize) -> usize {
    positions.div_ceil(ATT_CHUNK)
}

/// Chunks in the grid of split-K attention when the longest row is at position `max_pos` in a
/// pool of `slots` slots: the chunks the keys `0..=max_pos` need, rounded up to a power of two
/// and capped by the pool. The extra chunks are empty; rounding lets one recorded decode step
/// (a CUDA graph) serve every position up to the next power of two, so a row count records at
/// most ⌈log₂⌉ + 1 steps.
pub fn split_grid_chunks(max_pos: usize, slots: usize) -> usize {
    split_chunks(max_pos.saturating_add(1))
        .next_power_of_two()
        .min(split_chunks(slots))
        .max(1)
}

/// Floats of the split-K workspace of `rows` rows over `chunks` chunks.
pub fn split_workspace(heads: Heads, rows: usize, chunks: usize) -> usize {
    rows.saturating_mul(heads.heads)
        .saturating_mul(chunks)
        .saturating_mul(heads.head_dim + 2)
}

/// Attention of `rows` staged rows, split in `chunks` chunks, into `out`.
#[allow(clippy::too_many_arguments)]
pub fn attention(
    heads: Heads,
    q: usize,
    pool_kv_dim: usize,
    rows: usize,
    chunks: usize,
    out: usize,
    workspace: usize,
) -> Result<()> {
    const K: &str = "attention";
    heads.check(K)?;
    dim(K, "rows", rows)?;
    dim(K, "chunks", chunks)?;
    pool_fits(K, heads, pool_kv_dim)?;
    let n = product(K, "q", rows, heads.q_dim())?;
    holds(K, "q", q, n)?;
    holds(K, "output", out, n)?;
    holds(
        K,
        "split-K workspace",
        workspace,
        split_workspace(heads, rows, chunks),
    )?;
    if heads.heads > 65_535 || chunks > 65_535 || rows > 65_535 {
        return Err(shape(K, "grid exceeds 65535 blocks in a dimension"));
    }
    Ok(())
}

/// Gather of `count` rows of `width` out of `rows` rows.
pub fn gather(x: usize, rows: usize, count: usize, width: usize, out: usize) -> Result<()> {
    const K: &str = "gather_rows";
    dim(K, "rows", count)?;
    dim(K, "width", width)?;
    holds(K, "input", x, product(K, "input", rows, width)?)?;
    holds(K, "output", out, product(K, "output", count, width)?)
}

/// Elementwise kernels over `len` values of two buffers.
pub fn elementwise(kernel: &'static str, a: usize, b: usize, len: usize) -> Result<()> {
    if len == 0 {
        return Err(shape(kernel, "no values"));
    }
    holds(kernel, "first operand", a, len)?;
    holds(kernel, "second operand", b, len)
}

/// Argmax of `rows` rows of `width`.
pub fn argmax(logits: usize, rows: usize, width: usize, out: usize) -> Result<()> {
    const K: &str = "argmax_rows";
    dim(K, "rows", rows)?;
    dim(K, "width", width)?;
    holds(K, "logits", logits, product(K, "logits", rows, width)?)?;
    holds(K, "output", out, rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use crate::source::{define, PRELUDE, SOURCES};

    fn text(file: &str) -> &'static str {
        SOURCES.iter().find(|s| s.file == file).unwrap().text
    }

    #[test]
    fn constants_match_the_cuda_sources() {
        let d = |f: &str, n: &str| define(text(f), n).unwrap() as usize;
        assert_eq!(d("gemv.cu", "GEMV_WARPS"), GEMV_WARPS);
        assert_eq!(d("gemv.cu", "GEMV_ROWS"), GEMV_ROWS);
        assert_eq!(d("gemv.cu", "GEMV_PAIR_ROWS"), GEMV_PAIR_ROWS);
        assert_eq!(d("gemv.cu", "GEMV_QUAD_ROWS"), GEMV_QUAD_ROWS);
        assert_eq!(d("rope.cu", "ROPE_THREADS"), ROPE_THREADS);
        assert_eq!(d("norm.cu", "NORM_THREADS"), NORM_THREADS);
        let gemm = SOURCES.iter().find(|s| s.file == "gemm.cu").unwrap();
        for t in GEMM_TILES {
            for (k, ty) in t.kernels.iter().zip(["BF16", "F16"]) {
                let line = format!(
                    "\nGEMM_ENTRY({k}, {ty}, {}, {}, {}, {}, {})\n",
                    t.bm, t.bn, t.warps_m, t.warps_n, t.stages
                );
                assert!(gemm.text.contains(&line), "gemm.cu lacks {line}");
                assert!(
                    gemm.kernels.contains(k),
                    "{k} is not among gemm.cu's kernels"
                );
            }
        }
        let entries = gemm.text.matches("\nGEMM_ENTRY(").count();
        assert_eq!(entries, 2 * GEMM_TILES.len());
        assert_eq!(gemm.kernels.len(), 2 * GEMM_TILES.len() + 1);
        assert_eq!(d("gemm.cu", "GEMM_BK"), GEMM_BK);
        assert_eq!(d("gemm_sm90.cu", "WG_BK"), GEMM_BK);
        let wg = SOURCES.iter().find(|s| s.file == "gemm_sm90.cu").unwrap();
        for t in GEMM_WG_TILES {
            // Warpgroups of 64 rows, four warps each, over 128 weight rows.
            let groups = t.bm / d("gemm_sm90.cu", "WG_ROWS");
            assert_eq!(
                (t.warps_m, t.warps_n, t.bn),
                (4 * groups, 1, d("gemm_sm90.cu", "WG_BN"))
            );
            assert_eq!(t.threads(), groups * d("gemm_sm90.cu", "WG_THREADS"));
            for (k, ty) in t.kernels.iter().zip(["BF16", "F16"]) {
                let line = format!("\nGEMM_WG_ENTRY({k}, {ty}, {groups}, {})\n", t.stages);
                assert!(wg.text.contains(&line), "gemm_sm90.cu lacks {line}");
                assert!(wg.kernels.contains(k));
            }
        }
        assert_eq!(wg.kernels.len(), 2 * GEMM_WG_TILES.len());
        assert_eq!(GEMM_SPLIT_K % GEMM_BK, 0);
        assert_eq!(d("attention.cu", "ATT_WARPS"), ATT_WARPS);
        assert_eq!(d("attention.cu", "ATT_MAX_D"), ATT_MAX_D);
        assert_eq!(d("attention.cu", "ATT_CHUNK"), ATT_CHUNK);
        assert_eq!(d("attention_prefill.cu", "PF_WARPS") * 16, PF_ROWS);
        assert_eq!(d("rope.cu", "ROPE_MAX_HALF"), ROPE_MAX_HALF);
        assert_eq!(d("argmax.cu", "ARGMAX_THREADS"), ARGMAX_THREADS);
        assert_eq!(define(PRELUDE, "WARP"), Some(32));
        assert_eq!(define(PRELUDE, "KV_BLOCK"), Some(KV_BLOCK as i64));
    }

    #[test]
    fn gemm_plans_split_by_k_alone_and_fill_the_device() {
        // The split width never depends on the rows: a row's bits do not depend on its batch.
        for k in [64, 2048, 2049, 8192, 14_336] {
            let widths: Vec<usize> = [1, 7, 512, 5000]
                .iter()
                .map(|&rows| gemm_plan(rows, 2048, k).k_split)
                .collect();
            assert!(
                widths.iter().all(|&w| w == widths[0]),
                "k = {k}: {widths:?}"
            );
        }
        let p = gemm_plan(512, 2048, 8192);
        assert_eq!((p.k_split, p.splits(8192)), (GEMM_SPLIT_K, 4));
        assert_eq!(p.tile, GEMM_TILES[2]); // 16 × 4 tiles × 4 splits = 256 blocks
        assert_eq!(gemm_plan(512, 8192, 2048).tile, GEMM_TILES[2]);
        assert_eq!(gemm_plan(512, 2048, 2048).tile, GEMM_TILES[1]);
        assert_eq!(gemm_plan(512, 512, 2048).tile, GEMM_TILES[0]);
        assert_eq!(gemm_plan(3, 40, 40).splits(40), 1);
        // With wgmma every shape takes a warpgroup tile, the split unchanged.
        for (rows, n, k, tile) in [
            (1, 40, 40, 0),
            (512, 512, 2048, 0),
            (512, 2048, 2048, 0),
            (512, 8192, 2048, 1),
            (512, 2048, 8192, 1),
        ] {
            let (p, w) = (gemm_plan(rows, n, k), gemm_plan_for(rows, n, k, true));
            assert_eq!(w.tile, GEMM_WG_TILES[tile], "{rows} × {n} × {k}");
            assert_eq!((w.k_split, w.chunk_rows), (p.k_split, p.chunk_rows));
            assert!(w.check(k).is_ok());
            assert_eq!(gemm_plan_for(rows, n, k, false), p);
        }
        // The workspace stays bounded: long prompts run in chunks of rows.
        let p = gemm_plan(60_000, 4096, 14_336);
        assert!(p.splits(14_336) * p.chunk_rows * 4096 <= GEMM_WORKSPACE);
        assert!(p.check(14_336).is_ok());
        let bad = GemmPlan {
            k_split: 100,
            ..gemm_plan(512, 2048, 8192)
        };
        assert!(problem(bad.check(8192)).contains("multiple of 32"));
        let bad = GemmPlan {
            chunk_rows: 0,
            ..gemm_plan(512, 2048, 8192)
        };
        assert!(problem(bad.check(8192)).contains("zero rows"));
    }

    fn problem<T: std::fmt::Debug>(r: Result<T>) -> String {
        match r {
            Err(Error::Shape { problem, .. }) => problem,
            other => panic!("expected a shape error, got {other:?}"),
        }
    }

    const SMOL: Heads = Heads {
        heads: 9,
        kv_heads: 3,
        head_dim: 64,
    };

    #[test]
    fn heads_must_group_and_fit() {
        assert!(SMOL.check("t").is_ok());
        let bad = |heads, kv_heads, head_dim| {
            Heads {
                heads,
                kv_heads,
                head_dim,
            }
            .check("t")
        };
        assert!(problem(bad(9, 2, 64)).contains("not a multiple"));
        assert!(problem(bad(0, 0, 64)).contains("not a multiple"));
        assert!(problem(bad(8, 8, 512)).contains("head width 512"));
        assert!(problem(bad(8, 8, 63)).contains("head width 63"));
        assert!(bad(32, 8, 128).is_ok());
        assert!(bad(4, 1, 2).is_ok());
    }

    #[test]
    fn matmul_checks_every_buffer() {
        assert!(matmul(3 * 576, 1536, 576, 3, 3 * 1536).is_ok());
        assert!(problem(matmul(3 * 576 - 1, 1536, 576, 3, 3 * 1536)).contains("input holds"));
        assert!(problem(matmul(3 * 576, 1536, 576, 3, 3 * 1536 - 1)).contains("output holds"));
        assert!(problem(matmul(0, 1536, 576, 0, 0)).contains("rows 0"));
        assert!(problem(matmul(usize::MAX, 1, 1, 70_000, usize::MAX)).contains("65535"));
        assert!(problem(matmul(1 << 40, 1 << 32, 1, 1, 1 << 40)).contains("weight rows"));
    }

    #[test]
    fn prefill_tiles_follow_sequences_and_positions() {
        // Two sequences' prompts (tables at 0 and 5), 70 rows then 3, then a decode row.
        let mut positions: Vec<u32> = (10..80).collect();
        positions.extend([0, 1, 2, 7]);
        let mut row_table = vec![0u32; 70];
        row_table.extend([5, 5, 5, 9]);
        assert_eq!(
            prefill_tiles(&positions, &row_table, 73),
            vec![0, 64, 64, 6, 70, 3]
        );
        // A gap in positions or another table starts a new tile; prompt rows only.
        assert_eq!(
            prefill_tiles(&[4, 5, 9, 10], &[0, 0, 0, 0], 4),
            vec![0, 2, 2, 2]
        );
        assert_eq!(prefill_tiles(&[4, 5], &[0, 1], 2), vec![0, 1, 1, 1]);
        assert!(prefill_tiles(&[4, 5], &[0, 0], 0).is_empty());
        assert_eq!(prefill_tiles(&[u32::MAX, 0], &[0, 0], 2), vec![0, 1, 1, 1]);
        assert!(prefill_head_dim(64) && prefill_head_dim(128) && !prefill_head_dim(96));
    }

    #[test]
    fn gemv_grid_walks_each_weight_and_row_group() {
        // SmolLM2's Q, K, V: 576 + 192 + 192 outputs = 144 + 48 + 48 blocks; 5 rows, 2 groups.
        assert_eq!(gemv_grid(&[576, 192, 192], 5, 1).unwrap(), [2, 240, 1]);
        assert_eq!(gemv_grid(&[37], 1, 1).unwrap(), [1, 10, 1]);
        // Two outputs a warp: half the blocks (each weight rounded up on its own).
        assert_eq!(gemv_grid(&[576, 192, 192], 9, 2).unwrap(), [3, 120, 1]);
        assert_eq!(gemv_grid(&[37], 8, 2).unwrap(), [2, 5, 1]);
        assert_eq!([7, 8, 15, 16].map(gemv_per_warp), [1, 2, 2, 4]);
        assert_eq!(gemv_grid(&[37], 16, 4).unwrap(), [4, 3, 1]);
        // More blocks than one grid axis holds: y × z covers them.
        assert_eq!(gemv_grid(&[300_000], 1, 1).unwrap(), [1, 65_535, 2]);
        assert!(problem(gemv_grid(&[], 1, 1)).contains("0 weights"));
        assert!(problem(gemv_grid(&[1, 1, 1, 1], 1, 1)).contains("4 weights"));
        assert!(problem(gemv_grid(&[8], 0, 1)).contains("row groups"));
        assert!(problem(gemv_grid(&[8], 4 * 65_535 + 1, 1)).contains("row groups"));
    }

    #[test]
    fn embed_and_norm_checks() {
        assert!(embed(100, 8, 3, 3, 24).is_ok());
        assert!(problem(embed(100, 8, 2, 3, 24)).contains("ids holds 2"));
        assert!(problem(embed(100, 8, 3, 3, 23)).contains("output holds 23"));
        assert!(rms_norm(24, 8, 3, 8, 24).is_ok());
        assert!(problem(rms_norm(24, 7, 3, 8, 24)).contains("weight of 7"));
        assert!(problem(rms_norm(23, 8, 3, 8, 24)).contains("input holds 23"));
    }

    #[test]
    fn pool_and_staging_checks() {
        let slots = 10 * KV_BLOCK;
        assert_eq!(pool(SMOL, 30, 10).unwrap(), (slots * 192, 30 * slots * 192));
        assert!(problem(pool(SMOL, 30, 0).map(|_| ())).contains("blocks 0"));
        let too_many = i32::MAX as usize / KV_BLOCK + 1;
        assert!(problem(pool(SMOL, 1, too_many).map(|_| ())).contains("slots"));
        assert!(stage(3, 10, 9, 100).is_ok());
        assert!(problem(stage(3, 10, 10, 100)).contains("block 10 is past the pool's 10"));
        assert!(problem(stage(0, 10, 0, 0)).contains("rows 0"));
        assert!(problem(stage(1, 10, 0, i32::MAX as usize)).contains("last position"));
    }

    #[test]
    fn rope_checks_frequencies_and_pool() {
        let (q, kv) = (SMOL.q_dim(), SMOL.kv_dim());
        assert!(rope(SMOL, 2 * q, 2 * kv, 2 * kv, kv, 2, 32).is_ok());
        assert!(problem(rope(SMOL, 2 * q, 2 * kv, 2 * kv, kv, 2, 31)).contains("31 frequencies"));
        assert!(problem(rope(SMOL, 2 * q, 2 * kv, 2 * kv, kv + 1, 2, 32)).contains("pool rows"));
        assert!(problem(rope(SMOL, 2 * q, 2 * kv - 1, 2 * kv, kv, 2, 32)).contains("k holds"));
        assert!(problem(rope(SMOL, 2 * q, 2 * kv, 2 * kv - 1, kv, 2, 32)).contains("v holds"));
    }

    #[test]
    fn attention_checks_and_sizes_the_split_workspace() {
        let q = SMOL.q_dim();
        assert_eq!(split_chunks(1), 1);
        assert_eq!(split_chunks(128), 1);
        assert_eq!(split_chunks(129), 2);
        // The grid: a power of two of chunks, never more than the pool has.
        assert_eq!(split_grid_chunks(0, 2048), 1);
        assert_eq!(split_grid_chunks(128, 2048), 2);
        assert_eq!(split_grid_chunks(256, 2048), 4);
        assert_eq!(split_grid_chunks(383, 2048), 4);
        assert_eq!(split_grid_chunks(512, 2048), 8);
        assert_eq!(split_grid_chunks(512, 600), 5);
        assert_eq!(split_grid_chunks(9, 10), 1);
        let ws = split_workspace(SMOL, 3, 8);
        assert_eq!(ws, 3 * 9 * 8 * 66);
        assert!(attention(SMOL, 3 * q, SMOL.kv_dim(), 3, 8, 3 * q, ws).is_ok());
        assert!(
            problem(attention(SMOL, 3 * q, SMOL.kv_dim(), 3, 8, 3 * q, ws - 1))
                .contains("workspace")
        );
        assert!(
            problem(attention(SMOL, 3 * q, SMOL.kv_dim(), 3, 8, 3 * q - 1, ws))
                .contains("output holds")
        );
        assert!(gather(30, 3, 2, 10, 20).is_ok());
        assert!(problem(gather(29, 3, 2, 10, 20)).contains("input holds 29"));
    }

    #[test]
    fn elementwise_and_argmax_checks() {
        assert!(elementwise("add", 10, 10, 10).is_ok());
        assert!(problem(elementwise("add", 10, 9, 10)).contains("second operand"));
        assert!(problem(elementwise("add", 10, 10, 0)).contains("no values"));
        assert!(argmax(20, 2, 10, 2).is_ok());
        assert!(problem(argmax(19, 2, 10, 2)).contains("logits holds 19"));
        assert!(problem(argmax(20, 2, 10, 1)).contains("output holds 1"));
    }
}
