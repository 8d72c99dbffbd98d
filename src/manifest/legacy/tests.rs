//! The rewrite on small trees: what moves where, and where a moved value is located.

use std::path::Path;

use serde_json::{Value, json};

use super::rewrite;
use crate::manifest::load::{Format, load_str};

fn rewritten(text: &str) -> (Value, crate::manifest::Source) {
    let (mut src, mut v) =
        load_str("m.yml", Path::new("m.yml"), text.to_string(), Format::Yaml).expect("yaml");
    rewrite(&mut src, &mut v).unwrap_or_else(|e| panic!("{}", e.plain()));
    (v, src)
}

#[test]
fn flat_defaults_move_and_keep_their_line() {
    let (v, src) = rewritten("version: 1\ndefaults:\n  tokenizer: bytes\n  save_every: 5\n  device: mps\n");
    assert_eq!(
        v["defaults"],
        json!({"data": {"tokenizer": "bytes"}, "runtime": {"save_every": 5, "device": "metal"}})
    );
    assert_eq!(src.spans.lookup("defaults.runtime.save_every"), Some((4, 3)));
}

#[test]
fn a_flat_key_written_twice_is_a_problem() {
    let (mut src, mut v) = load_str(
        "m.yml",
        Path::new("m.yml"),
        "defaults:\n  val_frac: 0.1\n  data: {val_frac: 0.2}\n".into(),
        Format::Yaml,
    )
    .expect("yaml");
    let e = rewrite(&mut src, &mut v).expect_err("twice");
    assert_eq!(e.problems()[0].path, "defaults.val_frac");
    assert_eq!(e.problems()[0].line, Some(2));
}

#[test]
fn group_data_string_takes_the_runs_block_size() {
    let (v, src) = rewritten(
        "groups:\n  - name: g\n    data: d.npy\n    runs:\n      - {id: a, steps: 1, train: {block_size: 64, gradient_accumulation_steps: 2}}\n",
    );
    assert_eq!(
        v["targets"][0]["data"],
        json!({"path": "d.npy", "block_size": 64})
    );
    assert_eq!(v["targets"][0]["runs"][0]["train"], json!({"grad_accum": 2}));
    assert_eq!(src.spans.lookup("targets[0].data.block_size"), Some((5, 35)));
}

#[test]
fn benchmark_config_is_flattened_with_todays_names() {
    let (v, _) = rewritten(
        "targets:\n  - name: t\n    benchmarks:\n      - {id: m, config: {type: memory, sequence_lengths: [8], quantization_modes: [q8], measure_peak: false}, models: [teacher, student]}\n",
    );
    assert_eq!(
        v["targets"][0]["benchmarks"][0],
        json!({"kind": "memory", "seq_lens": [8], "cache_kinds": ["q8"], "measure": false})
    );
}

#[test]
fn amp_becomes_the_dtype() {
    let (v, _) = rewritten(
        "targets:\n  - name: t\n    runs:\n      - {id: a, train: {dtype: float32, use_amp: true, amp_dtype: bfloat16, compile_model: false}}\n",
    );
    assert_eq!(v["targets"][0]["runs"][0]["train"], json!({"dtype": "bf16"}));
}

#[test]
fn component_specs_become_names() {
    let (v, _) = rewritten(
        "targets:\n  - name: t\n    trainer: {ref: trainer.upcycle}\n    objective: {ref: objective.next_token_ce, config: {}}\n",
    );
    assert_eq!(v["targets"][0]["trainer"], "trainer.upcycle");
    assert_eq!(v["targets"][0]["objective"], "objective.next_token_ce");
}

/// The problem the rewrite of `text` reports (there must be exactly one).
fn refused(text: &str) -> crate::manifest::Problem {
    let (mut src, mut v) =
        load_str("m.yml", Path::new("m.yml"), text.to_string(), Format::Yaml).expect("yaml");
    let e = rewrite(&mut src, &mut v).expect_err("refused");
    assert_eq!(e.problems().len(), 1, "{}", e.plain());
    e.problems()[0].clone()
}

#[test]
fn python_only_forms_say_what_to_write() {
    let p = refused("targets:\n  - name: t\n    backend: mlx\n");
    assert_eq!(p.path, "targets[0].backend");
    assert!(p.message.contains("Python framework"), "{}", p.message);
    assert!(p.help.as_deref().is_some_and(|h| h.contains("train.device")));

    let p = refused("variables: {d: 1}\ntargets: []\n");
    assert_eq!(p.path, "variables");
    assert!(p.help.as_deref().is_some_and(|h| h.contains("`vars:`")));

    let p = refused(
        "targets:\n  - name: t\n    benchmarks:\n      - {id: l, config: {type: latency, use_cache: false}}\n",
    );
    assert_eq!(p.path, "targets[0].benchmarks[0].config.use_cache");
    assert!(p.help.as_deref().is_some_and(|h| h.contains("cache_kinds")));

    let p = refused(
        "targets:\n  - name: t\n    benchmarks:\n      - {id: a, config: {type: accuracy, tasks: [arc_easy], num_fewshot: 5}}\n",
    );
    assert!(p.message.contains("few-shot"), "{}", p.message);

    let p = refused("targets:\n  - name: t\n    trainer: {ref: trainer.upcycle, impl: \"python:x:Y\"}\n");
    assert_eq!((p.path.as_str(), p.line), ("targets[0].trainer.impl", Some(3)));
    assert!(p.help.as_deref().is_some_and(|h| h.contains("trainer: standard")));
}

#[test]
fn the_teacher_checkpoint_of_a_run_becomes_the_targets_teacher() {
    let (v, _) = rewritten(
        "targets:\n  - name: t\n    runs:\n      - {id: a, train: {teacher_ckpt: \"hf://meta-llama/Llama-3.2-1B\", phase: global}}\n",
    );
    assert_eq!(v["targets"][0]["teacher"], "hf:meta-llama/Llama-3.2-1B");
    assert_eq!(v["targets"][0]["runs"][0]["phase"], "global");
}
