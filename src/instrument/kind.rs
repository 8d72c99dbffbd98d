//! Instrument names in a manifest: `defaults.logging.instrument` (or a run's `train.instrument`).
//!
//! Two forms are accepted: a list (`[jsonl, tensorboard, live]`) and the original's string, split
//! on commas, `+` and white space (`"rich tb"`, `"tb+live"`). Names and aliases:
//!
//! | name          | aliases              | what                                         |
//! |---------------|----------------------|----------------------------------------------|
//! | `jsonl`       |                      | `<run>/events.jsonl` (always on)             |
//! | `tensorboard` | `tb`                 | `<run>/tb/<run_id>/events.out.tfevents.*`    |
//! | `console`     | `rich`               | log lines for events (always on)             |
//! | `live`        | `plot`, `liveplot`   | a loss sparkline under the progress bar      |
//!
//! `wandb` (`w&b`) and `hdf5` (`h5`) are rejected with "not supported in caramba". The list is
//! stored deduplicated, in first-written order, under the canonical names.

use std::fmt;

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};

/// One sink of a run's scalars and events (see the module table).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum InstrumentKind {
    /// The seed's JSONL event envelope in `<run>/events.jsonl`.
    Jsonl,
    /// TensorBoard event files in `<run>/tb/<run_id>/`.
    Tensorboard,
    /// Events as log lines on stderr.
    Console,
    /// A live loss plot under the progress bar (interactive terminals only).
    Live,
}

/// Canonical names and their aliases, in the order error messages list them.
const NAMES: &[(InstrumentKind, &str, &[&str])] = &[
    (InstrumentKind::Jsonl, "jsonl", &[]),
    (InstrumentKind::Tensorboard, "tensorboard", &["tb"]),
    (InstrumentKind::Console, "console", &["rich"]),
    (InstrumentKind::Live, "live", &["plot", "liveplot"]),
];

/// Every accepted spelling, for "expected one of" messages.
const SPELLINGS: &[&str] = &[
    "jsonl",
    "tensorboard",
    "tb",
    "console",
    "rich",
    "live",
    "plot",
    "liveplot",
];

/// Sinks of the original that caramba rejects, and the name used in the message.
const UNSUPPORTED: &[(&str, &str)] = &[
    ("wandb", "wandb"),
    ("w&b", "wandb"),
    ("hdf5", "hdf5"),
    ("h5", "hdf5"),
];

/// Why a name is not an instrument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameError {
    /// Not a name caramba knows.
    Unknown(String),
    /// A sink of the original that caramba does not have (`wandb`, `hdf5`).
    Unsupported(&'static str),
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unknown(name) => write!(
                f,
                "unknown instrument `{name}`; expected one of: {}",
                SPELLINGS.join(", ")
            ),
            Self::Unsupported(name) => write!(
                f,
                "`{name}` is not supported in caramba; use tensorboard or jsonl (`instrument: [tensorboard]`)"
            ),
        }
    }
}

impl InstrumentKind {
    /// Every instrument, in table order.
    pub const ALL: [InstrumentKind; 4] = [Self::Jsonl, Self::Tensorboard, Self::Console, Self::Live];

    /// The canonical name (`tensorboard`, not `tb`).
    pub fn name(self) -> &'static str {
        NAMES
            .iter()
            .find(|(k, ..)| *k == self)
            .map_or("?", |(_, name, _)| *name)
    }

    /// The instrument a name or alias denotes (case-insensitive).
    pub fn from_name(name: &str) -> Result<Self, NameError> {
        let lower = name.trim().to_ascii_lowercase();
        if let Some((kind, ..)) = NAMES
            .iter()
            .find(|(_, n, aliases)| *n == lower || aliases.contains(&lower.as_str()))
        {
            return Ok(*kind);
        }
        match UNSUPPORTED.iter().find(|(n, _)| *n == lower) {
            Some((_, canonical)) => Err(NameError::Unsupported(canonical)),
            None => Err(NameError::Unknown(name.to_string())),
        }
    }

    /// The instruments of the original's string form: names split on `,`, `+` and white space.
    pub fn parse_list(text: &str) -> Result<Vec<Self>, NameError> {
        let mut out = Vec::new();
        for token in text
            .split([',', '+', ' ', '\t', '\n', '\r'])
            .filter(|t| !t.is_empty())
        {
            push_unique(&mut out, Self::from_name(token)?);
        }
        Ok(out)
    }
}

