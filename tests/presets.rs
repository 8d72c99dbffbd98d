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
