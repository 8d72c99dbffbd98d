//! Exact resume: a run stopped at step K and restarted from its checkpoint continues bit-identically;
//! incomplete or corrupt checkpoints (flipped bytes included) are skipped; when none is readable
//! the run refuses and deletes nothing; another manifest's checkpoint is refused;
//! an interrupt checkpoints cleanly; a diverging run stops naming the step.

mod train_support;

use std::fs;
use std::path::Path;

use caramba::data::TokenDataset;
use caramba::model::{LanguageModel, ModelSpec, SeededVarMap};
use caramba::train::{self, MetricLine, TrainError, TrainOptions, TrainSpec, Trainer, read_metrics};
use train_support::{english_dataset, tiny_model, tiny_train_spec};

const N: usize = 24;

fn spec() -> TrainSpec {
    // why: dropout, accumulation, eval and a warmup+cosine schedule all take part in the resumed state.
    TrainSpec {
        grad_accum: 2,
        batch_size: 4,
        eval_every: 8,
        eval_iters: 2,
        save_every: Some(6),
        ..tiny_train_spec()
    }
}

fn model() -> ModelSpec {
    tiny_model(256, 32, 2, 2, 0.1)
}

fn train_losses(run_dir: &Path) -> Vec<(usize, f64, f64, f64)> {
    read_metrics(&run_dir.join("metrics.jsonl"))
        .expect("metrics")
        .into_iter()
        .filter_map(|l| {
            if let MetricLine::Train(t) = l {
                Some((t.step, t.loss, t.lr, t.grad_norm))
            } else {
                None
            }
        })
        .collect()
}

fn val_losses(run_dir: &Path) -> Vec<(usize, f64)> {
    read_metrics(&run_dir.join("metrics.jsonl"))
        .expect("metrics")
        .into_iter()
        .filter_map(|l| {
            if let MetricLine::Eval(e) = l {
                Some((e.step, e.val_loss))
            } else {
                None
            }
        })
        .collect()
}

fn opts(run_dir: &Path, stop_after: Option<usize>) -> TrainOptions {
    TrainOptions {
        stop_after,
        ..TrainOptions::new(&model(), &spec(), N, 11, run_dir)
    }
}

fn run(
    data: &TokenDataset,
    run_dir: &Path,
    stop_after: Option<usize>,
) -> Result<train::TrainSummary, TrainError> {
    train::run(&model(), &spec(), data, opts(run_dir, stop_after))
}

fn final_weights(run_dir: &Path) -> Vec<u8> {
    fs::read(run_dir.join(format!("checkpoints/step_{N:06}/model.safetensors"))).expect("final weights")
}

#[test]
fn stopped_and_resumed_run_matches_the_uninterrupted_one_bit_for_bit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = english_dataset(dir.path(), 16, 0.1);
    let whole = dir.path().join("whole");
    run(&data, &whole, None).expect("uninterrupted run");

    let split = dir.path().join("split");
    let first = run(&data, &split, Some(10)).expect("first half");
    assert_eq!(first.steps, 10);
    assert!(split.join("checkpoints/step_000010/state.json").is_file());
    // The process "dies" here: everything below is rebuilt from the run directory.
    let second = run(&data, &split, None).expect("resumed run");
    assert_eq!(second.resumed_from, Some(10));
    assert_eq!(second.steps, N);

    let (a, b) = (train_losses(&whole), train_losses(&split));
    assert_eq!(a.len(), N);
    assert_eq!(
        b.iter().map(|l| l.0).collect::<Vec<_>>(),
        (1..=N).collect::<Vec<_>>(),
        "no duplicate lines"
    );
    assert_eq!(
        a, b,
        "losses, lrs and grad norms after the resume must be bit-identical"
    );
    assert_eq!(
        val_losses(&whole),
        val_losses(&split)
            .into_iter()
            .filter(|(s, _)| *s != 10)
            .collect::<Vec<_>>()
    );
    assert_eq!(final_weights(&whole), final_weights(&split));
    // keep_checkpoints = 2
    let mut kept: Vec<String> = fs::read_dir(split.join("checkpoints"))
        .expect("checkpoints")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    kept.sort();
    assert_eq!(kept, vec!["step_000018", "step_000024"]);
}

