//! The [`Generator`]: a decoding session over a model and a growable KV cache.
//!
//! A session keeps its history across calls: `prefill` appends to what is already cached (a
//! multi-turn chat only feeds the new turn; the original's `generate` reset the cache, this one
//! does not — call [`Generator::reset`] for a fresh conversation). Tokens sampled but not yet fed
//! stay in the history and are fed with the next call, so stopping costs no extra forward.
//! `rollback(n)` forgets the last n tokens. Batches of prompts are left-padded; padding keys are
//! masked (see [`KvCache::padding_mask`]) and, RoPE being relative, each row computes what it
//! would alone.

use std::time::{Duration, Instant};

use candle_core::{D, DType, Device, IndexOp, Tensor};

use super::sampler::{Sampler, SamplingParams};
use crate::model::{ForwardCtx, KvCache, LanguageModel};

/// Generation failed.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum GenerateError {
    #[error("the sequence would reach {needed} positions, beyond the model's context of {max}")]
    #[diagnostic(help("shorten the prompt, lower --max-new-tokens, or /reset the conversation"))]
    ContextOverflow { needed: usize, max: usize },
    #[error("nothing to feed: the prompt is empty")]
    EmptyPrompt,
    #[error("cannot roll back {n} tokens: the session holds {len}")]
    Rollback { n: usize, len: usize },
    #[error("{what} needs a single-row session (this one has {rows} rows)")]
    NotSingleRow { what: &'static str, rows: usize },
    #[error("decode_step got {got} tokens for a session of {rows} rows")]
    RowMismatch { got: usize, rows: usize },
    #[error("model forward failed: {0}")]
    Model(#[from] candle_core::Error),
}

/// How long to generate and when to stop.
#[derive(Debug, Clone)]
pub struct GenerateConfig {
    /// Default: 64.
    pub max_new_tokens: usize,
    pub sampling: SamplingParams,
    /// Token ids that end a row (the eos id is emitted, then the row stops). Default: none.
    pub eos_token_ids: Vec<u32>,
}

impl Default for GenerateConfig {
    fn default() -> Self {
        Self {
            max_new_tokens: 64,
            sampling: SamplingParams::default(),
            eos_token_ids: Vec::new(),
        }
    }
}

/// Why a row stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StopReason {
    Eos,
    MaxTokens,
    /// The caller stopped it (a stop string).
    StopString,
}

/// Timings of one generation.
#[derive(Debug, Clone, Copy, Default)]
pub struct GenerationStats {
    /// Tokens fed in the prefill (the prompt plus any unfed history).
    pub prefill_tokens: usize,
    pub prefill: Duration,
    /// Decode steps (forwards of one token per row) after the prefill.
    pub decode_steps: usize,
    pub decode: Duration,
}

impl GenerationStats {
    /// Decode steps per second (0 when none ran).
    pub fn decode_tokens_per_sec(&self) -> f64 {
        if self.decode_steps == 0 {
            0.0
        } else {
            self.decode_steps as f64 / self.decode.as_secs_f64().max(1e-9)
        }
    }
}

/// A decoding session (or a batch of them) over `model`.
pub struct Generator<'m> {
    model: &'m LanguageModel,
    cache: KvCache,
    /// Per row: every token of the sequence (fed or not), padding excluded.
    history: Vec<Vec<u32>>,
    max_seq_len: usize,
    device: Device,
    pad_id: u32,
}

impl<'m> Generator<'m> {
    /// A single-row session; `cache_dtype` is the KV storage (f32, f16, bf16).
    pub fn new(model: &'m LanguageModel, max_seq_len: usize, cache_dtype: DType, device: &Device) -> Self {
        Self {
            model,
            cache: KvCache::new(model.n_slots(), cache_dtype),
            history: vec![Vec::new()],
            max_seq_len,
            device: device.clone(),
            pad_id: 0,
        }
    }

