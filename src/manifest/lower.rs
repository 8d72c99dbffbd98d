//! Lowering: the typed manifest → the same types with nothing left implicit.
//!
//! - every topology's `repeat: N` becomes N deep copies of its (recursively lowered) children,
//!   then `repeat: 1` (no weight sharing: each copy gets its own parameters);
//! - `seed: [1, 2, 7]` on run `train` becomes runs `train__s1`, `train__s2`, `train__s7`;
//!   a run without a seed gets `defaults.runtime.seed`, else 1337;
//! - each target gets its own copy of the model (the top-level `model:` unless it has one);
//! - a classifier target gets its system's objective and metrics when it names none;
//! - token data gets its tokenizer and val_frac (`defaults.data`, else `bytes` and 0.1), runs their
//!   `save_every` (`defaults.runtime.save_every`, else 100); the name defaults to the file stem.
//!
//! Lowering is idempotent: lowering a lowered manifest changes nothing. Run it after validation
//! (which bounds `repeat`, so the expansion is bounded too).

use crate::manifest::types::{Manifest, Seeds, TrainerKind};
use crate::topology::NodeSpec;

/// Built-in default tokenizer.
pub const DEFAULT_TOKENIZER: &str = "bytes";
/// Built-in default validation fraction.
pub const DEFAULT_VAL_FRAC: f64 = 0.1;
/// Built-in default seed.
pub const DEFAULT_SEED: u64 = 1337;
/// Built-in default checkpoint interval.
pub const DEFAULT_SAVE_EVERY: usize = 100;

/// Lower `m`; `stem` names the manifest when it has no `name:`.
pub fn lower(m: &Manifest, stem: &str) -> Manifest {
    let mut out = m.clone();
    if out.name.is_none() {
        out.name = Some(stem.to_string());
    }
    if let Some(model) = out.model.as_mut() {
        model.topology = lower_node(&model.topology);
    }
    let d = &m.defaults;
    for target in &mut out.targets {
        match target.model.as_mut() {
            Some(model) => model.topology = lower_node(&model.topology),
            None => target.model = out.model.clone(),
        }
        if let Some(data) = target.data.tokens_mut() {
            if data.tokenizer.is_none() {
                data.tokenizer = Some(
                    d.data
                        .tokenizer
                        .clone()
                        .unwrap_or_else(|| DEFAULT_TOKENIZER.into()),
                );
            }
            if data.val_frac.is_none() {
                data.val_frac = Some(d.data.val_frac.unwrap_or(DEFAULT_VAL_FRAC));
            }
        }
        // why: only non-default systems get their components written out, so that a lowered LM
        // manifest (stored in every run directory) reads as it did before systems existed.
        if !target.system.is_language_model() {
            target
                .objective
                .get_or_insert_with(|| target.system.default_objective());
            target
                .metrics
                .get_or_insert_with(|| target.system.default_metrics());
        }
        let mut runs = Vec::with_capacity(target.runs.len());
        for run in &target.runs {
            let mut run = run.clone();
            if run.train.save_every.is_none() {
                run.train.save_every = Some(d.runtime.save_every.unwrap_or(DEFAULT_SAVE_EVERY));
            }
            // `trainer: orchestrated` is the standard trainer with the orchestrator's defaults
            // wherever a run does not write its own `train.orchestrator:`.
            if target.trainer == TrainerKind::Orchestrated && run.train.orchestrator.is_none() {
                run.train.orchestrator = Some(Default::default());
            }
            match run.seed.take() {
                Some(Seeds::Many(seeds)) => {
                    for s in seeds {
                        let mut one = run.clone();
                        one.id = format!("{}__s{s}", run.id);
                        one.seed = Some(Seeds::One(s));
                        runs.push(one);
                    }
                }
                Some(one @ Seeds::One(_)) => {
                    run.seed = Some(one);
                    runs.push(run);
                }
                None => {
                    run.seed = Some(Seeds::One(d.runtime.seed.unwrap_or(DEFAULT_SEED)));
                    runs.push(run);
                }
            }
        }
        target.runs = runs;
    }
    out
}

/// Expand every `repeat` below (and at) `node`.
pub fn lower_node(node: &NodeSpec) -> NodeSpec {
    let mut out = node.clone();
    if let Some((children, repeat)) = out.children_mut() {
        let lowered: Vec<NodeSpec> = children.iter().map(lower_node).collect();
        let n = (*repeat).max(1);
        *children = std::iter::repeat_n(lowered, n).flatten().collect();
        *repeat = 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::{DropoutSpec, RmsNormSpec};
    use crate::topology::TopologySpec;

    fn norm(d: usize) -> NodeSpec {
        NodeSpec::RmsNorm(RmsNormSpec {
            d_model: d,
            eps: 1e-5,
            elementwise_affine: true,
        })
    }

    #[test]
    fn nested_repeats_multiply() {
        let inner = NodeSpec::Residual(TopologySpec {
            layers: vec![norm(4), NodeSpec::Dropout(DropoutSpec { p: 0.1 })],
            repeat: 3,
        });
        let outer = NodeSpec::Nested(TopologySpec {
            layers: vec![inner, norm(4)],
            repeat: 2,
        });
        let lowered = lower_node(&outer);
        let (children, repeat) = lowered.children().expect("topology");
        assert_eq!(repeat, 1);
        assert_eq!(children.len(), 4, "2 × (residual + norm)");
        let (inner_children, inner_repeat) = children[0].children().expect("residual");
        assert_eq!(
            (inner_children.len(), inner_repeat),
            (6, 1),
            "3 × (norm + dropout)"
        );
        assert_eq!(lower_node(&lowered), lowered, "idempotent");
    }
}
