//! The orchestrated trainer's judgement: it watches the loss, decides when to look for a better
//! strategy, which candidates to try, and which one won. The trainer runs the candidates
//! (`Trainer::branch` in `train/branch.rs`); this module holds no tensors.
//!
//! When (after `min_steps_between_switches` steps since the last decision, and with at least
//! `eval_horizon` steps left):
//! - `max_spikes_before_switch` spikes since the last decision (phase unstable);
//! - a plateau, once half a `decision_interval` has passed;
//! - a `decision_interval` has passed and the phase is not healthy. A run whose loss falls steadily
//!   is left alone: a branch costs `(candidates − 1) · eval_horizon` extra steps, which is waste
//!   there (the seed also branched on the interval alone).
//!
//! Which: UCB over the portfolio, `avg_reward + √(2·ln(pulls_total + 1) / pulls)`, untried
//! strategies first (+∞). The seed's phase multipliers favour calming strategies ×1.5 when
//! unstable and escaping ones ×1.3 on a plateau; a multiplier divides a negative value instead
//! (multiplying it would make a favoured strategy look worse). The current strategy, the top one by
//! that value, then the best-ranked ones on an lr side (below / above the current lr) not yet
//! among the picks, up to `max_candidates`: a plateau at an lr far too high needs a lower one,
//! which the seed's plateau multiplier never offers.
//!
//! Score of a candidate: `10·(loss_before − loss_after) − 0.1·spikes`, the losses on the fixed
//! probe (the eval batches, or the last tenth of its training losses without a val split); a
//! candidate whose loss goes non-finite scores −∞. The highest wins, ties to the current strategy.
//! Its state after the horizon becomes the run's. Rewards for UCB are scores clamped to ±10.

pub mod detector;
pub mod spec;
pub mod strategy;

use serde::{Deserialize, Serialize};

pub use detector::{Detector, Phase, count_spikes};
pub use spec::{OrchestratorMode, OrchestratorSpec};
pub use strategy::{Clipping, PORTFOLIO, Strategy, StrategyName};

use crate::train::spec::TrainSpec;

/// Why a decision was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    Spikes,
    Plateau,
    Interval,
    /// A non-finite loss or gradient: the safety strategy, from the last checkpoint's weights.
    NonFinite,
}

/// A candidate's result in a decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Trial {
    pub strategy: StrategyName,
    /// `null` in JSON when the candidate failed (−∞).
    #[serde(with = "finite_or_null")]
    pub score: f64,
    /// Probe loss after the horizon (non-finite: failed).
    #[serde(with = "finite_or_null")]
    pub loss_after: f64,
    pub spikes: usize,
}

/// One decision, as logged to metrics.jsonl and the console.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    /// The step the branch started from (0-based count of completed steps).
    pub step: usize,
    pub reason: Reason,
    pub phase: Phase,
    pub from: StrategyName,
    pub to: StrategyName,
    #[serde(with = "finite_or_null")]
    pub loss_before: f64,
    /// The strategies chosen for the branch, the current one first.
    pub candidates: Vec<StrategyName>,
    /// Their results (empty in `monitor` mode and for a safety switch).
    pub trials: Vec<Trial>,
    /// `monitor` mode: what would have been tried; nothing changed.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub monitor_only: bool,
}

impl Decision {
    /// The console line.
    pub fn summary(&self) -> String {
        let trials: Vec<String> = self
            .trials
            .iter()
            .map(|t| {
                if t.score.is_finite() {
                    format!("{} {:+.3}", t.strategy.as_str(), t.score)
                } else {
                    format!("{} failed", t.strategy.as_str())
                }
            })
            .collect();
        let trials = if self.trials.is_empty() {
            self.candidates.iter().map(|c| c.as_str().to_string()).collect()
        } else {
            trials
        };
        let verb = if self.monitor_only { "would try" } else { "tried" };
        format!(
            "orchestrator at step {} ({:?}, phase {:?}): {verb} [{}] → {} (was {})",
            self.step,
            self.reason,
            self.phase,
            trials.join(", "),
            self.to.as_str(),
            self.from.as_str()
        )
    }
}

