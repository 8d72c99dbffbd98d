//! Optimizer state as named tensors plus a step count, saved to one safetensors file whose
//! metadata records the optimizer kind and step (`{"optimizer": "adamw", "step": "123"}`).
//! Tensor names are `<slot>.<parameter name>` (`m.topology.layers.0.q_proj.weight`).

use std::collections::HashMap;
use std::path::Path;

use candle_core::{Device, Result, Tensor, Var};

/// Named state tensors of an optimizer and the number of steps it has taken.
pub struct StateTensors {
    pub step: usize,
    tensors: HashMap<String, Tensor>,
}

impl StateTensors {
    pub fn new(step: usize) -> Self {
        Self {
            step,
            tensors: HashMap::new(),
        }
    }

    pub fn insert(&mut self, name: String, t: Tensor) {
        self.tensors.insert(name, t);
    }

    #[cfg(test)]
    pub fn tensors(&self) -> &HashMap<String, Tensor> {
        &self.tensors
    }

    /// Store the scalar `x` as a one-element f64 tensor, so it saves and loads exactly.
    pub fn insert_scalar(&mut self, name: &str, x: f64) -> Result<()> {
        self.tensors
            .insert(name.to_string(), Tensor::new(&[x], &Device::Cpu)?);
        Ok(())
    }

    /// The scalar stored by [`StateTensors::insert_scalar`] under `name`.
    pub fn scalar(&self, name: &str) -> Result<f64> {
        let Some(t) = self.tensors.get(name) else {
            candle_core::bail!("optimizer state has no scalar `{name}`");
        };
        match t
            .to_dtype(candle_core::DType::F64)?
            .flatten_all()?
            .to_vec1::<f64>()?[..]
        {
            [x] => Ok(x),
            _ => candle_core::bail!("optimizer state `{name}` is not a scalar: shape {:?}", t.dims()),
        }
    }

    /// Every tensor name, sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.tensors.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }

    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }

    /// A copy that shares no storage with this one (optimizers update their moments in place).
    pub fn deep_copy(&self) -> Result<Self> {
        let tensors = self
            .tensors
            .iter()
            .map(|(k, t)| Ok((k.clone(), t.copy()?)))
            .collect::<Result<HashMap<_, _>>>()?;
        Ok(Self {
            step: self.step,
            tensors,
        })
    }

    /// The state tensor `name` for parameter `var`: present, same shape, f32 on the var's device.
    pub fn take(&self, name: &str, var: &Var) -> Result<Tensor> {
        let Some(t) = self.tensors.get(name) else {
            candle_core::bail!("optimizer state has no tensor `{name}`");
        };
        if t.shape() != var.shape() {
            candle_core::bail!(
                "optimizer state `{name}` has shape {:?}, the parameter has {:?}",
                t.dims(),
                var.dims()
            );
        }
        t.to_dtype(candle_core::DType::F32)?.to_device(var.device())
    }

    /// Write to `path` with the optimizer `kind` in the metadata.
    pub fn save(&self, kind: &str, path: &Path) -> Result<()> {
        let meta = HashMap::from([
            ("optimizer".to_string(), kind.to_string()),
            ("step".into(), self.step.to_string()),
        ]);
        let mut entries: Vec<(&String, &Tensor)> = self.tensors.iter().collect();
        entries.sort_by(|a, b| a.0.cmp(b.0));
        safetensors::serialize_to_file(entries, Some(meta), path)
            .map_err(|e| candle_core::Error::Msg(format!("writing {}: {e}", path.display())))
    }

    /// Read a file written by [`StateTensors::save`]; returns its optimizer kind too.
    pub fn load(path: &Path, device: &Device) -> Result<(String, Self)> {
        let bytes = std::fs::read(path)
            .map_err(|e| candle_core::Error::Msg(format!("reading {}: {e}", path.display())))?;
        let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)
            .map_err(|e| candle_core::Error::Msg(format!("{}: {e}", path.display())))?;
        let meta = header.metadata().clone().unwrap_or_default();
        let (Some(kind), Some(step)) = (
            meta.get("optimizer"),
            meta.get("step").and_then(|s| s.parse().ok()),
        ) else {
            candle_core::bail!("{} has no optimizer/step metadata", path.display());
        };
        let tensors = candle_core::safetensors::load_buffer(&bytes, device)?;
        Ok((kind.clone(), Self { step, tensors }))
    }
}
