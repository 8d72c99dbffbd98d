//! Users of the original come over unchanged: every manifest form and command line of the seed
//! documents (`../shared/seeds/`) compiles, dry-runs and runs here — or, where it can only mean
//! something Python-specific, fails with an error that says so and what to write instead.
//! One fixture per form in `tests/fixtures/manifests/seed_forms/`.

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use caramba::compiler::{Compiled, compile};
use caramba::manifest::{ManifestError, RunMode};
use serde_json::{Value, json};

const DIR: &str = "tests/fixtures/manifests/seed_forms";

fn fixture(name: &str) -> PathBuf {
    Path::new(DIR).join(name)
}

fn ok(name: &str) -> Compiled {
    compile(&fixture(name)).unwrap_or_else(|e| panic!("{name} does not compile:\n{}", e.plain()))
}

fn errors(name: &str) -> ManifestError {
    match compile(&fixture(name)) {
        Ok(_) => panic!("{name} compiled, but it should fail"),
        Err(e) => e,
    }
}

/// `err` has a problem at `path` whose message contains `message` and whose help contains `help`,
/// located at `line` of the file.
fn has(err: &ManifestError, path: &str, message: &str, help: &str, line: usize) {
    let found = err.problems().iter().find(|p| p.path == path);
    let Some(p) = found else {
        panic!("no problem at `{path}`:\n{}", err.plain())
    };
    assert!(
        p.message.contains(message),
        "{path}: {}\n{}",
        p.message,
        err.plain()
    );
    assert!(
        p.help.as_deref().unwrap_or("").contains(help),
        "{path}: help {:?}",
        p.help
    );
    assert_eq!(p.line, Some(line), "{path}: {}", err.plain());
}

fn caramba() -> Command {
    Command::cargo_bin("caramba").expect("the caramba binary is built for integration tests")
}

fn plan_json(c: &Compiled) -> Value {
    serde_json::from_str(&c.plan_json()).expect("plan json")
}

// ---------------------------------------------------------------------------------------------
// Every fixture, compiled (the integrator's guard: a new fixture must be listed here).

#[test]
fn every_fixture_is_checked() {
    let mut listed: Vec<&str> = OK.iter().chain(FAIL).copied().collect();
    listed.push("02_flat_defaults.yml");
    listed.push("15_include_env.yml");
    listed.sort();
    let mut files: Vec<String> = std::fs::read_dir(DIR)
        .expect("fixture dir")
        .filter_map(|e| {
            let p = e.ok()?.path();
            (p.extension()? == "yml").then(|| p.file_name()?.to_str().map(String::from))?
        })
        .collect();
    files.sort();
    assert_eq!(files, listed, "list every fixture in OK or FAIL");
}

const OK: &[&str] = &[
    "01_vars.yml",
    "03_v1_group.yml",
    "04_transformer_block.yml",
    "05_verify_compare.yml",
    "06_verify_eval.yml",
    "07_benchmarks.yml",
    "08_train_keys.yml",
    "11_upcycle_train_phase.yml",
    "12_mode_generate.yml",
    "13_mode_sample_chat.yml",
    "14_model_type_aliases.yml",
    "17_components.yml",
    "19_orchestrator_flat.yml",
];

const FAIL: &[&str] = &[
    "09_train_keys_pytorch.yml",
    "10_train_keys_missing.yml",
    "16_python_impl.yml",
    "18_tiktoken.yml",
];

#[test]
fn the_seed_forms_compile() {
    for name in OK {
        ok(name);
    }
}

