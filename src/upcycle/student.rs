//! The student: the manifest model with every non-attention weight copied from the teacher and
//! every decoupled attention layer initialised by surgery from the teacher's layer.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor};

use super::pairing::{Pair, leaves, pair};
use super::surgery::{TeacherAttention, surgery};
use super::teacher::Teacher;
use super::{UpcycleError, UpcycleSpec};
use crate::model::{ForwardCtx, LanguageModel, ModelSpec, SeededVarMap, Trace};
use crate::ops::rope::inv_freq;
use crate::topology::NodeSpec;

/// A student ready to train: its variables and the model built over them.
pub struct Student {
    pub vars: SeededVarMap,
    pub model: LanguageModel,
    /// Parameter path of each attention layer, in slot order.
    pub attention_paths: Vec<String>,
    /// Slots of the attention layers that were transplanted (surgery sites).
    pub surgery_slots: Vec<usize>,
    /// The parameters' dtype (the run's `dtype`: bf16 on CUDA for `auto`). Buffers such as the
    /// per-head RoPE frequencies stay f32.
    pub dtype: DType,
}

/// Build the student of `spec` from `teacher`. `calibration`: token batches (b, t) whose
/// attention inputs make the surgery activation-aware.
pub fn build_student(
    teacher: &Teacher,
    spec: &ModelSpec,
    cfg: &UpcycleSpec,
    seed: u64,
    calibration: &[Tensor],
    device: &Device,
    dtype: DType,
) -> Result<Student, UpcycleError> {
    let pairs = pair(&teacher.loaded.spec, spec).map_err(UpcycleError::Mismatch)?;
    let vars = SeededVarMap::new(seed);
    LanguageModel::build(spec, vars.var_builder(dtype, device))?;
    copy_non_surgery_weights(teacher, &pairs, &vars)?;
    let inputs = attention_inputs(teacher, &pairs, calibration)?;
    let mut surgery_slots = Vec::new();
    let mut attention_paths = Vec::new();
    for p in &pairs {
        if !matches!(p.student.spec, NodeSpec::Attention(_)) {
            continue;
        }
        let slot = attention_paths.len();
        attention_paths.push(p.student.path.clone());
        let Some((t_spec, s_spec)) = p.surgery_site() else {
            continue;
        };
        let w = |n: &str, shape: (usize, usize)| {
            teacher
                .weights
                .get(shape, &format!("{}.{n}.weight", p.teacher.path))
        };
        let (h, g, dh, d) = (
            t_spec.n_heads,
            t_spec.kv_heads(),
            t_spec.head_dim(),
            t_spec.d_model,
        );
        let t = TeacherAttention {
            wq: w("q_proj", (h * dh, d))?,
            wk: w("k_proj", (g * dh, d))?,
            wv: w("v_proj", (g * dh, d))?,
            wo: w("o_proj", (d, h * dh))?,
            n_heads: h,
            n_kv_heads: g,
            head_dim: dh,
            inv_freq: inv_freq(dh, t_spec.rope_base, t_spec.rope_scaling.as_ref()),
        };
        let calib = inputs.get(&p.teacher.path);
        let weights = surgery(&t, s_spec, cfg.dba_init, calib)
            .map_err(|e| UpcycleError::Mismatch(format!("`{}`: {e}", p.student.path)))?;
        for (name, value) in weights {
            vars.set(&format!("{}.{name}", p.student.path), &value.to_device(device)?)?;
        }
        surgery_slots.push(slot);
    }
    // Rebuild so that layers pick up surgery's buffers (per-head RoPE frequencies).
    let model = LanguageModel::build(spec, vars.var_builder(dtype, device))?;
    Ok(Student {
        vars,
        model,
        attention_paths,
        surgery_slots,
        dtype,
    })
}

/// The model of `spec` over `vars` in which only the parameters `trains` accepts carry gradients:
/// the others are detached views of the same storage, so updates to a variable (an optimizer step,
/// a checkpoint load) still reach them, but backward skips them. Returns the model and the
/// trainable variables, name-sorted; buffers never train.
pub fn partially_frozen(
    spec: &ModelSpec,
    vars: &crate::model::SeededVarMap,
    trains: impl Fn(&str) -> bool,
    device: &Device,
    dtype: DType,
) -> Result<(LanguageModel, Vec<(String, candle_core::Var)>), UpcycleError> {
    let all = vars.named_vars();
    let mut trainable = Vec::new();
    let mut tensors = HashMap::new();
    for (name, var) in all {
        let t = if trains(&name) && !crate::model::init::is_buffer(&name) {
            trainable.push((name.clone(), var.clone()));
            var.as_tensor().clone()
        } else {
            var.as_tensor().detach()
        };
        tensors.insert(name, t);
    }
    let vb = candle_nn::VarBuilder::from_backend(Box::new(AsStored(tensors)), dtype, device.clone());
    Ok((LanguageModel::build(spec, vb)?, trainable))
}

