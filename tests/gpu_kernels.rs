//! The fused decode-attention kernel against its plain candle-ops reference
//! (`ops::sdpa::grouped_attention` on the same, dequantized, tensors) on fresh random inputs;
//! the fused training attention (flash forward and backward) against the composite
//! `RecomputingAttention`, per op and over a tiny model's training run; the multi-tensor AdamW; the
//! fused RMSNorm backward and cross-entropy against their candle-ops paths.
//!
//! Needs a build with `--features cuda` and an NVIDIA GPU; without either each test prints why it
//! skips and passes. docs/gpu.md says how these were run on an H100.

use candle_core::{D, DType, Device, Tensor};
use caramba::cache::CacheKind;
use caramba::kernels::{
    DecodeScales, KeySegments, QuantSegment, decode_attention, decode_attention_quantized, quantize_rows,
};
use caramba::ops::sdpa::{AttendOptions, NullKv, grouped_attention};

mod train_support;

fn gpu() -> Option<Device> {
    if !cfg!(feature = "cuda") {
        eprintln!("skipped: built without the `cuda` feature");
        return None;
    }
    // why: these tests are what verifies the gated kernels (src/kernels/unverified.rs), so they run them.
    caramba::kernels::set_unverified_kernels(true);
    match Device::new_cuda(0) {
        Ok(d) => Some(d),
        Err(e) => {
            eprintln!("skipped: no CUDA device ({e})");
            None
        }
    }
}

/// `rel` under the working directory when it is there (a copy of the tree on a GPU machine, run
/// from its root), else under the directory this binary was built from.
fn repo_file(rel: &str) -> std::path::PathBuf {
    let here = std::path::PathBuf::from(rel);
    if here.exists() {
        here
    } else {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
    }
}

fn opts() -> AttendOptions<'static> {
    AttendOptions {
        causal: true,
        train: false,
        dropout_p: 0.0,
        rng: None,
    }
}

/// ‖a − b‖ / ‖b‖ over all elements, in f64 on the host.
fn rel_err(a: &Tensor, b: &Tensor) -> f64 {
    let a: Vec<f32> = a
        .to_dtype(DType::F32)
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1())
        .expect("a");
    let b: Vec<f32> = b
        .to_dtype(DType::F32)
        .and_then(|t| t.flatten_all())
        .and_then(|t| t.to_vec1())
        .expect("b");
    assert_eq!(a.len(), b.len());
    assert!(a.iter().all(|x| x.is_finite()), "non-finite output");
    let num: f64 = a.iter().zip(&b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
    let den: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    (num / den).sqrt()
}

/// Fill the allocator's free blocks with NaN so that an output element the kernel forgets to
/// write shows up (the stream-ordered pool hands freed blocks back to the next allocation).
fn poison(dev: &Device, elems: usize) {
    let nan = Tensor::full(f32::NAN, elems * 4, dev).expect("poison");
    drop(nan);
}

struct Case {
    b: usize,
    nh: usize,
    nkv: usize,
    sem: usize,
    geo: usize,
    dv: usize,
    len: usize,
    null: bool,
}

/// The kernel reads a narrowed view of a larger buffer, as it does in the growable cache.
fn run_plain(dev: &Device, dtype: DType, c: &Case) -> f64 {
    let dk = c.sem + c.geo;
    let cap = c.len + 13;
    let rand = |shape: (usize, usize, usize, usize)| {
        Tensor::randn(0f32, 1.0, shape, dev)
            .and_then(|t| t.to_dtype(dtype))
            .expect("randn")
    };
    let q = rand((c.b, c.nh, 1, dk));
    let k_buf = rand((c.b, c.nkv, cap, dk));
    let v_buf = rand((c.b, c.nkv, cap, c.dv));
    let k = k_buf.narrow(2, 0, c.len).expect("narrow");
    let v = v_buf.narrow(2, 0, c.len).expect("narrow");
    let null = c.null.then(|| {
        (
            Tensor::randn(0f32, 1.0, (c.nkv, dk), dev)
                .expect("k_null")
                .to_dtype(dtype)
                .expect("dt"),
            Tensor::randn(0f32, 1.0, (c.nkv, c.dv), dev)
                .expect("v_null")
                .to_dtype(dtype)
                .expect("dt"),
        )
    });
    let (s_sem, s_geo) = (
        if c.sem > 0 {
            1.0 / (c.sem as f32).sqrt()
        } else {
            0.0
        },
        1.0 / (c.geo as f32).sqrt(),
    );
    poison(dev, c.b * c.nh * c.dv);
    let got = decode_attention(
        &q,
        &k,
        &v,
        KeySegments {
            sem_dim: c.sem,
            geo_dim: c.geo,
        },
        DecodeScales {
            sem: s_sem,
            geo: s_geo,
        },
        null.as_ref().map(|(k, v)| (k, v)),
    )
    .expect("kernel")
    .expect("the kernel applies");
    assert_eq!(got.dims(), &[c.b, c.nh, 1, c.dv]);
    assert_eq!(got.dtype(), dtype);
    // Reference: f32 candle ops on the host, with q pre-scaled per segment.
    let cpu = |t: &Tensor| {
        t.to_device(&Device::Cpu)
            .and_then(|t| t.to_dtype(DType::F32))
            .expect("to cpu")
    };
    let q32 = cpu(&q);
    let q_ref = Tensor::cat(
        &[
            (q32.narrow(D::Minus1, 0, c.sem).expect("sem") * s_sem as f64).expect("s"),
            (q32.narrow(D::Minus1, c.sem, c.geo).expect("geo") * s_geo as f64).expect("s"),
        ],
        3,
    )
    .expect("cat");
    let (nk, nv) = match &null {
        Some((k, v)) => (Some(cpu(k)), Some(cpu(v))),
        None => (None, None),
    };
    let want = grouped_attention(
        &q_ref,
        &cpu(&k),
        &cpu(&v),
        nk.as_ref().zip(nv.as_ref()).map(|(k, v)| NullKv { k, v }),
        opts(),
    )
    .expect("reference");
    rel_err(&got, &want)
}

