//! Ops with a fused forward and a hand-written backward.
//!
//! candle's fused kernels (softmax, RoPE) have no backward pass, and its differentiable versions
//! are compositions of elementwise ops: backward walks each of them and keeps every intermediate
//! alive until it does. An [`OpWithGrad`] runs a fused candle function on an untracked tensor as
//! its forward and a closed form as its backward. Every device goes through one code path: the
//! forward runs on detached views of the inputs (no copies), and candle records its result with
//! the op's backward (`Tensor::track_op*_arc`, a patch of the vendored candle-core), so the CPU
//! tests exercise the plumbing the GPU runs. Metal uses the op's differentiable reference instead
//! (not built for it here: no Mac to test on).

use std::sync::Arc;

use candle_core::op::BackpropOp;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, Layout, Result, Shape, Storage, Tensor};

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

/// A binary op with a fused forward and a closed-form backward (both arguments may train).
pub trait OpWithGrad2: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    /// The forward on untracked, contiguous tensors.
    fn forward(&self, a: &Tensor, b: &Tensor) -> Result<Tensor>;
    /// (d loss / d a, d loss / d b) from the inputs, the output and d loss / d output.
    fn backward(&self, a: &Tensor, b: &Tensor, ys: &Tensor, grad: &Tensor) -> Result<(Tensor, Tensor)>;
    /// The same function from differentiable candle ops: the tests' oracle and Metal's path.
    fn reference(&self, a: &Tensor, b: &Tensor) -> Result<Tensor>;
}

/// Apply `op` to `a` and `b` (each made contiguous first); differentiable through `op.backward`.
pub fn apply2<T: OpWithGrad2>(a: &Tensor, b: &Tensor, op: T) -> Result<Tensor> {
    if a.device().is_metal() {
        return op.reference(a, b);
    }
    if copying(a) {
        return a
            .contiguous()?
            .apply_op2_arc(&b.contiguous()?, Arc::new(Box::new(Custom2(op))));
    }
    let (a, b) = (a.contiguous()?, b.contiguous()?);
    let ys = op.forward(&a.detach(), &b.detach())?;
    Ok(a.track_op2_arc(&b, &ys, Arc::new(Box::new(Custom2(op)))))
}

/// A ternary op with a fused (or recomputing) forward and a closed-form backward.
pub trait OpWithGrad3: Send + Sync + 'static {
    fn name(&self) -> &'static str;
    /// The forward on untracked, contiguous tensors.
    fn forward(&self, a: &Tensor, b: &Tensor, c: &Tensor) -> Result<Tensor>;
    /// The three input gradients from the inputs, the output and d loss / d output.
    fn backward(&self, a: &Tensor, b: &Tensor, c: &Tensor, ys: &Tensor, grad: &Tensor)
    -> Result<[Tensor; 3]>;
    /// The same function from differentiable candle ops: the tests' oracle and Metal's path.
    fn reference(&self, a: &Tensor, b: &Tensor, c: &Tensor) -> Result<Tensor>;
}

/// Apply `op` to `a`, `b`, `c` (each made contiguous first); differentiable through `op.backward`.
pub fn apply3<T: OpWithGrad3>(a: &Tensor, b: &Tensor, c: &Tensor, op: T) -> Result<Tensor> {
    if a.device().is_metal() {
        return op.reference(a, b, c);
    }
    if copying(a) {
        return a.contiguous()?.apply_op3_arc(
            &b.contiguous()?,
            &c.contiguous()?,
            Arc::new(Box::new(Custom3(op))),
        );
    }
    let (a, b, c) = (a.contiguous()?, b.contiguous()?, c.contiguous()?);
    let ys = op.forward(&a.detach(), &b.detach(), &c.detach())?;
    Ok(a.track_op3_arc(&b, &c, &ys, Arc::new(Box::new(Custom3(op)))))
}

