//! Choosing the next token: greedy at temperature 0, otherwise temperature, top-k and top-p
//! over a softmax, drawn from a ChaCha20 stream seeded by the request, so the same seed,
//! prompt, model and backend give the same tokens.

use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;

use crate::error::{Error, Result};

/// Sampling parameters of one request.
#[derive(Clone, Debug, PartialEq)]
pub struct SamplingParams {
    /// Most tokens to generate (≥ 1).
    pub max_tokens: u32,
    /// Softmax temperature; 0 is greedy.
    pub temperature: f32,
    /// Nucleus mass in (0, 1]; 1 keeps everything.
    pub top_p: f32,
    /// Keep the `top_k` most likely tokens; 0 keeps all.
    pub top_k: u32,
    /// Seed of the random stream (below 2^53, so that receipts can carry it exactly).
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            max_tokens: 256,
            temperature: 0.0,
            top_p: 1.0,
            top_k: 0,
            seed: 0,
        }
    }
}

/// Largest seed a receipt can carry as a JSON integer.
pub const MAX_SEED: u64 = (1 << 53) - 1;

/// A fresh seed from the operating system, at most [`MAX_SEED`]: for a sampled request that
/// gave none (the receipt records it, so the answer can be replayed).
pub fn fresh_seed() -> u64 {
    use rand_core::RngCore;
    rand_core::OsRng.next_u64() & MAX_SEED
}

impl SamplingParams {
    /// Temperature 0: the most likely token each step, no draw.
    pub fn is_greedy(&self) -> bool {
        self.temperature == 0.0
    }

    /// Refuses values that cannot mean anything.
    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::InvalidRequest(m));
        if self.max_tokens == 0 {
            return bad("max_tokens must be at least 1".into());
        }
        if !self.temperature.is_finite() || !(0.0..=100.0).contains(&self.temperature) {
            return bad(format!(
                "temperature must be between 0 and 100, got {}",
                self.temperature
            ));
        }
        if !self.top_p.is_finite() || self.top_p <= 0.0 || self.top_p > 1.0 {
            return bad(format!("top_p must be in (0, 1], got {}", self.top_p));
        }
        if self.seed > MAX_SEED {
            return bad(format!("seed must be below 2^53, got {}", self.seed));
        }
        Ok(())
    }
}

/// Draws tokens from logits.
pub struct Sampler {
    params: SamplingParams,
    rng: ChaCha20Rng,
}

impl Sampler {
    /// A sampler for validated `params`.
    pub fn new(params: SamplingParams) -> Result<Self> {
        params.validate()?;
        let rng = ChaCha20Rng::seed_from_u64(params.seed);
        Ok(Sampler { params, rng })
    }

    /// The next token. Greedy ties go to the lowest id.
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        if self.params.is_greedy() {
            return argmax(logits);
        }
        self.draw(logits).pick()
    }

    /// The draw of a sampled token (not greedy): the candidates in order with their
    /// probabilities, and the uniform value drawn. Consumes one value of the random stream, as
    /// [`Sampler::sample`] does.
    pub fn draw(&mut self, logits: &[f32]) -> Draw {
        let mut cand: Vec<(u32, f32)> = logits
            .iter()
            .enumerate()
            .map(|(i, l)| (i as u32, *l))
            .collect();
        // Most likely first; ties by id, so the order is total and deterministic.
        cand.sort_unstable_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        if self.params.top_k > 0 {
            cand.truncate(self.params.top_k as usize);
        }
        let max = cand[0].1;
        let t = self.params.temperature;
        let mut probs: Vec<f64> = cand
            .iter()
            .map(|(_, l)| f64::from((l - max) / t).exp())
            .collect();
        let total: f64 = probs.iter().sum();
        probs.iter_mut().for_each(|p| *p /= total);
        if self.params.top_p < 1.0 {
            let mut mass = 0.0;
            let keep = probs
                .iter()
                .position(|p| {
                    mass += p;
                    mass >= f64::from(self.params.top_p)
                })
                .map_or(probs.len(), |i| i + 1);
            probs.truncate(keep);
            let total: f64 = probs.iter().sum();
            probs.iter_mut().for_each(|p| *p /= total);
        }
        // A uniform draw in [0, 1) with 53 random bits.
        let u = (self.rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        cand.truncate(probs.len());
        Draw {
            ids: cand.into_iter().map(|(id, _)| id).collect(),
            probs,
            u,
        }
    }
}

