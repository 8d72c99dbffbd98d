//! f32 master copies of half-precision parameters.
//!
//! A bf16/f16 parameter cannot absorb updates much smaller than its own rounding step (bf16 keeps
//! 8 bits of mantissa), so optimizers update an f32 master copy and write its rounded value into
//! the model's variable. f32 parameters are updated in place and have no copy. The copies are
//! part of the optimizer state (`master.<name>`), so a resume is exact for half precision too.

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
                    v.as_tensor().to_dtype(DType::F32).map(Some)
                }
            })
            .collect::<Result<_>>()?;
        Ok(Self { copies })
    }

    /// The f32 value of parameter `i`.
    pub fn get(&self, i: usize, var: &Var) -> Result<Tensor> {
        match &self.copies[i] {
            Some(t) => Ok(t.clone()),
            None => var.as_tensor().to_dtype(DType::F32),
        }
    }

    /// Store the updated f32 value of parameter `i` and write it (rounded) into `var`.
    pub fn set(&mut self, i: usize, var: &Var, p: Tensor) -> Result<()> {
        var.set(&p.to_dtype(var.dtype())?)?;
        if let Some(slot) = self.copies[i].as_mut() {
            *slot = p;
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
                    var.as_tensor().to_dtype(DType::F32)?
                });
            }
        }
        Ok(())
    }
}