/// Apply `op` to `xs` (made contiguous first); differentiable through `op.backward`.
pub fn apply<T: OpWithGrad>(xs: &Tensor, op: T) -> Result<Tensor> {
    if xs.device().is_metal() {
        return op.reference(xs);
    }
    if copying(xs) {
        return xs.contiguous()?.apply_op1_arc(Arc::new(Box::new(Custom(op))));
    }
    let xs = xs.contiguous()?;
    let ys = op.forward(&xs.detach())?;
    Ok(xs.track_op1_arc(&ys, Arc::new(Box::new(Custom(op)))))
}

/// Whether a fused op on `xs`'s device still takes candle's custom-op path (inputs and result
/// copied). The copy-free path is the default everywhere but CUDA, where it has not yet run: until
/// `tests/gpu_kernels.rs` passes with it, CUDA keeps the path the last GPU measurements used
/// unless the gate for unverified GPU code is open (`CARAMBA_UNVERIFIED_KERNELS=1`).
fn copying(xs: &Tensor) -> bool {
    xs.device().is_cuda() && !crate::kernels::unverified_kernels()
}

struct Custom<T>(T);

/// Run `f` on untracked tensors over copies of the op's CPU inputs, and hand back a copy of the
/// result's storage. A custom op borrows its inputs and must return an owned result, so both ends
/// copy; [`apply`] and its siblings avoid this path (they record a forward computed on detached
/// views), which serves `Tensor::apply_op*` callers only.
pub(crate) fn on_cpu(
    name: &str,
    inputs: &[(&CpuStorage, &Layout)],
    f: impl FnOnce(&[Tensor]) -> Result<Tensor>,
) -> Result<(CpuStorage, Shape)> {
    let xs = inputs
        .iter()
        .map(|(s, l)| view(Storage::Cpu((*s).clone()), l))
        .collect::<Result<Vec<_>>>()?;
    match into_storage(f(&xs)?)? {
        (Storage::Cpu(out), shape) => Ok((out, shape)),
        _ => candle_core::bail!("{name}: the CPU forward left the CPU"),
    }
}

/// [`on_cpu`] for CUDA inputs.
#[cfg(feature = "cuda")]
pub(crate) fn on_cuda(
    name: &str,
    inputs: &[(&candle_core::CudaStorage, &Layout)],
    f: impl FnOnce(&[Tensor]) -> Result<Tensor>,
) -> Result<(candle_core::CudaStorage, Shape)> {
    use candle_core::backend::BackendStorage;
    let xs = inputs
        .iter()
        .map(|(s, l)| view(Storage::Cuda(s.try_clone(l)?), l))
        .collect::<Result<Vec<_>>>()?;
    match into_storage(f(&xs)?)? {
        (Storage::Cuda(out), shape) => Ok((out, shape)),
        _ => candle_core::bail!("{name}: the CUDA forward left the GPU"),
    }
}

/// An untracked tensor over (a copy of) an op's input storage, as `layout` describes it.
fn view(storage: Storage, layout: &Layout) -> Result<Tensor> {
    let Some((start, end)) = layout.contiguous_offsets() else {
        candle_core::bail!(
            "fused op: the input must be contiguous (strides {:?})",
            layout.stride()
        );
    };
    let flat = Tensor::from_storage(storage, end, BackpropOp::none(), false);
    flat.narrow(0, start, end - start)?.reshape(layout.shape())
}

/// A copy of a result's storage (an op must return an owned one) and its shape.
fn into_storage(ys: Tensor) -> Result<(Storage, Shape)> {
    let ys = ys.contiguous()?;
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

    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        on_cpu(self.name(), &[(s, l)], |x| self.0.forward(&x[0]))
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s: &candle_core::CudaStorage,
        l: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        on_cuda(self.name(), &[(s, l)], |x| self.0.forward(&x[0]))
    }

    fn bwd(&self, arg: &Tensor, res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        self.0.backward(arg, res, grad_res).map(Some)
    }
}

struct Custom2<T>(T);

