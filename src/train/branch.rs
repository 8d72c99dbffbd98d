//! The orchestrator's branches: snapshot the run, train each candidate strategy for
//! `eval_horizon` steps from the same snapshot (same batches, same dropout), score it on the
//! probe, and continue from the winner's state after its horizon — its steps become the run's.
//! Losing candidates cost time only; that time is counted in the logged throughput.
//!
//! A snapshot is a deep copy of the trainable weights and the optimizer state (the fused AdamW
//! updates its moments in place, so sharing them would let a candidate write into the snapshot).

use std::time::Instant;

use candle_core::Tensor;

use super::clip::GradClip;
use super::error::TrainError;
use super::metrics::{DecisionLine, MetricLine};
use super::optimizer::{Optimizer, StateTensors};
use super::orchestrator::{Orchestrator, Reason, Strategy, StrategyName, Trial, count_spikes};
use super::step::{RunState, StepReport};
use super::trainer::{Ledger, Trainer};
use crate::data::{BatchSampler, SamplerState};

/// A run's state at one step, held in memory.
pub struct Snapshot {
    /// Completed steps when it was taken.
    pub step: usize,
    pub strategy: StrategyName,
    weights: Vec<Tensor>,
    optimizer: StateTensors,
    clip: GradClip,
    sampler: SamplerState,
    dropout_word_pos: u128,
    tokens_seen: u64,
}

impl Snapshot {
    pub fn take(state: &RunState, step: usize, strategy: StrategyName) -> Result<Self, TrainError> {
        let weights = state
            .optimizer
            .vars()
            .iter()
            .map(|(_, v)| v.as_tensor().copy())
            .collect::<candle_core::Result<Vec<_>>>()?;
        Ok(Self {
            step,
            strategy,
            weights,
            optimizer: state.optimizer.snapshot()?,
            clip: state.clip.clone(),
            sampler: state.sampler.state(),
            dropout_word_pos: state.dropout.get_word_pos(),
            tokens_seen: state.tokens_seen,
        })
    }

    /// Put the weights back (into the same variables, so the model sees them).
    pub fn restore_weights(&self, state: &RunState) -> Result<(), TrainError> {
        for ((_, var), saved) in state.optimizer.vars().iter().zip(&self.weights) {
            var.set(saved)?;
        }
        Ok(())
    }

    /// Weights, batch stream, dropout stream and token count as they were (not the optimizer).
    fn restore(&self, state: &mut RunState) -> Result<(), TrainError> {
        self.restore_weights(state)?;
        state.sampler = BatchSampler::restore(self.sampler);
        state.dropout.set_word_pos(self.dropout_word_pos);
        state.tokens_seen = self.tokens_seen;
        Ok(())
    }

    /// The optimizer state, for a strategy of the same family.
    pub fn optimizer_state(&self) -> &StateTensors {
        &self.optimizer
    }

    /// The clipper as it was.
    pub fn clip(&self) -> &GradClip {
        &self.clip
    }
}

impl RunState {
    /// Train on with `strategy`: its lr ratio and clipping, and an optimizer of its kind — with
    /// `saved` state (a copy of it) when given, fresh moments otherwise; `clip` continues a
    /// clipper's state (AdaGC's averages) where the snapshot had the same mode.
    pub fn adopt(
        &mut self,
        strategy: &Strategy,
        saved: Option<&StateTensors>,
        clip: Option<&GradClip>,
    ) -> Result<(), TrainError> {
        let mut optimizer = Optimizer::new(&strategy.spec, self.optimizer.vars().to_vec())?;
        if let Some(saved) = saved {
            optimizer.restore(saved)?;
        }
        self.optimizer = optimizer;
        self.lr_scale = strategy.lr_scale;
        let fresh = strategy.grad_clip();
        self.clip = match clip {
            Some(c) if std::mem::discriminant(c) == std::mem::discriminant(&fresh) => c.clone(),
            _ => fresh,
        };
        Ok(())
    }
}

