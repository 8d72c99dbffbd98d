//! How much a KV cache storage changes a model's predictions on real text, against a baseline
//! storage (fp16): Δnll, the perplexity ratio and the mean KL(base ‖ cand) of the next-token
//! distributions, every position of every window pushed through both caches.

use candle_core::{D, DType, Device, Tensor};

use crate::model::{ForwardCtx, KvCache, LanguageModel, QuantKinds};

/// The candidate's quality against the baseline.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CacheQuality {
    /// Mean nll (nats per token) through the baseline cache.
    pub base_nll: f64,
    /// Mean nll through the candidate cache.
    pub cand_nll: f64,
    /// cand_nll − base_nll.
    pub delta_nll: f64,
    /// exp(delta_nll): the perplexity ratio.
    pub ppl_ratio: f64,
    /// Mean over positions of KL(base ‖ cand) of the next-token distributions (nats).
    pub mean_kl: f64,
    /// Largest KL at one position.
    pub max_kl: f64,
    /// Positions compared.
    pub tokens: usize,
}

/// A cache stored as `kinds` with its first `fp16_prefix` slots in fp16.
pub fn cache_of(model: &LanguageModel, kinds: QuantKinds, fp16_prefix: usize) -> KvCache {
    let mut cache = KvCache::quantized(model.n_slots(), kinds);
    cache.fp16_prefix_slots = fp16_prefix;
    cache
}

/// Compare `cand` with `base` on `tokens`, in windows of `block_size` (at most `max_blocks`).
pub fn compare_caches(
    model: &LanguageModel,
    tokens: &[u32],
    block_size: usize,
    max_blocks: Option<usize>,
    device: &Device,
    base: &dyn Fn() -> KvCache,
    cand: &dyn Fn() -> KvCache,
) -> candle_core::Result<CacheQuality> {
    if block_size < 2 {
        candle_core::bail!("block size must be at least 2 (got {block_size})");
    }
    let (mut base_sum, mut cand_sum, mut kl_sum, mut max_kl, mut n) = (0f64, 0f64, 0f64, 0f64, 0usize);
    for (i, window) in tokens.chunks(block_size).enumerate() {
        if window.len() < 2 || max_blocks.is_some_and(|m| i >= m) {
            break;
        }
        let t = window.len();
        let ids = Tensor::from_slice(window, (1, t), device)?;
        let targets = ids.narrow(1, 1, t - 1)?.unsqueeze(2)?.contiguous()?;
        let logp = |cache: KvCache| -> candle_core::Result<Tensor> {
            let mut cache = cache;
            let logits = model
                .forward(&ids, &mut ForwardCtx::cached(&mut cache, 0))?
                .to_dtype(DType::F32)?;
            candle_nn::ops::log_softmax(&logits.narrow(1, 0, t - 1)?, D::Minus1)
        };
        let lb = logp(base())?;
        let lc = logp(cand())?;
        let nll = |l: &Tensor| -> candle_core::Result<f64> {
            Ok(-f64::from(l.gather(&targets, 2)?.sum_all()?.to_scalar::<f32>()?))
        };
        base_sum += nll(&lb)?;
        cand_sum += nll(&lc)?;
        let kl = (lb.exp()? * (&lb - &lc)?)?
            .sum(D::Minus1)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        kl_sum += kl.iter().map(|&x| f64::from(x)).sum::<f64>();
        max_kl = kl.iter().fold(max_kl, |m, &x| m.max(f64::from(x)));
        n += t - 1;
    }
    if n == 0 {
        candle_core::bail!(
            "no window of at least two tokens to compare ({} tokens given)",
            tokens.len()
        );
    }
    let (base_nll, cand_nll) = (base_sum / n as f64, cand_sum / n as f64);
    Ok(CacheQuality {
        base_nll,
        cand_nll,
        delta_nll: cand_nll - base_nll,
        ppl_ratio: (cand_nll - base_nll).exp(),
        mean_kl: kl_sum / n as f64,
        max_kl,
        tokens: n,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::CacheKind;
    use crate::loader::{LoadOptions, load};

    #[test]
    fn identical_caches_agree_and_q4_moves_away() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/tiny_llama");
        let m = load(dir.to_str().unwrap(), &LoadOptions::default()).unwrap();
        let tokens: Vec<u32> = (0..96u32).map(|i| (i * 37 + 11) % 300 + 3).collect();
        let fp16 = || cache_of(&m.model, QuantKinds::uniform(CacheKind::Fp16), 0);
        let q4 = || cache_of(&m.model, QuantKinds::uniform(CacheKind::Q4_0), 0);
        let same = compare_caches(&m.model, &tokens, 48, None, &Device::Cpu, &fp16, &fp16).unwrap();
        assert_eq!(same.tokens, 94);
        assert!(
            same.mean_kl.abs() < 1e-6 && same.delta_nll.abs() < 1e-6,
            "{same:?}"
        );
        let q = compare_caches(&m.model, &tokens, 48, None, &Device::Cpu, &fp16, &q4).unwrap();
        assert!(q.mean_kl > 1e-6 && q.max_kl >= q.mean_kl, "{q:?}");
        // Every slot in the fp16 prefix: the q4 cache is the fp16 one.
        let prefixed = || cache_of(&m.model, QuantKinds::uniform(CacheKind::Q4_0), m.model.n_slots());
        let p = compare_caches(&m.model, &tokens, 48, None, &Device::Cpu, &fp16, &prefixed).unwrap();
        assert!(p.mean_kl.abs() < 1e-6, "{p:?}");
    }
}
