//! BF16 products, the CPU backend's `cpu:avx512bf16` kind: activations rounded to BF16 and
//! multiplied with BF16 weights by AVX512-BF16's `vdpbf16ps` (32 products an instruction, twice
//! the f32 FMA rate, and no widening of the weights). Its sums are not those of [`super::dot`]
//! (the activations lose 16 bits), so a receipt made this way names it in its `backend` and
//! replays exactly only on this kind.
//!
//! Like [`super::dot`], every sum is computed one way wherever it is computed, so a row's value
//! is the same alone (decode), in a multi-row block (prefill, batches) or emulated: 16 lanes,
//! each accumulating, chunk by chunk, its pair of products as `vdpbf16ps` does (Intel SDM:
//! `acc += a[2i+1]·b[2i+1]`, then `acc += a[2i]·b[2i]`, each a fused multiply-add rounded to
//! nearest even, denormal inputs read as zero and denormal results flushed to zero); the lanes
//! added pairwise in the fixed order of `dot`; then the products past the last 32-value chunk
//! (rounded products, added in order). [`emulated`] computes the same bits without the
//! instruction, so a machine without AVX512-BF16 replays such a receipt exactly (slowly), and
//! the tests compare it with the hardware where the hardware exists.

use cocoon_kernels::avx512bf16 as hw;

use super::dot::{bf16_to_f32 as widen, reduce};

/// BF16 values in one chunk (one 512-bit register).
pub const CHUNK: usize = hw::CHUNK;
/// f32 accumulator lanes (each holds one pair of every chunk), added as `dot`'s are.
const LANES: usize = hw::LANES;
const _: () = assert!(LANES == super::dot::LANES);
/// Weight rows of a one-row group: independent accumulators, so that the instructions of one
/// row do not wait for each other's results.
const GEMV_ROWS: usize = 8;
/// Activation rows × weight rows of a multi-row register block (24 of the 32 registers).
const BLOCK_ROWS: usize = 6;
const BLOCK_COLS: usize = 4;

/// Whether this CPU has AVX512-BF16 (else the products are emulated: same bits, slower).
pub fn hardware() -> bool {
    hw::available()
}

/// An f32 rounded to BF16 (its bits), to nearest even; a NaN stays a (quiet) NaN.
#[inline]
pub fn round(v: f32) -> u16 {
    let b = v.to_bits();
    if v.is_nan() {
        return (b >> 16) as u16 | 0x40;
    }
    ((b + 0x7fff + ((b >> 16) & 1)) >> 16) as u16
}

/// `x` rounded to BF16, value by value.
pub fn round_all(x: &[f32]) -> Vec<u16> {
    x.iter().map(|v| round(*v)).collect()
}

/// The products past the last whole chunk, rounded and added in order.
#[inline(always)]
fn tail(x: &[u16], w: &[u16]) -> f32 {
    let whole = x.len() / CHUNK * CHUNK;
    x[whole..]
        .iter()
        .zip(&w[whole..])
        .map(|(a, b)| widen(*a) * widen(*b))
        .sum()
}

/// `out[j] = x · w_j` over consecutive BF16 weight rows `w` (`out.len()` rows of `x.len()`),
/// `x` already rounded to BF16.
pub fn rows_dot(x: &[u16], w: &[u16], out: &mut [f32]) {
    let k = x.len();
    if k == 0 {
        return out.fill(0.0);
    }
    let mut groups = out.chunks_exact_mut(GEMV_ROWS);
    let mut first = 0;
    for o in &mut groups {
        let rows = &w[first * k..(first + GEMV_ROWS) * k];
        let sums =
            hw::rows::<GEMV_ROWS>(x, rows).unwrap_or_else(|| emulated::rows::<GEMV_ROWS>(x, rows));
        o.copy_from_slice(&sums);
        if !k.is_multiple_of(CHUNK) {
            for (c, o) in o.iter_mut().enumerate() {
                *o += tail(x, &rows[c * k..(c + 1) * k]);
            }
        }
        first += GEMV_ROWS;
    }
    for o in groups.into_remainder() {
        *o = one(x, &w[first * k..(first + 1) * k]);
        first += 1;
    }
}

/// `x · w` for one pair.
fn one(x: &[u16], w: &[u16]) -> f32 {
    let [sum] = hw::rows::<1>(x, w).unwrap_or_else(|| emulated::rows::<1>(x, w));
    sum + tail(x, w)
}

