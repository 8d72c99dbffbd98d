//! Golden tests against HF transformers (fixtures made by scripts/make_golden.py; CI never runs
//! Python): a tiny random Llama (GQA, llama3 RoPE scaling, tied embeddings) loaded through the
//! HF-directory path must reproduce transformers' logits (f32, ≤ 1e-4 relative) and greedy
//! continuations (exactly); its Q8_0 GGUF conversion (q/k rows permuted as llama.cpp does) must
//! match transformers on the dequantized weights.

use std::path::PathBuf;

use candle_core::{DType, Device, Tensor};
use caramba::infer::{GenerateConfig, Generator, SamplingParams};
use caramba::loader::{LoadOptions, LoadedModel, load};
use caramba::model::ForwardCtx;

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/tiny_llama")
}

struct Case {
    prompt: String,
    ids: Vec<u32>,
    logits: Vec<Vec<f32>>,
    greedy: Vec<u32>,
}

fn cases(key: &str) -> Vec<Case> {
    let text = std::fs::read_to_string(fixture().join("expected.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v[key]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| Case {
            prompt: c["prompt"].as_str().unwrap().to_string(),
            ids: c["ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as u32)
                .collect(),
            logits: c["logits"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| {
                    r.as_array()
                        .unwrap()
                        .iter()
                        .map(|x| x.as_f64().unwrap() as f32)
                        .collect()
                })
                .collect(),
            greedy: c["greedy"].as_array().map_or(Vec::new(), |g| {
                g.iter().map(|x| x.as_u64().unwrap() as u32).collect()
            }),
        })
        .collect()
}

/// Largest |got − want| relative to max |want|, with the worst element's position.
fn compare(got: &[Vec<f32>], want: &[Vec<f32>]) -> (f32, String) {
    let scale = want.iter().flatten().fold(0f32, |m, x| m.max(x.abs()));
    let mut worst = (0f32, String::new());
    for (t, (g, w)) in got.iter().zip(want).enumerate() {
        assert_eq!(g.len(), w.len());
        for (v, (a, b)) in g.iter().zip(w).enumerate() {
            let d = (a - b).abs() / scale;
            if d > worst.0 {
                worst = (d, format!("position {t}, token {v}: got {a}, transformers {b}"));
            }
        }
    }
    worst
}

fn logits_of(m: &LoadedModel, ids: &[u32]) -> Vec<Vec<f32>> {
    let x = Tensor::new(ids, &Device::Cpu).unwrap().unsqueeze(0).unwrap();
    m.model
        .forward(&x, &mut ForwardCtx::eval())
        .unwrap()
        .squeeze(0)
        .unwrap()
        .to_vec2()
        .unwrap()
}

fn greedy(n: usize) -> GenerateConfig {
    GenerateConfig {
        max_new_tokens: n,
        sampling: SamplingParams::greedy(),
        eos_token_ids: vec![],
    }
}

#[test]
fn hf_directory_matches_transformers_logits_and_greedy_tokens() {
    let m = load(fixture().to_str().unwrap(), &LoadOptions::default()).unwrap();
    let tok = m.tokenizer.as_ref().unwrap();
    assert_eq!(tok.eos_token_ids, vec![0, 2], "config.json lists eos ids [2, 0]");
    for case in cases("cases") {
        assert_eq!(
            tok.encode(&case.prompt, true).unwrap(),
            case.ids,
            "tokens of {:?}",
            case.prompt
        );
        let (err, at) = compare(&logits_of(&m, &case.ids), &case.logits);
        assert!(err <= 1e-4, "{:?}: relative error {err:e} at {at}", case.prompt);
        let mut generator = Generator::new(&m.model, m.max_seq_len, DType::F32, &Device::Cpu);
        let got = generator.generate(&case.ids, &greedy(case.greedy.len())).unwrap();
        assert_eq!(got, case.greedy, "greedy continuation of {:?}", case.prompt);
    }
}

#[test]
fn gguf_q8_0_matches_transformers_on_the_dequantized_weights() {
    let m = load(
        fixture().join("tiny_llama.q8_0.gguf").to_str().unwrap(),
        &LoadOptions::default(),
    )
    .unwrap();
    let tok = m.tokenizer.as_ref().unwrap();
    assert_eq!(
        tok.chat_template.as_deref().map(|t| t.contains("assistant")),
        Some(true)
    );
    // Expanded to f32, the file holds exactly the weights transformers ran.
    let dense = load(
        fixture().join("tiny_llama.q8_0.gguf").to_str().unwrap(),
        &LoadOptions {
            dequantize: true,
            ..LoadOptions::default()
        },
    )
    .unwrap();
    for case in cases("gguf_cases") {
        let (err, at) = compare(&logits_of(&dense, &case.ids), &case.logits);
        assert!(
            err <= 1e-4,
            "dequantized {:?}: relative error {err:e} at {at}",
            case.prompt
        );
    }
    for case in cases("gguf_cases") {
        // add_bos_token is set in the GGUF: BOS (1) comes first.
        assert_eq!(
            tok.encode(&case.prompt, true).unwrap(),
            case.ids,
            "tokens of {:?}",
            case.prompt
        );
        let got = logits_of(&m, &case.ids);
        // why: candle's Q8_0 matmul also quantizes the activations to 8 bits, and the random
        // weights (std 0.15) amplify that; the next-token argmax must still agree.
        let (err, at) = compare(&got, &case.logits);
        assert!(err <= 5e-2, "{:?}: relative error {err:e} at {at}", case.prompt);
        // Where transformers' best token leads by more than twice the error bound, it must win here too.
        let scale = case.logits.iter().flatten().fold(0f32, |m, x| m.max(x.abs()));
        for (t, (g, w)) in got.iter().zip(&case.logits).enumerate() {
            let mut order: Vec<usize> = (0..w.len()).collect();
            order.sort_by(|a, b| w[*b].total_cmp(&w[*a]));
            if w[order[0]] - w[order[1]] > 0.1 * scale {
                let best = g.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).unwrap().0;
                assert_eq!(
                    best, order[0],
                    "{:?}: next-token argmax differs at position {t}",
                    case.prompt
                );
            }
        }
    }
}
