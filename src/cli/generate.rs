//! `caramba generate`: continue a prompt, streaming the text (or one JSON object), plainly or
//! speculatively with `--draft`. The sampling flags shared with `chat` are resolved (and checked)
//! here into a [`GenerateConfig`].

use super::cache::{CacheArgs, resolve_auto};
use super::model::{ModelArgs, load_model, tokenizer};
use super::{CliError, emit, failed};
use crate::infer::speculative::{Draft, DraftSource, SpeculativeConfig, SpeculativeGenerator};
use crate::infer::{
    CacheConfig, GenerateConfig, GenerateError, Generator, SamplingParams, StopReason, TextStream,
};
use crate::loader::{LoadOptions, LoadedModel, TextTokenizer};

/// Sampling options shared by `generate` and `chat`.
#[derive(Debug, Clone, clap::Args)]
pub struct SamplingArgs {
    /// Most tokens to generate.
    #[arg(long, default_value_t = 128)]
    pub max_new_tokens: usize,
    /// Softmax temperature (finite, >= 0); 0 is greedy.
    #[arg(long, short = 't', default_value_t = 0.0)]
    pub temperature: f64,
    /// Sample among the k most likely tokens (k >= 1).
    #[arg(long)]
    pub top_k: Option<usize>,
    /// Sample among the most likely tokens that reach probability p, in (0, 1].
    #[arg(long)]
    pub top_p: Option<f64>,
    /// Penalise tokens already in the sequence (> 0; 1.0 = off).
    #[arg(long, default_value_t = 1.0)]
    pub repetition_penalty: f64,
    /// RNG seed.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Stop when the text contains this string (repeatable); the string is not printed.
    #[arg(long = "stop")]
    pub stop: Vec<String>,
}

impl SamplingArgs {
    /// The generation config these flags name (no eos ids yet: they come with the tokenizer);
    /// a value out of its range is a usage error naming the flag and the range.
    pub fn resolve(&self) -> Result<GenerateConfig, CliError> {
        let bad = |flag: &str, value: &dyn std::fmt::Display, range: &str| {
            Err(CliError::usage(miette::miette!(
                "{flag} {value}: must be {range}"
            )))
        };
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return bad(
                "--temperature",
                &self.temperature,
                "finite and >= 0 (0 is greedy)",
            );
        }
        if let Some(p) = self.top_p
            && !(p > 0.0 && p <= 1.0)
        {
            return bad("--top-p", &p, "in (0, 1]");
        }
        if self.top_k == Some(0) {
            return bad("--top-k", &0, ">= 1");
        }
        if !(self.repetition_penalty.is_finite() && self.repetition_penalty > 0.0) {
            return bad(
                "--repetition-penalty",
                &self.repetition_penalty,
                "finite and > 0 (1.0 is off)",
            );
        }
        Ok(GenerateConfig {
            max_new_tokens: self.max_new_tokens,
            sampling: SamplingParams {
                temperature: self.temperature,
                top_k: self.top_k,
                top_p: self.top_p,
                repetition_penalty: self.repetition_penalty,
                seed: self.seed,
            },
            eos_token_ids: Vec::new(),
        })
    }
}

/// Speculative decoding options of `generate`.
#[derive(Debug, Clone, clap::Args)]
pub struct SpecArgs {
    /// Decode speculatively with this draft: a model source sharing the target's vocabulary, or
    /// `self:layers=N` (the target's first N layers with its final norm and head).
    #[arg(long)]
    pub draft: Option<String>,
    /// Tokens drafted per round (the start value when adaptive).
    #[arg(long, default_value_t = 4, requires = "draft")]
    pub spec_k: usize,
    /// Keep k fixed instead of growing it after fully accepted rounds and shrinking it after
    /// early rejections.
    #[arg(long, requires = "draft")]
    pub spec_fixed_k: bool,
    /// Stop speculating when the acceptance rate falls below this (after 32 drafted tokens).
    #[arg(long, default_value_t = 0.0, requires = "draft")]
    pub spec_min_accept: f64,
}

