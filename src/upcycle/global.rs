//! The global phase's settings (`upcycle.global`): what it trains (all parameters or only the
//! attention layers) and on which loss (next-token cross-entropy, or distillation to the teacher's
//! logits on the same batch: `ce_weight · CE + T² · KL(teacher_T ‖ student_T)`, Hinton et al.
//! 2015, where `_T` is the softmax at temperature T; the T² keeps gradient scale independent of T).

use candle_core::{D, DType, Tensor};
use serde::{Deserialize, Serialize};

use crate::model::{ForwardCtx, LanguageModel};
use crate::train::lm_loss;

/// The loss of a global phase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum GlobalLoss {
    /// Next-token cross-entropy on the data.
    #[default]
    Ce,
    /// KL divergence to the teacher's next-token distribution (plus `ce_weight` · CE).
    Kl,
}

/// Which student parameters a global phase trains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum TrainParams {
    /// Every parameter.
    #[default]
    All,
    /// Only the attention layers' parameters; embeddings, norms and MLPs stay the teacher's and
    /// the optimizer holds no state for them.
    Attention,
}

/// `upcycle.global`. Every field has a default.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct GlobalSpec {
    /// `ce` or `kl`. Default: ce.
    pub distill_loss: GlobalLoss,
    /// Softmax temperature of the KL term (> 0). Default: 2.0.
    pub temperature: f64,
    /// Weight of the cross-entropy term next to the KL (`kl` only). Default: 0.0.
    pub ce_weight: f64,
    /// `all` or `attention`. Default: all.
    pub params: TrainParams,
}

impl Default for GlobalSpec {
    fn default() -> Self {
        Self {
            distill_loss: GlobalLoss::Ce,
            temperature: 2.0,
            ce_weight: 0.0,
            params: TrainParams::All,
        }
    }
}

/// `T² · mean over positions of KL(softmax(teacher/T) ‖ softmax(student/T))`.
///
/// # Shapes
/// `student`, `teacher`: (b, t, vocab) (any float dtype; computed in f32) → scalar.
pub fn kl_distill(student: &Tensor, teacher: &Tensor, temperature: f64) -> candle_core::Result<Tensor> {
    kl_of_log_probs(
        &log_probs(student, temperature)?,
        &log_probs(&teacher.detach(), temperature)?,
        temperature,
    )
}

/// (b, t, vocab) logits → (b·t, vocab) f32 log-probabilities at `temperature`.
fn log_probs(logits: &Tensor, temperature: f64) -> candle_core::Result<Tensor> {
    let (b, t, v) = logits.dims3()?;
    let x = logits.to_dtype(DType::F32)?.reshape((b * t, v))?;
    // why: at T = 1 the division would only cost another (b·t, vocab) f32 tensor, kept for backward.
    let x = if temperature == 1.0 { x } else { (x / temperature)? };
    crate::ops::softmax::log_softmax_last_dim(&x)
}

fn kl_of_log_probs(log_s: &Tensor, log_t: &Tensor, temperature: f64) -> candle_core::Result<Tensor> {
    let kl = (log_t.exp()? * (log_t - log_s)?)?.sum(D::Minus1)?;
    kl.mean_all()? * (temperature * temperature)
}

/// The global phase's training loss for `spec` on a batch: `xs` (b, t) ids, the student's
/// `logits` (b, t, vocab), targets `ys` (b, t). The teacher runs on `xs` here (no gradient).
pub fn global_loss(
    spec: &GlobalSpec,
    teacher: &LanguageModel,
    xs: &Tensor,
    logits: &Tensor,
    ys: &Tensor,
) -> candle_core::Result<Tensor> {
    match spec.distill_loss {
        GlobalLoss::Ce => lm_loss(logits, ys),
        GlobalLoss::Kl => {
            let teacher_logits = teacher.forward(xs, &mut ForwardCtx::eval())?.detach();
            kl_and_ce(logits, &teacher_logits, ys, spec.temperature, spec.ce_weight)
        }
    }
}

