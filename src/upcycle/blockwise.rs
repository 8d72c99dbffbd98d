//! Blockwise distillation: per transplanted attention layer, only that layer's parameters train,
//! to make its output match the teacher's on the same tokens. Teacher outputs are computed once
//! for a pool of batches and reused. The layer's inputs are either the student's own (already
//! distilled, frozen) prefix — computed once per layer for the pool, since the prefix does not
//! change while the layer trains — or the teacher's (computed with the outputs; layers are then
//! independent). Either way a step runs the one layer, not the model up to it.
//!
//! The phase is one sequence of `layers × steps` steps with atomic checkpoints (the trainer's
//! layout: `checkpoints/step_N/`) every `save_every` steps, at each layer's end and on Ctrl-C. A
//! checkpoint holds every student variable, the current layer's optimizer moments, the dropout
//! RNG position and the finished layers' records, so a run killed at any point (SIGKILL included)
//! resumes at layer `N / steps`, step `N % steps` and ends bit-identical to an uninterrupted one
//! on CPU. The teacher batches are a pure function of the seed and are recomputed on resume.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use super::student::{Student, partially_frozen};
use super::{DistillLoss, UpcycleError};
use crate::console::Progress;
use crate::model::{CaptureInputs, ForwardCtx, LanguageModel, ModelSpec, Trace};
use crate::train::checkpoint::{self, CheckpointState, FORMAT, OPTIMIZER_FILE};
use crate::train::metrics::{MetricLine, MetricsLog, TrainLine};
use crate::train::{Optimizer, Schedule, TrainError, TrainSpec};

/// Teacher attention outputs (one per attention slot) for one batch of token ids.
pub struct TeacherBatch {
    pub ids: Tensor,
    pub outputs: Vec<Tensor>,
    /// The teacher's attention inputs, one per slot (only for [`BlockInput::Teacher`]).
    pub inputs: Vec<Tensor>,
}

/// What feeds the layer being distilled (`upcycle.blockwise_input`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BlockInput {
    /// The student's own prefix (already distilled layers): what the layer will see at inference.
    #[default]
    Student,
    /// The teacher's hidden states: layers are independent of each other's errors.
    Teacher,
}

/// Run the teacher over `batches`, keeping every attention layer's output (and input, for
/// [`BlockInput::Teacher`]).
pub fn teacher_outputs(
    teacher: &LanguageModel,
    batches: Vec<Tensor>,
    input: BlockInput,
) -> Result<Vec<TeacherBatch>, UpcycleError> {
    let capture = match input {
        BlockInput::Student => CaptureInputs::None,
        BlockInput::Teacher => CaptureInputs::All,
    };
    batches
        .into_iter()
        .map(|ids| {
            let mut trace = Trace::with_inputs(capture);
            let mut ctx = ForwardCtx::eval();
            ctx.trace = Some(&mut trace);
            teacher.forward(&ids, &mut ctx)?;
            let mut inputs = std::mem::take(&mut trace.inputs);
            inputs.sort_by_key(|(slot, _)| *slot);
            Ok(TeacherBatch {
                ids,
                outputs: trace.entries.into_iter().map(|(_, t)| t).collect(),
                inputs: inputs.into_iter().map(|(_, t)| t).collect(),
            })
        })
        .collect()
}

/// The input of attention slot `slot` when `model` runs on `ids` (its prefix only, no gradient).
fn prefix_input(model: &LanguageModel, ids: &Tensor, slot: usize) -> Result<Tensor, UpcycleError> {
    let mut trace = Trace::with_inputs(CaptureInputs::Slot(slot));
    let mut ctx = ForwardCtx::eval();
    ctx.trace = Some(&mut trace);
    ctx.stop_after_slot = Some(slot);
    model.forward(ids, &mut ctx)?;
    let (_, xs) = trace
        .inputs
        .pop()
        .ok_or_else(|| UpcycleError::Mismatch(format!("attention slot {slot} received no input")))?;
    Ok(xs.detach())
}

/// Per-layer record of a blockwise phase.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlockRecord {
    pub slot: usize,
    pub path: String,
    pub initial_loss: f64,
    pub final_loss: f64,
    pub steps: usize,
}

