//! `type: MoELayer` from a manifest: it compiles, prints, trains on CPU with the load-balancing
//! loss logged in metrics.jsonl (loss falls), and its bad sizes are located manifest errors.

mod train_support;

use std::path::Path;

use caramba::compiler::{compile_str, render_plan};
use caramba::manifest::{Format, Problem};
use caramba::train::{self, TrainOptions};
use train_support::{english_dataset, tiny_train_spec};

const MOE: &str = "\
version: 2
name: moe
model:
  type: TransformerModel
  tied_embeddings: true
  embedder: {type: token, vocab_size: 256, d_model: 32}
  topology:
    type: StackedTopology
    layers:
      - type: NestedTopology
        repeat: 2
        layers:
          - type: ResidualTopology
            layers:
              - {type: RMSNormLayer, d_model: 32}
              - {type: AttentionLayer, d_model: 32, n_heads: 4}
          - type: ResidualTopology
            layers:
              - {type: RMSNormLayer, d_model: 32}
              - {type: moe, d_model: 32, d_ff: 32, num_experts: 4, top_k: 2}
      - {type: RMSNormLayer, d_model: 32}
targets:
  - name: quick
    data: {path: data/t.npy, block_size: 32}
    runs:
      - id: train
        steps: 60
";

#[test]
fn a_moe_manifest_compiles_prints_and_trains_with_its_aux_loss_logged() {
    let c = compile_str(Path::new("moe.yml"), MOE, Format::Yaml).expect("valid manifest");
    let plan = render_plan(&c);
    assert!(
        plan.contains("layer=MoELayer path=model.topology.layers[0].layers[1].layers[1] d_model=32 d_ff=32 num_experts=4 top_k=2 aux_loss_weight=0.01"),
        "{plan}"
    );
    let attn = 4 * 32 * 32;
    let moe = 4 * 3 * 32 * 32 + 4 * 32;
    let norms = 5 * 32;
    assert_eq!(
        c.plan.targets[0].stats.params,
        (2 * (attn + moe) + norms + 256 * 32) as u64
    );

    let model = c.plan.targets[0].model.clone();
    let dir = tempfile::tempdir().expect("tempdir");
    let data = english_dataset(dir.path(), 32, 0.0);
    let spec = tiny_train_spec();
    let run_dir = dir.path().join("run");
    let opts = TrainOptions::new(&model, &spec, 60, 3, &run_dir);
    let summary = train::run(&model, &spec, &data, opts).expect("train");
    let lines: Vec<_> = train::read_metrics(&run_dir.join("metrics.jsonl"))
        .expect("metrics")
        .into_iter()
        .filter_map(|l| match l {
            train::MetricLine::Train(t) => Some(t),
            _ => None,
        })
        .collect();
    let first = lines.first().expect("a train line");
    assert!(
        summary.final_loss < 0.8 * first.loss && summary.final_loss.is_finite(),
        "loss {} -> {}",
        first.loss,
        summary.final_loss
    );
    for l in &lines {
        // Two MoE layers, each 0.01 · aux with aux ≥ 1/top_k·… > 0; balanced aux is 1.
        let aux = l.aux_loss.expect("aux_loss logged on every train line");
        assert!(aux > 0.0 && aux < 0.2, "step {}: aux_loss {aux}", l.step);
    }
    let text = std::fs::read_to_string(run_dir.join("metrics.jsonl")).expect("read");
    assert!(text.contains("\"aux_loss\":"), "{text}");
}

fn problems(yaml: &str) -> Vec<Problem> {
    match compile_str(Path::new("t.yml"), yaml, Format::Yaml) {
        Ok(_) => panic!("expected an error for:\n{yaml}"),
        Err(e) => e.problems().to_vec(),
    }
}

/// The problem at `field` of the MoE layer with `needle` in its message, at line 20 (the MoE
/// layer's line), column `col` (the field's value), with a help line.
#[track_caller]
fn expect_at(from: &str, to: &str, field: &str, needle: &str, col: usize) {
    let yaml = MOE.replacen(from, to, 1);
    let path = format!("model.topology.layers[0].layers[1].layers[1].{field}");
    let ps = problems(&yaml);
    let p = ps.iter().find(|p| p.path == path).unwrap_or_else(|| {
        panic!(
            "no problem at `{path}`; got {:#?}",
            ps.iter().map(Problem::headline).collect::<Vec<_>>()
        )
    });
    assert!(p.message.contains(needle), "{}", p.message);
    assert_eq!((p.line, p.column), (Some(20), Some(col)), "{}", p.headline());
    assert!(p.help.is_some(), "{}", p.headline());
}

#[test]
fn top_k_larger_than_num_experts_is_located() {
    expect_at("top_k: 2", "top_k: 5", "top_k", "larger than num_experts = 4", 68);
}

#[test]
fn top_k_zero_is_located() {
    expect_at("top_k: 2", "top_k: 0", "top_k", "at least 1", 68);
}

#[test]
fn num_experts_zero_is_located() {
    expect_at(
        "num_experts: 4",
        "num_experts: 0",
        "num_experts",
        "must be in 1..=",
        52,
    );
}

#[test]
fn d_ff_zero_is_located() {
    expect_at("d_ff: 32, num", "d_ff: 0, num", "d_ff", "must be in 1..=", 42);
}
