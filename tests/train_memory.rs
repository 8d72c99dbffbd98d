//! Training's live memory is flat from step to step: nothing keeps a finished step's tensors.
//!
//! On the H100 (2026-12-06) GPU memory grew by one step's activations per step until out of
//! memory, because the optimizers' moments were computed from gradients that still recorded the
//! forward graph (src/train/gradients.rs). The CPU shows the same leak through glibc's counters of
//! heap in use, which the trainer logs as `memory_gib` in `metrics.jsonl`: Lion and SGD with
//! momentum update their state with candle ops on every device (AdamW's CPU update is in place).
//! `gpu_kernels::training_memory_is_flat_on_the_gpu` checks the GPU.

mod train_support;

use caramba::train::{self, MetricLine, OptimizerKind, TrainOptions, read_metrics};
use train_support::{english_dataset, tiny_model, tiny_train_spec};

/// `memory_gib` of each train line of a 200-step run with `optimizer`.
fn memory_by_step(optimizer: OptimizerKind) -> Vec<(usize, f64)> {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = english_dataset(dir.path(), 64, 0.1);
    let model = tiny_model(256, 64, 2, 4, 0.0);
    let spec = caramba::train::TrainSpec {
        optimizer,
        momentum: 0.9,
        save_every: Some(1000),
        ..tiny_train_spec()
    };
    let run_dir = dir.path().join("run");
    let opts = TrainOptions::new(&model, &spec, 200, 11, &run_dir);
    train::run(&model, &spec, &data, opts).expect("train");
    read_metrics(&run_dir.join("metrics.jsonl"))
        .expect("metrics")
        .into_iter()
        .filter_map(|l| match l {
            MetricLine::Train(t) => Some((t.step, t.memory_gib.expect("memory_gib is logged on the CPU"))),
            _ => None,
        })
        .collect()
}

#[test]
fn live_memory_after_step_200_is_within_2_percent_of_step_50() {
    for optimizer in [OptimizerKind::Lion, OptimizerKind::Sgd, OptimizerKind::Adamw] {
        let memory = memory_by_step(optimizer);
        let at = |step: usize| memory.iter().find(|(s, _)| *s == step).expect("logged").1;
        let (early, late) = (at(50), at(200));
        println!("{optimizer:?}: heap in use {early:.4} GiB after step 50, {late:.4} GiB after step 200");
        assert!(early > 0.0, "{optimizer:?}: no heap in use reported");
        assert!(
            (late - early).abs() <= 0.02 * early,
            "{optimizer:?}: live memory moved from {early:.4} to {late:.4} GiB between steps 50 and 200 \
             (per step: {:?})",
            memory.iter().step_by(25).collect::<Vec<_>>()
        );
    }
}
