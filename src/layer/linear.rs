//! Linear map (`type: LinearLayer`): y = x·Wᵀ + b. Shapes: (b, t, d_in) -> (b, t, d_out).
//!
//! A [`Projection`] is the weight-backed map every layer uses: dense (a trainable candle `Linear`,
//! differentiable) or GGML-quantized (a `QMatMul` over Q4_0/Q4_1/Q8_0/K-quant blocks, inference
//! only). A weight source offers a quantized weight through the var builder by a small protocol
//! (see [`quantized_weight`]); sources that do not (training, safetensors) get dense weights.

use std::borrow::Cow;
use std::sync::Arc;

use candle_core::quantized::{GgmlDType, QMatMul, QStorage, QTensor};
use candle_core::{DType, Module, Result, Tensor};
use candle_nn::{Init, Linear, VarBuilder};
use serde::{Deserialize, Serialize};

use super::spec::{Layer, LayerSpec, LayerType, SpecProblem, Widths, check_dim};
use crate::model::context::ForwardCtx;

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LinearSpec {
    /// Input width.
    pub d_in: usize,
    /// Output width.
    pub d_out: usize,
    /// Add a bias. Default: true.
    #[serde(default = "yes")]
    pub bias: bool,
}

fn yes() -> bool {
    true
}

impl LayerType for LinearSpec {
    const NAME: &'static str = "LinearLayer";
    const ALIASES: &'static [&'static str] = &["linear"];
}

impl LayerSpec for LinearSpec {
    fn problems(&self) -> Vec<SpecProblem> {
        let mut out = Vec::new();
        check_dim(&mut out, "d_in", self.d_in);
        check_dim(&mut out, "d_out", self.d_out);
        out
    }

    fn widths(&self) -> Option<Widths> {
        Some(Widths {
            d_in: ("d_in", self.d_in),
            d_out: ("d_out", self.d_out),
        })
    }

    /// d_in·d_out (+ d_out).
    fn params(&self) -> u64 {
        let bias = if self.bias { self.d_out as u64 } else { 0 };
        (self.d_in as u64)
            .saturating_mul(self.d_out as u64)
            .saturating_add(bias)
    }

    fn describe(&self) -> String {
        format!("d_in={} d_out={} bias={}", self.d_in, self.d_out, self.bias)
    }

    fn build(&self, vb: VarBuilder, _next_slot: &mut usize) -> Result<Box<dyn Layer>> {
        Ok(Box::new(LinearLayer::build(self, vb)?))
    }
}

impl Layer for LinearLayer {
    fn forward(&self, xs: &Tensor, _ctx: &mut ForwardCtx) -> Result<Tensor> {
        LinearLayer::forward(self, xs)
    }

    fn is_tail(&self) -> bool {
        true
    }
}

/// Std of fresh projection weights (GPT-2 / nanoGPT convention).
pub const INIT_STD: f64 = 0.02;

/// Build a dense linear map `d_in -> d_out` with weights `weight` (d_out, d_in) and optional `bias`.
pub fn linear(d_in: usize, d_out: usize, bias: bool, vb: VarBuilder) -> Result<Linear> {
    let w = vb.get_with_hints(
        (d_out, d_in),
        "weight",
        Init::Randn {
            mean: 0.0,
            stdev: INIT_STD,
        },
    )?;
    let b = if bias {
        Some(vb.get_with_hints(d_out, "bias", Init::Const(0.0))?)
    } else {
        None
    };
    Ok(Linear::new(w, b))
}

/// Build a projection `d_in -> d_out`: quantized when the weight source offers `weight` as GGML
/// blocks, dense (as [`linear`]) otherwise. The bias is always dense.
pub fn projection(d_in: usize, d_out: usize, bias: bool, vb: VarBuilder) -> Result<Projection> {
    match quantized_weight(&vb, "weight", (d_out, d_in))? {
        Some(w) => {
            let b = if bias {
                Some(vb.get_with_hints(d_out, "bias", Init::Const(0.0))?)
            } else {
                None
            };
            if let Some(packed) = crate::ops::q4_1_packed::PackedQ4_1::pack(&w)? {
                return Ok(Projection::PackedQ4_1 {
                    weight: Arc::new(packed),
                    bias: b,
                });
            }
            Ok(Projection::Quantized {
                weight: QMatMul::from_arc(w)?,
                bias: b,
            })
        }
        None => Ok(Projection::Dense(linear(d_in, d_out, bias, vb)?)),
    }
}

