//! The CPU backend's dot products. Every sum of `x · w` is computed the same way wherever it is
//! computed: 16 lanes of fused multiply-adds over the whole 16-value chunks in order, the lanes
//! added pairwise in a fixed order, then the products past the last chunk added in order. So a
//! row's value is bit for bit the same alone (a decode step), in a 2 × 3 block (x86-64-v3) or in
//! a 6 × 4 block (AVX-512): batching and the CPU's features change the speed, never a logit.

use half::f16;
use half::slice::HalfFloatSliceExt;
use multiversion::multiversion;
use multiversion::target::selected_target;

/// Lanes of the dot-product accumulators.
pub const LANES: usize = 16;

/// A BF16 value (its bits) widened to f32, exactly.
#[inline(always)]
pub fn bf16_to_f32(w: u16) -> f32 {
    f32::from_bits(u32::from(w) << 16)
}

/// The lanes added pairwise, in a fixed order (lane `l + 8` into `l`, then `+ 4`, `+ 2`, `+ 1`).
#[inline(always)]
pub(crate) fn reduce(acc: [f32; LANES]) -> f32 {
    // Pairwise, in a fixed order: deterministic.
    let mut a = acc;
    let mut n = LANES;
    while n > 1 {
        n /= 2;
        for i in 0..n {
            a[i] += a[i + n];
        }
    }
    a[0]
}

/// The products past the last whole chunk of `LANES`, summed in order.
#[inline(always)]
fn tail(x: &[f32], w: &[f32]) -> f32 {
    let (x, w) = (x.chunks_exact(LANES), w.chunks_exact(LANES));
    x.remainder()
        .iter()
        .zip(w.remainder())
        .map(|(a, b)| a * b)
        .sum()
}

/// f32 dot product.
#[inline(always)]
pub fn dot(x: &[f32], w: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    for (xs, ws) in x.chunks_exact(LANES).zip(w.chunks_exact(LANES)) {
        for i in 0..LANES {
            acc[i] = xs[i].mul_add(ws[i], acc[i]);
        }
    }
    reduce(acc) + tail(x, w)
}

/// Dot product of f32 activations with BF16 weights.
pub fn dot_bf16(x: &[f32], w: &[u16]) -> f32 {
    rows_dot_group::<1, u16>(x, w, bf16_to_f32)[0]
}

/// Dot product of f32 activations with F16 weights.
pub fn dot_f16(x: &[f32], w: &[f16]) -> f32 {
    let mut acc = [0f32; LANES];
    let mut buf = [0f32; LANES];
    let (xc, wc) = (x.chunks_exact(LANES), w.chunks_exact(LANES));
    let tail: f32 = xc
        .remainder()
        .iter()
        .zip(wc.remainder())
        .map(|(a, b)| a * b.to_f32())
        .sum();
    for (xs, ws) in xc.zip(wc) {
        ws.convert_to_f32_slice(&mut buf);
        for i in 0..LANES {
            acc[i] = xs[i].mul_add(buf[i], acc[i]);
        }
    }
    reduce(acc) + tail
}

/// `out[j] = x · w_j` over consecutive f32 weight rows `w` (`out.len()` rows of `x.len()`).
#[multiversion(targets("x86_64+avx512f+avx512vl+avx512bw+avx512dq"))]
pub fn rows_dot_f32(x: &[f32], w: &[f32], out: &mut [f32]) {
    if const { selected_target!().supports_feature_str("avx512f") } {
        rows_dot::<GEMV_ROWS_AVX512, _>(x, w, out, |v| v)
    } else {
        #[cfg(target_arch = "x86_64")]
        if super::dot_v3::rows_dot_f32(x, w, out) {
            return;
        }
        rows_dot::<GEMV_ROWS, _>(x, w, out, |v| v)
    }
}

