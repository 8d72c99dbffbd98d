//! Speculative decoding on the tiny golden Llama: at temperature 0 the output is the target's own
//! greedy output for every k and draft (self-draft, a distinct random model, the target itself —
//! the last accepts everything and exercises the bonus token); at temperature > 0 the joint
//! distribution of the first two tokens matches the target's.

use std::path::PathBuf;

use candle_core::{DType, Device};
use caramba::infer::{
    Draft, GenerateConfig, Generator, SamplingParams, SpeculativeConfig, SpeculativeError,
    SpeculativeGenerator,
};
use caramba::layer::EmbedderSpec;
use caramba::loader::{LoadOptions, LoadedModel, load};
use caramba::model::{KvCache, LanguageModel, ModelSpec, QuantKinds, SeededVarMap};

fn model() -> LoadedModel {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/tiny_llama");
    load(dir.to_str().unwrap(), &LoadOptions::default()).unwrap()
}

fn random_model(spec: &ModelSpec, seed: u64) -> LanguageModel {
    let vars = SeededVarMap::new(seed);
    LanguageModel::build(spec, vars.var_builder(DType::F32, &Device::Cpu)).unwrap()
}

fn plain(m: &LanguageModel) -> KvCache {
    KvCache::new(m.n_slots(), DType::F32)
}

fn cfg(n: usize, sampling: SamplingParams) -> GenerateConfig {
    GenerateConfig {
        max_new_tokens: n,
        sampling,
        eos_token_ids: vec![],
    }
}

fn spec_cfg(k: usize, adaptive: bool) -> SpeculativeConfig {
    SpeculativeConfig {
        k,
        adaptive,
        ..SpeculativeConfig::default()
    }
}

const PROMPT: [u32; 6] = [5, 17, 42, 99, 3, 250];

#[test]
fn greedy_speculative_output_is_the_targets_greedy_output() {
    let m = model();
    let target = &m.model;
    let want = Generator::new(target, 256, DType::F32, &Device::Cpu)
        .generate(&PROMPT, &cfg(40, SamplingParams::greedy()))
        .unwrap();
    let stranger = random_model(&m.spec, 11);
    let drafts = [
        ("self:layers=1", Draft::SelfLayers(1)),
        ("random model", Draft::Model(&stranger)),
        ("the target", Draft::Model(target)),
    ];
    for (name, draft) in drafts {
        for k in [1, 2, 4, 7] {
            for adaptive in [false, true] {
                let mut g =
                    SpeculativeGenerator::new(target, draft, spec_cfg(k, adaptive), 256, &Device::Cpu, plain)
                        .unwrap();
                let (got, _) = g.generate(&PROMPT, &cfg(40, SamplingParams::greedy())).unwrap();
                assert_eq!(got, want, "{name}, k = {k}, adaptive = {adaptive}");
                let s = g.stats();
                assert!(s.rounds > 0 && s.draft_tokens > 0, "{name}: {s:?}");
                if name == "the target" {
                    // Everything is accepted: every round ends with a bonus token.
                    assert_eq!(s.accepted_tokens, s.draft_tokens, "{s:?}");
                    assert_eq!(s.full_rounds, s.rounds, "{s:?}");
                    assert!(s.target_passes <= 40 / (k + 1) + 2, "{s:?}");
                }
                if name == "random model" {
                    assert!(s.acceptance_rate() < 0.5, "{s:?}");
                }
            }
        }
    }
}

#[test]
fn greedy_speculation_through_a_quantized_shared_cache_matches_plain_greedy_on_it() {
    let m = model();
    let target = &m.model;
    let quant = |m: &LanguageModel| {
        KvCache::quantized(m.n_slots(), QuantKinds::uniform(caramba::cache::CacheKind::Q8_0))
    };
    let want = Generator::new(target, 256, DType::F32, &Device::Cpu)
        .with_cache(quant(target))
        .generate(&PROMPT, &cfg(24, SamplingParams::greedy()))
        .unwrap();
    let mut g = SpeculativeGenerator::new(
        target,
        Draft::SelfLayers(1),
        spec_cfg(3, true),
        256,
        &Device::Cpu,
        quant,
    )
    .unwrap();
    let (got, _) = g.generate(&PROMPT, &cfg(24, SamplingParams::greedy())).unwrap();
    assert_eq!(got, want);
    assert_eq!(g.target_cache().len(), PROMPT.len() + got.len() - 1);
}

