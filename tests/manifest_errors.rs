//! Every kind of manifest error names its manifest path and, for YAML, its line and column.

use std::path::Path;

use caramba::compiler::{compile, compile_str};
use caramba::manifest::{Format, ManifestError, Problem};

const BASE: &str = "\
version: 2
name: t
vars:
  d: 64
model:
  type: TransformerModel
  tied_embeddings: true
  embedder: {type: token, vocab_size: 256, d_model: 64}
  topology:
    type: StackedTopology
    layers:
      - type: ResidualTopology
        layers:
          - {type: RMSNormLayer, d_model: 64}
          - {type: AttentionLayer, d_model: 64, n_heads: 4}
      - type: ResidualTopology
        layers:
          - {type: RMSNormLayer, d_model: 64}
          - {type: SwiGLULayer, d_model: 64, d_ff: 128}
      - {type: RMSNormLayer, d_model: 64}
targets:
  - name: quick
    data: {path: data/t.npy, block_size: 16}
    runs:
      - id: train
        steps: 10
";

/// `BASE` with `from` replaced by `to` (which must occur).
fn edit(from: &str, to: &str) -> String {
    assert!(BASE.contains(from), "BASE has no `{from}`");
    BASE.replacen(from, to, 1)
}

fn problems(yaml: &str) -> Vec<Problem> {
    match compile_str(Path::new("t.yml"), yaml, Format::Yaml) {
        Ok(_) => panic!("expected an error for:\n{yaml}"),
        Err(e) => e.problems().to_vec(),
    }
}

/// The problem at `path`; asserts its message contains `needle` and (when given) its position.
#[track_caller]
fn expect(yaml: &str, path: &str, needle: &str, at: Option<(usize, usize)>) -> Problem {
    let ps = problems(yaml);
    let p = ps
        .iter()
        .find(|p| p.path == path)
        .unwrap_or_else(|| {
            panic!(
                "no problem at `{path}`; got {:#?}",
                ps.iter().map(Problem::headline).collect::<Vec<_>>()
            )
        })
        .clone();
    assert!(
        p.message.contains(needle),
        "`{}` does not contain `{needle}`",
        p.message
    );
    if let Some((line, col)) = at {
        assert_eq!((p.line, p.column), (Some(line), Some(col)), "{}", p.headline());
        assert!(
            p.headline().starts_with(&format!("t.yml:{line}:{col}: {path}: ")),
            "{}",
            p.headline()
        );
    }
    p
}

#[test]
fn base_manifest_is_valid() {
    compile_str(Path::new("t.yml"), BASE, Format::Yaml).expect("BASE must compile");
}

#[test]
fn unsupported_suffix_and_missing_file() {
    assert!(matches!(
        compile(Path::new("tests/fixtures/manifests/tiny.toml")),
        Err(ManifestError::Suffix { .. })
    ));
    assert!(matches!(
        compile(Path::new("tests/fixtures/manifests/absent.yml")),
        Err(ManifestError::Read { .. })
    ));
}

#[test]
fn yaml_syntax_error_has_line_and_column() {
    let ps = problems(&edit("    runs:\n", "   runs:\n"));
    assert_eq!(ps.len(), 1);
    assert!(ps[0].message.starts_with("YAML syntax"), "{}", ps[0].message);
    assert_eq!(ps[0].line, Some(24), "{}", ps[0].headline());
}

#[test]
fn json_syntax_error_has_line_and_column() {
    let err = compile_str(
        Path::new("t.json"),
        "{\n  \"version\": 2,\n  \"targets\": [,]\n}",
        Format::Json,
    )
    .expect_err("bad JSON");
    let p = &err.problems()[0];
    assert_eq!(p.line, Some(3));
    assert!(p.column.is_some());
}

#[test]
fn json_schema_errors_are_located_too() {
    let json = r#"{
  "version": 2,
  "targets": [{"name": "a", "data": {"path": "x", "block_size": 4}, "runs": [{"id": "r", "steps": "many"}]}]
}"#;
    let err = compile_str(Path::new("t.json"), json, Format::Json).expect_err("steps is a string");
    let p = &err.problems()[0];
    assert_eq!(p.path, "targets[0].runs[0].steps");
    assert_eq!(p.line, Some(3));
}

