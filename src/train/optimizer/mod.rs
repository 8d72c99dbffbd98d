//! Optimizers with savable state: AdamW, SGD (momentum), Lion, SWATS (Adam, then SGD), PIDAO —
//! a closed enum built from the `train:` block. Each keeps its own moments (candle's AdamW hides them, so it cannot resume)
//! and saves them by parameter name with its step count.
//!
//! Weight decay applies to parameters of rank ≥ 2 (projection matrices and embeddings), not to
//! norm gains and biases — the GPT-2/nanoGPT/Llama convention.

mod adamw;
mod adamw_fused;
mod lion;
mod master;
mod pidao;
mod sgd;
mod state;
#[cfg(test)]
mod test_values;
mod swats;

use std::path::Path;

use candle_core::{Result, Tensor, Var};

pub use adamw::{AdamW, AdamWConfig};
pub use lion::{Lion, LionConfig};
pub use master::MasterWeights;
pub use pidao::{Pidao, PidaoConfig};
pub use sgd::{Sgd, SgdConfig};
pub use state::StateTensors;
pub use swats::{Swats, SwatsConfig, Switch};

use super::spec::{OptimizerKind, TrainSpec};

/// Whether weight decay applies to `var` (rank ≥ 2).
pub fn decays(var: &Var) -> bool {
    var.rank() >= 2
}

