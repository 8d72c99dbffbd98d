//! GPU benchmarks (a benchmark, not a test: no assertions on time). Needs `--features cuda` and an
//! NVIDIA GPU; prints why and exits 0 otherwise.
//!
//! `cargo bench --features cuda --bench gpu -- [copy] [kernel] [attention] [decode] [long]` (all by default):
//! - `copy`: device-to-device copy bandwidth (bytes read + written), the ceiling the rest is read against;
//! - `kernel`: fused decode attention vs the candle-ops path over 16 layers' caches at 4K/16K/64K
//!   context, GPU time from CUDA events with the queue kept full (a copy queued first holds the
//!   GPU while the host enqueues), and the bandwidth it reaches on the bytes the cache holds;
//! - `attention`: training attention of one layer, forward and forward + backward, fused
//!   flash-attention kernels vs the composite candle ops, at the SmolLM2-135M shape (bf16, 16 × 512,
//!   9 query / 3 KV heads, head dim 64, causal) and with DBA's head dims (32/32);
//! - `decode`: batch-1 greedy decode tokens/s of a Llama-3.2-1B-shaped bf16 model (seeded random
//!   weights, the real config) after a 128-token prompt, fused kernel on and off, interleaved;
//! - `long`: the same model and its DBA student (presets/llama32_1b_dba.yml, target paper) decoding
//!   after a 16K-token context.
//! One JSON object per measurement on stdout, a table at the end.

#[cfg(feature = "cuda")]
mod imp {
    use std::time::Instant;

    use candle_core::{D, DType, Device, Tensor};
    use caramba::cache::CacheKind;
    use caramba::kernels::{
        DecodeScales, KeySegments, QuantSegment, decode_attention, decode_attention_quantized,
    };
    use caramba::ops::sdpa::{AttendOptions, grouped_attention};

    pub type Res<T> = Result<T, Box<dyn std::error::Error>>;

    const LLAMA_1B: &str = "presets/configs/llama-3.2-1b.json";
    const DBA_PRESET: &str = "presets/llama32_1b_dba.yml";

    /// `rel` under the working directory when it is there (a copy of the tree on a GPU machine,
    /// run from its root), else under the directory this binary was built from.
    fn repo_file(rel: &str) -> String {
        if std::path::Path::new(rel).exists() {
            rel.to_string()
        } else {
            format!("{}/{rel}", env!("CARGO_MANIFEST_DIR"))
        }
    }

    pub fn main() -> Res<()> {
        let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
        let want = |w: &str| args.is_empty() || args.iter().any(|a| a == w || a == "all");
        if !cfg!(feature = "cuda") {
            println!("gpu bench: built without the `cuda` feature; nothing to measure");
            return Ok(());
        }
        let dev = match caramba::device::parse_device("cuda") {
            Ok(d) => d,
            Err(e) => {
                println!("gpu bench: no CUDA device ({e}); nothing to measure");
                return Ok(());
            }
        };
        println!("device: {}", caramba::device::describe(&dev));
        let mut table = Vec::new();
        let copy_gbs = copy_bandwidth(&dev)?;
        table.push(format!("copy bandwidth: {copy_gbs:.0} GB/s (read + write)"));
        if want("kernel") {
            kernels(&dev, copy_gbs, &mut table)?;
        }
        if want("attention") {
            training_attention(&dev, &mut table)?;
        }
        if want("decode") {
            decode_short(&dev, &mut table)?;
        }
        if want("long") {
            decode_long(&dev, &mut table)?;
        }
        println!("\n{}", table.join("\n"));
        Ok(())
    }

    fn sync(dev: &Device) -> Res<()> {
        dev.synchronize()?;
        Ok(())
    }

    /// A queue filler: copies between two preallocated 1 GiB buffers (~0.7 ms each on an H100).
    pub struct Hold {
        src: candle_core::cuda_backend::cudarc::driver::CudaSlice<u8>,
        dst: candle_core::cuda_backend::cudarc::driver::CudaSlice<u8>,
    }

    impl Hold {
        pub fn new(dev: &Device) -> Res<Self> {
            let stream = dev.as_cuda_device()?.cuda_stream();
            Ok(Self {
                src: stream.alloc_zeros::<u8>(1 << 30)?,
                dst: stream.alloc_zeros::<u8>(1 << 30)?,
            })
        }
    }