#[test]
fn empty_manifest() {
    expect("# nothing\n", "", "empty", None);
}

#[test]
fn unknown_top_level_field() {
    let p = expect(
        &format!("{BASE}wandb: true\n"),
        "wandb",
        "unknown field `wandb`",
        Some((27, 1)),
    );
    assert!(p.help.as_deref().is_some_and(|h| h.contains("targets")));
}

#[test]
fn unknown_field_inside_a_node() {
    expect(
        &edit("n_heads: 4}", "n_heads: 4, rope: true}"),
        "model.topology.layers[0].layers[1].rope",
        "unknown field `rope`",
        Some((15, 61)),
    );
}

#[test]
fn wrong_type_inside_a_node() {
    expect(
        &edit("n_heads: 4", "n_heads: four"),
        "model.topology.layers[0].layers[1].n_heads",
        "invalid type",
        Some((15, 49)),
    );
}

#[test]
fn unknown_node_type() {
    expect(
        &edit("{type: SwiGLULayer", "{type: GeGLULayer"),
        "model.topology.layers[1].layers[1].type",
        "unknown node type `GeGLULayer`",
        Some((19, 14)),
    );
}

#[test]
fn missing_field() {
    expect(
        &edit("        steps: 10\n", ""),
        "targets[0].runs[0]",
        "missing field `steps`",
        Some((25, 9)),
    );
}

#[test]
fn unknown_target_type() {
    expect(
        &edit("  - name: quick\n", "  - name: quick\n    type: pipeline\n"),
        "targets[0].type",
        "unknown variant `pipeline`",
        Some((23, 5)),
    );
    // `type: process` makes it a process target (docs/agents.md), which has no `data:`.
    expect(
        &edit("  - name: quick\n", "  - name: quick\n    type: process\n"),
        "targets[0].data",
        "unknown field `data`",
        None,
    );
}

#[test]
fn unknown_variable_is_located() {
    expect(
        &edit("d_ff: 128", "d_ff: \"${dff}\""),
        "model.topology.layers[1].layers[1].d_ff",
        "unknown manifest variable `dff`",
        Some((19, 46)),
    );
}

#[test]
fn variable_cycle() {
    let yaml = edit("  d: 64\n", "  d: \"${e}\"\n  e: \"${d}0\"\n");
    let ps = problems(&yaml);
    assert!(
        ps.iter()
            .any(|p| p.message.contains("cycle detected in manifest vars") && p.path.starts_with("vars.")),
        "{ps:?}"
    );
}

#[test]
fn variables_keep_native_types_through_compile() {
    let yaml = edit("d_model: 64}\n  topology", "d_model: \"${d}\"}\n  topology")
        .replace("name: t\n", "name: \"t_${d}\"\n");
    let c = compile_str(Path::new("t.yml"), &yaml, Format::Yaml).expect("valid");
    assert_eq!(c.plan.name, "t_64");
    assert_eq!(
        c.plan.targets[0].stats.params,
        compile_str(Path::new("t.yml"), BASE, Format::Yaml)
            .expect("base")
            .plan
            .targets[0]
            .stats
            .params
    );
}

#[test]
fn consecutive_width_mismatch() {
    expect(
        &edit(
            "{type: SwiGLULayer, d_model: 64",
            "{type: SwiGLULayer, d_model: 32",
        ),
        "model.topology.layers[1].layers[1].d_model",
        "expected d_model = 64",
        Some((19, 33)),
    );
}

#[test]
fn residual_must_preserve_width() {
    let yaml = edit(
        "{type: SwiGLULayer, d_model: 64, d_ff: 128}",
        "{type: LinearLayer, d_in: 64, d_out: 32}",
    );
    expect(
        &yaml,
        "model.topology.layers[1]",
        "must preserve the width: 64 in, 32 out",
        Some((16, 9)),
    );
}

#[test]
fn parallel_branches_must_agree() {
    let yaml = edit(
        "      - {type: RMSNormLayer, d_model: 64}\ntargets",
        "      - type: ParallelTopology\n        layers:\n          - {type: LinearLayer, d_in: 64, d_out: 64}\n          - {type: LinearLayer, d_in: 64, d_out: 32}\ntargets",
    );
    expect(
        &yaml,
        "model.topology.layers[2].layers[1]",
        "parallel branches must produce the same width",
        Some((23, 13)),
    );
}

