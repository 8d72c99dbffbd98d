//! Benchmarks: the manifest `benchmarks:` block (parse, validate, plan) and `caramba bench KIND`
//! through the binary on real SmolLM2-135M (skipped, with a message, when it cannot be fetched).

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use caramba::compiler::{compile_str, render_plan};
use caramba::manifest::Format;

const HEAD: &str = "\
version: 2
model:
  type: TransformerModel
  tied_embeddings: true
  embedder: {type: token, vocab_size: 256, d_model: 16}
  topology:
    type: StackedTopology
    layers:
      - {type: RMSNormLayer, d_model: 16}
targets:
  - name: quick
    data: {path: data/t.npy, block_size: 16}
    runs: [{id: train, steps: 1}]
    benchmarks:
";

fn manifest(benchmarks: &str) -> String {
    format!("{HEAD}{benchmarks}")
}

fn first_problem(yaml: &str) -> caramba::manifest::Problem {
    match compile_str(Path::new("t.yml"), yaml, Format::Yaml) {
        Ok(_) => panic!("expected an error for:\n{yaml}"),
        Err(e) => e.problems()[0].clone(),
    }
}

#[test]
fn benchmarks_blocks_parse_with_defaults_and_show_in_the_plan() {
    let yaml = manifest(
        "      - {kind: perplexity, blocks: 2}\n      - {kind: latency, prompt_lens: [8, 16], cache_kinds: [fp16, q8_0]}\n      - {kind: memory}\n      - {kind: accuracy, tasks: [benches/tasks/python_basics.jsonl]}\n      - {kind: generation, prompts: p.txt}\n      - {kind: behavior, suite: s.yml}\n",
    );
    let c = compile_str(Path::new("t.yml"), &yaml, Format::Yaml).expect("valid");
    let t = &c.plan.targets[0];
    assert_eq!(t.benchmarks.len(), 6);
    let plan = render_plan(&c);
    for needle in [
        "benchmarks: 6",
        "perplexity  2 blocks × data.block_size tokens of the held-out data",
        "latency     prompt [8,16] × gen [32] × batch [1] × cache [fp16,q8_0], 1 warm-up + 3 timed",
        "memory      seq [512,1024,2048,4096] × batch [1] × cache [fp16,q8_0,q4_0], measured",
        "generation  p.txt (≤ 64 tokens each)",
    ] {
        assert!(plan.contains(needle), "plan lacks `{needle}`:\n{plan}");
    }
    // The plan round-trips through JSON with its typed benchmarks.
    let json = c.plan_json();
    assert!(
        json.contains("\"kind\": \"latency\"") || json.contains("\"kind\":\"latency\""),
        "{json}"
    );
}

#[test]
fn unknown_benchmark_fields_and_kinds_point_at_their_line() {
    let p = first_problem(&manifest(
        "      - {kind: perplexity}\n      - {kind: memory, seqlens: [4]}\n",
    ));
    assert_eq!(p.path, "targets[0].benchmarks[1].seqlens");
    assert!(p.message.contains("unknown field `seqlens`"), "{}", p.message);
    assert!(p.help.as_deref().is_some_and(|h| h.contains("seq_lens")), "{p:?}");
    assert_eq!(p.line, Some(16), "{}", p.headline());

    let p = first_problem(&manifest("      - kind: speed\n"));
    assert!(p.path.starts_with("targets[0].benchmarks[0]"), "{}", p.path);
    assert!(p.message.contains("unknown variant `speed`"), "{}", p.message);
    assert!(p.help.as_deref().is_some_and(|h| h.contains("latency")), "{p:?}");
    assert_eq!(p.line, Some(15), "{}", p.headline());
}

#[test]
fn empty_or_zero_grids_are_rejected_with_help() {
    let p = first_problem(&manifest("      - {kind: latency, gen_lens: [0]}\n"));
    assert_eq!(p.path, "targets[0].benchmarks[0].gen_lens");
    assert_eq!((p.line, p.column.is_some()), (Some(15), true), "{}", p.headline());
    assert!(p.help.is_some());
    let p = first_problem(&manifest("      - {kind: memory, cache_kinds: []}\n"));
    assert_eq!(p.path, "targets[0].benchmarks[0].cache_kinds");
    let p = first_problem(&manifest("      - {kind: memory, cache_kinds: [q3]}\n"));
    assert!(p.message.contains("unknown variant `q3`"), "{}", p.message);
}

