//! The CPU backend's products on x86-64-v3, written with explicit 256-bit vectors (pulp's safe
//! wrappers of the AVX2 and FMA intrinsics; 16 accumulator lanes are two vectors of 8): one
//! row times weight rows (decode's GEMV), 2 to 4 rows streaming each weight row, 2 × 3 register
//! blocks for more rows, BF16 widening, and attention's dot products and weighted sums.
//!
//! Why not the portable code of [`super::dot`]: compiled for one row, the 16-lane sums became
//! 128-bit and two-lane operations; groups of weight rows read side by side (4 streams 1,152
//! bytes apart, 18 cache lines each) kept the hardware prefetcher from seeing one long stream;
//! and the portable 2 × 2 blocks were bound by loads. On a 2-core AVX2 EPYC, 135 MB of BF16
//! rows × one activation row (two threads, one half each): 17.7 GB/s in groups of 4, 20 GB/s
//! one row at a time autovectorized, 26 GB/s here, as fast as the same loop in C with
//! intrinsics (two rows side by side here: 16–18 GB/s). bench/RESULTS.md has the end-to-end
//! figures.
//!
//! Every value keeps the bits of [`super::dot`]: lane `l` of the 16 sums takes the products
//! `l`, `l + 16`, … in order (fused multiply-adds), the lanes are added pairwise as
//! [`super::dot::reduce`] adds them, then the products past the last 16 are added in order.

use pulp::{cast, f32x8, u16x8, x86::V3};

/// A weight element the kernel reads 8 at a time.
pub(super) trait Weight: Copy {
    /// Eight weights as f32 lanes.
    fn lanes(simd: V3, w: &[Self; 8]) -> f32x8;
    /// One weight as f32 (the tail past the last 16).
    fn value(self) -> f32;
}

impl Weight for u16 {
    /// BF16 bits widened exactly: zero-extended to 32 bits, shifted into the high half.
    #[inline(always)]
    fn lanes(simd: V3, w: &[u16; 8]) -> f32x8 {
        let wide = simd.convert_u16x8_to_u32x8(cast::<[u16; 8], u16x8>(*w));
        cast(simd.shl_const_u32x8::<16>(wide))
    }

    #[inline(always)]
    fn value(self) -> f32 {
        super::dot::bf16_to_f32(self)
    }
}

impl Weight for f32 {
    #[inline(always)]
    fn lanes(_: V3, w: &[f32; 8]) -> f32x8 {
        cast(*w)
    }

    #[inline(always)]
    fn value(self) -> f32 {
        self
    }
}

/// `out[j] = x · w_j` over consecutive BF16 weight rows (`out.len()` rows of `x.len()`), each
/// bit-identical to [`super::dot::dot_bf16`]. False (nothing written) where the CPU lacks
/// x86-64-v3.
pub(super) fn rows_dot_bf16(x: &[f32], w: &[u16], out: &mut [f32]) -> bool {
    rows_dot(x, w, out)
}

/// [`rows_dot_bf16`] for f32 weight rows, each bit-identical to [`super::dot::dot`].
pub(super) fn rows_dot_f32(x: &[f32], w: &[f32], out: &mut [f32]) -> bool {
    rows_dot(x, w, out)
}

fn rows_dot<T: Weight>(x: &[f32], w: &[T], out: &mut [f32]) -> bool {
    let Some(simd) = V3::try_new() else {
        return false;
    };
    simd.vectorize(
        #[inline(always)]
        || rows(simd, x, w, out),
    );
    true
}

#[inline(always)]
fn rows<T: Weight>(simd: V3, x: &[f32], w: &[T], out: &mut [f32]) {
    let k = x.len();
    if k == 0 {
        out.fill(0.0);
        return;
    }
    for (o, row) in out.iter_mut().zip(w.chunks_exact(k)) {
        *o = dot_with(simd, x, row);
    }
}

/// BF16 bits widened to f32 (`out.len()` values of `w`), 8 a vector. False (nothing
/// written) where the CPU lacks x86-64-v3.
pub(super) fn widen_bf16(w: &[u16], out: &mut [f32]) -> bool {
    let Some(simd) = V3::try_new() else {
        return false;
    };
    simd.vectorize(
        #[inline(always)]
        || {
            let (oc, ot) = out.as_chunks_mut::<8>();
            let (wc, wt) = w[..oc.len() * 8 + ot.len()].as_chunks::<8>();
            for (o, w) in oc.iter_mut().zip(wc) {
                *o = cast(u16::lanes(simd, w));
            }
            for (o, w) in ot.iter_mut().zip(wt) {
                *o = w.value();
            }
        },
    );
    true
}