#[test]
fn branching_concatenates_features() {
    let branching = "      - type: BranchingTopology\n        layers:\n          - {type: LinearLayer, d_in: 64, d_out: 32}\n          - {type: LinearLayer, d_in: 64, d_out: 32}\n";
    let ok = edit(
        "      - {type: RMSNormLayer, d_model: 64}\ntargets",
        &format!("{branching}targets"),
    );
    compile_str(Path::new("t.yml"), &ok, Format::Yaml).expect("32 + 32 = 64 = d_model (tied)");
    let bad = edit(
        "      - {type: RMSNormLayer, d_model: 64}\ntargets",
        &format!("{branching}      - {{type: RMSNormLayer, d_model: 32}}\ntargets"),
    );
    expect(
        &bad,
        "model.topology.layers[3].d_model",
        "expected d_model = 64",
        None,
    );
}

#[test]
fn cyclic_iterations_must_preserve_width() {
    let yaml = edit(
        "      - {type: RMSNormLayer, d_model: 64}\ntargets",
        "      - type: CyclicTopology\n        iterations: 3\n        layers:\n          - {type: LinearLayer, d_in: 64, d_out: 32}\n          - {type: LinearLayer, d_in: 32, d_out: 48}\n      - {type: LinearLayer, d_in: 48, d_out: 64}\ntargets",
    );
    expect(
        &yaml,
        "model.topology.layers[2].iterations",
        "`iterations: 3` feeds the output (48) back as the input (64)",
        Some((21, 9)),
    );
}

#[test]
fn repeat_must_chain() {
    let yaml = edit(
        "      - {type: RMSNormLayer, d_model: 64}\ntargets",
        "      - type: NestedTopology\n        repeat: 2\n        layers:\n          - {type: LinearLayer, d_in: 64, d_out: 32}\n      - {type: LinearLayer, d_in: 32, d_out: 64}\ntargets",
    );
    expect(
        &yaml,
        "model.topology.layers[2].repeat",
        "`repeat: 2` feeds this block's output (32)",
        Some((21, 9)),
    );
}

#[test]
fn repeat_zero_and_huge_are_rejected() {
    let yaml = edit(
        "      - type: ResidualTopology\n        layers:\n          - {type: RMSNormLayer, d_model: 64}\n          - {type: Att",
        "      - type: ResidualTopology\n        repeat: 0\n        layers:\n          - {type: RMSNormLayer, d_model: 64}\n          - {type: Att",
    );
    expect(
        &yaml,
        "model.topology.layers[0].repeat",
        "must be in 1..=",
        Some((13, 9)),
    );
    let huge = yaml.replace("repeat: 0", "repeat: 9999").replace(
        "type: StackedTopology\n",
        "type: StackedTopology\n    repeat: 9999\n",
    );
    let ps = problems(&huge);
    assert!(
        ps.iter()
            .any(|p| p.path == "model.topology" && p.message.contains("expands to")),
        "{ps:?}"
    );
}

#[test]
fn attention_heads_must_divide_the_width() {
    expect(
        &edit("n_heads: 4", "n_heads: 3"),
        "model.topology.layers[0].layers[1].n_heads",
        "not divisible by n_heads = 3",
        Some((15, 49)),
    );
}

#[test]
fn rope_needs_an_even_head_dim() {
    // 64 / 64 heads = head_dim 1.
    let p = expect(
        &edit("n_heads: 4", "n_heads: 64"),
        "model.topology.layers[0].layers[1].head_dim",
        "even",
        None,
    );
    assert_eq!(p.line, Some(15), "falls back to the attention node's line");
}

#[test]
fn a_decoupled_only_field_outside_decoupled_mode_is_located() {
    // The attention mode is an enum: DBA fields exist only under `mode: decoupled`.
    expect(
        &edit("n_heads: 4}", "n_heads: 4, sem_dim: 8}"),
        "model.topology.layers[0].layers[1].sem_dim",
        "only applies to `mode: decoupled`",
        Some((15, 61)),
    );
    let p = expect(
        &edit("n_heads: 4}", "n_heads: 4, mode: decoupled, sem_dim: 8}"),
        "model.topology.layers[0].layers[1].geo_dim",
        "required in `mode: decoupled`",
        None,
    );
    assert_eq!(p.line, Some(15), "falls back to the attention node's line");
}