/// [`rows_dot_f32`] for BF16 weight rows, widened in registers.
#[multiversion(targets("x86_64+avx512f+avx512vl+avx512bw+avx512dq"))]
pub fn rows_dot_bf16(x: &[f32], w: &[u16], out: &mut [f32]) {
    if const { selected_target!().supports_feature_str("avx512f") } {
        rows_dot::<GEMV_ROWS_AVX512, _>(x, w, out, bf16_to_f32)
    } else {
        #[cfg(target_arch = "x86_64")]
        if super::dot_v3::rows_dot_bf16(x, w, out) {
            return;
        }
        rows_dot::<GEMV_ROWS, _>(x, w, out, bf16_to_f32)
    }
}

/// [`rows_dot_f32`] for F16 weight rows.
pub fn rows_dot_f16(x: &[f32], w: &[f16], out: &mut [f32]) {
    for (o, row) in out.iter_mut().zip(w.chunks_exact(x.len())) {
        *o = dot_f16(x, row);
    }
}

/// Weight rows a [`rows_dot`] group with AVX-512: independent sums, so that the fused
/// multiply-adds of one row do not wait for each other's results (8 accumulators of one 16-lane
/// register each).
const GEMV_ROWS_AVX512: usize = 8;

/// Weight rows a [`rows_dot`] group without AVX-512 where [`super::dot_v3`] does not run (a CPU
/// without x86-64-v3, another architecture): 16 registers hold 4 rows' accumulators (two each).
const GEMV_ROWS: usize = 4;

/// One activation row times consecutive weight rows, `G` at a time; each value is
/// bit-identical to [`dot`] of its pair (with `widen` applied to each weight), whatever `G`.
#[inline(always)]
fn rows_dot<const G: usize, T: Copy>(
    x: &[f32],
    w: &[T],
    out: &mut [f32],
    widen: impl Fn(T) -> f32 + Copy,
) {
    let k = x.len();
    let mut groups = out.chunks_exact_mut(G);
    let mut first = 0;
    for o in &mut groups {
        let sums = rows_dot_group::<G, T>(x, &w[first * k..], widen);
        o.copy_from_slice(&sums);
        first += G;
    }
    for o in groups.into_remainder() {
        *o = rows_dot_group::<1, T>(x, &w[first * k..], widen)[0];
        first += 1;
    }
}

/// `x ·` each of the `C` weight rows at the start of `w`.
#[inline(always)]
fn rows_dot_group<const C: usize, T: Copy>(
    x: &[f32],
    w: &[T],
    widen: impl Fn(T) -> f32,
) -> [f32; C] {
    let k = x.len();
    let chunks = k / LANES;
    let xc = &x.as_chunks::<LANES>().0[..chunks];
    let mut wc: [&[[T; LANES]]; C] = [&[]; C];
    for (c, r) in wc.iter_mut().enumerate() {
        *r = &w[c * k..(c + 1) * k].as_chunks::<LANES>().0[..chunks];
    }
    let mut acc = [[0f32; LANES]; C];
    for (i, xv) in xc.iter().enumerate() {
        for c in 0..C {
            let wv = wc[c][i];
            for l in 0..LANES {
                acc[c][l] = xv[l].mul_add(widen(wv[l]), acc[c][l]);
            }
        }
    }
    let mut sums = reduce_each(acc);
    for (c, sum) in sums.iter_mut().enumerate() {
        let row = &w[c * k..(c + 1) * k];
        let tail: f32 = x[chunks * LANES..]
            .iter()
            .zip(&row[chunks * LANES..])
            .map(|(a, b)| a * widen(*b))
            .sum();
        *sum += tail;
    }
    sums
}

/// Register blocks of a multi-row matmul.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Blocking {
    /// 2 rows × 3 weight rows: 12 of x86-64-v3's 16 vector registers hold the sums (a 16-lane
    /// chunk is two); 2 × 2 in the portable code.
    Narrow,
    /// 6 rows × 4 weight rows: fits AVX-512's 32 registers (a chunk is one).
    Wide,
}

