//! SWATS (Keskar & Socher 2017, "Improving Generalization Performance by Switching from Adam to
//! SGD"), Algorithm 1 with its published switch criterion, over the whole parameter vector:
//!
//! ```text
//! g ← g + wd·p                                   (L2, as the paper; decayed parameters only)
//! Adam phase, k = 1, 2, …:
//!   m ← β1·m + (1−β1)·g     v ← β2·v + (1−β2)·g²
//!   s = −lr · (m/(1−β1^k)) / (√(v/(1−β2^k)) + ε)     (the Adam step; p ← p + s)
//!   if sᵀg ≠ 0:
//!     γ = sᵀs / (−sᵀg)                           (the SGD lr whose step projects onto s)
//!     λ ← β2·λ + (1−β2)·γ        Λ = λ / (1−β2^k)
//!     switch when k ≥ min_steps, Λ > 0 and |Λ − γ| < tolerance
//! SGD phase (from the step after the switch; b starts at 0):
//!   b ← β1·b + g             p ← p − (1−β1) · Λ · (lr / lr_switch) · b
//! ```
//! `sᵀs` and `sᵀg` sum over every parameter: one switch for the model, as Algorithm 1 is written
//! (not per layer). `ε` sits outside the bias-corrected √v̂, as in PyTorch's Adam and our AdamW
//! (the paper's algorithm folds the correction into the lr, a shift of ε only). The trainer's
//! schedule keeps acting after the switch: the SGD lr is Λ scaled by `lr / lr_switch`, the
//! schedule's lr now over its lr at the switch (the paper decays both phases by one schedule).
//!
//! The published criterion, not the original caramba's: the seed switched when the variance of
//! the last 100 values of `mean_params(⟨g, m̂/denom⟩ / ‖g‖²)` fell below 1e-9 and then used
//! `clamp(lr/|ratio|, 0.1·lr, 10·lr)`. That ratio is unitless while the threshold is absolute,
//! the clamp hides the estimate it computed, and it seeded the momentum buffer with `exp_avg` — an
//! EMA a factor 1−β1 smaller than a momentum buffer — so the first SGD steps ran at a tenth of
//! their lr. Λ is the paper's estimate itself; `Λ > 0` guards against switching to a negative lr
//! when Adam's steps move against the gradient.

use candle_core::{DType, Result, Tensor, Var};

use super::{MasterWeights, StateTensors, decays};

/// Hyper-parameters (`betas`, `eps`, `weight_decay` and the `swats:` block of `train:`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SwatsConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// L2 weight decay, added to the gradient in both phases.
    pub weight_decay: f64,
    /// The switch criterion's bound on |Λ − γ| (the paper's ε).
    pub tolerance: f64,
    /// The earliest step at which the switch may happen.
    pub min_steps: usize,
}

/// When SWATS switched and to which lr.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Switch {
    /// The step (from 1) whose Adam update met the criterion; SGD runs from the next one.
    pub step: usize,
    /// Λ: the SGD learning rate at the schedule's lr of the switch step.
    pub sgd_lr: f64,
    /// The schedule's lr at the switch step.
    pub lr: f64,
}

pub struct Swats {
    cfg: SwatsConfig,
    vars: Vec<(String, Var)>,
    master: MasterWeights,
    /// Adam moments (f32); emptied at the switch.
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    /// SGD momentum buffers (f32); empty until the switch.
    buf: Vec<Tensor>,
    /// The EMA of γ, not bias-corrected.
    lambda: f64,
    switch: Option<Switch>,
    t: usize,
}

impl Swats {
    pub fn new(cfg: SwatsConfig, vars: Vec<(String, Var)>) -> Result<Self> {
        let zeros = |vars: &[(String, Var)]| -> Result<Vec<Tensor>> {
            vars.iter()
                .map(|(_, v)| Tensor::zeros(v.shape(), DType::F32, v.device()))
                .collect()
        };
        Ok(Self {
            cfg,
            m: zeros(&vars)?,
            v: zeros(&vars)?,
            buf: Vec::new(),
            master: MasterWeights::new(&vars)?,
            vars,
            lambda: 0.0,
            switch: None,
            t: 0,
        })
    }

    pub fn vars(&self) -> &[(String, Var)] {
        &self.vars
    }

    pub fn steps(&self) -> usize {
        self.t
    }

    /// The switch to SGD, once it has happened.
    pub fn switched(&self) -> Option<Switch> {
        self.switch
    }