/// (line, column) of the first `needle` on 1-based line `line` of `yaml`.
fn at(yaml: &str, line: usize, needle: &str) -> (Option<usize>, Option<usize>) {
    let text = yaml.lines().nth(line - 1).expect("line exists");
    let col = text
        .find(needle)
        .unwrap_or_else(|| panic!("no `{needle}` in {text:?}"))
        + 1;
    (Some(line), Some(col))
}

#[test]
fn perplexity_sets_parse_and_show_in_the_plan() {
    let yaml = manifest(concat!(
        "      - kind: perplexity\n",
        "        blocks: 2\n",
        "        sets:\n",
        "          - {name: in_domain}\n",
        "          - name: out_of_domain\n",
        "            data: {path: data/ood.npy, tokenizer: bytes, prepare: {debian_package: developers-reference, input: [\"a/*.txt\"]}}\n",
    ));
    let c = compile_str(Path::new("t.yml"), &yaml, Format::Yaml).expect("valid");
    let caramba::bench::BenchmarkSpec::Perplexity(p) = &c.plan.targets[0].benchmarks[0] else {
        panic!("perplexity")
    };
    let sets = p.text_sets();
    assert_eq!(sets.len(), 2);
    assert_eq!(
        (sets[0].name.as_str(), sets[0].data.is_none()),
        ("in_domain", true)
    );
    let data = sets[1].data.as_ref().expect("out_of_domain has data");
    assert_eq!(
        (data.path.as_str(), data.tokenizer.as_deref()),
        ("data/ood.npy", Some("bytes"))
    );
    assert_eq!(
        data.prepare.as_ref().and_then(|p| p.debian_package.as_deref()),
        Some("developers-reference")
    );
    let plan = render_plan(&c);
    let needle = "perplexity  2 blocks × data.block_size tokens of sets in_domain (held-out data), out_of_domain (data/ood.npy)";
    assert!(plan.contains(needle), "plan lacks `{needle}`:\n{plan}");
    // Without `sets:` the one set is the held-out data, named `in_domain`.
    let yaml = manifest("      - {kind: perplexity}\n");
    let c = compile_str(Path::new("t.yml"), &yaml, Format::Yaml).expect("valid");
    let caramba::bench::BenchmarkSpec::Perplexity(p) = &c.plan.targets[0].benchmarks[0] else {
        panic!("perplexity")
    };
    let names: Vec<String> = p.text_sets().into_iter().map(|s| s.name).collect();
    assert_eq!(names, ["in_domain"]);
}

#[test]
fn bad_perplexity_sets_are_located() {
    let yaml = manifest(concat!(
        "      - kind: perplexity\n",
        "        sets:\n",
        "          - {name: a}\n",
        "          - {name: a, data: {path: ood.txt, prepare: {input: []}}}\n",
    ));
    let err = compile_str(Path::new("t.yml"), &yaml, Format::Yaml).expect_err("invalid");
    let ps = err.problems();
    let find = |path: &str| {
        ps.iter()
            .find(|p| p.path == path)
            .unwrap_or_else(|| panic!("no problem at {path}: {ps:#?}"))
    };
    let p = find("targets[0].benchmarks[0].sets[1].name");
    assert!(
        p.message.contains("set name `a` is used twice (also by sets[0])"),
        "{}",
        p.message
    );
    assert_eq!((p.line, p.column), at(&yaml, 18, "name"), "{}", p.headline());
    assert!(p.headline().starts_with("t.yml:18:"), "{}", p.headline());
    let p = find("targets[0].benchmarks[0].sets[1].data.path");
    assert!(p.message.contains("writes a .npy token file"), "{}", p.message);
    assert_eq!((p.line, p.column), at(&yaml, 18, "path"), "{}", p.headline());
    let p = find("targets[0].benchmarks[0].sets[1].data.prepare.input");
    assert_eq!((p.line, p.column), at(&yaml, 18, "input"), "{}", p.headline());
    assert_eq!(ps.len(), 3, "{ps:#?}");

    // `data:` and `sets:` together.
    let yaml = manifest("      - {kind: perplexity, data: x.npy, sets: [{name: a}]}\n");
    let p = first_problem(&yaml);
    assert_eq!(p.path, "targets[0].benchmarks[0].data");
    assert!(p.message.contains("cannot be given together"), "{}", p.message);
    assert_eq!((p.line, p.column), at(&yaml, 15, "data"), "{}", p.headline());

    // Unknown fields inside a set, and inside its data block.
    let yaml =
        manifest("      - kind: perplexity\n        sets:\n          - {name: a, dat: {path: x.npy}}\n");
    let p = first_problem(&yaml);
    assert_eq!(p.path, "targets[0].benchmarks[0].sets[0].dat");
    assert!(p.message.contains("unknown field `dat`"), "{}", p.message);
    assert_eq!(p.line, Some(17), "{}", p.headline());
    let yaml = manifest(
        "      - kind: perplexity\n        sets:\n          - {name: a, data: {path: x.npy, debian_package: p}}\n",
    );
    let p = first_problem(&yaml);
    assert_eq!(p.path, "targets[0].benchmarks[0].sets[0].data.debian_package");
    assert_eq!(p.line, Some(17), "{}", p.headline());
}

