//! SGD with optional momentum and L2 weight decay, PyTorch's formulation (no dampening):
//!
//! ```text
//! g ← g + wd·p                      (decayed parameters only)
//! b ← μ·b + g                       (b starts at 0, so the first step gives b = g)
//! p ← p − lr·b                      (μ = 0: p ← p − lr·g)
//! ```

use candle_core::{DType, Result, Tensor, Var};

use super::{MasterWeights, StateTensors, decays};

/// Hyper-parameters (from the `train:` block).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SgdConfig {
    pub momentum: f64,
    pub weight_decay: f64,
}

pub struct Sgd {
    cfg: SgdConfig,
    vars: Vec<(String, Var)>,
    master: MasterWeights,
    /// Momentum buffers (f32); empty when momentum is 0.
    buf: Vec<Tensor>,
    t: usize,
}

impl Sgd {
    pub fn new(cfg: SgdConfig, vars: Vec<(String, Var)>) -> Result<Self> {
        let buf = if cfg.momentum != 0.0 {
            vars.iter()
                .map(|(_, v)| Tensor::zeros(v.shape(), DType::F32, v.device()))
                .collect::<Result<_>>()?
        } else {
            Vec::new()
        };
        Ok(Self {
            cfg,
            master: MasterWeights::new(&vars)?,
            vars,
            buf,
            t: 0,
        })
    }

    pub fn vars(&self) -> &[(String, Var)] {
        &self.vars
    }

    pub fn steps(&self) -> usize {
        self.t
    }

    /// One update with `grads` aligned to [`Sgd::vars`].
    pub fn step(&mut self, grads: &[Option<Tensor>], lr: f64) -> Result<()> {
        self.t += 1;
        let SgdConfig {
            momentum,
            weight_decay,
        } = self.cfg;
        for (i, ((_, var), g)) in self.vars.iter().zip(grads).enumerate() {
            let Some(g) = g else { continue };
            let p = self.master.get(i, var)?;
            let mut g = g.to_dtype(DType::F32)?;
            if weight_decay != 0.0 && decays(var) {
                g = (g + (&p * weight_decay)?)?;
            }
            let direction = if momentum != 0.0 {
                let b = ((&self.buf[i] * momentum)? + g)?;
                // why detach: state that records a graph keeps every earlier step alive (gradients.rs).
                self.buf[i] = b.detach();
                b
            } else {
                g
            };
            self.master.set(i, var, (p - (direction * lr)?)?)?;
        }
        Ok(())
    }

    pub(super) fn state(&self) -> StateTensors {
        let mut out = StateTensors::new(self.t);
        for (i, (name, _)) in self.vars.iter().enumerate().take(self.buf.len()) {
            out.insert(format!("momentum.{name}"), self.buf[i].clone());
        }
        self.master.save(&self.vars, &mut out);
        out
    }

    pub(super) fn load(&mut self, state: &StateTensors) -> Result<()> {
        if self.cfg.momentum != 0.0 {
            let buf = self
                .vars
                .iter()
                .map(|(name, var)| state.take(&format!("momentum.{name}"), var))
                .collect::<Result<_>>()?;
            self.buf = buf;
        }
        self.master.load(&self.vars, state)?;
        self.t = state.step;
        Ok(())
    }
}