#[test]
fn plain_cache_matches_candle_ops() {
    let Some(dev) = gpu() else { return };
    let cases = [
        // SmolLM2's attention: 9 query heads over 3 KV heads of 64.
        Case {
            b: 1,
            nh: 9,
            nkv: 3,
            sem: 0,
            geo: 64,
            dv: 64,
            len: 1,
            null: false,
        },
        Case {
            b: 1,
            nh: 9,
            nkv: 3,
            sem: 0,
            geo: 64,
            dv: 64,
            len: 77,
            null: false,
        },
        Case {
            b: 2,
            nh: 9,
            nkv: 3,
            sem: 0,
            geo: 64,
            dv: 64,
            len: 4099,
            null: false,
        },
        // Llama-3.2-1B's: 32 over 8.
        Case {
            b: 1,
            nh: 32,
            nkv: 8,
            sem: 0,
            geo: 64,
            dv: 64,
            len: 1500,
            null: false,
        },
        // DBA: semantic 32 + geometric 32, values 64, null token; odd lengths leave partial splits.
        Case {
            b: 1,
            nh: 9,
            nkv: 3,
            sem: 32,
            geo: 32,
            dv: 64,
            len: 1031,
            null: true,
        },
        Case {
            b: 3,
            nh: 4,
            nkv: 2,
            sem: 16,
            geo: 48,
            dv: 40,
            len: 333,
            null: true,
        },
        // More query heads per KV head than one block holds (two sub-groups of 8).
        Case {
            b: 1,
            nh: 12,
            nkv: 1,
            sem: 24,
            geo: 64,
            dv: 128,
            len: 2050,
            null: false,
        },
        // Widest heads.
        Case {
            b: 1,
            nh: 2,
            nkv: 2,
            sem: 128,
            geo: 128,
            dv: 256,
            len: 70,
            null: true,
        },
    ];
    for (dtype, tol) in [(DType::F32, 1e-4), (DType::F16, 4e-3), (DType::BF16, 2e-2)] {
        for c in &cases {
            let e = run_plain(&dev, dtype, c);
            println!(
                "{dtype:?} b{} h{}/{} sem{} geo{} v{} len{} null={}: rel err {e:.2e}",
                c.b, c.nh, c.nkv, c.sem, c.geo, c.dv, c.len, c.null
            );
            assert!(e < tol, "{dtype:?} len {}: rel err {e} ≥ {tol}", c.len);
        }
    }
}

fn upload(dev: &Device, values: &[f32], width: usize, kind: CacheKind) -> (Tensor, Vec<f32>) {
    let bytes = quantize_rows(values, width, kind).expect("quantize");
    let deq = caramba::kernels::quant_rows::dequantize_rows(&bytes, width, kind).expect("dequantize");
    let n = bytes.len();
    (Tensor::from_vec(bytes, n, dev).expect("upload"), deq)
}

#[test]
fn quantized_cache_matches_candle_ops_on_dequantized_rows() {
    let Some(dev) = gpu() else { return };
    use rand::Rng;
    let mut rng = rand::rng();
    // (k_sem, k_geo, v) kinds; sem None = standard attention.
    let mixes = [
        (None, CacheKind::Q8_0, CacheKind::Q8_0),
        (None, CacheKind::Q4_0, CacheKind::Q4_0),
        (None, CacheKind::Q8_0, CacheKind::Q4_0),
        (Some(CacheKind::Q8_0), CacheKind::Q8_0, CacheKind::Q8_0),
        (Some(CacheKind::Q4_0), CacheKind::Q8_0, CacheKind::Q4_0),
    ];
    for (sem_kind, geo_kind, v_kind) in mixes {
        for &(b, nh, nkv, len, null) in &[(1usize, 9usize, 3usize, 517usize, false), (2, 8, 2, 3001, true)] {
            let (sem, geo, dv) = (if sem_kind.is_some() { 32 } else { 0 }, 64, 64);
            let rows = b * nkv * len;
            let mut draw = |n: usize| {
                (0..n)
                    .map(|_| rng.random_range(-2.0f32..2.0))
                    .collect::<Vec<f32>>()
            };
            let ks_vals = draw(rows * sem.max(32));
            let kg_vals = draw(rows * geo);
            let v_vals = draw(rows * dv);
            let seg = |data: Tensor, kind: CacheKind, dim: usize| QuantSegment {
                data,
                kind,
                dim,
                head_stride: len * kind.row_bytes(dim),
                row_stride: kind.row_bytes(dim),
            };
            let (ks_t, ks_deq) = upload(&dev, &ks_vals, sem.max(32), sem_kind.unwrap_or(CacheKind::Q8_0));
            let (kg_t, kg_deq) = upload(&dev, &kg_vals, geo, geo_kind);
            let (v_t, v_deq) = upload(&dev, &v_vals, dv, v_kind);
            let k_sem = sem_kind.map(|k| seg(ks_t, k, sem));
            let k_geo = seg(kg_t, geo_kind, geo);
            let v = seg(v_t, v_kind, dv);
            let q = Tensor::randn(0f32, 1.0, (b, nh, 1, sem + geo), &dev).expect("q");
            let null = null.then(|| {
                (
                    Tensor::randn(0f32, 1.0, (nkv, sem + geo), &dev).expect("k0"),
                    Tensor::randn(0f32, 1.0, (nkv, dv), &dev).expect("v0"),
                )
            });
            let scales = DecodeScales {
                sem: if sem > 0 { 1.0 / (sem as f32).sqrt() } else { 0.0 },
                geo: 1.0 / (geo as f32).sqrt(),
            };
            poison(&dev, b * nh * dv);
            let got = decode_attention_quantized(
                &q,
                k_sem.as_ref(),
                &k_geo,
                &v,
                nkv,
                len,
                scales,
                null.as_ref().map(|(k, v)| (k, v)),
            )
            .expect("kernel");
            // Reference on the host from the dequantized rows.
            let cpu = Device::Cpu;
            let kg = Tensor::from_vec(kg_deq, (b, nkv, len, geo), &cpu).expect("kg");
            let k_ref = if sem > 0 {
                let ks = Tensor::from_vec(ks_deq, (b, nkv, len, sem), &cpu).expect("ks");
                Tensor::cat(&[ks, kg], 3).expect("cat")
            } else {
                kg
            };
            let v_ref = Tensor::from_vec(v_deq, (b, nkv, len, dv), &cpu).expect("v");
            let q32 = q.to_device(&cpu).expect("q");
            let q_ref = Tensor::cat(
                &[
                    (q32.narrow(3, 0, sem).expect("s") * scales.sem as f64).expect("x"),
                    (q32.narrow(3, sem, geo).expect("g") * scales.geo as f64).expect("x"),
                ],
                3,
            )
            .expect("cat");
            let nk = null
                .as_ref()
                .map(|(k, v)| (k.to_device(&cpu).expect("k"), v.to_device(&cpu).expect("v")));
            let want = grouped_attention(
                &q_ref,
                &k_ref,
                &v_ref,
                nk.as_ref().map(|(k, v)| NullKv { k, v }),
                opts(),
            )
            .expect("reference");
            let e = rel_err(&got, &want);
            println!(
                "{sem_kind:?}/{geo_kind}/{v_kind} b{b} h{nh}/{nkv} len{len} null={null:?}: rel err {e:.2e}",
                null = null.is_some()
            );
            assert!(e < 1e-4, "{sem_kind:?}/{geo_kind}/{v_kind}: rel err {e}");
        }
    }
}