/// A weight-backed linear map: dense (trainable) or GGML-quantized (inference only).
#[derive(Debug, Clone)]
pub enum Projection {
    Dense(Linear),
    Quantized {
        weight: QMatMul,
        bias: Option<Tensor>,
    },
    /// Q4_1 blocks repacked for this CPU's decode kernel (see [`crate::ops::q4_1_packed`]).
    PackedQ4_1 {
        weight: Arc<crate::ops::q4_1_packed::PackedQ4_1>,
        bias: Option<Tensor>,
    },
}

impl Projection {
    /// True for GGML-quantized weights.
    pub fn is_quantized(&self) -> bool {
        !matches!(self, Self::Dense(_))
    }
}

impl Module for Projection {
    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        match self {
            Self::Dense(l) => l.forward(xs),
            Self::Quantized { weight, bias } => add_bias(quantized_matmul(weight, xs, false)?, bias),
            Self::PackedQ4_1 { weight, bias } => {
                let rows = xs.elem_count() / xs.dim(candle_core::D::Minus1)?.max(1);
                let ys = if rows < DENSE_GEMM_MIN_ROWS && xs.dtype() == DType::F32 {
                    weight.matvec(xs)?
                } else {
                    let w = weight.dequantize(xs.device())?.to_dtype(xs.dtype())?;
                    xs.broadcast_matmul(&w.t()?)?
                };
                add_bias(ys, bias)
            }
        }
    }
}

fn add_bias(ys: Tensor, bias: &Option<Tensor>) -> Result<Tensor> {
    match bias {
        Some(b) => ys.broadcast_add(b),
        None => Ok(ys),
    }
}

/// Rows of `xs` from which a quantized matmul dequantizes the weight and runs a dense f32 GEMM
/// instead of the block dot products (candle's quantized kernels are GEMVs: for a prefill of
/// hundreds of tokens the GEMM is several times faster).
pub const DENSE_GEMM_MIN_ROWS: usize = 32;

/// Weight rows dequantized at a time by the dense path (bounds its scratch memory to ~16 MB for
/// a 576-wide matrix, whatever the vocabulary of a tied head).
const DENSE_GEMM_CHUNK_ROWS: usize = 8192;

/// `xs (…, k) · Wᵀ` for a quantized `W (n, k)`: block dot products for a few rows (decoding), a
/// dense GEMM over dequantized row chunks for many (prefill, perplexity).
/// `exact_activations`: see [`crate::ops::qmatvec::quantized_matvec`] (output heads).
pub fn quantized_matmul(weight: &QMatMul, xs: &Tensor, exact_activations: bool) -> Result<Tensor> {
    let xs = xs.contiguous()?;
    let rows = xs.elem_count() / xs.dim(candle_core::D::Minus1)?.max(1);
    let QMatMul::QTensor(q) = weight else {
        return weight.forward(&xs);
    };
    if rows < DENSE_GEMM_MIN_ROWS || xs.dtype() != DType::F32 {
        if let Some(ys) = crate::ops::qmatvec::quantized_matvec(q, &xs, exact_activations)? {
            return Ok(ys);
        }
        // why: candle's kernels round the activations to 8 bits first, and a head's argmax can
        // hinge on a few hundredths of a logit; where our kernels do not run (a CPU without
        // AVX-512 VNNI), exact activations take the dense path below.
        if !(exact_activations && xs.dtype() == DType::F32) {
            return weight.forward(&xs);
        }
    }
    let (n, k) = q.shape().dims2()?;
    let mut out_dims = xs.dims().to_vec();
    *out_dims.last_mut().expect("xs has a last dim") = n;
    let flat = xs.reshape((rows, k))?;
    let device = xs.device().clone();
    // why: chunks bound host memory on a CPU; on a GPU the whole matrix is a transient buffer,
    // and rebuilding device chunks from host bytes (`q.data()` copies the matrix back) is slow.
    let parts = if n <= DENSE_GEMM_CHUNK_ROWS || !device.is_cpu() {
        vec![flat.matmul(&q.dequantize(&device)?.t()?)?]
    } else {
        // why: a tied head (vocab × d) dequantized whole would double the model's memory.
        let dtype = q.dtype();
        let row_bytes = k / dtype.block_size() * dtype.type_size();
        let data = q.data()?;
        (0..n)
            .step_by(DENSE_GEMM_CHUNK_ROWS)
            .map(|start| {
                let len = DENSE_GEMM_CHUNK_ROWS.min(n - start);
                let bytes = &data[start * row_bytes..(start + len) * row_bytes];
                let chunk = QTensor::new(
                    QStorage::from_data(Cow::Borrowed(bytes), &device, dtype)?,
                    (len, k),
                )?;
                flat.matmul(&chunk.dequantize(&device)?.t()?)
            })
            .collect::<Result<Vec<_>>>()?
    };
    let ys = if parts.len() == 1 {
        parts.into_iter().next().expect("one part")
    } else {
        Tensor::cat(&parts, 1)?
    };
    ys.reshape(out_dims)
}