// ---- the binary on SmolLM2 ------------------------------------------------------------------

fn smollm2() -> Option<&'static str> {
    match caramba::loader::fetch("smollm2-135m") {
        Ok(_) => Some("smollm2-135m"),
        Err(e) => {
            eprintln!("skipping: SmolLM2-135M could not be fetched ({e})");
            None
        }
    }
}

fn bench(kind: &str, model: &str) -> Command {
    let mut c = Command::cargo_bin("caramba").expect("the binary is built");
    c.args(["-q", "bench", kind, "--model", model]);
    c
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(name)
}

fn csv_rows(path: &Path) -> (Vec<String>, Vec<Vec<String>>) {
    let mut r = csv::Reader::from_path(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let header = r.headers().expect("header").iter().map(String::from).collect();
    let rows = r
        .records()
        .map(|rec| rec.expect("row").iter().map(String::from).collect())
        .collect();
    (header, rows)
}

fn col(header: &[String], row: &[String], name: &str) -> String {
    let i = header
        .iter()
        .position(|h| h == name)
        .unwrap_or_else(|| panic!("no column {name}"));
    row[i].clone()
}

#[test]
fn bench_latency_writes_a_grid_with_batches_and_cache_kinds() {
    let Some(model) = smollm2() else { return };
    let dir = tempfile::tempdir().unwrap();
    let out = bench("latency", model)
        .args([
            "--prompt-lens",
            "8",
            "--gen-lens",
            "2",
            "--batch-sizes",
            "1,2",
            "--warmup",
            "0",
            "--runs",
            "2",
        ])
        .args(["--cache-kinds", "fp32,q8_0", "--out"])
        .arg(dir.path())
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let table = String::from_utf8(out).unwrap();
    assert!(
        table.contains("decode tok/s [min, max]") && table.contains("q8_0"),
        "{table}"
    );
    let (header, rows) = csv_rows(&dir.path().join("latency.csv"));
    assert_eq!(rows.len(), 4, "2 cache kinds × 2 batch sizes");
    let mut seen = Vec::new();
    for row in &rows {
        seen.push((col(&header, row, "cache_kind"), col(&header, row, "batch_size")));
        assert_eq!(col(&header, row, "runs"), "2");
        let (lo, med, hi): (f64, f64, f64) = (
            col(&header, row, "decode_tokens_per_sec_min").parse().unwrap(),
            col(&header, row, "decode_tokens_per_sec_median").parse().unwrap(),
            col(&header, row, "decode_tokens_per_sec_max").parse().unwrap(),
        );
        assert!(0.0 < lo && lo <= med && med <= hi, "{row:?}");
        let prefill: f64 = col(&header, row, "prefill_ms_median").parse().unwrap();
        let ttft: f64 = col(&header, row, "ttft_ms_median").parse().unwrap();
        assert!(ttft > prefill, "TTFT includes the first decode step: {row:?}");
    }
    seen.sort();
    assert_eq!(
        seen,
        [("fp32", "1"), ("fp32", "2"), ("q8_0", "1"), ("q8_0", "2")]
            .map(|(a, b)| (a.to_string(), b.to_string()))
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("report.json")).unwrap()).unwrap();
    assert_eq!(report["latency"].as_array().map(Vec::len), Some(4));
}