/// A whole model decoding on the GPU (fused kernel) gives the logits of the CPU (candle ops).
#[test]
fn model_decode_on_gpu_matches_cpu() {
    let Some(dev) = gpu() else { return };
    use caramba::infer::Generator;
    use caramba::loader::{LoadOptions, load};
    let config = repo_file("tests/fixtures/tiny_llama_config.json");
    let source = format!("random:{}", config.display());
    let mut logits = Vec::new();
    for device in [Device::Cpu, dev] {
        let m = load(
            &source,
            &LoadOptions {
                device: device.clone(),
                ..LoadOptions::default()
            },
        )
        .expect("load");
        let mut g = Generator::new(&m.model, m.max_seq_len, DType::F32, &device);
        let prompt: Vec<u32> = (0..37).map(|i| (i * 7919 % 250) as u32).collect();
        let mut rows = vec![g.prefill(&prompt).expect("prefill").flatten_all().expect("flat")];
        for step in 0..5u32 {
            rows.push(
                g.decode_step(&[step * 13 % 250])
                    .expect("decode")
                    .flatten_all()
                    .expect("flat"),
            );
        }
        logits.push(
            Tensor::stack(&rows, 0)
                .expect("stack")
                .to_device(&Device::Cpu)
                .expect("cpu"),
        );
    }
    let e = rel_err(&logits[1], &logits[0]);
    println!("tiny llama, 5 decode steps: rel err GPU vs CPU {e:.2e}");
    assert!(e < 1e-4, "rel err {e}");
}

/// A quantized tied head (vocab × d, Q8_0) multiplied on the GPU many times: the result matches
/// the CPU's and the GPU's memory in use does not grow with the number of calls (each call's
/// dequantized matrix is a transient buffer). A leak of this kind once ran a KL distillation out
/// of memory after ~150 steps.
#[test]
fn quantized_head_on_gpu_matches_cpu_and_does_not_grow_memory() {
    use candle_core::quantized::{GgmlDType, QMatMul, QTensor};
    let Some(dev) = gpu() else { return };
    let (vocab, d, rows) = (49_152, 576, 64);
    let w = Tensor::randn(0f32, 0.05, (vocab, d), &Device::Cpu).unwrap();
    let q = QTensor::quantize(&w, GgmlDType::Q8_0).unwrap();
    let bytes = q.data().unwrap().to_vec();
    let on = |device: &Device| {
        let storage = candle_core::quantized::QStorage::from_data(
            std::borrow::Cow::Borrowed(&bytes),
            device,
            GgmlDType::Q8_0,
        )
        .unwrap();
        QMatMul::from_arc(std::sync::Arc::new(QTensor::new(storage, (vocab, d)).unwrap())).unwrap()
    };
    let (head_cpu, head_gpu) = (on(&Device::Cpu), on(&dev));
    let xs = Tensor::randn(0f32, 1.0, (rows, d), &Device::Cpu).unwrap();
    let want = caramba::layer::linear::quantized_matmul(&head_cpu, &xs, false).unwrap();
    let xs_gpu = xs.to_device(&dev).unwrap();
    let got = caramba::layer::linear::quantized_matmul(&head_gpu, &xs_gpu, false).unwrap();
    let err = rel_err(&got.to_device(&Device::Cpu).unwrap(), &want);
    eprintln!("quantized head {vocab}×{d} Q8_0, {rows} rows: rel err GPU vs CPU {err:.2e}");
    assert!(err < 1e-4, "rel err {err}");
    dev.synchronize().unwrap();
    let before = caramba::device::gpu_memory_used_gib(&dev).unwrap();
    for _ in 0..40 {
        let ys = caramba::layer::linear::quantized_matmul(&head_gpu, &xs_gpu, false).unwrap();
        drop(ys);
    }
    dev.synchronize().unwrap();
    let after = caramba::device::gpu_memory_used_gib(&dev).unwrap();
    eprintln!("GPU memory in use: {before:.3} GiB before 40 calls, {after:.3} GiB after");
    // 40 leaked f32 copies of the head would be 4.4 GiB.
    assert!(
        after - before < 0.5,
        "memory grew by {:.2} GiB over 40 calls",
        after - before
    );
}

/// Training's live GPU memory is flat: 200 AdamW steps of a small bf16 model, the CUDA pool's
/// allocations in use (`memory_gib` in `metrics.jsonl`) after step 50 and after step 200 within 2 %.
/// Before gradients were detached (src/train/gradients.rs) each step kept the last one alive.
#[test]
fn training_memory_is_flat_on_the_gpu() {
    if gpu().is_none() {
        return;
    }
    let _switch = fused_switch();
    let dir = tempfile::tempdir().expect("tempdir");
    let data = train_support::english_dataset(dir.path(), 128, 0.1);
    let model = train_support::tiny_model(256, 128, 4, 4, 0.0);
    for optimizer in [
        caramba::train::OptimizerKind::Adamw,
        caramba::train::OptimizerKind::Lion,
    ] {
        let spec = caramba::train::TrainSpec {
            device: "cuda".into(),
            dtype: "bf16".into(),
            optimizer,
            save_every: Some(1000),
            ..train_support::tiny_train_spec()
        };
        let run_dir = dir.path().join(format!("{optimizer:?}"));
        let opts = caramba::train::TrainOptions::new(&model, &spec, 200, 5, &run_dir);
        caramba::train::run(&model, &spec, &data, opts).expect("train on the GPU");
        let memory: Vec<(usize, f64)> = caramba::train::read_metrics(&run_dir.join("metrics.jsonl"))
            .expect("metrics")
            .into_iter()
            .filter_map(|l| match l {
                caramba::train::MetricLine::Train(t) => {
                    Some((t.step, t.memory_gib.expect("memory_gib on CUDA")))
                }
                _ => None,
            })
            .collect();
        let at = |s: usize| memory.iter().find(|(step, _)| *step == s).expect("logged").1;
        let (early, late) = (at(50), at(200));
        eprintln!("{optimizer:?}: GPU tensors {early:.4} GiB after step 50, {late:.4} GiB after step 200");
        assert!(
            (late - early).abs() <= 0.02 * early,
            "{optimizer:?}: GPU memory moved from {early:.4} to {late:.4} GiB: {:?}",
            memory.iter().step_by(25).collect::<Vec<_>>()
        );
    }
}