/// Weight rows `first..first + m` of `w` (rows of `k`) times every row of `x` (`dst.len()` rows
/// of `k`, rounded to BF16): `dst[r][j]` is `x_r · w_{first + j}` (`m` is `dst[0].len()`), bit
/// for bit [`rows_dot`]'s value for the pair. Each `dst[r]` is a piece of output row `r`, so
/// the results land in place.
pub fn rows_times(x: &[u16], k: usize, w: &[u16], first: usize, dst: &mut [&mut [f32]]) {
    let (rows, m) = (dst.len(), dst.first().map_or(0, |d| d.len()));
    rows_times_into(x, rows, k, w, first, m, &mut |r, j, sum| dst[r][j] = sum);
}

/// [`rows_times`] into `out` transposed: `out[j * rows + r]` is `x_r · w_{first + j}` for
/// `out.len() / rows` weight rows. Faster where the results stay in cache (a task's block is
/// contiguous), slower where they do not (they must be put back in row order).
pub fn rows_times_transposed(
    x: &[u16],
    rows: usize,
    k: usize,
    w: &[u16],
    first: usize,
    out: &mut [f32],
) {
    let m = out.len().checked_div(rows).unwrap_or(0);
    rows_times_into(x, rows, k, w, first, m, &mut |r, j, sum| {
        out[j * rows + r] = sum
    });
}

/// The products of [`rows_times`], each given to `store(r, j, sum)`.
#[inline(always)]
fn rows_times_into(
    x: &[u16],
    rows: usize,
    k: usize,
    w: &[u16],
    first: usize,
    m: usize,
    store: &mut impl FnMut(usize, usize, f32),
) {
    if rows == 0 {
        return;
    }
    if k == 0 {
        return (0..rows).for_each(|r| (0..m).for_each(|j| store(r, j, 0.0)));
    }
    let mut j = 0;
    while j < m {
        let c = BLOCK_COLS.min(m - j);
        let ws = &w[(first + j) * k..(first + j + c) * k];
        for g in (0..rows).step_by(BLOCK_ROWS) {
            let r = BLOCK_ROWS.min(rows - g);
            let xs = &x[g * k..(g + r) * k];
            let mut put = |rr: usize, cc: usize, sum: f32| {
                let sum = if k.is_multiple_of(CHUNK) {
                    sum
                } else {
                    sum + tail(&xs[rr * k..(rr + 1) * k], &ws[cc * k..(cc + 1) * k])
                };
                store(g + rr, j + cc, sum);
            };
            let done = c == BLOCK_COLS
                && match r {
                    1 => put_block(hw::block::<1, BLOCK_COLS>(xs, ws, k), &mut put),
                    2 => put_block(hw::block::<2, BLOCK_COLS>(xs, ws, k), &mut put),
                    3 => put_block(hw::block::<3, BLOCK_COLS>(xs, ws, k), &mut put),
                    4 => put_block(hw::block::<4, BLOCK_COLS>(xs, ws, k), &mut put),
                    5 => put_block(hw::block::<5, BLOCK_COLS>(xs, ws, k), &mut put),
                    _ => put_block(hw::block::<BLOCK_ROWS, BLOCK_COLS>(xs, ws, k), &mut put),
                };
            if !done {
                // Past the last whole block of weight rows, or without the instruction.
                for rr in 0..r {
                    for cc in 0..c {
                        let (xr, wr) = (&xs[rr * k..(rr + 1) * k], &ws[cc * k..(cc + 1) * k]);
                        let [sum] =
                            hw::rows::<1>(xr, wr).unwrap_or_else(|| emulated::rows::<1>(xr, wr));
                        put(rr, cc, sum);
                    }
                }
            }
        }
        j += c;
    }
}

/// A block's sums given to `put(r, c, sum)`; `false` if there were none.
#[inline(always)]
fn put_block<const R: usize, const C: usize>(
    sums: Option<[[f32; C]; R]>,
    put: &mut impl FnMut(usize, usize, f32),
) -> bool {
    let Some(sums) = sums else { return false };
    for (r, sr) in sums.iter().enumerate() {
        for (c, sum) in sr.iter().enumerate() {
            put(r, c, *sum);
        }
    }
    true
}

/// `vdpbf16ps` computed without it, bit for bit as the Intel SDM defines it.
pub mod emulated {
    use super::{reduce, widen, CHUNK, LANES};

    #[inline(always)]
    fn daz(v: f32) -> f32 {
        if v.is_subnormal() {
            0f32.copysign(v)
        } else {
            v
        }
    }

