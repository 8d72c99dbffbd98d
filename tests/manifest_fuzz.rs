//! The compiler never panics: random YAML/JSON text and mutated valid manifests (keys deleted,
//! numbers changed, types swapped, items duplicated) either compile or return problems that
//! each carry the file name. A panic fails the test.

use std::path::Path;

use caramba::compiler::{compile_str, render_plan};
use caramba::manifest::{Format, ManifestError};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

const FIXTURES: [&str; 2] = [
    include_str!("fixtures/manifests/tiny.yml"),
    include_str!("fixtures/manifests/standard_transformer.yml"),
];

/// Compile `text` both as YAML and as JSON; check whatever comes back is well formed.
fn check(text: &str) {
    for (name, format) in [("f.yml", Format::Yaml), ("f.json", Format::Json)] {
        match compile_str(Path::new(name), text, format) {
            Ok(c) => {
                assert!(!render_plan(&c).is_empty());
                assert!(!c.plan_json().is_empty());
                c.lowered_yaml().expect("a lowered manifest serializes");
            }
            Err(e) => well_formed(&e, name),
        }
    }
}

fn well_formed(e: &ManifestError, name: &str) {
    let problems = e.problems();
    assert!(
        !problems.is_empty(),
        "an invalid manifest has at least one problem: {e}"
    );
    for p in problems {
        assert_eq!(p.file, name);
        assert!(!p.message.is_empty());
        assert!(p.headline().starts_with(name));
    }
    assert!(!e.plain().is_empty());
}

/// Every path in `v` (as index chains) for picking a mutation site.
fn sites(v: &Value, here: &mut Vec<PathStep>, out: &mut Vec<Vec<PathStep>>) {
    out.push(here.clone());
    match v {
        Value::Object(m) => {
            for (k, c) in m {
                here.push(PathStep::Key(k.clone()));
                sites(c, here, out);
                here.pop();
            }
        }
        Value::Array(a) => {
            for (i, c) in a.iter().enumerate() {
                here.push(PathStep::Index(i));
                sites(c, here, out);
                here.pop();
            }
        }
        _ => {}
    }
}

#[derive(Debug, Clone)]
enum PathStep {
    Key(String),
    Index(usize),
}

fn at<'a>(v: &'a mut Value, path: &[PathStep]) -> Option<&'a mut Value> {
    path.iter().try_fold(v, |v, s| match s {
        PathStep::Key(k) => v.get_mut(k.as_str()),
        PathStep::Index(i) => v.get_mut(*i),
    })
}

#[derive(Debug, Clone)]
enum Mutation {
    Delete,
    Number(Value),
    Replace(Value),
    Duplicate,
    RenameKey(String),
    EmptyContainer,
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let numbers = prop_oneof![
        Just(json!(0)),
        Just(json!(-1)),
        Just(json!(1)),
        Just(json!(3)),
        Just(json!(u64::MAX)),
        Just(json!(i64::MIN)),
        Just(json!(1u64 << 40)),
        Just(json!(0.5)),
        Just(json!(-0.0)),
        Just(json!(1e300)),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u16>().prop_map(|n| json!(n)),
    ];
    let values = prop_oneof![
        Just(Value::Null),
        Just(json!(true)),
        Just(json!("")),
        Just(json!("${nope}")),
        Just(json!("${d_model}")),
        Just(json!("text")),
        Just(json!([])),
        Just(json!({})),
        Just(json!([1, "a", null])),
        Just(json!({"type": "AttentionLayer"})),
        Just(json!({"type": "StackedTopology", "layers": []})),
    ];
    prop_oneof![
        Just(Mutation::Delete),
        numbers.prop_map(Mutation::Number),
        values.prop_map(Mutation::Replace),
        Just(Mutation::Duplicate),
        "[a-z_]{1,8}".prop_map(Mutation::RenameKey),
        Just(Mutation::EmptyContainer),
    ]
}