/// Suffix under which a weight source offers a quantized tensor `<name>` as its raw GGML blocks:
/// `<name>.ggml_blocks` is a u8 vector (rows in order, as stored in a GGUF file) and
/// `<name>.ggml_type` a u32 scalar holding the GGUF type id (see [`ggml_type_from_id`]).
pub const GGML_BLOCKS: &str = "ggml_blocks";
/// See [`GGML_BLOCKS`].
pub const GGML_TYPE: &str = "ggml_type";

/// GGML block types by their GGUF type id (ggml.h `enum ggml_type`).
const GGML_TYPES: &[(u32, GgmlDType)] = &[
    (0, GgmlDType::F32),
    (1, GgmlDType::F16),
    (2, GgmlDType::Q4_0),
    (3, GgmlDType::Q4_1),
    (6, GgmlDType::Q5_0),
    (7, GgmlDType::Q5_1),
    (8, GgmlDType::Q8_0),
    (9, GgmlDType::Q8_1),
    (10, GgmlDType::Q2K),
    (11, GgmlDType::Q3K),
    (12, GgmlDType::Q4K),
    (13, GgmlDType::Q5K),
    (14, GgmlDType::Q6K),
    (15, GgmlDType::Q8K),
    (30, GgmlDType::BF16),
];

/// The GGML block type of a GGUF type id; `None` for types candle cannot compute with.
pub fn ggml_type_from_id(id: u32) -> Option<GgmlDType> {
    GGML_TYPES.iter().find(|(i, _)| *i == id).map(|(_, t)| *t)
}

/// The GGUF type id of a GGML block type.
pub fn ggml_type_id(dtype: GgmlDType) -> u32 {
    GGML_TYPES
        .iter()
        .find(|(_, t)| *t == dtype)
        .map_or(u32::MAX, |(i, _)| *i)
}

/// The quantized tensor `<vb prefix>.<name>` of `shape` when the weight source offers it as GGML
/// blocks; `None` when it offers a dense tensor (or nothing, so that a fresh one is initialised).
pub fn quantized_weight(vb: &VarBuilder, name: &str, shape: (usize, usize)) -> Result<Option<Arc<QTensor>>> {
    let blocks = format!("{name}.{GGML_BLOCKS}");
    if !vb.contains_tensor(&blocks) {
        return Ok(None);
    }
    let id = vb
        .get_unchecked_dtype(&format!("{name}.{GGML_TYPE}"), DType::U32)?
        .to_scalar::<u32>()?;
    let Some(dtype) = ggml_type_from_id(id) else {
        candle_core::bail!("{}.{name}: unsupported GGML type id {id}", vb.prefix());
    };
    let raw = vb.get_unchecked_dtype(&blocks, DType::U8)?.to_vec1::<u8>()?;
    let expected = shape.0 * shape.1 / dtype.block_size() * dtype.type_size();
    if raw.len() != expected || !shape.1.is_multiple_of(dtype.block_size()) {
        candle_core::bail!(
            "{}.{name}: {} bytes of {dtype:?} blocks do not hold a {shape:?} matrix ({expected} bytes)",
            vb.prefix(),
            raw.len()
        );
    }
    let storage = QStorage::from_data(Cow::Owned(raw), vb.device(), dtype)?;
    Ok(Some(Arc::new(QTensor::new(storage, shape)?)))
}

pub struct LinearLayer {
    inner: Projection,
}

impl LinearLayer {
    /// Weights at `<path>.weight` / `<path>.bias`.
    pub fn build(spec: &LinearSpec, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            inner: projection(spec.d_in, spec.d_out, spec.bias, vb)?,
        })
    }

    pub fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        self.inner.forward(xs)
    }
}
