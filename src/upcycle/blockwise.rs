//! Blockwise distillation: per transplanted attention layer, only that layer's parameters train,
//! to make its output match the teacher's on the same tokens. The student's own (already
//! distilled) prefix feeds the layer; the rest of the model is frozen (detached) and the pass stops
//! right after the layer. Teacher outputs are computed once for a pool of batches and reused.

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarBuilder;
use rand::SeedableRng;
use serde::Serialize;

use super::student::Student;
use super::{DistillLoss, UpcycleError};
use crate::console::Progress;
use crate::model::init::is_buffer;
use crate::model::{ForwardCtx, LanguageModel, ModelSpec, Trace};
use crate::train::{Optimizer, Schedule, TrainSpec};

/// Teacher attention outputs (one per attention slot) for one batch of token ids.
pub struct TeacherBatch {
    pub ids: Tensor,
    pub outputs: Vec<Tensor>,
}

/// Run the teacher over `batches`, keeping every attention layer's output.
pub fn teacher_outputs(
    teacher: &LanguageModel,
    batches: Vec<Tensor>,
) -> Result<Vec<TeacherBatch>, UpcycleError> {
    batches
        .into_iter()
        .map(|ids| {
            let mut trace = Trace::attention_only();
            let mut ctx = ForwardCtx::eval();
            ctx.trace = Some(&mut trace);
            teacher.forward(&ids, &mut ctx)?;
            Ok(TeacherBatch {
                ids,
                outputs: trace.entries.into_iter().map(|(_, t)| t).collect(),
            })
        })
        .collect()
}

/// Per-layer record of a blockwise phase.
#[derive(Debug, Clone, Serialize)]
pub struct BlockRecord {
    pub slot: usize,
    pub path: String,
    pub initial_loss: f64,
    pub final_loss: f64,
    pub steps: usize,
}

pub fn distance(a: &Tensor, b: &Tensor, loss: DistillLoss) -> candle_core::Result<Tensor> {
    let diff = (a.to_dtype(DType::F32)? - b.to_dtype(DType::F32)?)?;
    match loss {
        DistillLoss::L1 => diff.abs()?.mean_all(),
        DistillLoss::Mse => diff.sqr()?.mean_all(),
    }
}

/// Distill every surgery slot of `student` for `steps` steps each.
pub fn distill(
    student: &Student,
    spec: &ModelSpec,
    train: &TrainSpec,
    steps: usize,
    loss_kind: DistillLoss,
    pool: &[TeacherBatch],
    device: &Device,
    seed: u64,
) -> Result<Vec<BlockRecord>, UpcycleError> {
    let mut records = Vec::new();
    let progress = Progress::new((student.surgery_slots.len() * steps) as u64, "blockwise");
    for &slot in &student.surgery_slots {
        let path = &student.attention_paths[slot];
        let prefix = format!("{path}.");
        let all = student.vars.named_vars();
        let trainable: Vec<(String, Var)> = all
            .iter()
            .filter(|(n, _)| n.starts_with(&prefix) && !is_buffer(n))
            .cloned()
            .collect();
        let frozen: HashMap<String, Tensor> = all
            .iter()
            .map(|(n, v)| {
                let t = if n.starts_with(&prefix) && !is_buffer(n) {
                    v.as_tensor().clone()
                } else {
                    v.as_tensor().detach()
                };
                (n.clone(), t)
            })
            .collect();
        let model = LanguageModel::build(spec, VarBuilder::from_tensors(frozen, DType::F32, device))?;
        let mut optimizer = Optimizer::new(train, trainable.clone())?;
        let schedule = Schedule::new(train, steps);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ slot as u64);
        let (mut first, mut last) = (f64::NAN, f64::NAN);
        for step in 0..steps {
            let batch = &pool[step % pool.len()];
            let mut trace = Trace::attention_only();
            let mut ctx = ForwardCtx::train(&mut rng);
            ctx.trace = Some(&mut trace);
            ctx.stop_after_slot = Some(slot);
            model.forward(&batch.ids, &mut ctx)?;
            let out =
                trace.entries.last().map(|(_, t)| t.clone()).ok_or_else(|| {
                    UpcycleError::Mismatch(format!("attention slot {slot} produced no output"))
                })?;
            let loss = distance(&out, &batch.outputs[slot], loss_kind)?;
            let value = f64::from(loss.to_scalar::<f32>()?);
            if !value.is_finite() {
                return Err(UpcycleError::NonFinite {
                    what: format!("blockwise loss of `{path}` at step {step}"),
                });
            }
            if step == 0 {
                first = value;
            }
            last = value;
            let grads = loss.backward()?;
            let g: Vec<Option<Tensor>> = trainable
                .iter()
                .map(|(_, v)| grads.get(v.as_tensor()).cloned())
                .collect();
            optimizer.step(&g, schedule.lr(step))?;
            progress.inc(1);
            progress.set_message(&format!("layer {slot} loss {value:.4}"));
        }
        tracing::info!(layer = slot, path = %path, initial = format!("{first:.4}"), last = format!("{last:.4}"), "distilled");
        records.push(BlockRecord {
            slot,
            path: path.clone(),
            initial_loss: first,
            final_loss: last,
            steps,
        });
    }
    Ok(records)
}