#[test]
fn gqa_kv_heads_must_divide_heads() {
    expect(
        &edit("n_heads: 4}", "n_heads: 4, mode: gqa, n_kv_heads: 3}"),
        "model.topology.layers[0].layers[1].n_kv_heads",
        "multiple of n_kv_heads",
        Some((15, 72)),
    );
}

#[test]
fn output_width_must_reach_the_vocabulary() {
    let p = expect(
        &edit("tied_embeddings: true", "tied_embeddings: false"),
        "model.topology",
        "ends with 64 features",
        Some((9, 3)),
    );
    assert!(
        p.help
            .as_deref()
            .is_some_and(|h| h.contains("tied_embeddings: true")),
        "{p:?}"
    );
}

#[test]
fn data_and_run_numbers() {
    expect(
        &edit("block_size: 16", "block_size: 0"),
        "targets[0].data.block_size",
        "must be in 1..=",
        Some((23, 30)),
    );
    expect(
        &edit("block_size: 16}", "block_size: 16, val_frac: 1.0}"),
        "targets[0].data.val_frac",
        "[0, 1)",
        Some((23, 46)),
    );
    expect(
        &edit("steps: 10", "steps: 0"),
        "targets[0].runs[0].steps",
        "at least 1",
        Some((26, 9)),
    );
    expect(
        &edit("steps: 10", "steps: 10\n        train: {lr: -1}"),
        "targets[0].runs[0].train.lr",
        "positive",
        Some((27, 17)),
    );
    expect(
        &edit("steps: 10", "steps: 10\n        train: {device: tpu}"),
        "targets[0].runs[0].train.device",
        "unknown device `tpu`",
        Some((27, 17)),
    );
    expect(
        &edit("steps: 10", "steps: -3"),
        "targets[0].runs[0].steps",
        "invalid value",
        Some((26, 9)),
    );
}

#[test]
fn names_must_be_unique() {
    let two = format!(
        "{BASE}  - name: quick\n    data: {{path: data/t.npy, block_size: 16}}\n    runs: [{{id: a, steps: 1}}]\n"
    );
    expect(
        &two,
        "targets[1].name",
        "target name `quick` is used twice",
        Some((27, 5)),
    );
    let seeds = edit("        steps: 10\n", "        steps: 10\n        seed: [1, 1]\n");
    expect(
        &seeds,
        "targets[0].runs[0].id",
        "run id `train__s1` is used twice",
        Some((25, 9)),
    );
}

#[test]
fn entrypoints_must_name_targets() {
    expect(
        &format!("{BASE}entrypoints: {{default: slow}}\n"),
        "entrypoints.default",
        "names no target: `slow`",
        Some((27, 15)),
    );
    expect(
        &format!("{BASE}entrypoints: {{x: \"pipeline:quick\"}}\n"),
        "entrypoints.x",
        "not supported",
        Some((27, 15)),
    );
}

#[test]
fn reserved_features_are_not_supported_yet() {
    expect(
        &edit("    runs:\n", "    trainer: upcycle\n    runs:\n"),
        "targets[0]",
        "names no teacher",
        None,
    );
    expect(
        &edit("    runs:\n", "    teacher: smollm2-135m\n    runs:\n"),
        "targets[0].teacher",
        "only applies to `trainer: upcycle`",
        Some((24, 5)),
    );
    expect(
        &edit("steps: 10", "steps: 10\n        phase: blockwise"),
        "targets[0].runs[0].phase",
        "only applies to `trainer: upcycle`",
        Some((27, 9)),
    );
    expect(
        &edit("    runs:\n", "    benchmarks: [{id: ppl}]\n    runs:\n"),
        "targets[0].benchmarks[0]",
        "missing field `kind`",
        None,
    );
    expect(
        &edit("steps: 10", "steps: 10\n        verify: {type: compare}"),
        "targets[0].runs[0].verify",
        "only applies to `trainer: upcycle`",
        Some((27, 9)),
    );
    compile_str(
        Path::new("t.yml"),
        &edit("    runs:\n", "    benchmarks: []\n    runs:\n"),
        Format::Yaml,
    )
    .expect("an empty benchmark list is fine");
}

