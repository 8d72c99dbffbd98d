//! MoELayer equals HF transformers' `MixtralSparseMoeBlock` on random weights: the fixture
//! `tests/golden/tiny_moe.safetensors` comes from `scripts/make_golden_moe.py` (d_model 16, d_ff 24,
//! 4 experts, top-2, 5 tokens; weights under HF Mixtral's checkpoint names).

use std::path::Path;

use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use caramba::layer::{Moe, MoeSpec};

const FIXTURE: &str = "tests/golden/tiny_moe.safetensors";

#[test]
fn moe_layer_equals_transformers_mixtral_sparse_moe_block() -> candle_core::Result<()> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(FIXTURE);
    let tensors = candle_core::safetensors::load(&path, &Device::Cpu)?;
    let (xs, want) = (tensors["input"].clone(), tensors["output"].clone());
    let chosen: Vec<Vec<i64>> = tensors["chosen"].to_vec2()?;
    let hf_aux = tensors["hf_load_balancing_loss"].to_vec1::<f32>()?[0];
    let spec = MoeSpec {
        d_model: 16,
        d_ff: 24,
        num_experts: 4,
        top_k: 2,
        aux_loss_weight: 0.01,
    };
    let vb = VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu);
    let moe = Moe::build(&spec, vb)?;
    let (got, routing) = moe.forward_routed(&xs)?;

    let chosen: Vec<Vec<usize>> = chosen
        .iter()
        .map(|c| c.iter().map(|&i| i as usize).collect())
        .collect();
    assert_eq!(routing.chosen, chosen, "the same experts, in the same order");

    // The worst element, relative to the largest |output|.
    let (got, want) = (
        got.flatten_all()?.to_vec1::<f32>()?,
        want.flatten_all()?.to_vec1::<f32>()?,
    );
    let scale = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    let (i, d) = got
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .enumerate()
        .fold((0, 0f32), |w, (i, d)| if d > w.1 { (i, d) } else { w });
    assert!(
        d <= 1e-5 * scale.max(1.0),
        "worst element {i} (token {}, feature {}): got {}, transformers {}",
        i / 16,
        i % 16,
        got[i],
        want[i]
    );

    // HF's load-balancing loss counts each of the k choices as a whole token: top_k × ours.
    let ours = routing.aux.to_scalar::<f32>()?;
    assert!(
        (ours * 2.0 - hf_aux).abs() < 1e-5,
        "aux {ours} · top_k vs transformers {hf_aux}"
    );
    Ok(())
}
