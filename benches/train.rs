//! Training throughput on CPU: tokens/s of the full loop (forward, backward, clip, AdamW) for a
//! small Llama-style model on byte tokens of the license texts in `/usr/share/common-licenses`.
//!
//! `cargo bench --bench train -- --d-model 128 --layers 4 --heads 4 --block 128 --batch 8 --steps 30`
//! (every flag optional; defaults shown by `--help`). The first 3 steps are warmup and not timed.
//! `--kv-heads`, `--d-ff` and `--vocab` give other shapes (0: heads, 8/3·d, 256), e.g. SmolLM2-135M's
//! `--d-model 576 --layers 30 --heads 9 --kv-heads 3 --d-ff 1536 --vocab 49152`; `--device cuda
//! --dtype bf16` trains on a GPU (a `--features cuda` build). scripts/bench_train_torch.py is the twin.

use std::collections::HashMap;

use caramba::data::{PrepareSpec, TokenDataset, Tokenizer, prepare};
use caramba::layer::{AttentionMode, AttentionSpec, DecoupledSpec, EmbedderSpec, RmsNormSpec, SwiGluSpec};
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
    ("kv-heads", 0),
    ("d-ff", 0),
    ("vocab", 256),
    ("log-every", 0),
    ("sem-dim", 0),
    ("geo-dim", 0),
    ("v-dim", 0),
    ("peak-tflops", 989),
];

fn model(
    d_model: usize,
    n_layers: usize,
    n_heads: usize,
    n_kv: usize,
    d_ff: usize,
    vocab: usize,
    dba: Option<DecoupledSpec>,
) -> ModelSpec {
    let norm = || {
        NodeSpec::RmsNorm(RmsNormSpec {
            d_model,
            eps: 1e-5,
            elementwise_affine: true,
        })
    };
    let attn = NodeSpec::Attention(AttentionSpec {
        mode: match dba {
            Some(d) => AttentionMode::Decoupled(d),
            None if n_kv == n_heads => AttentionMode::Standard,
            None => AttentionMode::Gqa,
        },
        n_kv_heads: Some(n_kv),
        ..AttentionSpec::new(d_model, n_heads)
    });
    let mlp = NodeSpec::SwiGlu(SwiGluSpec {
        d_model,
        d_ff,
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
            vocab_size: vocab,
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
    // As the `caramba` binary does (src/host_allocator.rs).
    caramba::host_allocator::keep_freed_memory_for_reuse();
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
    // why: the trainer's step profile (CARAMBA_PROFILE_STEPS=1) is a log line.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                // `--log-every N` prints the trainer's train lines (loss, tok/s, memory in use).
                let trainer = if args.iter().any(|a| a == "--log-every") {
                    ",caramba::train::trainer=info"
                } else {
                    ""
                };
                tracing_subscriber::EnvFilter::new(format!("warn,caramba::train::phase_clock=info{trainer}"))
            }),
        )
        .init();
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
    let flag = |name: &str, default: &str| {
        args.windows(2)
            .find(|p| p[0] == name)
            .map_or(default.to_string(), |p| p[1].clone())
    };
    let (device, dtype) = (flag("--device", "cpu"), flag("--dtype", "auto"));
    let kv = if cfg["kv-heads"] == 0 {
        cfg["heads"]
    } else {
        cfg["kv-heads"]
    };
    let d_ff = if cfg["d-ff"] == 0 {
        cfg["d-model"] * 8 / 3
    } else {
        cfg["d-ff"]
    };
    let dba = (cfg["sem-dim"] > 0 || cfg["geo-dim"] > 0).then(|| DecoupledSpec {
        v_dim: Some(match cfg["v-dim"] {
            0 => cfg["d-model"],
            v => v,
        }),
        ..DecoupledSpec::new(cfg["sem-dim"], cfg["geo-dim"])
    });
    let m = model(
        cfg["d-model"],
        cfg["layers"],
        cfg["heads"],
        kv,
        d_ff,
        cfg["vocab"],
        dba.clone(),
    );
    let ts = TrainSpec {
        device: device.clone(),
        dtype: dtype.clone(),
        batch_size: cfg["batch"],
        eval_every: 0,
        log_every: match cfg["log-every"] {
            0 => 1_000_000,
            n => n,
        },
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
    // The twin's count: 6 FLOPs per parameter per token plus causal attention's score and value
    // products, 6 · layers · block · (q·k width + v width) / 2 per token.
    let n_params = caramba::compiler::stats::params(&m.topology) + (cfg["vocab"] * cfg["d-model"]) as u64;
    let width = dba.as_ref().map_or(cfg["d-model"], |d| {
        (d.sem_dim + d.geo_dim + d.v_dim.unwrap_or(cfg["d-model"])) / 2
    });
    let flops_per_token = 6.0 * n_params as f64 + 6.0 * (cfg["layers"] * cfg["block"] * width) as f64;
    let mfu = if device.starts_with("cuda") {
        format!(
            ", {:.1}M params, MFU {:.1}% of {} TFLOP/s",
            n_params as f64 / 1e6,
            100.0 * summary.tokens_per_sec * flops_per_token / (cfg["peak-tflops"] as f64 * 1e12),
            cfg["peak-tflops"]
        )
    } else {
        String::new()
    };
    let shape = dba.as_ref().map_or(String::new(), |d| {
        format!(
            " dba={}/{}/{}",
            d.sem_dim,
            d.geo_dim,
            d.v_dim.unwrap_or(cfg["d-model"])
        )
    });
    println!(
        "train ({device} {dtype}, {threads} threads) d_model={} layers={} heads={}/{kv}{shape} d_ff={d_ff} vocab={} block={} batch={}: {:.0} tokens/s over {} steps ({:.2} s), final loss {:.3}{mfu}",
        cfg["d-model"],
        cfg["layers"],
        cfg["heads"],
        cfg["vocab"],
        cfg["block"],
        cfg["batch"],
        summary.tokens_per_sec,
        summary.steps - warmup,
        summary.wall_time_s,
        summary.final_loss
    );
}