/// The multi-tensor AdamW kernel (one launch for every parameter) against the CPU update, which
/// equals the candle-ops formula bit for bit: bf16 and f32 parameters of odd sizes, decayed and
/// not, four steps with fresh random gradients. Also the clipping norm's multi-tensor sums.
#[test]
fn multi_tensor_adamw_matches_the_cpu_update() {
    use candle_core::Var;
    use caramba::train::{Optimizer, TrainSpec};
    let Some(dev) = gpu() else { return };
    let shapes: [(&str, Vec<usize>, DType); 4] = [
        ("a.weight", vec![37, 129], DType::BF16),
        ("b.bias", vec![129], DType::BF16),
        ("c.weight", vec![3, 40_001], DType::F32),
        ("d.norm", vec![577], DType::F32),
    ];
    let spec = TrainSpec {
        betas: [0.9, 0.95],
        eps: 1e-8,
        weight_decay: 0.1,
        ..TrainSpec::default()
    };
    let init: Vec<Tensor> = shapes
        .iter()
        .map(|(_, s, dt)| {
            Tensor::randn(0f32, 1.0, s.as_slice(), &Device::Cpu)
                .unwrap()
                .to_dtype(*dt)
                .unwrap()
        })
        .collect();
    let vars_on = |d: &Device| -> Vec<(String, Var)> {
        shapes
            .iter()
            .zip(&init)
            .map(|((n, _, _), t)| (n.to_string(), Var::from_tensor(&t.to_device(d).unwrap()).unwrap()))
            .collect()
    };
    let (cpu_vars, gpu_vars) = (vars_on(&Device::Cpu), vars_on(&dev));
    let mut cpu = Optimizer::new(&spec, cpu_vars.clone()).unwrap();
    let mut gpu_opt = Optimizer::new(&spec, gpu_vars.clone()).unwrap();
    for step in 0..4 {
        let grads: Vec<Tensor> = shapes
            .iter()
            .map(|(_, s, _)| Tensor::randn(0f32, 1.0, s.as_slice(), &Device::Cpu).unwrap())
            .collect();
        let lr = 1e-2 / (step + 1) as f64;
        cpu.step(&grads.iter().cloned().map(Some).collect::<Vec<_>>(), lr)
            .unwrap();
        let on_gpu: Vec<Option<Tensor>> = grads.iter().map(|g| Some(g.to_device(&dev).unwrap())).collect();
        gpu_opt.step(&on_gpu, lr).unwrap();
        for ((name, c), (_, g)) in cpu_vars.iter().zip(&gpu_vars) {
            let err = rel_err(&g.as_tensor().to_device(&Device::Cpu).unwrap(), c.as_tensor());
            let same = c
                .as_tensor()
                .to_dtype(DType::F32)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
                == g.as_tensor()
                    .to_device(&Device::Cpu)
                    .unwrap()
                    .to_dtype(DType::F32)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1::<f32>()
                    .unwrap();
            eprintln!("AdamW step {step} `{name}`: rel err GPU vs CPU {err:.2e}, bit-identical {same}");
            assert!(err < 1e-6, "`{name}` step {step}: rel err {err}");
        }
        let mut norms = Vec::new();
        for device in [&Device::Cpu, &dev] {
            let mut gs: Vec<Option<Tensor>> =
                grads.iter().map(|g| Some(g.to_device(device).unwrap())).collect();
            norms.push(caramba::train::clip::clip_grad_norm(&mut gs, 0.0).unwrap());
        }
        let want: f64 = grads
            .iter()
            .flat_map(|g| g.flatten_all().unwrap().to_vec1::<f32>().unwrap())
            .map(|x| f64::from(x) * f64::from(x))
            .sum::<f64>()
            .sqrt();
        eprintln!("clip norm: CPU {} GPU {} f64 {want}", norms[0], norms[1]);
        assert!(
            (norms[1] - want).abs() <= 1e-6 * want,
            "GPU norm {} vs {want}",
            norms[1]
        );
    }
}

/// Tests that flip (or, through the trainer, set) the process-wide fused-training switch run one
/// at a time.
fn fused_switch() -> std::sync::MutexGuard<'static, ()> {
    static SWITCH: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SWITCH.lock().unwrap_or_else(|e| e.into_inner())
}

/// One shape of the fused training attention test.
#[derive(Debug, Clone, Copy)]
struct AttnCase {
    b: usize,
    nkv: usize,
    g: usize,
    t: usize,
    kt: usize,
    n_null: usize,
    dq: usize,
    dv: usize,
}

