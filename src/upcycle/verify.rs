//! Verification of a student against its teacher on held-out batches: per-layer attention and
//! logit L1 (mean and max), next-token NLL and perplexity of both, and KV-cache bytes per token.

use candle_core::{DType, Tensor};
use serde::Serialize;

use super::UpcycleError;
use crate::model::{ForwardCtx, LanguageModel, ModelSpec, Trace};
use crate::train::lm_loss;

#[derive(Debug, Clone, Serialize)]
pub struct LayerDiff {
    pub slot: usize,
    pub mean_l1: f64,
    pub max_l1: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Verification {
    pub batches: usize,
    pub tokens: usize,
    pub teacher_nll: f64,
    pub student_nll: f64,
    pub teacher_perplexity: f64,
    pub student_perplexity: f64,
    pub perplexity_ratio: f64,
    pub attention: Vec<LayerDiff>,
    pub logits_mean_l1: f64,
    pub logits_max_l1: f64,
    /// K/V values cached per token over all layers, times 2 bytes (f16 storage) for both.
    pub teacher_kvcache_bytes_per_token: usize,
    pub student_kvcache_bytes_per_token: usize,
    pub kvcache_reduction: f64,
}

/// KV values per token of a model (sum over attention layers) times `bytes_per_value`.
pub fn kv_bytes_per_token(spec: &ModelSpec, bytes_per_value: usize) -> usize {
    spec.topology
        .attention_specs()
        .iter()
        .map(|a| a.cache_values_per_token())
        .sum::<usize>()
        * bytes_per_value
}

/// Compare on `batches` of (x, y) token ids.
pub fn verify(
    teacher: &LanguageModel,
    teacher_spec: &ModelSpec,
    student: &LanguageModel,
    student_spec: &ModelSpec,
    batches: &[(Tensor, Tensor)],
) -> Result<Verification, UpcycleError> {
    let run = |m: &LanguageModel, x: &Tensor| -> Result<(Tensor, Vec<Tensor>), UpcycleError> {
        let mut trace = Trace::attention_only();
        let mut ctx = ForwardCtx::eval();
        ctx.trace = Some(&mut trace);
        let logits = m.forward(x, &mut ctx)?;
        Ok((logits, trace.entries.into_iter().map(|(_, t)| t).collect()))
    };
    let (mut t_nll, mut s_nll, mut tokens) = (0.0, 0.0, 0usize);
    let mut layer_sum: Vec<f64> = Vec::new();
    let mut layer_max: Vec<f64> = Vec::new();
    let (mut logit_sum, mut logit_max) = (0.0f64, 0.0f64);
    for (x, y) in batches {
        let (tl, ta) = run(teacher, x)?;
        let (sl, sa) = run(student, x)?;
        let n = y.elem_count();
        tokens += n;
        t_nll += f64::from(lm_loss(&tl, y)?.to_scalar::<f32>()?) * n as f64;
        s_nll += f64::from(lm_loss(&sl, y)?.to_scalar::<f32>()?) * n as f64;
        layer_sum.resize(ta.len(), 0.0);
        layer_max.resize(ta.len(), 0.0);
        for (i, (a, b)) in ta.iter().zip(&sa).enumerate() {
            let d = (a.to_dtype(DType::F32)? - b.to_dtype(DType::F32)?)?.abs()?;
            layer_sum[i] += f64::from(d.mean_all()?.to_scalar::<f32>()?);
            layer_max[i] = layer_max[i].max(f64::from(d.max_all()?.to_scalar::<f32>()?));
        }
        let d = (tl.to_dtype(DType::F32)? - sl.to_dtype(DType::F32)?)?.abs()?;
        logit_sum += f64::from(d.mean_all()?.to_scalar::<f32>()?);
        logit_max = logit_max.max(f64::from(d.max_all()?.to_scalar::<f32>()?));
    }
    let nb = batches.len().max(1) as f64;
    let (t_nll, s_nll) = (t_nll / tokens.max(1) as f64, s_nll / tokens.max(1) as f64);
    let teacher_kv = kv_bytes_per_token(teacher_spec, 2);
    let student_kv = kv_bytes_per_token(student_spec, 2);
    Ok(Verification {
        batches: batches.len(),
        tokens,
        teacher_nll: t_nll,
        student_nll: s_nll,
        teacher_perplexity: t_nll.exp(),
        student_perplexity: s_nll.exp(),
        perplexity_ratio: (s_nll - t_nll).exp(),
        attention: layer_sum
            .iter()
            .zip(&layer_max)
            .enumerate()
            .map(|(slot, (s, m))| LayerDiff {
                slot,
                mean_l1: s / nb,
                max_l1: *m,
            })
            .collect(),
        logits_mean_l1: logit_sum / nb,
        logits_max_l1: logit_max,
        teacher_kvcache_bytes_per_token: teacher_kv,
        student_kvcache_bytes_per_token: student_kv,
        kvcache_reduction: teacher_kv as f64 / student_kv.max(1) as f64,
    })
}
