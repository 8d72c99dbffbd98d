//! Speculative decoding (Leviathan et al. 2023, Chen et al. 2023): a cheap draft proposes k tokens,
//! the target scores them in one pass, and rejection sampling keeps the output distributed exactly
//! as the target's own sampling would be.
//!
//! Per round, with p_i / q_i the target / draft next-token distributions (after temperature,
//! top-k, top-p and the repetition penalty, so both sides sample what [`Sampler`] would):
//! draft d_i ~ q_i for i = 1..k; accept d_i with probability min(1, p_i(d_i) / q_i(d_i)); at the
//! first rejection draw from norm(max(0, p_i − q_i)) and stop; when all k are accepted draw a bonus
//! token from p_{k+1}. At temperature 0 the distributions are one-hot, so the output is the
//! target's greedy output token for token.
//!
//! Both caches hold every token but the last one (which is fed by the next pass): after a round
//! they are truncated to what was accepted, and the bonus / correction token is fed to both at the
//! start of the next round (the original crashed here on full acceptance and never fed the bonus).
//!
//! The self-draft (`self:layers=N`) runs the target's first N blocks plus its final norm and head,
//! sharing the weights and the KV slots of those blocks: its K/V for a token are exactly what the
//! target's first N layers compute, so the draft needs no prefill and no cache of its own. Before
//! the verification pass those slots are cut back (the target recomputes them in its batched pass).
//!
//! [`Sampler`]: super::Sampler

use std::time::{Duration, Instant};

use candle_core::{DType, Device, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::generator::{GenerateConfig, GenerateError, StopReason};
use super::sampler::SamplingParams;
use crate::model::{ForwardCtx, KvCache, LanguageModel};

/// Speculative decoding could not start.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum SpeculativeError {
    #[error("the draft's vocabulary has {draft} tokens, the target's {target}")]
    #[diagnostic(help("a draft must share the target's tokenizer and vocabulary"))]
    VocabMismatch { target: usize, draft: usize },
    #[error("`{given}`: not a draft; expected a model source or `self:layers=N`")]
    #[diagnostic(help("e.g. --draft self:layers=8, or --draft path/to/draft.gguf"))]
    BadDraft { given: String },
    #[error("self-draft of {layers} layers: the target has {total} blocks (need 1..={total})")]
    #[diagnostic(help("choose fewer layers than the target has, e.g. a quarter of them"))]
    SelfDraftLayers { layers: usize, total: usize },
    #[error("--spec-k must be at least 1")]
    ZeroK,
    #[error(transparent)]
    #[diagnostic(transparent)]
    Generate(#[from] GenerateError),
}

impl From<candle_core::Error> for SpeculativeError {
    fn from(e: candle_core::Error) -> Self {
        Self::Generate(GenerateError::Model(e))
    }
}

/// What `--draft` names: another model, or the target's own first layers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DraftSource {
    /// `self:layers=N`.
    SelfLayers(usize),
    /// Any model source the loader accepts.
    Model(String),
}

impl DraftSource {
    pub fn parse(s: &str) -> Result<Self, SpeculativeError> {
        let Some(rest) = s.strip_prefix("self:") else {
            return Ok(Self::Model(s.to_string()));
        };
        rest.strip_prefix("layers=")
            .and_then(|n| n.parse::<usize>().ok())
            .map(Self::SelfLayers)
            .ok_or_else(|| SpeculativeError::BadDraft { given: s.to_string() })
    }
}

/// The draft model of a speculative session.
#[derive(Clone, Copy)]
pub enum Draft<'m> {
    /// A separate model with the target's vocabulary and its own KV cache.
    Model(&'m LanguageModel),
    /// The target's first `n` blocks + its tail, sharing the target's KV slots.
    SelfLayers(usize),
}

/// A draft and where its K/V live.
enum DraftState<'m> {
    Model {
        model: &'m LanguageModel,
        cache: KvCache,
    },
    SelfLayers(usize),
}

/// Knobs of speculative decoding (the original's names in brackets).
#[derive(Debug, Clone)]
pub struct SpeculativeConfig {
    /// Tokens drafted per round [`spec_k`]. Default: 4.
    pub k: usize,
    /// Grow k by one after a fully accepted round, shrink it by one after a round rejected in its
    /// first half [`spec_k_adaptive`]. Default: true.
    pub adaptive: bool,
    /// Bounds of adaptive k. Default: 1 and 16.
    pub k_min: usize,
    pub k_max: usize,
    /// Stop speculating (plain target decoding from then on) when the acceptance rate falls below
    /// this after `floor_after` drafted tokens [`spec_disable_below_accept`]. Default: 0 (never).
    pub min_acceptance: f64,
    /// Default: 32.
    pub floor_after: usize,
}

