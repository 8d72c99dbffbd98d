//! PIDAO: the gradient as the error signal of a PID controller — the original caramba's
//! discrete form (`PIDAOConfig`), element-wise, with AdamW-style decoupled weight decay:
//!
//! ```text
//! I ← clamp(I + g, −c, c)                  (c = integral_clip)
//! D ← β_d·D + (1−β_d)·(g − g_prev)         (g − g_prev = 0 at a parameter's first step)
//! p ← p − lr·( kp·g + ki·I + kd·D + wd·p ) (decay on decayed parameters only)
//! g_prev ← g
//! ```
//! This is not the continuous-time PIDAO of Chen et al. (Nature Communications 2024), whose
//! discretisation carries a velocity state; it is the seed's controller, which the orchestrator's
//! strategies were written against. Its adaptive-gain variant is not implemented.
//!
//! why the first difference is 0: with no previous gradient, `g − 0` would give the derivative
//! term a kick of `(1−β_d)·g` on the first step that says nothing about how `g` changes.

use candle_core::{DType, Result, Tensor, Var};

use super::{MasterWeights, StateTensors, decays};

/// Hyper-parameters (the `pid:` block and `weight_decay` of the `train:` block).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PidaoConfig {
    pub kp: f64,
    pub ki: f64,
    pub kd: f64,
    pub integral_clip: f64,
    pub derivative_ema: f64,
    pub weight_decay: f64,
}

pub struct Pidao {
    cfg: PidaoConfig,
    vars: Vec<(String, Var)>,
    master: MasterWeights,
    /// The clamped running sum of gradients (f32).
    integral: Vec<Tensor>,
    /// The EMA of gradient differences (f32).
    derivative: Vec<Tensor>,
    /// The last gradient each parameter received; `None` before its first.
    prev: Vec<Option<Tensor>>,
    t: usize,
}

impl Pidao {
    pub fn new(cfg: PidaoConfig, vars: Vec<(String, Var)>) -> Result<Self> {
        let zeros = |vars: &[(String, Var)]| -> Result<Vec<Tensor>> {
            vars.iter()
                .map(|(_, v)| Tensor::zeros(v.shape(), DType::F32, v.device()))
                .collect()
        };
        Ok(Self {
            cfg,
            integral: zeros(&vars)?,
            derivative: zeros(&vars)?,
            prev: vec![None; vars.len()],
            master: MasterWeights::new(&vars)?,
            vars,
            t: 0,
        })
    }

    pub fn vars(&self) -> &[(String, Var)] {
        &self.vars
    }

    pub fn steps(&self) -> usize {
        self.t
    }

    /// One update with `grads` aligned to [`Pidao::vars`] (`None`: left untouched, state included).
    pub fn step(&mut self, grads: &[Option<Tensor>], lr: f64) -> Result<()> {
        self.t += 1;
        let PidaoConfig {
            kp,
            ki,
            kd,
            integral_clip: c,
            derivative_ema: bd,
            weight_decay,
        } = self.cfg;
        for (i, ((_, var), g)) in self.vars.iter().zip(grads).enumerate() {
            let Some(g) = g else { continue };
            let g = g.to_dtype(DType::F32)?;
            let p = self.master.get(i, var)?;
            let integral = (&self.integral[i] + &g)?.clamp(-c, c)?;
            let derivative = match &self.prev[i] {
                Some(prev) => ((&self.derivative[i] * bd)? + ((&g - prev)? * (1.0 - bd))?)?,
                None => (&self.derivative[i] * bd)?,
            };
            let mut update = (((&g * kp)? + (&integral * ki)?)? + (&derivative * kd)?)?;
            if weight_decay != 0.0 && decays(var) {
                update = (update + (&p * weight_decay)?)?;
            }
            self.master.set(i, var, (p - (update * lr)?)?)?;
            // why detach: state that records a graph keeps every earlier step alive (gradients.rs).
            self.integral[i] = integral.detach();
            self.derivative[i] = derivative.detach();
            self.prev[i] = Some(g.detach());
        }
        Ok(())
    }

    pub(super) fn state(&self) -> StateTensors {
        let mut out = StateTensors::new(self.t);
        for (i, (name, _)) in self.vars.iter().enumerate() {
            out.insert(format!("integral.{name}"), self.integral[i].clone());
            out.insert(format!("derivative.{name}"), self.derivative[i].clone());
            if let Some(prev) = &self.prev[i] {
                out.insert(format!("prev_grad.{name}"), prev.clone());
            }
        }
        self.master.save(&self.vars, &mut out);
        out
    }