    /// One update with `grads` aligned to [`Swats::vars`] (`None`: left untouched, state included).
    pub fn step(&mut self, grads: &[Option<Tensor>], lr: f64) -> Result<()> {
        self.t += 1;
        match self.switch {
            Some(switch) => self.sgd_step(grads, lr, switch),
            None => self.adam_step(grads, lr),
        }
    }

    /// The gradient with L2 decay added, in f32, and the f32 value of parameter `i`.
    fn decayed(&self, i: usize, g: &Tensor) -> Result<(Tensor, Tensor)> {
        let var = &self.vars[i].1;
        let p = self.master.get(i, var)?;
        let mut g = g.to_dtype(DType::F32)?;
        if self.cfg.weight_decay != 0.0 && decays(var) {
            g = (g + (&p * self.cfg.weight_decay)?)?;
        }
        Ok((g, p))
    }

    fn adam_step(&mut self, grads: &[Option<Tensor>], lr: f64) -> Result<()> {
        let SwatsConfig {
            beta1: b1,
            beta2: b2,
            eps,
            ..
        } = self.cfg;
        let t = self.t as i32;
        let (bc1, bc2) = (1.0 - b1.powi(t), 1.0 - b2.powi(t));
        // Per parameter: sᵀs and sᵀg (f32 sums), read back together after the loop.
        let mut dots = Vec::new();
        for (i, g) in grads.iter().enumerate() {
            let Some(g) = g else { continue };
            let (g, p) = self.decayed(i, g)?;
            let m = ((&self.m[i] * b1)? + (&g * (1.0 - b1))?)?;
            let v = ((&self.v[i] * b2)? + (g.sqr()? * (1.0 - b2))?)?;
            let s = (((&m / bc1)? / ((&v / bc2)?.sqrt()? + eps)?)? * (-lr))?;
            dots.push(s.sqr()?.sum_all()?);
            dots.push((&s * &g)?.sum_all()?);
            self.master.set(i, &self.vars[i].1, (p + s)?)?;
            // why detach: state that records a graph keeps every earlier step alive (gradients.rs).
            self.m[i] = m.detach();
            self.v[i] = v.detach();
        }
        if dots.is_empty() {
            return Ok(());
        }
        // why: one device-to-host read for all parameters (each read waits for the GPU's queue).
        let dots = Tensor::stack(&dots, 0)?.to_dtype(DType::F64)?.to_vec1::<f64>()?;
        let ss: f64 = dots.iter().step_by(2).sum();
        let sg: f64 = dots.iter().skip(1).step_by(2).sum();
        if sg == 0.0 || !(ss.is_finite() && sg.is_finite()) {
            return Ok(());
        }
        let gamma = ss / -sg;
        self.lambda = b2 * self.lambda + (1.0 - b2) * gamma;
        let estimate = self.lambda / bc2;
        let settled = (estimate - gamma).abs() < self.cfg.tolerance;
        if self.t >= self.cfg.min_steps && estimate > 0.0 && settled {
            self.switch_to_sgd(Switch {
                step: self.t,
                sgd_lr: estimate,
                lr,
            })?;
        }
        Ok(())
    }

    fn switch_to_sgd(&mut self, switch: Switch) -> Result<()> {
        tracing::info!(
            step = switch.step,
            sgd_lr = format!("{:.3e}", switch.sgd_lr),
            "SWATS: switching from Adam to SGD"
        );
        self.buf = self
            .vars
            .iter()
            .map(|(_, v)| Tensor::zeros(v.shape(), DType::F32, v.device()))
            .collect::<Result<_>>()?;
        // why: the moments are never read again; free them.
        (self.m, self.v) = (Vec::new(), Vec::new());
        self.switch = Some(switch);
        Ok(())
    }

    fn sgd_step(&mut self, grads: &[Option<Tensor>], lr: f64, switch: Switch) -> Result<()> {
        let b1 = self.cfg.beta1;
        let scale = (1.0 - b1) * switch.sgd_lr * (lr / switch.lr);
        for (i, g) in grads.iter().enumerate() {
            let Some(g) = g else { continue };
            let (g, p) = self.decayed(i, g)?;
            let b = ((&self.buf[i] * b1)? + g)?;
            self.master.set(i, &self.vars[i].1, (p - (&b * scale)?)?)?;
            self.buf[i] = b.detach();
        }
        Ok(())
    }