#[test]
fn incomplete_or_corrupt_newest_checkpoint_falls_back_to_the_older_one() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = english_dataset(dir.path(), 16, 0.1);
    let reference = dir.path().join("reference");
    run(&data, &reference, Some(18)).expect("reference");

    for damage in ["no state.json", "truncated weights"] {
        let run_dir = dir.path().join(damage.replace(' ', "_"));
        run(&data, &run_dir, Some(18)).expect("run to 18");
        let newest = run_dir.join("checkpoints/step_000018");
        match damage {
            "no state.json" => fs::remove_file(newest.join("state.json")).expect("remove marker"),
            _ => {
                let weights = newest.join("model.safetensors");
                let bytes = fs::read(&weights).expect("weights");
                fs::write(&weights, &bytes[..bytes.len() / 2]).expect("truncate");
            }
        }
        assert!(train::latest_complete(&run_dir.join("checkpoints")).is_some());
        let resumed = run(&data, &run_dir, Some(18)).expect("resume");
        assert_eq!(
            resumed.resumed_from,
            Some(12),
            "{damage}: must resume from the older checkpoint"
        );
        assert_eq!(train_losses(&run_dir), train_losses(&reference), "{damage}");
    }
}

/// Flip one random bit in the second half of `path` (past the safetensors header: the file still
/// parses, only a value changes).
fn flip_a_bit(path: &Path) {
    let mut bytes = fs::read(path).expect("read");
    let i = rand::random_range(bytes.len() / 2..bytes.len());
    bytes[i] ^= 1 << rand::random_range(0..8);
    fs::write(path, &bytes).expect("write");
}

#[test]
fn a_checkpoint_with_flipped_bytes_is_not_loaded() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = english_dataset(dir.path(), 16, 0.1);
    let reference = dir.path().join("reference");
    run(&data, &reference, Some(18)).expect("reference");
    for file in ["model.safetensors", "optimizer.safetensors"] {
        let run_dir = dir.path().join(file);
        run(&data, &run_dir, Some(12)).expect("run to 12");
        run(&data, &run_dir, Some(18)).expect("run to 18");
        let newest = run_dir.join("checkpoints/step_000018");
        let state: serde_json::Value =
            serde_json::from_slice(&fs::read(newest.join("state.json")).expect("state")).expect("json");
        assert_eq!(state["files"][file].as_str().map(str::len), Some(64), "{state}");
        flip_a_bit(&newest.join(file));
        let resumed = run(&data, &run_dir, Some(18)).expect("resume");
        assert_eq!(
            resumed.resumed_from,
            Some(12),
            "{file}: must resume from the older checkpoint"
        );
        assert_eq!(train_losses(&run_dir), train_losses(&reference), "{file}");
    }
}

#[test]
fn when_no_state_json_is_readable_the_run_refuses_and_deletes_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = english_dataset(dir.path(), 16, 0.1);
    let run_dir = dir.path().join("run");
    run(&data, &run_dir, Some(12)).expect("run to 12");
    let metrics_before = fs::read(run_dir.join("metrics.jsonl")).expect("metrics");
    let ck = run_dir.join("checkpoints");
    let garbage: Vec<u8> = (0..64).map(|_| rand::random::<u8>() | 0x80).collect();
    let mut states = Vec::new();
    for step in [6, 12] {
        let state = ck.join(format!("step_{step:06}/state.json"));
        fs::write(&state, &garbage).expect("damage");
        states.push(state);
    }
    let err = run(&data, &run_dir, None).expect_err("nothing readable to resume from");
    assert!(matches!(err, TrainError::UnreadableCheckpoints { .. }), "{err}");
    assert_eq!(err.exit_code(), 1);
    for state in &states {
        assert!(err.to_string().contains(&state.display().to_string()), "{err}");
    }
    assert_eq!(
        fs::read(run_dir.join("metrics.jsonl")).expect("metrics"),
        metrics_before
    );
    for step in [6, 12] {
        assert!(
            ck.join(format!("step_{step:06}/model.safetensors")).is_file(),
            "step {step} kept"
        );
    }
    // Only the newest unreadable: resume from the older one; the unreadable one's weights stay.
    let run_dir = dir.path().join("newest_unreadable");
    run(&data, &run_dir, Some(12)).expect("run to 12");
    let ck = run_dir.join("checkpoints");
    fs::write(ck.join("step_000012/state.json"), &garbage).expect("damage");
    let resumed = run(&data, &run_dir, Some(18)).expect("resume");
    assert_eq!(resumed.resumed_from, Some(6));
    let aside: Vec<_> = fs::read_dir(&ck)
        .expect("checkpoints")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.to_string_lossy().contains("step_000012.unreadable-"))
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    assert!(aside[0].join("model.safetensors").is_file());
}