#[test]
fn version_and_model_presence() {
    expect(
        &edit("version: 2", "version: 3"),
        "version",
        "unsupported manifest version 3",
        Some((1, 1)),
    );
    let no_model = BASE.split("model:\n").next().expect("head").to_string()
        + "targets:\n  - name: quick\n    data: {path: d.npy, block_size: 4}\n    runs: [{id: r, steps: 1}]\n";
    expect(&no_model, "targets[0]", "has no model", Some((6, 5)));
}

#[test]
fn bytes_tokenizer_needs_256_ids() {
    expect(
        &edit("vocab_size: 256", "vocab_size: 100"),
        "targets[0].data.tokenizer",
        "ids 0..255",
        Some((23, 5)),
    );
}

#[test]
fn all_problems_are_reported_at_once_in_document_order() {
    let yaml = edit("n_heads: 4", "n_heads: 5")
        .replace("block_size: 16", "block_size: 0")
        .replace("steps: 10", "steps: 0");
    let ps = problems(&yaml);
    let paths: Vec<&str> = ps.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "model.topology.layers[0].layers[1].n_heads",
            "targets[0].data.block_size",
            "targets[0].runs[0].steps"
        ]
    );
}

#[test]
fn eval_case_problems_point_at_the_case_field() {
    let upcycle = |verify: &str| {
        edit(
            "    runs:\n      - id: train\n        steps: 10\n",
            &format!(
                "    trainer: upcycle\n    teacher: smollm2-135m\n    runs:\n      - id: train\n        steps: 10\n        verify:\n{verify}"
            ),
        )
    };
    let good = "          - {type: kvcache, min_reduction: 2}\n          - type: eval\n            cases:\n              - {kind: int_greedy, id: a, prompt: \"1+1=\", answer: 2}\n";
    compile_str(Path::new("t.yml"), &upcycle(good), Format::Yaml).expect("a valid eval check");
    expect(
        &upcycle(&good.replace("answer: 2}", "answer: two}")),
        "targets[0].runs[0].verify[1].cases[0].answer",
        "invalid type",
        Some((33, 59)),
    );
    let bad_choice = "          - type: eval\n            cases:\n              - {kind: int_greedy, id: a, prompt: p, answer: 1}\n              - {kind: choice_logprob, id: b, prompt: p, choices: [a, b], answer: 2}\n";
    expect(
        &upcycle(bad_choice),
        "targets[0].runs[0].verify[0].cases[1].answer",
        "not an index of the 2 choices",
        None,
    );
    expect(
        &upcycle("          - {type: eval, cases: [{kind: greedy, id: a, prompt: p, answer: 1}]}\n"),
        "targets[0].runs[0].verify[0].cases[0].kind",
        "unknown case kind `greedy`",
        None,
    );
    expect(
        &upcycle("          - {type: eval, cases: []}\n"),
        "targets[0].runs[0].verify[0].cases",
        "non-empty list",
        None,
    );
}

/// Variables that use variables (ten deep, ten uses each: 10^10 copies): one problem with a
/// position, after a bounded amount of work, instead of gigabytes and an abort.
#[test]
fn exponential_variables_stop_at_the_expansion_budget() {
    let mut vars = String::from("  l0: \"xxxxxxxxxxxxxxxx\"\n");
    for i in 1..10 {
        vars.push_str(&format!(
            "  l{i}: \"{}\"\n",
            format!("${{l{}}}", i - 1).repeat(10)
        ));
    }
    let yaml = edit("  d: 64\n", &format!("  d: 64\n{vars}")).replacen("name: t\n", "name: \"${l9}\"\n", 1);
    let ps = problems(&yaml);
    assert_eq!(ps.len(), 1, "{ps:#?}");
    assert!(ps[0].message.contains("larger than"), "{}", ps[0].headline());
    assert!(ps[0].path.starts_with("vars.l"), "{}", ps[0].headline());
    assert!(ps[0].line.is_some(), "{}", ps[0].headline());
    // Unused, the same definitions cost nothing.
    let unused = edit("  d: 64\n", &format!("  d: 64\n{vars}"));
    compile_str(Path::new("t.yml"), &unused, Format::Yaml).expect("unused variables are not expanded");
}