impl Default for SpeculativeConfig {
    fn default() -> Self {
        Self {
            k: 4,
            adaptive: true,
            k_min: 1,
            k_max: 16,
            min_acceptance: 0.0,
            floor_after: 32,
        }
    }
}

/// Counters of one speculative generation.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct SpeculativeStats {
    /// Tokens the draft proposed.
    pub draft_tokens: usize,
    /// Of those, accepted by the target.
    pub accepted_tokens: usize,
    /// Verification rounds (one target pass each).
    pub rounds: usize,
    /// Rounds in which every drafted token was accepted (a bonus token was drawn).
    pub full_rounds: usize,
    /// Target forwards in all (rounds, plain steps and the prefill).
    pub target_passes: usize,
    /// Draft forwards in all.
    pub draft_passes: usize,
    /// k at the end (adaptive k moves it).
    pub final_k: usize,
    /// Whether the acceptance floor switched speculation off.
    pub disabled: bool,
    #[serde(skip)]
    pub prefill: Duration,
    #[serde(skip)]
    pub decode: Duration,
}

impl SpeculativeStats {
    /// Accepted / proposed draft tokens (0 when none were proposed).
    pub fn acceptance_rate(&self) -> f64 {
        if self.draft_tokens == 0 {
            0.0
        } else {
            self.accepted_tokens as f64 / self.draft_tokens as f64
        }
    }
}

/// A speculative decoding session: a target, a draft and their caches.
pub struct SpeculativeGenerator<'m> {
    target: &'m LanguageModel,
    draft: DraftState<'m>,
    cfg: SpeculativeConfig,
    target_cache: KvCache,
    target_fed: usize,
    draft_fed: usize,
    history: Vec<u32>,
    max_seq_len: usize,
    device: Device,
    stats: SpeculativeStats,
}

impl<'m> SpeculativeGenerator<'m> {
    /// A session; `cache` builds an empty KV cache for a model (plain or quantized storage), used
    /// for the target and for a separate draft.
    pub fn new(
        target: &'m LanguageModel,
        draft: Draft<'m>,
        cfg: SpeculativeConfig,
        max_seq_len: usize,
        device: &Device,
        cache: impl Fn(&LanguageModel) -> KvCache,
    ) -> Result<Self, SpeculativeError> {
        if cfg.k == 0 || cfg.k_max == 0 {
            return Err(SpeculativeError::ZeroK);
        }
        let draft = match draft {
            Draft::Model(d) => {
                if let (Some(t), Some(v)) = (target.vocab_size(), d.vocab_size())
                    && t != v
                {
                    return Err(SpeculativeError::VocabMismatch { target: t, draft: v });
                }
                DraftState::Model {
                    model: d,
                    cache: cache(d),
                }
            }
            Draft::SelfLayers(n) => {
                let total = target.n_blocks().unwrap_or(0);
                if n == 0 || n > total {
                    return Err(SpeculativeError::SelfDraftLayers { layers: n, total });
                }
                DraftState::SelfLayers(n)
            }
        };
        Ok(Self {
            target,
            draft,
            target_cache: cache(target),
            target_fed: 0,
            draft_fed: 0,
            history: Vec::new(),
            max_seq_len,
            device: device.clone(),
            stats: SpeculativeStats {
                final_k: cfg.k,
                ..SpeculativeStats::default()
            },
            cfg,
        })
    }

    /// Counters of the last generation.
    pub fn stats(&self) -> SpeculativeStats {
        self.stats
    }

    /// The target's KV cache (shared with a self-draft).
    pub fn target_cache(&self) -> &KvCache {
        &self.target_cache
    }

    /// Generate after `prompt` (a fresh session) until eos or `max_new_tokens`.
    pub fn generate(
        &mut self,
        prompt: &[u32],
        gcfg: &GenerateConfig,
    ) -> Result<(Vec<u32>, StopReason), SpeculativeError> {
        self.generate_with(prompt, gcfg, |_| true)
    }

