//! The CPU backend's attention for one row and one head: the scores of every cached position
//! (`q · k_t`, scaled), their softmax, and the values weighted by it.
//!
//! Each score is [`dot`] of the pair, the exponentials are `f32::exp`, and each output lane
//! adds its terms in position order from zero by fused multiply-adds: the same bits on every
//! CPU, with or without the x86-64-v3 code below, which holds the output lanes in registers
//! across positions and computes the scores with explicit 256-bit vectors.

use super::dot::dot;

/// One row's query for one head, over the positions `0..len` of its sequence: `key(t)` and
/// `value(t)` are the head's key and value at position `t` (each `q.len()` values).
pub(super) struct Head<'a, K, V> {
    /// The query.
    pub q: &'a [f32],
    /// Positions attended.
    pub len: usize,
    /// Key at a position.
    pub key: K,
    /// Value at a position.
    pub value: V,
    /// Scale of the scores (1 / √head width).
    pub scale: f32,
}

/// The attention of `head` into `o`; `scores` is scratch, reused between calls.
pub(super) fn attend<'a, K, V>(head: &Head<'a, K, V>, scores: &mut Vec<f32>, o: &mut [f32])
where
    K: Fn(usize) -> &'a [f32],
    V: Fn(usize) -> &'a [f32],
{
    #[cfg(target_arch = "x86_64")]
    if let Some(simd) = pulp::x86::V3::try_new() {
        use super::dot_v3::{dot_with, weighted_sum};
        return simd.vectorize(
            #[inline(always)]
            || {
                scores.clear();
                let score = |t| dot_with(simd, head.q, (head.key)(t)) * head.scale;
                scores.extend((0..head.len).map(score));
                softmax(scores);
                weighted_sum(simd, o, scores, &head.value);
            },
        );
    }
    attend_portable(head, scores, o)
}

/// [`attend`] without explicit vectors: the same bits.
fn attend_portable<'a, K, V>(head: &Head<'a, K, V>, scores: &mut Vec<f32>, o: &mut [f32])
where
    K: Fn(usize) -> &'a [f32],
    V: Fn(usize) -> &'a [f32],
{
    scores.clear();
    let score = |t| dot(head.q, (head.key)(t)) * head.scale;
    scores.extend((0..head.len).map(score));
    softmax(scores);
    o.fill(0.0);
    for (t, p) in scores.iter().enumerate() {
        for (ov, vv) in o.iter_mut().zip((head.value)(t)) {
            *ov = p.mul_add(*vv, *ov);
        }
    }
}

/// Scores into probabilities: `exp(s - max) / Σ exp(s - max)`, the sum taken in order.
#[inline(always)]
fn softmax(scores: &mut [f32]) {
    let max = scores.iter().fold(f32::NEG_INFINITY, |m, s| m.max(*s));
    let mut sum = 0f32;
    for s in scores.iter_mut() {
        *s = (*s - max).exp();
        sum += *s;
    }
    for s in scores.iter_mut() {
        *s /= sum;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectorized_and_portable_attention_agree_bit_for_bit() {
        // Head widths with and without whole 16-lane chunks and 64-lane register pieces;
        // one position, a partial block, many positions.
        for d in [6, 16, 24, 64, 80, 128, 256] {
            for len in [1, 9, 37, 300] {
                let q: Vec<f32> = (0..d).map(|i| (i as f32 * 0.37).sin()).collect();
                let kv: Vec<f32> = (0..2 * len * d)
                    .map(|i| ((i * 29 % 23) as f32 - 11.0) / 7.0)
                    .collect();
                let key = |t: usize| &kv[t * d..(t + 1) * d];
                let value = |t: usize| &kv[(len + t) * d..(len + t + 1) * d];
                let scale = 1.0 / (d as f32).sqrt();
                let (mut a, mut b) = (vec![f32::NAN; d], vec![f32::NAN; d]);
                let mut scores = Vec::new();
                let head = Head {
                    q: &q,
                    len,
                    key,
                    value,
                    scale,
                };
                attend(&head, &mut scores, &mut a);
                attend_portable(&head, &mut scores, &mut b);
                for i in 0..d {
                    assert_eq!(a[i].to_bits(), b[i].to_bits(), "d {d} len {len} lane {i}");
                }
                assert!(a.iter().all(|v| v.is_finite()));
            }
        }
    }
}
