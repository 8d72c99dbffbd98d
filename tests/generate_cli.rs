//! The inference commands, run as a user would (on the tiny golden model).

use std::path::PathBuf;

use assert_cmd::Command;

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/tiny_llama")
}

fn caramba() -> Command {
    Command::cargo_bin("caramba").unwrap()
}

#[test]
fn generate_json_reports_the_greedy_tokens_and_timings() {
    let expected: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture().join("expected.json")).unwrap()).unwrap();
    let case = &expected["cases"][0];
    let out = caramba()
        .args(["generate", "-q", "--model"])
        .arg(fixture())
        .args([
            "--prompt",
            case["prompt"].as_str().unwrap(),
            "--max-new-tokens",
            "6",
            "--json",
        ])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    let want: Vec<u64> = case["greedy"].as_array().unwrap()[..6]
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect();
    let got: Vec<u64> = v["token_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect();
    assert_eq!(got, want);
    assert_eq!(
        v["prompt_tokens"].as_u64(),
        Some(case["ids"].as_array().unwrap().len() as u64)
    );
    assert!(v["prefill_ms"].as_f64().unwrap() > 0.0);
    assert!(v["decode_tokens_per_sec"].as_f64().unwrap() > 0.0);
    assert!(v["text"].is_string());
}

#[test]
fn generate_streams_text_and_honours_stop_strings() {
    let plain = caramba()
        .args(["generate", "-q", "--model"])
        .arg(fixture())
        .args(["--prompt", "Once upon a time", "--max-new-tokens", "12"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let plain = String::from_utf8(plain).unwrap();
    let text = plain.trim_end_matches('\n');
    assert!(!text.is_empty());
    // Stop at the text's third character: the output is cut right before it.
    let stop: String = text.chars().skip(2).take(2).collect();
    let cut = caramba()
        .args(["generate", "-q", "--model"])
        .arg(fixture())
        .args([
            "--prompt",
            "Once upon a time",
            "--max-new-tokens",
            "12",
            "--stop",
            &stop,
        ])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let cut = String::from_utf8(cut).unwrap();
    let want = &text[..text.find(&stop).unwrap()];
    assert_eq!(cut.trim_end_matches('\n'), want);
}

#[test]
fn a_too_long_prompt_and_a_missing_model_are_usage_errors() {
    let long = "the capital of France is Paris ".repeat(60);
    let out = caramba()
        .args(["generate", "-q", "--model"])
        .arg(fixture())
        .args(["--prompt", &long])
        .assert()
        .code(2)
        .get_output()
        .stderr
        .clone();
    let err = String::from_utf8_lossy(&out);
    assert!(err.contains("context of 256"), "{err}");
    let out = caramba()
        .args([
            "generate",
            "-q",
            "--model",
            "/no/such/model.gguf",
            "--prompt",
            "hi",
        ])
        .assert()
        .code(2)
        .get_output()
        .stderr
        .clone();
    let err = String::from_utf8_lossy(&out);
    assert!(err.contains("/no/such/model.gguf"), "{err}");
}

#[test]
fn chat_reads_piped_turns_and_resets() {
    let gguf = fixture().join("tiny_llama.q8_0.gguf");
    let out = caramba()
        .args(["chat", "-q", "--max-new-tokens", "4", "--model"])
        .arg(&gguf)
        .write_stdin("hello there\nand again\n/reset\nhello there\n/exit\nnever read\n")
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let out = String::from_utf8(out).unwrap();
    // Each reply ends with a newline (replies may hold newlines too): the output is
    // `first\nsecond\nfirst\n`, since after /reset the same message gets the same greedy reply.
    let ok = out.match_indices('\n').any(|(i, _)| {
        let first = &out[..=i];
        out.len() > 2 * first.len() && out.ends_with(first)
    });
    assert!(ok, "{out:?}");
}

#[test]
fn perplexity_of_a_text_file() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("text.txt");
    std::fs::write(
        &data,
        "The capital of France is Paris, and the capital of Italy is Rome. ".repeat(8),
    )
    .unwrap();
    let out = caramba()
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
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    let (ppl, nll, tokens) = (
        v["perplexity"].as_f64().unwrap(),
        v["nll"].as_f64().unwrap(),
        v["tokens"].as_u64().unwrap(),
    );
    assert!((ppl - nll.exp()).abs() < 1e-6 * ppl);
    assert!(ppl > 1.0 && tokens > 32);
}

#[test]
fn an_offline_hub_model_not_in_the_cache_says_how_to_pass_a_local_path() {
    let home = tempfile::tempdir().unwrap();
    let out = caramba()
        .env("HF_HOME", home.path())
        .env("HF_HUB_OFFLINE", "1")
        .args([
            "generate",
            "-q",
            "--model",
            "hf:HuggingFaceTB/SmolLM2-135M-Instruct",
            "--prompt",
            "hi",
        ])
        .assert()
        .code(2)
        .get_output()
        .stderr
        .clone();
    let err = String::from_utf8_lossy(&out);
    // why: miette wraps the report at 80 columns.
    let flat = err
        .split_whitespace()
        .filter(|w| *w != "│")
        .collect::<Vec<_>>()
        .join(" ");
    assert!(
        flat.contains("HuggingFaceTB/SmolLM2-135M") && flat.contains("HF_HUB_OFFLINE"),
        "{err}"
    );
    assert!(flat.contains("pass its local path"), "{err}");
}

#[test]
fn hub_models_in_the_cache_load_without_the_network() {
    // Lay the golden directory out as the hub cache does: refs/main → snapshots/<commit>/files.
    let home = tempfile::tempdir().unwrap();
    let repo = home.path().join("hub/models--caramba--tiny-llama");
    let snapshot = repo.join("snapshots/0123456789abcdef");
    std::fs::create_dir_all(&snapshot).unwrap();
    std::fs::create_dir_all(repo.join("refs")).unwrap();
    std::fs::write(repo.join("refs/main"), "0123456789abcdef").unwrap();
    for f in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "generation_config.json",
    ] {
        std::fs::copy(fixture().join(f), snapshot.join(f)).unwrap();
    }
    let out = caramba()
        .env("HF_HOME", home.path())
        .env("HF_HUB_OFFLINE", "1")
        .args([
            "generate",
            "-q",
            "--model",
            "hf:caramba/tiny-llama",
            "--prompt",
            "Once upon a time",
            "--json",
        ])
        .args(["--max-new-tokens", "3"])
        .assert()
        .success()
        .get_output()
        .stdout
        .clone();
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["token_ids"].as_array().unwrap().len(), 3);
}