#[test]
fn the_seed_forms_dry_run_through_the_binary() {
    for name in OK {
        let out = caramba()
            .arg(fixture(name))
            .arg("--dry-run")
            .output()
            .expect("run");
        assert_eq!(
            out.status.code(),
            Some(0),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("dry run: would run target"),
            "{name}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// What each form means.

#[test]
fn vars_keep_their_type() {
    let c = ok("01_vars.yml");
    assert_eq!(c.plan.targets[0].stats.attention_layers, 1);
}

#[test]
fn flat_v1_defaults_move_into_their_groups() {
    // why: `instrument` and `wandb*` land in `defaults.logging`, which another part of the
    // manifest owns; whatever it decides about them, nothing else of the seed's block may fail.
    match compile(&fixture("02_flat_defaults.yml")) {
        Ok(c) => {
            let d = &c.lowered.defaults;
            assert_eq!(
                d.data.tokenizer.as_deref(),
                Some("teacher"),
                "`llama` is the teacher's"
            );
            assert_eq!(d.data.val_frac, Some(0.05));
            assert_eq!(d.logging.eval_iters, Some(50));
            assert_eq!(d.runtime.save_every, Some(500));
        }
        Err(e) => {
            for p in e.problems() {
                assert!(
                    p.path.starts_with("defaults.logging."),
                    "only logging keys may be refused:\n{}",
                    e.plain()
                );
                // The moved key keeps the line it was written on.
                assert!(matches!(p.line, Some(10..=12)), "{}", e.plain());
            }
        }
    }
}

#[test]
fn a_v1_group_reads_its_data_string_run_mode_exp_and_block_size() {
    let c = ok("03_v1_group.yml");
    let plan = plan_json(&c);
    let t = &plan["targets"][0];
    assert_eq!(t["data"]["path"], "data/tiny.npy");
    assert_eq!(t["data"]["block_size"], 32, "train.block_size → data.block_size");
    assert_eq!(t["data"]["tokenizer"], "bytes");
    assert_eq!(t["data"]["val_frac"], 0.1);
    let run = &c.plan.targets[0].runs[0];
    assert_eq!(
        (run.mode, run.exp.as_deref(), run.seed),
        (RunMode::Train, Some("baseline"), 1337)
    );
    assert_eq!(run.train.eval_iters, 5);
    assert_eq!(run.train.save_every, Some(100));
    assert_eq!(
        c.lowered.targets[0]
            .model
            .as_ref()
            .map(|m| format!("{:?}", m.kind))
            .as_deref(),
        Some("TransformerModel")
    );
}

#[test]
fn expected_attn_mode_is_checked_against_the_model() {
    let text = std::fs::read_to_string(fixture("03_v1_group.yml"))
        .expect("fixture")
        .replace("attn_mode: standard", "attn_mode: decoupled");
    let e = caramba::compiler::compile_str(&fixture("x.yml"), &text, caramba::manifest::Format::Yaml)
        .expect_err("the model has standard attention");
    has(
        &e,
        "targets[0].runs[0].expected.attn_mode",
        "expects `attn_mode: decoupled`, but the model has `mode: standard`",
        "",
        42,
    );
}

#[test]
fn a_data_string_without_a_block_size_says_what_to_write() {
    let text = std::fs::read_to_string(fixture("03_v1_group.yml"))
        .expect("fixture")
        .replace("block_size: 32, ", "");
    let e = caramba::compiler::compile_str(&fixture("x.yml"), &text, caramba::manifest::Format::Yaml)
        .expect_err("no block size");
    has(
        &e,
        "targets[0].data",
        "a data path alone has no block size",
        "data: {path: data/tiny.npy, block_size: 512}",
        35,
    );
}

#[test]
fn verify_compare_batches_become_the_targets_verify_batches() {
    let c = ok("05_verify_compare.yml");
    let t = &c.plan.targets[0];
    assert_eq!(t.upcycle.verify_batches, 2);
    assert_eq!(t.runs[0].phase, caramba::upcycle::Phase::Blockwise);
    let v = &t.runs[0].verify[0];
    assert_eq!(v["type"], "compare");
    assert!(v.get("batches").is_none(), "{v}");
}

#[test]
fn verify_eval_takes_string_answers_and_ignores_tokenizer_with_warnings() {
    let c = ok("06_verify_eval.yml");
    let v = &c.plan.targets[0].runs[0].verify[0];
    assert_eq!(v["cases"][1]["answer"], 0, "\"Paris\" is choice 0");
    assert!(
        v.get("tokenizer").is_none() && v.get("context_window").is_none(),
        "{v}"
    );
    let warned: Vec<&str> = c.warnings.iter().map(|w| w.path.as_str()).collect();
    assert!(
        warned.contains(&"targets[0].runs[0].verify.tokenizer"),
        "{warned:?}"
    );
    assert!(
        warned.contains(&"targets[0].runs[0].verify.context_window"),
        "{warned:?}"
    );
    let text = std::fs::read_to_string(fixture("06_verify_eval.yml"))
        .expect("fixture")
        .replace("answer: \"Paris\"", "answer: \"Rome\"");
    let e = caramba::compiler::compile_str(&fixture("x.yml"), &text, caramba::manifest::Format::Yaml)
        .expect_err("not a choice");
    has(
        &e,
        "targets[0].runs[0].verify.cases[1].answer",
        "answer \"Rome\" is not one of the choices",
        "\"Paris\", \"London\"",
        42,
    );
}

#[test]
fn the_seed_benchmark_form_reads_with_its_field_names() {
    let c = ok("07_benchmarks.yml");
    let b = serde_json::to_value(&c.plan.targets[0].benchmarks).expect("json");
    assert_eq!(
        b,
        json!([
            {"kind": "perplexity", "data": "fineweb_100m.npy", "blocks": 100, "block_size": 2048},
            {"kind": "latency", "prompt_lens": [128, 512, 1024, 2048], "gen_lens": [64, 128, 256],
             "batch_sizes": [1], "warmup": 3, "runs": 10, "cache_kinds": ["fp32"]},
            {"kind": "memory", "seq_lens": [512, 1024, 2048, 4096], "batch_sizes": [1],
             "cache_kinds": ["fp16", "q8_0", "q4_0"], "measure": true}
        ])
    );
    assert!(
        c.warnings.is_empty(),
        "models: [teacher, student] is what caramba measures"
    );
}

#[test]
fn a_bad_value_in_a_moved_field_points_at_what_was_written() {
    let text = std::fs::read_to_string(fixture("07_benchmarks.yml"))
        .expect("fixture")
        .replace("num_batches: 100", "num_batches: 0");
    let e = caramba::compiler::compile_str(&fixture("x.yml"), &text, caramba::manifest::Format::Yaml)
        .expect_err("zero blocks");
    has(&e, "targets[0].benchmarks[0].blocks", "at least 1", "", 32);
}

#[test]
fn train_keys_of_the_pytorch_trainer_are_read() {
    let c = ok("08_train_keys.yml");
    let runs = &c.plan.targets[0].runs;
    let get = |id: &str| &runs.iter().find(|r| r.id == id).expect(id).train;
    assert_eq!(get("dtype_auto").dtype, "auto");
    assert_eq!(get("amp_auto").dtype, "auto");
    assert_eq!(
        (get("accumulate").batch_size, get("accumulate").grad_accum),
        (4, 8)
    );
    assert_eq!(get("amp").dtype, "f16");
    assert_eq!(
        (get("mps").device.as_str(), get("mps").dtype.as_str()),
        ("metal", "f32")
    );
    assert_eq!(get("compile_auto").dtype, "auto");
}

#[test]
fn pytorch_machinery_is_refused_with_what_to_write() {
    let e = errors("09_train_keys_pytorch.yml");
    assert_eq!(e.problems().len(), 3, "{}", e.plain());
    let at = "targets[0].runs[0].train";
    has(
        &e,
        &format!("{at}.compile_model"),
        "PyTorch machinery",
        "torch.compile is PyTorch's",
        23,
    );
    has(
        &e,
        &format!("{at}.num_workers"),
        "PyTorch machinery",
        "no DataLoader workers",
        24,
    );
    has(
        &e,
        &format!("{at}.pin_memory"),
        "PyTorch machinery",
        "remove the key",
        25,
    );
}

#[test]
fn missing_features_are_refused_with_what_to_write() {
    let e = errors("10_train_keys_missing.yml");
    has(
        &e,
        "targets[0].runs[0].train.batch_size",
        "`batch_size: auto` is not supported",
        "write a number",
        18,
    );
    has(
        &e,
        "targets[0].runs[0].train.activation_checkpointing",
        "PyTorch machinery",
        "higher `grad_accum`",
        19,
    );
}

#[test]
fn flat_orchestrator_keys_become_the_orchestrator_block() {
    let c = ok("19_orchestrator_flat.yml");
    let runs = &c.plan.targets[0].runs;
    let o = runs[0].train.orchestrator.as_ref().expect("orchestrator block");
    assert_eq!(o.decision_interval, 500);
    assert_eq!(
        o.initial_strategy,
        caramba::train::orchestrator::StrategyName::ConservativeAdamw
    );
    assert!(
        runs[1].train.orchestrator.is_none(),
        "orchestrator_enabled: false tunes nothing"
    );
}

#[test]
fn train_phase_moves_to_the_run() {
    let c = ok("11_upcycle_train_phase.yml");
    assert_eq!(
        c.plan.targets[0].runs[0].phase,
        caramba::upcycle::Phase::Blockwise
    );
}

#[test]
fn generate_and_sample_modes_are_runs() {
    let c = ok("12_mode_generate.yml");
    let r = &c.plan.targets[0].runs[1];
    assert_eq!(r.mode, RunMode::Sample, "`generate` is `sample`");
    let g = r.generate.as_ref().expect("generate settings");
    assert_eq!(
        (g.max_new_tokens, g.cache_kind.as_deref(), g.cache_budget_mb),
        (128, Some("auto"), Some(1024.0))
    );
    let c = ok("13_mode_sample_chat.yml");
    let modes: Vec<RunMode> = c.plan.targets[0].runs.iter().map(|r| r.mode).collect();
    assert_eq!(modes, [RunMode::Train, RunMode::Sample, RunMode::Chat]);
}

#[test]
fn model_type_aliases_are_the_v1_table() {
    let c = ok("14_model_type_aliases.yml");
    let kind = c.lowered.targets[0]
        .model
        .as_ref()
        .map(|m| format!("{:?}", m.kind));
    assert_eq!(kind.as_deref(), Some("GPTModel"));
}

#[test]
fn include_and_env_references_are_resolved() {
    // SAFETY: set before any thread of this test reads it; no other test reads this variable.
    unsafe { std::env::set_var("CARAMBA_SEED_STEPS", "3") };
    let c = ok("15_include_env.yml");
    assert_eq!(c.plan.targets[0].runs[0].steps, 3);
    assert_eq!(
        c.plan.targets[0].stats.attention_layers, 2,
        "the included block repeats twice"
    );
    let text = std::fs::read_to_string(fixture("15_include_env.yml"))
        .expect("fixture")
        .replace("CARAMBA_SEED_STEPS", "CARAMBA_SEED_UNSET_VARIABLE");
    let e = caramba::compiler::compile_str(&fixture("x.yml"), &text, caramba::manifest::Format::Yaml)
        .expect_err("unset");
    has(
        &e,
        "targets[0].runs[0].steps",
        "environment variable `CARAMBA_SEED_UNSET_VARIABLE` is not set",
        "export CARAMBA_SEED_UNSET_VARIABLE",
        15,
    );
}

#[test]
fn python_impl_is_refused() {
    let e = errors("16_python_impl.yml");
    has(
        &e,
        "targets[0].system.impl",
        "`impl: python:my_project.models:MyModel` loads Python code",
        "system: language_model",
        9,
    );
}

#[test]
fn component_specs_are_read() {
    let c = ok("17_components.yml");
    let t = &c.plan.targets[0];
    assert_eq!(t.data.tokens().map(|d| d.block_size), Some(32));
    assert_eq!(t.model_path, "targets[0].model");
}

#[test]
fn tiktoken_is_refused() {
    let e = errors("18_tiktoken.yml");
    has(
        &e,
        "defaults.data.tokenizer",
        "tiktoken library",
        "tokenizer.json",
        6,
    );
}

// ---------------------------------------------------------------------------------------------
// Command lines.

fn stdout_of(args: &[&str]) -> String {
    let out = caramba().args(args).output().expect("run");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).to_string()
}

#[test]
fn run_group_is_run_target() {
    let m = fixture("03_v1_group.yml");
    let m = m.to_str().expect("utf-8");
    let out = stdout_of(&["run", m, "--group", "baseline", "--dry-run"]);
    assert!(out.contains("would run target `baseline`"), "{out}");
}

#[test]
fn a_manifest_without_a_subcommand_is_run() {
    let m = fixture("13_mode_sample_chat.yml");
    let m = m.to_str().expect("utf-8");
    let out = stdout_of(&[m, "--target", "tiny", "--dry-run"]);
    assert!(out.contains("would run target `tiny`"), "{out}");
    let out = stdout_of(&[m, "--group", "tiny", "--dry-run"]);
    assert!(out.contains("would run target `tiny`"), "{out}");
}

#[test]
fn the_legacy_flags_map_onto_run() {
    let m = fixture("13_mode_sample_chat.yml");
    let m = m.to_str().expect("utf-8");
    let out = stdout_of(&[
        "--manifest",
        m,
        "--mode",
        "sample",
        "--ckpt",
        "some/model",
        "--seed",
        "9",
        "--exp",
        "baseline",
        "--data",
        "other.npy",
        "--dry-run",
    ]);
    assert!(out.contains("run train: mode=sample model=some/model"), "{out}");
    assert!(out.contains("would run target `tiny` (3 runs)"), "{out}");
    let out = caramba()
        .args(["--manifest", m, "--entity", "me", "--project", "p", "--dry-run"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stderr).contains("caramba has no W&B"));
    let out = caramba().args(["--mode", "train"]).output().expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("caramba needs a manifest"));
    let out = caramba()
        .args(["--manifest", m, "--exp", "gqa", "--dry-run"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("labels in this target: baseline"));
}

#[test]
fn top_level_flags_before_a_subcommand_are_refused_not_ignored() {
    let m = fixture("13_mode_sample_chat.yml");
    let m = m.to_str().expect("utf-8");
    // Global flags still go anywhere.
    stdout_of(&["-q", "run", m, "--dry-run"]);
    let out = caramba()
        .args(["--seed", "3", "run", m, "--dry-run"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("the original's flags"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_originals_preset_paths_find_the_presets() {
    let out = stdout_of(&["config/presets/standard_transformer.yml", "--dry-run"]);
    assert!(out.contains("dry run: would run target"), "{out}");
    let out = stdout_of(&[
        "caramba/config/presets/llama32_1b_dba.yml",
        "--target",
        "quick",
        "--dry-run",
    ]);
    assert!(out.contains("would run target `quick`"), "{out}");
    let out = stdout_of(&[
        "run",
        "caramba/config/presets/llama32_1b_dba.yml",
        "--group",
        "quick",
        "--dry-run",
    ]);
    assert!(out.contains("would run target `quick`"), "{out}");
    let out = stdout_of(&[
        "compile",
        "caramba/config/presets/llama32_1b_dba.yml",
        "--print-plan",
    ]);
    assert!(out.contains("target paper"), "{out}");
}

/// Train a tiny model, then sample from it and chat with it, as `mode: sample|chat` runs and as
/// the original's `--mode sample --ckpt` command line.
#[test]
fn sample_and_chat_runs_load_the_trained_model() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        dir.path().join("corpus.txt"),
        "the cat sat on the mat. ".repeat(200),
    )
    .expect("corpus");
    let manifest = "\
version: 2
name: tiny_sample
model:
  embedder: {type: token, vocab_size: 256, d_model: 32}
  topology:
    type: StackedTopology
    layers:
      - {type: RMSNormLayer, d_model: 32}
      - {type: AttentionLayer, d_model: 32, n_heads: 2}
      - {type: RMSNormLayer, d_model: 32}
targets:
  - name: tiny
    data: {path: tiny.npy, block_size: 16, prepare: {input: [corpus.txt]}}
    runs:
      - {id: train, steps: 3, train: {batch_size: 2, eval_every: 0, log_every: 1}}
      - {id: sample, mode: sample, generate: {prompt: \"the \", max_new_tokens: 8, temperature: 0.0, cache_kind: q8}}
      - {id: chat, mode: chat, generate: {max_new_tokens: 4, temperature: 0.0}}
";
    std::fs::write(dir.path().join("m.yml"), manifest).expect("manifest");
    let out = caramba()
        .current_dir(dir.path())
        .args(["-q", "run", "m.yml"])
        .write_stdin("hello\n/exit\n")
        .output()
        .expect("run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("the "), "{stdout}");
    let record: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("runs/tiny_sample/tiny/sample/sample.json"))
            .expect("sample.json"),
    )
    .expect("json");
    assert_eq!(record["prompt"], "the ");
    assert!(
        record["model"]
            .as_str()
            .is_some_and(|m| m.ends_with("tiny/train")),
        "{record}"
    );
    // The original's command line: every run samples from its own trained model.
    let out = caramba()
        .current_dir(dir.path())
        .args([
            "-q",
            "--manifest",
            "m.yml",
            "--mode",
            "sample",
            "--exp",
            "nothing",
        ])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2), "no run is labelled `exp: nothing`");
    let out = caramba()
        .current_dir(dir.path())
        .args([
            "-q",
            "--manifest",
            "m.yml",
            "--mode",
            "sample",
            "--ckpt",
            "runs/tiny_sample/tiny/train",
        ])
        .output()
        .expect("run");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The seed's preset names exist and plan what the seed says of them: an upcycle with `compare`
/// verification after the blockwise phase, one with behavioural `eval` verification, and a single
/// Llama block in the v1 shorthand.
#[test]
fn the_seeds_preset_names_plan_what_the_seed_describes() {
    let plan = |name: &str| {
        compile(&Path::new("presets").join(name)).unwrap_or_else(|e| panic!("{name}:\n{}", e.plain()))
    };
    let c = plan("llama32_1b_dba_compare.yml");
    let t = &c.plan.targets[0];
    let runs: Vec<(&str, usize)> = t.runs.iter().map(|r| (r.id.as_str(), r.steps)).collect();
    assert_eq!(runs, [("blockwise", 500), ("finetune", 2000)]);
    assert_eq!(t.runs[0].verify[0]["type"], "compare");
    assert_eq!(t.upcycle.verify_batches, 2, "compare on 2 batches");
    let kinds: Vec<&str> = t.benchmarks.iter().map(|b| b.kind()).collect();
    assert_eq!(kinds, ["perplexity", "memory"]);

    let c = plan("llama32_1b_dba_eval.yml");
    let t = &c.plan.targets[0];
    assert_eq!(t.runs[1].verify[0]["type"], "eval");
    assert_eq!(
        t.runs[1].verify[0]["cases"][2]["answer"], 0,
        "\"Paris\" is choice 0"
    );
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);

    let c = plan("llama_block.yml");
    let t = &c.plan.targets[0];
    assert_eq!(t.stats.attention_layers, 1, "a single block");
    let modes: Vec<(RunMode, usize)> = t.runs.iter().map(|r| (r.mode, r.steps)).collect();
    assert_eq!(modes, [(RunMode::Train, 300), (RunMode::Sample, 0)]);
    assert_eq!(t.data.block_size(), 128);
}
