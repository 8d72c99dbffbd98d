//! f32 master copies of half-precision parameters.
//!
//! A bf16/f16 parameter cannot absorb updates much smaller than its own rounding step (bf16 keeps
//! 8 bits of mantissa), so optimizers update an f32 master copy and write its rounded value into
//! the model's variable. f32 parameters are updated in place and have no copy. The copies are
//! part of the optimizer state (`master.<name>`), so a resume is exact for half precision too.
//!
//! Every copy is detached: a copy converted from a `Var` would otherwise record that conversion,
//! and each update `p − lr·u` would chain onto the previous copy — a graph holding every earlier
//! master copy alive (on a GPU, a bf16 run grew by hundreds of MB a step until out of memory).

use candle_core::{DType, Result, Tensor, Var};

use super::StateTensors;

#[derive(Default)]
pub struct MasterWeights {
    /// One slot per parameter; `Some` for parameters stored in a half-precision dtype.
    copies: Vec<Option<Tensor>>,
}

impl MasterWeights {
    pub fn new(vars: &[(String, Var)]) -> Result<Self> {
        let copies = vars
            .iter()
            .map(|(_, v)| {
                if v.dtype() == DType::F32 {
                    Ok(None)
                } else {
                    v.as_tensor().detach().to_dtype(DType::F32).map(Some)
                }
            })
            .collect::<Result<_>>()?;
        Ok(Self { copies })
    }

    /// The f32 value of parameter `i`.
    pub fn get(&self, i: usize, var: &Var) -> Result<Tensor> {
        match &self.copies[i] {
            Some(t) => Ok(t.clone()),
            None => var.as_tensor().detach().to_dtype(DType::F32),
        }
    }

    /// The f32 copy of parameter `i` (sharing its storage: an in-place update changes the copy),
    /// or `None` for an f32 parameter.
    pub(super) fn copy_of(&self, i: usize) -> Option<Tensor> {
        self.copies[i].clone()
    }

    /// Store the updated f32 value of parameter `i` and write it (rounded) into `var`.
    pub fn set(&mut self, i: usize, var: &Var, p: Tensor) -> Result<()> {
        var.set(&p.to_dtype(var.dtype())?)?;
        if let Some(slot) = self.copies[i].as_mut() {
            *slot = p.detach();
        }
        Ok(())
    }

    pub fn save(&self, vars: &[(String, Var)], out: &mut StateTensors) {
        for ((name, _), copy) in vars.iter().zip(&self.copies) {
            if let Some(t) = copy {
                out.insert(format!("master.{name}"), t.clone());
            }
        }
    }

    /// Restore the copies; a missing copy is rebuilt from the (already loaded) variable.
    pub fn load(&mut self, vars: &[(String, Var)], state: &StateTensors) -> Result<()> {
        for ((name, var), copy) in vars.iter().zip(self.copies.iter_mut()) {
            if copy.is_some() {
                let key = format!("master.{name}");
                *copy = Some(if state.contains(&key) {
                    state.take(&key, var)?
                } else {
                    var.as_tensor().detach().to_dtype(DType::F32)?
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::optimizer::adamw::{AdamW, AdamWConfig};
    use candle_core::Device;

    #[test]
    fn master_copies_never_record_a_graph() -> Result<()> {
        let var = Var::from_tensor(&Tensor::randn(0f32, 1.0, (8, 16), &Device::Cpu)?.to_dtype(DType::BF16)?)?;
        let cfg = AdamWConfig {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.1,
        };
        let mut opt = AdamW::new(cfg, vec![("w".into(), var.clone())])?;
        for _ in 0..3 {
            let g = Tensor::randn(0f32, 1.0, (8, 16), &Device::Cpu)?;
            opt.step(&[Some(g)], 1e-2)?;
            let copy = opt.master_copy(0).expect("a bf16 parameter has a master copy");
            assert!(
                !copy.track_op(),
                "the master copy records a graph: every step would keep the last one alive"
            );
        }
        Ok(())
    }
}
