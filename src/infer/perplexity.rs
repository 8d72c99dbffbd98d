//! Perplexity over non-overlapping windows: a token stream is cut into blocks of `block_size`
//! tokens and every token after the first of each block is scored given the ones before it in
//! that block (the original slid a stride-1 window and kept the best of several repeats; this is
//! the standard, cheaper, unambiguous definition).

use candle_core::{D, DType, Device, Tensor};

use crate::model::{ForwardCtx, LanguageModel};

/// The result of a perplexity run.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct Perplexity {
    /// exp(nll).
    pub perplexity: f64,
    /// Mean negative log-likelihood per scored token (nats).
    pub nll: f64,
    /// Tokens scored.
    pub tokens: usize,
    /// Windows evaluated.
    pub blocks: usize,
    /// Wall time of the forwards.
    pub seconds: f64,
}

/// Perplexity of `model` on `tokens` in windows of `block_size`, at most `max_blocks` of them
/// (a last, shorter window counts when it holds at least two tokens).
pub fn perplexity(
    model: &LanguageModel,
    tokens: &[u32],
    block_size: usize,
    max_blocks: Option<usize>,
    device: &Device,
) -> candle_core::Result<Perplexity> {
    perplexity_through_cache(model, tokens, block_size, max_blocks, device, None)
}

/// [`perplexity`] with every window pushed through a KV cache stored as `cache` (when given):
/// each window is appended to a fresh cache and every position attends over the stored
/// (quantized) keys and values, so the number shows the storage's real effect.
pub fn perplexity_through_cache(
    model: &LanguageModel,
    tokens: &[u32],
    block_size: usize,
    max_blocks: Option<usize>,
    device: &Device,
    cache: Option<crate::model::QuantKinds>,
) -> candle_core::Result<Perplexity> {
    if block_size < 2 {
        candle_core::bail!("block size must be at least 2 (got {block_size})");
    }
    let start = std::time::Instant::now();
    let (mut nll_sum, mut scored, mut blocks) = (0f64, 0usize, 0usize);
    for window in tokens.chunks(block_size) {
        if window.len() < 2 || max_blocks.is_some_and(|m| blocks >= m) {
            break;
        }
        let t = window.len();
        let ids = Tensor::from_slice(window, (1, t), device)?;
        let logits = match cache {
            Some(kinds) => {
                let mut kv = crate::model::KvCache::quantized(model.n_slots(), kinds);
                model.forward(&ids, &mut ForwardCtx::cached(&mut kv, 0))?
            }
            None => model.forward(&ids, &mut ForwardCtx::eval())?,
        }
        .to_dtype(DType::F32)?;
        let logp = candle_nn::ops::log_softmax(&logits.narrow(1, 0, t - 1)?, D::Minus1)?;
        let targets = ids.narrow(1, 1, t - 1)?.unsqueeze(2)?.contiguous()?;
        let picked = logp.gather(&targets, 2)?.sum_all()?.to_scalar::<f32>()?;
        nll_sum -= f64::from(picked);
        scored += t - 1;
        blocks += 1;
    }
    if scored == 0 {
        candle_core::bail!(
            "no window of at least two tokens to score ({} tokens given)",
            tokens.len()
        );
    }
    let nll = nll_sum / scored as f64;
    // why: a NaN compares false with everything, so a broken model would otherwise "succeed".
    if !nll.is_finite() {
        candle_core::bail!(
            "perplexity is not finite: the mean negative log-likelihood over {scored} tokens is {nll} \
             (damaged weights, or overflow at this dtype: try f32)"
        );
    }
    Ok(Perplexity {
        perplexity: nll.exp(),
        nll,
        tokens: scored,
        blocks,
        seconds: start.elapsed().as_secs_f64(),
    })
}
