//! `caramba compile`: exit codes, the one-line summary, `--print-plan`, `--json`, diagnostics.

use assert_cmd::Command;
use serde_json::Value;

const TINY: &str = "tests/fixtures/manifests/tiny.yml";

fn caramba() -> Command {
    Command::cargo_bin("caramba").expect("the caramba binary is built for integration tests")
}

fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.path().join(name);
    std::fs::write(&path, text).expect("write manifest");
    path
}

#[test]
fn a_valid_manifest_prints_a_summary() {
    let out = caramba().args(["compile", TINY]).output().expect("run");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "ok: 2 targets, 3 runs\n");
}

#[test]
fn print_plan_shows_the_lowered_tree_then_the_ordered_plan() {
    let out = caramba()
        .args(["compile", TINY, "--print-plan"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    let expected_lines = [
        "  model.topology:",
        "    - topology=StackedTopology path=model.topology",
        "      - topology=NestedTopology path=model.topology.layers[0]",
        // `repeat: 2` of two residual blocks: the copies are shown once, under a `× 2` line.
        "        - × 2: model.topology.layers[0].layers[0..=3] repeats layers[0..=1] (shown once)",
        "          - topology=ResidualTopology path=model.topology.layers[0].layers[1]",
        "            - layer=AttentionLayer path=model.topology.layers[0].layers[0].layers[1] d_model=64 n_heads=4 \
         n_kv_heads=4 head_dim=16 mode=standard kv_values_per_token=128 rope_base=10000",
        "      - layer=LinearLayer path=model.topology.layers[2] d_in=64 d_out=256 bias=false",
        "  parameters: 139,584 (139.6K)",
        "  kv cache per token: 1,024 B f32, 512 B f16 (2 attention layers)",
    ];
    for line in expected_lines {
        assert!(
            text.lines().any(|l| l == line),
            "missing line {line:?} in:\n{text}"
        );
    }
    let order: Vec<usize> = [
        "plan:",
        "1. target quick",
        "1.1 run train:",
        "2. target seeds",
        "2.1 run train__s1:",
        "2.2 run train__s2:",
    ]
    .iter()
    .map(|needle| {
        text.find(needle)
            .unwrap_or_else(|| panic!("no {needle:?} in:\n{text}"))
    })
    .collect();
    assert!(
        order.windows(2).all(|w| w[0] < w[1]),
        "plan out of order:\n{text}"
    );
    assert!(text.contains("verify: none") && text.contains("benchmarks: none"));
    assert!(
        !text.contains("model.topology.layers[0].layers[2]"),
        "the second copy is not printed:\n{text}"
    );
}

#[test]
fn json_prints_the_plan() {
    let out = caramba().args(["compile", TINY, "--json"]).output().expect("run");
    assert_eq!(out.status.code(), Some(0));
    let plan: Value = serde_json::from_slice(&out.stdout).expect("stdout is JSON");
    assert_eq!(plan["name"], "tiny");
    assert_eq!(plan["default_target"], "quick");
    assert_eq!(plan["targets"][1]["runs"][1]["id"], "train__s2");
    assert_eq!(plan["targets"][0]["stats"]["params"], 139_584);
}

#[test]
fn a_bad_manifest_exits_2_with_path_and_position() {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = std::fs::read_to_string(TINY)
        .expect("fixture")
        .replace("n_heads: \"${n_heads}\"", "n_heads: 5");
    let path = write(&dir, "bad.yml", &text);
    let out = caramba().arg("compile").arg(&path).output().expect("run");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.yml:32:63"), "{err}");
    assert!(
        err.contains("model.topology.layers[0].layers[0].layers[1].n_heads"),
        "{err}"
    );
    assert!(err.contains("not divisible by n_heads = 5"), "{err}");
    assert!(out.stdout.is_empty());
}

#[test]
fn json_errors_are_machine_readable() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write(
        &dir,
        "bad.yml",
        "version: 2\ntargets:\n  - name: a\n    data: {path: d, block_size: 0}\n    runs: []\n",
    );
    let out = caramba()
        .arg("compile")
        .arg(&path)
        .arg("--json")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let report: Value = serde_json::from_slice(&out.stdout).expect("stdout is JSON");
    assert_eq!(report["ok"], false);
    let paths: Vec<&str> = report["problems"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|p| p["path"].as_str())
        .collect();
    assert!(paths.contains(&"targets[0].data.block_size"), "{report}");
    assert!(paths.contains(&"targets[0].runs"), "{report}");
    let first = &report["problems"][0];
    assert!(first["line"].is_u64() && first["column"].is_u64(), "{report}");
}

#[test]
fn yaml_syntax_errors_exit_2_with_line_and_column() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = write(
        &dir,
        "syntax.yml",
        "version: 2\ntargets:\n  - name: a\n   data: x\n",
    );
    let out = caramba().arg("compile").arg(&path).output().expect("run");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("syntax.yml:4:4") && err.contains("YAML syntax"),
        "{err}"
    );
}

#[test]
fn bad_files_and_usage_exit_2() {
    let dir = tempfile::tempdir().expect("tempdir");
    let toml = write(&dir, "m.toml", "version = 2\n");
    let out = caramba().arg("compile").arg(&toml).output().expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains(".yml, .yaml or .json"));
    let out = caramba()
        .args(["compile", "does/not/exist.yml"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read manifest"));
    let out = caramba().arg("compile").output().expect("run");
    assert_eq!(
        out.status.code(),
        Some(2),
        "a missing MANIFEST argument is a usage error"
    );
}