impl SpecArgs {
    /// The draft (parsed) and the speculative config, when `--draft` is given.
    pub fn resolve(&self) -> Result<Option<(String, DraftSource, SpeculativeConfig)>, CliError> {
        let Some(draft) = &self.draft else {
            return Ok(None);
        };
        let source = DraftSource::parse(draft).map_err(CliError::usage)?;
        let cfg = SpeculativeConfig {
            k: self.spec_k,
            adaptive: !self.spec_fixed_k,
            k_max: SpeculativeConfig::default().k_max.max(self.spec_k),
            min_acceptance: self.spec_min_accept,
            ..SpeculativeConfig::default()
        };
        Ok(Some((draft.clone(), source, cfg)))
    }
}

/// `caramba generate`: continue a prompt, printing the text as it streams.
#[derive(Debug, Clone, clap::Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    #[command(flatten)]
    pub cache: CacheArgs,
    /// The prompt text.
    #[arg(long, short = 'p')]
    pub prompt: String,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    #[command(flatten)]
    pub spec: SpecArgs,
    /// Print one JSON object (text, token ids, timings) instead of streaming text.
    #[arg(long)]
    pub json: bool,
}

/// Everything `generate` needs, resolved from its flags before any work.
struct Resolved {
    load: LoadOptions,
    cache: CacheConfig,
    cfg: GenerateConfig,
    draft: Option<(String, DraftSource, SpeculativeConfig)>,
}

/// Run `caramba generate`.
pub fn run(args: &GenerateArgs) -> Result<(), CliError> {
    let r = Resolved {
        load: args.model.resolve()?,
        cache: args.cache.resolve(),
        cfg: args.sampling.resolve()?,
        draft: args.spec.resolve()?,
    };
    let loaded = load_model(&args.model.model, &r.load)?;
    let tok = tokenizer(&loaded)?;
    let prompt = tok.encode(&args.prompt, true).map_err(CliError::usage)?;
    if prompt.len() >= loaded.max_seq_len {
        return Err(CliError::usage(GenerateError::ContextOverflow {
            needed: prompt.len() + 1,
            max: loaded.max_seq_len,
        }));
    }
    let cfg = GenerateConfig {
        eos_token_ids: tok.eos_token_ids.clone(),
        ..r.cfg.clone()
    };
    let cache = resolve_auto(&r.cache, &loaded)?;
    if let Some((name, source, spec_cfg)) = &r.draft {
        let draft = (name.as_str(), source, spec_cfg.clone());
        return speculative(args, &r, draft, &loaded, tok, &prompt, &cfg, &cache);
    }
    let pad = tok.eos_token_ids.first().copied().unwrap_or(0);
    let mut generator =
        Generator::new(&loaded.model, loaded.max_seq_len, loaded.dtype, &loaded.device).with_pad_id(pad);
    if let Some(cache) = cache.cache_for(&loaded.model) {
        generator = generator.with_cache(cache);
    }
    let mut text = TextStream::new(tok, args.sampling.stop.clone());
    let mut out = std::io::stdout().lock();
    let mut ids = Vec::new();
    let mut stream = generator.stream(&prompt, &cfg);
    let mut open = true;
    while let Some(t) = stream.next() {
        let t = t.map_err(failed)?;
        ids.push(t);
        let delta = text.push(t).map_err(failed)?;
        if !args.json && open {
            open = emit(&mut out, &delta)?;
        }
        if text.stopped() {
            stream.stop(StopReason::StopString);
        }
        if !open {
            return Ok(());
        }
    }
    let stats = stream.stats();
    let reason = stream.stop_reason();
    let tail = text.finish();
    if args.json {
        let json = serde_json::json!({
            "text": text.text(),
            "token_ids": ids,
            "prompt_tokens": prompt.len(),
            "generated_tokens": ids.len(),
            "stop_reason": reason,
            "prefill_ms": stats.prefill.as_secs_f64() * 1e3,
            "prefill_tokens_per_sec": stats.prefill_tokens as f64 / stats.prefill.as_secs_f64().max(1e-9),
            "decode_tokens_per_sec": stats.decode_tokens_per_sec(),
            "model": loaded.path,
        });
        emit(&mut out, &format!("{json}\n"))?;
    } else {
        emit(&mut out, &format!("{tail}\n"))?;
        tracing::info!(
            "{} prompt tokens in {:.0} ms; {} tokens at {:.1} tok/s",
            prompt.len(),
            stats.prefill.as_secs_f64() * 1e3,
            ids.len(),
            stats.decode_tokens_per_sec()
        );
    }
    Ok(())
}

