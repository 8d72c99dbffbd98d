//! Global-norm gradient clipping: ‖g‖ = √(Σ_i ‖g_i‖²) over every gradient; when `max_norm > 0`
//! and ‖g‖ > max_norm, every gradient is scaled by max_norm / (‖g‖ + 1e-6) (PyTorch's
//! `clip_grad_norm_`). Returns the norm before clipping.

use candle_core::{DType, Result, Tensor};

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

/// √(Σ_i ‖g_i‖²): on a GPU with f32 gradients by one multi-tensor kernel, else by candle ops.
fn global_norm(grads: &[Option<Tensor>]) -> Result<f64> {
    let present: Vec<&Tensor> = grads.iter().flatten().collect();
    let on_gpu = cfg!(feature = "cuda")
        && !present.is_empty()
        && present
            .iter()
            .all(|g| g.device().is_cuda() && g.dtype() == DType::F32 && g.is_contiguous());
    if on_gpu {
        let sums = crate::kernels::optimizer::sum_squares(&present)?;
        return Ok(sums.iter().sum::<f64>().sqrt());
    }
    // why: one device-to-host read for all gradients (each read waits for the GPU's queue).
    let sums = grads
        .iter()
        .flatten()
        .map(|g| g.to_dtype(DType::F32)?.sqr()?.sum_all())
        .collect::<Result<Vec<_>>>()?;
    let sum_sq: f64 = if sums.is_empty() {
        0.0
    } else {
        Tensor::stack(&sums, 0)?
            .to_dtype(DType::F64)?
            .to_vec1::<f64>()?
            .iter()
            .sum()
    };
    Ok(sum_sq.sqrt())
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
