//! Inheriting `defaults.runtime` / `defaults.logging` into every run's `train:` block.
//!
//! `train:` is a [`TrainSpec`](crate::train::TrainSpec) whose fields all have built-in defaults,
//! so once it is typed we can no longer tell "not written" from "written as the default". The
//! inheritance therefore happens on the untyped value, before typing: a key the run does not
//! write is copied from `defaults` (already typed and checked, so the copy cannot fail to parse).
//! Optional fields (`seed`, `data.tokenizer`, `data.val_frac`) are filled later, by lowering.

use serde_json::{Map, Value};

use super::types::Defaults;

/// Copy the defaults into each `targets[*].runs[*].train` (or `groups[…]`) that lacks them.
pub fn inherit_train_defaults(root: &mut Value, defaults: &Defaults) {
    let rt = &defaults.runtime;
    let lg = &defaults.logging;
    let inherited: Vec<(&str, Value)> = [
        ("device", rt.device.clone().map(Value::from)),
        ("dtype", rt.dtype.clone().map(Value::from)),
        ("save_every", rt.save_every.map(Value::from)),
        ("log_every", lg.log_every.map(Value::from)),
        ("eval_iters", lg.eval_iters.map(Value::from)),
        ("eval_every", lg.eval_every.map(Value::from)),
        (
            "instrument",
            lg.instrument
                .as_ref()
                .map(|kinds| Value::Array(kinds.iter().map(|k| Value::from(k.name())).collect())),
        ),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.map(|v| (k, v)))
    .collect();
    if inherited.is_empty() {
        return;
    }
    let Some(root) = root.as_object_mut() else { return };
    for key in ["targets", "groups"] {
        let Some(Value::Array(targets)) = root.get_mut(key) else {
            continue;
        };
        for target in targets {
            let Some(Value::Array(runs)) = target.get_mut("runs") else {
                continue;
            };
            for run in runs.iter_mut().filter_map(Value::as_object_mut) {
                let train = run.entry("train").or_insert_with(|| Value::Object(Map::new()));
                let Value::Object(train) = train else { continue };
                for (k, v) in &inherited {
                    train.entry(*k).or_insert_with(|| v.clone());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn runs_inherit_what_they_do_not_set() {
        let defaults: Defaults = serde_json::from_value(
            json!({"runtime": {"device": "cuda", "save_every": 50}, "logging": {"log_every": 5, "instrument": "tb+rich"}}),
        )
        .expect("valid defaults");
        let mut v = json!({"targets": [{"runs": [{"id": "a"}, {"id": "b", "train": {"device": "cpu"}}, {"train": 3}]}]});
        inherit_train_defaults(&mut v, &defaults);
        assert_eq!(
            v["targets"][0]["runs"][0]["train"],
            json!({"device": "cuda", "save_every": 50, "log_every": 5, "instrument": ["tensorboard", "console"]})
        );
        assert_eq!(
            v["targets"][0]["runs"][1]["train"],
            json!({"device": "cpu", "save_every": 50, "log_every": 5, "instrument": ["tensorboard", "console"]})
        );
        assert_eq!(
            v["targets"][0]["runs"][2]["train"],
            json!(3),
            "a bad train block is left for typing to report"
        );
    }
}