    /// One lane of `vdpbf16ps`: `acc + a[1]·b[1] + a[0]·b[0]`, two fused multiply-adds.
    #[inline(always)]
    pub fn lane(acc: f32, a: [u16; 2], b: [u16; 2]) -> f32 {
        let t = daz(daz(widen(a[1])).mul_add(daz(widen(b[1])), daz(acc)));
        daz(daz(widen(a[0])).mul_add(daz(widen(b[0])), t))
    }

    /// The sums of `x` with each of the `C` rows of `w` (`x.len()` values each) over the whole
    /// chunks, as [`cocoon_kernels::avx512bf16::rows`] computes them.
    pub fn rows<const C: usize>(x: &[u16], w: &[u16]) -> [f32; C] {
        lanes::<C>(x, w).map(reduce)
    }

    /// The lane sums, before they are added.
    pub fn lanes<const C: usize>(x: &[u16], w: &[u16]) -> [[f32; LANES]; C] {
        let k = x.len();
        let mut acc = [[0f32; LANES]; C];
        for (c, a) in acc.iter_mut().enumerate() {
            let row = &w[c * k..(c + 1) * k];
            for (xs, ws) in x.chunks_exact(CHUNK).zip(row.chunks_exact(CHUNK)) {
                for (i, l) in a.iter_mut().enumerate() {
                    *l = lane(*l, [xs[2 * i], xs[2 * i + 1]], [ws[2 * i], ws[2 * i + 1]]);
                }
            }
        }
        acc
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic values over many magnitudes, denormals and signed zeros included.
    fn values(n: usize, seed: u32) -> Vec<u16> {
        let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        (0..n)
            .map(|i| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                match i % 29 {
                    // A BF16 denormal, a zero of either sign.
                    7 => (s & 0x807f) as u16 | 1,
                    13 => (s & 0x8000) as u16,
                    _ => {
                        // Exponents near 1.0 mostly, some tiny (products may underflow).
                        let exp = if i % 11 == 0 {
                            1 + s % 12
                        } else {
                            118 + s % 18
                        };
                        ((s >> 31) << 15 | exp << 7 | (s >> 8) & 0x7f) as u16
                    }
                }
            })
            .collect()
    }

    /// Values whose products lie around the smallest normal f32 (2^-126): results and sums that
    /// the instruction flushes to zero.
    fn tiny_values(n: usize, seed: u32) -> Vec<u16> {
        values(n, seed)
            .into_iter()
            .map(|v| v & 0x807f | (56 + u16::from(v % 7 == 0) * 4 + v % 8) << 7)
            .collect()
    }

    #[test]
    fn rounding_is_to_nearest_even() {
        assert_eq!(round(1.0), 0x3f80);
        // 1 + 2^-8 lies halfway between 1 and 1 + 2^-7: to the even one, 1.
        assert_eq!(round(f32::from_bits(0x3f80_8000)), 0x3f80);
        // 1 + 3·2^-8 is halfway between 1 + 2^-7 (odd) and 1 + 2^-6: up.
        assert_eq!(round(f32::from_bits(0x3f81_8000)), 0x3f82);
        assert_eq!(round(f32::from_bits(0x3f80_8001)), 0x3f81);
        assert_eq!(round(-2.5), 0xc020);
        assert_eq!(round(f32::INFINITY), 0x7f80);
        assert_eq!(round(f32::MAX), 0x7f80, "rounds up to infinity");
        assert!(widen(round(f32::NAN)).is_nan());
    }

    #[test]
    fn an_emulated_lane_is_two_fused_multiply_adds_with_denormals_flushed() {
        let one = round(1.0);
        let lane = emulated::lane(0.5, [one, round(2.0)], [round(3.0), round(0.25)]);
        assert_eq!(lane, 0.5 + 0.5 + 3.0);
        // A denormal input is read as zero.
        let tiny = 0x0001; // the smallest BF16 denormal
        assert_eq!(
            emulated::lane(0.0, [tiny, 0], [round(2.0f32.powi(100)), 0]),
            0.0
        );
        // A product below the smallest normal is flushed.
        let small = round(2.0f32.powi(-70));
        assert_eq!(emulated::lane(0.0, [small, 0], [small, 0]), 0.0);
    }