    /// [`Self::generate`], calling `on_token` with each token as it is decided; it returns false
    /// to stop (a stop string), which ends the generation after that token.
    pub fn generate_with(
        &mut self,
        prompt: &[u32],
        gcfg: &GenerateConfig,
        mut on_token: impl FnMut(u32) -> bool,
    ) -> Result<(Vec<u32>, StopReason), SpeculativeError> {
        if prompt.is_empty() {
            return Err(GenerateError::EmptyPrompt.into());
        }
        if prompt.len() > self.max_seq_len {
            return Err(GenerateError::ContextOverflow {
                needed: prompt.len(),
                max: self.max_seq_len,
            }
            .into());
        }
        self.target_cache.reset();
        if let DraftState::Model { cache, .. } = &mut self.draft {
            cache.reset();
        }
        self.stats = SpeculativeStats {
            final_k: self.cfg.k,
            ..SpeculativeStats::default()
        };
        self.history = prompt.to_vec();
        self.target_fed = 0;
        self.draft_fed = 0;
        let params = &gcfg.sampling;
        let mut rng = ChaCha8Rng::seed_from_u64(params.seed);
        let start = Instant::now();
        // Everything but the last prompt token: each round then starts by feeding one pending token.
        if prompt.len() > 1 {
            self.feed_target(0)?;
            if let DraftState::Model { model, cache } = &mut self.draft {
                forward_logits(
                    model,
                    None,
                    cache,
                    &self.history[..prompt.len() - 1],
                    0,
                    0,
                    &self.device,
                )?;
                self.draft_fed = prompt.len() - 1;
                self.stats.draft_passes += 1;
            }
        }
        self.stats.prefill = start.elapsed();
        let start = Instant::now();
        let mut k = self.cfg.k.clamp(self.cfg.k_min.max(1), self.cfg.k_max.max(1));
        let mut out = Vec::new();
        let mut reason = StopReason::MaxTokens;
        'outer: while out.len() < gcfg.max_new_tokens {
            let remaining = gcfg.max_new_tokens - out.len();
            if self.history.len() > self.max_seq_len {
                return Err(GenerateError::ContextOverflow {
                    needed: self.history.len(),
                    max: self.max_seq_len,
                }
                .into());
            }
            let room = self.max_seq_len - self.history.len();
            let k_now = k.min(remaining - 1).min(room);
            let new = if self.stats.disabled || k_now == 0 {
                let logits = self.feed_target(1)?;
                let p = probs(&logits[0], params, &self.history);
                vec![draw(&p, &mut rng)]
            } else {
                let (n, new) = self.round(k_now, params, &mut rng)?;
                if self.cfg.adaptive {
                    if n == k_now && k_now == k {
                        k = (k + 1).min(self.cfg.k_max);
                    } else if 2 * n < k_now {
                        k = k.saturating_sub(1).max(self.cfg.k_min.max(1));
                    }
                }
                if self.cfg.min_acceptance > 0.0
                    && self.stats.draft_tokens >= self.cfg.floor_after
                    && self.stats.acceptance_rate() < self.cfg.min_acceptance
                {
                    self.stats.disabled = true;
                }
                new
            };
            for t in new {
                self.history.push(t);
                out.push(t);
                if gcfg.eos_token_ids.contains(&t) {
                    reason = StopReason::Eos;
                    break 'outer;
                }
                if !on_token(t) {
                    reason = StopReason::StopString;
                    break 'outer;
                }
            }
        }
        self.stats.final_k = k;
        self.stats.decode = start.elapsed();
        Ok((out, reason))
    }

    /// One draft–verify round of `k` tokens; (accepted drafts, the new tokens).
    fn round(
        &mut self,
        k: usize,
        params: &SamplingParams,
        rng: &mut ChaCha8Rng,
    ) -> Result<(usize, Vec<u32>), SpeculativeError> {
        let base = self.history.len();
        let mut seq = self.history.clone();
        let mut qs = Vec::with_capacity(k);
        for _ in 0..k {
            let logits = self.feed_draft(&seq)?;
            let q = probs(&logits, params, &seq);
            seq.push(draw(&q, rng));
            qs.push(q);
        }
        if matches!(self.draft, DraftState::SelfLayers(_)) {
            // why: the self-draft advanced only its own layers' slots; the target recomputes them.
            self.target_cache.truncate_each(self.target_fed)?;
        }
        let ids = &seq[self.target_fed..];
        let logits = forward_logits(
            self.target,
            None,
            &mut self.target_cache,
            ids,
            self.target_fed,
            k + 1,
            &self.device,
        )?;
        self.stats.target_passes += 1;
        let ps: Vec<Vec<f64>> = logits
            .iter()
            .enumerate()
            .map(|(i, l)| probs(l, params, &seq[..base + i]))
            .collect();
        let (n, next) = verify(&ps, &qs, &seq[base..], rng);
        // Keep the pending token plus the accepted drafts; the correction / bonus stays unfed.
        let keep = base + n;
        self.target_cache.truncate_each(keep)?;
        self.target_fed = keep;
        match &mut self.draft {
            DraftState::Model { cache, .. } => {
                self.draft_fed = self.draft_fed.min(keep);
                cache.truncate_each(self.draft_fed)?;
            }
            DraftState::SelfLayers(_) => self.draft_fed = keep,
        }
        self.stats.rounds += 1;
        self.stats.draft_tokens += k;
        self.stats.accepted_tokens += n;
        self.stats.full_rounds += usize::from(n == k);
        let mut new = seq[base..base + n].to_vec();
        new.push(next);
        Ok((n, new))
    }

    /// Feed the target everything not yet fed; logits of the last `last` positions.
    fn feed_target(&mut self, last: usize) -> Result<Vec<Vec<f32>>, SpeculativeError> {
        let upto = if last == 0 {
            self.history.len() - 1
        } else {
            self.history.len()
        };
        let ids = &self.history[self.target_fed..upto];
        let logits = forward_logits(
            self.target,
            None,
            &mut self.target_cache,
            ids,
            self.target_fed,
            last,
            &self.device,
        )?;
        self.target_fed = upto;
        self.stats.target_passes += 1;
        if matches!(self.draft, DraftState::SelfLayers(_)) {
            self.draft_fed = self.target_fed;
        }
        Ok(logits)
    }

    /// Feed the draft every token of `seq` it has not seen; logits of the last one.
    fn feed_draft(&mut self, seq: &[u32]) -> Result<Vec<f32>, SpeculativeError> {
        let ids = &seq[self.draft_fed..];
        let (model, layers, cache) = match &mut self.draft {
            DraftState::Model { model, cache } => (*model, None, cache),
            DraftState::SelfLayers(n) => (self.target, Some(*n), &mut self.target_cache),
        };
        let mut logits = forward_logits(model, layers, cache, ids, self.draft_fed, 1, &self.device)?;
        self.draft_fed = seq.len();
        self.stats.draft_passes += 1;
        Ok(logits.pop().unwrap_or_default())
    }
}

