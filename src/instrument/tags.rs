//! The standard scalar tags, and the scalars of a `metrics.jsonl` line under them.
//!
//! | tag                    | from `metrics.jsonl`          |
//! |------------------------|-------------------------------|
//! | `train/loss`           | train line `loss`             |
//! | `train/lr`             | `lr`                          |
//! | `train/grad_norm`      | `grad_norm` (before clipping) |
//! | `train/tokens_per_sec` | `tokens_per_sec`              |
//! | `train/memory_gib`     | `memory_gib` (where reported) |
//! | `train/aux_loss`       | `aux_loss` (where there is one) |
//! | `eval/val_loss`        | eval line `val_loss`          |
//! | `eval/val_accuracy`    | `val_accuracy` (classifiers)  |
//!
//! Other callers name their own under a phase prefix, as the original did: `train/blockwise/…`,
//! `train/global/…` (upcycling), `verify/compare/…`, `verify/eval/…`, `verify/fidelity/…`,
//! `verify/kvcache/…`, `bench/<benchmark>/…`.

use crate::train::metrics::MetricLine;

pub const TRAIN_LOSS: &str = "train/loss";
pub const TRAIN_LR: &str = "train/lr";
pub const TRAIN_GRAD_NORM: &str = "train/grad_norm";
pub const TRAIN_TOKENS_PER_SEC: &str = "train/tokens_per_sec";
pub const TRAIN_MEMORY_GIB: &str = "train/memory_gib";
pub const TRAIN_AUX_LOSS: &str = "train/aux_loss";
pub const EVAL_VAL_LOSS: &str = "eval/val_loss";
pub const EVAL_VAL_ACCURACY: &str = "eval/val_accuracy";

/// The scalars of one metrics line under the standard tags (optional fields only when present);
/// log them at `line.step()`.
pub fn metric_scalars(line: &MetricLine) -> Vec<(&'static str, f64)> {
    match line {
        MetricLine::Train(l) => {
            let mut out = vec![
                (TRAIN_LOSS, l.loss),
                (TRAIN_LR, l.lr),
                (TRAIN_GRAD_NORM, l.grad_norm),
                (TRAIN_TOKENS_PER_SEC, l.tokens_per_sec),
            ];
            out.extend(l.memory_gib.map(|v| (TRAIN_MEMORY_GIB, v)));
            out.extend(l.aux_loss.map(|v| (TRAIN_AUX_LOSS, v)));
            out
        }
        MetricLine::Eval(l) => {
            let mut out = vec![(EVAL_VAL_LOSS, l.val_loss)];
            out.extend(l.val_accuracy.map(|v| (EVAL_VAL_ACCURACY, v)));
            out
        }
        // An orchestrator decision is an event, not scalars (see `Instruments::metrics`).
        MetricLine::Decision(_) => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::train::metrics::{EvalLine, TrainLine};

    #[test]
    fn train_and_eval_lines() {
        let train = MetricLine::Train(TrainLine {
            step: 10,
            loss: 2.5,
            lr: 3e-4,
            grad_norm: 1.5,
            tokens_per_sec: 1000.0,
            elapsed_s: 9.0,
            memory_gib: Some(0.5),
            aux_loss: None,
        });
        assert_eq!(
            metric_scalars(&train),
            [
                ("train/loss", 2.5),
                ("train/lr", 3e-4),
                ("train/grad_norm", 1.5),
                ("train/tokens_per_sec", 1000.0),
                ("train/memory_gib", 0.5),
            ]
        );
        let eval = MetricLine::Eval(EvalLine {
            step: 10,
            val_loss: 2.75,
            elapsed_s: 9.5,
            val_accuracy: Some(0.9),
        });
        assert_eq!(
            metric_scalars(&eval),
            [("eval/val_loss", 2.75), ("eval/val_accuracy", 0.9)]
        );
    }
}