    pub(super) fn state(&self) -> Result<StateTensors> {
        let mut out = StateTensors::new(self.t);
        for (i, (name, _)) in self.vars.iter().enumerate() {
            match self.switch {
                None => {
                    out.insert(format!("m.{name}"), self.m[i].clone());
                    out.insert(format!("v.{name}"), self.v[i].clone());
                }
                Some(_) => out.insert(format!("momentum.{name}"), self.buf[i].clone()),
            }
        }
        out.insert_scalar("swats.lambda", self.lambda)?;
        if let Some(s) = self.switch {
            // why f64 scalars: the step count and both lrs come back exactly.
            out.insert_scalar("swats.switch_step", s.step as f64)?;
            out.insert_scalar("swats.sgd_lr", s.sgd_lr)?;
            out.insert_scalar("swats.switch_lr", s.lr)?;
        }
        self.master.save(&self.vars, &mut out);
        Ok(out)
    }

    pub(super) fn load(&mut self, state: &StateTensors) -> Result<()> {
        let switch = if state.contains("swats.switch_step") {
            Some(Switch {
                step: state.scalar("swats.switch_step")? as usize,
                sgd_lr: state.scalar("swats.sgd_lr")?,
                lr: state.scalar("swats.switch_lr")?,
            })
        } else {
            None
        };
        let take_all = |slot: &str| -> Result<Vec<Tensor>> {
            self.vars
                .iter()
                .map(|(name, var)| state.take(&format!("{slot}.{name}"), var))
                .collect()
        };
        let (m, v, buf) = match switch {
            None => (take_all("m")?, take_all("v")?, Vec::new()),
            Some(_) => (Vec::new(), Vec::new(), take_all("momentum")?),
        };
        let lambda = state.scalar("swats.lambda")?;
        self.master.load(&self.vars, state)?;
        (self.m, self.v, self.buf) = (m, v, buf);
        (self.lambda, self.switch, self.t) = (lambda, switch, state.step);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use super::super::test_values::{grad, var};

    fn values(t: &Tensor) -> Result<Vec<f32>> {
        t.flatten_all()?.to_vec1()
    }

    fn close(t: &Tensor, want: &[f32], tol: f32) -> Result<()> {
        let got = values(t)?;
        for (g, w) in got.iter().zip(want) {
            assert!((g - w).abs() < tol, "got {got:?}, want {want:?}");
        }
        Ok(())
    }

    #[test]
    fn adam_phase_matches_the_update_computed_by_hand() -> Result<()> {
        let cfg = SwatsConfig {
            beta1: 0.5,
            beta2: 0.75,
            eps: 1e-8,
            weight_decay: 0.5,
            tolerance: 1e-9,
            min_steps: 2,
        };
        // A matrix, so the L2 term applies.
        let w = var(&[1.0, -2.0], &[1, 2])?;
        let mut opt = Swats::new(cfg, vec![("w".into(), w.clone())])?;
        let lr = 0.1;

        // Step 1: g = [0.5, 1.5] + 0.5·[1, −2] = [1.0, 0.5].
        //   m = 0.5·g = [0.5, 0.25]; v = 0.25·g² = [0.25, 0.0625];
        //   m̂ = m/0.5 = [1, 0.5]; v̂ = v/0.25 = [1, 0.25]; √v̂ = [1, 0.5]; s = −0.1·[1, 1];
        //   w = [0.9, −2.1]. sᵀs = 0.02, −sᵀg = 0.1·(1 + 0.5) = 0.15, γ = 0.13333333;
        //   λ = 0.25·γ = 0.03333333; Λ = λ/0.25 = γ — the criterion holds, but k = 1 < min_steps.
        opt.step(&[grad(&[0.5, 1.5], &[1, 2])?], lr)?;
        close(w.as_tensor(), &[0.9, -2.1], 1e-6)?;
        assert!((opt.lambda - 0.033_333_33).abs() < 1e-7, "λ = {}", opt.lambda);
        assert_eq!(opt.switched(), None, "no switch before min_steps");

        // Step 2: g = [−0.5, 1.0] + 0.5·[0.9, −2.1] = [−0.05, −0.05].
        //   m = 0.5·[0.5, 0.25] + 0.5·g = [0.225, 0.1];
        //   v = 0.75·[0.25, 0.0625] + 0.25·[0.0025, 0.0025] = [0.188125, 0.0475];
        //   m̂ = m/0.75 = [0.3, 0.13333333]; v̂ = v/0.4375 = [0.43, 0.10857143];
        //   √v̂ = [0.65574385, 0.32950179]; m̂/√v̂ = [0.45749570, 0.40465131];
        //   w = [0.9 − 0.04574957, −2.1 − 0.04046513] = [0.85425043, −2.14046513].
        //   sᵀs = 0.00373045, sᵀg = +0.00431074 (Adam's momentum moves against this gradient):
        //   γ = −0.86538607; λ = 0.75·0.03333333 + 0.25·γ = −0.19134652; Λ < 0 → no switch.
        opt.step(&[grad(&[-0.5, 1.0], &[1, 2])?], lr)?;
        close(w.as_tensor(), &[0.854_250_4, -2.140_465_1], 1e-6)?;
        assert!((opt.lambda + 0.191_346_52).abs() < 1e-6, "λ = {}", opt.lambda);
        assert_eq!(opt.switched(), None);
        Ok(())
    }

    #[test]
    fn switches_once_the_projection_settles_and_runs_sgd_at_its_lr() -> Result<()> {
        let cfg = SwatsConfig {
            beta1: 0.9,
            beta2: 0.99,
            eps: 1e-8,
            weight_decay: 0.0,
            // why not 1e-9: f32 rounding moves γ by ~1e-7 of itself (~2e-9 here) from step to step.
            tolerance: 1e-6,
            min_steps: 2,
        };
        let x0 = [1.0f32, -2.0, 0.5];
        let x = var(&x0, &[3])?;
        let mut opt = Swats::new(cfg, vec![("x".into(), x.clone())])?;
        // A constant gradient: m̂ = g and √v̂ = |g| at every step, so each Adam step is
        // s = −lr·sign(g) and γ = lr·n/‖g‖₁ = 0.01·3/1.75 = 0.017142857 at every step: Λ = γ.
        let g = [0.5f32, -0.25, 1.0];
        let lr = 0.01;
        opt.step(&[grad(&g, &[3])?], lr)?;
        assert_eq!(opt.switched(), None, "k = 1 < min_steps");
        opt.step(&[grad(&g, &[3])?], lr)?;
        let switch = opt.switched().expect("the criterion holds at step 2");
        assert_eq!((switch.step, switch.lr), (2, lr));
        assert!(
            (switch.sgd_lr - 0.017_142_857).abs() < 1e-8,
            "Λ = {}",
            switch.sgd_lr
        );
        // Two Adam steps of −lr·sign(g): x = x0 − 0.02·sign(g).
        let x2 = [0.98f32, -1.98, 0.48];
        close(x.as_tensor(), &x2, 1e-6)?;

        // Step 3, SGD at half the schedule's lr: b = g; x ← x − (1−β1)·Λ·(0.005/0.01)·b.
        let lam = switch.sgd_lr as f32;
        let before = values(x.as_tensor())?;
        opt.step(&[grad(&g, &[3])?], lr / 2.0)?;
        let x3: Vec<f32> = (0..3).map(|i| before[i] - 0.1 * lam * 0.5 * g[i]).collect();
        close(x.as_tensor(), &x3, 5e-7)?;
        // Step 4 at the full lr: b = 0.9·g + g = 1.9·g; x ← x − 0.1·Λ·1.9·g.
        let before = values(x.as_tensor())?;
        opt.step(&[grad(&g, &[3])?], lr)?;
        let x4: Vec<f32> = (0..3).map(|i| before[i] - 0.1 * lam * 1.9 * g[i]).collect();
        close(x.as_tensor(), &x4, 5e-7)?;
        assert!(opt.m.is_empty() && opt.v.is_empty(), "Adam moments freed");
        Ok(())
    }

    #[test]
    fn noisy_gradients_do_not_switch_at_the_papers_tolerance() -> Result<()> {
        let cfg = SwatsConfig {
            beta1: 0.9,
            beta2: 0.99,
            eps: 1e-8,
            weight_decay: 0.0,
            tolerance: 1e-9,
            min_steps: 2,
        };
        let x = var(&[1.0, -2.0, 0.5, 0.25], &[4])?;
        let mut opt = Swats::new(cfg, vec![("x".into(), x)])?;
        for k in 0..50 {
            // Deterministic gradients whose signs and sizes change from step to step.
            let g: Vec<f32> = (0..4)
                .map(|i| (((k * 7 + i * 13) % 11) as f32 - 5.0) / 4.0 + 0.1)
                .collect();
            opt.step(&[grad(&g, &[4])?], 1e-3)?;
        }
        assert_eq!(opt.switched(), None);
        Ok(())
    }
}
