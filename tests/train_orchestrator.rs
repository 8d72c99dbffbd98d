//! The orchestrated trainer on a real corpus: an unstable run (lr far too high) makes it branch,
//! the same seed gives the same decisions, a run stopped mid-way resumes to the same weights and
//! the same decision history, and a non-finite step switches to the safety strategy from the last
//! checkpoint's weights instead of stopping the run.

mod train_support;

use std::fs;
use std::path::Path;

use caramba::data::TokenDataset;
use caramba::model::ModelSpec;
use caramba::train::orchestrator::{OrchestratorSpec, Reason, StrategyName};
use caramba::train::{self, MetricLine, TrainError, TrainOptions, TrainSpec, read_metrics};
use train_support::{english_dataset, tiny_model, tiny_train_spec};

const N: usize = 40;

fn model() -> ModelSpec {
    tiny_model(256, 32, 2, 2, 0.1)
}

fn spec(lr: f64, orchestrator: OrchestratorSpec) -> TrainSpec {
    TrainSpec {
        lr,
        batch_size: 4,
        eval_every: 0,
        save_every: Some(8),
        orchestrator: Some(orchestrator),
        ..tiny_train_spec()
    }
}

fn unstable() -> TrainSpec {
    spec(
        0.05,
        OrchestratorSpec {
            initial_strategy: StrategyName::AsWritten,
            decision_interval: 12,
            min_steps_between_switches: 6,
            eval_horizon: 4,
            max_spikes_before_switch: 1,
            portfolio_base_lr: Some(3e-3),
            ..OrchestratorSpec::default()
        },
    )
}

fn run(
    spec: &TrainSpec,
    data: &TokenDataset,
    dir: &Path,
    stop_after: Option<usize>,
) -> Result<train::TrainSummary, TrainError> {
    let opts = TrainOptions {
        stop_after,
        ..TrainOptions::new(&model(), spec, N, 5, dir)
    };
    train::run(&model(), spec, data, opts)
}

fn lines(dir: &Path) -> Vec<MetricLine> {
    read_metrics(&dir.join("metrics.jsonl")).expect("metrics")
}

/// Train and decision lines without their timings.
fn record(dir: &Path) -> Vec<String> {
    lines(dir)
        .into_iter()
        .filter_map(|l| match l {
            MetricLine::Train(t) => Some(format!("train {} {} {} {}", t.step, t.loss, t.lr, t.grad_norm)),
            MetricLine::Decision(d) => Some(format!("decision {}", serde_json::to_string(&d).expect("json"))),
            MetricLine::Eval(_) => None,
        })
        .collect()
}

fn weights(dir: &Path) -> Vec<u8> {
    fs::read(dir.join(format!("checkpoints/step_{N:06}/model.safetensors"))).expect("final weights")
}

#[test]
fn an_unstable_run_branches_deterministically_and_resumes_with_its_decisions() {
    let tmp = tempfile::tempdir().expect("tmp");
    let data = english_dataset(tmp.path(), 32, 0.0);
    let spec = unstable();
    let (a, b, c) = (tmp.path().join("a"), tmp.path().join("b"), tmp.path().join("c"));
    let summary = run(&spec, &data, &a, None).expect("orchestrated run");
    assert_eq!(summary.steps, N);
    let decisions: Vec<_> = lines(&a)
        .into_iter()
        .filter_map(|l| match l {
            MetricLine::Decision(d) => Some(d.decision),
            _ => None,
        })
        .collect();
    assert!(!decisions.is_empty(), "no decision in {:?}", record(&a));
    let first = &decisions[0];
    // lr 0.05 leaves the loss stuck near the bytes' unigram entropy or spiking: either makes it look.
    assert!(
        matches!(first.reason, Reason::Spikes | Reason::Plateau),
        "{first:?}"
    );
    assert_eq!(first.from, StrategyName::AsWritten);
    assert_eq!(first.trials.len(), 3, "{first:?}");
    // The branch's winner is the best score, and its horizon became the run's steps.
    let best = first
        .trials
        .iter()
        .max_by(|x, y| x.score.total_cmp(&y.score))
        .expect("trials");
    assert_eq!(first.to, best.strategy);
    let steps: Vec<usize> = lines(&a)
        .into_iter()
        .filter_map(|l| match l {
            MetricLine::Train(t) => Some(t.step),
            _ => None,
        })
        .collect();
    assert_eq!(steps, (1..=N).collect::<Vec<_>>(), "every step logged once");

    run(&spec, &data, &b, None).expect("same seed");
    assert_eq!(record(&a), record(&b), "same seed, same decisions and losses");

    let stopped = run(&spec, &data, &c, Some(24)).expect("first part");
    // A branch that starts before the stop runs to its horizon (the uninterrupted run's steps).
    assert!((24..24 + 4).contains(&stopped.steps), "{stopped:?}");
    let resumed = run(&spec, &data, &c, None).expect("resumed");
    assert_eq!(resumed.resumed_from, Some(stopped.steps));
    assert_eq!(record(&a), record(&c), "a resumed run takes the same decisions");
    assert_eq!(weights(&a), weights(&c), "and ends at the same weights");
}