/// Weight rows `first..first + m` (`m = out.len() / rows`) times every row of `x` (`rows` rows
/// of `k`), into `out` row by row (`out[r * m + j] = x_r · w_{first + j}`), each value bit-identical
/// to [`super::dot::dot`]; `widen(j, buf)` writes weight row `j` as f32. Blocks of 2 rows × 3
/// weight rows: 12 accumulators of 8 lanes, and per 16 products of each pair 10 loads for 12
/// fused multiply-adds (the 2 × 2 block of the portable code: 8 for 8, bound by loads;
/// `matmul/mlp/Narrow` at 64 rows, 2 threads: 53 → 62 G multiply-adds/s).
/// False (nothing written) where the CPU lacks x86-64-v3.
pub(super) fn weight_rows_times(
    x: &[f32],
    rows: usize,
    k: usize,
    first: usize,
    widen: &dyn Fn(usize, &mut [f32]),
    out: &mut [f32],
) -> bool {
    let Some(simd) = V3::try_new() else {
        return false;
    };
    if rows == 0 || k == 0 {
        out.fill(0.0);
        return true;
    }
    simd.vectorize(
        #[inline(always)]
        || {
            let m = out.len() / rows;
            let mut w = vec![0f32; 3 * k];
            let mut j = 0;
            while j < m {
                let c = (m - j).min(3);
                for (i, buf) in w.chunks_exact_mut(k).take(c).enumerate() {
                    widen(first + j + i, buf);
                }
                match c {
                    3 => rows_times::<3>(simd, x, (rows, k), &w, (j, m), out),
                    2 => rows_times::<2>(simd, x, (rows, k), &w, (j, m), out),
                    _ => rows_times::<1>(simd, x, (rows, k), &w, (j, m), out),
                }
                j += c;
            }
        },
    );
    true
}

/// A few rows (1 to 4) of `x` (each `k` values) times the BF16 weight rows `w` (`m` rows of
/// `k`), into `out` row by row (`out[r * m + j] = x_r · w_j`), each value bit-identical to
/// [`super::dot::dot_bf16`]. Each weight row is read once, front to back, and widened in
/// registers, as the one-row kernel does: with so few rows a matmul is bound by memory, and
/// widening rows into a buffer first made reads and arithmetic take turns. False (nothing
/// written) where the CPU lacks x86-64-v3 or `rows` is not 1 to 4.
pub(super) fn few_rows_times_bf16(
    x: &[f32],
    (rows, k): (usize, usize),
    w: &[u16],
    out: &mut [f32],
) -> bool {
    let Some(simd) = V3::try_new() else {
        return false;
    };
    if !(1..=4).contains(&rows) || k == 0 {
        return false;
    }
    simd.vectorize(
        #[inline(always)]
        || match rows {
            1 => few_rows::<1>(simd, x, k, w, out),
            2 => few_rows::<2>(simd, x, k, w, out),
            3 => few_rows::<3>(simd, x, k, w, out),
            _ => few_rows::<4>(simd, x, k, w, out),
        },
    );
    true
}

#[inline(always)]
fn few_rows<const R: usize>(simd: V3, x: &[f32], k: usize, w: &[u16], out: &mut [f32]) {
    let m = out.len() / R;
    let halves = k / 16 * 2;
    let xs: [&[f32]; R] = std::array::from_fn(|r| &x[r * k..(r + 1) * k]);
    let xc: [&[[f32; 8]]; R] = std::array::from_fn(|r| &xs[r].as_chunks::<8>().0[..halves]);
    for (j, row) in w.chunks_exact(k).take(m).enumerate() {
        let wc = &row.as_chunks::<8>().0[..halves];
        let zero = simd.splat_f32x8(0.0);
        let mut acc = [[zero; 2]; R];
        for i in (0..halves).step_by(2) {
            for h in 0..2 {
                let wv = u16::lanes(simd, &wc[i + h]);
                for r in 0..R {
                    acc[r][h] = simd.mul_add_f32x8(cast(xc[r][i + h]), wv, acc[r][h]);
                }
            }
        }
        for r in 0..R {
            let [lo, hi] = acc[r];
            out[r * m + j] =
                lanes_sum(simd, lo, hi) + tail(&xs[r][halves * 8..], &row[halves * 8..]);
        }
    }
}

