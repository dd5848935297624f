//! The CPU's BF16 dot-product instruction, AVX512-BF16's `vdpbf16ps`: 32 BF16 products a
//! register, accumulated pairwise into 16 f32 lanes. These are the runtime's only CPU kernels
//! that need an instruction the build's baseline (x86-64-v3) lacks and that the compiler does
//! not produce on its own, so they are launched like the GPU's: a safe wrapper checks that the
//! CPU has the features, then calls the `#[target_feature]` code (`unsafe` only because of that
//! precondition). Without the features (or off x86-64) each wrapper returns `None` and the
//! caller computes the same lanes without the instruction.
//!
//! Each function returns, for each row pair, the sum over the whole 32-value chunks: 16 lanes,
//! lane `l` accumulating chunk by chunk `acc += a[2l+1]·b[2l+1]` then `acc += a[2l]·b[2l]` as
//! the instruction defines it, then the lanes added pairwise (`l + 8` into `l`, then `+ 4`,
//! `+ 2`, `+ 1`). Adding the products past the last chunk is the caller's.

/// BF16 values of one chunk (one 512-bit register).
pub const CHUNK: usize = 32;
/// f32 lanes of an accumulator.
pub const LANES: usize = CHUNK / 2;

/// Whether this CPU runs `vdpbf16ps` (AVX512-F, -BW and -BF16).
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bw")
            && std::arch::is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// The sums of `x` (BF16 bits) with each of the `C` consecutive rows of `w` (rows of
/// `x.len()`), over the whole chunks; `None` without the instruction.
pub fn rows<const C: usize>(x: &[u16], w: &[u16]) -> Option<[f32; C]> {
    if w.len() < C * x.len() {
        return None;
    }
    #[cfg(target_arch = "x86_64")]
    if available() {
        // SAFETY: `x86::rows` needs avx512f, avx512bw and avx512bf16, detected just above;
        // it indexes its slices only through bounds-checked safe code.
        return Some(unsafe { x86::rows::<C>(x, w) });
    }
    None
}

/// One register block: rows `0..R` of `xs` times rows `0..C` of `ws` (all rows of `k` BF16
/// values), `[r][c]` the sum of the pair over the whole chunks; `None` without the instruction.
pub fn block<const R: usize, const C: usize>(
    xs: &[u16],
    ws: &[u16],
    k: usize,
) -> Option<[[f32; C]; R]> {
    if xs.len() < R * k || ws.len() < C * k {
        return None;
    }
    #[cfg(target_arch = "x86_64")]
    if available() {
        // SAFETY: as in `rows`: the features `x86::block` is compiled for were detected.
        return Some(unsafe { x86::block::<R, C>(xs, ws, k) });
    }
    None
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::{
        __m512, __m512bh, _mm512_add_ps, _mm512_cvtss_f32, _mm512_dpbf16_ps, _mm512_permute_ps,
        _mm512_setzero_ps, _mm512_shuffle_f32x4, _mm_prefetch, _MM_HINT_T0,
    };

    use super::CHUNK;

    /// The 16 lanes added pairwise: lane `l + 8` into `l`, then `+ 4`, `+ 2`, `+ 1`.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn reduce(v: __m512) -> f32 {
        // Lanes 0-3 of each step hold what the next reads; the others are ignored.
        let v = _mm512_add_ps(v, _mm512_shuffle_f32x4::<0b11_10_11_10>(v, v)); // l + 8
        let v = _mm512_add_ps(v, _mm512_shuffle_f32x4::<0b01_01_01_01>(v, v)); // l + 4
        let v = _mm512_add_ps(v, _mm512_permute_ps::<0b11_10_11_10>(v)); // l + 2
        let v = _mm512_add_ps(v, _mm512_permute_ps::<0b01_01_01_01>(v)); // l + 1
        _mm512_cvtss_f32(v)
    }

    /// `k` values of row `r` of `v` as whole chunks.
    #[inline(always)]
    fn chunks(v: &[u16], r: usize, k: usize) -> &[[u16; CHUNK]] {
        &v[r * k..(r + 1) * k].as_chunks::<CHUNK>().0[..k / CHUNK]
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    pub fn rows<const C: usize>(x: &[u16], w: &[u16]) -> [f32; C] {
        let k = x.len();
        let xc = chunks(x, 0, k);
        let wc: [&[[u16; CHUNK]]; C] = std::array::from_fn(|c| chunks(w, c, k));
        let mut acc: [__m512; C] = [_mm512_setzero_ps(); C];
        let ahead = w.as_ptr().wrapping_add(C * k);
        for (i, xv) in xc.iter().enumerate() {
            for c in 0..C {
                // The same chunk of the next group's rows (past `w` for the last group: a
                // prefetch of any address is harmless).
                _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(c * k + i * CHUNK) as *const i8);
            }
            let xb: __m512bh = bytemuck::cast(*xv);
            for c in 0..C {
                let wb: __m512bh = bytemuck::cast(wc[c][i]);
                acc[c] = _mm512_dpbf16_ps(acc[c], xb, wb);
            }
        }
        acc.map(|a| reduce(a))
    }

    #[target_feature(enable = "avx512f,avx512bw,avx512bf16")]
    pub fn block<const R: usize, const C: usize>(
        xs: &[u16],
        ws: &[u16],
        k: usize,
    ) -> [[f32; C]; R] {
        let xc: [&[[u16; CHUNK]]; R] = std::array::from_fn(|r| chunks(xs, r, k));
        let wc: [&[[u16; CHUNK]]; C] = std::array::from_fn(|c| chunks(ws, c, k));
        let mut acc: [[__m512; C]; R] = [[_mm512_setzero_ps(); C]; R];
        for i in 0..k / CHUNK {
            let wb: [__m512bh; C] = std::array::from_fn(|c| bytemuck::cast(wc[c][i]));
            for r in 0..R {
                let xb: __m512bh = bytemuck::cast(xc[r][i]);
                for c in 0..C {
                    acc[r][c] = _mm512_dpbf16_ps(acc[r][c], xb, wb[c]);
                }
            }
        }
        acc.map(|ar| ar.map(|a| reduce(a)))
    }
}