#[test]
fn bench_memory_measures_exact_kv_bytes_and_a_real_peak() {
    let Some(model) = smollm2() else { return };
    let out = bench("memory", model)
        .args(["--seq-lens", "16,32", "--cache-kinds", "fp16,q4_0", "--json"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    let rows = v["memory"].as_array().expect("memory rows");
    assert_eq!(rows.len(), 4);
    for r in rows {
        let seq = r["seq_len"].as_u64().unwrap();
        // SmolLM2: 30 layers × 3 KV heads × (K + V) × 64 values; fp16 2 B, q4_0 (2 + 16) B per 32.
        let per_value = match r["cache_kind"].as_str().unwrap() {
            "fp16" => 2.0,
            "q4_0" => 18.0 / 32.0,
            other => panic!("{other}"),
        };
        let expected = (30.0 * 3.0 * 2.0 * 64.0 * per_value) as u64 * seq;
        assert_eq!(r["kv_bytes"].as_u64(), Some(expected), "{r}");
        assert!(r["model_bytes"].as_u64().unwrap() > 50_000_000, "{r}");
        match r["peak_bytes"].as_u64() {
            Some(peak) => assert!(peak > r["model_bytes"].as_u64().unwrap() / 2, "{r}"),
            None => assert!(
                r["peak_unavailable"].as_str().is_some_and(|s| !s.is_empty()),
                "{r}"
            ),
        }
    }
}

#[test]
fn bench_accuracy_scores_the_python_task() {
    let Some(model) = smollm2() else { return };
    let dir = tempfile::tempdir().unwrap();
    bench("accuracy", model)
        .arg("--task")
        .arg(fixture("benches/tasks/python_basics.jsonl"))
        .args(["--limit", "6", "--out"])
        .arg(dir.path())
        .assert()
        .success();
    let (header, rows) = csv_rows(&dir.path().join("accuracy.csv"));
    assert_eq!(rows.len(), 1);
    assert_eq!(col(&header, &rows[0], "task"), "python_basics");
    assert_eq!(col(&header, &rows[0], "examples"), "6");
    let acc: f64 = col(&header, &rows[0], "value").parse().unwrap();
    // Six four-way questions: chance is 0.25; a 135M instruct model knows `len`, `def`, `None`, `#`.
    assert!(acc >= 0.5, "accuracy {acc}");
}

#[test]
fn bench_generation_saves_generations_jsonl() {
    let Some(model) = smollm2() else { return };
    let dir = tempfile::tempdir().unwrap();
    bench("generation", model)
        .arg("--prompts")
        .arg(fixture("tests/fixtures/bench/prompts.txt"))
        .args(["--max-new-tokens", "4", "--out"])
        .arg(dir.path())
        .assert()
        .success();
    let text = std::fs::read_to_string(dir.path().join("generations.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["prompt"], "The Python tutorial begins with");
    assert!(lines.iter().all(|l| {
        l["generated_tokens"]
            .as_u64()
            .is_some_and(|n| (1..=4).contains(&n))
    }));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("report.json")).unwrap()).unwrap();
    assert_eq!(report["generation"].as_array().map(Vec::len), Some(2));
}

#[test]
fn bench_behavior_runs_every_case_kind() {
    let Some(model) = smollm2() else { return };
    let out = bench("behavior", model)
        .arg("--suite")
        .arg(fixture("benches/suites/python.yml"))
        .arg("--json")
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    let cases = v["behavior"].as_array().expect("cases");
    let kinds: Vec<&str> = cases.iter().map(|c| c["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["choice_logprob", "exact_match_greedy", "int_greedy"]);
    let passed = |id: &str| {
        cases
            .iter()
            .find(|c| c["id"] == id)
            .map(|c| c["passed"].as_bool())
    };
    let chosen = &cases[0]["output"];
    assert!(chosen == " def" || chosen == " function", "{cases:?}");
    assert_eq!(passed("capital"), Some(Some(true)), "Paris: {cases:?}");
    let acc = &v["accuracy"][0];
    assert_eq!(acc["task"], "behavior:python");
    assert_eq!(acc["metric"], "pass_rate");
    let rate = acc["value"].as_f64().unwrap();
    let n_passed = cases.iter().filter(|c| c["passed"] == true).count();
    assert!((rate - n_passed as f64 / 3.0).abs() < 1e-12);
}

#[test]
fn a_missing_task_file_is_a_usage_error() {
    let Some(model) = smollm2() else { return };
    bench("accuracy", model)
        .args(["--task", "/nonexistent/task.jsonl"])
        .assert()
        .code(2);
}

#[test]
fn accuracy_scorer_matches_a_log_prob_summed_by_hand() {
    use candle_core::{D, DType, IndexOp};
    use caramba::bench::BenchModel;
    use caramba::bench::accuracy::{answer, choice_logprob, continuation_ids};
    use caramba::infer::Generator;
    use caramba::loader::{LoadOptions, load_source};

    let Some(_) = smollm2() else { return };
    let source = caramba::loader::fetch("smollm2-135m").unwrap();
    let loaded = load_source(&source, &LoadOptions::default()).unwrap();
    let m = BenchModel::from_loaded("smollm2", &loaded);
    let tok = loaded.tokenizer.as_ref().unwrap();
    let prompt = "In Python, a function is defined with the keyword";
    let (ctx, cont) = continuation_ids(tok, prompt, " def").unwrap();
    assert!(!cont.is_empty());
    let scored = choice_logprob(m.model, &m.device, &ctx, &cont).unwrap();

    // By hand: the cached generator's next-token logits, one token at a time.
    let mut g = Generator::new(m.model, 64, DType::F32, &m.device);
    let mut logits = g.prefill(&ctx).unwrap();
    let mut by_hand = 0f64;
    for &t in &cont {
        let logp = candle_nn::ops::log_softmax(&logits.to_dtype(DType::F32).unwrap(), D::Minus1).unwrap();
        by_hand += f64::from(logp.i(t as usize).unwrap().to_scalar::<f32>().unwrap());
        logits = g.decode_step(&[t]).unwrap().i(0).unwrap();
    }
    assert!(
        (scored - by_hand).abs() < 1e-3 * by_hand.abs().max(1.0),
        "scorer {scored} vs by hand {by_hand}"
    );
    let (best, scores) = answer(
        m.model,
        &m.device,
        tok,
        prompt,
        &[" def".into(), " banana".into()],
    )
    .unwrap();
    assert!((scores[0] - scored).abs() < 1e-9);
    assert_eq!(best, 0, "{scores:?}");
}

#[test]
fn a_standard_target_benchmarks_its_trained_model() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("corpus.txt"),
        "The quick brown fox jumps over the lazy dog. A list holds items in order. ".repeat(40),
    )
    .unwrap();
    let manifest = "\
version: 2
name: tiny_bench
model:
  type: TransformerModel
  tied_embeddings: true
  embedder: {type: token, vocab_size: 256, d_model: 32}
  topology:
    type: StackedTopology
    layers:
      - type: ResidualTopology
        layers:
          - {type: RMSNormLayer, d_model: 32}
          - {type: AttentionLayer, d_model: 32, n_heads: 2}
      - {type: RMSNormLayer, d_model: 32}
targets:
  - name: quick
    data: {path: tokens.npy, block_size: 16, prepare: {input: [corpus.txt]}}
    runs: [{id: train, steps: 2, train: {batch_size: 2, save_every: 2}}]
    benchmarks:
      - {kind: perplexity, blocks: 2}
      - {kind: latency, prompt_lens: [4], gen_lens: [2], warmup: 0, runs: 1}
      - {kind: memory, seq_lens: [8, 16], cache_kinds: [fp16, q8_0]}
";
    std::fs::write(dir.path().join("m.yml"), manifest).unwrap();
    let out = Command::cargo_bin("caramba")
        .unwrap()
        .current_dir(dir.path())
        .args(["-q", "run", "m.yml"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let text = String::from_utf8_lossy(&out);
    assert!(text.contains("perplexity") && text.contains("KV bytes"), "{text}");
    let artifacts = dir.path().join("runs/tiny_bench/quick/artifacts");
    let (header, rows) = csv_rows(&artifacts.join("perplexity.csv"));
    assert_eq!(rows.len(), 1);
    assert_eq!(col(&header, &rows[0], "model"), "train");
    assert_eq!(col(&header, &rows[0], "block_size"), "16");
    assert_eq!(
        col(&header, &rows[0], "tokens"),
        "30",
        "2 windows × 15 predicted tokens"
    );
    let (_, rows) = csv_rows(&artifacts.join("latency.csv"));
    assert_eq!(rows.len(), 1);
    let (header, rows) = csv_rows(&artifacts.join("memory.csv"));
    assert_eq!(rows.len(), 4);
    for row in &rows {
        // One attention layer, 2 heads × 16 values, K and V: fp16 128 B/token, q8_0 2 × 2 × 18 = 72.
        let per_token = match col(&header, row, "cache_kind").as_str() {
            "fp16" => 128,
            "q8_0" => 72,
            other => panic!("{other}"),
        };
        let seq: u64 = col(&header, row, "seq_len").parse().unwrap();
        assert_eq!(col(&header, row, "kv_bytes"), (per_token * seq).to_string());
    }
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(artifacts.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["metadata"]["target"], "quick");
}

#[test]
fn an_out_of_domain_set_is_prepared_scored_and_reported_beside_the_held_out_data() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("corpus.txt"),
        "The quick brown fox jumps over the lazy dog. A list holds items in order. ".repeat(40),
    )
    .unwrap();
    let other = "Zebra 42; QWERTY!! Vexing jackdaws #% quiz. ".repeat(12);
    std::fs::write(dir.path().join("other.txt"), &other).unwrap();
    let manifest = "\
version: 2
name: tiny_ood
model:
  type: TransformerModel
  tied_embeddings: true
  embedder: {type: token, vocab_size: 256, d_model: 32}
  topology:
    type: StackedTopology
    layers:
      - type: ResidualTopology
        layers:
          - {type: RMSNormLayer, d_model: 32}
          - {type: AttentionLayer, d_model: 32, n_heads: 2}
      - {type: RMSNormLayer, d_model: 32}
targets:
  - name: quick
    data: {path: tokens.npy, block_size: 16, prepare: {input: [corpus.txt]}}
    runs: [{id: train, steps: 2, train: {batch_size: 2, save_every: 2}}]
    benchmarks:
      - kind: perplexity
        blocks: 2
        sets:
          - {name: in_domain}
          - {name: out_of_domain, data: {path: ood/other.npy, prepare: {input: [other.txt]}}}
";
    std::fs::write(dir.path().join("m.yml"), manifest).unwrap();
    Command::cargo_bin("caramba")
        .unwrap()
        .current_dir(dir.path())
        .args(["-q", "run", "m.yml"])
        .assert()
        .success();
    // Prepared on first use, with its source beside it.
    let npy = dir.path().join("ood/other.npy");
    let file = caramba::data::TokenFile::open(&npy).expect("the out-of-domain set was prepared");
    assert_eq!(file.len(), other.len(), "bytes tokenizer: one token per byte");
    let record = caramba::data::prepare::read_source_record(&npy).expect("other.npy.source.json");
    assert_eq!(
        (record.files, record.tokens, record.debian_package),
        (1, other.len(), None)
    );

    let artifacts = dir.path().join("runs/tiny_ood/quick/artifacts");
    let (header, rows) = csv_rows(&artifacts.join("perplexity.csv"));
    let sets: Vec<String> = rows.iter().map(|r| col(&header, r, "set")).collect();
    assert_eq!(sets, ["in_domain", "out_of_domain"]);
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(artifacts.join("report.json")).unwrap()).unwrap();
    let ppl = report["perplexity"].as_array().expect("perplexity rows");
    assert_eq!(ppl.len(), 2);
    assert_eq!(ppl[0]["source"]["split"], "held_out");
    assert_eq!(ppl[0]["source"]["path"], "tokens.npy");
    assert_eq!(ppl[1]["source"]["split"], "file");
    assert_eq!(ppl[1]["source"]["files"], 1);
    assert_eq!(ppl[1]["source"]["tokens"], other.len() as u64);
    for row in ppl {
        assert_eq!(row["tokens"], 30, "2 windows × 15 predicted tokens: {row}");
    }
    let (a, b) = (ppl[0]["nll"].as_f64().unwrap(), ppl[1]["nll"].as_f64().unwrap());
    assert!(
        a.is_finite() && b.is_finite() && a != b,
        "two texts, two NLLs: {a} {b}"
    );
    // The report reads back, sets included.
    let back: caramba::bench::Report =
        serde_json::from_str(&std::fs::read_to_string(artifacts.join("report.json")).unwrap()).unwrap();
    assert_eq!(back.perplexity[1].set, "out_of_domain");
}