    /// GPU milliseconds per call of `f`, from CUDA events around `reps` calls queued behind ~6 ms
    /// of copies (no allocation on the way), so that the GPU runs them back to back instead of
    /// waiting for the host.
    fn gpu_ms(dev: &Device, hold: &mut Hold, reps: usize, mut f: impl FnMut() -> Res<()>) -> Res<f64> {
        use candle_core::cuda_backend::cudarc::driver::sys::CUevent_flags;
        f()?;
        sync(dev)?;
        let stream = dev.as_cuda_device()?.cuda_stream();
        for _ in 0..32 {
            stream.memcpy_dtod(&hold.src, &mut hold.dst)?;
        }
        let held = stream.record_event(None)?;
        let t0 = Instant::now();
        let start = stream.record_event(Some(CUevent_flags::CU_EVENT_DEFAULT))?;
        for _ in 0..reps {
            f()?;
        }
        let end = stream.record_event(Some(CUevent_flags::CU_EVENT_DEFAULT))?;
        let host_ms = t0.elapsed().as_secs_f64() * 1e3;
        // The copies must still be running when the host has queued everything, or the events
        // time the host instead of the GPU.
        if held.is_complete() {
            eprintln!(
                "warning: the GPU drained its queue while the host enqueued ({host_ms:.2} ms): host-bound timing"
            );
        }
        end.synchronize()?;
        Ok(start.elapsed_ms(&end)? as f64 / reps as f64)
    }