pub enum Optimizer {
    AdamW(AdamW),
    Sgd(Sgd),
    Lion(Lion),
    Swats(Swats),
    Pidao(Pidao),
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
            OptimizerKind::Swats => Self::Swats(Swats::new(
                SwatsConfig {
                    beta1,
                    beta2,
                    eps: spec.eps,
                    weight_decay,
                    tolerance: spec.swats.tolerance,
                    min_steps: spec.swats.min_steps,
                },
                vars,
            )?),
            OptimizerKind::Pidao => Self::Pidao(Pidao::new(
                PidaoConfig {
                    kp: spec.pid.kp,
                    ki: spec.pid.ki,
                    kd: spec.pid.kd,
                    integral_clip: spec.pid.integral_clip,
                    derivative_ema: spec.pid.derivative_ema,
                    weight_decay,
                },
                vars,
            )?),
        })
    }

    /// `adamw`, `sgd`, `lion`, `swats` or `pidao` (as in the manifest and the state file's
    /// metadata).
    pub fn kind(&self) -> &'static str {
        match self {
            Self::AdamW(_) => "adamw",
            Self::Sgd(_) => "sgd",
            Self::Lion(_) => "lion",
            Self::Swats(_) => "swats",
            Self::Pidao(_) => "pidao",
        }
    }

    /// The parameters, in the order `step` expects their gradients.
    pub fn vars(&self) -> &[(String, Var)] {
        match self {
            Self::AdamW(o) => o.vars(),
            Self::Sgd(o) => o.vars(),
            Self::Lion(o) => o.vars(),
            Self::Swats(o) => o.vars(),
            Self::Pidao(o) => o.vars(),
        }
    }

    /// Steps taken (restored by [`Optimizer::load`]).
    pub fn steps(&self) -> usize {
        match self {
            Self::AdamW(o) => o.steps(),
            Self::Sgd(o) => o.steps(),
            Self::Lion(o) => o.steps(),
            Self::Swats(o) => o.steps(),
            Self::Pidao(o) => o.steps(),
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
            Self::Swats(o) => o.step(grads, lr),
            Self::Pidao(o) => o.step(grads, lr),
        }
    }

    /// The state: moments by parameter name and the step count (sharing the live tensors).
    fn state(&self) -> Result<StateTensors> {
        Ok(match self {
            Self::AdamW(o) => o.state(),
            Self::Sgd(o) => o.state(),
            Self::Lion(o) => o.state(),
            Self::Swats(o) => o.state()?,
            Self::Pidao(o) => o.state(),
        })
    }

    /// Save the state (moments by parameter name, step count) to a safetensors file.
    pub fn save(&self, path: &Path) -> Result<()> {
        self.state()?.save(self.kind(), path)
    }

    /// A copy of the state in memory that later steps do not change.
    pub fn snapshot(&self) -> Result<StateTensors> {
        self.state()?.deep_copy()
    }

    /// Continue from a [`Optimizer::snapshot`] (of an optimizer of the same kind); the snapshot
    /// stays as it was.
    pub fn restore(&mut self, saved: &StateTensors) -> Result<()> {
        self.load_state(&saved.deep_copy()?)
    }

    /// Take `state` (already checked to be of this kind) into the optimizer.
    fn load_state(&mut self, state: &StateTensors) -> Result<()> {
        match self {
            Self::AdamW(o) => o.load(state),
            Self::Sgd(o) => o.load(state),
            Self::Lion(o) => o.load(state),
            Self::Swats(o) => o.load(state),
            Self::Pidao(o) => o.load(state),
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
        self.load_state(&state)
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device, Tensor, Var};

    use super::*;

    /// A matrix (decayed), a vector (not decayed) and a bf16 matrix (an f32 master copy).
    fn vars() -> Result<Vec<(String, Var)>> {
        [
            ("a.w", vec![3, 4], DType::F32),
            ("b.bias", vec![4], DType::F32),
            ("c.half", vec![2, 3], DType::BF16),
        ]
        .into_iter()
        .enumerate()
        .map(|(k, (n, shape, dtype))| {
            let len: usize = shape.iter().product();
            let data: Vec<f32> = (0..len)
                .map(|i| ((i * 5 + k * 3) % 7) as f32 / 7.0 - 0.4)
                .collect();
            let t = Tensor::from_vec(data, shape, &Device::Cpu)?.to_dtype(dtype)?;
            Ok((n.to_string(), Var::from_tensor(&t)?))
        })
        .collect()
    }

    fn copy(vs: &[(String, Var)]) -> Result<Vec<(String, Var)>> {
        vs.iter()
            .map(|(n, v)| Ok((n.clone(), Var::from_tensor(&v.as_tensor().copy()?)?)))
            .collect()
    }

    /// Fixed, varied gradients for step `k` (never all zero; signs change between steps).
    fn grads(vs: &[(String, Var)], k: usize) -> Result<Vec<Option<Tensor>>> {
        vs.iter()
            .enumerate()
            .map(|(j, (_, v))| {
                let data: Vec<f32> = (0..v.elem_count())
                    .map(|i| (((i * 7 + j * 11 + k * 13) % 17) as f32 - 8.0) / 9.0 + 0.05)
                    .collect();
                Ok(Some(Tensor::from_vec(data, v.shape(), &Device::Cpu)?))
            })
            .collect()
    }

    fn bits(vs: &[(String, Var)]) -> Result<Vec<Vec<u32>>> {
        vs.iter()
            .map(|(_, v)| {
                let x: Vec<f32> = v.as_tensor().to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
                Ok(x.iter().map(|f| f.to_bits()).collect())
            })
            .collect()
    }

    /// Train 6 steps straight through, and 6 steps with a save after `cut` and a load into a
    /// fresh optimizer over copies of the weights: the weights agree to the bit.
    fn resumes_bit_identically(spec: &TrainSpec, cut: usize) -> Result<()> {
        let lr = |k: usize| 1e-2 / (1 + k) as f64;
        let straight = vars()?;
        let mut a = Optimizer::new(spec, straight.clone())?;
        for k in 0..6 {
            a.step(&grads(&straight, k)?, lr(k))?;
        }
        let first = vars()?;
        let mut b = Optimizer::new(spec, first.clone())?;
        for k in 0..cut {
            b.step(&grads(&first, k)?, lr(k))?;
        }
        let dir = tempfile::tempdir().map_err(candle_core::Error::wrap)?;
        let path = dir.path().join("optimizer.safetensors");
        b.save(&path)?;
        let resumed = copy(&first)?;
        let mut c = Optimizer::new(spec, resumed.clone())?;
        c.load(&path)?;
        assert_eq!(c.steps(), cut);
        for k in cut..6 {
            c.step(&grads(&resumed, k)?, lr(k))?;
        }
        assert_eq!(
            bits(&straight)?,
            bits(&resumed)?,
            "{} resumed after step {cut}",
            a.kind()
        );
        Ok(())
    }

    #[test]
    fn every_optimizer_resumes_bit_identically() -> Result<()> {
        for optimizer in [
            OptimizerKind::Adamw,
            OptimizerKind::Sgd,
            OptimizerKind::Lion,
            OptimizerKind::Swats,
            OptimizerKind::Pidao,
        ] {
            let spec = TrainSpec {
                optimizer,
                ..TrainSpec::default()
            };
            resumes_bit_identically(&spec, 1)?;
            resumes_bit_identically(&spec, 3)?;
        }
        Ok(())
    }

    #[test]
    fn swats_resumes_bit_identically_across_its_switch() -> Result<()> {
        // A tolerance no |Λ − γ| exceeds: the switch happens at `min_steps` (3), so cuts after
        // steps 2, 3 and 4 resume before the switch, at it, and in the SGD phase.
        let mut spec = TrainSpec {
            optimizer: OptimizerKind::Swats,
            ..TrainSpec::default()
        };
        spec.swats.tolerance = 1e9;
        spec.swats.min_steps = 3;
        let mut probe = Swats::new(
            SwatsConfig {
                beta1: spec.betas[0],
                beta2: spec.betas[1],
                eps: spec.eps,
                weight_decay: spec.weight_decay,
                tolerance: spec.swats.tolerance,
                min_steps: spec.swats.min_steps,
            },
            vars()?,
        )?;
        let vs = probe.vars().to_vec();
        for k in 0..3 {
            probe.step(&grads(&vs, k)?, 1e-2 / (1 + k) as f64)?;
        }
        assert_eq!(
            probe.switched().map(|s| s.step),
            Some(3),
            "the switch is inside the run"
        );
        for cut in [2, 3, 4] {
            resumes_bit_identically(&spec, cut)?;
        }
        Ok(())
    }

    #[test]
    fn a_state_file_of_another_kind_is_refused() -> Result<()> {
        let spec = |optimizer| TrainSpec {
            optimizer,
            ..TrainSpec::default()
        };
        let vs = vars()?;
        let mut pid = Optimizer::new(&spec(OptimizerKind::Pidao), vs.clone())?;
        pid.step(&grads(&vs, 0)?, 1e-3)?;
        let dir = tempfile::tempdir().map_err(candle_core::Error::wrap)?;
        let path = dir.path().join("optimizer.safetensors");
        pid.save(&path)?;
        let mut swats = Optimizer::new(&spec(OptimizerKind::Swats), vs)?;
        let err = swats.load(&path).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("pidao state"), "{err}");
        Ok(())
    }
}
