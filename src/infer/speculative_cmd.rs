//! `caramba generate --draft SRC --spec-k K`: the speculative path of the generate command.

use super::commands::{CacheArgs, GenerateArgs, ModelArgs, emit, failed};
use super::speculative::{Draft, DraftSource, SpeculativeConfig, SpeculativeGenerator};
use super::{StopReason, TextStream};
use crate::cli::CliError;
use crate::loader::{LoadedModel, TextTokenizer};

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

/// Run `caramba generate` with a draft; `loaded` is the target.
pub(super) fn generate(
    args: &GenerateArgs,
    draft_src: &str,
    loaded: &LoadedModel,
    tok: &TextTokenizer,
    prompt: &[u32],
) -> Result<(), CliError> {
    let source = DraftSource::parse(draft_src).map_err(CliError::usage)?;
    let draft_loaded = match &source {
        DraftSource::SelfLayers(_) => None,
        DraftSource::Model(src) => Some(
            ModelArgs {
                model: src.clone(),
                ..args.model.clone()
            }
            .load()?,
        ),
    };
    let draft = match (&source, &draft_loaded) {
        (DraftSource::SelfLayers(n), _) => Draft::SelfLayers(*n),
        (DraftSource::Model(_), Some(d)) => Draft::Model(&d.model),
        (DraftSource::Model(src), None) => return Err(failed(format!("draft {src} did not load"))),
    };
    let spec_cfg = SpeculativeConfig {
        k: args.spec.spec_k,
        adaptive: !args.spec.spec_fixed_k,
        k_max: SpeculativeConfig::default().k_max.max(args.spec.spec_k),
        min_acceptance: args.spec.spec_min_accept,
        ..SpeculativeConfig::default()
    };
    let cache_args: &CacheArgs = &super::cache_policy::resolve(&args.cache, loaded)?;
    let mut generator = SpeculativeGenerator::new(
        &loaded.model,
        draft,
        spec_cfg,
        loaded.max_seq_len,
        &loaded.device,
        |m| cache_args.cache_or_plain(m),
    )
    .map_err(CliError::usage)?;
    let cfg = args.sampling.config(tok);
    let mut text = TextStream::new(tok, args.sampling.stop.clone());
    let mut out = std::io::stdout().lock();
    let mut open = true;
    let mut failure = None;
    let (ids, reason) = generator
        .generate_with(prompt, &cfg, |t| match text.push(t) {
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
            "draft": draft_src,
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
