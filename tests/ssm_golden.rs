//! SSMLayer equals HF transformers' `MambaMixer` (its torch path) on random weights: the fixture
//! `tests/golden/tiny_ssm.safetensors` comes from `scripts/make_golden_ssm.py` (d_model 16,
//! d_state 8, d_conv 4, expand 2, dt_rank 3, 2 rows × 11 tokens; HF Mamba's weight names). Both the
//! full forward (the fused selective scan) and a cached decode (a 4-token prefill, then one token
//! at a time through the recurrent state) must equal it.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use caramba::layer::ssm::DtRank;
use caramba::layer::{Ssm, SsmSpec};
use caramba::model::{ForwardCtx, KvCache};

const FIXTURE: &str = "tests/golden/tiny_ssm.safetensors";

/// Panics naming the worst element unless `got` equals `want` within `tol` · max(1, max |want|).
fn assert_close(what: &str, got: &Tensor, want: &Tensor, tol: f32) {
    let flat = |t: &Tensor| {
        t.flatten_all()
            .and_then(|t| t.to_vec1::<f32>())
            .expect("f32 tensor")
    };
    let (g, w) = (flat(got), flat(want));
    assert_eq!(g.len(), w.len(), "{what}: sizes");
    let scale = w.iter().fold(0f32, |m, v| m.max(v.abs())).max(1.0);
    let (i, d) = g
        .iter()
        .zip(&w)
        .map(|(a, b)| (a - b).abs())
        .enumerate()
        .fold((0, 0f32), |m, (i, d)| if d > m.1 { (i, d) } else { m });
    assert!(
        d <= tol * scale,
        "{what}: worst element {i} (row {}, token {}, feature {}): got {}, transformers {} (max |y| {scale})",
        i / (11 * 16),
        i / 16 % 11,
        i % 16,
        g[i],
        w[i]
    );
}

#[test]
fn ssm_layer_equals_transformers_mamba_mixer() -> candle_core::Result<()> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(FIXTURE);
    let tensors = candle_core::safetensors::load(&path, &Device::Cpu)?;
    let (xs, want) = (tensors["input"].clone(), tensors["output"].clone());
    let spec = SsmSpec {
        d_state: 8,
        d_conv: 4,
        expand: 2,
        dt_rank: DtRank::Fixed(3),
        ..SsmSpec::new(16)
    };
    let vb = VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu);
    let ssm = Ssm::build(&spec, vb, 0)?;

    let full = ssm.forward_ctx(&xs, &mut ForwardCtx::eval())?;
    assert_close("full forward", &full, &want, 1e-5);

    let mut cache = KvCache::new(1, DType::F32);
    let mut outs = vec![ssm.forward_ctx(&xs.narrow(1, 0, 4)?, &mut ForwardCtx::cached(&mut cache, 0))?];
    for i in 4..11 {
        outs.push(ssm.forward_ctx(&xs.narrow(1, i, 1)?, &mut ForwardCtx::cached(&mut cache, i))?);
    }
    assert_close("cached decode", &Tensor::cat(&outs, 1)?, &want, 1e-5);
    Ok(())
}