    /// Token id written into padding positions (never attended to). Default: 0.
    pub fn with_pad_id(mut self, pad_id: u32) -> Self {
        self.pad_id = pad_id;
        self
    }

    /// Replace the (empty) plain cache, e.g. with [`KvCache::quantized`] storage.
    pub fn with_cache(mut self, cache: KvCache) -> Self {
        self.cache = cache;
        self
    }

    /// Positions cached (per row, padding included).
    pub fn pos(&self) -> usize {
        self.cache.len()
    }

    /// The whole sequence of the (single-row) session: fed and not yet fed tokens.
    pub fn tokens(&self) -> &[u32] {
        &self.history[0]
    }

    pub fn cache(&self) -> &KvCache {
        &self.cache
    }

    /// Forget everything: a fresh single-row session.
    pub fn reset(&mut self) {
        self.cache.reset();
        self.history = vec![Vec::new()];
    }

    /// Forget the last `n` tokens of every row. The session can continue with an empty prompt
    /// (the last kept token is re-fed to get the next logits).
    pub fn rollback(&mut self, n: usize) -> Result<(), GenerateError> {
        let len = self.history.iter().map(Vec::len).min().unwrap_or(0);
        if n > len {
            return Err(GenerateError::Rollback { n, len });
        }
        let pad = self.cache.left_pad.clone();
        for (r, h) in self.history.iter_mut().enumerate() {
            h.truncate(h.len() - n);
            // why: the last kept token is fed again by the next call, which needs its logits.
            let keep = (h.len() + pad.get(r).copied().unwrap_or(0)).saturating_sub(1);
            if self.cache.len() > keep {
                self.cache.truncate(keep)?;
            }
        }
        Ok(())
    }

    fn rows(&self) -> usize {
        self.history.len()
    }

    /// Tokens of every row not yet in the cache (all rows have the same count).
    fn unfed(&self) -> Vec<&[u32]> {
        let fed = self.cache.len();
        self.history
            .iter()
            .enumerate()
            .map(|(r, h)| &h[(fed - self.cache.left_pad.get(r).copied().unwrap_or(0)).min(h.len())..])
            .collect()
    }

    /// Feed every unfed token; logits (rows, vocab) of the last position, in f32.
    fn feed(&mut self) -> Result<Tensor, GenerateError> {
        let unfed = self.unfed();
        let t = unfed.first().map_or(0, |u| u.len());
        if t == 0 {
            return Err(GenerateError::EmptyPrompt);
        }
        let needed = self.cache.len() + t;
        if needed > self.max_seq_len {
            return Err(GenerateError::ContextOverflow {
                needed,
                max: self.max_seq_len,
            });
        }
        let flat: Vec<u32> = unfed.iter().flat_map(|u| u.iter().copied()).collect();
        let ids = Tensor::from_vec(flat, (self.rows(), t), &self.device)?;
        let pos = self.cache.len();
        let mut ctx = ForwardCtx::cached(&mut self.cache, pos);
        let run = |ctx: &mut ForwardCtx| -> candle_core::Result<Tensor> {
            let hidden = self.model.forward_hidden(&ids, ctx)?;
            let last = hidden.narrow(1, t - 1, 1)?;
            self.model.logits(&last)?.squeeze(1)?.to_dtype(DType::F32)
        };
        let device_is_cpu = self.device.is_cpu();
        let ran = if device_is_cpu {
            crate::ops::spin_pool::on_rayon_thread(|| run(&mut ctx))
        } else {
            run(&mut ctx)
        };
        match ran {
            Ok(logits) => Ok(logits),
            Err(e) => {
                // why: a forward that failed half-way appended to some slots only (plain or
                // quantized alike).
                self.cache.truncate_each(pos)?;
                Err(e.into())
            }
        }
    }