    #[test]
    fn the_instruction_matches_the_emulation_bit_for_bit() {
        if !hardware() {
            eprintln!("no AVX512-BF16 here: the hardware kernels are not compared");
            return;
        }
        let cases = [
            (32, 1),
            (64, 2),
            (576, 3),
            (1536, 4),
            (4096, 5),
            (64, 6),
            (576, 7),
        ];
        for (k, seed) in cases {
            let (x, w) = if seed < 6 {
                (values(k, seed), values(GEMV_ROWS * k, seed + 100))
            } else {
                (tiny_values(k, seed), tiny_values(GEMV_ROWS * k, seed + 100))
            };
            let want = emulated::rows::<GEMV_ROWS>(&x, &w);
            if seed >= 6 {
                // The case tests something: some lanes are flushed, some are not.
                let lanes = emulated::lanes::<GEMV_ROWS>(&x, &w);
                let flat = lanes.iter().flatten();
                assert!(flat.clone().any(|v| *v == 0.0) && flat.clone().any(|v| *v != 0.0));
            }
            let got = hw::rows::<GEMV_ROWS>(&x, &w).expect("the instruction is present");
            for c in 0..GEMV_ROWS {
                assert_eq!(
                    got[c].to_bits(),
                    want[c].to_bits(),
                    "k {k}, row {c}: {} vs emulated {}",
                    got[c],
                    want[c]
                );
            }
            // A register block of 6 activation rows (the weight rows as activations too).
            let block = hw::block::<6, 2>(&w, &w, k).expect("the instruction is present");
            for (r, sr) in block.iter().enumerate() {
                for (c, sum) in sr.iter().enumerate() {
                    let [want] = emulated::rows::<1>(&w[r * k..(r + 1) * k], &w[c * k..]);
                    assert_eq!(
                        sum.to_bits(),
                        want.to_bits(),
                        "k {k}: block pair ({r}, {c})"
                    );
                }
            }
        }
    }

    #[test]
    fn every_path_gives_each_pair_the_same_bits() {
        // Odd shapes: a tail past the last chunk, fewer rows than a block, weight rows not a
        // multiple of the block's columns.
        for (rows, n, k) in [
            (1, 9, 40),
            (7, 13, 96),
            (13, 6, 577),
            (6, 4, 64),
            (2, 3, 31),
        ] {
            let x = values(rows * k, 7);
            let w = values(n * k, 8);
            let mut t = vec![0f32; rows * n];
            let mut dst: Vec<&mut [f32]> = t.chunks_mut(n).collect();
            rows_times(&x, k, &w, 0, &mut dst);
            for r in 0..rows {
                let mut alone = vec![0f32; n];
                rows_dot(&x[r * k..(r + 1) * k], &w, &mut alone);
                for j in 0..n {
                    assert_eq!(
                        t[r * n + j].to_bits(),
                        alone[j].to_bits(),
                        "rows {rows}, n {n}, k {k}: row {r}, weight row {j}"
                    );
                    // And the emulation, whole chunks and tail, agrees.
                    let (xr, wr) = (&x[r * k..(r + 1) * k], &w[j * k..(j + 1) * k]);
                    let [sum] = emulated::rows::<1>(xr, wr);
                    assert_eq!(alone[j].to_bits(), (sum + tail(xr, wr)).to_bits());
                }
            }
            // Transposed, the same values.
            let mut tr = vec![0f32; rows * n];
            rows_times_transposed(&x, rows, k, &w, 0, &mut tr);
            for r in 0..rows {
                for j in 0..n {
                    assert_eq!(tr[j * rows + r].to_bits(), t[r * n + j].to_bits());
                }
            }
            // A later window of weight rows.
            if n > 2 {
                let mut part = vec![0f32; rows * (n - 2)];
                let mut dst: Vec<&mut [f32]> = part.chunks_mut(n - 2).collect();
                rows_times(&x, k, &w, 2, &mut dst);
                for r in 0..rows {
                    assert_eq!(
                        part[r * (n - 2)..(r + 1) * (n - 2)],
                        t[r * n + 2..(r + 1) * n]
                    );
                }
            }
        }
    }

    #[test]
    fn sums_are_close_to_the_f32_products_of_the_rounded_values() {
        let k = 1000;
        let x: Vec<f32> = (0..k)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0)
            .collect();
        let w: Vec<u16> = (0..k)
            .map(|i| round(((i * 53 % 89) as f32 - 44.0) / 44.0))
            .collect();
        let xb = round_all(&x);
        let exact: f64 = xb
            .iter()
            .zip(&w)
            .map(|(a, b)| f64::from(widen(*a)) * f64::from(widen(*b)))
            .sum();
        let mut out = [0f32];
        rows_dot(&xb, &w, &mut out);
        assert!(
            (f64::from(out[0]) - exact).abs() < 1e-3,
            "{} vs {exact}",
            out[0]
        );
    }
}