/// Run `ids` (one row) at `pos` through `model` (its first `layers` blocks when given) over
/// `cache`; logits of the last `last` positions, each (vocab,) in f32. A failed forward leaves no
/// partial appends behind.
fn forward_logits(
    model: &LanguageModel,
    layers: Option<usize>,
    cache: &mut KvCache,
    ids: &[u32],
    pos: usize,
    last: usize,
    device: &Device,
) -> candle_core::Result<Vec<Vec<f32>>> {
    let t = ids.len();
    if t == 0 {
        candle_core::bail!("speculative decoding fed an empty step");
    }
    let run = |cache: &mut KvCache| -> candle_core::Result<Vec<Vec<f32>>> {
        let xs = Tensor::from_slice(ids, (1, t), device)?;
        let mut ctx = ForwardCtx::cached(cache, pos);
        let hidden = match layers {
            Some(n) => model.forward_hidden_blocks(&xs, &mut ctx, n)?,
            None => model.forward_hidden(&xs, &mut ctx)?,
        };
        if last == 0 {
            return Ok(Vec::new());
        }
        let m = last.min(t);
        let tail = hidden.narrow(1, t - m, m)?;
        model.logits(&tail)?.squeeze(0)?.to_dtype(DType::F32)?.to_vec2()
    };
    run(cache).inspect_err(|_| {
        let _ = cache.truncate_each(pos);
    })
}

/// The distribution [`super::Sampler::sample`] draws from for `logits` after `seen`, dense over
/// the vocabulary: [`super::sampler::candidates`], renormalised.
pub fn probs(logits: &[f32], params: &SamplingParams, seen: &[u32]) -> Vec<f64> {
    let mut out = vec![0f64; logits.len()];
    if logits.is_empty() {
        return out;
    }
    let (order, weights) = super::sampler::candidates(logits, params, seen);
    let total: f64 = weights.iter().sum();
    for (&i, &w) in order.iter().zip(&weights) {
        out[i as usize] = w / total;
    }
    out
}

/// Draw an index from the (unnormalised, non-negative) weights `w`.
pub fn draw(w: &[f64], rng: &mut impl Rng) -> u32 {
    let total: f64 = w.iter().sum();
    let mut r = rng.random::<f64>() * total;
    let mut last = 0;
    for (i, &x) in w.iter().enumerate() {
        if x > 0.0 {
            last = i;
            r -= x;
            if r < 0.0 {
                return i as u32;
            }
        }
    }
    last as u32
}

