//! The docs cannot fall behind the code: every `type:` name, every manifest key, every value a
//! closed enum accepts, every CLI subcommand and flag, and every form of the original that the
//! legacy rewrite reads appears in `docs/*.md` (or README.md). The lists come from the code's own
//! tables — `NODE_TYPES`, serde's field lists (asked by deserializing an unknown field), clap's
//! command tree, the legacy rewrite's tables — so a new field, layer or flag fails this test
//! until it is documented.

use caramba::manifest::legacy::{FLAT_DEFAULTS, MODEL_TYPE_ALIASES};
use clap::CommandFactory;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

/// Every markdown file of docs/, plus the README.
fn docs() -> String {
    let mut text = std::fs::read_to_string("README.md").unwrap_or_default();
    let mut files: Vec<_> = std::fs::read_dir("docs")
        .expect("docs/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "md"))
        .collect();
    files.sort();
    for f in files {
        text.push('\n');
        text.push_str(&std::fs::read_to_string(&f).expect("readable doc"));
    }
    text
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// `word` appears as a name, not inside another one: between non-identifier characters, and
/// next to code punctuation (`` `word` ``, `word:`, `.word`, `{word`, `--word`, `word=`).
fn documented(docs: &str, word: &str) -> bool {
    docs.match_indices(word).any(|(i, _)| {
        let before = docs[..i].chars().next_back();
        let after = docs[i + word.len()..].chars().next();
        let bounded = !before.is_some_and(is_ident) && !after.is_some_and(is_ident);
        let code = matches!(before, Some('`' | '.' | '{' | '-' | '[' | ' ' | '|'))
            && matches!(after, Some('`' | ':' | '=' | '.' | ',' | '}' | ']' | ' '));
        bounded && code
    })
}

/// The fields serde knows for `T`, read from its "unknown field" message (`extra` adds the tag of
/// an internally tagged enum).
fn fields_of<T: DeserializeOwned>(extra: Value) -> Vec<String> {
    let mut probe = json!({"__probe__": 0});
    if let (Some(p), Some(e)) = (probe.as_object_mut(), extra.as_object()) {
        p.extend(e.clone());
    }
    match serde_json::from_value::<T>(probe) {
        Ok(_) => Vec::new(),
        Err(e) => field_list(&e.to_string()),
    }
}

/// The backticked names after "expected" in a serde message.
fn field_list(message: &str) -> Vec<String> {
    let Some(i) = message.find("expected") else {
        return Vec::new();
    };
    message[i..]
        .split('`')
        .skip(1)
        .step_by(2)
        .map(String::from)
        .filter(|f| !f.is_empty())
        .collect()
}

fn missing(words: impl IntoIterator<Item = String>) -> Vec<String> {
    let docs = docs();
    let mut out: Vec<String> = words.into_iter().filter(|w| !documented(&docs, w)).collect();
    out.sort();
    out.dedup();
    out
}

#[test]
fn every_node_type_and_alias_is_documented() {
    let names = caramba::topology::NODE_TYPES
        .iter()
        .flat_map(|(name, aliases)| std::iter::once(*name).chain(aliases.iter().copied()))
        .map(String::from);
    let m = missing(names);
    assert!(
        m.is_empty(),
        "document these `type:` names in docs/layers.md or docs/topologies.md: {m:?}"
    );
}

#[test]
fn every_layer_and_topology_field_is_documented() {
    let mut fields = Vec::new();
    for (name, _) in caramba::topology::NODE_TYPES {
        let probe = json!({"type": name, "__probe__": 0});
        if let Err(e) = serde_json::from_value::<caramba::topology::NodeSpec>(probe) {
            fields.extend(field_list(&e.to_string()));
        }
    }
    assert!(fields.len() > 20, "the probe found the fields: {fields:?}");
    let m = missing(fields);
    assert!(
        m.is_empty(),
        "document these layer/topology fields in docs/layers.md or docs/topologies.md: {m:?}"
    );
}

#[test]
fn every_manifest_key_is_documented() {
    use caramba::bench::BenchmarkSpec;
    use caramba::manifest::{
        DataDefaults, Defaults, LoggingDefaults, Manifest, Run, RunGenerate, RuntimeDefaults, Target,
    };
    use caramba::upcycle::spec::{EvalThresholds, L1Limits, UpcycleSpec, VerifySpec};
    let none = json!({});
    let mut keys = Vec::new();
    keys.extend(fields_of::<Manifest>(none.clone()));
    keys.extend(fields_of::<Defaults>(none.clone()));
    keys.extend(fields_of::<DataDefaults>(none.clone()));
    keys.extend(fields_of::<RuntimeDefaults>(none.clone()));
    keys.extend(fields_of::<LoggingDefaults>(none.clone()));
    keys.extend(fields_of::<Target>(none.clone()));
    keys.extend(fields_of::<Run>(none.clone()));
    keys.extend(fields_of::<RunGenerate>(none.clone()));
    keys.extend(fields_of::<caramba::train::TrainSpec>(none.clone()));
    keys.extend(fields_of::<caramba::data::DataSpec>(none.clone()));
    keys.extend(fields_of::<caramba::data::PrepareSpec>(none.clone()));
    keys.extend(fields_of::<caramba::data::SupervisedSpec>(none.clone()));
    keys.extend(fields_of::<caramba::model::ModelSpec>(none.clone()));
    keys.extend(fields_of::<UpcycleSpec>(none.clone()));
    keys.extend(fields_of::<caramba::upcycle::global::GlobalSpec>(none.clone()));
    keys.extend(fields_of::<L1Limits>(none.clone()));
    keys.extend(fields_of::<EvalThresholds>(none.clone()));
    for kind in [
        "perplexity",
        "latency",
        "memory",
        "accuracy",
        "generation",
        "behavior",
    ] {
        keys.extend(fields_of::<BenchmarkSpec>(json!({"kind": kind})));
    }
    for ty in ["compare", "fidelity", "eval", "kvcache"] {
        keys.extend(fields_of::<VerifySpec>(json!({"type": ty})));
    }
    for kind in ["int_greedy", "choice_logprob", "exact_match_greedy"] {
        keys.extend(fields_of::<caramba::bench::eval_cases::EvalCase>(
            json!({"kind": kind}),
        ));
    }
    assert!(keys.len() > 60, "the probe found the keys: {keys:?}");
    let m = missing(keys);
    assert!(
        m.is_empty(),
        "document these manifest keys in docs/manifests.md (or the page of their block): {m:?}"
    );
}

#[test]
fn every_cli_command_and_flag_is_documented() {
    fn walk(cmd: &clap::Command, path: &str, out: &mut Vec<String>) {
        for arg in cmd.get_arguments() {
            if let Some(long) = arg.get_long() {
                out.push(format!("--{long}"));
                for alias in arg.get_visible_aliases().into_iter().flatten() {
                    out.push(format!("--{alias}"));
                }
            }
        }
        for sub in cmd.get_subcommands() {
            let name = format!("{path} {}", sub.get_name());
            out.push(name.clone());
            walk(sub, &name, out);
        }
    }
    let mut words = Vec::new();
    walk(&caramba::cli::Cli::command(), "caramba", &mut words);
    let docs = docs();
    let mut m: Vec<String> = words
        .into_iter()
        .filter(|w| !["--help", "--version"].contains(&w.as_str()))
        .filter(|w| {
            if w.starts_with("--") {
                !documented(&docs, w.trim_start_matches('-')) || !docs.contains(w.as_str())
            } else {
                !docs.contains(w.as_str())
            }
        })
        .collect();
    m.sort();
    m.dedup();
    assert!(
        m.is_empty(),
        "document these commands and flags (docs/*.md): {m:?}"
    );
}

#[test]
fn every_form_of_the_original_is_in_the_coming_from_table() {
    let docs = std::fs::read_to_string("docs/manifests.md").expect("docs/manifests.md");
    let section = docs
        .split("## Coming from the Python caramba")
        .nth(1)
        .expect("docs/manifests.md has a \"Coming from the Python caramba\" section");
    let mut words: Vec<String> = FLAT_DEFAULTS.iter().map(|(k, _)| k.to_string()).collect();
    words.extend(MODEL_TYPE_ALIASES.iter().map(|(k, _)| k.to_string()));
    for (_, renames) in caramba::manifest::legacy::BENCHMARK_FIELDS {
        words.extend(renames.iter().map(|(old, _)| old.to_string()));
    }
    words.extend(
        [
            "gradient_accumulation_steps",
            "use_amp",
            "amp_dtype",
            "compile_model",
            "num_workers",
            "pin_memory",
            "activation_checkpointing",
            "orchestrator_enabled",
            "cache_teacher_outputs",
            "teacher_ckpt",
            "batches",
            "context_window",
            "impl",
            "mode",
            "exp",
            "expected",
            "!include",
            "ENV",
            "--group",
            "--manifest",
            "--mode",
            "--exp",
            "--data",
            "--ckpt",
            "--resume",
            "--seed",
            "--entity",
            "--project",
            "q8",
            "q4",
            "mps",
            "bfloat16",
        ]
        .map(String::from),
    );
    let m: Vec<String> = words
        .into_iter()
        .filter(|w| !section.contains(&format!("`{w}")) && !section.contains(w.as_str()))
        .collect();
    assert!(
        m.is_empty(),
        "add these forms to the \"Coming from the Python caramba\" table: {m:?}"
    );
}
