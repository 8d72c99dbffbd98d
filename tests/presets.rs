//! Every preset compiles; the small from-scratch ones run end to end through the binary (a few
//! steps, in a temporary directory, on their real data: Debian's python3.11-doc, downloaded once
//! into the cache). The upcycle presets need a teacher and minutes of CPU: they only compile here.

use std::path::{Path, PathBuf};
use std::process::Command;

use assert_cmd::cargo::CommandCargoExt;

fn presets() -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir("presets")
        .expect("presets/ exists")
        .map(|e| e.expect("readable entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yml" || e == "yaml"))
        .collect();
    out.sort();
    out
}

#[test]
fn every_preset_compiles() {
    let all = presets();
    assert!(all.len() >= 4, "expected the presets, found {all:?}");
    for p in all {
        if let Err(e) = caramba::compiler::compile(&p) {
            panic!("{} does not compile:\n{}", p.display(), e.plain());
        }
    }
}

/// apt-get can fetch the corpus here (or it is cached already).
fn corpus_reachable(cache: &Path) -> bool {
    if cache.join("python3.11-doc").exists() {
        return true;
    }
    Command::new("apt-get")
        .args(["download", "--print-uris", "python3.11-doc"])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn run_small(preset: &str, steps_from: &str) {
    let cache = std::env::var_os("CARAMBA_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").expect("HOME is set")).join(".cache/caramba")
        });
    if !corpus_reachable(&cache) {
        eprintln!("SKIP {preset}: Debian's python3.11-doc cannot be downloaded here");
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let text = std::fs::read_to_string(format!("presets/{preset}")).expect("preset");
    assert!(text.contains(steps_from), "{preset} has no `{steps_from}`");
    let manifest = dir.path().join(preset);
    std::fs::write(
        &manifest,
        text.replacen(steps_from, "steps: 24", 1)
            .replace("save_every: 100", "save_every: 3"),
    )
    .expect("write manifest");
    let run = |extra: &[&str]| {
        let out = Command::cargo_bin("caramba")
            .expect("binary")
            .current_dir(dir.path())
            .env("CARAMBA_CACHE", &cache)
            .args(["run", preset, "--target", "quick"])
            .args(extra)
            .output()
            .expect("run");
        assert!(
            out.status.success(),
            "{preset}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let stdout = run(&[]);
    assert!(stdout.contains("target `quick`"), "{stdout}");
    let name = preset.trim_end_matches(".yml");
    let run_dir = dir.path().join("runs").join(name).join("quick").join("train");
    for file in [
        "metrics.jsonl",
        "model.safetensors",
        "model_spec.json",
        "manifest.lowered.yml",
        "plan.json",
        "run.json",
        "summary.json",
    ] {
        assert!(
            run_dir.join(file).exists(),
            "{preset}: no {file} in {}",
            run_dir.display()
        );
    }
    let metrics = std::fs::read_to_string(run_dir.join("metrics.jsonl")).expect("metrics");
    assert!(metrics.lines().count() >= 1);
    // A second run finds the final checkpoint and does nothing more.
    let again = run(&[]);
    assert!(again.contains("target `quick`"));
    assert_eq!(
        std::fs::read_to_string(run_dir.join("metrics.jsonl")).expect("metrics"),
        metrics
    );
}

#[test]
fn standard_transformer_quick_runs() {
    run_small("standard_transformer.yml", "steps: 150");
}

#[test]
fn dba_quick_runs() {
    run_small("dba.yml", "steps: 200");
}

#[test]
fn moe_transformer_quick_runs() {
    run_small("moe_transformer.yml", "steps: 150");
}

#[test]
fn mamba_ssm_quick_runs() {
    run_small("mamba_ssm.yml", "steps: 150");
}

/// Run a classifier preset's `quick` target as it is (it takes seconds to a few minutes) in a
/// temporary directory; the digits come from the cache, or from PyPI on first use. Returns the
/// run directory's `metrics.json` and `summary.json`, with the directory kept alive.
fn run_classifier(preset: &str) -> Option<(serde_json::Value, serde_json::Value, tempfile::TempDir)> {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::copy(format!("presets/{preset}"), dir.path().join(preset)).expect("copy preset");
    let run = || {
        Command::cargo_bin("caramba")
            .expect("binary")
            .current_dir(dir.path())
            .args(["run", preset, "--target", "quick"])
            .output()
            .expect("run")
    };
    let out = run();
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() && stderr.contains("cannot download scikit-learn") {
        eprintln!("SKIP {preset}: the digits are not cached and PyPI cannot be reached");
        return None;
    }
    assert!(out.status.success(), "{preset}: {stderr}");
    let name = preset.trim_end_matches(".yml");
    let run_dir = dir.path().join("runs").join(name).join("quick").join("train");
    for file in [
        "metrics.jsonl",
        "metrics.json",
        "summary.json",
        "split.json",
        "model.safetensors",
        "artifacts/confusion_matrix.png",
        "artifacts/misclassified.png",
        "artifacts/training_curves.png",
    ] {
        assert!(
            run_dir.join(file).exists(),
            "{preset}: no {file} in {}",
            run_dir.display()
        );
    }
    let read = |f: &str| -> serde_json::Value {
        serde_json::from_str(&std::fs::read_to_string(run_dir.join(f)).expect("read")).expect("json")
    };
    let (metrics, summary) = (read("metrics.json"), read("summary.json"));
    // A second run finds the final checkpoint, trains nothing and reports the same test accuracy.
    let lines = std::fs::read_to_string(run_dir.join("metrics.jsonl")).expect("metrics");
    let again = run();
    assert!(
        again.status.success(),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(run_dir.join("metrics.jsonl")).expect("metrics"),
        lines
    );
    assert_eq!(read("metrics.json")["accuracy"], metrics["accuracy"]);
    Some((metrics, summary, dir))
}

#[test]
fn mlp_classifier_quick_runs_and_beats_95_percent() {
    let Some((metrics, summary, _dir)) = run_classifier("mlp_classifier.yml") else {
        return;
    };
    let acc = metrics["accuracy"].as_f64().expect("accuracy");
    assert!(acc >= 0.95, "test accuracy {acc}");
    assert_eq!(metrics["rows"], 359, "20 % of each class of 1,797 digits");
    assert_eq!(metrics["per_class_accuracy"].as_array().map(Vec::len), Some(10));
    assert_eq!(summary["steps"], 1500);
}

#[test]
fn vit_quick_runs_and_reaches_95_percent() {
    let Some((metrics, _summary, _dir)) = run_classifier("vit.yml") else {
        return;
    };
    let acc = metrics["accuracy"].as_f64().expect("accuracy");
    assert!(acc >= 0.95, "test accuracy {acc}");
}