impl Blocking {
    /// The blocking for this CPU: `Wide` where AVX-512 is present.
    pub fn detect() -> Self {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f") {
            return Blocking::Wide;
        }
        Blocking::Narrow
    }

    /// Activation rows per register block.
    fn rows(self) -> usize {
        match self {
            Blocking::Narrow => 2,
            Blocking::Wide => WIDE_ROWS,
        }
    }
}

/// Activation rows of a [`Blocking::Wide`] block.
const WIDE_ROWS: usize = 6;

/// Activation rows laid out for the register blocks. For [`Blocking::Wide`], groups of 6 rows
/// (the last group holds what remains), each group's whole 16-value chunks interleaved as
/// `[chunk][row][lane]` so that a block reads one contiguous run; the rows as given serve the
/// products past the last chunk (and every product of [`Blocking::Narrow`]).
pub struct PackedRows<'a> {
    blocking: Blocking,
    x: &'a [f32],
    rows: usize,
    k: usize,
    packed: Vec<f32>,
}

impl<'a> PackedRows<'a> {
    /// `rows` rows of `k` values from `x`, packed for `blocking`.
    pub fn new(blocking: Blocking, x: &'a [f32], rows: usize, k: usize) -> Self {
        let chunks = k / LANES;
        let group = blocking.rows();
        let packed_rows = if blocking == Blocking::Wide { rows } else { 0 };
        let mut packed = vec![0f32; packed_rows * chunks * LANES];
        for g in (0..packed_rows).step_by(group) {
            let n = group.min(rows - g);
            let dst = &mut packed[g * chunks * LANES..(g + n) * chunks * LANES];
            for (i, d) in dst.chunks_exact_mut(LANES).enumerate() {
                let (chunk, row) = (i / n, g + i % n);
                let at = row * k + chunk * LANES;
                d.copy_from_slice(&x[at..at + LANES]);
            }
        }
        PackedRows {
            blocking,
            x: &x[..rows * k],
            rows,
            k,
            packed,
        }
    }

    fn row(&self, r: usize) -> &[f32] {
        &self.x[r * self.k..(r + 1) * self.k]
    }
}

/// Weight rows `first..first + m` (`m = out.len() / rows`) times every row of `x`, into `out`
/// row by row: `out[r * m + j]` is `x_r · w_{first + j}` (a task's block; the caller copies
/// each row's `m` values, contiguous, into its output row). `widen(j, buf)` writes weight row
/// `j` as f32 into `buf` (`k` values). Each value is bit-identical to [`dot`] of its pair,
/// whatever the blocking.
pub fn weight_rows_times(
    x: &PackedRows<'_>,
    first: usize,
    widen: &dyn Fn(usize, &mut [f32]),
    out: &mut [f32],
) {
    match x.blocking {
        Blocking::Narrow => narrow(x, first, widen, out),
        Blocking::Wide => wide(x, first, widen, out),
    }
}

/// The x86-64-v3 blocking, on the rows as given: 2 × 3 blocks of explicit vectors
/// ([`super::dot_v3`]); the portable 2 × 2 blocks below where that code cannot run.
fn narrow(x: &PackedRows<'_>, first: usize, widen: &dyn Fn(usize, &mut [f32]), out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if super::dot_v3::weight_rows_times(x.x, x.rows, x.k, first, widen, out) {
        return;
    }
    narrow_portable(x, first, widen, out)
}