/// Every row of `x` times the `C` weight rows at the start of `w` (the task's weight rows
/// `j..j + C` of `m`), into `out` (`[rows][m]`).
#[inline(always)]
fn rows_times<const C: usize>(
    simd: V3,
    x: &[f32],
    (rows, k): (usize, usize),
    w: &[f32],
    (j, m): (usize, usize),
    out: &mut [f32],
) {
    let ws: [&[f32]; C] = std::array::from_fn(|c| &w[c * k..(c + 1) * k]);
    let row = |r: usize| &x[r * k..(r + 1) * k];
    let mut r = 0;
    while r + 2 <= rows {
        let s = block::<2, C>(simd, [row(r), row(r + 1)], ws);
        out[r * m + j..r * m + j + C].copy_from_slice(&s[0]);
        out[(r + 1) * m + j..(r + 1) * m + j + C].copy_from_slice(&s[1]);
        r += 2;
    }
    if r < rows {
        let s = block::<1, C>(simd, [row(r)], ws);
        out[r * m + j..r * m + j + C].copy_from_slice(&s[0]);
    }
}

/// `R` activation rows times `C` weight rows (all of one length): `[r][c]` is `x_r · w_c`,
/// each bit-identical to [`super::dot::dot`]; every loaded vector feeds `C` (or `R`) fused
/// multiply-adds.
#[inline(always)]
fn block<const R: usize, const C: usize>(
    simd: V3,
    xs: [&[f32]; R],
    ws: [&[f32]; C],
) -> [[f32; C]; R] {
    let k = xs[0].len();
    let halves = k / 16 * 2;
    let xc: [&[[f32; 8]]; R] = std::array::from_fn(|r| &xs[r].as_chunks::<8>().0[..halves]);
    let wc: [&[[f32; 8]]; C] = std::array::from_fn(|c| &ws[c].as_chunks::<8>().0[..halves]);
    let zero = simd.splat_f32x8(0.0);
    let mut acc = [[[zero; 2]; C]; R];
    for i in (0..halves).step_by(2) {
        for h in 0..2 {
            let xv: [f32x8; R] = std::array::from_fn(|r| cast(xc[r][i + h]));
            for c in 0..C {
                let wv: f32x8 = cast(wc[c][i + h]);
                for r in 0..R {
                    acc[r][c][h] = simd.mul_add_f32x8(xv[r], wv, acc[r][c][h]);
                }
            }
        }
    }
    std::array::from_fn(|r| {
        std::array::from_fn(|c| {
            let [lo, hi] = acc[r][c];
            lanes_sum(simd, lo, hi) + tail(&xs[r][halves * 8..], &ws[c][halves * 8..])
        })
    })
}

/// The 16 lanes `lo ++ hi` added in the order of [`super::dot::reduce`]: lane l + 8 into l
/// (one vector add), then + 4, + 2, + 1.
#[inline(always)]
fn lanes_sum(simd: V3, lo: f32x8, hi: f32x8) -> f32 {
    let v: [f32; 8] = cast(simd.add_f32x8(lo, hi));
    ((v[0] + v[4]) + (v[2] + v[6])) + ((v[1] + v[5]) + (v[3] + v[7]))
}

/// The products past the last 16, in order.
#[inline(always)]
fn tail<T: Weight>(x: &[f32], w: &[T]) -> f32 {
    x.iter().zip(w).map(|(a, b)| a * b.value()).sum()
}

/// `x · w` (`w` at least as long as `x`), bit-identical to [`super::dot::dot`] (and to
/// [`super::dot::dot_bf16`] for BF16 `w`), inside code already vectorized for `simd`.
#[inline(always)]
pub(super) fn dot_with<T: Weight>(simd: V3, x: &[f32], w: &[T]) -> f32 {
    let whole = x.len() / 16 * 16;
    let xc = x[..whole].as_chunks::<8>().0;
    let wc = w[..whole].as_chunks::<8>().0;
    let (mut lo, mut hi) = (simd.splat_f32x8(0.0), simd.splat_f32x8(0.0));
    for (xp, wp) in xc.chunks_exact(2).zip(wc.chunks_exact(2)) {
        lo = simd.mul_add_f32x8(cast(xp[0]), T::lanes(simd, &wp[0]), lo);
        hi = simd.mul_add_f32x8(cast(xp[1]), T::lanes(simd, &wp[1]), hi);
    }
    lanes_sum(simd, lo, hi) + tail(&x[whole..], &w[whole..x.len()])
}

