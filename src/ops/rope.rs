//! Rotary position embedding, HF's half-split (`rotate_half`) convention.
//!
//! `inv_freq_i = base^(-2i/dim)`; with `x1 = x[..dim/2]`, `x2 = x[dim/2..]`:
//! `y1 = x1·cos − x2·sin`, `y2 = x1·sin + x2·cos`. Optional `llama3` frequency scaling uses HF's
//! formula (interpolation linear in 1/λ), not the original caramba's. Shapes: (b, h, t, dim).

use std::sync::Mutex;

use super::closed_form::{self, OpWithGrad};
use candle_core::{Device, Result, Tensor};
use serde::{Deserialize, Serialize};

/// HF-style `rope_scaling` dict. Only `rope_type: llama3` is supported; anything else is rejected
/// at validation (the original silently fell back to unscaled RoPE).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RopeScaling {
    /// `llama3` (HF also writes this as `type`).
    #[serde(alias = "type")]
    pub rope_type: String,
    /// Divisor of the low frequencies. Default: 8.
    #[serde(default = "d_factor")]
    pub factor: f64,
    /// Default: 1.
    #[serde(default = "d_low")]
    pub low_freq_factor: f64,
    /// Default: 4.
    #[serde(default = "d_high")]
    pub high_freq_factor: f64,
    /// Default: 8192.
    #[serde(default = "d_orig")]
    pub original_max_position_embeddings: usize,
}

fn d_factor() -> f64 {
    8.0
}
fn d_low() -> f64 {
    1.0
}
fn d_high() -> f64 {
    4.0
}
fn d_orig() -> usize {
    8192
}

/// Inverse frequencies for a rotary dimension `dim` (even), with optional llama3 scaling.
pub fn inv_freq(dim: usize, base: f64, scaling: Option<&RopeScaling>) -> Vec<f64> {
    let raw = (0..dim / 2).map(|i| base.powf(-((2 * i) as f64) / dim as f64));
    match scaling {
        Some(s) if s.rope_type == "llama3" => {
            let orig = s.original_max_position_embeddings as f64;
            let low_wavelen = orig / s.low_freq_factor;
            let high_wavelen = orig / s.high_freq_factor;
            raw.map(|f| {
                let wavelen = 2.0 * std::f64::consts::PI / f;
                if wavelen < high_wavelen {
                    f
                } else if wavelen > low_wavelen {
                    f / s.factor
                } else {
                    let smooth =
                        (orig / wavelen - s.low_freq_factor) / (s.high_freq_factor - s.low_freq_factor);
                    (1.0 - smooth) * f / s.factor + smooth * f
                }
            })
            .collect()
        }
        _ => raw.collect(),
    }
}

/// Rotary embedding with a cos/sin table that grows to the next power of two.
#[derive(Debug)]
pub struct Rope {
    dim: usize,
    inv_freq: Vec<f64>,
    table: Mutex<Option<(Tensor, Tensor)>>,
}

impl Rope {
    pub fn new(dim: usize, base: f64, scaling: Option<&RopeScaling>) -> Self {
        Self {
            dim,
            inv_freq: inv_freq(dim, base, scaling),
            table: Mutex::new(None),
        }
    }

    /// (cos, sin), each (t, dim/2), for positions `offset..offset+t`, in f32.
    pub fn cos_sin(&self, offset: usize, t: usize, device: &Device) -> Result<(Tensor, Tensor)> {
        self.cos_sin_as(offset, t, device, candle_core::DType::F32)
    }

    /// The table rows in `dtype`, converted once when the table is built: a decode step on a GPU
    /// otherwise pays two conversion launches per RoPE call.
    pub fn cos_sin_as(
        &self,
        offset: usize,
        t: usize,
        device: &Device,
        dtype: candle_core::DType,
    ) -> Result<(Tensor, Tensor)> {
        let needed = offset + t;
        let mut table = self.table.lock().expect("rope table lock poisoned");
        let stale = match table.as_ref() {
            Some((cos, _)) => {
                cos.dim(0)? < needed || !cos.device().same_device(device) || cos.dtype() != dtype
            }
            None => true,
        };
        if stale {
            let len = needed.next_power_of_two().max(256);
            let half = self.dim / 2;
            let mut cos = Vec::with_capacity(len * half);
            let mut sin = Vec::with_capacity(len * half);
            for p in 0..len {
                for f in &self.inv_freq {
                    let angle = p as f64 * f;
                    cos.push(angle.cos() as f32);
                    sin.push(angle.sin() as f32);
                }
            }
            let cos = Tensor::from_vec(cos, (len, half), device)?.to_dtype(dtype)?;
            let sin = Tensor::from_vec(sin, (len, half), device)?.to_dtype(dtype)?;
            *table = Some((cos, sin));
        }
        let (cos, sin) = table.as_ref().expect("table was just filled");
        Ok((cos.narrow(0, offset, t)?, sin.narrow(0, offset, t)?))
    }

