//! AdaGC (Wang et al. 2025, "AdaGC: Improving Training Stability for Large Language Model
//! Pretraining", arXiv 2502.11034): each parameter tensor `i` is clipped against an EMA `γ_i` of
//! its own clipped gradient norm, so a spike in one tensor is cut back without scaling the others.
//!
//! ```text
//! step t ≤ warmup (global clipping at λ_abs = grad_clip, as `clip_grad_norm`):
//!   h = λ_abs / (‖g‖ + 1e-6) if λ_abs > 0 and ‖g‖ > λ_abs, else 1      ‖g‖ = √(Σ_i ‖g_i‖²)
//!   ĝ_i = h·g_i                     γ_i ← min(γ_i, ‖ĝ_i‖)              (γ_i starts at +∞)
//! step t > warmup (per tensor):
//!   h_i = min(1, λ_rel·γ_i / ‖g_i‖)
//!   ĝ_i = h_i·g_i                   γ_i ← β·γ_i + (1−β)·‖ĝ_i‖
//! ```
//! The paper's algorithm, warm-up included (its EMAs start from the running minimum of the
//! globally clipped norms). A tensor with no EMA yet after the warmup (warmup 0, or no gradient
//! during it) is not clipped at its first gradient and its EMA starts at that norm.
//!
//! The state — each EMA by parameter name, and the step count — saves to a safetensors file in
//! the optimizer state's format (`kind: adagc`, scalars `gamma.<name>` as f64), so a resumed run
//! clips exactly as the uninterrupted one.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::{Device, Result, Tensor, Var};

use super::clip::sum_squares;
use super::optimizer::StateTensors;
use super::spec::TrainSpec;

/// The `kind` recorded in the state file's metadata.
const KIND: &str = "adagc";

/// Hyper-parameters (the `adagc:` block and `grad_clip` of `train:`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdaGcConfig {
    /// EMA coefficient β of the clipped norms.
    pub beta: f64,
    /// λ_rel: a tensor's gradient norm may reach `lambda · γ`.
    pub lambda: f64,
    /// Steps of global clipping before the per-tensor clipping starts.
    pub warmup: usize,
    /// λ_abs: the global-norm bound during the warmup; 0 disables it.
    pub max_norm: f64,
}

impl AdaGcConfig {
    pub fn from_spec(spec: &TrainSpec) -> Self {
        Self {
            beta: spec.adagc.beta,
            lambda: spec.adagc.lambda,
            warmup: spec.adagc.warmup,
            max_norm: spec.grad_clip,
        }
    }
}

#[derive(Debug, Clone)]
pub struct AdaGc {
    cfg: AdaGcConfig,
    /// γ_i by parameter name.
    gamma: BTreeMap<String, f64>,
    /// Calls to [`AdaGc::clip`] so far.
    t: usize,
    /// Tensors scaled down by the last call.
    clipped: usize,
}

impl AdaGc {
    pub fn new(cfg: AdaGcConfig) -> Self {
        Self {
            cfg,
            gamma: BTreeMap::new(),
            t: 0,
            clipped: 0,
        }
    }

    /// Clipping steps taken (restored by [`AdaGc::load`]).
    pub fn steps(&self) -> usize {
        self.t
    }

    /// γ of parameter `name`, once it has one.
    pub fn ema(&self, name: &str) -> Option<f64> {
        self.gamma.get(name).copied()
    }

    /// How many gradient tensors the last [`AdaGc::clip`] scaled down.
    pub fn clipped_last_step(&self) -> usize {
        self.clipped
    }

    /// Clip `grads` in place (`grads[i]` belongs to `vars[i]`, as the optimizer's `vars()`); returns
    /// the global norm before clipping. A NaN or infinite norm passes through: nothing is scaled
    /// and the state does not change, so the caller can stop on it.
    pub fn clip(&mut self, grads: &mut [Option<Tensor>], vars: &[(String, Var)]) -> Result<f64> {
        if grads.len() != vars.len() {
            candle_core::bail!("{} gradients for {} parameters", grads.len(), vars.len());
        }
        let present: Vec<&Tensor> = grads.iter().flatten().collect();
        let sums = sum_squares(&present)?;
        let norm = sums.iter().sum::<f64>().sqrt();
        if !norm.is_finite() {
            return Ok(norm);
        }
        self.t += 1;
        self.clipped = 0;
        let AdaGcConfig {
            beta,
            lambda,
            warmup,
            max_norm,
        } = self.cfg;
        let global = if max_norm > 0.0 && norm > max_norm {
            max_norm / (norm + 1e-6)
        } else {
            1.0
        };
        let mut sums = sums.into_iter();
        for (g, (name, _)) in grads.iter_mut().zip(vars) {
            let Some(g) = g else { continue };
            let Some(sum) = sums.next() else {
                candle_core::bail!("a norm for every present gradient");
            };
            let own = sum.sqrt();
            let prev = self.gamma.get(name).copied();
            let (scale, gamma) = if self.t <= warmup {
                let clipped = global * own;
                (global, prev.map_or(clipped, |p| p.min(clipped)))
            } else {
                match prev {
                    Some(p) => {
                        let h = if own > 0.0 {
                            (lambda * p / own).min(1.0)
                        } else {
                            1.0
                        };
                        (h, beta * p + (1.0 - beta) * h * own)
                    }
                    None => (1.0, own),
                }
            };
            if scale < 1.0 {
                *g = (&*g * scale)?;
                self.clipped += 1;
            }
            self.gamma.insert(name.clone(), gamma);
        }
        Ok(norm)
    }

