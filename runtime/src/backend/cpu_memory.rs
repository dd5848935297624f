//! Memory the CPU backend keeps for reuse: matmul results before they are copied into their
//! output rows, the activation buffers of passes with prompt rows and the KV blocks of finished
//! sequences. Freed, they went back to the operating system between passes and came back as
//! fresh pages that the kernel zeroes on first touch (the 3 MB of results of a 16-request
//! step's output projection: 7 % of the step's time; fresh KV blocks: 3 % of a 16-request
//! step's samples under `perf`; a whole 16-request `engine-load` run took 18–31 % fewer page
//! faults with blocks and buffers kept: bench/RESULTS.md); kept, a buffer is only refilled.

use std::collections::VecDeque;
use std::sync::Mutex;

/// Bytes of kept allocations at most (per backend); past it the oldest are freed.
pub(super) const KEPT_BYTES: usize = 64 << 20;

/// Allocations of f32 kept for reuse, oldest first, at most [`KEPT_BYTES`] in all.
#[derive(Debug, Default)]
pub(super) struct Spare {
    kept: Mutex<Kept>,
}

#[derive(Debug, Default)]
struct Kept {
    buffers: VecDeque<Vec<f32>>,
    bytes: usize,
}

/// Bytes an allocation holds.
fn bytes(v: &Vec<f32>) -> usize {
    v.capacity() * size_of::<f32>()
}

impl Spare {
    /// A buffer of `len` values: a kept one of at least `len` and at most twice as many values
    /// where there is one (the smallest), a fresh one otherwise. Zeroed when `zeroed`; else its
    /// values are unspecified (what a previous user left), for memory every value of which is
    /// written before it is read.
    pub(super) fn take(&self, len: usize, zeroed: bool) -> Vec<f32> {
        let found = {
            let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
            let fits = |v: &Vec<f32>| (len..=len.saturating_mul(2)).contains(&v.capacity());
            let best = (kept.buffers.iter().enumerate())
                .filter(|(_, v)| fits(v))
                .min_by_key(|(_, v)| v.capacity())
                .map(|(i, _)| i);
            let v = best.and_then(|i| kept.buffers.remove(i));
            if let Some(v) = &v {
                kept.bytes -= bytes(v);
            }
            v
        };
        match found {
            Some(mut v) => {
                if zeroed {
                    v.clear();
                }
                v.resize(len, 0.0);
                v
            }
            None => vec![0.0; len],
        }
    }

    /// Keeps `v` for a later [`Spare::take`], freeing the oldest kept ones past [`KEPT_BYTES`]
    /// (or `v` itself, larger than that alone).
    pub(super) fn keep(&self, v: Vec<f32>) {
        let size = bytes(&v);
        if size == 0 || size > KEPT_BYTES {
            return;
        }
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        while kept.bytes + size > KEPT_BYTES {
            let Some(old) = kept.buffers.pop_front() else {
                break;
            };
            kept.bytes -= bytes(&old);
        }
        kept.bytes += size;
        kept.buffers.push_back(v);
    }

    /// Bytes kept now.
    #[cfg(test)]
    fn kept_bytes(&self) -> usize {
        self.kept.lock().unwrap().bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kept_buffer_is_taken_again_zeroed_or_as_left() {
        let spare = Spare::default();
        let mut v = spare.take(100, true);
        assert_eq!(v, vec![0.0; 100]);
        v.fill(7.0);
        let at = v.as_ptr();
        spare.keep(v);
        assert_eq!(spare.kept_bytes(), 400);
        // Too small a request for it (it is more than twice as large): a fresh one.
        let small = spare.take(40, true);
        assert_ne!(small.as_ptr(), at);
        // The same memory, its values as left, cut to the length asked for.
        let again = spare.take(80, false);
        assert_eq!((again.as_ptr(), again.len()), (at, 80));
        assert!(again.iter().all(|x| *x == 7.0));
        assert_eq!(spare.kept_bytes(), 0);
        spare.keep(again);
        let zeroed = spare.take(100, true);
        assert_eq!(zeroed.as_ptr(), at);
        assert_eq!(zeroed, vec![0.0; 100]);
    }

    #[test]
    fn the_smallest_that_fits_is_taken() {
        let spare = Spare::default();
        for len in [300, 120, 200] {
            spare.keep(vec![1.0; len]);
        }
        assert_eq!(spare.take(110, false).capacity(), 120);
        assert_eq!(spare.take(150, false).capacity(), 200);
        assert_eq!(spare.take(150, false).capacity(), 300);
        assert_eq!(spare.kept_bytes(), 0);
    }

    #[test]
    fn what_is_kept_stays_within_its_bound_oldest_freed_first() {
        let spare = Spare::default();
        let quarter = KEPT_BYTES / 4 / size_of::<f32>();
        for i in 0..6 {
            spare.keep(vec![i as f32; quarter]);
        }
        assert_eq!(spare.kept_bytes(), KEPT_BYTES);
        // The first two were freed: the oldest left holds 2.0.
        assert_eq!(spare.take(quarter, false)[0], 2.0);
        // One larger than the bound is not kept at all.
        spare.keep(vec![0.0; KEPT_BYTES / size_of::<f32>() + 1]);
        assert_eq!(spare.kept_bytes(), 3 * KEPT_BYTES / 4);
    }
}