impl fmt::Display for InstrumentKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

fn push_unique(out: &mut Vec<InstrumentKind>, kind: InstrumentKind) {
    if !out.contains(&kind) {
        out.push(kind);
    }
}

impl<'de> Deserialize<'de> for InstrumentKind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        InstrumentKind::from_name(&name).map_err(de::Error::custom)
    }
}

/// `deserialize_with` for a list field: a sequence of names, or the original's string form.
/// `null` is the empty list.
pub fn deserialize_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<InstrumentKind>, D::Error> {
    struct ListVisitor;
    impl<'de> Visitor<'de> for ListVisitor {
        type Value = Vec<InstrumentKind>;
        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
            f.write_str("a list of instrument names (`[tensorboard, live]`) or a string (`\"tb+live\"`)")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            InstrumentKind::parse_list(v).map_err(E::custom)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok(Vec::new())
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            // why: each element goes through `next_element`, so an error carries its index
            // (`instrument[2]`) and the manifest points at that element's line:column.
            let mut out = Vec::new();
            while let Some(kind) = seq.next_element::<InstrumentKind>()? {
                push_unique(&mut out, kind);
            }
            Ok(out)
        }
    }
    d.deserialize_any(ListVisitor)
}

/// `deserialize_with` for an optional list field (`defaults.logging.instrument`).
pub fn deserialize_optional_list<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<Vec<InstrumentKind>>, D::Error> {
    deserialize_list(d).map(Some)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[derive(Debug, Deserialize)]
    struct Holder {
        #[serde(deserialize_with = "deserialize_list")]
        instrument: Vec<InstrumentKind>,
    }

    fn kinds(v: serde_json::Value) -> Result<Vec<InstrumentKind>, String> {
        serde_json::from_value::<Holder>(json!({ "instrument": v }))
            .map(|h| h.instrument)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn list_and_string_forms_with_aliases() {
        use InstrumentKind::*;
        assert_eq!(
            kinds(json!(["jsonl", "tb", "rich", "plot"])),
            Ok(vec![Jsonl, Tensorboard, Console, Live])
        );
        assert_eq!(kinds(json!("rich")), Ok(vec![Console]));
        assert_eq!(
            kinds(json!("tb+live, rich  TensorBoard")),
            Ok(vec![Tensorboard, Live, Console])
        );
        assert_eq!(kinds(json!("")), Ok(vec![]));
        assert_eq!(kinds(json!(null)), Ok(vec![]));
        assert_eq!(kinds(json!(["liveplot", "live"])), Ok(vec![Live]), "deduplicated");
    }

    #[test]
    fn unknown_and_unsupported_names_say_what_to_write() {
        let err = kinds(json!(["tb", "tensorbored"])).expect_err("unknown");
        assert!(
            err.starts_with("unknown instrument `tensorbored`; expected one of: jsonl, tensorboard, tb"),
            "{err}"
        );
        let err = kinds(json!("rich wandb")).expect_err("wandb");
        assert!(
            err.starts_with("`wandb` is not supported in caramba; use tensorboard or jsonl"),
            "{err}"
        );
        let err = kinds(json!(["HDF5"])).expect_err("hdf5");
        assert!(err.starts_with("`hdf5` is not supported in caramba"), "{err}");
        assert!(kinds(json!(3)).is_err());
    }

    #[test]
    fn names_round_trip_through_serde() {
        for kind in InstrumentKind::ALL {
            let v = serde_json::to_value(kind).expect("serialize");
            assert_eq!(v, json!(kind.name()));
            assert_eq!(
                serde_json::from_value::<InstrumentKind>(v).expect("deserialize"),
                kind
            );
        }
    }
}