/// Sizes that each pass validation but together cannot fit in memory are refused at compile
/// time, at the field to change.
#[test]
fn models_and_batches_that_cannot_fit_in_memory_are_refused() {
    let wide = BASE.replace("64", "16777216");
    let p = expect(&wide, "model", "needs at least", None);
    assert!(p.message.contains("GiB") && p.line.is_some(), "{}", p.headline());

    let p = expect(
        &edit("steps: 10", "steps: 10\n        train: {batch_size: 1000000000}"),
        "targets[0].runs[0].train.batch_size",
        "needs at least",
        Some((27, 17)),
    );
    assert!(
        p.help.as_deref().is_some_and(|h| h.contains("grad_accum")),
        "{p:?}"
    );
}

#[test]
fn print_plan_shows_the_memory_estimate() {
    let c = compile_str(Path::new("t.yml"), BASE, Format::Yaml).expect("valid");
    let r = &c.plan.targets[0].runs[0];
    assert!(r.memory.weights > 0 && r.memory.activations > 0, "{:?}", r.memory);
    let text = caramba::compiler::render_plan(&c);
    assert!(text.contains("memory at least:"), "{text}");
}

#[test]
fn norm_eps_and_rope_base_must_be_positive_and_finite() {
    for bad in ["-1", "0", "-1e-9"] {
        expect(
            &edit(
                "{type: RMSNormLayer, d_model: 64}\n",
                &format!("{{type: RMSNormLayer, d_model: 64, eps: {bad}}}\n"),
            ),
            "model.topology.layers[0].layers[0].eps",
            "positive",
            None,
        );
    }
    for bad in ["0", "-10000"] {
        expect(
            &edit("n_heads: 4}", &format!("n_heads: 4, rope_base: {bad}}}")),
            "model.topology.layers[0].layers[1].rope_base",
            "positive",
            None,
        );
    }
    // Non-finite numbers stop at the YAML parser, with their position.
    for bad in [".nan", ".inf", "-.inf"] {
        let ps = problems(&edit("n_heads: 4}", &format!("n_heads: 4, rope_base: {bad}}}")));
        assert_eq!(ps[0].line, Some(15), "{}", ps[0].headline());
        assert!(ps[0].message.contains("non-finite"), "{}", ps[0].headline());
    }
}

/// serde stops at an internally tagged mapping (`embedder: {type: token, …}`); the problem
/// still names the field.
#[test]
fn a_bad_field_of_the_embedder_is_named() {
    expect(
        &edit("vocab_size: 256", "vocab_size: -1"),
        "model.embedder.vocab_size",
        "invalid value",
        Some((8, 27)),
    );
    expect(
        &edit("vocab_size: 256", "vocab_size: lots"),
        "model.embedder.vocab_size",
        "invalid type",
        None,
    );
}

/// A bad value that a variable put in place is reported at the variable's definition.
#[test]
fn a_bad_value_from_a_variable_points_at_its_definition() {
    let yaml = edit("d_ff: 128", "d_ff: \"${d}\"").replacen("  d: 64\n", "  d: 0\n", 1);
    let p = expect(
        &yaml,
        "model.topology.layers[1].layers[1].d_ff",
        "`${d}`",
        Some((4, 3)),
    );
    assert!(p.message.contains("must be in 1..="), "{}", p.headline());
}

#[test]
fn glu_activation_must_be_known() {
    let p = expect(
        &edit(
            "{type: SwiGLULayer, d_model: 64, d_ff: 128}",
            "{type: GLULayer, d_model: 64, d_ff: 128, activation: tanh}",
        ),
        "model.topology.layers[1].layers[1].activation",
        "unknown variant `tanh`",
        Some((19, 54)),
    );
    assert!(
        p.help
            .as_deref()
            .is_some_and(|h| h.contains("`silu`, `gelu`, `relu`, `sigmoid`")),
        "{:?}",
        p.help
    );
}

#[test]
fn glu_d_ff_zero_is_located_with_a_hint() {
    let p = expect(
        &edit(
            "{type: SwiGLULayer, d_model: 64, d_ff: 128}",
            "{type: geglu, d_model: 64, d_ff: 0}",
        ),
        "model.topology.layers[1].layers[1].d_ff",
        "must be in 1..=",
        Some((19, 40)),
    );
    assert!(
        p.help.as_deref().is_some_and(|h| h.contains("d_ff: 256")),
        "{:?}",
        p.help
    );
}

