//! `caramba run` of a classifier target (`system: mlp_classifier | vit`): fetch the data when it is
//! missing, load and split it, then per run: train, evaluate on the test split, and record.
//!
//! A run directory holds, besides the header every run writes: `split.json` (the row indices of
//! train / val / test, for twins that must use the same split), `metrics.json` (the target's
//! `metrics:` on the test split, plus the confusion matrix), `summary.json`, `model.safetensors`,
//! and in `artifacts/` the confusion matrix, the misclassified test images and the training curves.

use serde::Serialize;

use super::error::RunError;
use super::run_dir::RunDir;
use super::runner::RunOptions;
use crate::bench::artifacts::classifier_figures::{
    ConfusionFigure, CurvesFigure, MAX_EXAMPLES, MisclassifiedFigure, write_figure,
};
use crate::compiler::{Compiled, TargetPlan};
use crate::data::{SupervisedDataset, ensure_supervised};
use crate::manifest::MetricKind;
use crate::record::write_json;
use crate::train::{ClassifierSummary, MetricLine, TrainOptions, read_metrics, train_classifier};

/// `metrics.json`: what the target's `metrics:` asked for, on the test split.
#[derive(Debug, Serialize)]
struct TestMetrics<'a> {
    split: &'static str,
    rows: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    loss: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    accuracy: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    per_class_accuracy: Option<&'a [f64]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    per_class_count: Option<&'a [usize]>,
    /// `confusion[true][predicted]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    confusion: Option<&'a [Vec<usize>]>,
}

/// `summary.json` of a classifier run.
#[derive(Debug, Serialize)]
struct ClassifierRecord<'a> {
    run_id: &'a str,
    steps: usize,
    final_loss: f64,
    val_loss: Option<f64>,
    val_accuracy: Option<f64>,
    test_loss: f64,
    test_accuracy: f64,
    examples_per_sec: f64,
    wall_time_s: f64,
    train_time_s: f64,
    resumed_from: Option<usize>,
    checkpoint: Option<String>,
}

pub fn run_classifier(compiled: &Compiled, target: &TargetPlan, args: &RunOptions) -> Result<(), RunError> {
    let spec = target.data.supervised().ok_or_else(|| {
        RunError::usage(miette::miette!(
            "target `{}`: system `{}` needs `data: {{type: npy_supervised, …}}`",
            target.name,
            target.system
        ))
    })?;
    let data_err = |e: crate::data::DataError| {
        if e.is_usage() {
            RunError::usage(e)
        } else {
            RunError::failed(e)
        }
    };
    let written = ensure_supervised(spec).map_err(data_err)?;
    if written > 0 {
        tracing::info!(rows = written, features = %spec.features, labels = %spec.labels, "prepared");
    }
    let data = SupervisedDataset::open(spec).map_err(data_err)?;
    let split = data.split();
    tracing::info!(
        train = split.train.len(),
        val = split.val.len(),
        test = split.test.len(),
        "split (stratified, split_seed {})",
        spec.split_seed
    );
    let mut rows = Vec::new();
    for run in &target.runs {
        let mut run = run.clone();
        if let Some(device) = &args.device {
            run.train.device = device.clone();
        }
        let dir = RunDir::for_run(&args.runs_dir, &compiled.plan.name, &target.name, &run.id);
        let _lock = crate::record::DirLock::acquire(&dir.root).map_err(RunError::failed)?;
        let io = |what: &str, e: &dyn std::fmt::Display| {
            RunError::failed(miette::miette!(
                "cannot write {what} in {}: {e}",
                dir.root.display()
            ))
        };
        dir.write_header(compiled, target, &run)
            .map_err(|e| io("the run header", &e))?;
        write_json(&dir.root.join("split.json"), split).map_err(|e| io("split.json", &e))?;
        tracing::info!(run = %run.id, dir = %dir.root.display(), steps = run.steps, seed = run.seed, "training");
        let mut opts = TrainOptions::new(&target.model, &run.train, run.steps, run.seed, &dir.root);
        opts.fresh = args.fresh;
        let summary = train_classifier(&target.model, &run.train, &data, opts).map_err(|e| RunError {
            code: e.exit_code(),
            report: e.into(),
        })?;
        super::runner::publish_checkpoint(&dir, summary.checkpoint.as_deref())?;
        record(target, &run.id, &dir, &data, &summary).map_err(|e| io("the results", &e))?;
        rows.push((run.id.clone(), summary, dir));
    }
    print_table(&target.name, &rows);
    Ok(())
}

