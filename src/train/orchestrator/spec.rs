//! The `train.orchestrator:` block: when the orchestrated trainer looks at a run, what it may try,
//! and how it scores. Every field has the seed's default; the block's presence turns it on.
//!
//! ```yaml
//! train:
//!   orchestrator: {decision_interval: 500, eval_horizon: 100, initial_strategy: as_written}
//! ```

use serde::{Deserialize, Serialize};

use super::strategy::StrategyName;

/// `disabled` (train as written), `monitor` (detect and log what it would do) or `active`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OrchestratorMode {
    Disabled,
    Monitor,
    #[default]
    Active,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct OrchestratorSpec {
    /// `false` is the same as `mode: disabled`. Default: true.
    pub enabled: bool,
    /// Default: active.
    pub mode: OrchestratorMode,
    /// Steps between two periodic looks at a run that is not improving. Default: 500.
    pub decision_interval: usize,
    /// Fewest steps between two decisions (hysteresis). Default: 200.
    pub min_steps_between_switches: usize,
    /// Steps each candidate strategy trains from the branch point before it is scored. Default: 100.
    pub eval_horizon: usize,
    /// Strategies tried at a decision, the current one included. Default: 3.
    pub max_candidates: usize,
    /// The strategy of the first step. Default: conservative_adamw (the seed's); `as_written`
    /// trains with the `train:` block's own optimizer, lr and clipping.
    pub initial_strategy: StrategyName,
    /// The strategy a non-finite loss or gradient switches to, from the last checkpoint's
    /// weights. Default: spike_resistant.
    pub safety_strategy: StrategyName,
    /// Spikes since the last decision that force one. Default: 3.
    pub max_spikes_before_switch: usize,
    /// A step is a spike when its loss exceeds this many times the running mean (EMA, β 0.9) of
    /// the losses before it. Default: 1.5.
    pub max_loss_increase: f64,
    /// The lr every strategy's ratio multiplies. Default: the `train:` block's `lr`.
    pub portfolio_base_lr: Option<f64>,
    /// The strategies a decision may choose from (the initial and safety ones are always in).
    /// Default: all five of the seed's portfolio.
    pub portfolio: Option<Vec<StrategyName>>,
    /// Adaptive per-parameter clipping (AdaGC) in the strategies that use it; `false` gives them
    /// global-norm clipping instead. Default: true.
    pub use_adagc: bool,
    /// Loss nowcasting: not implemented; `true` is refused with a message.
    pub use_nowcasting: bool,
    /// Stop with an error when the safety strategy itself produces a non-finite loss, instead of
    /// restoring again. Default: true.
    pub fail_fast: bool,
}

impl Default for OrchestratorSpec {
    fn default() -> Self {
        Self {
            enabled: true,
            mode: OrchestratorMode::Active,
            decision_interval: 500,
            min_steps_between_switches: 200,
            eval_horizon: 100,
            max_candidates: 3,
            initial_strategy: StrategyName::ConservativeAdamw,
            safety_strategy: StrategyName::SpikeResistant,
            max_spikes_before_switch: 3,
            max_loss_increase: 1.5,
            portfolio_base_lr: None,
            portfolio: None,
            use_adagc: true,
            use_nowcasting: false,
            fail_fast: true,
        }
    }
}

impl OrchestratorSpec {
    /// The mode in effect (`enabled: false` wins).
    pub fn effective_mode(&self) -> OrchestratorMode {
        if self.enabled {
            self.mode
        } else {
            OrchestratorMode::Disabled
        }
    }

    /// What is wrong with the block, as (field, reason) pairs.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if self.decision_interval == 0 {
            out.push(("decision_interval", "must be at least 1".to_string()));
        }
        if self.eval_horizon == 0 {
            out.push(("eval_horizon", "must be at least 1".to_string()));
        }
        if self.max_candidates < 2 {
            out.push((
                "max_candidates",
                "must be at least 2 (the current strategy and one other)".to_string(),
            ));
        }
        if !(self.max_loss_increase.is_finite() && self.max_loss_increase > 1.0) {
            out.push(("max_loss_increase", "must be a number above 1".to_string()));
        }
        if self
            .portfolio_base_lr
            .is_some_and(|lr| !(lr.is_finite() && lr > 0.0))
        {
            out.push(("portfolio_base_lr", "must be a positive number".to_string()));
        }
        if self.portfolio.as_ref().is_some_and(|p| p.is_empty()) {
            out.push((
                "portfolio",
                "lists no strategy; leave it out for the whole portfolio".to_string(),
            ));
        }
        if self.use_nowcasting {
            out.push((
                "use_nowcasting",
                "loss nowcasting is not implemented in caramba; remove the key or set it to false"
                    .to_string(),
            ));
        }
        out
    }
}