#[test]
fn the_acceptance_floor_turns_speculation_off_and_the_context_limit_holds() {
    let m = model();
    let stranger = random_model(&m.spec, 12);
    let floor = SpeculativeConfig {
        k: 2,
        min_acceptance: 0.9,
        floor_after: 4,
        ..SpeculativeConfig::default()
    };
    let mut g = SpeculativeGenerator::new(&m.model, Draft::Model(&stranger), floor, 256, &Device::Cpu, plain)
        .unwrap();
    let want = Generator::new(&m.model, 256, DType::F32, &Device::Cpu)
        .generate(&PROMPT, &cfg(20, SamplingParams::greedy()))
        .unwrap();
    let (got, _) = g.generate(&PROMPT, &cfg(20, SamplingParams::greedy())).unwrap();
    assert_eq!(got, want);
    assert!(g.stats().disabled, "{:?}", g.stats());
    // Twelve positions: the prompt plus six tokens, then the context is full.
    let mut g = SpeculativeGenerator::new(
        &m.model,
        Draft::SelfLayers(1),
        spec_cfg(4, true),
        12,
        &Device::Cpu,
        plain,
    )
    .unwrap();
    let err = g
        .generate(&PROMPT, &cfg(20, SamplingParams::greedy()))
        .unwrap_err();
    assert!(
        err.to_string().contains("beyond the model's context of 12"),
        "{err}"
    );
}

#[test]
fn bad_drafts_are_refused() {
    let m = model();
    let mut spec = m.spec.clone();
    if let EmbedderSpec::Token { vocab_size, .. } = &mut spec.embedder {
        *vocab_size = 100;
    }
    let other = random_model(&spec, 1);
    let err = SpeculativeGenerator::new(
        &m.model,
        Draft::Model(&other),
        spec_cfg(4, true),
        256,
        &Device::Cpu,
        plain,
    )
    .err()
    .unwrap();
    assert!(
        matches!(
            err,
            SpeculativeError::VocabMismatch {
                target: 320,
                draft: 100
            }
        ),
        "{err}"
    );
    let err = SpeculativeGenerator::new(
        &m.model,
        Draft::SelfLayers(3),
        spec_cfg(4, true),
        256,
        &Device::Cpu,
        plain,
    )
    .err()
    .unwrap();
    assert!(err.to_string().contains("the target has 2 blocks"), "{err}");
}

/// Exact joint distribution of the first two tokens under `model`'s own sampling.
fn two_token_distribution(model: &LanguageModel, prompt: &[u32], params: &SamplingParams) -> Vec<f64> {
    let mut g = Generator::new(model, 64, DType::F32, &Device::Cpu);
    let first = g.prefill(prompt).unwrap().to_vec1::<f32>().unwrap();
    let p1 = caramba::infer::speculative::probs(&first, params, prompt);
    let vocab = p1.len();
    let mut joint = vec![0.0; vocab * vocab];
    for t1 in 0..vocab {
        g.reset();
        let mut seq = prompt.to_vec();
        seq.push(t1 as u32);
        let l = g.prefill(&seq).unwrap().to_vec1::<f32>().unwrap();
        let p2 = caramba::infer::speculative::probs(&l, params, &seq);
        for t2 in 0..vocab {
            joint[t1 * vocab + t2] = p1[t1] * p2[t2];
        }
    }
    joint
}

