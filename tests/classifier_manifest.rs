//! Component targets (`system`, `data: {type: npy_supervised}`, `objective`, `metrics`): what
//! validation says about a classifier manifest, each problem at its manifest path and line.

use std::path::Path;

use caramba::compiler::compile_str;
use caramba::manifest::{Format, Problem};

const BASE: &str = "\
version: 2
name: c
model:
  type: MLPModel
  topology:
    type: StackedTopology
    layers:
      - {type: LinearLayer, d_in: 64, d_out: 32}
      - {type: relu}
      - {type: LinearLayer, d_in: 32, d_out: 10}
targets:
  - name: quick
    system: mlp_classifier
    data: {type: npy_supervised, features: x.npy, labels: y.npy, n_classes: 10, image: {height: 8, width: 8}}
    objective: classification_ce
    metrics: [loss, accuracy, per_class_accuracy]
    runs:
      - id: train
        steps: 10
";

const VIT: &str = "\
version: 2
name: v
model:
  type: ViTModel
  topology:
    type: StackedTopology
    layers:
      - {type: PatchEmbedLayer, height: 8, width: 8, patch: 2, d_model: 16}
      - {type: AttentionLayer, d_model: 16, n_heads: 2, is_causal: false, rope_enabled: false}
      - {type: PoolLayer, d_model: 16, mode: cls}
      - {type: LinearLayer, d_in: 16, d_out: 10}
targets:
  - name: quick
    system: vit
    data: {type: npy_supervised, features: x.npy, labels: y.npy, n_classes: 10, image: {height: 8, width: 8}}
    runs:
      - id: train
        steps: 10
";

fn edit(base: &str, from: &str, to: &str) -> String {
    assert!(base.contains(from), "no `{from}`");
    base.replacen(from, to, 1)
}

fn problems(yaml: &str) -> Vec<Problem> {
    match compile_str(Path::new("c.yml"), yaml, Format::Yaml) {
        Ok(_) => panic!("expected an error for:\n{yaml}"),
        Err(e) => e.problems().to_vec(),
    }
}

#[track_caller]
fn expect(yaml: &str, path: &str, needle: &str) -> Problem {
    let ps = problems(yaml);
    let p = ps.iter().find(|p| p.path == path).unwrap_or_else(|| {
        panic!(
            "no problem at `{path}`; got {:#?}",
            ps.iter().map(|p| (&p.path, &p.message)).collect::<Vec<_>>()
        )
    });
    assert!(p.message.contains(needle), "`{}` lacks `{needle}`", p.message);
    assert!(p.line.is_some(), "no line for {path}");
    p.clone()
}

#[test]
fn the_classifier_manifests_are_valid_and_plan_their_components() {
    for yaml in [BASE, VIT] {
        let c =
            compile_str(Path::new("c.yml"), yaml, Format::Yaml).unwrap_or_else(|e| panic!("{}", e.plain()));
        let t = &c.plan.targets[0];
        assert!(t.system.is_classifier());
        assert_eq!(t.objective.to_string(), "classification_ce");
        assert_eq!(t.metrics.len(), 3, "the system's default metrics");
    }
}

#[test]
fn a_token_file_for_a_classifier_is_the_wrong_data_kind() {
    let yaml = edit(
        BASE,
        "data: {type: npy_supervised, features: x.npy, labels: y.npy, n_classes: 10, image: {height: 8, width: 8}}",
        "data: {path: t.npy, block_size: 16}",
    );
    expect(&yaml, "targets[0].data", "reads `npy_supervised` data");
}

#[test]
fn objective_and_metrics_must_fit_the_system() {
    let yaml = edit(BASE, "objective: classification_ce", "objective: next_token_ce");
    expect(&yaml, "targets[0].objective", "does not train on `next_token_ce`");
    let yaml = edit(
        BASE,
        "metrics: [loss, accuracy, per_class_accuracy]",
        "metrics: [loss, bleu]",
    );
    let p = problems(&yaml);
    assert!(
        p.iter().any(|p| p.path.starts_with("targets[0].metrics")),
        "{p:#?}"
    );
}

#[test]
fn the_topology_must_read_the_data_width_and_end_at_the_class_count() {
    let yaml = edit(
        BASE,
        "{type: LinearLayer, d_in: 64, d_out: 32}",
        "{type: LinearLayer, d_in: 60, d_out: 32}",
    );
    expect(&yaml, "model.topology.layers[0].d_in", "64");
    let yaml = edit(
        BASE,
        "{type: LinearLayer, d_in: 32, d_out: 10}",
        "{type: LinearLayer, d_in: 32, d_out: 9}",
    );
    expect(&yaml, "model.topology", "10 classes");
    let yaml = edit(
        BASE,
        "n_classes: 10, image: {height: 8, width: 8}",
        "n_classes: 10",
    );
    expect(&yaml, "targets[0].data", "feature width is unknown");
}

#[test]
fn an_image_that_is_not_a_whole_number_of_patches_is_named() {
    let yaml = edit(VIT, "patch: 2", "patch: 3");
    let p = expect(
        &yaml,
        "model.topology.layers[0].patch",
        "8×8 image is not a whole number of 3×3 patches",
    );
    assert!(p.help.as_deref().is_some_and(|h| h.contains("divides")));
    let yaml = edit(
        VIT,
        "{type: PatchEmbedLayer, height: 8, width: 8,",
        "{type: PatchEmbedLayer, height: 4, width: 16,",
    );
    expect(&yaml, "model.topology.layers[0].height", "data's images have 8");
    let yaml = edit(
        VIT,
        "patch: 2, d_model: 16}",
        "patch: 2, d_model: 16, class_token: false}",
    );
    expect(
        &yaml,
        "model.topology.layers[2].mode",
        "the patch embedder has none",
    );
}

#[test]
fn fractions_and_an_unknown_data_type_are_errors() {
    let yaml = edit(
        BASE,
        "n_classes: 10,",
        "n_classes: 10, test_frac: 0.6, val_frac: 0.5,",
    );
    expect(&yaml, "targets[0].data.test_frac", "leaves no rows to train on");
    let yaml = edit(BASE, "type: npy_supervised", "type: graph");
    expect(&yaml, "targets[0].data.type", "unknown data type `graph`");
}
