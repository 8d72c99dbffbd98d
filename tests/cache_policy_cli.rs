//! `--cache-kind auto` as a user runs it: the table on stderr, the decision stored under
//! `$CARAMBA_CACHE/policy/` and reused by the next run; unknown kinds are usage errors.

use std::path::PathBuf;

use assert_cmd::Command;

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/tiny_llama")
}

#[test]
fn auto_explains_stores_and_reuses_its_decision() {
    let cache = tempfile::tempdir().unwrap();
    let run = || {
        let out = Command::cargo_bin("caramba")
            .unwrap()
            .env("CARAMBA_CACHE", cache.path())
            .args(["generate", "-q", "--model"])
            .arg(fixture())
            .args(["--prompt", "hello", "--max-new-tokens", "3", "--json"])
            .args(["--cache-kind", "auto", "--kv-budget-mb", "0.05", "--explain"])
            .assert()
            .success()
            .get_output()
            .clone();
        String::from_utf8_lossy(&out.stderr).to_string()
    };
    let first = run();
    for name in ["fp16", "q8_0/q4_0", "q4_0+rot", "← chosen", "bytes/tok"] {
        assert!(first.contains(name), "{first}");
    }
    // 256 positions × 256 bytes of fp16 K+V per token is over the 50 kB budget.
    assert!(
        first.lines().any(|l| l.starts_with("fp16") && l.contains("over")),
        "{first}"
    );
    let stored: Vec<_> = std::fs::read_dir(cache.path().join("policy")).unwrap().collect();
    assert_eq!(stored.len(), 1);
    assert!(run().contains("stored decision"));

    let err = Command::cargo_bin("caramba")
        .unwrap()
        .args(["generate", "-q", "--model"])
        .arg(fixture())
        .args(["--prompt", "hello", "--cache-kind", "q5"])
        .assert()
        .code(2)
        .get_output()
        .stderr
        .clone();
    let err = String::from_utf8_lossy(&err);
    assert!(err.contains("q4_0") && err.contains("nf4"), "{err}");
}

#[test]
fn perplexity_json_names_the_cache_auto_chose() {
    let cache = tempfile::tempdir().unwrap();
    let data = cache.path().join("text.txt");
    std::fs::write(
        &data,
        "The capital of France is Paris, and of Italy Rome. ".repeat(8),
    )
    .unwrap();
    let out = Command::cargo_bin("caramba")
        .unwrap()
        .env("CARAMBA_CACHE", cache.path())
        .args([
            "bench",
            "perplexity",
            "-q",
            "--block-size",
            "32",
            "--json",
            "--model",
        ])
        .arg(fixture())
        .arg("--data")
        .arg(&data)
        // Gates every candidate passes and a budget only 4-bit storage fits (see above).
        .args(["--cache-kind", "auto", "--kv-budget-mb", "0.025"])
        .args([
            "--max-delta-nll",
            "10",
            "--max-ppl-ratio",
            "10",
            "--max-mean-kl",
            "10",
        ])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    let label = v["cache"].as_str().unwrap();
    assert!(label.starts_with("k=q4_0 v=q4_0"), "{label}");
}