    /// GPU milliseconds per call of `f` from a CUDA graph of one call, replayed `reps` times
    /// between two events: replays run back to back on the GPU whatever the host's speed. `None`
    /// when `f` cannot be captured (then [`gpu_ms`] is the fallback, and may be host-bound).
    fn graph_ms(dev: &Device, reps: usize, mut f: impl FnMut() -> Res<()>) -> Res<Option<f64>> {
        use candle_core::cuda_backend::cudarc::driver::sys::{
            CUevent_flags, CUgraphInstantiate_flags, CUstreamCaptureMode,
        };
        f()?;
        sync(dev)?;
        let stream = dev.as_cuda_device()?.cuda_stream();
        stream.begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_RELAXED)?;
        let captured = f();
        let graph = stream.end_capture(CUgraphInstantiate_flags(0));
        let graph = match (captured, graph) {
            (Ok(()), Ok(Some(g))) => g,
            (c, g) => {
                eprintln!(
                    "graph capture failed ({:?} / {:?}); timing without a graph",
                    c.err(),
                    g.err()
                );
                // A failed capture leaves a sticky error on some drivers; clear ours.
                let _ = stream.context().check_err();
                return Ok(None);
            }
        };
        graph.upload()?;
        graph.launch()?;
        sync(dev)?;
        let start = stream.record_event(Some(CUevent_flags::CU_EVENT_DEFAULT))?;
        for _ in 0..reps {
            graph.launch()?;
        }
        let end = stream.record_event(Some(CUevent_flags::CU_EVENT_DEFAULT))?;
        end.synchronize()?;
        Ok(Some(start.elapsed_ms(&end)? as f64 / reps as f64))
    }

    /// One layer's training attention (`ops::sdpa::recomputing_attention`), forward alone and
    /// forward + backward of Σ out ⊙ up, with the fused kernels on and off.
    fn training_attention(dev: &Device, table: &mut Vec<String>) -> Res<()> {
        use candle_core::Var;
        use caramba::kernels::set_fused_training;
        use caramba::ops::sdpa::recomputing_attention;
        let (b, nkv, g, t) = (16usize, 3usize, 3usize, 512usize);
        let mut hold = Hold::new(dev)?;
        table.push(format!(
            "\n{:<22} {:>11} {:>11} {:>8} {:>13} {:>13} {:>8}",
            "training attention", "fused fwd", "candle fwd", "speedup", "fused f+b", "candle f+b", "speedup"
        ));
        for (name, dq, dv) in [("smollm2-135m d64", 64usize, 64usize), ("dba d32/32", 32, 32)] {
            let randn = |shape: (usize, usize, usize, usize), std: f32| -> Res<Tensor> {
                Ok(Tensor::randn(0f32, std, shape, dev)?.to_dtype(DType::BF16)?)
            };
            let q = Var::from_tensor(&randn((b, nkv, g * t, dq), (1.0 / dq as f32).sqrt())?)?;
            let k = Var::from_tensor(&randn((b, nkv, t, dq), 1.0)?)?;
            let v = Var::from_tensor(&randn((b, nkv, t, dv), 1.0)?)?;
            let up = randn((b, nkv, g * t, dv), 1.0)?;
            let fwd = || -> Res<Tensor> {
                Ok(recomputing_attention(
                    q.as_tensor(),
                    k.as_tensor(),
                    v.as_tensor(),
                    true,
                    g,
                    t,
                    0,
                )?)
            };
            let mut ms = [[0f64; 2]; 2]; // [fused, candle] × [fwd, fwd+bwd]
            for (i, fused) in [true, false].into_iter().enumerate() {
                set_fused_training(fused);
                ms[i][0] = gpu_ms(dev, &mut hold, 20, || {
                    fwd()?;
                    Ok(())
                })?;
                ms[i][1] = gpu_ms(dev, &mut hold, 10, || {
                    let grads = (fwd()? * &up)?.sum_all()?.backward()?;
                    drop(grads);
                    Ok(())
                })?;
                println!(
                    "{}",
                    serde_json::json!({
                        "bench": "training_attention", "shape": name, "fused": fused,
                        "b": b, "n_kv": nkv, "g": g, "t": t, "dq": dq, "dv": dv,
                        "fwd_us": ms[i][0] * 1e3, "fwd_bwd_us": ms[i][1] * 1e3,
                    })
                );
            }
            set_fused_training(true);
            table.push(format!(
                "{:<22} {:>9.0}µs {:>9.0}µs {:>7.2}× {:>11.0}µs {:>11.0}µs {:>7.2}×",
                name,
                ms[0][0] * 1e3,
                ms[1][0] * 1e3,
                ms[1][0] / ms[0][0],
                ms[0][1] * 1e3,
                ms[1][1] * 1e3,
                ms[1][1] / ms[0][1]
            ));
        }
        Ok(())
    }

    fn median(mut v: Vec<f64>) -> f64 {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    }

    /// cuMemcpyDtoD between two preallocated 2 GiB buffers (no allocation in the timed region).
    fn copy_bandwidth(dev: &Device) -> Res<f64> {
        let cuda = dev.as_cuda_device()?;
        let stream = cuda.cuda_stream();
        let n = 1usize << 31;
        let src = stream.alloc_zeros::<u8>(n)?;
        let mut dst = stream.alloc_zeros::<u8>(n)?;
        let mut hold = Hold::new(dev)?;
        let ms = median(
            (0..5)
                .map(|_| gpu_ms(dev, &mut hold, 4, || Ok(stream.memcpy_dtod(&src, &mut dst)?)))
                .collect::<Res<Vec<_>>>()?,
        );
        let gbs = 2.0 * n as f64 / (ms * 1e-3) / 1e9;
        println!(
            "{}",
            serde_json::json!({"bench": "copy", "bytes": n, "ms": ms, "gb_per_s": gbs})
        );
        Ok(gbs)
    }

    struct Shape {
        name: &'static str,
        n_heads: usize,
        n_kv: usize,
        sem: usize,
        geo: usize,
        dv: usize,
    }

    fn kernels(dev: &Device, copy_gbs: f64, table: &mut Vec<String>) -> Res<()> {
        let shapes = [
            // Llama-3.2-1B's attention and its DBA student from presets/llama32_1b_dba.yml.
            Shape {
                name: "llama-1b gqa",
                n_heads: 32,
                n_kv: 8,
                sem: 0,
                geo: 64,
                dv: 64,
            },
            Shape {
                name: "llama-1b dba",
                n_heads: 32,
                n_kv: 8,
                sem: 16,
                geo: 16,
                dv: 32,
            },
        ];
        let layers = 16;
        let mut hold = Hold::new(dev)?;
        table.push(format!(
            "\n{:<14} {:>6} {:>10} {:>10} {:>7} {:>9} {:>7}",
            "kernel", "ctx", "fused µs", "candle µs", "speedup", "GB/s", "% copy"
        ));
        for s in &shapes {
            for ctx in [4096usize, 16384, 65536] {
                let dk = s.sem + s.geo;
                let q = Tensor::randn(0f32, 1.0, (1, s.n_heads, 1, dk), dev)?.to_dtype(DType::BF16)?;
                let caches: Vec<(Tensor, Tensor)> = (0..layers)
                    .map(|_| -> Res<_> {
                        Ok((
                            Tensor::randn(0f32, 1.0, (1, s.n_kv, ctx, dk), dev)?.to_dtype(DType::BF16)?,
                            Tensor::randn(0f32, 1.0, (1, s.n_kv, ctx, s.dv), dev)?.to_dtype(DType::BF16)?,
                        ))
                    })
                    .collect::<Res<_>>()?;
                let segments = KeySegments {
                    sem_dim: s.sem,
                    geo_dim: s.geo,
                };
                let scales = DecodeScales {
                    sem: if s.sem > 0 {
                        1.0 / (s.sem as f32).sqrt()
                    } else {
                        0.0
                    },
                    geo: 1.0 / (s.geo as f32).sqrt(),
                };
                let fused = || -> Res<()> {
                    for (k, v) in &caches {
                        decode_attention(&q, k, v, segments, scales, None)?
                            .ok_or("the kernel does not apply")?;
                    }
                    Ok(())
                };
                let q_scaled = (q.to_dtype(DType::F32)? * scales.geo as f64)?.to_dtype(DType::BF16)?;
                let candle = || -> Res<()> {
                    for (k, v) in &caches {
                        let opts = AttendOptions {
                            causal: true,
                            train: false,
                            dropout_p: 0.0,
                            rng: None,
                        };
                        grouped_attention(&q_scaled, k, v, None, opts)?;
                    }
                    Ok(())
                };
                // Few repetitions, so that the ~6 ms of copies queued first outlast the host's
                // enqueueing of them all and the events time the GPU alone.
                let reps = 2;
                let mut f_ms = Vec::new();
                let mut c_ms = Vec::new();
                let mut timing = "graph";
                for _ in 0..5 {
                    let f = match graph_ms(dev, 10, fused)? {
                        Some(ms) => ms,
                        None => {
                            timing = "queued";
                            gpu_ms(dev, &mut hold, reps, fused)?
                        }
                    };
                    let c = match graph_ms(dev, 10, candle)? {
                        Some(ms) => ms,
                        None => {
                            timing = "queued";
                            gpu_ms(dev, &mut hold, reps, candle)?
                        }
                    };
                    f_ms.push(f / layers as f64);
                    c_ms.push(c / layers as f64);
                }
                let (f, c) = (median(f_ms), median(c_ms));
                let bytes = ctx * s.n_kv * (dk + s.dv) * 2;
                let gbs = bytes as f64 / (f * 1e-3) / 1e9;
                println!(
                    "{}",
                    serde_json::json!({"bench": "decode_kernel", "shape": s.name, "ctx": ctx, "dtype": "bf16",
                        "fused_us": f * 1e3, "candle_us": c * 1e3, "speedup": c / f, "cache_bytes": bytes,
                        "gb_per_s": gbs, "of_copy": gbs / copy_gbs, "timing": timing})
                );
                table.push(format!(
                    "{:<14} {:>6} {:>10.1} {:>10.1} {:>6.1}× {:>9.0} {:>6.0}% {timing}",
                    s.name,
                    ctx,
                    f * 1e3,
                    c * 1e3,
                    c / f,
                    gbs,
                    100.0 * gbs / copy_gbs
                ));
            }
        }
        quantized_kernels(dev, copy_gbs, &mut hold, table)
    }

    /// DBA with 32-wide segments (quantized blocks do not straddle heads) on each storage mix.
    fn quantized_kernels(dev: &Device, copy_gbs: f64, hold: &mut Hold, table: &mut Vec<String>) -> Res<()> {
        let (nh, nkv, sem, geo, dv, layers) = (32usize, 8usize, 32usize, 32usize, 64usize, 16usize);
        let mixes = [
            ("q8_0", CacheKind::Q8_0, CacheKind::Q8_0, CacheKind::Q8_0),
            ("q4_0", CacheKind::Q4_0, CacheKind::Q4_0, CacheKind::Q4_0),
            ("q4/q8/q4", CacheKind::Q4_0, CacheKind::Q8_0, CacheKind::Q4_0),
        ];
        for ctx in [16384usize, 65536] {
            for (name, ks, kg, kv) in mixes {
                let seg = |kind: CacheKind, dim: usize| -> Res<QuantSegment> {
                    let vals: Vec<f32> =
                        Tensor::randn(0f32, 1.0, nkv * ctx * dim, &Device::Cpu)?.to_vec1()?;
                    let bytes = caramba::kernels::quantize_rows(&vals, dim, kind)?;
                    let n = bytes.len();
                    Ok(QuantSegment {
                        data: Tensor::from_vec(bytes, n, dev)?,
                        kind,
                        dim,
                        head_stride: ctx * kind.row_bytes(dim),
                        row_stride: kind.row_bytes(dim),
                    })
                };
                let first = (seg(ks, sem)?, seg(kg, geo)?, seg(kv, dv)?);
                // One quantized cache reused for all 16 "layers" would sit in L2 at 16K: make copies.
                let caches: Vec<(QuantSegment, QuantSegment, QuantSegment)> = (0..layers)
                    .map(|_| -> Res<_> {
                        let c = |s: &QuantSegment| -> Res<QuantSegment> {
                            Ok(QuantSegment {
                                data: s.data.copy()?,
                                ..s.clone()
                            })
                        };
                        Ok((c(&first.0)?, c(&first.1)?, c(&first.2)?))
                    })
                    .collect::<Res<_>>()?;
                let q = Tensor::randn(0f32, 1.0, (1, nh, 1, sem + geo), dev)?.to_dtype(DType::BF16)?;
                let scales = DecodeScales {
                    sem: 1.0 / (sem as f32).sqrt(),
                    geo: 1.0 / (geo as f32).sqrt(),
                };
                let run = || -> Res<()> {
                    for (a, b, c) in &caches {
                        decode_attention_quantized(&q, Some(a), b, c, nkv, ctx, scales, None)?;
                    }
                    Ok(())
                };
                let reps = (8 * 65536 / ctx).max(2);
                let ms = median(
                    (0..3)
                        .map(|_| gpu_ms(dev, hold, reps, run))
                        .collect::<Res<Vec<_>>>()?,
                ) / layers as f64;
                let bytes = nkv * ctx * (ks.row_bytes(sem) + kg.row_bytes(geo) + kv.row_bytes(dv));
                let gbs = bytes as f64 / (ms * 1e-3) / 1e9;
                println!(
                    "{}",
                    serde_json::json!({"bench": "decode_kernel_quantized", "mix": name, "ctx": ctx, "us": ms * 1e3,
                        "cache_bytes": bytes, "gb_per_s": gbs, "of_copy": gbs / copy_gbs})
                );
                table.push(format!(
                    "{:<14} {:>6} {:>10.1} {:>10} {:>7} {:>9.0} {:>6.0}%",
                    format!("dba32 {name}"),
                    ctx,
                    ms * 1e3,
                    "-",
                    "-",
                    gbs,
                    100.0 * gbs / copy_gbs
                ));
            }
        }
        Ok(())
    }

    fn greedy_tokens_per_s(
        g: &mut caramba::infer::Generator,
        first: u32,
        n: usize,
        dev: &Device,
    ) -> Res<f64> {
        let mut tok = first;
        for _ in 0..4 {
            tok = next(g.decode_step(&[tok])?)?;
        }
        sync(dev)?;
        let t0 = Instant::now();
        for _ in 0..n {
            tok = next(g.decode_step(&[tok])?)?;
        }
        Ok(n as f64 / t0.elapsed().as_secs_f64())
    }

    fn next(logits: Tensor) -> Res<u32> {
        Ok(logits.flatten_all()?.argmax(D::Minus1)?.to_scalar::<u32>()?)
    }

    fn prompt(n: usize, vocab: usize) -> Vec<u32> {
        (0..n).map(|i| ((i * 7919 + 13) % vocab) as u32).collect()
    }

    fn decode_short(dev: &Device, table: &mut Vec<String>) -> Res<()> {
        use caramba::loader::{LoadOptions, load};
        let t0 = Instant::now();
        let m = load(
            &format!("random:{}", repo_file(LLAMA_1B)),
            &LoadOptions {
                device: dev.clone(),
                dtype: DType::BF16,
                ..LoadOptions::default()
            },
        )?;
        sync(dev)?;
        println!(
            "built llama-3.2-1b-shaped model ({:.2} GB bf16) in {:.1}s",
            m.weight_bytes as f64 / 1e9,
            t0.elapsed().as_secs_f64()
        );
        let (prompt_len, n_new) = (128usize, 128usize);
        let mut rows: Vec<(bool, f64)> = Vec::new();
        for round in 0..3 {
            for fused in [true, false] {
                caramba::kernels::set_fused_decode(fused);
                let mut g = caramba::infer::Generator::new(&m.model, m.max_seq_len, DType::BF16, dev);
                let first = next(g.prefill(&prompt(prompt_len, 128_256))?)?;
                let tps = greedy_tokens_per_s(&mut g, first, n_new, dev)?;
                println!(
                    "{}",
                    serde_json::json!({"bench": "decode", "model": "llama-3.2-1b (random bf16)", "prompt": prompt_len,
                        "gen": n_new, "fused": fused, "round": round, "tokens_per_s": tps})
                );
                rows.push((fused, tps));
            }
        }
        caramba::kernels::set_fused_decode(true);
        let med = |f: bool| median(rows.iter().filter(|r| r.0 == f).map(|r| r.1).collect());
        let weights = m.weight_bytes as f64;
        table.push(format!(
            "\nllama-1b bf16 decode (prompt {prompt_len}, {n_new} new): fused {:.0} tok/s, candle-ops {:.0} tok/s; weights {:.2} GB/token",
            med(true),
            med(false),
            weights / 1e9
        ));
        Ok(())
    }

    fn decode_long(dev: &Device, table: &mut Vec<String>) -> Res<()> {
        use caramba::loader::{LoadOptions, load};
        let ctx = 16_384usize;
        let teacher = load(
            &format!("random:{}", repo_file(LLAMA_1B)),
            &LoadOptions {
                device: dev.clone(),
                dtype: DType::BF16,
                ..LoadOptions::default()
            },
        )?;
        let compiled = caramba::compiler::compile(std::path::Path::new(&repo_file(DBA_PRESET)))?;
        let spec = compiled.run_target(Some("paper"))?.model.clone();
        let vars = caramba::model::SeededVarMap::new(1);
        let student = caramba::model::LanguageModel::build(&spec, vars.var_builder(DType::BF16, dev))?;
        let mut out = Vec::new();
        for (name, model) in [("teacher", &teacher.model), ("dba student", &student)] {
            let mut g = caramba::infer::Generator::new(model, 131_072, DType::BF16, dev);
            let ids = prompt(ctx, 128_256);
            let t0 = Instant::now();
            let mut logits = None;
            for chunk in ids.chunks(512) {
                logits = Some(g.prefill(chunk)?);
            }
            let first = next(logits.ok_or("empty prompt")?)?;
            sync(dev)?;
            let prefill_s = t0.elapsed().as_secs_f64();
            let kv_bytes = g.cache().bytes();
            let tps = median(
                (0..3)
                    .map(|_| greedy_tokens_per_s(&mut g, first, 32, dev))
                    .collect::<Res<Vec<_>>>()?,
            );
            println!(
                "{}",
                serde_json::json!({"bench": "decode_long", "model": name, "context": ctx, "prefill_s": prefill_s,
                    "kv_bytes": kv_bytes, "tokens_per_s": tps})
            );
            out.push((name, tps, kv_bytes));
        }
        table.push(format!(
            "\n16K context decode: teacher {:.0} tok/s (KV {:.0} MB), DBA student {:.0} tok/s (KV {:.0} MB): {:.2}× faster, KV {:.2}× smaller",
            out[0].1,
            out[0].2 as f64 / 1e6,
            out[1].1,
            out[1].2 as f64 / 1e6,
            out[1].1 / out[0].1,
            out[0].2 as f64 / out[1].2 as f64
        ));
        Ok(())
    }
}

#[cfg(feature = "cuda")]
fn main() -> imp::Res<()> {
    imp::main()
}

#[cfg(not(feature = "cuda"))]
fn main() {
    println!("gpu bench: built without the `cuda` feature; nothing to measure");
}
