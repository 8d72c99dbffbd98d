//! Gradient clipping, the step between backward and the optimizer. Global-norm clipping:
//! ‖g‖ = √(Σ_i ‖g_i‖²) over every gradient; when `max_norm > 0` and ‖g‖ > max_norm, every gradient
//! is scaled by max_norm / (‖g‖ + 1e-6) (PyTorch's `clip_grad_norm_`). [`GradClip`] is the mode a
//! run's `clip:` selects: that, or per-tensor AdaGC ([`super::adagc`]). Both return the norm
//! before clipping.

use candle_core::{DType, Result, Tensor, Var};

use super::adagc::{AdaGc, AdaGcConfig};
use super::spec::{ClipKind, TrainSpec};

/// The clipping of a run (`train.clip`), with its state.
#[derive(Debug, Clone)]
pub enum GradClip {
    /// [`clip_grad_norm`] at `grad_clip` (no state).
    Global { max_norm: f64 },
    /// AdaGC: per-tensor clipping against EMAs of each tensor's norm (a savable state).
    AdaGc(AdaGc),
}

impl GradClip {
    pub fn new(spec: &TrainSpec) -> Self {
        match spec.clip {
            ClipKind::Global => Self::Global {
                max_norm: spec.grad_clip,
            },
            ClipKind::Adagc => Self::AdaGc(AdaGc::new(AdaGcConfig::from_spec(spec))),
        }
    }

    /// Clip `grads` (aligned to `vars`, the optimizer's `vars()`) in place; returns the global
    /// norm before clipping (NaN/inf pass through, unscaled).
    pub fn clip(&mut self, grads: &mut [Option<Tensor>], vars: &[(String, Var)]) -> Result<f64> {
        match self {
            Self::Global { max_norm } => clip_grad_norm(grads, *max_norm),
            Self::AdaGc(a) => a.clip(grads, vars),
        }
    }

    /// The state a checkpoint keeps: AdaGC's, or none for global clipping.
    pub fn adagc(&self) -> Option<&AdaGc> {
        match self {
            Self::Global { .. } => None,
            Self::AdaGc(a) => Some(a),
        }
    }

    /// The state a resume restores (see [`GradClip::adagc`]).
    pub fn adagc_mut(&mut self) -> Option<&mut AdaGc> {
        match self {
            Self::Global { .. } => None,
            Self::AdaGc(a) => Some(a),
        }
    }
}

/// Clip `grads` in place; returns the global norm before clipping (NaN/inf pass through, unscaled).
pub fn clip_grad_norm(grads: &mut [Option<Tensor>], max_norm: f64) -> Result<f64> {
    let norm = global_norm(grads)?;
    if max_norm > 0.0 && norm.is_finite() && norm > max_norm {
        let scale = max_norm / (norm + 1e-6);
        for g in grads.iter_mut().flatten() {
            *g = (&*g * scale)?;
        }
    }
    Ok(norm)
}

/// √(Σ_i ‖g_i‖²) over the present gradients.
fn global_norm(grads: &[Option<Tensor>]) -> Result<f64> {
    let present: Vec<&Tensor> = grads.iter().flatten().collect();
    Ok(sum_squares(&present)?.iter().sum::<f64>().sqrt())
}

/// ‖t‖² of each tensor (f64): on a GPU with f32 tensors by one multi-tensor kernel, else by
/// candle ops and one device-to-host read.
pub(super) fn sum_squares(present: &[&Tensor]) -> Result<Vec<f64>> {
    if present.is_empty() {
        return Ok(Vec::new());
    }
    let on_gpu = cfg!(feature = "cuda")
        && present
            .iter()
            .all(|g| g.device().is_cuda() && g.dtype() == DType::F32 && g.is_contiguous());
    if on_gpu {
        return crate::kernels::optimizer::sum_squares(present);
    }
    // why: one device-to-host read for all gradients (each read waits for the GPU's queue).
    let sums = present
        .iter()
        .map(|g| g.to_dtype(DType::F32)?.sqr()?.sum_all())
        .collect::<Result<Vec<_>>>()?;
    Tensor::stack(&sums, 0)?.to_dtype(DType::F64)?.to_vec1::<f64>()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn clips_to_the_global_norm() -> Result<()> {
        let dev = Device::Cpu;
        let a = Tensor::randn(0f32, 1.0, (3, 4), &dev)?;
        let b = Tensor::randn(0f32, 1.0, 5, &dev)?;
        let want: f64 = [&a, &b]
            .iter()
            .map(|t| {
                t.flatten_all()
                    .and_then(|t| t.to_vec1::<f32>())
                    .map(|v| v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>())
            })
            .sum::<Result<f64>>()?
            .sqrt();
        let mut grads = vec![Some(a.clone()), None, Some(b.clone())];
        let norm = clip_grad_norm(&mut grads, want / 2.0)?;
        assert!((norm - want).abs() < 1e-5 * want);
        let after = clip_grad_norm(&mut grads.clone(), 0.0)?;
        assert!(
            (after - want / 2.0).abs() < 1e-4,
            "clipped norm {after} vs {}",
            want / 2.0
        );
        let mut unclipped = vec![Some(a.clone())];
        clip_grad_norm(&mut unclipped, 1e9)?;
        assert_eq!(
            unclipped[0].as_ref().map(|t| t.to_vec2::<f32>()).transpose()?,
            Some(a.to_vec2::<f32>()?)
        );
        Ok(())
    }
}
