//! Gradients out of a backward pass, detached from the graph that produced them.
//!
//! candle's backward detaches the gradient of every inner node before using it, but hands back a
//! variable's gradient as computed. When a variable enters an op directly and that op's backward
//! uses the forward's tensors (RMSNorm's weight in its fused op: dw = Σ dy ⊙ x̂), the gradient
//! records a graph that reaches every activation of the step. Anything that keeps a tensor
//! derived from it (an optimizer's moments, an accumulator of micro-batches) keeps the whole step
//! alive, and the next step's moments keep that one: memory grows by a step's activations per
//! step until the device runs out (the H100 training runs of 2026-12-06, ~0.93 GB a step at
//! 1 × 512). Detaching shares the storage and drops the graph, so a step's activations die with
//! its gradient store.

use candle_core::backprop::GradStore;
use candle_core::{DType, Result, Tensor, Var};

/// The f32 gradient of each of `vars` in `store` (`None`: the variable got none), detached.
pub fn detached_f32(store: &GradStore, vars: &[(String, Var)]) -> Result<Vec<Option<Tensor>>> {
    vars.iter()
        .map(|(_, var)| {
            store
                .get(var.as_tensor())
                .map(|g| g.detach().to_dtype(DType::F32))
                .transpose()
        })
        .collect()
}

/// Add `more` (detached f32 gradients of another micro-batch) into `acc`, slot by slot.
pub fn accumulate(acc: &mut [Option<Tensor>], more: Vec<Option<Tensor>>) -> Result<()> {
    for (slot, g) in acc.iter_mut().zip(more) {
        if let Some(g) = g {
            *slot = Some(match slot.take() {
                Some(a) => (a + g)?,
                None => g,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn gathered_gradients_record_no_graph() -> Result<()> {
        let dev = Device::Cpu;
        // `w` enters an op directly (as RMSNorm's weight enters its fused op): its gradient is
        // dy ⊙ h with h an activation of the graph, and candle hands it back as computed.
        let w1 = Var::from_tensor(&Tensor::randn(0f32, 1.0, (6, 7), &dev)?)?;
        let w = Var::from_tensor(&Tensor::randn(0f32, 1.0, (3, 6), &dev)?)?;
        let x = Tensor::randn(0f32, 1.0, (3, 7), &dev)?;
        let h = x.matmul(&w1.as_tensor().t()?)?.tanh()?;
        let hidden = h.mul(w.as_tensor())?.tanh()?;
        let store = hidden.sqr()?.sum_all()?.backward()?;
        let raw = store.get(w.as_tensor()).expect("a gradient");
        assert!(
            raw.track_op(),
            "candle's variable gradient no longer records a graph: this module may be unneeded"
        );
        let vars = vec![("w".to_string(), w.clone())];
        let mut acc = detached_f32(&store, &vars)?;
        accumulate(&mut acc, detached_f32(&store, &vars)?)?;
        let g = acc[0].as_ref().expect("gathered");
        assert!(!g.track_op(), "a gathered gradient records a graph");
        let want = (raw * 2.0)?.flatten_all()?.to_vec1::<f32>()?;
        assert_eq!(g.flatten_all()?.to_vec1::<f32>()?, want);
        Ok(())
    }
}