    pub(super) fn load(&mut self, state: &StateTensors) -> Result<()> {
        let (mut integral, mut derivative, mut prev) = (Vec::new(), Vec::new(), Vec::new());
        for (name, var) in &self.vars {
            integral.push(state.take(&format!("integral.{name}"), var)?);
            derivative.push(state.take(&format!("derivative.{name}"), var)?);
            // why optional: a parameter that has not had a gradient yet has no previous one.
            let key = format!("prev_grad.{name}");
            prev.push(if state.contains(&key) {
                Some(state.take(&key, var)?)
            } else {
                None
            });
        }
        self.master.load(&self.vars, state)?;
        (self.integral, self.derivative, self.prev, self.t) = (integral, derivative, prev, state.step);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::super::test_values::{grad, var};

    fn close(t: &Tensor, want: &[f32]) -> Result<()> {
        let got: Vec<f32> = t.flatten_all()?.to_vec1()?;
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < 1e-6, "got {got:?}, want {want:?}");
        }
        Ok(())
    }

    #[test]
    fn two_steps_match_the_update_computed_by_hand() -> Result<()> {
        let cfg = PidaoConfig {
            kp: 1.0,
            ki: 0.5,
            kd: 0.2,
            integral_clip: 0.6,
            derivative_ema: 0.9,
            weight_decay: 0.1,
        };
        // `w` (rank 2) decays, `b` (rank 1) does not.
        let (w, b) = (var(&[0.5, -1.0], &[1, 2])?, var(&[1.0, -2.0], &[2])?);
        let mut opt = Pidao::new(cfg, vec![("b".into(), b.clone()), ("w".into(), w.clone())])?;
        let lr = 0.1;

        // Step 1, b: g = [0.4, −0.3]; I = [0.4, −0.3]; D = 0 (no previous gradient);
        //   u = g + 0.5·I = [0.6, −0.45]; b = [1 − 0.06, −2 + 0.045] = [0.94, −1.955].
        // Step 1, w: g = [0.2, 0.8]; I = clamp([0.2, 0.8], ±0.6) = [0.2, 0.6]; D = 0;
        //   u = [0.2 + 0.1, 0.8 + 0.3] = [0.3, 1.1]; decay lr·wd·w = [0.005, −0.01];
        //   w = [0.5 − 0.03 − 0.005, −1 − 0.11 + 0.01] = [0.465, −1.1].
        opt.step(&[grad(&[0.4, -0.3], &[2])?, grad(&[0.2, 0.8], &[1, 2])?], lr)?;
        close(b.as_tensor(), &[0.94, -1.955])?;
        close(w.as_tensor(), &[0.465, -1.1])?;

        // Step 2, b: g = [0.3, 0.1]; I = clamp([0.7, −0.2]) = [0.6, −0.2];
        //   D = 0.9·0 + 0.1·(g − g_prev) = 0.1·[−0.1, 0.4] = [−0.01, 0.04];
        //   u = [0.3 + 0.3 − 0.002, 0.1 − 0.1 + 0.008] = [0.598, 0.008];
        //   b = [0.94 − 0.0598, −1.955 − 0.0008] = [0.8802, −1.9558].
        // Step 2, w: g = [−0.2, 0.5]; I = clamp([0.0, 1.1]) = [0.0, 0.6];
        //   D = 0.1·[−0.4, −0.3] = [−0.04, −0.03]; u = [−0.2 − 0.008, 0.5 + 0.3 − 0.006] = [−0.208, 0.794];
        //   decay lr·wd·w = [0.00465, −0.011];
        //   w = [0.465 + 0.0208 − 0.00465, −1.1 − 0.0794 + 0.011] = [0.48115, −1.1684].
        opt.step(&[grad(&[0.3, 0.1], &[2])?, grad(&[-0.2, 0.5], &[1, 2])?], lr)?;
        close(b.as_tensor(), &[0.8802, -1.9558])?;
        close(w.as_tensor(), &[0.48115, -1.1684])?;
        close(&opt.integral[1], &[0.0, 0.6])?;
        close(&opt.derivative[0], &[-0.01, 0.04])?;
        Ok(())
    }
}