fn record(
    target: &TargetPlan,
    run_id: &str,
    dir: &RunDir,
    data: &SupervisedDataset,
    s: &ClassifierSummary,
) -> Result<(), String> {
    let wants = |m: MetricKind| target.metrics.contains(&m);
    let t = &s.test;
    let per_class = wants(MetricKind::PerClassAccuracy);
    let metrics = TestMetrics {
        split: "test",
        rows: t.rows,
        loss: wants(MetricKind::Loss).then_some(t.loss),
        accuracy: wants(MetricKind::Accuracy).then_some(t.accuracy),
        per_class_accuracy: per_class.then_some(t.per_class_accuracy.as_slice()),
        per_class_count: per_class.then_some(t.per_class_count.as_slice()),
        confusion: per_class.then_some(t.confusion.as_slice()),
    };
    write_json(&dir.root.join("metrics.json"), &metrics).map_err(|e| e.to_string())?;
    let record = ClassifierRecord {
        run_id,
        steps: s.steps,
        final_loss: s.final_loss,
        val_loss: s.val.as_ref().map(|v| v.loss),
        val_accuracy: s.val.as_ref().map(|v| v.accuracy),
        test_loss: t.loss,
        test_accuracy: t.accuracy,
        examples_per_sec: s.examples_per_sec,
        wall_time_s: s.wall_time_s,
        train_time_s: s.train_time_s,
        resumed_from: s.resumed_from,
        checkpoint: s.checkpoint.as_ref().map(|p| p.display().to_string()),
    };
    write_json(&dir.root.join("summary.json"), &record).map_err(|e| e.to_string())?;
    figures(target, run_id, dir, data, s)
}

fn figures(
    target: &TargetPlan,
    run_id: &str,
    dir: &RunDir,
    data: &SupervisedDataset,
    s: &ClassifierSummary,
) -> Result<(), String> {
    let art = dir.artifacts();
    let t = &s.test;
    let name = format!("{} / {run_id}", target.name);
    write_figure(
        &ConfusionFigure {
            title: format!(
                "{name}: test confusion matrix ({} rows, accuracy {:.2}%)",
                t.rows,
                100.0 * t.accuracy
            ),
            confusion: t.confusion.clone(),
        },
        &art,
        "confusion_matrix",
    )?;
    if let Some(img) = data.image() {
        let wrong: Vec<_> = t.predictions.iter().filter(|(_, y, p)| y != p).collect();
        // why: the pictures show ink from 0 to 1 whatever the data's scale.
        let examples = wrong
            .iter()
            .take(MAX_EXAMPLES)
            .map(|&&(row, y, p)| {
                let px = data.row(row);
                let hi = px.iter().copied().fold(f32::MIN, f32::max).max(1e-6);
                let lo = px.iter().copied().fold(f32::MAX, f32::min).min(0.0);
                let first_channel: Vec<f32> = px
                    .iter()
                    .step_by(img.channels.max(1))
                    .map(|v| (v - lo) / (hi - lo))
                    .collect();
                (first_channel, y, p)
            })
            .collect();
        write_figure(
            &MisclassifiedFigure {
                title: format!(
                    "{name}: misclassified test images ({} of {}{}), true → predicted",
                    wrong.len(),
                    t.rows,
                    if wrong.len() > MAX_EXAMPLES {
                        format!("; first {MAX_EXAMPLES} shown")
                    } else {
                        String::new()
                    }
                ),
                height: img.height,
                width: img.width,
                examples,
                total: wrong.len(),
            },
            &art,
            "misclassified",
        )?;
    }
    let lines =
        read_metrics(&dir.root.join(crate::train::metrics::METRICS_FILE)).map_err(|e| e.to_string())?;
    let (mut train_loss, mut val_loss, mut val_accuracy) = (Vec::new(), Vec::new(), Vec::new());
    for line in &lines {
        match line {
            MetricLine::Train(l) => train_loss.push((l.step as f64, l.loss)),
            MetricLine::Eval(e) => {
                val_loss.push((e.step as f64, e.val_loss));
                if let Some(a) = e.val_accuracy {
                    val_accuracy.push((e.step as f64, a));
                }
            }
            MetricLine::Decision(_) => {}
        }
    }
    write_figure(
        &CurvesFigure {
            title: format!("{name}: training curves"),
            train_loss,
            val_loss,
            val_accuracy,
            test_accuracy: Some(t.accuracy),
        },
        &art,
        "training_curves",
    )?;
    Ok(())
}

fn print_table(target: &str, rows: &[(String, ClassifierSummary, RunDir)]) {
    println!("\ntarget `{target}`");
    println!(
        "{:<16} {:>7} {:>10} {:>10} {:>10} {:>10} {:>9}  run directory",
        "run", "steps", "loss", "val acc", "test loss", "test acc", "train s"
    );
    for (id, s, dir) in rows {
        let val = s
            .val
            .as_ref()
            .map_or("-".to_string(), |v| format!("{:.2}%", 100.0 * v.accuracy));
        println!(
            "{:<16} {:>7} {:>10.4} {:>10} {:>10.4} {:>9.2}% {:>9.1}  {}",
            id,
            s.steps,
            s.final_loss,
            val,
            s.test.loss,
            100.0 * s.test.accuracy,
            s.train_time_s,
            dir.root.display()
        );
    }
}
