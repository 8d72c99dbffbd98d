//! Deserialisation of [`NodeSpec`]: dispatch on `type:` (canonical names and aliases), then parse
//! the rest of the mapping strictly as that node's spec.
//!
//! Errors inside a node carry the node-relative path (`layers[1].n_heads`) before the message,
//! separated by [`PATH_SEP`], so that the manifest loader can join it to the outer path.

use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use super::{NODE_TYPES, NodeSpec};

/// Separates a node-relative path from the message in nested errors.
pub const PATH_SEP: char = '\u{1f}';

impl<'de> Deserialize<'de> for NodeSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut value = Value::deserialize(d)?;
        let Some(map) = value.as_object_mut() else {
            return Err(D::Error::custom("a node must be a mapping with a `type:` field"));
        };
        let Some(ty) = map.remove("type") else {
            return Err(D::Error::custom(format!("type{PATH_SEP}missing field `type`")));
        };
        let Some(ty) = ty.as_str().map(str::to_string) else {
            return Err(D::Error::custom(format!("type{PATH_SEP}`type` must be a string")));
        };
        let canonical = NODE_TYPES
            .iter()
            .find(|(name, aliases)| *name == ty || aliases.contains(&ty.as_str()))
            .map(|(name, _)| *name);
        let Some(canonical) = canonical else {
            let names: Vec<&str> = NODE_TYPES.iter().map(|(n, _)| *n).collect();
            return Err(D::Error::custom(format!(
                "type{PATH_SEP}unknown node type `{ty}`; expected one of: {}",
                names.join(", ")
            )));
        };
        fn parse<T: DeserializeOwned, E: serde::de::Error>(v: Value) -> Result<T, E> {
            serde_path_to_error::deserialize(v).map_err(|e| {
                let path = e.path().to_string();
                let inner = e.into_inner().to_string();
                if path == "." || path.is_empty() {
                    E::custom(inner)
                } else {
                    E::custom(format!("{path}{PATH_SEP}{inner}"))
                }
            })
        }
        Ok(match canonical {
            "AttentionLayer" => NodeSpec::Attention(parse(value)?),
            "RMSNormLayer" => NodeSpec::RmsNorm(parse(value)?),
            "LayerNormLayer" => NodeSpec::LayerNorm(parse(value)?),
            "SwiGLULayer" => NodeSpec::SwiGlu(parse(value)?),
            "LinearLayer" => NodeSpec::Linear(parse(value)?),
            "DropoutLayer" => NodeSpec::Dropout(parse(value)?),
            "StackedTopology" => NodeSpec::Stacked(parse(value)?),
            "SequentialTopology" => NodeSpec::Sequential(parse(value)?),
            "NestedTopology" => NodeSpec::Nested(parse(value)?),
            "ResidualTopology" => NodeSpec::Residual(parse(value)?),
            "ParallelTopology" => NodeSpec::Parallel(parse(value)?),
            "BranchingTopology" => NodeSpec::Branching(parse(value)?),
            "CyclicTopology" => NodeSpec::Cyclic(parse(value)?),
            "RecurrentTopology" => NodeSpec::Recurrent(parse(value)?),
            other => unreachable!("NODE_TYPES lists {other} but spec_de does not parse it"),
        })
    }
}
