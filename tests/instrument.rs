//! Instrumentation end to end: a run's metrics lines written to metrics.jsonl and through
//! `instrument::open` (TensorBoard + events.jsonl), across a resume; then, where the Python
//! `tensorboard` package is installed, `scripts/check_tensorboard.py` reads the event files with
//! TensorBoard's own reader and compares them with metrics.jsonl. Without it the check prints a
//! skip line (CI has no Python packages).

use std::path::Path;
use std::process::Command;

use caramba::compiler::compile_str;
use caramba::instrument::{self, Instrument, InstrumentError, InstrumentKind};
use caramba::manifest::Format;
use caramba::train::fingerprint;
use caramba::train::metrics::{EvalLine, MetricLine, MetricsLog, TrainLine};

/// A loss that is not representable in f32 (so the check exercises the rounding).
fn loss_at(step: usize, session: u32) -> f64 {
    5.0 / (1.0 + step as f64 / 37.0) + f64::from(session) * 1e-3 + 1.0 / 3.0
}

/// Log train lines every 10 steps and an eval line every 50 in `(start, end]`, to metrics.jsonl
/// and to TensorBoard, as the trainer does.
fn session(run_dir: &Path, resumed_from: Option<usize>, end: usize, id: u32) {
    let mut metrics = MetricsLog::open(run_dir, resumed_from).expect("metrics.jsonl");
    let mut ins = instrument::open(
        &[InstrumentKind::Tensorboard],
        run_dir,
        "train",
        resumed_from,
        false,
    )
    .expect("instruments");
    let start = resumed_from.unwrap_or(0);
    for step in (start + 1..=end).filter(|s| s % 10 == 0) {
        let line = MetricLine::Train(TrainLine {
            step,
            loss: loss_at(step, id),
            lr: 3e-4 * (1.0 - step as f64 / 1000.0),
            grad_norm: 0.7,
            tokens_per_sec: 12_345.6,
            elapsed_s: step as f64 * 0.01,
            memory_gib: Some(0.25),
            aux_loss: None,
        });
        metrics.write(&line).expect("metrics line");
        ins.metrics(&line).expect("instruments");
        if step % 50 == 0 {
            let line = MetricLine::Eval(EvalLine {
                step,
                val_loss: loss_at(step, id) + 0.1,
                elapsed_s: step as f64 * 0.01,
                val_accuracy: None,
            });
            metrics.write(&line).expect("metrics line");
            ins.metrics(&line).expect("instruments");
            ins.event("checkpoint", "train", step, &serde_json::json!({"session": id}))
                .expect("event");
        }
    }
    ins.flush().expect("flush");
}

#[test]
fn tensorboard_files_match_metrics_across_a_resume() {
    let dir = tempfile::tempdir().expect("temp dir");
    let run_dir = dir.path();
    // A first session to step 300, then a resume from the checkpoint at step 200 that logs
    // steps 210..400 again with other values: stale events past 200 must be gone.
    session(run_dir, None, 300, 1);
    session(run_dir, Some(200), 400, 2);

    let events = std::fs::read_to_string(run_dir.join("events.jsonl")).expect("events.jsonl");
    let steps: Vec<u64> = events
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).expect("json")["step"]
                .as_u64()
                .expect("step")
        })
        .collect();
    assert!(
        steps.windows(2).all(|w| w[0] <= w[1]),
        "no step repeats after the resume: {steps:?}"
    );
    let tb_files = std::fs::read_dir(run_dir.join("tb").join("train"))
        .expect("tb dir")
        .count();
    assert_eq!(tb_files, 2, "one events file per session");

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/check_tensorboard.py");
    let has_tensorboard = Command::new("python3")
        .args(["-c", "import tensorboard"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_tensorboard {
        println!(
            "skip: the Python `tensorboard` package is not installed; `pip install tensorboard` to run {}",
            script.display()
        );
        return;
    }
    let out = Command::new("python3")
        .arg(&script)
        .arg(run_dir)
        .output()
        .expect("run the check");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{text}");
    assert!(out.status.success(), "check_tensorboard.py failed:\n{text}");
    assert!(
        text.contains("train/loss: 40 scalars in the files, 40 loaded, 40 in metrics.jsonl"),
        "{text}"
    );
    assert!(text.contains("eval/val_loss: 8 scalars in the files"), "{text}");

    // The check is not vacuous: one loss changed in metrics.jsonl beyond f32 rounding fails it.
    let metrics_path = run_dir.join("metrics.jsonl");
    let metrics = std::fs::read_to_string(&metrics_path).expect("metrics.jsonl");
    let first = metrics.lines().next().expect("a line");
    let mut row: serde_json::Value = serde_json::from_str(first).expect("json");
    row["loss"] = serde_json::json!(row["loss"].as_f64().expect("loss") + 1e-4);
    std::fs::write(&metrics_path, metrics.replacen(first, &row.to_string(), 1)).expect("write");
    let out = Command::new("python3")
        .arg(&script)
        .arg(run_dir)
        .output()
        .expect("run the check");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("train/loss step 10: TensorBoard"), "{err}");
}