/// UCB statistics of one strategy.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Arm {
    pub pulls: usize,
    pub reward: f64,
}

/// Everything the orchestrator remembers; saved in each checkpoint's `extra`, so a resumed run
/// takes the same decisions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrchestratorState {
    pub current: StrategyName,
    pub detector: Detector,
    /// Completed steps at the last decision (or the start).
    pub last_decision: usize,
    pub arms: Vec<(StrategyName, Arm)>,
    pub decisions: usize,
    /// Safety switches in a row without a healthy decision in between.
    pub safety_switches: usize,
}

/// The orchestrator of one run.
#[derive(Debug, Clone)]
pub struct Orchestrator {
    pub spec: OrchestratorSpec,
    pub state: OrchestratorState,
    block: TrainSpec,
    base_lr: f64,
}

impl Orchestrator {
    /// A fresh orchestrator for a run trained by `block` (whose `orchestrator` is `spec`).
    pub fn new(spec: OrchestratorSpec, block: &TrainSpec) -> Self {
        let mut names: Vec<StrategyName> = spec.portfolio.clone().unwrap_or_else(|| PORTFOLIO.to_vec());
        for n in [spec.initial_strategy, spec.safety_strategy] {
            if !names.contains(&n) {
                names.push(n);
            }
        }
        let state = OrchestratorState {
            current: spec.initial_strategy,
            detector: Detector::new(spec.max_loss_increase, spec.decision_interval),
            last_decision: 0,
            arms: names.into_iter().map(|n| (n, Arm::default())).collect(),
            decisions: 0,
            safety_switches: 0,
        };
        Self {
            base_lr: spec.portfolio_base_lr.unwrap_or(block.lr),
            spec,
            state,
            block: block.clone(),
        }
    }

    /// Continue from a checkpoint's saved state.
    pub fn restore(spec: OrchestratorSpec, block: &TrainSpec, state: OrchestratorState) -> Self {
        Self {
            state,
            ..Self::new(spec, block)
        }
    }

    pub fn active(&self) -> bool {
        self.spec.effective_mode() == OrchestratorMode::Active
    }

    pub fn strategy(&self, name: StrategyName) -> Strategy {
        name.resolve(&self.block, self.base_lr, self.spec.use_adagc)
    }

    pub fn current(&self) -> Strategy {
        self.strategy(self.state.current)
    }

    /// Record a completed step's loss; returns whether it spiked.
    pub fn observe(&mut self, loss: f64) -> bool {
        self.state.detector.observe(loss)
    }

    /// Whether to branch at `done` completed steps of a run of `end` steps.
    pub fn due(&self, done: usize, end: usize) -> Option<Reason> {
        let s = &self.spec;
        let since = done - self.state.last_decision.min(done);
        if since < s.min_steps_between_switches || done + s.eval_horizon > end {
            return None;
        }
        let d = &self.state.detector;
        if d.spikes >= s.max_spikes_before_switch {
            return Some(Reason::Spikes);
        }
        match d.phase() {
            Phase::Plateau if since >= s.decision_interval / 2 => Some(Reason::Plateau),
            Phase::Healthy => None,
            _ if since >= s.decision_interval => Some(Reason::Interval),
            _ => None,
        }
    }