/// What a blockwise checkpoint keeps beside the step (`state.json`'s `extra`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct PhaseProgress {
    /// Records of the finished layers.
    layers: Vec<BlockRecord>,
    /// First loss of the layer in progress (its record's `initial_loss`).
    current_initial_loss: Option<f64>,
}

pub fn distance(a: &Tensor, b: &Tensor, loss: DistillLoss) -> candle_core::Result<Tensor> {
    let diff = (a.to_dtype(DType::F32)? - b.to_dtype(DType::F32)?)?;
    match loss {
        DistillLoss::L1 => diff.abs()?.mean_all(),
        DistillLoss::Mse => diff.sqr()?.mean_all(),
    }
}

/// A blockwise phase: what to distill, how, and where its checkpoints live.
pub struct Blockwise<'a> {
    pub student: &'a Student,
    pub spec: &'a ModelSpec,
    pub train: &'a TrainSpec,
    /// Steps per layer.
    pub steps: usize,
    pub loss: DistillLoss,
    /// What feeds the layer being distilled; [`BlockInput::Teacher`] needs a pool with inputs.
    pub input: BlockInput,
    pub pool: &'a [TeacherBatch],
    pub device: &'a Device,
    pub seed: u64,
    /// Holds `metrics.jsonl` (one line per step, `step` counted over all layers) and `checkpoints/`.
    pub run_dir: &'a Path,
    /// Identifies teacher, student, recipe and data; a checkpoint with another one is refused.
    pub fingerprint: String,
    /// Discard existing checkpoints instead of resuming.
    pub fresh: bool,
}

/// What a blockwise phase did (this call).
#[derive(Debug, Clone)]
pub struct BlockwiseOutcome {
    pub layers: Vec<BlockRecord>,
    /// The step (over all layers) this call resumed from.
    pub resumed_from: Option<usize>,
}

