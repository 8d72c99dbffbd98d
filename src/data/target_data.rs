//! A target's `data:`, by kind: token files for language models (the form without `type:`, as
//! every LM manifest writes it) or supervised arrays for classifiers (`type: npy_supervised`).
//!
//! ```yaml
//! data: {path: data/corpus.npy, block_size: 128}                       # tokens
//! data: {type: npy_supervised, features: x.npy, labels: y.npy, n_classes: 10, n_features: 64}
//! ```
//! Adding a kind (graph, vector samples) is one variant here, its spec file, and the systems that
//! accept it ([`crate::manifest::components`]).

use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

use super::spec::DataSpec;
use super::supervised::SupervisedSpec;
use crate::topology::PATH_SEP;

/// Every `data:` kind a target can name.
#[derive(Debug, Clone, PartialEq)]
pub enum TargetData {
    /// `type: tokens` (or no `type:`): a 1-D `.npy` token file.
    Tokens(DataSpec),
    /// `type: npy_supervised`: features and class labels.
    Supervised(SupervisedSpec),
}

/// `(canonical type, aliases)` of each kind; the original's `dataset.*` refs are accepted.
pub const DATA_TYPES: &[(&str, &[&str])] = &[
    ("tokens", &["dataset.tokens"]),
    ("npy_supervised", &["dataset.npy_supervised", "supervised"]),
];

impl TargetData {
    /// The canonical `type:` of this kind.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::Tokens(_) => "tokens",
            Self::Supervised(_) => "npy_supervised",
        }
    }

    /// The token data of a language-model target.
    pub fn tokens(&self) -> Option<&DataSpec> {
        match self {
            Self::Tokens(d) => Some(d),
            Self::Supervised(_) => None,
        }
    }

    pub fn tokens_mut(&mut self) -> Option<&mut DataSpec> {
        match self {
            Self::Tokens(d) => Some(d),
            Self::Supervised(_) => None,
        }
    }

    pub fn supervised(&self) -> Option<&SupervisedSpec> {
        match self {
            Self::Supervised(s) => Some(s),
            Self::Tokens(_) => None,
        }
    }

    /// Positions a model sees per example: the token block, or 1 for a feature row.
    pub fn block_size(&self) -> usize {
        match self {
            Self::Tokens(d) => d.block_size,
            Self::Supervised(_) => 1,
        }
    }
}

impl From<DataSpec> for TargetData {
    fn from(d: DataSpec) -> Self {
        Self::Tokens(d)
    }
}

impl<'de> Deserialize<'de> for TargetData {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut value = Value::deserialize(d)?;
        let ty = match value.as_object_mut() {
            Some(map) => match map.remove("type") {
                None => "tokens".to_string(),
                Some(Value::String(s)) => s,
                Some(_) => return Err(D::Error::custom(format!("type{PATH_SEP}`type` must be a string"))),
            },
            None => return Err(D::Error::custom("`data` must be a mapping")),
        };
        let canonical = DATA_TYPES
            .iter()
            .find(|(name, aliases)| *name == ty || aliases.contains(&ty.as_str()))
            .map(|(name, _)| *name);
        match canonical {
            Some("tokens") => Ok(Self::Tokens(crate::topology::parse_strict(value)?)),
            Some("npy_supervised") => Ok(Self::Supervised(crate::topology::parse_strict(value)?)),
            _ => Err(D::Error::custom(format!(
                "type{PATH_SEP}unknown data type `{ty}`; expected one of: {}",
                DATA_TYPES.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
            ))),
        }
    }
}

impl Serialize for TargetData {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        /// `{type: NAME, ...fields}`.
        #[derive(Serialize)]
        struct Tagged<'a, T: Serialize> {
            #[serde(rename = "type")]
            ty: &'static str,
            #[serde(flatten)]
            body: &'a T,
        }
        match self {
            // why: token data serializes as it always has (no `type:`), so recorded plans and
            // fingerprints of language-model runs do not change.
            Self::Tokens(d) => d.serialize(s),
            Self::Supervised(body) => Tagged {
                ty: self.type_name(),
                body,
            }
            .serialize(s),
        }
    }
}

/// Make sure the supervised files exist, fetching a known source when they do not; returns the
/// rows written (0 when both files were there).
pub fn ensure_supervised(spec: &SupervisedSpec) -> Result<usize, super::DataError> {
    use super::supervised::SourceKind;
    let (features, labels) = (
        std::path::Path::new(&spec.features),
        std::path::Path::new(&spec.labels),
    );
    if features.exists() && labels.exists() {
        return Ok(0);
    }
    match spec.prepare.map(|p| p.source) {
        Some(SourceKind::SklearnDigits) => super::digits::write_npy(features, labels),
        None => Err(super::DataError::Missing {
            path: if features.exists() { labels } else { features }.to_path_buf(),
        }),
    }
}
