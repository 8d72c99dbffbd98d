//! Training throughput on CPU: tokens/s of the full loop (forward, backward, clip, AdamW) for a
//! small Llama-style model on byte tokens of the license texts in `/usr/share/common-licenses`.
//!
//! `cargo bench --bench train -- --d-model 128 --layers 4 --heads 4 --block 128 --batch 8 --steps 30`
//! (every flag optional; defaults shown by `--help`). The first 3 steps are warmup and not timed.

use std::collections::HashMap;

use caramba::data::{PrepareSpec, TokenDataset, Tokenizer, prepare};
use caramba::layer::{AttentionMode, AttentionSpec, EmbedderSpec, RmsNormSpec, SwiGluSpec};
use caramba::model::ModelSpec;
use caramba::topology::{NodeSpec, TopologySpec};
use caramba::train::{self, TrainOptions, TrainSpec};

const DEFAULTS: &[(&str, usize)] = &[
    ("d-model", 128),
    ("layers", 4),
    ("heads", 4),
    ("block", 128),
    ("batch", 8),
    ("steps", 30),
];

fn model(d_model: usize, n_layers: usize, n_heads: usize) -> ModelSpec {
    let norm = || {
        NodeSpec::RmsNorm(RmsNormSpec {
            d_model,
            eps: 1e-5,
            elementwise_affine: true,
        })
    };
    let attn = NodeSpec::Attention(AttentionSpec {
        mode: AttentionMode::Standard,
        ..AttentionSpec::new(d_model, n_heads)
    });
    let mlp = NodeSpec::SwiGlu(SwiGluSpec {
        d_model,
        d_ff: d_model * 8 / 3,
        bias: false,
    });
    let block = vec![
        NodeSpec::Residual(TopologySpec {
            layers: vec![norm(), attn],
            repeat: 1,
        }),
        NodeSpec::Residual(TopologySpec {
            layers: vec![norm(), mlp],
            repeat: 1,
        }),
    ];
    ModelSpec {
        kind: Default::default(),
        embedder: EmbedderSpec::Token {
            vocab_size: 256,
            d_model,
        },
        topology: NodeSpec::Stacked(TopologySpec {
            layers: vec![
                NodeSpec::Stacked(TopologySpec {
                    layers: block,
                    repeat: n_layers,
                }),
                norm(),
            ],
            repeat: 1,
        }),
        tied_embeddings: true,
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!(
            "flags (defaults): {}",
            DEFAULTS
                .iter()
                .map(|(k, v)| format!("--{k} {v}"))
                .collect::<Vec<_>>()
                .join(" ")
        );
        return;
    }
    let mut cfg: HashMap<&str, usize> = DEFAULTS.iter().copied().collect();
    for pair in args.windows(2) {
        if let Some(key) = pair[0].strip_prefix("--")
            && let (Some(slot), Ok(v)) = (cfg.get_mut(key), pair[1].parse())
        {
            *slot = v;
        }
    }
    let dir = tempfile::tempdir().expect("temporary directory");
    let corpus = dir.path().join("corpus.npy");
    let spec = PrepareSpec {
        input: vec!["/usr/share/common-licenses/*".into()],
        debian_package: None,
        tokenizer: None,
        separate_documents: true,
    };
    prepare(&spec, &Tokenizer::Bytes, &corpus).expect("prepare the license texts");
    let data = TokenDataset::open(&corpus, cfg["block"], 0.0, 256).expect("open corpus");
    let m = model(cfg["d-model"], cfg["layers"], cfg["heads"]);
    let ts = TrainSpec {
        batch_size: cfg["batch"],
        eval_every: 0,
        log_every: 1_000_000,
        save_every: Some(0),
        ..TrainSpec::default()
    };
    let warmup = 3.min(cfg["steps"]);
    let run_dir = dir.path().join("run");
    let opts = TrainOptions {
        stop_after: Some(warmup),
        ..TrainOptions::new(&m, &ts, cfg["steps"], 0, &run_dir)
    };
    train::run(&m, &ts, &data, opts).expect("warmup steps");
    let summary = train::run(
        &m,
        &ts,
        &data,
        TrainOptions::new(&m, &ts, cfg["steps"], 0, &run_dir),
    )
    .expect("train");
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "train (cpu, {threads} threads) d_model={} layers={} heads={} block={} batch={}: {:.0} tokens/s over {} steps ({:.2} s), final loss {:.3}",
        cfg["d-model"],
        cfg["layers"],
        cfg["heads"],
        cfg["block"],
        cfg["batch"],
        summary.tokens_per_sec,
        summary.steps - warmup,
        summary.wall_time_s,
        summary.final_loss
    );
}