#[test]
fn a_non_finite_step_switches_to_the_safety_strategy_and_training_goes_on() {
    let tmp = tempfile::tempdir().expect("tmp");
    let data = english_dataset(tmp.path(), 32, 0.0);
    // as_written at lr 1e4 goes non-finite within a few steps; the safety strategy's lr is the
    // base lr 3e-3.
    let spec = spec(
        1e4,
        OrchestratorSpec {
            initial_strategy: StrategyName::AsWritten,
            portfolio_base_lr: Some(3e-3),
            ..OrchestratorSpec::default()
        },
    );
    let dir = tmp.path().join("run");
    let summary = run(&spec, &data, &dir, None).expect("the run survives");
    assert!(summary.final_loss.is_finite());
    let switches: Vec<_> = lines(&dir)
        .into_iter()
        .filter_map(|l| match l {
            MetricLine::Decision(d) if d.decision.reason == Reason::NonFinite => Some(d.decision),
            _ => None,
        })
        .collect();
    assert_eq!(switches.len(), 1, "{:?}", record(&dir));
    assert_eq!(switches[0].to, StrategyName::SpikeResistant);

    // Without a usable safety strategy the run stops with the step named.
    let hopeless = TrainSpec {
        orchestrator: Some(OrchestratorSpec {
            initial_strategy: StrategyName::AsWritten,
            safety_strategy: StrategyName::AsWritten,
            ..OrchestratorSpec::default()
        }),
        ..spec.clone()
    };
    let err = run(&hopeless, &data, &tmp.path().join("hopeless"), None).expect_err("diverges");
    assert!(matches!(err, TrainError::NonFinite { .. }), "{err}");
}

#[test]
fn bad_orchestrator_settings_are_refused_before_training() {
    let tmp = tempfile::tempdir().expect("tmp");
    let data = english_dataset(tmp.path(), 32, 0.0);
    let spec = spec(
        3e-3,
        OrchestratorSpec {
            max_candidates: 1,
            use_nowcasting: true,
            ..OrchestratorSpec::default()
        },
    );
    let err = run(&spec, &data, &tmp.path().join("run"), None).expect_err("refused");
    let text = err.to_string();
    assert!(text.contains("max_candidates"), "{text}");
}

#[test]
fn a_run_with_tensorboard_writes_its_scalars_and_decisions_through_the_instruments() {
    let tmp = tempfile::tempdir().expect("tmp");
    let data = english_dataset(tmp.path(), 32, 0.0);
    let spec = TrainSpec {
        instrument: vec![caramba::instrument::InstrumentKind::Tensorboard],
        ..unstable()
    };
    let dir = tmp.path().join("run");
    run(&spec, &data, &dir, None).expect("run");
    let tb = fs::read_dir(dir.join("tb/run")).expect("tb/<run id>").count();
    assert_eq!(tb, 1, "one events file");
    let events = fs::read_to_string(dir.join("events.jsonl")).expect("events.jsonl");
    let kinds: Vec<(String, u64)> = events
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("json");
            (
                v["type"].as_str().unwrap_or("").to_string(),
                v["step"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    let metric_steps: Vec<u64> = kinds
        .iter()
        .filter(|(k, _)| k == "metrics")
        .map(|(_, s)| *s)
        .collect();
    assert_eq!(
        metric_steps,
        (1..=N as u64).collect::<Vec<_>>(),
        "one metrics event a logged step"
    );
    assert!(
        kinds.iter().any(|(k, _)| k == "orchestrator"),
        "the decision is an event: {kinds:?}"
    );
    let has_tensorboard = std::process::Command::new("python3")
        .args(["-c", "import tensorboard"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_tensorboard {
        println!("skip: the Python `tensorboard` package is not installed (pip install tensorboard)");
        return;
    }
    let out = std::process::Command::new("python3")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/check_tensorboard.py"))
        .arg(&dir)
        .output()
        .expect("run the check");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains(&format!("train/loss: {N} scalars")), "{text}");
}

#[test]
fn an_adagc_run_checkpoints_its_averages_and_resumes_exactly() {
    let tmp = tempfile::tempdir().expect("tmp");
    let data = english_dataset(tmp.path(), 32, 0.0);
    let spec = TrainSpec {
        clip: caramba::train::spec::ClipKind::Adagc,
        adagc: caramba::train::spec::AdaGcSpec {
            warmup: 3,
            ..Default::default()
        },
        orchestrator: None,
        ..unstable()
    };
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    run(&spec, &data, &a, None).expect("straight");
    assert!(
        a.join(format!(
            "checkpoints/step_{N:06}/{}",
            caramba::train::checkpoint::ADAGC_FILE
        ))
        .is_file(),
        "the AdaGC state is in the checkpoint"
    );
    run(&spec, &data, &b, Some(13)).expect("first part");
    run(&spec, &data, &b, None).expect("resumed");
    assert_eq!(record(&a), record(&b));
    assert_eq!(weights(&a), weights(&b));
    // The clipping is AdaGC's, not the global norm's: a run that clips globally differs.
    let global = TrainSpec {
        orchestrator: None,
        ..unstable()
    };
    let c = tmp.path().join("c");
    run(&global, &data, &c, None).expect("global");
    assert_ne!(record(&a), record(&c));
}
