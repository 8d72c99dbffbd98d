//! Finite-difference gradient checks (f64) for every layer in `src/layer/`: the loss
//! L = Σ layer(x) ⊙ r (r fixed random) is differentiated by candle's backward and by central
//! differences on sampled coordinates of the input and of every parameter (all randomised).
//!
//! Linear and SwiGLU compute in f64 end to end and get a tight tolerance; the norms and the
//! attention softmax compute internally in f32 (by design, for half-precision inputs), which
//! bounds the finite-difference accuracy (observed ~2e-5 relative; tolerance 2e-4).

use candle_core::{DType, Device, Result, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use caramba::layer::{
    Attention, AttentionMode, AttentionSpec, LayerNorm, LayerNormSpec, LinearLayer, LinearSpec, RmsNorm,
    RmsNormSpec, SwiGlu, SwiGluSpec,
};
use caramba::model::ForwardCtx;
use rand::Rng;

const SAMPLES_PER_VAR: usize = 12;

/// How precisely a layer computes in f64: end to end, or through internal f32 steps.
#[derive(Clone, Copy)]
enum Precision {
    F64,
    F32Inside,
}

impl Precision {
    /// (finite-difference step, tolerance): f32 rounding of the output (~1e-7 relative) divided by
    /// the step must stay well under the tolerance, and the O(h²) truncation too.
    fn step_and_tolerance(self) -> (f64, f64) {
        match self {
            Self::F64 => (1e-5, 1e-8),
            Self::F32Inside => (1e-2, 2e-4),
        }
    }
}

fn random_tensor(shape: &[usize]) -> Tensor {
    let mut rng = rand::rng();
    let n: usize = shape.iter().product();
    let v: Vec<f64> = (0..n).map(|_| rng.random_range(-1.0..1.0)).collect();
    Tensor::from_vec(v, shape, &Device::Cpu).expect("tensor")
}

/// Randomise every parameter of `vm` (norm gains ~ 1 ± 0.5, the rest uniform in [-0.5, 0.5)).
fn randomise(vm: &VarMap) {
    let mut rng = rand::rng();
    for (name, var) in vm.data().lock().expect("lock").iter() {
        let n = var.elem_count();
        let gain = name.contains("norm") && name.ends_with("weight");
        let v: Vec<f64> = (0..n)
            .map(|_| rng.random_range(-0.5..0.5) + if gain { 1.0 } else { 0.0 })
            .collect();
        var.set(&Tensor::from_vec(v, var.shape(), &Device::Cpu).expect("tensor"))
            .expect("set");
    }
}

fn values(var: &Var) -> Vec<f64> {
    var.as_tensor()
        .flatten_all()
        .and_then(|t| t.to_vec1::<f64>())
        .expect("values")
}

/// Compare backward with central differences for `x` and every parameter of `vm`.
fn check(what: &str, vm: &VarMap, x: &Var, p: Precision, f: impl Fn(&Tensor) -> Result<Tensor>) {
    let (h, tol) = p.step_and_tolerance();
    let y = f(x.as_tensor()).expect("forward");
    let r = random_tensor(y.dims());
    let loss = |x: &Tensor| -> f64 {
        f(x).and_then(|y| (y * &r)?.sum_all()?.to_scalar::<f64>())
            .expect("loss")
    };
    let grads = (y * &r)
        .and_then(|l| l.sum_all())
        .and_then(|l| l.backward())
        .expect("backward");
    let mut vars: Vec<(String, Var)> = vm
        .data()
        .lock()
        .expect("lock")
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    vars.push(("input".into(), x.clone()));
    let mut rng = rand::rng();
    let mut worst = (0.0f64, String::new());
    for (name, var) in &vars {
        let analytic = grads
            .get(var.as_tensor())
            .unwrap_or_else(|| panic!("{what}: no gradient for `{name}`"))
            .flatten_all()
            .and_then(|t| t.to_vec1::<f64>())
            .expect("grad");
        let base = values(var);
        for _ in 0..SAMPLES_PER_VAR.min(base.len()) {
            let j = rng.random_range(0..base.len());
            let at = |delta: f64| {
                let mut v = base.clone();
                v[j] += delta;
                var.set(&Tensor::from_vec(v, var.shape(), &Device::Cpu).expect("tensor"))
                    .expect("set");
                loss(x.as_tensor())
            };
            let numeric = (at(h) - at(-h)) / (2.0 * h);
            var.set(&Tensor::from_vec(base.clone(), var.shape(), &Device::Cpu).expect("tensor"))
                .expect("reset");
            let err = (analytic[j] - numeric).abs() / (1.0 + numeric.abs());
            if err > worst.0 {
                worst = (
                    err,
                    format!(
                        "{name}[{j}]: backward {} vs finite difference {numeric}",
                        analytic[j]
                    ),
                );
            }
        }
    }
    println!("{what}: worst relative error {:.2e} at {}", worst.0, worst.1);
    assert!(
        worst.0 <= tol,
        "{what}: worst relative error {:.3e} at {}",
        worst.0,
        worst.1
    );
}

fn setup() -> (VarMap, VarBuilder<'static>, Var) {
    let vm = VarMap::new();
    let vb = VarBuilder::from_varmap(&vm, DType::F64, &Device::Cpu);
    let x = Var::from_tensor(&random_tensor(&[2, 5, 16])).expect("x");
    (vm, vb, x)
}

#[test]
fn linear() {
    let (vm, vb, x) = setup();
    let layer = LinearLayer::build(
        &LinearSpec {
            d_in: 16,
            d_out: 12,
            bias: true,
        },
        vb.pp("lin"),
    )
    .expect("build");
    randomise(&vm);
    check("LinearLayer", &vm, &x, Precision::F64, |x| layer.forward(x));
}

#[test]
fn swiglu() {
    let (vm, vb, x) = setup();
    let layer = SwiGlu::build(
        &SwiGluSpec {
            d_model: 16,
            d_ff: 24,
            bias: true,
        },
        vb.pp("mlp"),
    )
    .expect("build");
    randomise(&vm);
    check("SwiGLULayer", &vm, &x, Precision::F64, |x| layer.forward(x));
}

#[test]
fn rms_norm_differentiable_path() {
    let (vm, vb, x) = setup();
    let layer = RmsNorm::build(
        &RmsNormSpec {
            d_model: 16,
            eps: 1e-5,
            elementwise_affine: true,
        },
        vb.pp("norm"),
    )
    .expect("build");
    randomise(&vm);
    check("RMSNormLayer", &vm, &x, Precision::F32Inside, |x| {
        layer.forward(x, true)
    });
}

#[test]
fn layer_norm() {
    let (vm, vb, x) = setup();
    let layer = LayerNorm::build(
        &LayerNormSpec {
            d_model: 16,
            eps: 1e-5,
        },
        vb.pp("norm"),
    )
    .expect("build");
    randomise(&vm);
    check("LayerNormLayer", &vm, &x, Precision::F32Inside, |x| {
        layer.forward(x)
    });
}

fn attention_spec(n_heads: usize, n_kv_heads: usize) -> AttentionSpec {
    AttentionSpec {
        d_model: 16,
        n_heads,
        n_kv_heads: Some(n_kv_heads),
        mode: if n_kv_heads == n_heads {
            AttentionMode::Standard
        } else {
            AttentionMode::Gqa
        },
        attn_dim: None,
        head_dim: None,
        rope_enabled: true,
        rope_base: 10000.0,
        rope_scaling: None,
        is_causal: true,
        dropout_p: 0.0,
        bias: true,
        ..AttentionSpec::new(16, n_heads)
    }
}

fn check_attention(what: &str, spec: AttentionSpec) {
    let (vm, vb, x) = setup();
    let layer = Attention::build(&spec, 0, vb.pp("self_attn")).expect("build");
    randomise(&vm);
    check(what, &vm, &x, Precision::F32Inside, |x| {
        let mut ctx = ForwardCtx::eval();
        ctx.pos_offset = 3;
        ctx.train = true;
        layer.forward(x, &mut ctx)
    });
}

#[test]
fn attention_standard_with_rope() {
    check_attention("AttentionLayer (standard, RoPE)", attention_spec(4, 4));
}

#[test]
fn attention_gqa_with_rope() {
    check_attention("AttentionLayer (GQA 4/2, RoPE)", attention_spec(4, 2));
}