#[test]
fn sampling_flags_out_of_range_are_usage_errors_that_name_the_range() {
    for (flag, value, range) in [
        ("--temperature", "NaN", ">= 0"),
        ("--temperature", "-1", ">= 0"),
        ("--top-p", "0", "(0, 1]"),
        ("--top-p", "1.5", "(0, 1]"),
        ("--top-k", "0", ">= 1"),
        ("--repetition-penalty", "0", "> 0"),
        ("--repetition-penalty", "-2", "> 0"),
    ] {
        let out = caramba()
            .args(["generate", "-q", "--model"])
            .arg(fixture())
            .args(["--prompt", "hello", "--max-new-tokens", "1"])
            .arg(format!("{flag}={value}"))
            .assert()
            .code(2)
            .get_output()
            .stderr
            .clone();
        let err = String::from_utf8_lossy(&out);
        assert!(err.contains(flag) && err.contains(range), "{flag}={value}: {err}");
    }
    let out = caramba()
        .args(["chat", "-q", "--top-p=2", "--model"])
        .arg(fixture().join("tiny_llama.q8_0.gguf"))
        .write_stdin("hello\n")
        .assert()
        .code(2)
        .get_output()
        .stderr
        .clone();
    assert!(String::from_utf8_lossy(&out).contains("--top-p"));
}

#[test]
fn chat_uses_a_model_directorys_chat_template_jinja() {
    let dir = tempfile::tempdir().unwrap();
    for f in [
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer.json",
    ] {
        std::fs::copy(fixture().join(f), dir.path().join(f)).unwrap();
    }
    std::fs::write(
        dir.path().join("chat_template.jinja"),
        "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}\
         {% if add_generation_prompt %}assistant:{% endif %}",
    )
    .unwrap();
    caramba()
        .args(["chat", "-q", "--max-new-tokens", "3", "--model"])
        .arg(dir.path())
        .write_stdin("hello there\n/exit\n")
        .assert()
        .success();
}
