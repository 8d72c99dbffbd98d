//! Embedding lookup with a hand-written backward: rows = table[ids], d table = Σ of the rows'
//! gradients per id. The forward is candle's `index_select`; the backward is one kernel on CUDA
//! (`kernels::embedding`: deterministic, no zero fill) and candle's zeros + `index_add`
//! elsewhere, which is also what candle's own autograd of `index_select` runs. The ids take no
//! gradient.

use std::sync::Arc;

use candle_core::{CpuStorage, CustomOp2, DType, Layout, Result, Shape, Tensor};

use super::closed_form::on_cpu;

/// table (vocab, d) looked up at `ids` (any shape, u32/u8/i64): (…ids, d); differentiable in the
/// table.
pub fn lookup(table: &Tensor, ids: &Tensor) -> Result<Tensor> {
    let (_, d) = table.dims2()?;
    let mut dims = ids.dims().to_vec();
    dims.push(d);
    let flat = ids.flatten_all()?.contiguous()?;
    let table = table.contiguous()?;
    if table.device().is_metal() {
        return table.index_select(&flat, 0)?.reshape(dims);
    }
    let rows = table.detach().index_select(&flat.detach(), 0)?;
    table
        .track_op2_arc(&flat, &rows, Arc::new(Box::new(Lookup)))
        .reshape(dims)
}

/// The table's gradient (vocab, d) from the flat ids (n) and the rows' gradient (n, d).
fn table_grad(vocab: usize, ids: &Tensor, grad: &Tensor) -> Result<Tensor> {
    if let Some(dw) = crate::kernels::embedding::backward(ids, grad, vocab)? {
        return Ok(dw);
    }
    let d = grad.dim(1)?;
    Tensor::zeros((vocab, d), grad.dtype(), grad.device())?.index_add(ids, grad, 0)
}

struct Lookup;

impl CustomOp2 for Lookup {
    fn name(&self) -> &'static str {
        "embedding-lookup-with-grad"
    }

    /// Only for `apply_op2` callers: [`lookup`] records a forward it ran itself.
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        on_cpu(self.name(), &[(s1, l1), (s2, l2)], |x| {
            x[0].index_select(&x[1], 0)
        })
    }

    fn bwd(
        &self,
        table: &Tensor,
        ids: &Tensor,
        _rows: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let vocab = table.dim(0)?;
        let ids = if ids.dtype() == DType::U32 {
            ids.clone()
        } else {
            ids.to_dtype(DType::U32)?
        };
        let grad = grad.to_dtype(table.dtype())?.contiguous()?;
        Ok((Some(table_grad(vocab, &ids, &grad)?), None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Module, Var};

    #[test]
    fn lookup_matches_index_select_forward_and_backward() -> Result<()> {
        let dev = Device::Cpu;
        let (vocab, d) = (11, 7);
        let table = Var::from_tensor(&Tensor::randn(0f32, 1.0, (vocab, d), &dev)?)?;
        // Repeated ids (accumulation), unused rows (zero gradient), a 2-D batch.
        let ids = Tensor::new(&[[3u32, 0, 3, 10], [7, 3, 0, 1]], &dev)?;
        let w = Tensor::randn(0f32, 1.0, (2, 4, d), &dev)?;
        let ours = lookup(table.as_tensor(), &ids)?;
        let theirs = candle_nn::Embedding::new(table.as_tensor().clone(), d).forward(&ids)?;
        assert_eq!(ours.dims(), &[2, 4, d]);
        let diff = (&ours - &theirs)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert_eq!(diff, 0.0);
        let g1 = (&ours * &w)?.sum_all()?.backward()?;
        let g2 = (&theirs * &w)?.sum_all()?.backward()?;
        let (Some(a), Some(b)) = (g1.get(table.as_tensor()), g2.get(table.as_tensor())) else {
            panic!("a missing table gradient");
        };
        let diff = (a - b)?.abs()?.max_all()?.to_scalar::<f32>()?;
        assert!(diff < 1e-6, "table gradient differs by {diff}");
        // Row 2 is never looked up: its gradient is exactly zero.
        let row2 = a.get(2)?.abs()?.sum_all()?.to_scalar::<f32>()?;
        assert_eq!(row2, 0.0);
        Ok(())
    }
}