#[test]
fn an_unwritable_tensorboard_directory_is_an_error_with_its_path() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("tb"), "a file where the directory goes").expect("write");
    let err = match instrument::open(&[InstrumentKind::Tensorboard], dir.path(), "train", None, false) {
        Ok(_) => panic!("must fail"),
        Err(e) => e,
    };
    let InstrumentError::Io { path, hint, .. } = &err else {
        panic!("{err:?}")
    };
    assert_eq!(path, &dir.path().join("tb").join("train"));
    assert!(err.to_string().contains(&path.display().to_string()), "{err}");
    assert!(
        hint.contains("remove `tensorboard` from `defaults.logging.instrument`"),
        "{hint}"
    );
}

const MANIFEST: &str = "\
version: 2
defaults:
  logging:
    instrument:
      - tensorboard
      - INSTRUMENT
targets:
  - name: quick
    data: {path: data/t.npy, block_size: 16}
    runs:
      - {id: train, steps: 10}
model:
  type: TransformerModel
  tied_embeddings: true
  embedder: {type: token, vocab_size: 256, d_model: 64}
  topology:
    type: StackedTopology
    layers:
      - type: ResidualTopology
        layers:
          - {type: RMSNormLayer, d_model: 64}
          - {type: AttentionLayer, d_model: 64, n_heads: 4}
      - {type: RMSNormLayer, d_model: 64}
";

#[test]
fn the_manifest_list_reaches_the_plan_and_bad_names_point_at_their_line() {
    let ok = compile_str(
        Path::new("t.yml"),
        &MANIFEST.replace("INSTRUMENT", "plot"),
        Format::Yaml,
    )
    .expect("compiles");
    let target = &ok.plan.targets[0];
    let train = &target.runs[0].train;
    assert_eq!(
        train.instrument,
        [InstrumentKind::Tensorboard, InstrumentKind::Live]
    );
    // Instruments do not change the weights: a run resumes under another list.
    let without = caramba::train::TrainSpec {
        instrument: Vec::new(),
        ..train.clone()
    };
    assert_eq!(
        fingerprint(&target.model, train),
        fingerprint(&target.model, &without)
    );

    let err = compile_str(
        Path::new("t.yml"),
        &MANIFEST.replace("INSTRUMENT", "tensorbord"),
        Format::Yaml,
    )
    .expect_err("unknown name");
    let p = &err.problems()[0];
    assert_eq!(
        p.headline(),
        "t.yml:6:9: defaults.logging.instrument[1]: unknown instrument `tensorbord`"
    );
    assert!(
        p.help.as_deref().is_some_and(|h| h.contains("tensorboard, tb")),
        "{p:?}"
    );

    let err = compile_str(
        Path::new("t.yml"),
        &MANIFEST.replace("INSTRUMENT", "wandb"),
        Format::Yaml,
    )
    .expect_err("wandb");
    assert!(
        err.problems()[0]
            .headline()
            .starts_with("t.yml:6:9: defaults.logging.instrument[1]: `wandb` is not supported in caramba"),
        "{}",
        err.plain()
    );
}