/// The rejection step: `ps` holds k + 1 target distributions, `qs` the k draft distributions the
/// `drafts` were drawn from. Returns (accepted drafts n, the token after them: a draw from the
/// residual max(0, p_{n+1} − q_{n+1}) on a rejection, from p_{k+1} when all k were accepted).
pub fn verify(ps: &[Vec<f64>], qs: &[Vec<f64>], drafts: &[u32], rng: &mut impl Rng) -> (usize, u32) {
    for (i, (&d, q)) in drafts.iter().zip(qs).enumerate() {
        let p = &ps[i];
        let (pd, qd) = (p[d as usize], q[d as usize]);
        // why: q(d) > 0 since d was drawn from q; u < p/q without the division keeps one-hot exact.
        let u = rng.random::<f64>();
        if u * qd < pd {
            continue;
        }
        let residual: Vec<f64> = p.iter().zip(q).map(|(a, b)| (a - b).max(0.0)).collect();
        let next = if residual.iter().sum::<f64>() > 0.0 {
            draw(&residual, rng)
        } else {
            draw(p, rng)
        };
        return (i, next);
    }
    let k = drafts.len();
    (k, draw(&ps[k], rng))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::infer::sampler::argmax;

    fn tv(a: &[f64], b: &[f64]) -> f64 {
        0.5 * a.iter().zip(b).map(|(x, y)| (x - y).abs()).sum::<f64>()
    }

    #[test]
    fn draft_sources_parse() {
        assert_eq!(
            DraftSource::parse("self:layers=8").unwrap(),
            DraftSource::SelfLayers(8)
        );
        assert_eq!(
            DraftSource::parse("d.gguf").unwrap(),
            DraftSource::Model("d.gguf".into())
        );
        for bad in ["self:", "self:layers=x", "self:8"] {
            let e = DraftSource::parse(bad).unwrap_err().to_string();
            assert!(e.contains(bad), "{e}");
        }
    }

    #[test]
    fn one_step_of_rejection_sampling_yields_the_target_distribution() {
        // A draft that badly disagrees with the target (one token it never proposes).
        let p = vec![0.5, 0.1, 0.3, 0.1, 0.0];
        let q = vec![0.1, 0.4, 0.1, 0.2, 0.2];
        let bonus = vec![0.2, 0.2, 0.2, 0.2, 0.2];
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        let n = 200_000;
        let mut counts = [0f64; 5];
        for _ in 0..n {
            let d = draw(&q, &mut rng);
            let (acc, next) = verify(
                &[p.clone(), bonus.clone()],
                std::slice::from_ref(&q),
                &[d],
                &mut rng,
            );
            counts[if acc == 1 { d } else { next } as usize] += 1.0;
        }
        let freq: Vec<f64> = counts.iter().map(|c| c / n as f64).collect();
        assert!(tv(&freq, &p) < 0.005, "{freq:?} vs {p:?}");
    }

    #[test]
    fn full_acceptance_draws_the_bonus_from_the_last_target_distribution() {
        let p = vec![0.0, 1.0, 0.0];
        let bonus = vec![0.0, 0.0, 1.0];
        let mut rng = ChaCha8Rng::seed_from_u64(0);
        let (n, next) = verify(&[p.clone(), p.clone(), bonus], &[p.clone(), p], &[1, 1], &mut rng);
        assert_eq!((n, next), (2, 2));
    }

    #[test]
    fn probs_matches_the_sampler() {
        let logits: Vec<f32> = (0..12).map(|i| ((i * 7) % 5) as f32 * 0.7 - 1.0).collect();
        let params = SamplingParams {
            temperature: 0.8,
            top_k: Some(8),
            top_p: Some(0.9),
            repetition_penalty: 1.3,
            seed: 5,
        };
        let seen = [1u32, 3, 3];
        let p = probs(&logits, &params, &seen);
        assert!((p.iter().sum::<f64>() - 1.0).abs() < 1e-9);
        let mut sampler = super::super::Sampler::new(params.clone());
        let n = 40_000;
        let mut counts = vec![0f64; logits.len()];
        for _ in 0..n {
            counts[sampler.sample(&logits, &seen) as usize] += 1.0;
        }
        let freq: Vec<f64> = counts.iter().map(|c| c / n as f64).collect();
        assert!(tv(&freq, &p) < 0.01, "{freq:?} vs {p:?}");
        let greedy = probs(&logits, &SamplingParams::greedy(), &[]);
        assert_eq!(greedy[argmax(&logits) as usize], 1.0);
    }
}
