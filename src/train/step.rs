//! One optimizer step, and the state it changes: `grad_accum` micro-batches forward and backward,
//! the gradients gathered detached in f32, bounded (global-norm or adaptive clipping) and applied
//! at the scheduled lr times the strategy's ratio. The plain loop and the orchestrator's
//! candidates run the same function, so a branch trains exactly as the run does.

use candle_core::{DType, Tensor};
use rand_chacha::ChaCha8Rng;

use super::clip::GradClip;
use super::error::TrainError;
use super::optimizer::Optimizer;
use super::phase_clock::PhaseClock;
use super::trainer::{Trainer, in_phase, lm_loss};
use crate::data::{BatchSampler, Split};
use crate::model::ForwardCtx;

/// Everything a step changes (and a checkpoint or a branch snapshot saves).
pub struct RunState {
    pub optimizer: Optimizer,
    pub sampler: BatchSampler,
    pub dropout: ChaCha8Rng,
    pub tokens_seen: u64,
    /// Multiplies the schedule's lr (1 outside an orchestrated run).
    pub lr_scale: f64,
    /// Global-norm or AdaGC clipping, with AdaGC's state.
    pub clip: GradClip,
}

/// What one step did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepReport {
    /// Mean over the micro-batches of the model's own loss.
    pub loss: f64,
    /// Mean weighted auxiliary loss (MoE load balancing), where the model has one.
    pub aux_loss: Option<f64>,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// The lr the update used.
    pub lr: f64,
    /// Wall time of the step.
    pub secs: f64,
}

impl Trainer<'_> {
    /// Optimizer step `step` (0-based) at the schedule's `scheduled_lr` × `state.lr_scale`.
    /// A non-finite loss or gradient norm is [`TrainError::NonFinite`], before the update.
    pub(crate) fn step(
        &self,
        state: &mut RunState,
        step: usize,
        scheduled_lr: f64,
        clock: &mut PhaseClock,
    ) -> Result<StepReport, TrainError> {
        let spec = &self.spec;
        let failed = |phase| in_phase(step + 1, phase, &self.device, spec.batch_size);
        clock.start();
        let started = std::time::Instant::now();
        let lr = scheduled_lr * state.lr_scale;
        let vars = state.optimizer.vars().to_vec();
        let mut grads: Vec<Option<Tensor>> = vec![None; vars.len()];
        let mut loss_sum = 0f64;
        let (mut aux_sum, mut has_aux) = (0f64, false);
        for _ in 0..spec.grad_accum {
            let (xs, ys) =
                self.data
                    .batch(Split::Train, spec.batch_size, &mut state.sampler, &self.device)?;
            clock.lap("data");
            let (step_loss, aux) = {
                let mut ctx = ForwardCtx::train(&mut state.dropout);
                let logits = self.model.forward(&xs, &mut ctx).map_err(failed("forward"))?;
                let loss = match &self.loss {
                    Some(loss) => loss(&xs, &logits, &ys),
                    None => lm_loss(&logits, &ys),
                }
                .map_err(failed("loss"))?;
                (loss, ctx.aux_loss().map_err(failed("auxiliary loss"))?)
            };
            let value = f64::from(step_loss.to_scalar::<f32>().map_err(failed("forward"))?);
            // why: `loss` stays the model's own loss (comparable with models without auxiliary
            // losses); the weighted auxiliary sum is logged beside it.
            let step_loss = match aux {
                Some(aux) => {
                    let aux_value = aux.to_dtype(DType::F32).and_then(|a| a.to_scalar::<f32>());
                    aux_sum += f64::from(aux_value.map_err(failed("forward"))?);
                    has_aux = true;
                    let aux = aux.to_dtype(step_loss.dtype()).map_err(failed("loss"))?;
                    (step_loss + aux).map_err(failed("loss"))?
                }
                None => step_loss,
            };
            clock.lap("forward");
            if !value.is_finite() {
                return Err(TrainError::NonFinite {
                    step: step + 1,
                    loss: value,
                });
            }
            loss_sum += value;
            let scaled = if spec.grad_accum > 1 {
                (step_loss / spec.grad_accum as f64)?
            } else {
                step_loss
            };
            let store = scaled.backward().map_err(failed("backward"))?;
            clock.lap("backward");
            super::gradients::detached_f32(&store, &vars)
                .and_then(|more| super::gradients::accumulate(&mut grads, more))
                .map_err(failed("gathering gradients"))?;
        }
        clock.lap("gather grads");
        let grad_norm = state.clip.clip(&mut grads, &vars).map_err(failed("clipping"))?;
        clock.lap("clip");
        if !grad_norm.is_finite() {
            return Err(TrainError::NonFinite {
                step: step + 1,
                loss: grad_norm,
            });
        }
        state.optimizer.step(&grads, lr).map_err(failed("optimizer"))?;
        clock.lap("optimizer");
        drop(grads);
        crate::device::trim_memory_pool(&self.device);
        state.tokens_seen += (spec.batch_size * spec.grad_accum * self.data.block_size()) as u64;
        Ok(StepReport {
            loss: loss_sum / spec.grad_accum as f64,
            aux_loss: has_aux.then(|| aux_sum / spec.grad_accum as f64),
            grad_norm,
            lr,
            secs: started.elapsed().as_secs_f64(),
        })
    }
}
