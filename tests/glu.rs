//! The GLU family from a manifest: `type: geglu` compiles, prints, and trains on CPU (loss falls).

mod train_support;

use std::path::Path;

use caramba::compiler::{compile_str, render_plan};
use caramba::layer::{GluActivation, GluSpec};
use caramba::manifest::Format;
use caramba::topology::NodeSpec;
use caramba::train::{self, TrainOptions};
use train_support::{english_dataset, tiny_train_spec};

const GEGLU: &str = "\
version: 2
name: geglu
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
              - {type: geglu, d_model: 32, d_ff: 64}
      - {type: RMSNormLayer, d_model: 32}
targets:
  - name: quick
    data: {path: data/t.npy, block_size: 32}
    runs:
      - id: train
        steps: 60
";

/// Every GLU spec in `node`'s subtree.
fn glus(node: &NodeSpec, out: &mut Vec<GluSpec>) {
    if let NodeSpec::Glu(g) = node {
        out.push(g.clone());
    }
    if let Some((children, _)) = node.children() {
        children.iter().for_each(|c| glus(c, out));
    }
}

#[test]
fn a_geglu_manifest_compiles_prints_and_trains() {
    let c = compile_str(Path::new("geglu.yml"), GEGLU, Format::Yaml).expect("valid manifest");
    let model = c.plan.targets[0].model.clone();
    let mut found = Vec::new();
    glus(&model.topology, &mut found);
    assert_eq!(found.len(), 2, "repeat: 2 lowers to two GLU layers");
    assert!(
        found
            .iter()
            .all(|g| g.activation == GluActivation::Gelu && !g.bias)
    );
    let plan = render_plan(&c);
    assert!(
        plan.contains("layer=GLULayer path=model.topology.layers[0].layers[1].layers[1] d_model=32 d_ff=64 activation=gelu"),
        "{plan}"
    );
    // The attention layers' parameters plus three 32×64 projections per GLU, norms and embedding.
    let attn = 4 * 32 * 32;
    let glu = 3 * 32 * 64;
    let norms = 5 * 32;
    assert_eq!(
        c.plan.targets[0].stats.params,
        (2 * (attn + glu) + norms + 256 * 32) as u64
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let data = english_dataset(dir.path(), 32, 0.0);
    let spec = tiny_train_spec();
    let run_dir = dir.path().join("run");
    let opts = TrainOptions::new(&model, &spec, 60, 3, &run_dir);
    let summary = train::run(&model, &spec, &data, opts).expect("train");
    let lines = train::read_metrics(&run_dir.join("metrics.jsonl")).expect("metrics");
    let first = lines
        .iter()
        .find_map(|l| match l {
            train::MetricLine::Train(t) => Some(t.loss),
            _ => None,
        })
        .expect("a train line");
    assert!(
        summary.final_loss < 0.8 * first && summary.final_loss.is_finite(),
        "loss {first} -> {}",
        summary.final_loss
    );
}