    /// Rotate `xs` (b, h, t, dim) as positions `offset..`. `differentiable` picks the slow
    /// candle-ops path, which has a backward pass; the fused kernel has none.
    pub fn apply(&self, xs: &Tensor, offset: usize, differentiable: bool) -> Result<Tensor> {
        let (_, _, t, d) = xs.dims4()?;
        if d != self.dim {
            candle_core::bail!("RoPE built for head dim {}, got {d}", self.dim);
        }
        let (cos, sin) = self.cos_sin_as(offset, t, xs.device(), xs.dtype())?;
        if differentiable {
            rope_with_grad(xs, &cos, &sin)
        } else {
            candle_nn::rotary_emb::rope(&xs.contiguous()?, &cos.contiguous()?, &sin.contiguous()?)
        }
    }
}

/// Half-split RoPE of `xs` (b, h, t, d) by tables (t, d/2) or per-batch-row (b, t, d/2), in xs's
/// dtype: candle's fused kernel forward, and backward by the transposed rotation (the same
/// rotation by −θ: one more fused kernel) instead of the reference's chain of elementwise ops.
/// The tables are constants (no gradient reaches them).
pub fn rope_with_grad(xs: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    closed_form::apply(
        xs,
        RopeWithGrad {
            cos: cos.contiguous()?,
            sin: sin.contiguous()?,
        },
    )
}

#[derive(Clone)]
struct RopeWithGrad {
    cos: Tensor,
    sin: Tensor,
}

impl OpWithGrad for RopeWithGrad {
    fn name(&self) -> &'static str {
        "rope-with-grad"
    }

    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        candle_nn::rotary_emb::rope(xs, &self.cos, &self.sin)
    }

    fn backward(&self, _xs: &Tensor, _ys: &Tensor, grad: &Tensor) -> Result<Tensor> {
        candle_nn::rotary_emb::rope(&grad.contiguous()?, &self.cos, &self.sin.neg()?)
    }

    fn reference(&self, xs: &Tensor) -> Result<Tensor> {
        rope_reference(xs, &self.cos, &self.sin)
    }
}

