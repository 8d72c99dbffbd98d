//! SWATS and PIDAO through the whole trainer: both lower the loss on real English, and a SWATS
//! run stopped before or after its switch to SGD resumes bit-identically from its checkpoint.

mod train_support;

use std::path::Path;

use caramba::data::TokenDataset;
use caramba::train::{self, MetricLine, OptimizerKind, TrainOptions, TrainSpec, read_metrics};
use train_support::{english_dataset, tiny_model, tiny_train_spec};

fn train_losses(run_dir: &Path) -> Vec<(usize, f64, f64, f64)> {
    read_metrics(&run_dir.join("metrics.jsonl"))
        .expect("metrics")
        .into_iter()
        .filter_map(|l| match l {
            MetricLine::Train(t) => Some((t.step, t.loss, t.lr, t.grad_norm)),
            _ => None,
        })
        .collect()
}

fn run(data: &TokenDataset, spec: &TrainSpec, steps: usize, run_dir: &Path, stop_after: Option<usize>) {
    let model = tiny_model(256, 32, 1, 2, 0.0);
    let opts = TrainOptions {
        stop_after,
        ..TrainOptions::new(&model, spec, steps, 5, run_dir)
    };
    train::run(&model, spec, data, opts).expect("train");
}

#[test]
fn swats_and_pidao_lower_the_loss_on_english() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = english_dataset(dir.path(), 32, 0.0);
    // why the lrs: SWATS's Adam phase takes Adam's; PIDAO's proportional term is an SGD step,
    // which needs a larger lr to move a fresh transformer in 40 steps.
    for (optimizer, lr) in [(OptimizerKind::Swats, 3e-3), (OptimizerKind::Pidao, 5e-2)] {
        let spec = TrainSpec {
            optimizer,
            lr,
            ..tiny_train_spec()
        };
        let run_dir = dir.path().join(format!("{optimizer:?}"));
        run(&data, &spec, 40, &run_dir, None);
        let losses = train_losses(&run_dir);
        let first: f64 = losses[..5].iter().map(|l| l.1).sum::<f64>() / 5.0;
        let last: f64 = losses[35..].iter().map(|l| l.1).sum::<f64>() / 5.0;
        println!("{optimizer:?}: mean loss of steps 1–5 {first:.4}, of steps 36–40 {last:.4}");
        assert!(
            last < 0.9 * first && losses.iter().all(|l| l.1.is_finite()),
            "{optimizer:?}: {first} → {last}"
        );
    }
}

#[test]
fn a_swats_run_resumes_bit_identically_before_and_after_its_switch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = english_dataset(dir.path(), 16, 0.0);
    // A tolerance no |Λ − γ| exceeds: SWATS switches to SGD at step 8 (if Λ > 0 there; else at
    // the first later step where it is), between the two stops below.
    let mut spec = TrainSpec {
        optimizer: OptimizerKind::Swats,
        batch_size: 4,
        save_every: Some(4),
        ..tiny_train_spec()
    };
    spec.swats.tolerance = 1e9;
    spec.swats.min_steps = 8;
    let n = 16;
    let whole = dir.path().join("whole");
    run(&data, &spec, n, &whole, None);
    let state = candle_core::safetensors::load(
        whole.join(format!("checkpoints/step_{n:06}/optimizer.safetensors")),
        &candle_core::Device::Cpu,
    )
    .expect("optimizer state");
    let switched_at = state
        .get("swats.switch_step")
        .and_then(|t| t.to_vec1::<f64>().ok())
        .map(|v| v[0]);
    assert!(
        switched_at.is_some_and(|s| s > 6.0 && s <= 12.0),
        "SWATS switches between the two stops: {switched_at:?}"
    );
    for stop in [6, 12] {
        let split = dir.path().join(format!("split{stop}"));
        run(&data, &spec, n, &split, Some(stop));
        run(&data, &spec, n, &split, None);
        assert_eq!(
            train_losses(&whole),
            train_losses(&split),
            "stopped after step {stop}: losses, lrs and grad norms must be bit-identical"
        );
    }
}