    /// Append `ids` to the single-row session and run them; logits (vocab,) for the next token.
    pub fn prefill(&mut self, ids: &[u32]) -> Result<Tensor, GenerateError> {
        if self.rows() != 1 {
            return Err(GenerateError::NotSingleRow {
                what: "prefill",
                rows: self.rows(),
            });
        }
        let before = self.history[0].len();
        self.history[0].extend_from_slice(ids);
        match self.feed() {
            Ok(logits) => Ok(logits.i(0)?),
            Err(e) => {
                self.history[0].truncate(before);
                Err(e)
            }
        }
    }

    /// Start a batch: forget everything, left-pad `prompts` to one length and run them; logits
    /// (rows, vocab).
    pub fn prefill_batch(&mut self, prompts: &[Vec<u32>]) -> Result<Tensor, GenerateError> {
        if prompts.is_empty() || prompts.iter().any(Vec::is_empty) {
            return Err(GenerateError::EmptyPrompt);
        }
        self.cache.reset();
        let longest = prompts.iter().map(Vec::len).max().unwrap_or(0);
        // Padding lives in the cache only; the history holds real tokens.
        self.cache.left_pad = prompts.iter().map(|p| longest - p.len()).collect();
        self.history = prompts.to_vec();
        let padded: Vec<u32> = prompts
            .iter()
            .flat_map(|p| std::iter::repeat_n(self.pad_id, longest - p.len()).chain(p.iter().copied()))
            .collect();
        if longest > self.max_seq_len {
            return Err(GenerateError::ContextOverflow {
                needed: longest,
                max: self.max_seq_len,
            });
        }
        let ids = Tensor::from_vec(padded, (prompts.len(), longest), &self.device)?;
        let mut ctx = ForwardCtx::cached(&mut self.cache, 0);
        let hidden = self.model.forward_hidden(&ids, &mut ctx)?;
        let last = hidden.narrow(1, longest - 1, 1)?;
        Ok(self.model.logits(&last)?.squeeze(1)?.to_dtype(DType::F32)?)
    }

    /// Append one token per row and run it; logits (rows, vocab).
    pub fn decode_step(&mut self, tokens: &[u32]) -> Result<Tensor, GenerateError> {
        if tokens.len() != self.rows() {
            return Err(GenerateError::RowMismatch {
                got: tokens.len(),
                rows: self.rows(),
            });
        }
        for (h, &t) in self.history.iter_mut().zip(tokens) {
            h.push(t);
        }
        self.feed()
    }

    /// Stream the continuation of the single-row session after `prompt` (appended to it).
    pub fn stream<'g>(&'g mut self, prompt: &[u32], cfg: &GenerateConfig) -> TokenStream<'g, 'm> {
        TokenStream {
            prompt: Some(prompt.to_vec()),
            sampler: Sampler::new(cfg.sampling.clone()),
            cfg: cfg.clone(),
            generator: self,
            produced: 0,
            logits: None,
            done: None,
            stats: GenerationStats::default(),
        }
    }

    /// Generate after `prompt` until eos or `max_new_tokens`; the generated ids.
    pub fn generate(&mut self, prompt: &[u32], cfg: &GenerateConfig) -> Result<Vec<u32>, GenerateError> {
        self.stream(prompt, cfg).collect()
    }

    /// Generate for a batch of prompts (left-padded, each row stopping on its own); the generated
    /// ids of each row. Forgets the previous session.
    pub fn generate_batch(
        &mut self,
        prompts: &[Vec<u32>],
        cfg: &GenerateConfig,
    ) -> Result<Vec<Vec<u32>>, GenerateError> {
        let rows = prompts.len();
        let mut samplers: Vec<Sampler> = (0..rows)
            .map(|r| Sampler::for_row(cfg.sampling.clone(), r))
            .collect();
        let mut out = vec![Vec::new(); rows];
        let mut done = vec![cfg.max_new_tokens == 0; rows];
        let mut logits = self.prefill_batch(prompts)?;
        loop {
            let mut next = vec![self.pad_id; rows];
            let rows_logits: Vec<Vec<f32>> = logits.to_vec2()?;
            for r in 0..rows {
                if done[r] {
                    continue;
                }
                let t = samplers[r].sample(&rows_logits[r], &self.history[r]);
                out[r].push(t);
                next[r] = t;
                if cfg.eos_token_ids.contains(&t) || out[r].len() >= cfg.max_new_tokens {
                    done[r] = true;
                }
            }
            if done.iter().all(|&d| d) {
                break;
            }
            logits = self.decode_step(&next)?;
        }
        Ok(out)
    }
}