#[test]
fn a_glu_alias_and_a_different_activation_conflict() {
    expect(
        &edit(
            "{type: SwiGLULayer, d_model: 64, d_ff: 128}",
            "{type: geglu, d_model: 64, d_ff: 128, activation: relu}",
        ),
        "model.topology.layers[1].layers[1].activation",
        "`type: geglu` means activation gelu",
        Some((19, 51)),
    );
}

#[test]
fn an_unknown_optimizer_is_located_and_the_valid_names_are_listed() {
    let p = expect(
        &edit("steps: 10", "steps: 10\n        train: {optimizer: adam}"),
        "targets[0].runs[0].train.optimizer",
        "unknown variant `adam`",
        Some((27, 17)),
    );
    assert!(
        p.help
            .as_deref()
            .is_some_and(|h| h.contains("`adamw`, `sgd`, `lion`, `swats`, `pidao`")),
        "{:?}",
        p.help
    );
    let p = expect(
        &edit("steps: 10", "steps: 10\n        train: {clip: adaptive}"),
        "targets[0].runs[0].train.clip",
        "unknown variant `adaptive`",
        Some((27, 17)),
    );
    assert!(
        p.help
            .as_deref()
            .is_some_and(|h| h.contains("`global` or `adagc`")),
        "{:?}",
        p.help
    );
}

#[test]
fn the_new_optimizers_and_adagc_parse_and_their_blocks_are_checked() {
    for train in [
        "{optimizer: swats}",
        "{optimizer: pidao}",
        "{optimizer: swats, swats: {tolerance: 1.0e-8, min_steps: 100}}",
        "{optimizer: pidao, pid: {kp: 1.0, ki: 0.05, kd: 0.0, integral_clip: 5, derivative_ema: 0.5}}",
        "{clip: adagc, adagc: {beta: 0.99, lambda: 1.1, warmup: 50}}",
    ] {
        let yaml = edit("steps: 10", &format!("steps: 10\n        train: {train}"));
        if let Err(e) = compile_str(Path::new("t.yml"), &yaml, Format::Yaml) {
            panic!("`train: {train}` is refused: {:#?}", e.problems());
        }
    }
    expect(
        &edit("steps: 10", "steps: 10\n        train: {pid: {kq: 1}}"),
        "targets[0].runs[0].train.pid.kq",
        "unknown field `kq`",
        Some((27, 23)),
    );
    expect(
        &edit(
            "steps: 10",
            "steps: 10\n        train: {pid: {derivative_ema: 1.5}}",
        ),
        "targets[0].runs[0].train.pid.derivative_ema",
        "[0, 1)",
        None,
    );
    expect(
        &edit("steps: 10", "steps: 10\n        train: {adagc: {lambda: 0}}"),
        "targets[0].runs[0].train.adagc.lambda",
        "positive",
        None,
    );
    expect(
        &edit("steps: 10", "steps: 10\n        train: {swats: {tolerance: -1}}"),
        "targets[0].runs[0].train.swats.tolerance",
        "positive",
        None,
    );
}

#[test]
fn orchestrator_and_adagc_are_refused_where_their_loop_is_not() {
    let upcycle = edit(
        "    runs:\n      - id: train\n        steps: 10\n",
        "    trainer: upcycle\n    teacher: smollm2-135m\n    runs:\n      - id: train\n        steps: 10\n        phase: blockwise\n        train: {clip: adagc, orchestrator: {eval_horizon: 5}}\n",
    );
    expect(
        &upcycle,
        "targets[0].runs[0].train.clip",
        "the blockwise phase clips by global norm only",
        None,
    );
    expect(
        &upcycle,
        "targets[0].runs[0].train.orchestrator",
        "without the orchestrator",
        None,
    );
    expect(
        &edit(
            "steps: 10",
            "steps: 10\n        train: {orchestrator: {max_candidates: 1}}",
        ),
        "targets[0].runs[0].train.orchestrator.max_candidates",
        "must be at least 2",
        Some((27, 32)),
    );
}