    /// The strategies to try, the current one first.
    pub fn candidates(&self) -> Vec<StrategyName> {
        let phase = self.state.detector.phase();
        let total: usize = self.state.arms.iter().map(|(_, a)| a.pulls).sum();
        let value = |name: StrategyName, arm: &Arm| -> f64 {
            let ucb = if arm.pulls == 0 {
                f64::INFINITY
            } else {
                arm.reward / arm.pulls as f64 + (2.0 * ((total + 1) as f64).ln() / arm.pulls as f64).sqrt()
            };
            let m = match phase {
                Phase::Unstable if name.calms() => 1.5,
                Phase::Plateau if name.escapes() => 1.3,
                _ => 1.0,
            };
            if ucb >= 0.0 { ucb * m } else { ucb / m }
        };
        // Among untried (+∞) arms the favoured ones go first, then the portfolio order.
        let favoured = |name: StrategyName| match phase {
            Phase::Unstable => name.calms(),
            Phase::Plateau => name.escapes(),
            Phase::Healthy => false,
        };
        let mut ranked: Vec<(f64, bool, usize, StrategyName)> = self
            .state
            .arms
            .iter()
            .enumerate()
            .filter(|(_, (n, _))| *n != self.state.current)
            .map(|(i, (n, a))| (value(*n, a), favoured(*n), i, *n))
            .collect();
        ranked.sort_by(|a, b| b.0.total_cmp(&a.0).then(b.1.cmp(&a.1)).then(a.2.cmp(&b.2)));
        // why: a plateau can be an lr too high as well as too low (the seed's multipliers only look
        // up there, and only down on spikes); each pick after the first prefers the best-ranked
        // strategy whose lr lies on a side of the current one not yet tried.
        let current_lr = self.current().lr_scale;
        let side = |n: StrategyName| self.strategy(n).lr_scale.total_cmp(&current_lr);
        let mut picks = vec![self.state.current];
        let mut rest: Vec<StrategyName> = ranked.into_iter().map(|r| r.3).collect();
        while picks.len() < self.spec.max_candidates && !rest.is_empty() {
            let sides: Vec<_> = picks.iter().map(|&p| side(p)).collect();
            let at = match picks.len() {
                1 => 0,
                _ => rest.iter().position(|&n| !sides.contains(&side(n))).unwrap_or(0),
            };
            picks.push(rest.remove(at));
        }
        picks
    }

    /// The score of a candidate (see the module header).
    pub fn score(loss_before: f64, loss_after: f64, spikes: usize) -> f64 {
        if loss_after.is_finite() {
            10.0 * (loss_before - loss_after) - 0.1 * spikes as f64
        } else {
            f64::NEG_INFINITY
        }
    }

    /// Take a branch's results; returns the decision (winner: best score, ties to the current).
    pub fn decide(
        &mut self,
        step: usize,
        reason: Reason,
        loss_before: f64,
        candidates: Vec<StrategyName>,
        trials: Vec<Trial>,
    ) -> Decision {
        let phase = self.state.detector.phase();
        let from = self.state.current;
        let mut to = from;
        let mut best = f64::NEG_INFINITY;
        for t in &trials {
            if t.score > best || (t.score == best && t.strategy == from) {
                (best, to) = (t.score, t.strategy);
            }
            if let Some((_, arm)) = self.state.arms.iter_mut().find(|(n, _)| *n == t.strategy) {
                arm.pulls += 1;
                arm.reward += t.score.clamp(-10.0, 10.0);
            }
        }
        let monitor_only = !self.active();
        if !monitor_only {
            self.state.current = to;
        }
        self.state.last_decision = step;
        self.state.decisions += 1;
        self.state.safety_switches = 0;
        self.state.detector.reset_after_decision();
        Decision {
            step,
            reason,
            phase,
            from,
            to,
            loss_before,
            candidates,
            trials,
            monitor_only,
        }
    }

    /// A non-finite step: switch to the safety strategy. `None` (the run must stop) when the
    /// safety strategy itself failed and `fail_fast` is on.
    pub fn safety_switch(&mut self, step: usize) -> Option<Decision> {
        let from = self.state.current;
        if self.spec.fail_fast && from == self.spec.safety_strategy && self.state.safety_switches > 0 {
            return None;
        }
        self.state.current = self.spec.safety_strategy;
        self.state.safety_switches += 1;
        self.state.last_decision = step;
        self.state.decisions += 1;
        self.state.detector.reset_after_decision();
        Some(Decision {
            step,
            reason: Reason::NonFinite,
            phase: Phase::Unstable,
            from,
            to: self.spec.safety_strategy,
            loss_before: f64::NAN,
            candidates: vec![self.spec.safety_strategy],
            trials: Vec::new(),
            monitor_only: false,
        })
    }
}