#[test]
fn a_checkpoint_of_another_manifest_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = english_dataset(dir.path(), 16, 0.1);
    let run_dir = dir.path().join("run");
    run(&data, &run_dir, Some(6)).expect("first run");
    let other = TrainSpec { lr: 1e-3, ..spec() };
    let err = train::run(
        &model(),
        &other,
        &data,
        TrainOptions::new(&model(), &other, N, 11, &run_dir),
    )
    .expect_err("fingerprint differs");
    assert!(matches!(err, TrainError::FingerprintMismatch { .. }), "{err}");
    assert!(err.to_string().contains("step_000006"), "{err}");
    // --fresh discards the old run instead.
    let fresh = TrainOptions {
        fresh: true,
        stop_after: Some(2),
        ..TrainOptions::new(&model(), &other, N, 11, &run_dir)
    };
    let summary = train::run(&model(), &other, &data, fresh).expect("fresh run");
    assert_eq!((summary.resumed_from, summary.steps), (None, 2));
    assert_eq!(train_losses(&run_dir).len(), 2);
}

#[test]
fn an_interrupt_checkpoints_after_the_current_step() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = english_dataset(dir.path(), 16, 0.1);
    let run_dir = dir.path().join("run");
    let vars = SeededVarMap::new(11);
    let lm = LanguageModel::build(
        &model(),
        vars.var_builder(candle_core::DType::F32, &candle_core::Device::Cpu),
    )
    .expect("model");
    let trainer = Trainer::new(lm, vars, &spec(), &data, opts(&run_dir, None)).expect("trainer");
    trainer
        .interrupt_handle()
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let err = trainer.run().expect_err("interrupted");
    let TrainError::Interrupted { step, checkpoint } = &err else {
        panic!("expected Interrupted, got {err}")
    };
    assert_eq!(*step, 1);
    assert!(checkpoint.join("state.json").is_file());
    assert_eq!(err.exit_code(), 130);
    let resumed = run(&data, &run_dir, Some(3)).expect("resume");
    assert_eq!(resumed.resumed_from, Some(1));
}

#[test]
fn a_diverging_run_stops_naming_the_step_and_keeps_the_last_good_checkpoint() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = english_dataset(dir.path(), 16, 0.1);
    let run_dir = dir.path().join("run");
    let spec = TrainSpec {
        optimizer: caramba::train::OptimizerKind::Sgd,
        momentum: 0.0,
        lr: 1e30,
        warmup_steps: 0,
        grad_clip: 0.0,
        schedule: caramba::train::ScheduleKind::Constant,
        save_every: Some(1),
        ..spec()
    };
    let err = train::run(
        &model(),
        &spec,
        &data,
        TrainOptions::new(&model(), &spec, N, 11, &run_dir),
    )
    .expect_err("must diverge");
    let TrainError::NonFinite { step, .. } = err else {
        panic!("expected NonFinite, got {err}")
    };
    assert!(step >= 2, "step 1 starts from finite weights");
    let last = train::latest_complete(&run_dir.join("checkpoints")).expect("a good checkpoint remains");
    assert_eq!(last.state.step, step - 1);
    assert!(last.state.loss.is_finite());
}
