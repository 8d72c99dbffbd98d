//! Ops with a fused forward and a hand-written backward.
//!
//! candle's fused kernels (softmax, RoPE) have no backward pass, and its differentiable versions
//! are compositions of elementwise ops: backward walks each of them and keeps every intermediate
//! alive until it does. An [`OpWithGrad`] runs a fused candle function on an untracked tensor as
//! its forward and a closed form as its backward. Every device goes through one code path
//! ([`untracked`]): the CPU tests exercise the plumbing the GPU runs. Metal uses the op's
//! differentiable reference instead (the plumbing is not built for it here: no Mac to test on).

use std::sync::Arc;

use candle_core::op::BackpropOp;
use candle_core::{CpuStorage, CustomOp1, Layout, Result, Shape, Storage, Tensor};

/// A unary op with a fused forward and a closed-form backward.
pub trait OpWithGrad: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    /// The forward on an untracked, contiguous tensor.
    fn forward(&self, xs: &Tensor) -> Result<Tensor>;
    /// d loss / d xs from the input, the output and d loss / d output.
    fn backward(&self, xs: &Tensor, ys: &Tensor, grad: &Tensor) -> Result<Tensor>;
    /// The same function from differentiable candle ops: the tests' oracle and Metal's path.
    fn reference(&self, xs: &Tensor) -> Result<Tensor>;
}

/// Apply `op` to `xs` (made contiguous first); differentiable through `op.backward`.
pub fn apply<T: OpWithGrad>(xs: &Tensor, op: T) -> Result<Tensor> {
    if xs.device().is_metal() {
        return op.reference(xs);
    }
    xs.contiguous()?.apply_op1_arc(Arc::new(Box::new(Custom(op))))
}

struct Custom<T>(T);

/// Run `f` on an untracked tensor over `storage` (laid out as `layout`), and hand back the
/// result's storage. A custom op borrows its input and must return an owned result, so both
/// ends copy: two memory passes, against the several a composite backward saves.
fn untracked(
    storage: Storage,
    layout: &Layout,
    f: impl FnOnce(&Tensor) -> Result<Tensor>,
) -> Result<(Storage, Shape)> {
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!(
            "fused op: the input must be contiguous (strides {:?})",
            layout.stride()
        );
    };
    let flat = Tensor::from_storage(storage, end, BackpropOp::none(), false);
    let xs = flat.narrow(0, start, end - start)?.reshape(layout.shape())?;
    let ys = f(&xs)?.contiguous()?;
    let (storage, out) = ys.storage_and_layout();
    if out.start_offset() != 0 {
        candle_core::bail!("fused op: a fresh result with an offset");
    }
    Ok((storage.try_clone(out)?, out.shape().clone()))
}

impl<T: OpWithGrad> CustomOp1 for Custom<T> {
    fn name(&self) -> &'static str {
        self.0.name()
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        match untracked(Storage::Cpu(storage.clone()), layout, |x| self.0.forward(x))? {
            (Storage::Cpu(out), shape) => Ok((out, shape)),
            _ => candle_core::bail!("{}: the CPU forward left the CPU", self.0.name()),
        }
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        storage: &candle_core::CudaStorage,
        layout: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        use candle_core::backend::BackendStorage;
        match untracked(Storage::Cuda(storage.try_clone(layout)?), layout, |x| {
            self.0.forward(x)
        })? {
            (Storage::Cuda(out), shape) => Ok((out, shape)),
            _ => candle_core::bail!("{}: the CUDA forward left the GPU", self.0.name()),
        }
    }

    fn bwd(&self, arg: &Tensor, res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        self.0.backward(arg, res, grad_res).map(Some)
    }
}

/// Test helpers: compare an op against its reference, forward and backward, on given inputs.
#[cfg(test)]
pub(crate) mod check {
    use super::*;
    use candle_core::{DType, Var};

    pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> f32 {
        let f = |t: &Tensor| t.to_dtype(DType::F32).expect("f32");
        (f(a) - f(b))
            .and_then(|d| d.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>())
            .expect("same shapes")
    }

    /// `finite` maps the output before the weighted sum (masked −∞ log-probabilities to 0).
    pub fn against_reference<T: OpWithGrad + Clone>(
        op: T,
        xs: &Tensor,
        upstream: &Tensor,
        finite: impl Fn(&Tensor) -> Result<Tensor>,
        tol: f32,
    ) -> Result<()> {
        let var = Var::from_tensor(xs)?;
        let ours = apply(var.as_tensor(), op.clone())?;
        let reference = op.reference(var.as_tensor())?;
        assert_eq!(ours.dtype(), reference.dtype());
        assert_eq!(ours.dims(), reference.dims());
        let fwd = max_abs_diff(&finite(&ours)?, &finite(&reference)?);
        assert!(fwd <= tol, "{}: forward differs by {fwd}", op.name());
        let loss =
            |y: &Tensor| -> Result<Tensor> { (finite(y)?.to_dtype(DType::F32)? * upstream)?.sum_all() };
        let g_ours = loss(&ours)?.backward()?;
        let g_ref = loss(&reference)?.backward()?;
        let a = g_ours.get(var.as_tensor()).expect("our gradient");
        let b = g_ref.get(var.as_tensor()).expect("reference gradient");
        let bwd = max_abs_diff(a, b);
        assert!(bwd <= tol, "{}: backward differs by {bwd}", op.name());
        let scale = a
            .to_dtype(DType::F32)?
            .abs()?
            .flatten_all()?
            .max(0)?
            .to_scalar::<f32>()?;
        assert!(scale > 1e-3, "{}: a gradient of {scale} tests nothing", op.name());
        Ok(())
    }
}