impl<T: OpWithGrad2> CustomOp2 for Custom2<T> {
    fn name(&self) -> &'static str {
        self.0.name()
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        on_cpu(self.name(), &[(s1, l1), (s2, l2)], |x| {
            self.0.forward(&x[0], &x[1])
        })
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        on_cuda(self.name(), &[(s1, l1), (s2, l2)], |x| {
            self.0.forward(&x[0], &x[1])
        })
    }

    fn bwd(
        &self,
        a: &Tensor,
        b: &Tensor,
        res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let (da, db) = self.0.backward(a, b, res, grad_res)?;
        Ok((Some(da), Some(db)))
    }
}

struct Custom3<T>(T);

impl<T: OpWithGrad3> CustomOp3 for Custom3<T> {
    fn name(&self) -> &'static str {
        self.0.name()
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        on_cpu(self.name(), &[(s1, l1), (s2, l2), (s3, l3)], |x| {
            self.0.forward(&x[0], &x[1], &x[2])
        })
    }

    #[cfg(feature = "cuda")]
    fn cuda_fwd(
        &self,
        s1: &candle_core::CudaStorage,
        l1: &Layout,
        s2: &candle_core::CudaStorage,
        l2: &Layout,
        s3: &candle_core::CudaStorage,
        l3: &Layout,
    ) -> Result<(candle_core::CudaStorage, Shape)> {
        on_cuda(self.name(), &[(s1, l1), (s2, l2), (s3, l3)], |x| {
            self.0.forward(&x[0], &x[1], &x[2])
        })
    }

    fn bwd(
        &self,
        a: &Tensor,
        b: &Tensor,
        c: &Tensor,
        res: &Tensor,
        grad_res: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let [da, db, dc] = self.0.backward(a, b, c, res, grad_res)?;
        Ok((Some(da), Some(db), Some(dc)))
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

    /// [`against_reference`] for a binary op: the output and both gradients.
    pub fn against_reference2<T: OpWithGrad2 + Clone>(
        op: T,
        a: &Tensor,
        b: &Tensor,
        upstream: &Tensor,
        tol: f32,
    ) -> Result<()> {
        let (va, vb) = (Var::from_tensor(a)?, Var::from_tensor(b)?);
        let ours = apply2(va.as_tensor(), vb.as_tensor(), op.clone())?;
        let reference = op.reference(va.as_tensor(), vb.as_tensor())?;
        assert_eq!(ours.dtype(), reference.dtype());
        assert_eq!(ours.dims(), reference.dims());
        // Tolerances are relative to the largest magnitude (half precision rounds per ulp).
        let fwd = max_abs_diff(&ours, &reference);
        let top = reference
            .to_dtype(DType::F32)?
            .abs()?
            .flatten_all()?
            .max(0)?
            .to_scalar::<f32>()?;
        assert!(
            fwd <= tol * top.max(1.0),
            "{}: forward differs by {fwd} (max |y| {top})",
            op.name()
        );
        let loss = |y: &Tensor| -> Result<Tensor> { (y.to_dtype(DType::F32)? * upstream)?.sum_all() };
        let (g_ours, g_ref) = (loss(&ours)?.backward()?, loss(&reference)?.backward()?);
        for (name, var) in [("first", &va), ("second", &vb)] {
            let x = g_ours.get(var.as_tensor()).expect("our gradient");
            let y = g_ref.get(var.as_tensor()).expect("reference gradient");
            let bwd = max_abs_diff(x, y);
            let scale = y
                .to_dtype(DType::F32)?
                .abs()?
                .flatten_all()?
                .max(0)?
                .to_scalar::<f32>()?;
            assert!(
                scale > 1e-3,
                "{}: a {name} gradient of {scale} tests nothing",
                op.name()
            );
            assert!(
                bwd <= tol * scale.max(1.0),
                "{}: {name} gradient differs by {bwd}",
                op.name()
            );
        }
        Ok(())
    }
}