/// `caramba generate --draft SRC --spec-k K`: the speculative path; `loaded` is the target.
#[allow(clippy::too_many_arguments)]
fn speculative(
    args: &GenerateArgs,
    r: &Resolved,
    (draft_name, source, spec_cfg): (&str, &DraftSource, SpeculativeConfig),
    loaded: &LoadedModel,
    tok: &TextTokenizer,
    prompt: &[u32],
    cfg: &GenerateConfig,
    cache: &CacheConfig,
) -> Result<(), CliError> {
    let draft_loaded = match source {
        DraftSource::SelfLayers(_) => None,
        DraftSource::Model(src) => Some(load_model(src, &r.load)?),
    };
    let draft = match (source, &draft_loaded) {
        (DraftSource::SelfLayers(n), _) => Draft::SelfLayers(*n),
        (DraftSource::Model(_), Some(d)) => Draft::Model(&d.model),
        (DraftSource::Model(src), None) => return Err(failed(format!("draft {src} did not load"))),
    };
    let mut generator = SpeculativeGenerator::new(
        &loaded.model,
        draft,
        spec_cfg,
        loaded.max_seq_len,
        &loaded.device,
        |m| cache.cache_or_plain(m),
    )
    .map_err(CliError::usage)?;
    let mut text = TextStream::new(tok, args.sampling.stop.clone());
    let mut out = std::io::stdout().lock();
    let mut open = true;
    let mut failure = None;
    let (ids, reason) = generator
        .generate_with(prompt, cfg, |t| match text.push(t) {
            Ok(delta) => {
                if !args.json && open {
                    match emit(&mut out, &delta) {
                        Ok(still) => open = still,
                        Err(e) => failure = Some(e),
                    }
                }
                open && failure.is_none() && !text.stopped()
            }
            Err(e) => {
                failure = Some(failed(e));
                false
            }
        })
        .map_err(failed)?;
    if let Some(e) = failure {
        return Err(e);
    }
    if !open {
        return Ok(());
    }
    let reason = if text.stopped() {
        StopReason::StopString
    } else {
        reason
    };
    let stats = generator.stats();
    let tail = text.finish();
    let decode_secs = stats.decode.as_secs_f64().max(1e-9);
    if args.json {
        let json = serde_json::json!({
            "text": text.text(),
            "token_ids": ids,
            "prompt_tokens": prompt.len(),
            "generated_tokens": ids.len(),
            "stop_reason": reason,
            "prefill_ms": stats.prefill.as_secs_f64() * 1e3,
            "decode_tokens_per_sec": ids.len() as f64 / decode_secs,
            "draft": draft_name,
            "acceptance_rate": stats.acceptance_rate(),
            "draft_tokens": stats.draft_tokens,
            "accepted_tokens": stats.accepted_tokens,
            "rounds": stats.rounds,
            "target_passes": stats.target_passes,
            "final_spec_k": stats.final_k,
            "speculation_disabled": stats.disabled,
            "model": loaded.path,
        });
        emit(&mut out, &format!("{json}\n"))?;
    } else {
        emit(&mut out, &format!("{tail}\n"))?;
        tracing::info!(
            "{} tokens at {:.1} tok/s; draft acceptance {:.1}% of {} drafted tokens",
            ids.len(),
            ids.len() as f64 / decode_secs,
            100.0 * stats.acceptance_rate(),
            stats.draft_tokens
        );
    }
    Ok(())
}