/// max |a − b| / max |b| and max |b|, in f32.
fn rel_to_max(a: &Tensor, b: &Tensor) -> (f32, f32) {
    let f = |t: &Tensor| t.to_dtype(DType::F32).expect("f32");
    let (a, b) = (f(a), f(b));
    let top = b
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    let diff = (&a - &b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    let finite = a
        .flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .iter()
        .all(|x| x.is_finite());
    (
        if finite {
            diff / top.max(1e-30)
        } else {
            f32::INFINITY
        },
        top,
    )
}

/// (out, [dq, dk, dv]) of `recomputing_attention` with the fused switch as given; the loss is
/// Σ out ⊙ up in f32.
fn attention_and_grads(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    up: &Tensor,
    c: &AttnCase,
    causal: bool,
    fused: bool,
) -> (Tensor, [Tensor; 3]) {
    use candle_core::Var;
    caramba::kernels::set_fused_training(fused);
    let (vq, vk, vv) = (
        Var::from_tensor(q).unwrap(),
        Var::from_tensor(k).unwrap(),
        Var::from_tensor(v).unwrap(),
    );
    let out = caramba::ops::sdpa::recomputing_attention(
        vq.as_tensor(),
        vk.as_tensor(),
        vv.as_tensor(),
        causal,
        c.g,
        c.t,
        c.n_null,
    )
    .unwrap();
    let grads = (out.to_dtype(DType::F32).unwrap() * up)
        .unwrap()
        .sum_all()
        .unwrap()
        .backward()
        .unwrap();
    let get = |v: &Var| grads.get(v.as_tensor()).expect("a gradient").clone();
    let gs = [get(&vq), get(&vk), get(&vv)];
    caramba::kernels::set_fused_training(true);
    (out, gs)
}

/// The fused flash-attention kernels against the composite `RecomputingAttention` (the switch
/// off) in f32 on the same inputs: forward, L and the three gradients, f32, bf16 and f16, causal and
/// not, odd lengths (several query and key tiles, partial last ones), a query block shorter than
/// the keys (t = 5 < kt = 23), 0 and 1 null columns, g 1 and 3, and the head dims of Llama (64),
/// DBA (32; 16/32) and larger models (128). Tolerances are relative to the reference's largest
/// magnitude: 1e-4 in f32; 2e-2 in bf16 and f16, whose reference is the f32 composite on the same
/// (rounded) inputs, so that only the kernel's own rounding is measured.
#[test]
fn fused_training_attention_matches_the_composite() {
    let Some(dev) = gpu() else { return };
    let _switch = fused_switch();
    let case = |b, nkv, g, t, kt, n_null, dq, dv| AttnCase {
        b,
        nkv,
        g,
        t,
        kt,
        n_null,
        dq,
        dv,
    };
    let cases = [
        case(2, 2, 1, 37, 37, 0, 64, 64),
        case(1, 2, 3, 37, 37, 1, 64, 64),
        case(2, 1, 3, 5, 23, 1, 64, 64),
        case(1, 3, 3, 37, 37, 0, 32, 32),
        case(2, 2, 3, 5, 23, 1, 32, 32),
        case(1, 2, 1, 37, 37, 1, 16, 32),
        case(2, 1, 3, 5, 23, 0, 16, 32),
        case(1, 1, 3, 130, 150, 1, 64, 64),
        case(1, 2, 3, 70, 70, 0, 32, 32),
        case(1, 1, 2, 67, 67, 1, 128, 128),
        case(1, 1, 3, 33, 40, 0, 128, 64),
    ];
    let mut failures = Vec::new();
    for c in cases {
        let kk = c.n_null + c.kt;
        // why: q pre-scaled by 1/√dq as attention does, so that the scores are O(1).
        let q = Tensor::randn(
            0f32,
            (1.0 / c.dq as f64).sqrt() as f32,
            (c.b, c.nkv, c.g * c.t, c.dq),
            &dev,
        )
        .unwrap();
        let k = Tensor::randn(0f32, 1.0, (c.b, c.nkv, kk, c.dq), &dev).unwrap();
        let v = Tensor::randn(0f32, 1.0, (c.b, c.nkv, kk, c.dv), &dev).unwrap();
        let up = Tensor::randn(0f32, 1.0, (c.b, c.nkv, c.g * c.t, c.dv), &dev).unwrap();
        for dtype in [DType::F32, DType::BF16, DType::F16] {
            // The same values in both runs: the reference takes the rounded inputs in f32.
            let (qd, kd, vd) = (
                q.to_dtype(dtype).unwrap(),
                k.to_dtype(dtype).unwrap(),
                v.to_dtype(dtype).unwrap(),
            );
            let f32_of = |t: &Tensor| t.to_dtype(DType::F32).unwrap();
            let tol = if dtype == DType::F32 { 1e-4 } else { 2e-2 };
            for causal in [true, false] {
                let name = format!("{c:?} {dtype:?} causal={causal}");
                let (want, want_g) =
                    attention_and_grads(&f32_of(&qd), &f32_of(&kd), &f32_of(&vd), &up, &c, causal, false);
                // The kernel takes the case (else the comparison below would test the composite).
                let direct =
                    caramba::kernels::flash_attention::forward(&qd, &kd, &vd, c.g, c.t, causal && c.t > 1)
                        .unwrap()
                        .unwrap_or_else(|| panic!("{name}: the fused kernel declined"));
                let (got, got_g) = attention_and_grads(&qd, &kd, &vd, &up, &c, causal, true);
                let (err, _) = rel_to_max(&got, &want);
                eprintln!("{name}: forward {err:.2e}");
                if !(err <= tol) {
                    failures.push(format!("{name}: forward differs by {err:.2e} of max"));
                }
                let (err, _) = rel_to_max(&direct.0, &want);
                if !(err <= tol) {
                    failures.push(format!("{name}: direct forward differs by {err:.2e} of max"));
                }
                // L against log Σ exp(scores + mask) of the f32 inputs.
                let scores = f32_of(&qd).matmul(&f32_of(&kd).t().unwrap()).unwrap();
                let scores = if causal && c.t > 1 {
                    let mask = caramba::ops::sdpa::causal_mask(c.t, c.kt, c.n_null, &dev).unwrap();
                    scores
                        .reshape((c.b, c.nkv, c.g, c.t, kk))
                        .unwrap()
                        .broadcast_add(&mask)
                        .unwrap()
                        .reshape((c.b, c.nkv, c.g * c.t, kk))
                        .unwrap()
                } else {
                    scores
                };
                let max = scores.max_keepdim(D::Minus1).unwrap();
                let lse = (scores
                    .broadcast_sub(&max)
                    .unwrap()
                    .exp()
                    .unwrap()
                    .sum_keepdim(D::Minus1)
                    .unwrap()
                    .log()
                    .unwrap()
                    + &max)
                    .unwrap()
                    .squeeze(D::Minus1)
                    .unwrap();
                let (err, top) = rel_to_max(&direct.1, &lse);
                let l_err = err * top / top.max(1.0);
                if !(l_err <= 1e-4) {
                    failures.push(format!("{name}: logsumexp differs by {l_err:.2e}"));
                }
                for (g_name, (a, r)) in ["dq", "dk", "dv"].iter().zip(got_g.iter().zip(&want_g)) {
                    let (err, scale) = rel_to_max(a, r);
                    eprintln!("{name}: {g_name} {err:.2e} (max {scale:.3})");
                    if !(scale > 1e-2) {
                        failures.push(format!("{name}: {g_name} of max {scale} tests nothing"));
                    }
                    if !(err <= tol) {
                        failures.push(format!("{name}: {g_name} differs by {err:.2e} of max {scale:.3}"));
                    }
                    if a.dtype() != dtype {
                        failures.push(format!("{name}: {g_name} is {:?}", a.dtype()));
                    }
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// A tiny Llama-style model (4 layers, head dim 32, causal) trained 20 steps with the fused
/// kernels (attention, RMSNorm backward, cross-entropy: one switch) and with the composite ops,
/// from the same seed: the per-step losses agree within
/// 1e-3 (relative) in f32 and 3e-2 in bf16, where the two paths round differently and the
/// difference compounds over the steps.
#[test]
fn fused_training_attention_trains_like_the_composite() {
    if gpu().is_none() {
        return;
    }
    let _switch = fused_switch();
    let dir = tempfile::tempdir().expect("tempdir");
    let data = train_support::english_dataset(dir.path(), 128, 0.1);
    let model = train_support::tiny_model(256, 128, 4, 4, 0.0);
    for (dtype, tol) in [("f32", 1e-3), ("bf16", 3e-2)] {
        let losses = |fused: bool| -> Vec<f64> {
            let spec = caramba::train::TrainSpec {
                device: "cuda".into(),
                dtype: dtype.into(),
                fused,
                save_every: Some(1000),
                ..train_support::tiny_train_spec()
            };
            let run_dir = dir.path().join(format!("{dtype}-{fused}"));
            let opts = caramba::train::TrainOptions::new(&model, &spec, 20, 5, &run_dir);
            caramba::train::run(&model, &spec, &data, opts).expect("train on the GPU");
            caramba::train::read_metrics(&run_dir.join("metrics.jsonl"))
                .expect("metrics")
                .into_iter()
                .filter_map(|l| match l {
                    caramba::train::MetricLine::Train(t) => Some(t.loss),
                    _ => None,
                })
                .collect()
        };
        let (fused, composite) = (losses(true), losses(false));
        caramba::kernels::set_fused_training(true);
        assert_eq!(fused.len(), 20, "{dtype}: logged steps");
        eprintln!("{dtype}: fused {fused:.4?}\n{dtype}: composite {composite:.4?}");
        for (step, (a, b)) in fused.iter().zip(&composite).enumerate() {
            assert!(
                (a - b).abs() <= tol * b.abs(),
                "{dtype} step {}: fused loss {a} vs composite {b} (tolerance {tol} relative)",
                step + 1
            );
        }
    }
}

/// The fused RMSNorm backward (`kernels::rms_norm`) against the candle-ops closed form
/// (`rms_norm_backward_reference`, run in f32 on the same rounded inputs): dx and dw, f32 and bf16,
/// odd and Llama widths (37, 576), a width over the 1024 of the small blocks (4100) and one over
/// the shared-memory column sums (9000), 1 to 8193 rows. Tolerances relative to the reference's
/// largest magnitude: f32 1e-5 for dx and 3e-5 for dw (a sum over up to 8193 rows in another
/// order); bf16 2e-2. dw must also be bit-identical run to run, and the layer's op
/// (`RmsNormWithGrad` through `closed_form::apply2`) must give the same gradients with the switch
/// on as off.
#[test]
fn fused_rms_norm_backward_matches_the_closed_form() {
    use caramba::layer::rms_norm::{RmsNormWithGrad, rms_norm_backward_reference};
    let Some(dev) = gpu() else { return };
    let _switch = fused_switch();
    caramba::kernels::set_fused_training(true);
    let eps = 1e-5;
    let mut failures = Vec::new();
    let mut worst = [0f32; 2];
    for (d, rows) in [
        (37, 1),
        (37, 8193),
        (576, 1),
        (576, 7),
        (576, 8193),
        (4100, 3),
        (4100, 300),
        (9000, 1),
        (9000, 40),
    ] {
        // Rows of very different scales and a weight far from ones.
        let x = Tensor::randn(0f32, 1.0, (rows, d), &dev)
            .unwrap()
            .broadcast_mul(&Tensor::randn(0f32, 3.0, (rows, 1), &dev).unwrap().abs().unwrap())
            .unwrap();
        let w = Tensor::randn(1f32, 0.5, d, &dev).unwrap();
        let g = Tensor::randn(0f32, 1.0, (rows, d), &dev).unwrap();
        for (i, dtype) in [DType::F32, DType::BF16].into_iter().enumerate() {
            let name = format!("d {d}, rows {rows}, {dtype:?}");
            let (xd, wd, gd) = (
                x.to_dtype(dtype).unwrap(),
                w.to_dtype(dtype).unwrap(),
                g.to_dtype(dtype).unwrap(),
            );
            let f32_of = |t: &Tensor| t.to_dtype(DType::F32).unwrap();
            let (want_dx, want_dw) =
                rms_norm_backward_reference(&f32_of(&xd), &f32_of(&wd), &f32_of(&gd), eps).unwrap();
            poison(&dev, rows * d);
            let (dx, dw) = caramba::kernels::rms_norm::backward(&xd, &wd, &gd, eps)
                .unwrap()
                .unwrap_or_else(|| panic!("{name}: the fused kernel declined"));
            if dx.dtype() != dtype || dw.dtype() != dtype {
                failures.push(format!("{name}: dx {:?}, dw {:?}", dx.dtype(), dw.dtype()));
            }
            let (dx_err, dx_top) = rel_to_max(&dx, &want_dx);
            let (dw_err, dw_top) = rel_to_max(&dw, &want_dw);
            eprintln!("{name}: dx {dx_err:.2e} (max {dx_top:.3}), dw {dw_err:.2e} (max {dw_top:.3})");
            let (tol_dx, tol_dw) = if dtype == DType::F32 {
                (1e-5, 3e-5)
            } else {
                (2e-2, 2e-2)
            };
            worst[i] = worst[i].max(dx_err).max(dw_err);
            if !(dx_err <= tol_dx) {
                failures.push(format!("{name}: dx differs by {dx_err:.2e} of max"));
            }
            if !(dw_err <= tol_dw) {
                failures.push(format!("{name}: dw differs by {dw_err:.2e} of max"));
            }
            let (_, dw_again) = caramba::kernels::rms_norm::backward(&xd, &wd, &gd, eps)
                .unwrap()
                .unwrap();
            let same = f32_of(&dw)
                .eq(&f32_of(&dw_again))
                .unwrap()
                .min_all()
                .unwrap()
                .to_scalar::<u8>()
                .unwrap();
            if same != 1 {
                failures.push(format!("{name}: dw differs between two runs"));
            }
        }
    }
    // The layer's op takes the kernel with the switch on and the closed form with it off.
    let x0 = Tensor::randn(0f32, 1.0, (2, 5, 576), &dev).unwrap();
    let w0 = Tensor::randn(1f32, 0.5, 576, &dev).unwrap();
    let grads = |fused: bool| -> [Tensor; 2] {
        use candle_core::Var;
        caramba::kernels::set_fused_training(fused);
        let (x, w) = (Var::from_tensor(&x0).unwrap(), Var::from_tensor(&w0).unwrap());
        let y =
            caramba::ops::closed_form::apply2(x.as_tensor(), w.as_tensor(), RmsNormWithGrad { eps }).unwrap();
        let gs = y.sqr().unwrap().sum_all().unwrap().backward().unwrap();
        caramba::kernels::set_fused_training(true);
        [x, w].map(|v| gs.get(v.as_tensor()).expect("a gradient").clone())
    };
    for ((name, a), b) in ["dx", "dw"].iter().zip(grads(true)).zip(grads(false)) {
        let (err, _) = rel_to_max(&a, &b);
        eprintln!("RmsNormWithGrad fused vs closed form: {name} {err:.2e}");
        if !(err <= 3e-5) {
            failures.push(format!(
                "RmsNormWithGrad: {name} differs by {err:.2e} with the switch on"
            ));
        }
    }
    eprintln!("worst: f32 {:.2e}, bf16 {:.2e}", worst[0], worst[1]);
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The fused cross-entropy (`ops::cross_entropy` on CUDA with the switch on: the kernels of
/// `kernels::cross_entropy`) against the same op on the CPU (its candle-ops path, the function of
/// the old `lm_loss` composite): per-row loss, mean loss and dlogits, f32 and bf16, SmolLM2's
/// vocabulary (49152: 16-byte loads), odd ones (37, 1003: element loads) and rows viewed from
/// mid-buffer (unaligned starts). Tolerances relative to the reference's largest magnitude: f32
/// 1e-5, bf16 2e-2 (the reference takes the same bf16 logits and rounds dlogits to bf16).
#[test]
fn fused_cross_entropy_matches_the_candle_ops() {
    use candle_core::Var;
    use caramba::ops::cross_entropy::cross_entropy_rows;
    let Some(dev) = gpu() else { return };
    let _switch = fused_switch();
    caramba::kernels::set_fused_training(true);
    let mut failures = Vec::new();
    let mut worst = [0f32; 2];
    for (n, v, offset) in [
        (1, 49152, 0),
        (512, 49152, 0),
        (300, 37, 0),
        (64, 1003, 1),
        (33, 1000, 3),
    ] {
        let all = Tensor::randn(0f32, 3.0, (n + offset, v), &Device::Cpu).unwrap();
        let targets = Tensor::rand(0f32, v as f32, n, &Device::Cpu)
            .unwrap()
            .floor()
            .unwrap()
            .clamp(0f32, (v - 1) as f32)
            .unwrap()
            .to_dtype(DType::U32)
            .unwrap();
        let up = Tensor::randn(0f32, 1.0, n, &Device::Cpu).unwrap();
        for (i, dtype) in [DType::F32, DType::BF16].into_iter().enumerate() {
            let name = format!("n {n}, v {v}, offset {offset}, {dtype:?}");
            if let Some(why) = caramba::kernels::cross_entropy::unavailable(&dev, dtype) {
                failures.push(format!("{name}: the fused kernel declined ({why})"));
                continue;
            }
            // (per-row loss, d (Σ loss ⊙ up) / d logits) on `on`, from rows `offset..` of a buffer.
            let run = |on: &Device| -> (Tensor, Tensor) {
                let buf = all.to_dtype(dtype).unwrap().to_device(on).unwrap();
                let var = Var::from_tensor(&buf).unwrap();
                let logits = var.as_tensor().narrow(0, offset, n).unwrap();
                let rows = cross_entropy_rows(&logits, &targets.to_device(on).unwrap()).unwrap();
                let gs = (&rows * up.to_device(on).unwrap())
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .backward()
                    .unwrap();
                let g = gs
                    .get(var.as_tensor())
                    .expect("a gradient")
                    .narrow(0, offset, n)
                    .unwrap();
                (
                    rows.to_device(&Device::Cpu).unwrap(),
                    g.to_device(&Device::Cpu).unwrap(),
                )
            };
            let (want, want_g) = run(&Device::Cpu);
            poison(&dev, n * v);
            let (got, got_g) = run(&dev);
            if got_g.dtype() != dtype {
                failures.push(format!("{name}: dlogits are {:?}", got_g.dtype()));
            }
            let (loss_err, top) = rel_to_max(&got, &want);
            let mean_err = {
                let (a, b) = (
                    got.mean_all().unwrap().to_scalar::<f32>().unwrap(),
                    want.mean_all().unwrap().to_scalar::<f32>().unwrap(),
                );
                (a - b).abs() / b.abs().max(1.0)
            };
            let (g_err, g_top) = rel_to_max(&got_g, &want_g);
            eprintln!(
                "{name}: loss {loss_err:.2e} (max {top:.3}), mean {mean_err:.2e}, dlogits {g_err:.2e} (max {g_top:.3})"
            );
            let tol = if dtype == DType::F32 { 1e-5 } else { 2e-2 };
            worst[i] = worst[i].max(loss_err).max(mean_err).max(g_err);
            for (what, err) in [("loss", loss_err), ("mean loss", mean_err), ("dlogits", g_err)] {
                if !(err <= tol) {
                    failures.push(format!("{name}: {what} differs by {err:.2e} of max"));
                }
            }
        }
    }
    eprintln!("worst: f32 {:.2e}, bf16 {:.2e}", worst[0], worst[1]);
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The fused SwiGLU activation (`kernels::swiglu`) against the candle-ops closed form of
/// `ops::swiglu` run on the CPU in f32 on the same (rounded) inputs: h, da and db, f32, bf16 and
/// f16, even and odd element counts (the odd last element), one operand at an even offset into a
/// larger buffer. Tolerances relative to the reference's largest magnitude: f32 1e-5, bf16 and
/// f16 1e-2 (one rounding of each result to the narrow type).
#[test]
fn fused_swiglu_matches_the_closed_form() {
    let Some(dev) = gpu() else { return };
    let _switch = fused_switch();
    caramba::kernels::set_fused_training(true);
    let mut failures = Vec::new();
    let mut worst = [0f32; 3];
    for n in [1usize, 2, 37, 1536, 3 * 1536 + 1, 16 * 512 * 1536] {
        // Gate pre-activations wide enough to saturate the sigmoid both ways.
        let a = Tensor::randn(0f32, 3.0, n, &dev).unwrap();
        let b = Tensor::randn(0f32, 1.0, n, &dev).unwrap();
        let g = Tensor::randn(0f32, 1.0, n, &dev).unwrap();
        for (i, dtype) in [DType::F32, DType::BF16, DType::F16].into_iter().enumerate() {
            let name = format!("n {n}, {dtype:?}");
            let (ad, bd, gd) = (
                a.to_dtype(dtype).unwrap(),
                b.to_dtype(dtype).unwrap(),
                g.to_dtype(dtype).unwrap(),
            );
            let cpu = |t: &Tensor| t.to_dtype(DType::F32).unwrap().to_device(&Device::Cpu).unwrap();
            let (ac, bc, gc) = (cpu(&ad), cpu(&bd), cpu(&gd));
            let want_h = (candle_nn::ops::silu(&ac).unwrap() * &bc).unwrap();
            let s = candle_nn::ops::sigmoid(&ac).unwrap();
            let silu = (&ac * &s).unwrap();
            let want_da = (&gc * (&s * ((&ac - &silu).unwrap() + 1.0).unwrap()).unwrap() * &bc).unwrap();
            let want_db = (&gc * &silu).unwrap();
            poison(&dev, 3 * n);
            let h = caramba::kernels::swiglu::forward(&ad, &bd)
                .unwrap()
                .unwrap_or_else(|| panic!("{name}: the fused forward declined"));
            let (da, db) = caramba::kernels::swiglu::backward(&ad, &bd, &gd)
                .unwrap()
                .unwrap_or_else(|| panic!("{name}: the fused backward declined"));
            let tol = if dtype == DType::F32 { 1e-5 } else { 1e-2 };
            for (what, got, want) in [("h", &h, &want_h), ("da", &da, &want_da), ("db", &db, &want_db)] {
                if got.dtype() != dtype {
                    failures.push(format!("{name}: {what} is {:?}", got.dtype()));
                }
                let (err, top) = rel_to_max(&got.to_device(&Device::Cpu).unwrap(), want);
                worst[i] = worst[i].max(err);
                if n >= 1536 || !(err <= tol) {
                    eprintln!("{name}: {what} {err:.2e} (max {top:.3})");
                }
                if !(err <= tol) {
                    failures.push(format!("{name}: {what} differs by {err:.2e} of max"));
                }
            }
        }
    }
    // An operand viewed at an even offset into a larger buffer, through the op (forward and
    // backward), against the op with the switch off (the candle-ops closed form on the GPU).
    let big = Tensor::randn(0f32, 2.0, 2 * 4 * 1536 + 2, &dev).unwrap();
    let a0 = big.narrow(0, 2, 4 * 1536).unwrap().reshape((4, 1536)).unwrap();
    let b0 = Tensor::randn(0f32, 1.0, (4, 1536), &dev).unwrap();
    let grads = |fused: bool| -> [Tensor; 3] {
        use candle_core::Var;
        caramba::kernels::set_fused_training(fused);
        let (a, b) = (Var::from_tensor(&a0).unwrap(), Var::from_tensor(&b0).unwrap());
        let y = caramba::ops::swiglu::silu_mul(a.as_tensor(), b.as_tensor()).unwrap();
        let gs = y.sqr().unwrap().sum_all().unwrap().backward().unwrap();
        caramba::kernels::set_fused_training(true);
        let [da, db] = [a, b].map(|v| gs.get(v.as_tensor()).expect("a gradient").clone());
        [y, da, db]
    };
    for ((name, x), y) in ["h", "da", "db"].iter().zip(grads(true)).zip(grads(false)) {
        let (err, _) = rel_to_max(&x, &y);
        eprintln!("silu_mul fused vs candle ops: {name} {err:.2e}");
        if !(err <= 1e-5) {
            failures.push(format!(
                "silu_mul: {name} differs by {err:.2e} with the switch on"
            ));
        }
    }
    eprintln!(
        "worst: f32 {:.2e}, bf16 {:.2e}, f16 {:.2e}",
        worst[0], worst[1], worst[2]
    );
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The embedding table's gradient (`kernels::embedding`) against candle's zeros + `index_add` on
/// the CPU in f32 on the same (rounded) gradient: SmolLM2's shape (8,192 ids into 49,152 × 576,
/// many repeats), a table whose row count is not a multiple of the kernel's 8 rows per block, ids
/// that hit one row only, and f32/bf16. Unused rows must be exactly zero; two runs must agree bit
/// for bit. Tolerances relative to the largest magnitude: f32 1e-5, bf16 1e-2.
#[test]
fn fused_embedding_backward_matches_index_add() {
    let Some(dev) = gpu() else { return };
    let _switch = fused_switch();
    caramba::kernels::set_fused_training(true);
    let mut failures = Vec::new();
    let rng_ids = |n: usize, vocab: usize, skew: bool| -> Vec<u32> {
        // A fixed-seed mix: Zipf-like repeats (as text has) or uniform ids.
        let mut state = 0x9e3779b97f4a7c15u64 ^ (n as u64) ^ ((vocab as u64) << 20);
        (0..n)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                let u = (state >> 11) as f64 / (1u64 << 53) as f64;
                let v = if skew {
                    (u * u * u * vocab as f64) as usize
                } else {
                    (u * vocab as f64) as usize
                };
                v.min(vocab - 1) as u32
            })
            .collect()
    };
    for (n, vocab, d, skew) in [
        (8192usize, 49152usize, 576usize, true),
        (37, 13, 7, false),
        (1000, 3, 64, false),
        (513, 1, 1536, false),
        (4096, 1003, 1024, true),
    ] {
        let ids_v = rng_ids(n, vocab, skew);
        let ids = Tensor::new(ids_v.as_slice(), &dev).unwrap();
        let g = Tensor::randn(0f32, 1.0, (n, d), &dev).unwrap();
        for dtype in [DType::F32, DType::BF16] {
            let name = format!("n {n}, vocab {vocab}, d {d}, {dtype:?}");
            let gd = g.to_dtype(dtype).unwrap();
            let gc = gd.to_dtype(DType::F32).unwrap().to_device(&Device::Cpu).unwrap();
            let ids_c = ids.to_device(&Device::Cpu).unwrap();
            let want = Tensor::zeros((vocab, d), DType::F32, &Device::Cpu)
                .unwrap()
                .index_add(&ids_c, &gc, 0)
                .unwrap();
            poison(&dev, vocab * d);
            let dw = caramba::kernels::embedding::backward(&ids, &gd, vocab)
                .unwrap()
                .unwrap_or_else(|| panic!("{name}: the kernel declined"));
            let (err, top) = rel_to_max(&dw.to_device(&Device::Cpu).unwrap(), &want);
            eprintln!("{name}: dw {err:.2e} (max {top:.3})");
            let tol = if dtype == DType::F32 { 1e-5 } else { 1e-2 };
            if !(err <= tol) {
                failures.push(format!("{name}: dw differs by {err:.2e} of max"));
            }
            let mut used = vec![false; vocab];
            for &i in &ids_v {
                used[i as usize] = true;
            }
            let rows = dw
                .to_dtype(DType::F32)
                .unwrap()
                .abs()
                .unwrap()
                .sum(1)
                .unwrap()
                .to_vec1::<f32>()
                .unwrap();
            if let Some(v) = (0..vocab).find(|&v| !used[v] && rows[v] != 0.0) {
                failures.push(format!("{name}: unused row {v} is not zero"));
            }
            let again = caramba::kernels::embedding::backward(&ids, &gd, vocab)
                .unwrap()
                .unwrap();
            let same = dw
                .to_dtype(DType::F32)
                .unwrap()
                .eq(&again.to_dtype(DType::F32).unwrap())
                .unwrap()
                .min_all()
                .unwrap()
                .to_scalar::<u8>()
                .unwrap();
            if same != 1 {
                failures.push(format!("{name}: dw differs between two runs"));
            }
        }
    }
    // Through the embedding op, against it with the switch off (candle's index_add on the GPU).
    let table0 = Tensor::randn(0f32, 1.0, (1003, 64), &dev).unwrap();
    let ids = Tensor::new(rng_ids(2 * 300, 1003, true).as_slice(), &dev)
        .unwrap()
        .reshape((2, 300))
        .unwrap();
    let up = Tensor::randn(0f32, 1.0, (2, 300, 64), &dev).unwrap();
    let grad = |fused: bool| -> Tensor {
        caramba::kernels::set_fused_training(fused);
        let table = candle_core::Var::from_tensor(&table0).unwrap();
        let y = caramba::ops::embedding::lookup(table.as_tensor(), &ids).unwrap();
        let gs = (y * &up).unwrap().sum_all().unwrap().backward().unwrap();
        caramba::kernels::set_fused_training(true);
        gs.get(table.as_tensor()).expect("a gradient").clone()
    };
    let (err, _) = rel_to_max(&grad(true), &grad(false));
    eprintln!("lookup fused vs index_add: dtable {err:.2e}");
    if !(err <= 1e-5) {
        failures.push(format!(
            "lookup: the table gradient differs by {err:.2e} with the switch on"
        ));
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