/// f64 fields that may be ±∞/NaN: JSON has no such numbers, so they are written as `null`.
mod finite_or_null {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
        if v.is_finite() {
            s.serialize_f64(*v)
        } else {
            s.serialize_none()
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
        Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NEG_INFINITY))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn orch() -> Orchestrator {
        let spec = OrchestratorSpec {
            min_steps_between_switches: 10,
            decision_interval: 40,
            eval_horizon: 5,
            max_spikes_before_switch: 2,
            ..OrchestratorSpec::default()
        };
        Orchestrator::new(spec, &TrainSpec::default())
    }

    #[test]
    fn spikes_trigger_a_decision_and_calming_strategies_are_tried_first() {
        let mut o = orch();
        for i in 0..12 {
            o.observe(3.0 - 0.01 * i as f64);
        }
        assert_eq!(o.due(12, 100), None, "healthy: no branch");
        o.observe(9.0);
        o.observe(9.5);
        assert_eq!(o.due(14, 100), Some(Reason::Spikes));
        assert_eq!(o.due(14, 18), None, "no room for the horizon");
        // current (conservative) first; spike_resistant is the other calming one.
        let c = o.candidates();
        assert_eq!(
            c,
            vec![
                StrategyName::ConservativeAdamw,
                StrategyName::SpikeResistant,
                StrategyName::AggressiveAdamw
            ]
        );
        let trials = vec![
            Trial {
                strategy: c[0],
                score: Orchestrator::score(3.0, 2.9, 0),
                loss_after: 2.9,
                spikes: 0,
            },
            Trial {
                strategy: c[1],
                score: Orchestrator::score(3.0, 2.8, 1),
                loss_after: 2.8,
                spikes: 1,
            },
            Trial {
                strategy: c[2],
                score: Orchestrator::score(3.0, f64::NAN, 0),
                loss_after: f64::NAN,
                spikes: 0,
            },
        ];
        let d = o.decide(14, Reason::Spikes, 3.0, c.clone(), trials);
        // 10·0.2 − 0.1 = 1.9 beats 10·0.1 = 1.0
        assert_eq!(
            (d.from, d.to),
            (StrategyName::ConservativeAdamw, StrategyName::SpikeResistant)
        );
        assert_eq!(o.state.current, StrategyName::SpikeResistant);
        assert_eq!(o.state.detector.spikes, 0);
        let json = serde_json::to_value(&d).expect("json");
        assert!(json["trials"][2]["score"].is_null(), "{json}");
        assert_eq!(o.due(15, 100), None, "hysteresis");
    }

    #[test]
    fn a_plateau_tries_a_lower_lr_besides_the_escapes() {
        let spec = OrchestratorSpec {
            initial_strategy: StrategyName::AsWritten,
            min_steps_between_switches: 10,
            decision_interval: 40,
            ..OrchestratorSpec::default()
        };
        let mut o = Orchestrator::new(spec, &TrainSpec::default());
        for _ in 0..20 {
            o.observe(3.0);
        }
        assert_eq!(o.due(20, 200), Some(Reason::Plateau));
        // aggressive (5×) is the favoured escape; conservative (0.1×) is the lower side.
        assert_eq!(
            o.candidates(),
            vec![
                StrategyName::AsWritten,
                StrategyName::AggressiveAdamw,
                StrategyName::ConservativeAdamw
            ]
        );
    }

    #[test]
    fn safety_switch_fails_fast_when_the_safety_strategy_fails_again() {
        let mut o = orch();
        let d = o.safety_switch(7).expect("first switch");
        assert_eq!(d.to, StrategyName::SpikeResistant);
        assert!(o.safety_switch(9).is_none());
        let state = serde_json::to_string(&o.state).expect("state");
        let back: OrchestratorState = serde_json::from_str(&state).expect("back");
        assert_eq!(back, o.state);
    }
}