/// One sampled draw: the candidate ids, most likely first, their probabilities (summing to 1),
/// and the uniform value `u` in [0, 1) that picks one.
#[derive(Clone, Debug, PartialEq)]
pub struct Draw {
    /// Candidate ids after top-k and top-p, most likely first.
    pub ids: Vec<u32>,
    /// Their probabilities.
    pub probs: Vec<f64>,
    /// The uniform value drawn.
    pub u: f64,
}

impl Draw {
    /// The id `u` falls on: the first whose cumulative probability exceeds it.
    pub fn pick(&self) -> u32 {
        let mut acc = 0.0;
        for (i, p) in self.probs.iter().enumerate() {
            acc += p;
            if self.u < acc {
                return self.ids[i];
            }
        }
        self.ids[self.ids.len() - 1]
    }

    /// How far `u` lies from the cumulative interval of `id` (0 when `id` is the pick; 1 when
    /// `id` is not a candidate at all): the probability mass by which the draw missed it.
    pub fn miss(&self, id: u32) -> f64 {
        let mut lo = 0.0;
        for (i, p) in self.probs.iter().enumerate() {
            let hi = lo + p;
            if self.ids[i] == id {
                let last = i + 1 == self.probs.len();
                return if self.u < lo {
                    lo - self.u
                } else if self.u >= hi && !last {
                    self.u - hi
                } else {
                    0.0
                };
            }
            lo = hi;
        }
        1.0
    }
}

/// Index of the largest value (the first one on ties). NaN never wins; all NaN (or nothing)
/// gives 0. The CUDA `argmax_rows` kernel follows the same rule.
pub fn argmax(values: &[f32]) -> u32 {
    let mut best: Option<(usize, f32)> = None;
    for (i, v) in values.iter().enumerate() {
        if !v.is_nan() && best.is_none_or(|(_, b)| *v > b) {
            best = Some((i, *v));
        }
    }
    best.map_or(0, |(i, _)| i as u32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_takes_the_first_maximum() {
        assert_eq!(argmax(&[0.0, 3.0, 3.0, -1.0]), 1);
        assert_eq!(argmax(&[f32::NAN, 1.0]), 1);
        assert_eq!(argmax(&[2.0, f32::NAN, 2.0, f32::NAN]), 0);
        assert_eq!(argmax(&[f32::NAN, f32::NAN]), 0);
        assert_eq!(argmax(&[f32::NEG_INFINITY, -0.0, 0.0]), 1);
        assert_eq!(argmax(&[]), 0);
    }

    #[test]
    fn same_seed_same_draws_and_filters_hold() {
        let logits: Vec<f32> = (0..50).map(|i| (i as f32 * 0.37).sin() * 3.0).collect();
        let params = SamplingParams {
            temperature: 0.9,
            seed: 7,
            ..Default::default()
        };
        let draw = |p: &SamplingParams| {
            let mut s = Sampler::new(p.clone()).unwrap();
            (0..200).map(|_| s.sample(&logits)).collect::<Vec<_>>()
        };
        assert_eq!(draw(&params), draw(&params));
        assert_ne!(
            draw(&params),
            draw(&SamplingParams {
                seed: 8,
                ..params.clone()
            })
        );
        let top1 = argmax(&logits);
        assert!(draw(&SamplingParams {
            top_k: 1,
            ..params.clone()
        })
        .iter()
        .all(|t| *t == top1));
        assert!(draw(&SamplingParams {
            top_p: 1e-6,
            ..params.clone()
        })
        .iter()
        .all(|t| *t == top1));
        let top3 = draw(&SamplingParams { top_k: 3, ..params });
        let mut seen = top3.clone();
        seen.sort_unstable();
        seen.dedup();
        assert!(seen.len() <= 3 && seen.len() > 1, "{seen:?}");
    }

    #[test]
    fn absurd_parameters_are_refused() {
        let ok = SamplingParams::default();
        for bad in [
            SamplingParams {
                max_tokens: 0,
                ..ok.clone()
            },
            SamplingParams {
                temperature: -1.0,
                ..ok.clone()
            },
            SamplingParams {
                temperature: f32::NAN,
                ..ok.clone()
            },
            SamplingParams {
                top_p: 0.0,
                ..ok.clone()
            },
            SamplingParams {
                top_p: 1.5,
                ..ok.clone()
            },
            SamplingParams {
                seed: 1 << 53,
                ..ok.clone()
            },
        ] {
            assert!(Sampler::new(bad.clone()).is_err(), "{bad:?}");
        }
    }
}
