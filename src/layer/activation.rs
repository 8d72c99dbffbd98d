//! An element-wise nonlinearity (`type: ActivationLayer`, aliases `activation`, `relu`, `gelu`,
//! `silu`, `tanh`), the piece between an MLP's linear layers. No weights; any width passes
//! through. Shapes: (b, t, d) -> (b, t, d).

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;
use serde::{Deserialize, Serialize};

use super::spec::{Layer, LayerSpec, LayerType, SpecProblem, Widths};
use crate::model::context::ForwardCtx;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    /// max(x, 0).
    #[default]
    Relu,
    /// The tanh approximation of x·Φ(x) (GPT-2's).
    Gelu,
    /// x·σ(x).
    Silu,
    Tanh,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ActivationSpec {
    /// `relu`, `gelu`, `silu` or `tanh`. Default: relu (or the alias's: `type: gelu`).
    #[serde(default)]
    pub activation: Activation,
}

impl LayerType for ActivationSpec {
    const NAME: &'static str = "ActivationLayer";
    const ALIASES: &'static [&'static str] = &["activation", "relu", "gelu", "silu", "tanh"];

    fn apply_alias(
        alias: &str,
        fields: &mut serde_json::Map<String, serde_json::Value>,
    ) -> std::result::Result<(), SpecProblem> {
        if matches!(alias, "relu" | "gelu" | "silu" | "tanh") {
            if fields.contains_key("activation") {
                return Err(SpecProblem::new(
                    "activation",
                    format!("`type: {alias}` already names the activation"),
                ));
            }
            fields.insert("activation".into(), alias.into());
        }
        Ok(())
    }
}

impl LayerSpec for ActivationSpec {
    fn problems(&self) -> Vec<SpecProblem> {
        Vec::new()
    }

    /// Transparent: any width passes through.
    fn widths(&self) -> Option<Widths> {
        None
    }

    fn params(&self) -> u64 {
        0
    }

    fn describe(&self) -> String {
        format!(
            "activation={}",
            serde_json::to_value(self.activation)
                .ok()
                .and_then(|v| v.as_str().map(String::from))
                .unwrap_or_default()
        )
    }

    fn build(&self, _vb: VarBuilder, _next_slot: &mut usize) -> Result<Box<dyn Layer>> {
        Ok(Box::new(ActivationFn(self.activation)))
    }
}

/// The built layer.
pub struct ActivationFn(pub Activation);

impl Layer for ActivationFn {
    fn forward(&self, xs: &Tensor, _ctx: &mut ForwardCtx) -> Result<Tensor> {
        match self.0 {
            Activation::Relu => xs.relu(),
            Activation::Gelu => xs.gelu(),
            Activation::Silu => candle_nn::ops::silu(xs),
            Activation::Tanh => xs.tanh(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn relu_zeroes_negatives_and_the_alias_sets_the_kind() {
        let xs = Tensor::new(&[[[-1f32, 0.5, 2.0]]], &Device::Cpu).expect("xs");
        let ys = ActivationFn(Activation::Relu)
            .forward(&xs, &mut ForwardCtx::eval())
            .and_then(|t| t.flatten_all())
            .and_then(|t| t.to_vec1::<f32>())
            .expect("forward");
        assert_eq!(ys, vec![0.0, 0.5, 2.0]);
        let mut map = serde_json::Map::new();
        ActivationSpec::apply_alias("gelu", &mut map).expect("alias");
        assert_eq!(map["activation"], "gelu");
    }
}
