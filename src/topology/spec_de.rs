//! Deserialisation of [`NodeSpec`]: dispatch on `type:` (canonical names and aliases), then parse
//! the rest of the mapping strictly as that node's spec (a layer's alias may first fill in what it
//! implies, see [`crate::layer::LayerType::apply_alias`]).
//!
//! Errors inside a node carry the node-relative path (`layers[1].n_heads`) before the message,
//! separated by [`PATH_SEP`], so that the manifest loader can join it to the outer path.

use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use super::{NODE_TYPES, NodeSpec};

/// Separates a node-relative path from the message in nested errors.
pub const PATH_SEP: char = '\u{1f}';

/// Parse `v` strictly as `T`, prefixing errors with their path inside `v`.
pub(crate) fn parse<T: DeserializeOwned, E: serde::de::Error>(v: Value) -> Result<T, E> {
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
        let value = match NodeSpec::parse_layer(canonical, &ty, value) {
            Ok(layer) => return layer,
            Err(topology) => topology,
        };
        match canonical {
            "StackedTopology" => Ok(NodeSpec::Stacked(parse(value)?)),
            "SequentialTopology" => Ok(NodeSpec::Sequential(parse(value)?)),
            "NestedTopology" => Ok(NodeSpec::Nested(parse(value)?)),
            "ResidualTopology" => Ok(NodeSpec::Residual(parse(value)?)),
            "ParallelTopology" => Ok(NodeSpec::Parallel(parse(value)?)),
            "BranchingTopology" => Ok(NodeSpec::Branching(parse(value)?)),
            "CyclicTopology" => Ok(NodeSpec::Cyclic(parse(value)?)),
            "RecurrentTopology" => Ok(NodeSpec::Recurrent(parse(value)?)),
            other => Err(D::Error::custom(format!(
                "type{PATH_SEP}NODE_TYPES lists `{other}` but nothing parses it"
            ))),
        }
    }
}