/// Plain candle-ops RoPE (tables (t, d/2) or (b, t, d/2)): the reference for the fused paths.
pub fn rope_reference(xs: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
    let d = xs.dim(3)?;
    let x1 = xs.narrow(3, 0, d / 2)?;
    let x2 = xs.narrow(3, d / 2, d / 2)?;
    let (cos, sin) = if cos.rank() == 3 {
        (cos.unsqueeze(1)?, sin.unsqueeze(1)?)
    } else {
        (cos.unsqueeze(0)?.unsqueeze(0)?, sin.unsqueeze(0)?.unsqueeze(0)?)
    };
    let y1 = (x1.broadcast_mul(&cos)? - x2.broadcast_mul(&sin)?)?;
    let y2 = (x1.broadcast_mul(&sin)? + x2.broadcast_mul(&cos)?)?;
    Tensor::cat(&[y1, y2], 3)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rope_matches_hand_computed_rotation() -> Result<()> {
        // dim 4, base 100: inv_freq = [1, 0.1]. Position 3 rotates pair (x0, x2) by 3 rad and (x1, x3) by 0.3 rad.
        let rope = Rope::new(4, 100.0, None);
        let xs = Tensor::new(
            &[[[[0.0f32; 4], [0.0; 4], [0.0; 4], [1.0, 2.0, 3.0, 4.0]]]],
            &Device::Cpu,
        )?;
        for differentiable in [true, false] {
            let got: Vec<f32> = rope.apply(&xs, 0, differentiable)?.flatten_all()?.to_vec1()?;
            let (c0, s0, c1, s1) = (3f32.cos(), 3f32.sin(), 0.3f32.cos(), 0.3f32.sin());
            let want = [
                1.0 * c0 - 3.0 * s0,
                2.0 * c1 - 4.0 * s1,
                1.0 * s0 + 3.0 * c0,
                2.0 * s1 + 4.0 * c1,
            ];
            for (g, w) in got[12..].iter().zip(want) {
                assert!(
                    (g - w).abs() < 1e-5,
                    "differentiable={differentiable}: {g} vs {w}"
                );
            }
        }
        Ok(())
    }

    #[test]
    fn rope_with_grad_matches_the_reference_forward_and_backward() -> Result<()> {
        use crate::ops::closed_form::check::against_reference;
        let dev = Device::Cpu;
        let (b, h, t, d) = (2, 3, 5, 8);
        let xs = Tensor::randn(0f32, 1.0, (b, h, t, d), &dev)?;
        let up = Tensor::randn(0f32, 1.0, (b, h, t, d), &dev)?;
        let angle = Tensor::randn(0f32, 2.0, (t, d / 2), &dev)?;
        let op = RopeWithGrad {
            cos: angle.cos()?,
            sin: angle.sin()?,
        };
        against_reference(op, &xs, &up, |y| Ok(y.clone()), 1e-5)?;
        // One table per batch row, as the per-head RoPE folds heads into the batch.
        let angle = Tensor::randn(0f32, 2.0, (b, t, d / 2), &dev)?;
        let op = RopeWithGrad {
            cos: angle.cos()?,
            sin: angle.sin()?,
        };
        against_reference(op, &xs, &up, |y| Ok(y.clone()), 1e-5)
    }

    #[test]
    fn per_head_rope_rotates_each_group_by_its_own_frequencies() -> Result<()> {
        let dev = Device::Cpu;
        let (b, h, n_kv, t, d) = (2, 4, 2, 3, 4);
        let inv = Tensor::new(&[[1.0f32, 0.1], [0.5, 0.05]], &dev)?;
        let rope = HeadRope::new(inv)?;
        let xs = Tensor::randn(0f32, 1.0, (b, h, t, d), &dev)?;
        let offset = 7;
        let got = rope.apply(&xs, offset)?;
        let x: Vec<f32> = xs.flatten_all()?.to_vec1()?;
        let y: Vec<f32> = got.flatten_all()?.to_vec1()?;
        let freqs = [[1.0f32, 0.1], [0.5, 0.05]];
        for bi in 0..b {
            for hi in 0..h {
                let f = freqs[hi / (h / n_kv)];
                for ti in 0..t {
                    let base = ((bi * h + hi) * t + ti) * d;
                    for i in 0..d / 2 {
                        let a = (offset + ti) as f32 * f[i];
                        let (x1, x2) = (x[base + i], x[base + i + d / 2]);
                        let want = [x1 * a.cos() - x2 * a.sin(), x1 * a.sin() + x2 * a.cos()];
                        let have = [y[base + i], y[base + i + d / 2]];
                        for (w, g) in want.iter().zip(have) {
                            assert!((w - g).abs() < 1e-5, "b{bi} h{hi} t{ti} pair {i}: {g} vs {w}");
                        }
                    }
                }
            }
        }
        Ok(())
    }

    #[test]
    fn offset_equals_later_positions() -> Result<()> {
        let rope = Rope::new(8, 10000.0, None);
        let xs = Tensor::randn(0f32, 1.0, (1, 2, 5, 8), &Device::Cpu)?;
        let full = rope.apply(&xs, 0, false)?;
        let tail = rope.apply(&xs.narrow(2, 3, 2)?, 3, false)?;
        let diff = (full.narrow(2, 3, 2)? - tail)?
            .abs()?
            .max_all()?
            .to_scalar::<f32>()?;
        assert!(diff < 1e-6);
        Ok(())
    }

    #[test]
    fn llama3_scaling_matches_hf_formula() {
        // Llama 3.2 1B: head_dim 64, base 5e5, factor 32, low 1, high 4, orig 8192.
        let s = RopeScaling {
            rope_type: "llama3".into(),
            factor: 32.0,
            low_freq_factor: 1.0,
            high_freq_factor: 4.0,
            original_max_position_embeddings: 8192,
        };
        let scaled = inv_freq(64, 500000.0, Some(&s));
        let plain = inv_freq(64, 500000.0, None);
        // HF `_compute_llama3_parameters`, written out independently per band.
        for (i, (&got, &f)) in scaled.iter().zip(&plain).enumerate() {
            let wavelen = 2.0 * std::f64::consts::PI / f;
            let want = if wavelen < 8192.0 / 4.0 {
                f
            } else if wavelen > 8192.0 {
                f / 32.0
            } else {
                let smooth = (8192.0 / wavelen - 1.0) / 3.0;
                (1.0 - smooth) * (f / 32.0) + smooth * f
            };
            assert!(
                (got - want).abs() <= 1e-12 * want.abs(),
                "pair {i}: {got} vs {want}"
            );
        }
        // The high-frequency end is untouched, the low end divided by the factor, and the band
        // in between is strictly between the two.
        assert_eq!(scaled[0], plain[0]);
        assert!((scaled[31] - plain[31] / 32.0).abs() < 1e-15);
        let mid: Vec<usize> = (0..32)
            .filter(|&i| scaled[i] != plain[i] && (scaled[i] - plain[i] / 32.0).abs() > 1e-18)
            .collect();
        assert!(!mid.is_empty(), "some pairs must fall in the interpolated band");
    }
}

