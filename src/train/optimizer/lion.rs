//! Lion (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms"), the published update:
//!
//! ```text
//! c = β1·m + (1−β1)·g
//! p ← p − lr·( sign(c) + wd·p )      (decay on decayed parameters only)
//! m ← β2·m + (1−β2)·g
//! ```
//! Not the original caramba's variant, which applied β2 to the freshly updated m.

use candle_core::{DType, Result, Tensor, Var};

use super::{MasterWeights, StateTensors, decays};

/// Hyper-parameters (from the `train:` block; Lion's usual betas are [0.9, 0.99]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LionConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub weight_decay: f64,
}

pub struct Lion {
    cfg: LionConfig,
    vars: Vec<(String, Var)>,
    master: MasterWeights,
    m: Vec<Tensor>,
    t: usize,
}

impl Lion {
    pub fn new(cfg: LionConfig, vars: Vec<(String, Var)>) -> Result<Self> {
        let m = vars
            .iter()
            .map(|(_, v)| Tensor::zeros(v.shape(), DType::F32, v.device()))
            .collect::<Result<_>>()?;
        Ok(Self {
            cfg,
            master: MasterWeights::new(&vars)?,
            vars,
            m,
            t: 0,
        })
    }

    pub fn vars(&self) -> &[(String, Var)] {
        &self.vars
    }

    pub fn steps(&self) -> usize {
        self.t
    }

    /// One update with `grads` aligned to [`Lion::vars`].
    pub fn step(&mut self, grads: &[Option<Tensor>], lr: f64) -> Result<()> {
        self.t += 1;
        let LionConfig {
            beta1: b1,
            beta2: b2,
            weight_decay,
        } = self.cfg;
        for (i, ((_, var), g)) in self.vars.iter().zip(grads).enumerate() {
            let Some(g) = g else { continue };
            let g = g.to_dtype(DType::F32)?;
            let p = self.master.get(i, var)?;
            let c = ((&self.m[i] * b1)? + (&g * (1.0 - b1))?)?;
            let mut update = c.sign()?;
            if weight_decay != 0.0 && decays(var) {
                update = (update + (&p * weight_decay)?)?;
            }
            self.master.set(i, var, (p - (update * lr)?)?)?;
            // why detach: state that records a graph keeps every earlier step alive (gradients.rs).
            self.m[i] = ((&self.m[i] * b2)? + (g * (1.0 - b2))?)?.detach();
        }
        Ok(())
    }

    pub(super) fn state(&self) -> StateTensors {
        let mut out = StateTensors::new(self.t);
        for (i, (name, _)) in self.vars.iter().enumerate() {
            out.insert(format!("m.{name}"), self.m[i].clone());
        }
        self.master.save(&self.vars, &mut out);
        out
    }

    pub(super) fn load(&mut self, state: &StateTensors) -> Result<()> {
        self.m = self
            .vars
            .iter()
            .map(|(name, var)| state.take(&format!("m.{name}"), var))
            .collect::<Result<_>>()?;
        self.master.load(&self.vars, state)?;
        self.t = state.step;
        Ok(())
    }
}
