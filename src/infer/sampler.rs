//! Next-token sampling from one row of logits.
//!
//! Order (the original's, with the repetition penalty first as HF applies it):
//! repetition penalty → greedy when temperature ≤ 0 → divide by temperature → top-k → top-p
//! (the smallest set of most likely tokens whose probability reaches p; the top token is always
//! kept) → draw from the renormalised distribution with a seeded ChaCha8 RNG.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// Sampling knobs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SamplingParams {
    /// Softmax temperature; 0 (or less) picks the most likely token. Default: 1.0.
    pub temperature: f64,
    /// Keep only the k most likely tokens. Default: none.
    pub top_k: Option<usize>,
    /// Keep the smallest set of tokens whose probability reaches p (0 < p < 1). Default: none.
    pub top_p: Option<f64>,
    /// Divide positive (multiply negative) logits of tokens already in the sequence by this.
    /// Default: 1.0 (off).
    pub repetition_penalty: f64,
    /// RNG seed. Default: 0.
    pub seed: u64,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 1.0,
            top_k: None,
            top_p: None,
            repetition_penalty: 1.0,
            seed: 0,
        }
    }
}

impl SamplingParams {
    /// Greedy decoding.
    pub fn greedy() -> Self {
        Self {
            temperature: 0.0,
            ..Self::default()
        }
    }
}

/// Draws tokens; one per generation row, so rows never share random state.
#[derive(Debug, Clone)]
pub struct Sampler {
    params: SamplingParams,
    rng: ChaCha8Rng,
}

impl Sampler {
    pub fn new(params: SamplingParams) -> Self {
        let rng = ChaCha8Rng::seed_from_u64(params.seed);
        Self { params, rng }
    }

    /// A sampler for row `row` of a batch (seed mixed with the row index).
    pub fn for_row(params: SamplingParams, row: usize) -> Self {
        let rng = ChaCha8Rng::seed_from_u64(params.seed ^ (row as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
        Self { params, rng }
    }

    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// The next token given `logits` (vocab,) and the tokens seen so far (for the penalty).
    pub fn sample(&mut self, logits: &[f32], seen: &[u32]) -> u32 {
        let (order, probs) = candidates(logits, &self.params, seen);
        if self.params.temperature <= 0.0 {
            return order[0];
        }
        let total: f64 = probs.iter().sum();
        let mut r = self.rng.random::<f64>() * total;
        for (i, &x) in probs.iter().enumerate() {
            r -= x;
            if r < 0.0 {
                return order[i];
            }
        }
        order[probs.len() - 1]
    }
}

/// The tokens [`Sampler::sample`] draws from for `logits` after `seen`, most likely first, with
/// their weights: repetition penalty, then temperature, top-k, softmax and top-p (the weights
/// kept by top-p are not renormalised). At temperature ≤ 0 (or with no logits): the argmax alone.
/// Speculative decoding's acceptance test uses the same distribution.
pub fn candidates(logits: &[f32], p: &SamplingParams, seen: &[u32]) -> (Vec<u32>, Vec<f64>) {
    let mut logits = logits.to_vec();
    if p.repetition_penalty != 1.0 && p.repetition_penalty > 0.0 {
        let mut done = vec![false; logits.len()];
        for &t in seen {
            let t = t as usize;
            if t < logits.len() && !done[t] {
                done[t] = true;
                let l = &mut logits[t];
                *l = if *l > 0.0 {
                    *l / p.repetition_penalty as f32
                } else {
                    *l * p.repetition_penalty as f32
                };
            }
        }
    }
    if p.temperature <= 0.0 || logits.is_empty() {
        return (vec![argmax(&logits)], vec![1.0]);
    }
    let inv_t = 1.0 / p.temperature as f32;
    let mut order: Vec<u32> = (0..logits.len() as u32).collect();
    let k = p
        .top_k
        .filter(|&k| k > 0 && k < logits.len())
        .unwrap_or(logits.len());
    let cmp = |a: &u32, b: &u32| logits[*b as usize].total_cmp(&logits[*a as usize]);
    if k < order.len() {
        order.select_nth_unstable_by(k - 1, cmp);
        order.truncate(k);
    }
    order.sort_unstable_by(cmp);
    let max = logits[order[0] as usize];
    let mut probs: Vec<f64> = order
        .iter()
        .map(|&i| f64::from(((logits[i as usize] - max) * inv_t).exp()))
        .collect();
    let total: f64 = probs.iter().sum();
    probs.iter_mut().for_each(|x| *x /= total);
    if let Some(top_p) = p.top_p.filter(|&x| x > 0.0 && x < 1.0) {
        let mut cum = 0.0;
        let mut keep = probs.len();
        for (i, &x) in probs.iter().enumerate() {
            cum += x;
            if cum >= top_p {
                keep = i + 1;
                break;
            }
        }
        probs.truncate(keep.max(1));
        order.truncate(keep.max(1));
    }
    (order, probs)
}

/// Index of the largest logit (the first on ties, as torch.argmax).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in logits.iter().enumerate() {
        if x > logits[best] {
            best = i;
        }
    }
    best as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_distr::{Distribution, Normal};

