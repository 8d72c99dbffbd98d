//! Llama → DBA surgery: exact at full width (data-free and activation-aware), GQA-aware shapes,
//! inherited RoPE frequencies, and clear errors for layers that do not fit.

use candle_core::{DType, Device, Result, Tensor};
use caramba::layer::{Attention, AttentionSpec, DecoupledAttention};
use caramba::model::{ForwardCtx, SeededVarMap};
use caramba::ops::rope::inv_freq;
use caramba::upcycle::{DbaInit, TeacherAttention, surgery};

fn fresh_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
}

const D: usize = 32;
const H: usize = 4;
const G: usize = 2;
const DH: usize = 8;

fn teacher() -> Result<(Attention, TeacherAttention)> {
    let spec: AttentionSpec = serde_json::from_value(serde_json::json!({
        "d_model": D, "n_heads": H, "n_kv_heads": G, "mode": "gqa", "rope_base": 500.0
    }))
    .unwrap();
    let vars = SeededVarMap::new(fresh_seed());
    let layer = Attention::build(&spec, 0, vars.var_builder(DType::F32, &Device::Cpu))?;
    let w = |n: &str| {
        vars.named_vars()
            .into_iter()
            .find(|(k, _)| k == n)
            .unwrap()
            .1
            .as_tensor()
            .clone()
    };
    let t = TeacherAttention {
        wq: w("q_proj.weight"),
        wk: w("k_proj.weight"),
        wv: w("v_proj.weight"),
        wo: w("o_proj.weight"),
        n_heads: H,
        n_kv_heads: G,
        head_dim: DH,
        inv_freq: inv_freq(DH, 500.0, None),
    };
    Ok((layer, t))
}

fn student(sem: usize, geo: usize, v: usize) -> AttentionSpec {
    serde_json::from_value(serde_json::json!({
        "d_model": D, "n_heads": H, "n_kv_heads": G, "mode": "decoupled",
        "sem_dim": sem * H, "geo_dim": geo * H, "v_dim": v * H, "rope_base": 500.0,
        "decoupled_gate": true
    }))
    .unwrap()
}

fn build_student(
    spec: &AttentionSpec,
    init: DbaInit,
    t: &TeacherAttention,
    calib: Option<&Tensor>,
) -> Result<DecoupledAttention> {
    let weights = surgery(t, spec, init, calib).expect("surgery fits");
    let vars = SeededVarMap::new(fresh_seed());
    for (name, w) in &weights {
        vars.set(name, w)?;
    }
    DecoupledAttention::build(spec, 0, vars.var_builder(DType::F32, &Device::Cpu))
}

fn max_rel_diff(a: &Tensor, b: &Tensor) -> f32 {
    let num = (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    let den = b.abs().unwrap().max_all().unwrap().to_scalar::<f32>().unwrap();
    num / den
}

#[test]
fn full_width_student_reproduces_the_teacher_exactly() -> Result<()> {
    let (teacher_layer, t) = teacher()?;
    let xs = Tensor::randn(0f32, 1.0, (2, 10, D), &Device::Cpu)?;
    let want = teacher_layer.forward(&xs, &mut ForwardCtx::eval())?;
    let calib = Tensor::randn(0f32, 1.0, (64, D), &Device::Cpu)?;
    for calibration in [None, Some(&calib)] {
        // All RoPE pairs in the geometric path, full-width values; the semantic path has nothing left.
        let s = build_student(&student(2, DH, DH), DbaInit::Aligned, &t, calibration)?;
        let got = s.forward(&xs, &mut ForwardCtx::eval())?;
        let diff = max_rel_diff(&got, &want);
        assert!(
            diff < 1e-4,
            "activation-aware={}: relative difference {diff}",
            calibration.is_some()
        );
    }
    Ok(())
}

#[test]
fn bottlenecked_student_keeps_the_teachers_frequencies_and_gqa_shapes() -> Result<()> {
    let (teacher_layer, t) = teacher()?;
    let spec = student(2, 4, 4);
    let weights = surgery(&t, &spec, DbaInit::Aligned, None).expect("fits");
    assert_eq!(weights["k_sem.weight"].dims(), &[G * 2, D]);
    assert_eq!(weights["k_geo.weight"].dims(), &[G * 4, D]);
    assert_eq!(weights["v_proj.weight"].dims(), &[G * 4, D]);
    assert_eq!(weights["o_proj.weight"].dims(), &[D, H * 4]);
    let teacher_freqs = inv_freq(DH, 500.0, None);
    let kept: Vec<f32> = weights["geo_inv_freq"].flatten_all()?.to_vec1()?;
    assert_eq!(kept.len(), G * 2);
    for f in kept {
        assert!(
            teacher_freqs.iter().any(|&t| (t as f32 - f).abs() < 1e-7),
            "{f} is not a teacher frequency"
        );
    }
    // The head-aligned init is a better start than random Q/K (same V/O treatment aside).
    let xs = Tensor::randn(0f32, 1.0, (2, 16, D), &Device::Cpu)?;
    let want = teacher_layer.forward(&xs, &mut ForwardCtx::eval())?;
    let l1 = |init: DbaInit| -> Result<f32> {
        let s = build_student(&spec, init, &t, None)?;
        (s.forward(&xs, &mut ForwardCtx::eval())? - &want)?
            .abs()?
            .mean_all()?
            .to_scalar::<f32>()
    };
    let (aligned, random) = (l1(DbaInit::Aligned)?, l1(DbaInit::Random)?);
    assert!(
        aligned < random,
        "aligned L1 {aligned} should beat random Q/K + truncated V/O {random}"
    );
    Ok(())
}

#[test]
fn layers_that_do_not_fit_are_clear_errors() -> Result<()> {
    let (_, t) = teacher()?;
    let wrong_heads: AttentionSpec = serde_json::from_value(serde_json::json!({
        "d_model": D, "n_heads": H, "n_kv_heads": 4, "mode": "decoupled", "sem_dim": 8, "geo_dim": 8
    }))
    .unwrap();
    let err = surgery(&t, &wrong_heads, DbaInit::Aligned, None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("head-aligned"), "{err}");
    let too_wide = student(2, 2 * DH, DH);
    let err = surgery(&t, &too_wide, DbaInit::Aligned, None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("geo head dim"), "{err}");
    Ok(())
}
