//! The classifier wrapper (`system: mlp_classifier` / `vit`): a feature row through the topology
//! to class logits. The topology sees one position of `n_features` values (an MLP keeps it; a ViT's
//! patch embedder turns it into patches and its pool layer back into one).
//! Shapes: features (b, n_features) f32 -> logits (b, n_classes).

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;

use super::context::ForwardCtx;
use super::lm::ModelSpec;
use crate::topology::Node;

pub struct Classifier {
    topology: Node,
}

impl Classifier {
    /// Build from a lowered spec (no embedder). Weights: `topology.…`.
    pub fn build(spec: &ModelSpec, vb: VarBuilder) -> Result<Self> {
        let mut n_slots = 0;
        Ok(Self {
            topology: Node::build(&spec.topology, vb.pp("topology"), &mut n_slots)?,
        })
    }

    /// Features (b, f) → logits (b, n_classes).
    pub fn forward(&self, xs: &Tensor, ctx: &mut ForwardCtx) -> Result<Tensor> {
        let (b, f) = xs.dims2()?;
        let ys = self.topology.forward(&xs.reshape((b, 1, f))?, ctx)?;
        let (_, t, k) = ys.dims3()?;
        if t != 1 {
            candle_core::bail!(
                "the classifier's topology ends with {t} positions; it must reduce them to one \
                 (end a ViT with a PoolLayer before the class head)"
            );
        }
        ys.reshape((b, k))
    }
}
