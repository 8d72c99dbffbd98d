//! Hand-written parameters and gradients for the optimizers' unit tests.

use candle_core::{Device, Result, Tensor, Var};

/// A CPU variable holding `values` in `shape`.
pub fn var(values: &[f32], shape: &[usize]) -> Result<Var> {
    Var::from_tensor(&Tensor::from_slice(values, shape, &Device::Cpu)?)
}

/// A CPU gradient holding `values` in `shape`.
pub fn grad(values: &[f32], shape: &[usize]) -> Result<Option<Tensor>> {
    Ok(Some(Tensor::from_slice(values, shape, &Device::Cpu)?))
}
