//! The Hopper GEMM (gemm_sm90.cu, `wgmma`) checked on the device before it is used: its
//! layouts come from the PTX ISA and were shown right in the CPU emulation (`ci/cuda-emu`),
//! but a real tensor core is the last word, so at open one product with ragged edges and a
//! wrapping pipeline runs through it and through gemm.cu's `mma.sync` tiles. Only when they
//! agree does the prefill take it ([`Gpu::wgmma`]).

use std::sync::atomic::Ordering;

use crate::error::{Error, Result};
use crate::gpu::Gpu;
use crate::shapes::{self, GemmPlan, WeightType, GEMM_TILES, GEMM_WG_TILES};

/// Largest difference allowed between the two GEMMs, relative to the largest output: both sum
/// the same 16-bit products in f32, 16 columns at a time in the same order, so only the
/// tensor core's rounding inside a 16-column step may differ; a wrong layout is off by the
/// size of the outputs themselves.
pub const WGMMA_TOLERANCE: f64 = 1e-5;

/// The product the check runs: rows and columns past a whole tile, k over nine 32-column
/// steps (the W ring of four and the X ring of three both wrap) and not a multiple of 64.
pub const WGMMA_CHECK_SHAPE: (usize, usize, usize) = (70, 136, 264);

/// What the check at open found.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WgmmaCheck {
    /// Largest |wgmma − mma.sync| over the largest |mma.sync| output.
    pub max_rel_diff: f64,
    /// Whether the two GEMMs gave the same bits.
    pub same_bits: bool,
    /// Whether the wgmma tile shapes gave each other's bits (as the design says they must).
    pub tiles_agree: bool,
}

impl WgmmaCheck {
    /// Whether the wgmma GEMM may be used.
    pub fn passed(&self) -> bool {
        self.max_rel_diff <= WGMMA_TOLERANCE && self.tiles_agree
    }
}

/// The bit patterns of `v` (NaN payloads included).
fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

impl Gpu {
    /// Runs [`WGMMA_CHECK_SHAPE`] through every wgmma tile shape and through the first
    /// `mma.sync` tile (BF16 weights, fixed pseudo-random values) and compares them.
    pub fn check_wgmma(&self) -> Result<WgmmaCheck> {
        let (m, n, k) = WGMMA_CHECK_SHAPE;
        // A fixed xorshift sequence in [-1, 1): no dependence on any other crate's generator.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        };
        let x: Vec<f32> = (0..m * k).map(|_| next()).collect();
        // BF16 weights: the top half of an f32's bits.
        let w: Vec<u8> = (0..n * k)
            .flat_map(|_| (((next() * 0.1).to_bits() >> 16) as u16).to_le_bytes())
            .collect();
        let w = self.upload_weight(WeightType::BF16, n, k, &w)?;
        let x = self.upload(&x)?;
        let plan = shapes::gemm_plan(m, n, k);
        let run = |tile| -> Result<Vec<f32>> {
            let mut y = self.alloc(m * n)?;
            self.gemm_planned(GemmPlan { tile, ..plan }, &x, &w, m, &mut y)?;
            self.download(&y, 0, m * n)
        };
        let want = run(GEMM_TILES[0])?;
        let got = run(GEMM_WG_TILES[0])?;
        let mut tiles_agree = true;
        for &tile in &GEMM_WG_TILES[1..] {
            tiles_agree &= bits(&run(tile)?) == bits(&got);
        }
        let scale = want.iter().fold(0f64, |a, v| a.max(f64::from(v.abs())));
        let diff = want.iter().zip(&got).fold(0f64, |a, (w, g)| {
            let d = f64::from((w - g).abs());
            if d.is_nan() {
                f64::INFINITY
            } else {
                a.max(d)
            }
        });
        Ok(WgmmaCheck {
            max_rel_diff: if scale > 0.0 { diff / scale } else { diff },
            same_bits: bits(&want) == bits(&got),
            tiles_agree,
        })
    }

    /// At open, on sm_90 unless `COCOON_CUDA_WGMMA=0`: the check, and the wgmma GEMM turned on
    /// when it passed. A failed comparison leaves the `mma.sync` GEMM in use (with a warning);
    /// a CUDA error during the check is returned, since it may have spoiled the context.
    pub(crate) fn start_wgmma(&mut self) -> Result<()> {
        if !self.arch().has_wgmma()
            || std::env::var_os("COCOON_CUDA_WGMMA").is_some_and(|v| v == "0")
        {
            return Ok(());
        }
        let check = self
            .check_wgmma()
            .map_err(|e| Error::WgmmaCheck(e.to_string()))?;
        if !check.passed() {
            tracing::warn!(
                "the wgmma GEMM differs from the mma.sync GEMM by {:.2e} of the outputs: not used",
                check.max_rel_diff
            );
        }
        self.wgmma.store(check.passed(), Ordering::Relaxed);
        self.wgmma_check = Some(check);
        Ok(())
    }

    /// Whether the prefill GEMM runs on `wgmma` (sm_90 with its check at open passed).
    pub fn wgmma(&self) -> bool {
        self.wgmma.load(Ordering::Relaxed)
    }

    /// Turns the wgmma GEMM off, or back on where its check passed (benches compare the two).
    pub fn set_wgmma(&self, on: bool) {
        let passed = self.wgmma_check.is_some_and(|c| c.passed());
        self.wgmma.store(on && passed, Ordering::Relaxed);
    }

    /// The check at open: none where the device has no `wgmma` or it was turned off.
    pub fn wgmma_check(&self) -> Option<WgmmaCheck> {
        self.wgmma_check
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_check_passes_within_the_tolerance_only() {
        let check = |max_rel_diff| WgmmaCheck {
            max_rel_diff,
            same_bits: false,
            tiles_agree: true,
        };
        assert!(check(0.0).passed());
        let split = WgmmaCheck {
            tiles_agree: false,
            ..check(0.0)
        };
        assert!(!split.passed());
        assert!(check(WGMMA_TOLERANCE).passed());
        assert!(!check(WGMMA_TOLERANCE * 2.0).passed());
        assert!(!check(f64::INFINITY).passed());
        assert!(!check(f64::NAN).passed());
    }

    #[test]
    fn the_check_shape_has_ragged_tiles_and_wraps_both_rings() {
        let (m, n, k) = WGMMA_CHECK_SHAPE;
        let t = GEMM_WG_TILES[0];
        assert!(m % t.bm != 0 && m > t.bm && n % t.bn != 0 && n > t.bn);
        let tiles = k.div_ceil(shapes::GEMM_BK);
        assert!(
            GEMM_WG_TILES.iter().all(|t| tiles > 2 * t.stages),
            "{tiles} k tiles"
        );
        assert_eq!(shapes::gemm_plan(m, n, k).splits(k), 1);
    }
}