    fn random_logits(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let d = Normal::new(0.0f32, 2.0).unwrap();
        (0..n).map(|_| d.sample(&mut rng)).collect()
    }

    #[test]
    fn greedy_is_argmax() {
        let logits = random_logits(1000, 1);
        let mut s = Sampler::new(SamplingParams::greedy());
        let best = logits
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .unwrap()
            .0 as u32;
        assert_eq!(s.sample(&logits, &[]), best);
    }

    #[test]
    fn top_k_only_draws_the_k_most_likely() {
        let logits = random_logits(500, 2);
        let mut sorted: Vec<u32> = (0..500).collect();
        sorted.sort_by(|a, b| logits[*b as usize].total_cmp(&logits[*a as usize]));
        let allowed = &sorted[..5];
        let mut s = Sampler::new(SamplingParams {
            temperature: 5.0,
            top_k: Some(5),
            seed: 3,
            ..Default::default()
        });
        let mut seen = std::collections::HashSet::new();
        for _ in 0..500 {
            let t = s.sample(&logits, &[]);
            assert!(allowed.contains(&t), "{t} is not among the top 5");
            seen.insert(t);
        }
        assert!(seen.len() > 1, "a hot temperature must draw more than one token");
    }

    #[test]
    fn top_p_keeps_the_smallest_covering_set() {
        // Probabilities 0.5, 0.3, 0.2 (log-space): p = 0.75 keeps the first two, never the third.
        let logits = [0.5f32.ln(), 0.3f32.ln(), 0.2f32.ln()];
        let mut s = Sampler::new(SamplingParams {
            temperature: 1.0,
            top_p: Some(0.75),
            seed: 9,
            ..Default::default()
        });
        let draws: Vec<u32> = (0..400).map(|_| s.sample(&logits, &[])).collect();
        assert!(!draws.contains(&2));
        let ones = draws.iter().filter(|&&t| t == 1).count() as f64 / 400.0;
        assert!(
            (ones - 0.375).abs() < 0.08,
            "token 1 drawn {ones} of the time, expected 0.3/0.8"
        );
    }

    #[test]
    fn same_seed_same_draws() {
        let logits = random_logits(100, 4);
        let params = SamplingParams {
            temperature: 1.3,
            top_p: Some(0.9),
            seed: 42,
            ..Default::default()
        };
        let a: Vec<u32> = {
            let mut s = Sampler::new(params.clone());
            (0..50).map(|_| s.sample(&logits, &[])).collect()
        };
        let b: Vec<u32> = {
            let mut s = Sampler::new(params);
            (0..50).map(|_| s.sample(&logits, &[])).collect()
        };
        assert_eq!(a, b);
    }

    #[test]
    fn repetition_penalty_pushes_seen_tokens_down() {
        // Random logits in [-1, 1], then a clear best (3.0) and runner-up (2.0).
        let mut logits: Vec<f32> = random_logits(50, 5).iter().map(|x| x.clamp(-1.0, 1.0)).collect();
        let best = argmax(&logits);
        logits[best as usize] = 3.0;
        let runner_up = {
            let mut l = logits.clone();
            l[best as usize] = f32::NEG_INFINITY;
            argmax(&l)
        };
        logits[runner_up as usize] = 2.0;
        let mut s = Sampler::new(SamplingParams {
            temperature: 0.0,
            repetition_penalty: 2.0,
            ..Default::default()
        });
        assert_eq!(s.sample(&logits, &[best]), runner_up);
    }
}
