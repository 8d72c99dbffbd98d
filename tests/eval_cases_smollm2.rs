//! The SmolLM2 preset's eval suite on its real teacher (SmolLM2-135M-Instruct, Q4_1 GGUF, fetched
//! once into the cache): the cases parse from the preset, and the teacher answers most of them, so
//! a student's score against it means something. Skipped when the model cannot be fetched.

use candle_core::Device;
use caramba::bench::eval_cases::{EvalOptions, score_cases};
use caramba::loader::{LoadOptions, fetch, load_source};
use caramba::upcycle::spec::{VerifySpec, parse_verify};

#[test]
fn smollm2_teacher_passes_most_of_the_preset_eval_suite() {
    let compiled = caramba::compiler::compile(std::path::Path::new("presets/smollm2_135m_dba.yml"))
        .unwrap_or_else(|e| panic!("{}", e.plain()));
    let target = compiled.run_target(Some("quick")).unwrap();
    let (cases, opts) = target
        .runs
        .iter()
        .flat_map(|r| r.verify.iter())
        .flat_map(|v| parse_verify(v).unwrap())
        .find_map(|c| match c {
            VerifySpec::Eval {
                cases,
                max_new_tokens,
                chat,
                ..
            } => Some((cases, EvalOptions { max_new_tokens, chat })),
            _ => None,
        })
        .expect("the quick target has an eval check");
    assert!(cases.len() >= 15, "{} cases", cases.len());
    let source = match fetch("smollm2-135m") {
        Ok(s) => s,
        Err(e) => {
            eprintln!("skipping: SmolLM2-135M could not be fetched ({e})");
            return;
        }
    };
    let m = load_source(&source, &LoadOptions::default()).expect("SmolLM2 loads");
    let tok = m.tokenizer.as_ref().expect("GGUF tokenizer");
    let report = score_cases(&m.model, tok, &cases, &opts, &Device::Cpu).expect("scores");
    for c in &report.cases {
        eprintln!("{:<14} {:<18} {:<5} {:?}", c.id, c.kind, c.correct, c.output);
    }
    eprintln!("teacher: {}/{}", report.correct, report.total);
    assert!(
        report.accuracy >= 0.7,
        "the teacher gets only {}/{} right: the suite would not tell a good student from a bad one",
        report.correct,
        report.total
    );
}
