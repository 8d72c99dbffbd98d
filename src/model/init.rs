//! Seeded weight initialisation.
//!
//! candle cannot seed its CPU RNG, so fresh parameters are drawn here from ChaCha8 seeded by
//! (run seed, parameter path): the same manifest and seed give bit-identical weights, and adding a
//! layer does not shift the weights of the others.

use std::collections::HashMap;

use candle_core::{DType, Device, Result, Shape, Tensor, Var};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder, VarMap};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Normal};

/// A [`VarMap`] whose missing variables are created from a seeded RNG.
#[derive(Clone)]
pub struct SeededVarMap {
    pub varmap: VarMap,
    seed: u64,
}

impl SeededVarMap {
    pub fn new(seed: u64) -> Self {
        Self {
            varmap: VarMap::new(),
            seed,
        }
    }

    /// A var builder that creates (or reuses) trainable variables in this map.
    pub fn var_builder(&self, dtype: DType, device: &Device) -> VarBuilder<'static> {
        VarBuilder::from_backend(Box::new(self.clone()), dtype, device.clone())
    }

    /// All variables by name, sorted (stable order for optimizers and checkpoints).
    pub fn named_vars(&self) -> Vec<(String, Var)> {
        let data = self.varmap.data().lock().expect("var map lock poisoned");
        let mut vars: Vec<_> = data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        vars
    }

    /// Set variable `name` to `value`, creating it if absent (surgery writes weights before the
    /// student is built, so the build picks them up instead of drawing fresh ones).
    pub fn set(&self, name: &str, value: &Tensor) -> Result<()> {
        let mut data = self.varmap.data().lock().expect("var map lock poisoned");
        match data.get(name) {
            Some(var) if var.shape() == value.shape() => {
                var.set(&value.to_dtype(var.dtype())?.to_device(var.device())?)
            }
            Some(var) => candle_core::bail!(
                "variable `{name}` has shape {:?}, cannot set a tensor of shape {:?}",
                var.dims(),
                value.dims()
            ),
            None => {
                data.insert(name.to_string(), Var::from_tensor(value)?);
                Ok(())
            }
        }
    }

    /// Overwrite variables from `tensors` (a checkpoint); every variable must be present.
    pub fn assign_all(&self, tensors: &HashMap<String, Tensor>) -> Result<()> {
        for (name, var) in self.named_vars() {
            let Some(t) = tensors.get(&name) else {
                if is_buffer(&name) {
                    // why: buffers are rebuilt by whoever built the model (surgery), not trained.
                    continue;
                }
                candle_core::bail!("checkpoint has no tensor `{name}`");
            };
            if t.shape() != var.shape() {
                candle_core::bail!(
                    "checkpoint tensor `{name}` has shape {:?}, the model expects {:?}",
                    t.dims(),
                    var.dims()
                );
            }
            var.set(&t.to_dtype(var.dtype())?.to_device(var.device())?)?;
        }
        Ok(())
    }
}

impl SimpleBackend for SeededVarMap {
    fn get(&self, s: Shape, name: &str, h: Init, dtype: DType, dev: &Device) -> Result<Tensor> {
        let mut data = self.varmap.data().lock().expect("var map lock poisoned");
        if let Some(var) = data.get(name) {
            if var.shape() != &s {
                candle_core::bail!(
                    "variable `{name}` exists with shape {:?}, requested {:?}",
                    var.dims(),
                    s.dims()
                );
            }
            return Ok(var.as_tensor().clone());
        }
        let values = sample(&s, h, seed_for(self.seed, name));
        let t = Tensor::from_vec(values, s, &Device::Cpu)?
            .to_dtype(dtype)?
            .to_device(dev)?;
        let var = Var::from_tensor(&t)?;
        let out = var.as_tensor().clone();
        data.insert(name.to_string(), var);
        Ok(out)
    }

    fn get_unchecked(&self, name: &str, _dtype: DType, _dev: &Device) -> Result<Tensor> {
        let data = self.varmap.data().lock().expect("var map lock poisoned");
        match data.get(name) {
            Some(v) => Ok(v.as_tensor().clone()),
            None => candle_core::bail!("no variable `{name}` and no shape to create it"),
        }
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.varmap
            .data()
            .lock()
            .expect("var map lock poisoned")
            .contains_key(name)
    }
}

/// FNV-1a over the seed and the path: stable across platforms and Rust versions.
pub fn seed_for(seed: u64, path: &str) -> u64 {
    // why: no `^ seed` here: xor-ing the seed into the basis cancelled against its first byte, so
    // every seed below 256 gave the same weights.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in seed.to_le_bytes().iter().chain(path.as_bytes()) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

fn sample(s: &Shape, h: Init, seed: u64) -> Vec<f32> {
    let n = s.elem_count();
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let normal = |rng: &mut ChaCha8Rng, mean: f64, std: f64| {
        let d = Normal::new(mean, std.max(f64::MIN_POSITIVE)).expect("finite std");
        (0..n).map(|_| d.sample(rng) as f32).collect::<Vec<_>>()
    };
    match h {
        Init::Const(c) => vec![c as f32; n],
        Init::Randn { mean, stdev } => normal(&mut rng, mean, stdev),
        Init::Uniform { lo, up } => (0..n).map(|_| rng.random_range(lo..up) as f32).collect(),
        Init::Kaiming {
            dist,
            fan,
            non_linearity,
        } => {
            let fan = fan.for_shape(s).max(1) as f64;
            let std = non_linearity.gain() / fan.sqrt();
            match dist {
                candle_nn::init::NormalOrUniform::Normal => normal(&mut rng, 0.0, std),
                candle_nn::init::NormalOrUniform::Uniform => {
                    let bound = 3f64.sqrt() * std;
                    (0..n).map(|_| rng.random_range(-bound..bound) as f32).collect()
                }
            }
        }
    }
}

/// Whether a variable is a fixed buffer (not trained), e.g. surgery's per-head RoPE frequencies.
pub fn is_buffer(name: &str) -> bool {
    name.ends_with(crate::layer::decoupled::GEO_INV_FREQ)
}

#[cfg(test)]
mod seed_tests {
    #[test]
    fn small_seeds_give_distinct_streams() {
        let seeds: std::collections::HashSet<u64> = (0..1000).map(|s| super::seed_for(s, "w")).collect();
        assert_eq!(seeds.len(), 1000);
    }
}