/// `o[i] = Σ_t p[t] · value(t)[i]`, the terms added in `t` order from zero by fused
/// multiply-adds (bit-identical to that scalar loop), inside code vectorized for `simd`: the
/// sums of up to 64 lanes are held in registers across every `t`.
#[inline(always)]
pub(super) fn weighted_sum<'a, F: Fn(usize) -> &'a [f32]>(
    simd: V3,
    o: &mut [f32],
    p: &[f32],
    value: F,
) {
    let d = o.len();
    let mut start = 0;
    while d - start >= 8 {
        let piece = match (d - start) / 8 {
            8.. => weighted_piece::<8, _>(simd, o, start, p, &value),
            4..=7 => weighted_piece::<4, _>(simd, o, start, p, &value),
            2 | 3 => weighted_piece::<2, _>(simd, o, start, p, &value),
            _ => weighted_piece::<1, _>(simd, o, start, p, &value),
        };
        start += piece;
    }
    for (i, oi) in o.iter_mut().enumerate().skip(start) {
        *oi = p
            .iter()
            .enumerate()
            .fold(0f32, |acc, (t, pt)| pt.mul_add(value(t)[i], acc));
    }
}

/// [`weighted_sum`] of lanes `start..start + 8 N`; returns how many lanes it wrote.
#[inline(always)]
fn weighted_piece<'a, const N: usize, F: Fn(usize) -> &'a [f32]>(
    simd: V3,
    o: &mut [f32],
    start: usize,
    p: &[f32],
    value: &F,
) -> usize {
    let lanes = 8 * N;
    let mut acc = [simd.splat_f32x8(0.0); N];
    for (t, pt) in p.iter().enumerate() {
        let pv = simd.splat_f32x8(*pt);
        let v = value(t)[start..start + lanes].as_chunks::<8>().0;
        for j in 0..N {
            acc[j] = simd.mul_add_f32x8(pv, cast(v[j]), acc[j]);
        }
    }
    let out = o[start..start + lanes].as_chunks_mut::<8>().0;
    for j in 0..N {
        out[j] = cast(acc[j]);
    }
    lanes
}

#[cfg(test)]
mod tests {
    use super::super::dot::{dot, dot_bf16};

    #[test]
    fn every_bf16_widens_exactly() {
        // All 65,536 patterns (NaNs keep their payload), and a length with a tail past 8.
        let w: Vec<u16> = (0..=u16::MAX).chain([7, 8, 9]).collect();
        let mut out = vec![0f32; w.len()];
        assert!(super::widen_bf16(&w, &mut out));
        for (v, b) in out.iter().zip(&w) {
            assert_eq!(v.to_bits(), u32::from(*b) << 16, "bf16 {b:#06x}");
        }
    }

    #[test]
    fn each_row_has_the_bits_of_its_dot_and_the_kernel_runs() {
        // The build targets x86-64-v3, so the CPU running the tests has it: the kernel runs
        // (true), it is not the portable fallback that is checked.
        let specials = [0.0, -0.0, 1e-40, -3.5, f32::INFINITY, 65504.0, 1e30];
        for (n, k) in [
            (1, 0),
            (3, 5),
            (7, 16),
            (8, 40),
            (21, 33),
            (16, 576),
            (5, 1032),
        ] {
            let w: Vec<f32> = (0..n * k)
                .map(|i| match i % 97 {
                    13 => specials[i % specials.len()],
                    _ => ((i * 29 % 23) as f32 - 11.0) / 9.0,
                })
                .collect();
            let wb: Vec<u16> = w
                .iter()
                .map(|v| half::bf16::from_f32(*v).to_bits())
                .collect();
            let x: Vec<f32> = (0..k).map(|i| (i as f32 * 0.61).cos() * 1e3).collect();
            let (mut out, mut outb) = (vec![f32::NAN; n], vec![f32::NAN; n]);
            assert!(super::rows_dot_f32(&x, &w, &mut out));
            assert!(super::rows_dot_bf16(&x, &wb, &mut outb));
            for j in 0..n {
                let want = dot(&x, &w[j * k..(j + 1) * k]);
                assert_eq!(out[j].to_bits(), want.to_bits(), "f32 {n}×{k} row {j}");
                let want = dot_bf16(&x, &wb[j * k..(j + 1) * k]);
                assert_eq!(outb[j].to_bits(), want.to_bits(), "bf16 {n}×{k} row {j}");
            }
        }
    }
}