#[test]
fn sampled_speculative_output_follows_the_targets_distribution() {
    // A six-token vocabulary so that a few thousand runs pin the 36-cell joint distribution down.
    let m = model();
    let mut spec = m.spec.clone();
    if let EmbedderSpec::Token { vocab_size, .. } = &mut spec.embedder {
        *vocab_size = 6;
    }
    let target = random_model(&spec, 21);
    // why: two random inits both mostly repeat the last token; a draft with its embedding table
    // scaled up is sharper and disagrees with the target.
    let draft = {
        let vars = SeededVarMap::new(22);
        let draft = LanguageModel::build(&spec, vars.var_builder(DType::F32, &Device::Cpu)).unwrap();
        for (name, var) in vars.named_vars() {
            if name.contains("embedder") {
                var.set(&(var.as_tensor() * 3.0).unwrap()).unwrap();
            }
        }
        draft
    };
    let prompt = [1u32, 4, 2, 5];
    let params = SamplingParams::default();
    let p = two_token_distribution(&target, &prompt, &params);
    let q = two_token_distribution(&draft, &prompt, &params);
    let tv = |a: &[f64], b: &[f64]| 0.5 * a.iter().zip(b).map(|(x, y)| (x - y).abs()).sum::<f64>();
    assert!(tv(&p, &q) > 0.5, "the draft should disagree: tv {}", tv(&p, &q));
    let runs = 1500;
    for (name, d) in [
        ("random draft", Draft::Model(&draft)),
        ("self:layers=1", Draft::SelfLayers(1)),
    ] {
        let mut counts = vec![0.0; 36];
        let mut g =
            SpeculativeGenerator::new(&target, d, spec_cfg(2, false), 64, &Device::Cpu, plain).unwrap();
        let mut accepted = 0;
        for seed in 0..runs {
            let params = SamplingParams {
                seed,
                ..params.clone()
            };
            let (out, _) = g.generate(&prompt, &cfg(2, params)).unwrap();
            counts[out[0] as usize * 6 + out[1] as usize] += 1.0;
            accepted += g.stats().accepted_tokens;
        }
        let freq: Vec<f64> = counts.iter().map(|c| c / runs as f64).collect();
        // Sampling noise alone gives a TV of about 0.06 at 1500 runs; a draft leaking through
        // would sit near tv(p, q).
        eprintln!("{name}: tv {:.3}, {accepted} accepted", tv(&freq, &p));
        assert!(
            tv(&freq, &p) < 0.1,
            "{name}: tv {} ({accepted} accepted)",
            tv(&freq, &p)
        );
    }
}

fn caramba() -> assert_cmd::Command {
    assert_cmd::Command::cargo_bin("caramba").unwrap()
}

#[test]
fn generate_with_a_draft_reports_acceptance_and_matches_plain_greedy() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/tiny_llama");
    let run = |extra: &[&str]| -> serde_json::Value {
        let out = caramba()
            .args(["generate", "-q", "--model"])
            .arg(&dir)
            .args(["--prompt", "hello world", "--max-new-tokens", "12", "--json"])
            .args(extra)
            .assert()
            .success()
            .get_output()
            .stdout
            .clone();
        serde_json::from_slice(&out).unwrap()
    };
    let plain = run(&[]);
    let spec = run(&["--draft", "self:layers=1", "--spec-k", "3"]);
    assert_eq!(spec["token_ids"], plain["token_ids"]);
    assert!(spec["draft_tokens"].as_u64().unwrap() > 0, "{spec}");
    let rate = spec["acceptance_rate"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&rate), "{spec}");
    let full = run(&["--draft", dir.to_str().unwrap(), "--spec-k", "4"]);
    assert_eq!(full["token_ids"], plain["token_ids"]);
    assert_eq!(full["acceptance_rate"].as_f64(), Some(1.0), "{full}");

    let err = caramba()
        .args(["generate", "-q", "--model"])
        .arg(&dir)
        .args(["--prompt", "hi", "--draft", "self:layers=5"])
        .assert()
        .code(2)
        .get_output()
        .stderr
        .clone();
    let err = String::from_utf8_lossy(&err);
    assert!(err.contains("the target has 2 blocks"), "{err}");
}

#[test]
fn smollm2_self_draft_is_exactly_greedy() {
    let source = match caramba::loader::fetch("smollm2-135m") {
        Ok(s) => s,
        Err(e) => {
            eprintln!("skipping: SmolLM2-135M could not be fetched ({e})");
            return;
        }
    };
    let m = caramba::loader::load_source(&source, &LoadOptions::default()).unwrap();
    let tok = m.tokenizer.as_ref().unwrap();
    let prompt = tok
        .encode(
            "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
            true,
        )
        .unwrap();
    let want = Generator::new(&m.model, m.max_seq_len, DType::F32, &m.device)
        .generate(&prompt, &cfg(24, SamplingParams::greedy()))
        .unwrap();
    for (layers, k) in [(6, 4), (12, 2)] {
        let mut g = SpeculativeGenerator::new(
            &m.model,
            Draft::SelfLayers(layers),
            spec_cfg(k, true),
            m.max_seq_len,
            &m.device,
            plain,
        )
        .unwrap();
        let (got, _) = g.generate(&prompt, &cfg(24, SamplingParams::greedy())).unwrap();
        assert_eq!(
            tok.decode(&got, false).unwrap(),
            tok.decode(&want, false).unwrap(),
            "self:layers={layers}, k = {k}: {:?}",
            g.stats()
        );
        assert_eq!(got, want);
    }
}