/// RoPE whose frequencies differ per KV head (inherited from a teacher by surgery: each group
/// keeps its own subset of the teacher's frequency pairs). Query head h uses the table of KV
/// head h / (n_heads / n_kv_heads). Always the candle-ops path.
#[derive(Debug)]
pub struct HeadRope {
    dim: usize,
    /// (n_kv_heads, dim/2) inverse frequencies.
    inv_freq: Tensor,
}

impl HeadRope {
    /// `inv_freq`: (n_kv_heads, dim/2).
    pub fn new(inv_freq: Tensor) -> Result<Self> {
        let (_, half) = inv_freq.dims2()?;
        Ok(Self {
            dim: 2 * half,
            inv_freq: inv_freq.to_dtype(candle_core::DType::F32)?,
        })
    }

    /// Rotate `xs` (b, h, t, dim) as positions `offset..`; h is n_kv_heads or a multiple of it.
    pub fn apply(&self, xs: &Tensor, offset: usize) -> Result<Tensor> {
        let (_, h, t, d) = xs.dims4()?;
        let (n_kv, half) = self.inv_freq.dims2()?;
        if d != self.dim || h % n_kv != 0 {
            candle_core::bail!(
                "per-head RoPE for {n_kv} heads of dim {}, got {h} heads of dim {d}",
                self.dim
            );
        }
        let group = h / n_kv;
        let pos: Vec<f32> = (offset..offset + t).map(|p| p as f32).collect();
        let pos = Tensor::from_vec(pos, (1, t, 1), xs.device())?;
        let freq = self.inv_freq.to_device(xs.device())?;
        // (n_kv, 1, half) → (n_kv, group, half) → (h, 1, half): query head h gets table h / group.
        let freq = freq
            .unsqueeze(1)?
            .broadcast_as((n_kv, group, half))?
            .reshape((h, 1, half))?;
        let angle = pos.broadcast_mul(&freq)?; // (h, t, half), f32
        let b = xs.dim(0)?;
        // why: the fused kernel takes one table per leading row: fold heads into the batch,
        // (b, h, t, d) → (b·h, 1, t, d), with the (h, t, half) tables repeated per batch row.
        let table = |t: Tensor| -> Result<Tensor> {
            t.to_dtype(xs.dtype())?
                .unsqueeze(0)?
                .broadcast_as((b, h, t.dim(1)?, half))?
                .reshape((b * h, t.dim(1)?, half))
        };
        let (cos, sin) = (table(angle.cos()?)?, table(angle.sin()?)?);
        let folded = xs.contiguous()?.reshape((b * h, 1, t, d))?;
        rope_with_grad(&folded, &cos, &sin)?.reshape((b, h, t, d))
    }
}
