//! AdamW (Loshchilov & Hutter, "Decoupled Weight Decay Regularization"), PyTorch's formulation:
//!
//! ```text
//! m ← β1·m + (1−β1)·g          v ← β2·v + (1−β2)·g²
//! m̂ = m / (1−β1^t)             v̂ = v / (1−β2^t)
//! p ← p − lr·( m̂ / (√v̂ + ε) + wd·p )
//! ```
//! `t` counts steps from 1. Moments are kept in f32 whatever the parameter dtype; the decay term
//! applies to decayed parameters only (see [`super::decays`]).

use candle_core::{DType, Result, Tensor, Var};

use super::{MasterWeights, StateTensors, decays};

/// Hyper-parameters (from the `train:` block).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

pub struct AdamW {
    cfg: AdamWConfig,
    vars: Vec<(String, Var)>,
    master: MasterWeights,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    t: usize,
    /// Use the in-place CPU update where it applies ([`super::adamw_fused`]).
    fused: bool,
}

impl AdamW {
    pub fn new(cfg: AdamWConfig, vars: Vec<(String, Var)>) -> Result<Self> {
        let zeros = |vars: &[(String, Var)]| -> Result<Vec<Tensor>> {
            vars.iter()
                .map(|(_, v)| Tensor::zeros(v.shape(), DType::F32, v.device()))
                .collect()
        };
        Ok(Self {
            cfg,
            m: zeros(&vars)?,
            v: zeros(&vars)?,
            master: MasterWeights::new(&vars)?,
            vars,
            t: 0,
            fused: true,
        })
    }

    /// The candle-ops update everywhere (the fused path's reference in tests).
    #[cfg(test)]
    pub(super) fn unfused(mut self) -> Self {
        self.fused = false;
        self
    }

    pub fn vars(&self) -> &[(String, Var)] {
        &self.vars
    }

    pub fn steps(&self) -> usize {
        self.t
    }

    /// One update with `grads` aligned to [`AdamW::vars`] (`None`: the parameter got no gradient
    /// and is left untouched, moments included).
    pub fn step(&mut self, grads: &[Option<Tensor>], lr: f64) -> Result<()> {
        self.t += 1;
        let AdamWConfig {
            beta1: b1,
            beta2: b2,
            eps,
            weight_decay,
        } = self.cfg;
        let t = self.t as i32;
        let (bc1, bc2) = (1.0 - b1.powi(t), 1.0 - b2.powi(t));
        let grads = grads
            .iter()
            .map(|g| g.as_ref().map(|g| g.to_dtype(DType::F32)).transpose())
            .collect::<Result<Vec<_>>>()?;
        // One set of step constants for the GPU's multi-tensor kernel and the CPU's in-place update.
        let consts = crate::kernels::optimizer::AdamWConsts {
            b1: b1 as f32,
            one_minus_b1: (1.0 - b1) as f32,
            b2: b2 as f32,
            one_minus_b2: (1.0 - b2) as f32,
            inv_bc1: (1.0 / bc1) as f32,
            inv_bc2: (1.0 / bc2) as f32,
            eps: eps as f32,
            lr: lr as f32,
            weight_decay: weight_decay as f32,
        };
        let on_gpu = if self.fused {
            self.step_multi_tensor(&grads, consts)?
        } else {
            vec![false; self.vars.len()]
        };
        for (i, ((_, var), g)) in self.vars.iter().zip(&grads).enumerate() {
            let Some(g) = g else { continue };
            if on_gpu[i] {
                continue;
            }
            if self.fused {
                // In place: the f32 master copy, or the variable itself when it is f32.
                let copy = self.master.copy_of(i);
                let p = copy.clone().unwrap_or_else(|| var.as_tensor().clone());
                if super::adamw_fused::applies(&[&p, g, &self.m[i], &self.v[i]]) {
                    let decay = weight_decay != 0.0 && decays(var);
                    super::adamw_fused::step(&p, g, &self.m[i], &self.v[i], consts, decay)?;
                    if copy.is_some() {
                        var.set(&p.to_dtype(var.dtype())?)?;
                    }
                    continue;
                }
            }
            let p = self.master.get(i, var)?;
            let m = ((&self.m[i] * b1)? + (g * (1.0 - b1))?)?;
            let v = ((&self.v[i] * b2)? + (g.sqr()? * (1.0 - b2))?)?;
            let m_hat = (&m / bc1)?;
            let v_hat = (&v / bc2)?;
            let mut update = (m_hat / (v_hat.sqrt()? + eps)?)?;
            if weight_decay != 0.0 && decays(var) {
                update = (update + (&p * weight_decay)?)?;
            }
            let p = (p - (update * lr)?)?;
            self.master.set(i, var, p)?;
            // why detach: state that records a graph keeps every earlier step alive (gradients.rs).
            self.m[i] = m.detach();
            self.v[i] = v.detach();
        }
        Ok(())
    }

    /// Update every parameter the multi-tensor GPU kernel takes (CUDA, f32 state) in one launch;
    /// returns which ones it updated. The others go through the per-parameter paths.
    fn step_multi_tensor(
        &self,
        grads: &[Option<Tensor>],
        consts: crate::kernels::optimizer::AdamWConsts,
    ) -> Result<Vec<bool>> {
        use crate::kernels::optimizer::{AdamWSlot, adamw_applies, adamw_step};
        let mut taken = vec![false; self.vars.len()];
        if !self.vars.iter().any(|(_, v)| v.device().is_cuda()) {
            return Ok(taken);
        }
        // (the f32 tensor updated in place, the half-precision parameter written after it)
        let targets: Vec<(Tensor, Option<Tensor>)> = self
            .vars
            .iter()
            .enumerate()
            .map(|(i, (_, var))| match self.master.copy_of(i) {
                Some(copy) => (copy, Some(var.as_tensor().clone())),
                None => (var.as_tensor().clone(), None),
            })
            .collect();
        let mut slots = Vec::new();
        for (i, (((_, var), g), (p, out))) in self.vars.iter().zip(grads).zip(&targets).enumerate() {
            let Some(g) = g else { continue };
            let slot = AdamWSlot {
                p,
                g,
                m: &self.m[i],
                v: &self.v[i],
                out: out.as_ref(),
                decay: consts.weight_decay != 0.0 && decays(var),
            };
            if adamw_applies(&slot) {
                taken[i] = true;
                slots.push(slot);
            }
        }
        adamw_step(&slots, consts)?;
        Ok(taken)
    }

    #[cfg(test)]
    pub(super) fn master_copy(&self, i: usize) -> Option<Tensor> {
        self.master.copy_of(i)
    }

    pub(super) fn state(&self) -> StateTensors {
        let mut out = StateTensors::new(self.t);
        for (i, (name, _)) in self.vars.iter().enumerate() {
            out.insert(format!("m.{name}"), self.m[i].clone());
            out.insert(format!("v.{name}"), self.v[i].clone());
        }
        self.master.save(&self.vars, &mut out);
        out
    }

    pub(super) fn load(&mut self, state: &StateTensors) -> Result<()> {
        let mut m = Vec::with_capacity(self.vars.len());
        let mut v = Vec::with_capacity(self.vars.len());
        for (name, var) in &self.vars {
            m.push(state.take(&format!("m.{name}"), var)?);
            v.push(state.take(&format!("v.{name}"), var)?);
        }
        self.master.load(&self.vars, state)?;
        (self.m, self.v, self.t) = (m, v, state.step);
        Ok(())
    }
}
