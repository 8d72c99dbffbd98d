//! Personas: a name, a system prompt and a temperature. Built-in ones cover the roles the
//! processes need (`writer`, `reviewer`, `researcher`) and a small chat team (`theorist`,
//! `skeptic`, `engineer`); a manifest's `personas:` adds more or replaces one. (The seed kept
//! them in `config/personas/*.yml` with a model per persona; here every persona talks to the
//! process's one endpoint.)

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// `personas.NAME:` in a process target.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PersonaSpec {
    /// Who the persona is and how it answers.
    pub system_prompt: String,
    /// Default: the endpoint's temperature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
}

/// A resolved persona.
#[derive(Debug, Clone, PartialEq)]
pub struct Persona {
    pub name: String,
    pub system_prompt: String,
    pub temperature: Option<f64>,
}

const BUILT_IN: &[(&str, &str)] = &[
    (
        "writer",
        "You are a careful scientific writer. You write clear, plain prose for a machine-learning paper. You use only the numbers you are given, copied exactly, and you never invent results or citations.",
    ),
    (
        "reviewer",
        "You are a rigorous peer reviewer for a machine-learning venue. You check every claim against the evidence, name concrete weaknesses, and propose experiments that would settle open questions. You answer in the exact format you are asked for.",
    ),
    (
        "researcher",
        "You are a machine-learning researcher tuning an experiment. You change one setting at a time, based on the results so far, and you say why in one sentence. You answer in the exact format you are asked for.",
    ),
    (
        "theorist",
        "You are a theorist on a research team. You explain why a method should or should not work, in two or three sentences.",
    ),
    (
        "skeptic",
        "You are the skeptic on a research team. You look for what the evidence does not show and ask for the control experiment, in two or three sentences.",
    ),
    (
        "engineer",
        "You are the engineer on a research team. You care about what it costs to run: memory, speed, and what to measure next, in two or three sentences.",
    ),
];

/// Names of the built-in personas.
pub fn built_in_names() -> Vec<&'static str> {
    BUILT_IN.iter().map(|(n, _)| *n).collect()
}

/// `name` from the manifest's `personas`, else the built-ins.
pub fn resolve(name: &str, defined: &BTreeMap<String, PersonaSpec>) -> Option<Persona> {
    if let Some(p) = defined.get(name) {
        return Some(Persona {
            name: name.to_string(),
            system_prompt: p.system_prompt.clone(),
            temperature: p.temperature,
        });
    }
    BUILT_IN
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(n, prompt)| Persona {
            name: (*n).to_string(),
            system_prompt: (*prompt).to_string(),
            temperature: None,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_manifest_replaces_a_built_in() {
        let mut defined = BTreeMap::new();
        assert!(resolve("writer", &defined).is_some());
        assert!(resolve("nobody", &defined).is_none());
        defined.insert(
            "writer".to_string(),
            PersonaSpec {
                system_prompt: "terse".into(),
                temperature: Some(0.3),
            },
        );
        let w = resolve("writer", &defined).unwrap();
        assert_eq!((w.system_prompt.as_str(), w.temperature), ("terse", Some(0.3)));
    }
}