fn apply(root: &mut Value, site: &[PathStep], m: &Mutation) {
    let Some((last, parent_path)) = site.split_last() else {
        if let Mutation::Replace(v) | Mutation::Number(v) = m {
            *root = v.clone();
        }
        return;
    };
    let Some(parent) = at(root, parent_path) else {
        return;
    };
    match (parent, last) {
        (Value::Object(map), PathStep::Key(k)) => match m {
            Mutation::Delete => {
                map.remove(k);
            }
            Mutation::Number(v) | Mutation::Replace(v) => {
                map.insert(k.clone(), v.clone());
            }
            Mutation::Duplicate => {}
            Mutation::RenameKey(new) => {
                if let Some(v) = map.remove(k) {
                    map.insert(new.clone(), v);
                }
            }
            Mutation::EmptyContainer => {
                if let Some(v) = map.get_mut(k) {
                    empty(v);
                }
            }
        },
        (Value::Array(items), PathStep::Index(i)) if *i < items.len() => match m {
            Mutation::Delete => {
                items.remove(*i);
            }
            Mutation::Number(v) | Mutation::Replace(v) => items[*i] = v.clone(),
            Mutation::Duplicate => {
                let copy = items[*i].clone();
                items.insert(*i, copy);
            }
            Mutation::RenameKey(_) => {}
            Mutation::EmptyContainer => empty(&mut items[*i]),
        },
        _ => {}
    }
}

fn empty(v: &mut Value) {
    match v {
        Value::Object(m) => *m = Map::new(),
        Value::Array(a) => a.clear(),
        _ => {}
    }
}

fn fixture_value(i: usize) -> Value {
    serde_saphyr::from_str(FIXTURES[i]).expect("fixtures are valid YAML")
}

#[test]
fn fixtures_compile() {
    for text in FIXTURES {
        compile_str(Path::new("f.yml"), text, Format::Yaml).unwrap_or_else(|e| panic!("{}", e.plain()));
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn mutated_manifests_never_panic(
        which in 0usize..FIXTURES.len(),
        picks in proptest::collection::vec((any::<proptest::sample::Index>(), mutation()), 1..4),
        as_json in any::<bool>(),
    ) {
        let mut v = fixture_value(which);
        for (pick, m) in &picks {
            let mut all = Vec::new();
            sites(&v, &mut Vec::new(), &mut all);
            let site = pick.get(&all).clone();
            apply(&mut v, &site, m);
        }
        let text = if as_json {
            serde_json::to_string_pretty(&v).expect("json")
        } else {
            serde_saphyr::to_string(&v).expect("yaml")
        };
        check(&text);
    }

    #[test]
    fn mutated_source_text_never_panics(
        which in 0usize..FIXTURES.len(),
        cut in any::<proptest::sample::Index>(),
        len in 0usize..40,
        insert in "[ -~\n\t]{0,12}",
    ) {
        let text = FIXTURES[which];
        let start = cut.index(text.len());
        let end = (start + len).min(text.len());
        if text.is_char_boundary(start) && text.is_char_boundary(end) {
            check(&format!("{}{}{}", &text[..start], insert, &text[end..]));
        }
    }

    #[test]
    fn random_text_never_panics(text in "[a-z0-9:{}\\[\\],\\-\\n \"'&*!|>#$%@`.?]{0,200}") {
        check(&text);
    }

    #[test]
    fn random_yaml_shapes_never_panic(v in random_value()) {
        let mut root = json!({"version": 2, "targets": []});
        if let Value::Object(m) = &v {
            for (k, x) in m {
                root[k] = x.clone();
            }
        }
        check(&serde_saphyr::to_string(&root).expect("yaml"));
        check(&serde_saphyr::to_string(&v).expect("yaml"));
    }
}

/// Random values with manifest-like keys.
fn random_value() -> impl Strategy<Value = Value> {
    let keys = proptest::sample::select(vec![
        "version",
        "name",
        "vars",
        "model",
        "targets",
        "groups",
        "defaults",
        "entrypoints",
        "type",
        "layers",
        "repeat",
        "d_model",
        "n_heads",
        "embedder",
        "topology",
        "runs",
        "data",
        "steps",
        "seed",
        "id",
    ]);
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        (-1e6f64..1e6).prop_map(Value::from),
        "[a-zA-Z${}_:]{0,10}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 64, 6, move |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::from),
            proptest::collection::btree_map(keys.clone(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_string(), v)).collect())),
        ]
    })
}

#[test]
fn deep_nesting_does_not_overflow_the_stack() {
    for depth in [64usize, 512, 10_000] {
        check(&format!(
            "version: 2\ntargets: {}{}\n",
            "[".repeat(depth),
            "]".repeat(depth)
        ));
        let mut node = String::from("{type: RMSNormLayer, d_model: 8}");
        for _ in 0..depth.min(2000) {
            node = format!("{{type: StackedTopology, layers: [{node}]}}");
        }
        check(&format!(
            "version: 2\nmodel: {{embedder: {{type: token, vocab_size: 256, d_model: 8}}, topology: {node}}}\n\
             targets: [{{name: a, data: {{path: d, block_size: 1}}, runs: [{{id: r, steps: 1}}]}}]\n"
        ));
    }
}