/// The tokens of one generation, as they are produced (see [`Generator::stream`]).
pub struct TokenStream<'g, 'm> {
    generator: &'g mut Generator<'m>,
    prompt: Option<Vec<u32>>,
    sampler: Sampler,
    cfg: GenerateConfig,
    produced: usize,
    logits: Option<Vec<f32>>,
    done: Option<StopReason>,
    stats: GenerationStats,
}

impl TokenStream<'_, '_> {
    /// Why the stream ended (`None` while it runs).
    pub fn stop_reason(&self) -> Option<StopReason> {
        self.done
    }

    /// Timings so far.
    pub fn stats(&self) -> GenerationStats {
        self.stats
    }

    /// End the stream early (a stop string matched); the last token stays in the history.
    pub fn stop(&mut self, reason: StopReason) {
        self.done = Some(reason);
    }

    fn step(&mut self) -> Result<Option<u32>, GenerateError> {
        if self.done.is_some() {
            return Ok(None);
        }
        if self.produced >= self.cfg.max_new_tokens {
            self.done = Some(StopReason::MaxTokens);
            return Ok(None);
        }
        let logits = match (self.prompt.take(), self.logits.take()) {
            (Some(prompt), _) => {
                let start = Instant::now();
                self.stats.prefill_tokens = prompt.len() + self.generator.unfed()[0].len();
                let l = self.generator.prefill(&prompt)?;
                let l = l.to_vec1::<f32>()?;
                self.stats.prefill = start.elapsed();
                l
            }
            (None, Some(l)) => l,
            (None, None) => {
                let start = Instant::now();
                let l = self.generator.feed()?.i(0)?.to_vec1::<f32>()?;
                self.stats.decode += start.elapsed();
                self.stats.decode_steps += 1;
                l
            }
        };
        let t = self.sampler.sample(&logits, &self.generator.history[0]);
        self.generator.history[0].push(t);
        self.produced += 1;
        if self.cfg.eos_token_ids.contains(&t) {
            self.done = Some(StopReason::Eos);
        } else if self.produced >= self.cfg.max_new_tokens {
            self.done = Some(StopReason::MaxTokens);
        }
        Ok(Some(t))
    }
}

impl Iterator for TokenStream<'_, '_> {
    type Item = Result<u32, GenerateError>;

    fn next(&mut self) -> Option<Self::Item> {
        match self.step() {
            Ok(Some(t)) => Some(Ok(t)),
            Ok(None) => None,
            Err(e) => {
                self.done = Some(StopReason::MaxTokens);
                Some(Err(e))
            }
        }
    }
}

/// Full-sequence logits (b, t, vocab) of `ids` without a cache: the reference for cached decoding.
pub fn full_logits(model: &LanguageModel, ids: &Tensor) -> candle_core::Result<Tensor> {
    model.forward(ids, &mut ForwardCtx::eval())?.to_dtype(DType::F32)
}

/// Log-probability of every next token of `ids` (b, t) under `model`: (b, t − 1).
pub fn next_token_logprobs(model: &LanguageModel, ids: &Tensor) -> candle_core::Result<Tensor> {
    let logits = full_logits(model, ids)?;
    let t = ids.dim(1)?;
    let logp = candle_nn::ops::log_softmax(&logits.narrow(1, 0, t - 1)?, D::Minus1)?;
    let targets = ids.narrow(1, 1, t - 1)?.unsqueeze(2)?;
    logp.gather(&targets.contiguous()?, 2)?.squeeze(2)
}
