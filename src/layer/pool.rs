//! Sequence pooling (`type: PoolLayer`, alias `pool`): a ViT's positions → one vector per image,
//! either the class token (position 0) or the mean over positions. Shapes: (b, t, d) -> (b, 1, d).

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use super::spec::{Layer, LayerSpec, LayerType, SpecProblem, Widths, check_dim};
use crate::model::context::ForwardCtx;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PoolMode {
    /// Position 0 (the patch embedder's class token).
    #[default]
    Cls,
    /// The mean over every position.
    Mean,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PoolSpec {
    pub d_model: usize,
    /// `cls` or `mean`. Default: cls.
    #[serde(default)]
    pub mode: PoolMode,
}

impl LayerType for PoolSpec {
    const NAME: &'static str = "PoolLayer";
    const ALIASES: &'static [&'static str] = &["pool"];
}

impl LayerSpec for PoolSpec {
    fn problems(&self) -> Vec<SpecProblem> {
        let mut out = Vec::new();
        check_dim(&mut out, "d_model", self.d_model);
        out
    }

    fn widths(&self) -> Option<Widths> {
        Some(Widths::preserving("d_model", self.d_model))
    }

    fn params(&self) -> u64 {
        0
    }

    fn describe(&self) -> String {
        format!(
            "d_model={} mode={}",
            self.d_model,
            match self.mode {
                PoolMode::Cls => "cls",
                PoolMode::Mean => "mean",
            }
        )
    }

    fn build(&self, _vb: VarBuilder, _next_slot: &mut usize) -> Result<Box<dyn Layer>> {
        Ok(Box::new(Pool(self.mode)))
    }
}

/// The built layer.
pub struct Pool(pub PoolMode);

impl Layer for Pool {
    fn forward(&self, xs: &Tensor, _ctx: &mut ForwardCtx) -> Result<Tensor> {
        match self.0 {
            PoolMode::Cls => xs.narrow(1, 0, 1),
            PoolMode::Mean => xs.mean_keepdim(1),
        }
    }
}
