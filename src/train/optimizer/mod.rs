//! Optimizers with savable state: AdamW, SGD (momentum), Lion — a closed enum built from the
//! `train:` block. Each keeps its own moments (candle's AdamW hides them, so it cannot resume)
//! and saves them by parameter name with its step count.
//!
//! Weight decay applies to parameters of rank ≥ 2 (projection matrices and embeddings), not to
//! norm gains and biases — the GPT-2/nanoGPT/Llama convention.

mod adamw;
mod adamw_fused;
mod lion;
mod master;
mod sgd;
mod state;

use std::path::Path;

use candle_core::{Result, Tensor, Var};

pub use adamw::{AdamW, AdamWConfig};
pub use lion::{Lion, LionConfig};
pub use master::MasterWeights;
pub use sgd::{Sgd, SgdConfig};
pub use state::StateTensors;

use super::spec::{OptimizerKind, TrainSpec};

/// Whether weight decay applies to `var` (rank ≥ 2).
pub fn decays(var: &Var) -> bool {
    var.rank() >= 2
}

pub enum Optimizer {
    AdamW(AdamW),
    Sgd(Sgd),
    Lion(Lion),
}

impl Optimizer {
    /// The optimizer `spec.optimizer` over `vars` (name-sorted, as `SeededVarMap::named_vars`).
    pub fn new(spec: &TrainSpec, vars: Vec<(String, Var)>) -> Result<Self> {
        let [beta1, beta2] = spec.betas;
        let weight_decay = spec.weight_decay;
        Ok(match spec.optimizer {
            OptimizerKind::Adamw => Self::AdamW(AdamW::new(
                AdamWConfig {
                    beta1,
                    beta2,
                    eps: spec.eps,
                    weight_decay,
                },
                vars,
            )?),
            OptimizerKind::Sgd => Self::Sgd(Sgd::new(
                SgdConfig {
                    momentum: spec.momentum,
                    weight_decay,
                },
                vars,
            )?),
            OptimizerKind::Lion => Self::Lion(Lion::new(
                LionConfig {
                    beta1,
                    beta2,
                    weight_decay,
                },
                vars,
            )?),
        })
    }

    /// `adamw`, `sgd` or `lion` (as in the manifest and the state file's metadata).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::AdamW(_) => "adamw",
            Self::Sgd(_) => "sgd",
            Self::Lion(_) => "lion",
        }
    }

    /// The parameters, in the order `step` expects their gradients.
    pub fn vars(&self) -> &[(String, Var)] {
        match self {
            Self::AdamW(o) => o.vars(),
            Self::Sgd(o) => o.vars(),
            Self::Lion(o) => o.vars(),
        }
    }

    /// Steps taken (restored by [`Optimizer::load`]).
    pub fn steps(&self) -> usize {
        match self {
            Self::AdamW(o) => o.steps(),
            Self::Sgd(o) => o.steps(),
            Self::Lion(o) => o.steps(),
        }
    }

    /// One update at learning rate `lr`; `grads[i]` belongs to `vars()[i]` (`None`: no gradient).
    pub fn step(&mut self, grads: &[Option<Tensor>], lr: f64) -> Result<()> {
        if grads.len() != self.vars().len() {
            candle_core::bail!("{} gradients for {} parameters", grads.len(), self.vars().len());
        }
        match self {
            Self::AdamW(o) => o.step(grads, lr),
            Self::Sgd(o) => o.step(grads, lr),
            Self::Lion(o) => o.step(grads, lr),
        }
    }

    /// The state: moments by parameter name and the step count (sharing the live tensors).
    fn state(&self) -> StateTensors {
        match self {
            Self::AdamW(o) => o.state(),
            Self::Sgd(o) => o.state(),
            Self::Lion(o) => o.state(),
        }
    }

    /// Save the state (moments by parameter name, step count) to a safetensors file.
    pub fn save(&self, path: &Path) -> Result<()> {
        self.state().save(self.kind(), path)
    }

    /// A copy of the state in memory that later steps do not change.
    pub fn snapshot(&self) -> Result<StateTensors> {
        self.state().deep_copy()
    }

    /// Continue from a [`Optimizer::snapshot`] (of an optimizer of the same kind); the snapshot
    /// stays as it was.
    pub fn restore(&mut self, saved: &StateTensors) -> Result<()> {
        let state = saved.deep_copy()?;
        match self {
            Self::AdamW(o) => o.load(&state),
            Self::Sgd(o) => o.load(&state),
            Self::Lion(o) => o.load(&state),
        }
    }

    /// Restore the state saved by [`Optimizer::save`]; the kind and every tensor must match.
    pub fn load(&mut self, path: &Path) -> Result<()> {
        let device = match self.vars().first() {
            Some((_, v)) => v.device().clone(),
            None => candle_core::Device::Cpu,
        };
        let (kind, state) = StateTensors::load(path, &device)?;
        if kind != self.kind() {
            candle_core::bail!(
                "{} holds {kind} state, the run uses {}",
                path.display(),
                self.kind()
            );
        }
        match self {
            Self::AdamW(o) => o.load(&state),
            Self::Sgd(o) => o.load(&state),
            Self::Lion(o) => o.load(&state),
        }
    }
}