/// Tensors handed out in the dtype they are stored in: parameters are already in the run's dtype,
/// and buffers (per-head RoPE frequencies) must stay f32 (`VarBuilder::from_tensors` would
/// convert them, and a bf16 frequency is off by ~0.4 %: a visible rotation error at long
/// positions).
struct AsStored(HashMap<String, Tensor>);

impl candle_nn::var_builder::SimpleBackend for AsStored {
    fn get(
        &self,
        s: candle_core::Shape,
        name: &str,
        _: candle_nn::Init,
        dtype: DType,
        dev: &Device,
    ) -> candle_core::Result<Tensor> {
        crate::loader::expect_shape(self.get_unchecked(name, dtype, dev)?, &s, name)
    }

    fn get_unchecked(&self, name: &str, _: DType, _: &Device) -> candle_core::Result<Tensor> {
        self.0
            .get(name)
            .cloned()
            .ok_or_else(|| candle_core::Error::Msg(format!("no tensor `{name}` in the student")))
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }
}

fn copy_non_surgery_weights(
    teacher: &Teacher,
    pairs: &[Pair],
    vars: &SeededVarMap,
) -> Result<(), UpcycleError> {
    let mut prefixes: Vec<(&str, &str)> = vec![("embedder", "embedder")];
    for p in pairs.iter().filter(|p| p.surgery_site().is_none()) {
        prefixes.push((&p.student.path, &p.teacher.path));
    }
    let surgery: Vec<&str> = pairs
        .iter()
        .filter(|p| p.surgery_site().is_some())
        .map(|p| p.student.path.as_str())
        .collect();
    for (name, var) in vars.named_vars() {
        if surgery.iter().any(|s| name.starts_with(&format!("{s}."))) {
            continue;
        }
        let Some((s, t)) = prefixes.iter().find(|(s, _)| name.starts_with(&format!("{s}."))) else {
            return Err(UpcycleError::Mismatch(format!(
                "student parameter `{name}` has no teacher counterpart"
            )));
        };
        let teacher_name = format!("{t}{}", &name[s.len()..]);
        let value = teacher.weights.get(var.shape(), &teacher_name).map_err(|e| {
            UpcycleError::Mismatch(format!("student `{name}` ← teacher `{teacher_name}`: {e}"))
        })?;
        var.set(&value.to_dtype(var.dtype())?.to_device(var.device())?)?;
    }
    Ok(())
}

/// Data-free stand-in for calibration inputs: the pre-norm's gain g as rows diag(g), so that the
/// surgery's input covariance is diag(g²) instead of the identity (an RMSNorm output's channels
/// are scaled by g; ranking by raw weight norms ignores that). Layers without an RMSNorm right
/// before them get none (identity).
fn norm_gain_inputs(
    teacher: &Teacher,
    pairs: &[Pair],
    all: &[super::pairing::Leaf],
) -> HashMap<String, Tensor> {
    let mut out = HashMap::new();
    for w in all.windows(2) {
        let is_site = pairs
            .iter()
            .any(|p| p.teacher.path == w[1].path && p.surgery_site().is_some());
        if let (true, NodeSpec::RmsNorm(n)) = (is_site, w[0].spec)
            && n.elementwise_affine
            && let Ok(g) = teacher.weights.get(n.d_model, &format!("{}.weight", w[0].path))
            && let Ok(diag) = Tensor::eye(n.d_model, DType::F32, &Device::Cpu)
                .and_then(|e| e.broadcast_mul(&g.unsqueeze(0)?))
        {
            out.insert(w[1].path.clone(), diag);
        }
    }
    out
}

/// For each teacher attention layer (by path): its inputs over the calibration batches, (n, d).
fn attention_inputs(
    teacher: &Teacher,
    pairs: &[Pair],
    calibration: &[Tensor],
) -> Result<HashMap<String, Tensor>, UpcycleError> {
    let mut out: HashMap<String, Vec<Tensor>> = HashMap::new();
    let all = leaves(&teacher.loaded.spec);
    if calibration.is_empty() {
        return Ok(norm_gain_inputs(teacher, pairs, &all));
    }
    // The input of attention leaf k is the output of leaf k − 1 (its pre-norm).
    let wanted: HashMap<String, String> = all
        .windows(2)
        .filter(|w| {
            pairs
                .iter()
                .any(|p| p.teacher.path == w[1].path && p.surgery_site().is_some())
        })
        .map(|w| (w[0].path.clone(), w[1].path.clone()))
        .collect();
    for ids in calibration {
        let mut trace = Trace {
            all_layers: true,
            ..Trace::attention_only()
        };
        let mut ctx = ForwardCtx::eval();
        ctx.trace = Some(&mut trace);
        teacher.loaded.model.forward(ids, &mut ctx)?;
        for (path, xs) in trace.entries {
            if let Some(attn) = wanted.get(&path) {
                let (b, t, d) = xs.dims3()?;
                out.entry(attn.clone())
                    .or_default()
                    .push(xs.reshape((b * t, d))?.to_device(&Device::Cpu)?);
            }
        }
    }
    out.into_iter()
        .map(|(k, v)| Ok((k, Tensor::cat(&v, 0)?)))
        .collect()
}