    /// Write the EMAs and the step count to `path` (safetensors).
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut state = StateTensors::new(self.t);
        for (name, gamma) in &self.gamma {
            state.insert_scalar(&format!("gamma.{name}"), *gamma)?;
        }
        state.save(KIND, path)
    }

    /// Restore the state written by [`AdaGc::save`] (replacing the current one).
    pub fn load(&mut self, path: &Path) -> Result<()> {
        let (kind, state) = StateTensors::load(path, &Device::Cpu)?;
        if kind != KIND {
            candle_core::bail!("{} holds {kind} state, not {KIND}", path.display());
        }
        let mut gamma = BTreeMap::new();
        for key in state.names() {
            let Some(name) = key.strip_prefix("gamma.") else {
                candle_core::bail!("{}: unexpected tensor `{key}` in AdaGC state", path.display());
            };
            gamma.insert(name.to_string(), state.scalar(key)?);
        }
        (self.gamma, self.t, self.clipped) = (gamma, state.step, 0);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::clip::clip_grad_norm;

    fn named(names: &[&str]) -> Result<Vec<(String, Var)>> {
        names
            .iter()
            .map(|n| {
                Ok((
                    n.to_string(),
                    Var::zeros(1, candle_core::DType::F32, &Device::Cpu)?,
                ))
            })
            .collect()
    }

    fn g(values: &[f32]) -> Result<Option<Tensor>> {
        Ok(Some(Tensor::new(values, &Device::Cpu)?))
    }

    fn values(t: &Option<Tensor>) -> Vec<f32> {
        t.as_ref()
            .and_then(|t| t.to_vec1::<f32>().ok())
            .unwrap_or_default()
    }

    fn close(got: &[f32], want: &[f32]) {
        assert!(
            got.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-6) && got.len() == want.len(),
            "got {got:?}, want {want:?}"
        );
    }

    #[test]
    fn a_spike_in_one_tensor_is_clipped_to_lambda_times_its_ema_and_the_others_are_untouched() -> Result<()> {
        let vars = named(&["a", "b", "c"])?;
        let mut clip = AdaGc::new(AdaGcConfig {
            beta: 0.5,
            lambda: 1.5,
            warmup: 1,
            max_norm: 100.0,
        });
        // Step 1 (warmup): ‖g‖ = √(25 + 1 + 25) < 100, nothing scaled; γ = [5, 1, 5].
        let mut grads = vec![g(&[3.0, 4.0])?, g(&[0.6, 0.8])?, g(&[0.0, 5.0])?];
        clip.clip(&mut grads, &vars)?;
        assert_eq!(clip.clipped_last_step(), 0);
        for (name, want) in [("a", 5.0), ("b", 1.0), ("c", 5.0)] {
            assert!(
                (clip.ema(name).unwrap_or(f64::NAN) - want).abs() < 1e-6,
                "γ_{name}"
            );
        }

        // Step 2: b spikes to ‖g_b‖ = 20 → h_b = 1.5·1/20 = 0.075, ĝ_b = [0.9, 1.2] (norm 1.5);
        // a has ‖g_a‖ = 6 ≤ 1.5·5 and c ‖g_c‖ = 5 ≤ 7.5: untouched, to the bit.
        // γ_a = 0.5·5 + 0.5·6 = 5.5, γ_b = 0.5·1 + 0.5·1.5 = 1.25, γ_c = 5.
        let (a, c) = ([3.6f32, 4.8], [5.0f32, 0.0]);
        let mut grads = vec![g(&a)?, g(&[12.0, 16.0])?, g(&c)?];
        let norm = clip.clip(&mut grads, &vars)?;
        assert!(
            (norm - 461f64.sqrt()).abs() < 1e-5,
            "the pre-clip global norm, {norm}"
        );
        assert_eq!(values(&grads[0]), a.to_vec());
        assert_eq!(values(&grads[2]), c.to_vec());
        close(&values(&grads[1]), &[0.9, 1.2]);
        assert_eq!(clip.clipped_last_step(), 1);
        for (name, want) in [("a", 5.5), ("b", 1.25), ("c", 5.0)] {
            assert!(
                (clip.ema(name).unwrap_or(f64::NAN) - want).abs() < 1e-6,
                "γ_{name}"
            );
        }
        Ok(())
    }

    #[test]
    fn the_warmup_clips_globally_and_keeps_the_smallest_clipped_norm() -> Result<()> {
        let vars = named(&["a", "b"])?;
        let mut clip = AdaGc::new(AdaGcConfig {
            beta: 0.5,
            lambda: 1.5,
            warmup: 2,
            max_norm: 1.0,
        });
        // Step 1: ‖g‖ = √26 > 1: both scaled by s = 1/(√26 + 1e-6), exactly as global clipping;
        // γ = [5·s, 1·s] = [0.98058, 0.19612].
        let mut grads = vec![g(&[3.0, 4.0])?, g(&[0.6, 0.8])?];
        let mut global = grads.clone();
        clip.clip(&mut grads, &vars)?;
        clip_grad_norm(&mut global, 1.0)?;
        assert_eq!(values(&grads[0]), values(&global[0]));
        assert_eq!(values(&grads[1]), values(&global[1]));
        let s = 1.0 / (26f64.sqrt() + 1e-6);
        assert!((clip.ema("a").unwrap_or(f64::NAN) - 5.0 * s).abs() < 1e-6);
        // Step 2: ‖g‖ = √0.26 < 1, nothing scaled; γ = [min(0.98, 0.5), min(0.196, 0.1)] = [0.5, 0.1].
        let mut grads = vec![g(&[0.3, 0.4])?, g(&[0.06, 0.08])?];
        clip.clip(&mut grads, &vars)?;
        assert!((clip.ema("a").unwrap_or(f64::NAN) - 0.5).abs() < 1e-6);
        assert!((clip.ema("b").unwrap_or(f64::NAN) - 0.1).abs() < 1e-6);
        // Step 3 (per tensor): ‖g_a‖ = 5 → h_a = 1.5·0.5/5 = 0.15, ĝ_a = [0.45, 0.6];
        // ‖g_b‖ = 0.1 ≤ 0.15: untouched (global clipping at 1 would have scaled neither).
        let mut grads = vec![g(&[3.0, 4.0])?, g(&[0.06, 0.08])?];
        clip.clip(&mut grads, &vars)?;
        close(&values(&grads[0]), &[0.45, 0.6]);
        assert_eq!(values(&grads[1]), vec![0.06, 0.08]);
        Ok(())
    }

    #[test]
    fn a_saved_state_clips_on_exactly_as_the_uninterrupted_one() -> Result<()> {
        let vars = named(&["x.weight", "y.bias"])?;
        let cfg = AdaGcConfig {
            beta: 0.98,
            lambda: 1.05,
            warmup: 2,
            max_norm: 1.0,
        };
        let step = |k: usize| -> Result<Vec<Option<Tensor>>> {
            let f = |i: usize| ((k * 7 + i * 3) % 5) as f32 / 3.0 + 0.1;
            // Step 4 spikes the first tensor.
            let spike = if k == 4 { 30.0 } else { 1.0 };
            Ok(vec![g(&[f(0) * spike, -f(1)])?, g(&[f(2), f(3), -f(4)])?])
        };
        let mut straight = AdaGc::new(cfg);
        let mut resumed = AdaGc::new(cfg);
        let dir = tempfile::tempdir().map_err(candle_core::Error::wrap)?;
        let path = dir.path().join("adagc.safetensors");
        for k in 0..6 {
            let mut a = step(k)?;
            let mut b = step(k)?;
            straight.clip(&mut a, &vars)?;
            resumed.clip(&mut b, &vars)?;
            if k == 2 {
                resumed.save(&path)?;
                resumed = AdaGc::new(cfg);
                resumed.load(&path)?;
                assert_eq!(resumed.steps(), 3);
            }
            let bits = |gs: &[Option<Tensor>]| -> Vec<u32> {
                gs.iter().flat_map(values).map(f32::to_bits).collect()
            };
            assert_eq!(bits(&a), bits(&b), "step {k}");
        }
        for (name, _) in &vars {
            let (x, y) = (straight.ema(name), resumed.ema(name));
            assert_eq!(x.map(f64::to_bits), y.map(f64::to_bits), "γ of `{name}`");
        }
        Ok(())
    }

    #[test]
    fn a_non_finite_norm_passes_through_and_changes_nothing() -> Result<()> {
        let vars = named(&["a"])?;
        let mut clip = AdaGc::new(AdaGcConfig {
            beta: 0.9,
            lambda: 1.05,
            warmup: 0,
            max_norm: 1.0,
        });
        let mut grads = vec![g(&[f32::NAN, 1.0])?];
        assert!(clip.clip(&mut grads, &vars)?.is_nan());
        assert_eq!((clip.steps(), clip.ema("a")), (0, None));
        Ok(())
    }
}