impl Blockwise<'_> {
    /// Distill every surgery slot for `steps` steps each, resuming from the newest complete
    /// checkpoint in `run_dir` (a finished phase only reloads its weights).
    pub fn run(&self) -> Result<BlockwiseOutcome, UpcycleError> {
        let slots = &self.student.surgery_slots;
        let steps = self.steps;
        let total = slots.len() * steps;
        let ck_root = self.run_dir.join("checkpoints");
        let _lock = crate::record::DirLock::acquire(self.run_dir).map_err(TrainError::from)?;
        checkpoint::remove_stale_temps(&ck_root)?;
        crate::train::watch_ctrlc();
        let resumed = self.resume(&ck_root)?;
        let (start, mut progress_state, word_pos) = match &resumed {
            Some(ck) => {
                let p: PhaseProgress =
                    serde_json::from_value(ck.state.extra.clone()).map_err(|e| TrainError::Checkpoint {
                        dir: ck.dir.clone(),
                        reason: format!("blockwise progress in state.json: {e}"),
                    })?;
                (ck.state.step, p, ck.state.dropout_word_pos)
            }
            None => (0, PhaseProgress::default(), 0),
        };
        if let Some(ck) = &resumed {
            if start >= total {
                tracing::info!(run_dir = %self.run_dir.display(), steps = total, "blockwise phase already done; weights reloaded");
                return Ok(BlockwiseOutcome {
                    layers: progress_state.layers,
                    resumed_from: Some(start),
                });
            }
            tracing::info!(
                "resuming blockwise from step {start} of {total} (layer {} of {}, step {} of {steps}) ({})",
                start / steps.max(1) + 1,
                slots.len(),
                start % steps.max(1),
                ck.dir.display()
            );
        }
        let mut metrics = MetricsLog::open(self.run_dir, resumed.as_ref().map(|c| c.state.step))?;
        let bar = Progress::new(total as u64, "blockwise");
        bar.set_position(start as u64);
        let t0 = std::time::Instant::now();
        let elapsed_before = resumed.as_ref().map_or(0.0, |c| c.state.elapsed_s);
        let tokens_per_step = self.pool.first().map_or(0, |b| b.ids.elem_count()) as u64;
        let mut tokens_seen = resumed.as_ref().map_or(0, |c| c.state.tokens_seen);
        for (block, &slot) in slots.iter().enumerate() {
            let block_start = block * steps;
            if block_start + steps <= start {
                continue;
            }
            let first_step = start.saturating_sub(block_start);
            let path = &self.student.attention_paths[slot];
            let prefix = format!("{path}.");
            let (model, trainable) = partially_frozen(
                self.spec,
                &self.student.vars,
                |n| n.starts_with(&prefix),
                self.device,
                self.student.dtype,
            )?;
            let mut optimizer = Optimizer::new(self.train, trainable)?;
            let layer = model.attention_at(slot).ok_or_else(|| {
                UpcycleError::Mismatch(format!("the student has no attention layer with slot {slot}"))
            })?;
            // why: the prefix is frozen while this layer trains, so its output per batch is fixed.
            let inputs: Vec<Tensor> = match self.input {
                BlockInput::Student => self
                    .pool
                    .iter()
                    .map(|b| prefix_input(&model, &b.ids, slot))
                    .collect::<Result<_, _>>()?,
                BlockInput::Teacher => self
                    .pool
                    .iter()
                    .map(|b| {
                        let xs = b.inputs.get(slot).ok_or_else(|| {
                            UpcycleError::Mismatch(format!(
                                "no teacher input cached for attention slot {slot}"
                            ))
                        })?;
                        Ok::<_, UpcycleError>(xs.to_dtype(self.student.dtype)?)
                    })
                    .collect::<Result<_, _>>()?,
            };
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(self.seed ^ slot as u64);
            if first_step > 0 {
                // A mid-layer checkpoint: its optimizer state is this layer's.
                let ck = resumed.as_ref().expect("first_step > 0 only when resuming");
                optimizer
                    .load(&ck.dir.join(OPTIMIZER_FILE))
                    .map_err(|e| TrainError::Checkpoint {
                        dir: ck.dir.clone(),
                        reason: e.to_string(),
                    })?;
                if optimizer.steps() != first_step {
                    return Err(TrainError::Checkpoint {
                        dir: ck.dir.clone(),
                        reason: format!(
                            "optimizer state is at step {} of layer {slot}, the checkpoint at {first_step}",
                            optimizer.steps()
                        ),
                    }
                    .into());
                }
                rng.set_word_pos(word_pos);
            } else {
                progress_state.current_initial_loss = None;
            }
            let schedule = Schedule::new(self.train, steps);
            for step in first_step..steps {
                let step_start = std::time::Instant::now();
                let i = step % self.pool.len();
                let mut ctx = ForwardCtx::train(&mut rng);
                let out = layer.forward(&inputs[i], &mut ctx)?;
                let loss = distance(&out, &self.pool[i].outputs[slot], self.loss)?;
                let value = f64::from(loss.to_scalar::<f32>()?);
                if !value.is_finite() {
                    return Err(UpcycleError::NonFinite {
                        what: format!("blockwise loss of `{path}` at step {step}"),
                    });
                }
                progress_state.current_initial_loss.get_or_insert(value);
                let grads = loss.backward()?;
                let mut g = crate::train::gradients::detached_f32(&grads, optimizer.vars())?;
                let grad_norm = crate::train::clip::clip_grad_norm(&mut g, self.train.grad_clip)?;
                if !grad_norm.is_finite() {
                    return Err(UpcycleError::NonFinite {
                        what: format!("blockwise gradient norm of `{path}` at step {step}"),
                    });
                }
                let lr = schedule.lr(step);
                optimizer.step(&g, lr)?;
                let done = block_start + step + 1;
                tokens_seen += tokens_per_step;
                let elapsed = elapsed_before + t0.elapsed().as_secs_f64();
                metrics.write(&MetricLine::Train(TrainLine {
                    step: done,
                    loss: value,
                    lr,
                    grad_norm,
                    tokens_per_sec: tokens_per_step as f64 / step_start.elapsed().as_secs_f64().max(1e-9),
                    elapsed_s: elapsed,
                    memory_gib: crate::device::memory_in_use_bytes(&self.device)
                        .map(|b| b as f64 / (1u64 << 30) as f64),
                    aux_loss: None,
                }))?;
                bar.inc(1);
                bar.set_message(&format!("layer {slot} loss {value:.4}"));
                let layer_done = step + 1 == steps;
                if layer_done {
                    tracing::info!(layer = slot, path = %path, initial = format!("{:.4}", progress_state.current_initial_loss.unwrap_or(f64::NAN)), last = format!("{value:.4}"), "distilled");
                    progress_state.layers.push(BlockRecord {
                        slot,
                        path: path.clone(),
                        initial_loss: progress_state.current_initial_loss.take().unwrap_or(f64::NAN),
                        final_loss: value,
                        steps,
                    });
                }
                let interrupted = crate::train::interrupt_requested();
                let save_every = self.train.save_every.unwrap_or(100);
                if layer_done || interrupted || (save_every > 0 && done % save_every == 0) {
                    let state = CheckpointState {
                        format: FORMAT,
                        step: done,
                        total_steps: total,
                        seed: self.seed,
                        fingerprint: self.fingerprint.clone(),
                        optimizer: optimizer.kind().into(),
                        data: crate::data::SamplerState {
                            seed: self.seed,
                            word_pos: 0,
                        },
                        dropout_word_pos: rng.get_word_pos(),
                        elapsed_s: elapsed,
                        tokens_seen,
                        loss: value,
                        extra: serde_json::to_value(&progress_state).map_err(|e| {
                            UpcycleError::Serialize {
                                what: "the blockwise progress",
                                detail: e.to_string(),
                            }
                        })?,
                        files: Default::default(),
                    };
                    let dir = checkpoint::save(
                        &ck_root,
                        &state,
                        &self.student.vars.named_vars(),
                        &optimizer,
                        self.train.keep_checkpoints,
                    )?;
                    tracing::debug!("checkpoint {}", dir.display());
                    if interrupted {
                        return Err(TrainError::Interrupted {
                            step: done,
                            checkpoint: dir,
                        }
                        .into());
                    }
                }
            }
        }
        Ok(BlockwiseOutcome {
            layers: progress_state.layers,
            resumed_from: resumed.map(|c| c.state.step),
        })
    }

    /// The newest complete checkpoint whose files match their hashes, loaded into the student
    /// (or none: a fresh start). Corrupt ones are skipped with a warning; unreadable ones only
    /// when a readable one remains.
    fn resume(&self, ck_root: &Path) -> Result<Option<checkpoint::Checkpoint>, UpcycleError> {
        if self.fresh {
            if ck_root.exists() {
                tracing::warn!("--fresh: removing old checkpoints in {}", ck_root.display());
                std::fs::remove_dir_all(ck_root).map_err(|e| TrainError::io(ck_root, e))?;
            }
            return Ok(None);
        }
        let mut first_error = None;
        for ck in checkpoint::resumable(ck_root)? {
            if let Err(e) = ck.verify() {
                tracing::warn!("skipping checkpoint {}: {e}", ck.dir.display());
                first_error.get_or_insert(e);
                continue;
            }
            return self.load(ck).map(Some);
        }
        match first_error {
            Some(e) => Err(e.into()),
            None => Ok(None),
        }
    }

    /// Check that `ck` belongs to this phase, and load its weights into the student.
    fn load(&self, ck: checkpoint::Checkpoint) -> Result<checkpoint::Checkpoint, UpcycleError> {
        if ck.state.fingerprint != self.fingerprint {
            return Err(TrainError::FingerprintMismatch {
                dir: ck.dir.clone(),
                found: ck.state.fingerprint.clone(),
                expected: self.fingerprint.clone(),
            }
            .into());
        }
        if ck.state.total_steps != self.student.surgery_slots.len() * self.steps {
            return Err(TrainError::Checkpoint {
                dir: ck.dir.clone(),
                reason: format!(
                    "planned for {} steps, this phase has {}",
                    ck.state.total_steps,
                    self.student.surgery_slots.len() * self.steps
                ),
            }
            .into());
        }
        ck.load_model(&self.student.vars)?;
        Ok(ck)
    }
}