/// [`narrow`] without explicit vectors: 2 × 2 blocks, the same bits.
fn narrow_portable(
    x: &PackedRows<'_>,
    first: usize,
    widen: &dyn Fn(usize, &mut [f32]),
    out: &mut [f32],
) {
    let (rows, k) = (x.rows, x.k);
    let m = out.len() / rows;
    let (mut w0, mut w1) = (vec![0f32; k], vec![0f32; k]);
    for j in (0..m - m % 2).step_by(2) {
        widen(first + j, &mut w0);
        widen(first + j + 1, &mut w1);
        for r in (0..rows - rows % 2).step_by(2) {
            let d = dot_2x2(x.row(r), x.row(r + 1), &w0, &w1);
            (out[r * m + j], out[r * m + j + 1]) = (d[0], d[1]);
            (out[(r + 1) * m + j], out[(r + 1) * m + j + 1]) = (d[2], d[3]);
        }
        if rows % 2 == 1 {
            let r = rows - 1;
            out[r * m + j] = dot(x.row(r), &w0);
            out[r * m + j + 1] = dot(x.row(r), &w1);
        }
    }
    // An odd last weight row.
    if m % 2 == 1 {
        widen(first + m - 1, &mut w0);
        for r in 0..rows {
            out[r * m + m - 1] = dot(x.row(r), &w0);
        }
    }
}

/// The four dot products of two activation rows with two weight rows, `[x0·w0, x0·w1, x1·w0,
/// x1·w1]`, each bit-identical to [`dot`] of the pair; each loaded chunk feeds two fused
/// multiply-adds instead of one. Not inlined: inlined into [`narrow`]'s loops, the compiler
/// kept the eight accumulators in memory (a load and a store around every multiply-add).
#[inline(never)]
fn dot_2x2(x0: &[f32], x1: &[f32], w0: &[f32], w1: &[f32]) -> [f32; 4] {
    let mut a = [[0f32; LANES]; 4];
    let chunks = x0
        .chunks_exact(LANES)
        .zip(x1.chunks_exact(LANES))
        .zip(w0.chunks_exact(LANES).zip(w1.chunks_exact(LANES)));
    for ((x0s, x1s), (w0s, w1s)) in chunks {
        for i in 0..LANES {
            a[0][i] = x0s[i].mul_add(w0s[i], a[0][i]);
            a[1][i] = x0s[i].mul_add(w1s[i], a[1][i]);
            a[2][i] = x1s[i].mul_add(w0s[i], a[2][i]);
            a[3][i] = x1s[i].mul_add(w1s[i], a[3][i]);
        }
    }
    [
        reduce(a[0]) + tail(x0, w0),
        reduce(a[1]) + tail(x0, w1),
        reduce(a[2]) + tail(x1, w0),
        reduce(a[3]) + tail(x1, w1),
    ]
}

/// The 6 × 4 blocking on packed rows, compiled for AVX-512 (and run where the CPU has it;
/// elsewhere the same blocks in the baseline's instructions).
#[multiversion(targets("x86_64+avx512f+avx512vl+avx512bw+avx512dq"))]
fn wide<'a>(x: &PackedRows<'a>, first: usize, widen: &dyn Fn(usize, &mut [f32]), out: &mut [f32]) {
    times::<4>(x, first, widen, out)
}

/// [`weight_rows_times`] with `C` weight rows a block.
#[inline(always)]
fn times<const C: usize>(
    x: &PackedRows<'_>,
    first: usize,
    widen: &dyn Fn(usize, &mut [f32]),
    out: &mut [f32],
) {
    let (rows, k) = (x.rows, x.k);
    let chunks = k / LANES;
    let group = WIDE_ROWS;
    let m = out.len() / rows;
    let mut w = vec![0f32; C * k];
    let mut j = 0;
    while j < m {
        if j + C > m {
            // The last weight rows, fewer than a block: one at a time.
            widen(first + j, &mut w[..k]);
            for r in 0..rows {
                out[r * m + j] = dot(x.row(r), &w[..k]);
            }
            j += 1;
            continue;
        }
        for c in 0..C {
            widen(first + j + c, &mut w[c * k..(c + 1) * k]);
        }
        let wp: [&[[f32; LANES]]; C] =
            std::array::from_fn(|c| &w[c * k..(c + 1) * k].as_chunks::<LANES>().0[..chunks]);
        for g in (0..rows).step_by(group) {
            let xs = &x.packed[g * chunks * LANES..];
            let mut put = |r: usize, c: usize, sum: f32| {
                out[(g + r) * m + j + c] = sum + tail(x.row(g + r), &w[c * k..(c + 1) * k]);
            };
            match group.min(rows - g) {
                1 => block::<1, C>(xs, wp, &mut put),
                2 => block::<2, C>(xs, wp, &mut put),
                3 => block::<3, C>(xs, wp, &mut put),
                4 => block::<4, C>(xs, wp, &mut put),
                5 => block::<5, C>(xs, wp, &mut put),
                _ => block::<6, C>(xs, wp, &mut put),
            }
        }
        j += C;
    }
}