/// `ce_weight · CE + T² · KL`, sharing the student's log-softmax between the two at T = 1.
fn kl_and_ce(
    logits: &Tensor,
    teacher_logits: &Tensor,
    ys: &Tensor,
    temperature: f64,
    ce_weight: f64,
) -> candle_core::Result<Tensor> {
    let log_s = log_probs(logits, temperature)?;
    let kl = kl_of_log_probs(&log_s, &log_probs(teacher_logits, temperature)?, temperature)?;
    if ce_weight == 0.0 {
        return Ok(kl);
    }
    // why: at T = 1 the student's log-probabilities are the ones cross-entropy needs; one
    // (b·t, vocab) log-softmax instead of two (the largest activations of the step).
    let ce = if temperature == 1.0 {
        candle_nn::loss::nll(&log_s, &ys.flatten_all()?)?
    } else {
        lm_loss(logits, ys)?
    };
    kl + (ce * ce_weight)?
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// KL on the host in f64, straight from the definition.
    fn hand_kl(s: &[f32], t: &[f32], v: usize, temp: f64) -> f64 {
        let softmax = |row: &[f32]| -> Vec<f64> {
            let z: Vec<f64> = row.iter().map(|&x| f64::from(x) / temp).collect();
            let m = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let e: Vec<f64> = z.iter().map(|x| (x - m).exp()).collect();
            let sum: f64 = e.iter().sum();
            e.iter().map(|x| x / sum).collect()
        };
        let rows = s.len() / v;
        let mut total = 0.0;
        for r in 0..rows {
            let (ps, pt) = (softmax(&s[r * v..(r + 1) * v]), softmax(&t[r * v..(r + 1) * v]));
            total += pt
                .iter()
                .zip(&ps)
                .map(|(a, b)| a * (a.ln() - b.ln()))
                .sum::<f64>();
        }
        total / rows as f64 * temp * temp
    }

    #[test]
    fn kl_is_zero_for_equal_logits_and_matches_the_definition() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        let (b, t, v) = (2, 3, 11);
        let s = (Tensor::randn(0f32, 3.0, (b, t, v), &dev)?).contiguous()?;
        let teacher = (Tensor::randn(0f32, 3.0, (b, t, v), &dev)?).contiguous()?;
        for temp in [1.0, 2.0, 0.5] {
            let same = f64::from(kl_distill(&s, &s, temp)?.to_scalar::<f32>()?);
            assert!(same.abs() < 1e-6, "KL(p‖p) = {same}");
            let got = f64::from(kl_distill(&s, &teacher, temp)?.to_scalar::<f32>()?);
            let want = hand_kl(
                &s.flatten_all()?.to_vec1()?,
                &teacher.flatten_all()?.to_vec1()?,
                v,
                temp,
            );
            assert!(got.is_finite() && got > 0.0, "T={temp}: {got}");
            assert!(
                (got - want).abs() < 1e-4 * want.max(1.0),
                "T={temp}: {got} vs hand {want}"
            );
        }
        Ok(())
    }

    #[test]
    fn shared_log_softmax_gives_kl_plus_weighted_ce() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        let (b, t, v) = (2, 5, 17);
        let s = Tensor::randn(0f32, 2.0, (b, t, v), &dev)?;
        let teacher = Tensor::randn(0f32, 2.0, (b, t, v), &dev)?;
        let ys = Tensor::from_vec(
            (0..b * t).map(|i| ((i * 7 + 3) % v) as u32).collect::<Vec<_>>(),
            (b, t),
            &dev,
        )?;
        for temp in [1.0, 2.0] {
            let got = f64::from(kl_and_ce(&s, &teacher, &ys, temp, 0.7)?.to_scalar::<f32>()?);
            let want = f64::from(kl_distill(&s, &teacher, temp)?.to_scalar::<f32>()?)
                + 0.7 * f64::from(lm_loss(&s, &ys)?.to_scalar::<f32>()?);
            assert!(
                (got - want).abs() < 1e-5 * want.abs().max(1.0),
                "T={temp}: {got} vs {want}"
            );
        }
        Ok(())
    }

    #[test]
    fn kl_gradient_flows_to_the_student_only() -> candle_core::Result<()> {
        let dev = Device::Cpu;
        let s = candle_core::Var::randn(0f32, 1.0, (1, 2, 5), &dev)?;
        let t = candle_core::Var::randn(0f32, 1.0, (1, 2, 5), &dev)?;
        let grads = kl_distill(s.as_tensor(), t.as_tensor(), 2.0)?.backward()?;
        assert!(grads.get(s.as_tensor()).is_some());
        assert!(grads.get(t.as_tensor()).is_none(), "the teacher is a constant");
        Ok(())
    }
}