impl Trainer<'_> {
    /// Branch at `done` completed steps (see the module header); returns the completed steps after
    /// it: `done + eval_horizon`, or `done` when every candidate failed (the run is put back).
    pub(crate) fn branch(
        &self,
        state: &mut RunState,
        ledger: &mut Ledger,
        orch: &mut Orchestrator,
        done: usize,
        reason: Reason,
    ) -> Result<usize, TrainError> {
        let started = Instant::now();
        let candidates = orch.candidates();
        if !orch.active() {
            let loss_before = orch.state.detector.mean().unwrap_or(f64::NAN);
            let decision = orch.decide(done, reason, loss_before, candidates, Vec::new());
            return self.log_decision(ledger, done, decision).map(|()| done);
        }
        let horizon = orch.spec.eval_horizon;
        let base = Snapshot::take(state, done, orch.state.current)?;
        let base_strategy = orch.current();
        let loss_before = self.probe(&[], orch)?;
        let mut trials = Vec::with_capacity(candidates.len());
        let mut best: Option<(f64, Snapshot, Vec<StepReport>)> = None;
        for (k, &name) in candidates.iter().enumerate() {
            let strategy = orch.strategy(name);
            base.restore(state)?;
            let warm = strategy.shares_state_with(&base_strategy);
            state.adopt(&strategy, warm.then_some(&base.optimizer), Some(&base.clip))?;
            ledger.progress.set_message(&format!(
                "orchestrator: trying {} ({}/{})",
                name.as_str(),
                k + 1,
                candidates.len()
            ));
            let mut reports = Vec::with_capacity(horizon);
            let mut failed = false;
            for i in 0..horizon {
                let lr = ledger.schedule.lr(done + i);
                match self.step(state, done + i, lr, &mut ledger.clock) {
                    Ok(r) => reports.push(r),
                    Err(TrainError::NonFinite { .. }) => {
                        failed = true;
                        break;
                    }
                    Err(e) => return Err(e),
                }
            }
            let loss_after = if failed {
                f64::NAN
            } else {
                self.probe(&reports, orch)?
            };
            let losses: Vec<f64> = reports.iter().map(|r| r.loss).collect();
            let spikes = count_spikes(&losses, orch.spec.max_loss_increase, orch.state.detector.mean());
            let score = Orchestrator::score(loss_before, loss_after, spikes);
            trials.push(Trial {
                strategy: name,
                score,
                loss_after,
                spikes,
            });
            // why strictly greater: ties go to the earlier candidate, and the current one is first.
            if score.is_finite() && best.as_ref().is_none_or(|(s, _, _)| score > *s) {
                best = Some((score, Snapshot::take(state, done + horizon, name)?, reports));
            }
        }
        let decision = orch.decide(done, reason, loss_before, candidates, trials);
        self.log_decision(ledger, done, decision)?;
        let Some((_, end, reports)) = best else {
            // Every candidate failed: the run goes on from the branch point as it was.
            base.restore(state)?;
            state.adopt(&base_strategy, Some(&base.optimizer), Some(&base.clip))?;
            return Ok(done);
        };
        end.restore(state)?;
        state.adopt(
            &orch.strategy(end.strategy),
            Some(&end.optimizer),
            Some(&end.clip),
        )?;
        // why: the losing candidates' time is the orchestrator's cost; the logged throughput
        // includes it instead of hiding it.
        let winner_secs: f64 = reports.iter().map(|r| r.secs).sum();
        let overhead = (started.elapsed().as_secs_f64() - winner_secs).max(0.0);
        ledger.add_overhead(overhead);
        ledger.group_start = done;
        for (i, r) in reports.iter().enumerate() {
            orch.observe(r.loss);
            self.record(ledger, done + i + 1, r)?;
        }
        Ok(done + reports.len())
    }

    fn log_decision(
        &self,
        ledger: &mut Ledger,
        done: usize,
        decision: super::orchestrator::Decision,
    ) -> Result<(), TrainError> {
        tracing::info!("{}", decision.summary());
        ledger.write(&MetricLine::Decision(DecisionLine { step: done, decision }))
    }

    /// The loss a candidate is judged on: the eval batches when there is a val split, else the
    /// mean of the last tenth of `reports` (or the run's running mean before any).
    fn probe(&self, reports: &[StepReport], orch: &Orchestrator) -> Result<f64, TrainError> {
        if self.data.has_val() && self.spec.eval_iters > 0 {
            return self.evaluate();
        }
        if reports.is_empty() {
            return Ok(orch.state.detector.mean().unwrap_or(f64::NAN));
        }
        let tail = (reports.len() / 10).max(1);
        let last = &reports[reports.len() - tail..];
        Ok(last.iter().map(|r| r.loss).sum::<f64>() / tail as f64)
    }
}