/// One register block: `R` packed activation rows (`xs`, `[chunk][row][lane]`) times `C` weight
/// rows (`wp`, each in chunks); each pair's lanes, added up, go to `put`.
#[inline(always)]
fn block<const R: usize, const C: usize>(
    xs: &[f32],
    wp: [&[[f32; LANES]]; C],
    put: &mut impl FnMut(usize, usize, f32),
) {
    let chunks = wp[0].len();
    let xp = &xs.as_chunks::<LANES>().0.as_chunks::<R>().0[..chunks];
    let mut acc = [[[0f32; LANES]; C]; R];
    for (i, xv) in xp.iter().enumerate() {
        // Copied out of the slices: the compiler then keeps the chunks in registers.
        let mut wv = [[0f32; LANES]; C];
        for c in 0..C {
            wv[c] = wp[c][i];
        }
        for r in 0..R {
            let xr = xv[r];
            for c in 0..C {
                for l in 0..LANES {
                    acc[r][c][l] = xr[l].mul_add(wv[c][l], acc[r][c][l]);
                }
            }
        }
    }
    for (r, ar) in acc.into_iter().enumerate() {
        for (c, sum) in reduce_each(ar).into_iter().enumerate() {
            put(r, c, sum);
        }
    }
}

/// [`reduce`] of each of `C` accumulators, written level by level across them so that the
/// additions of one level run as vector additions; each result is bit-identical to `reduce`.
#[inline(always)]
fn reduce_each<const C: usize>(a: [[f32; LANES]; C]) -> [f32; C] {
    let (mut h, mut q, mut d, mut sums) =
        ([[0f32; 8]; C], [[0f32; 4]; C], [[0f32; 2]; C], [0f32; C]);
    for c in 0..C {
        for i in 0..8 {
            h[c][i] = a[c][i] + a[c][i + 8];
        }
    }
    for c in 0..C {
        for i in 0..4 {
            q[c][i] = h[c][i] + h[c][i + 4];
        }
    }
    for c in 0..C {
        for i in 0..2 {
            d[c][i] = q[c][i] + q[c][i + 2];
        }
    }
    for c in 0..C {
        sums[c] = d[c][0] + d[c][1];
    }
    sums
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(x: &[f32], w: &[f32]) -> f32 {
        x.iter().zip(w).map(|(a, b)| a * b).sum()
    }

    #[test]
    fn dots_agree_with_naive_sums_for_every_dtype() {
        for n in [1, 15, 16, 17, 100, 576] {
            let x: Vec<f32> = (0..n).map(|i| ((i * 7 % 13) as f32 - 6.0) / 8.0).collect();
            let w: Vec<f32> = (0..n).map(|i| ((i * 5 % 11) as f32 - 5.0) / 4.0).collect();
            let want = naive(&x, &w);
            assert!((dot(&x, &w) - want).abs() < 1e-4);
            let wb: Vec<u16> = w
                .iter()
                .map(|v| half::bf16::from_f32(*v).to_bits())
                .collect();
            assert!((dot_bf16(&x, &wb) - want).abs() < 1e-4, "bf16 n={n}");
            let wh: Vec<f16> = w.iter().map(|v| f16::from_f32(*v)).collect();
            assert!((dot_f16(&x, &wh) - want).abs() < 1e-4, "f16 n={n}");
        }
    }

    #[test]
    fn one_row_times_many_gives_each_its_dot_bit_for_bit() {
        for (n, k) in [(1, 5), (7, 16), (8, 40), (21, 33), (16, 576)] {
            let w: Vec<f32> = (0..n * k)
                .map(|i| ((i * 29 % 23) as f32 - 11.0) / 9.0)
                .collect();
            let wb: Vec<u16> = w
                .iter()
                .map(|v| half::bf16::from_f32(*v).to_bits())
                .collect();
            let x: Vec<f32> = (0..k).map(|i| (i as f32 * 0.61).cos()).collect();
            let (mut out, mut outb) = (vec![f32::NAN; n], vec![f32::NAN; n]);
            rows_dot_f32(&x, &w, &mut out);
            rows_dot_bf16(&x, &wb, &mut outb);
            // The portable groups too (where the explicit-vector code does not run).
            let (mut groups, mut groups8) = (vec![f32::NAN; n], vec![f32::NAN; n]);
            rows_dot::<GEMV_ROWS, _>(&x, &wb, &mut groups, bf16_to_f32);
            rows_dot::<GEMV_ROWS_AVX512, _>(&x, &wb, &mut groups8, bf16_to_f32);
            for j in 0..n {
                let one = dot(&x, &w[j * k..(j + 1) * k]);
                assert_eq!(out[j].to_bits(), one.to_bits(), "f32 {n}×{k} row {j}");
                let one = dot_bf16(&x, &wb[j * k..(j + 1) * k]);
                assert_eq!(outb[j].to_bits(), one.to_bits(), "bf16 {n}×{k} row {j}");
                assert_eq!(groups[j].to_bits(), one.to_bits(), "groups {n}×{k} row {j}");
                assert_eq!(
                    groups8[j].to_bits(),
                    one.to_bits(),
                    "groups of 8 {n}×{k} row {j}"
                );
            }
        }
    }

    #[test]
    fn every_blocking_gives_each_pair_its_one_row_dot_bit_for_bit() {
        // Row counts around both blocks (remainders of 1..5 rows), weight-row counts with a
        // remainder of 1..3, widths with and without a tail past the 16 lanes.
        for (m, k, rows) in [(9, 20, 13), (7, 48, 6), (4, 17, 2), (11, 33, 7), (5, 64, 1)] {
            let w: Vec<f32> = (0..m * k)
                .map(|i| ((i * 31 % 17) as f32 - 8.0) / 7.0)
                .collect();
            let x: Vec<f32> = (0..rows * k).map(|i| (i as f32 * 0.37).sin()).collect();
            let widen = |j: usize, buf: &mut [f32]| buf.copy_from_slice(&w[j * k..(j + 1) * k]);
            for blocking in [Blocking::Narrow, Blocking::Wide] {
                // Weight rows 2.. of the matrix: `first` is honoured.
                let mut out = vec![f32::NAN; (m - 2) * rows];
                let packed = PackedRows::new(blocking, &x, rows, k);
                weight_rows_times(&packed, 2, &widen, &mut out);
                if blocking == Blocking::Narrow {
                    // The portable 2 × 2 blocks (where the explicit-vector code does not run):
                    // the same bits.
                    let mut portable = vec![f32::NAN; (m - 2) * rows];
                    narrow_portable(&packed, 2, &widen, &mut portable);
                    let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
                    assert_eq!(
                        bits(&portable),
                        bits(&out),
                        "portable 2 × 2, {m}×{k}×{rows}"
                    );
                }
                for j in 0..m - 2 {
                    for r in 0..rows {
                        let one = dot(&x[r * k..(r + 1) * k], &w[(j + 2) * k..(j + 3) * k]);
                        assert_eq!(
                            out[r * (m - 2) + j].to_bits(),
                            one.to_bits(),
                            "{blocking:?} {m}×{k}, weight row {j}, row {r} of {rows}"
                        );
                    }
                }
            }
        }
    }
}
