//! Lowering and planning: repeat expansion through nesting, multi-seed runs, defaults, target
//! resolution, parameter counts against built models, and properties (lowering is idempotent;
//! a lowered manifest written out as YAML or JSON compiles back to itself).

use std::path::Path;

use candle_core::{DType, Device};
use caramba::compiler::{Compiled, compile, compile_str};
use caramba::manifest::{Format, Manifest, ManifestError, Seeds, lower};
use caramba::model::{LanguageModel, SeededVarMap};
use caramba::topology::NodeSpec;
use proptest::prelude::*;
use serde_json::{Value, json};

const TINY: &str = "tests/fixtures/manifests/tiny.yml";

fn yaml(text: &str) -> Compiled {
    compile_str(Path::new("m.yml"), text, Format::Yaml).unwrap_or_else(|e| panic!("{}", e.plain()))
}

/// Topology node types from the root down, depth-first, with their depth.
fn shape(node: &NodeSpec, depth: usize, out: &mut Vec<(usize, &'static str)>) {
    out.push((depth, node.type_name()));
    if let Some((children, repeat)) = node.children() {
        assert_eq!(repeat, 1, "lowered nodes have repeat 1");
        children.iter().for_each(|c| shape(c, depth + 1, out));
    }
}

#[test]
fn repeat_expands_through_nesting() {
    let c = yaml(
        "version: 2
model:
  embedder: {type: token, vocab_size: 256, d_model: 8}
  topology:
    type: StackedTopology
    layers:
      - type: NestedTopology
        repeat: 3
        layers:
          - type: ResidualTopology
            repeat: 2
            layers:
              - {type: RMSNormLayer, d_model: 8}
              - {type: AttentionLayer, d_model: 8, n_heads: 2}
          - {type: DropoutLayer, p: 0.1}
targets: [{name: a, data: {path: d.npy, block_size: 4}, runs: [{id: r, steps: 1}]}]
",
    );
    let model = c.lowered.targets[0]
        .model
        .as_ref()
        .expect("lowering copies the model into the target");
    let mut got = Vec::new();
    shape(&model.topology, 0, &mut got);
    let block = [
        (2, "ResidualTopology"),
        (3, "RMSNormLayer"),
        (3, "AttentionLayer"),
        (3, "RMSNormLayer"),
        (3, "AttentionLayer"),
        (2, "DropoutLayer"),
    ];
    let mut want = vec![(0, "StackedTopology"), (1, "NestedTopology")];
    for _ in 0..3 {
        want.extend(block);
    }
    assert_eq!(got, want);
    assert_eq!(c.plan.targets[0].stats.attention_layers, 6);
    // The top-level model is lowered too, and is what the target got.
    assert_eq!(c.lowered.model.as_ref(), Some(model));
}

#[test]
fn seed_lists_expand_into_runs_in_order() {
    let c = yaml(
        "version: 2
defaults: {runtime: {seed: 5}}
model: {embedder: {type: token, vocab_size: 256, d_model: 8}, topology: {type: stacked, layers: [{type: rms_norm, d_model: 8}]}}
targets:
  - name: a
    data: {path: d.npy, block_size: 4}
    runs:
      - {id: base, steps: 1}
      - {id: sweep, seed: [3, 1, 7], steps: 2}
      - {id: one, seed: 9, steps: 3}
",
    );
    let runs: Vec<(&str, u64, usize)> = c.plan.targets[0]
        .runs
        .iter()
        .map(|r| (r.id.as_str(), r.seed, r.steps))
        .collect();
    assert_eq!(
        runs,
        [
            ("base", 5, 1),
            ("sweep__s3", 3, 2),
            ("sweep__s1", 1, 2),
            ("sweep__s7", 7, 2),
            ("one", 9, 3)
        ]
    );
    let lowered_ids: Vec<&str> = c.lowered.targets[0].runs.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(
        lowered_ids,
        ["base", "sweep__s3", "sweep__s1", "sweep__s7", "one"]
    );
    assert!(
        c.lowered.targets[0]
            .runs
            .iter()
            .all(|r| matches!(r.seed, Some(Seeds::One(_))))
    );
}

#[test]
fn defaults_fill_data_and_runs() {
    let c = compile(Path::new(TINY)).unwrap_or_else(|e| panic!("{}", e.plain()));
    let t = &c.plan.targets[0];
    let data = t.data.tokens().expect("token data");
    assert_eq!(data.tokenizer.as_deref(), Some("bytes"));
    assert_eq!(data.val_frac, Some(0.1));
    assert_eq!(t.runs[0].train.save_every, Some(100));
    assert_eq!(t.runs[0].train.log_every, 10);
    assert_eq!(t.runs[0].train.batch_size, 4, "the run's own value wins");
    assert_eq!(c.plan.name, "tiny");
    // Built-in defaults when the manifest has none; the name falls back to the file stem.
    let bare = yaml(
        "version: 2
model: {embedder: {type: token, vocab_size: 256, d_model: 8}, topology: {type: stacked, layers: [{type: rms_norm, d_model: 8}]}}
targets: [{name: a, data: {path: d.npy, block_size: 4}, runs: [{id: r, steps: 1}]}]
",
    );
    let t = &bare.plan.targets[0];
    let data = t.data.tokens().expect("token data");
    assert_eq!(
        (data.tokenizer.as_deref(), data.val_frac),
        (Some("bytes"), Some(0.1))
    );
    assert_eq!((t.runs[0].seed, t.runs[0].train.save_every), (1337, Some(100)));
    assert_eq!(bare.plan.name, "m");
}

#[test]
fn targets_resolve_through_entrypoints_and_kinds() {
    let c = compile(Path::new(TINY)).unwrap_or_else(|e| panic!("{}", e.plain()));
    let names =
        |ts: Vec<&caramba::compiler::TargetPlan>| ts.iter().map(|t| t.name.clone()).collect::<Vec<_>>();
    assert_eq!(names(c.resolve_target(None).expect("all")), ["quick", "seeds"]);
    for sel in ["quick", "fast", "default", "target:quick", "experiment:quick"] {
        assert_eq!(names(c.resolve_target(Some(sel)).expect(sel)), ["quick"], "{sel}");
    }
    assert_eq!(c.run_target(None).expect("default").name, "quick");
    assert_eq!(c.run_target(Some("target:seeds")).expect("seeds").name, "seeds");
    match c.resolve_target(Some("nope")) {
        Err(ManifestError::UnknownTarget { name, available, .. }) => {
            assert_eq!(name, "nope");
            assert!(
                available.contains("quick, seeds") && available.contains("fast"),
                "{available}"
            );
        }
        other => panic!("expected UnknownTarget, got {other:?}"),
    }
    // `process:NAME` names a process target (docs/agents.md); this manifest has none.
    assert!(c.process(Some("process:quick")).is_none());
    assert!(c.resolve_target(Some("pipeline:quick")).is_err());
}

/// Parameters of the model `caramba` would build for the first target.
fn built_params(c: &Compiled) -> u64 {
    let spec = &c.plan.targets[0].model;
    let vm = SeededVarMap::new(7);
    LanguageModel::build(spec, vm.var_builder(DType::F32, &Device::Cpu)).expect("build");
    vm.named_vars().iter().map(|(_, v)| v.elem_count() as u64).sum()
}

#[test]
fn parameter_count_matches_the_built_model() {
    let tiny = compile(Path::new(TINY)).unwrap_or_else(|e| panic!("{}", e.plain()));
    assert_eq!(tiny.plan.targets[0].stats.params, built_params(&tiny));
    assert_eq!(tiny.plan.targets[0].stats.params, 139_584);
    let variety = yaml(
        "version: 2
model:
  tied_embeddings: false
  embedder: {type: token, vocab_size: 300, d_model: 48}
  topology:
    type: stacked
    layers:
      - {type: AttentionLayer, d_model: 48, n_heads: 6, n_kv_heads: 2, mode: gqa, bias: true}
      - {type: AttentionLayer, d_model: 48, n_heads: 4, head_dim: 6}
      - {type: LayerNormLayer, d_model: 48}
      - {type: RMSNormLayer, d_model: 48, elementwise_affine: false}
      - {type: SwiGLULayer, d_model: 48, d_ff: 80, bias: true}
      - type: ParallelTopology
        layers: [{type: linear, d_in: 48, d_out: 48}, {type: linear, d_in: 48, d_out: 48, bias: false}]
      - type: BranchingTopology
        repeat: 2
        layers: [{type: linear, d_in: 48, d_out: 16}]
      - {type: LinearLayer, d_in: 32, d_out: 300}
targets: [{name: a, data: {path: d.npy, block_size: 4}, runs: [{id: r, steps: 1}]}]
",
    );
    assert_eq!(variety.plan.targets[0].stats.params, built_params(&variety));
    // KV cache: (2·2·8 + 2·4·6) elements per token.
    assert_eq!(
        variety.plan.targets[0].stats.kv_bytes_per_token_f32,
        (32 + 48) * 4
    );
    assert_eq!(
        variety.plan.targets[0].stats.kv_bytes_per_token_f16,
        (32 + 48) * 2
    );
}

#[test]
fn the_standard_transformer_preset_compiles() {
    let c = compile(Path::new("tests/fixtures/manifests/standard_transformer.yml"))
        .unwrap_or_else(|e| panic!("{}", e.plain()));
    assert_eq!(c.plan.targets.len(), 2);
    assert_eq!(
        c.plan.targets[1]
            .runs
            .iter()
            .map(|r| r.id.as_str())
            .collect::<Vec<_>>(),
        ["train__s1337", "train__s2024"]
    );
    assert_eq!(c.plan.targets[0].stats.params, built_params(&c));
    assert_eq!(c.plan.targets[0].stats.attention_layers, 4);
}

// ---------------------------------------------------------------------------------------------
// Properties over generated manifests.

/// A width-preserving subtree at width `d` (every node keeps `d` features).
fn node(d: usize) -> impl Strategy<Value = Value> {
    let heads: Vec<usize> = [1usize, 2, 4, 8]
        .into_iter()
        .filter(|h| (d / h).is_multiple_of(2))
        .collect();
    let leaf = prop_oneof![
        Just(json!({"type": "RMSNormLayer", "d_model": d})),
        (1u32..1000).prop_map(move |k| f64::from(k) / 1e6).prop_map(move |eps| json!({"type": "LayerNormLayer", "d_model": d, "eps": eps})),
        (1usize..64, any::<bool>()).prop_map(move |(f, b)| json!({"type": "SwiGLULayer", "d_model": d, "d_ff": f, "bias": b})),
        (0u32..900).prop_map(|k| f64::from(k) / 1000.0).prop_map(|p| json!({"type": "DropoutLayer", "p": p})),
        any::<bool>().prop_map(move |b| json!({"type": "linear", "d_in": d, "d_out": d, "bias": b})),
        (proptest::sample::select(heads), any::<bool>(), (100u32..1_000_000).prop_map(f64::from))
            .prop_map(move |(h, rope, base)| json!({"type": "AttentionLayer", "d_model": d, "n_heads": h, "rope_enabled": rope, "rope_base": base})),
    ];
    leaf.prop_recursive(3, 24, 4, move |inner| {
        let kids = proptest::collection::vec(inner.clone(), 1..4);
        prop_oneof![
            (proptest::sample::select(vec!["StackedTopology", "NestedTopology", "ResidualTopology", "sequential", "recurrent"]), kids.clone(), 1usize..4)
                .prop_map(|(t, layers, repeat)| json!({"type": t, "layers": layers, "repeat": repeat})),
            (kids.clone(), 1usize..3, any::<bool>())
                .prop_map(|(layers, repeat, mean)| json!({"type": "ParallelTopology", "layers": layers, "repeat": repeat, "reduce": if mean { "mean" } else { "sum" }})),
            (kids.clone(), 1usize..3, 1usize..4)
                .prop_map(|(layers, repeat, it)| json!({"type": "CyclicTopology", "layers": layers, "repeat": repeat, "iterations": it})),
            (kids, 1usize..3).prop_map(move |(layers, repeat)| {
                let n = layers.len() * repeat;
                json!({"type": "stacked", "layers": [
                    {"type": "BranchingTopology", "layers": layers, "repeat": repeat},
                    {"type": "LinearLayer", "d_in": n * d, "d_out": d}
                ]})
            }),
        ]
    })
}

fn seeds() -> impl Strategy<Value = Option<Value>> {
    prop_oneof![
        Just(None),
        (0u64..1000).prop_map(|s| Some(json!(s))),
        proptest::collection::btree_set(0u64..1000, 1..4)
            .prop_map(|s| Some(json!(s.into_iter().collect::<Vec<_>>()))),
    ]
}

/// A valid manifest as a JSON value. Floats are short decimals: serde_json (without its
/// `float_roundtrip` feature) may read a 17-digit float one ULP off.
fn manifest() -> impl Strategy<Value = Value> {
    let d = proptest::sample::select(vec![16usize, 32, 64]);
    d.prop_flat_map(|d| {
        let runs = proptest::collection::vec((seeds(), 1usize..500), 1..4);
        let targets = proptest::collection::vec((runs, proptest::option::of((0u32..500).prop_map(|k| f64::from(k) / 1000.0)), any::<bool>()), 1..4);
        (Just(d), node(d), targets, proptest::option::of(0u64..100))
    })
    .prop_map(|(d, topology, targets, default_seed)| {
        let targets: Vec<Value> = targets
            .into_iter()
            .enumerate()
            .map(|(i, (runs, val_frac, tied))| {
                let runs: Vec<Value> = runs
                    .into_iter()
                    .enumerate()
                    .map(|(j, (seed, steps))| {
                        let mut r = json!({"id": format!("r{j}"), "steps": steps});
                        if let Some(s) = seed {
                            r["seed"] = s;
                        }
                        r
                    })
                    .collect();
                let mut t = json!({"name": format!("t{i}"), "data": {"path": "d.npy", "block_size": 8}, "runs": runs});
                if let Some(f) = val_frac {
                    t["data"]["val_frac"] = json!(f);
                }
                if tied {
                    // An own model: untied, with an explicit head.
                    t["model"] = json!({"tied_embeddings": false, "embedder": {"type": "token", "vocab_size": 256, "d_model": d},
                        "topology": {"type": "stacked", "layers": [{"type": "rms_norm", "d_model": d}, {"type": "linear", "d_in": d, "d_out": 256}]}});
                }
                t
            })
            .collect();
        let mut m = json!({
            "version": 2,
            "model": {"type": "TransformerModel", "embedder": {"type": "token", "vocab_size": 256, "d_model": d}, "topology": topology},
            "targets": targets,
            "entrypoints": {"default": "target:t0"},
        });
        if let Some(s) = default_seed {
            m["defaults"] = json!({"runtime": {"seed": s}});
        }
        m
    })
}

fn compile_json(v: &Value) -> Compiled {
    let text = serde_json::to_string_pretty(v).expect("json");
    compile_str(Path::new("p.json"), &text, Format::Json).unwrap_or_else(|e| panic!("{}\n{text}", e.plain()))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn lowering_is_idempotent(v in manifest()) {
        let raw: Manifest = serde_json::from_value(v.clone()).expect("typed");
        let once = lower(&raw, "p");
        prop_assert_eq!(&lower(&once, "p"), &once);
        prop_assert_eq!(&compile_json(&v).lowered, &once);
    }

    #[test]
    fn lowered_manifests_compile_back_to_themselves(v in manifest()) {
        let c = compile_json(&v);
        let as_yaml = c.lowered_yaml().expect("yaml");
        let again = compile_str(Path::new("p.yml"), &as_yaml, Format::Yaml).unwrap_or_else(|e| panic!("{}\n{as_yaml}", e.plain()));
        prop_assert_eq!(&again.lowered, &c.lowered);
        prop_assert_eq!(&again.plan, &c.plan);
        let as_json = serde_json::to_string(&c.lowered).expect("json");
        let again = compile_str(Path::new("p.json"), &as_json, Format::Json).unwrap_or_else(|e| panic!("{}", e.plain()));
        prop_assert_eq!(&again.plan, &c.plan);
        // The plan itself round-trips through JSON.
        let plan: caramba::compiler::Plan = serde_json::from_str(&c.plan_json()).expect("plan json");
        prop_assert_eq!(plan, c.plan.clone());
    }

    #[test]
    fn plans_keep_declaration_order(v in manifest()) {
        let c = compile_json(&v);
        let names: Vec<String> = c.plan.targets.iter().map(|t| t.name.clone()).collect();
        let want: Vec<String> = (0..names.len()).map(|i| format!("t{i}")).collect();
        prop_assert_eq!(names, want);
        for t in &c.plan.targets {
            let bases: Vec<&str> = t.runs.iter().map(|r| r.id.split("__").next().unwrap_or_default()).collect();
            let mut sorted = bases.clone();
            sorted.sort_unstable();
            prop_assert_eq!(bases, sorted, "runs stay grouped in declaration order");
        }
    }
}
