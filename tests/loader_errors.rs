//! Bad inputs give clear errors that name the file (and the tensor), never a panic; and a caramba
//! checkpoint or run directory loads to the same model as the HF directory it was made from.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use caramba::loader::{LoadError, LoadOptions, load};

fn fixture() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden/tiny_llama")
}

/// A copy of the fixture directory that a test may damage.
fn copy_fixture() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for f in [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "generation_config.json",
        "tiny_llama.q8_0.gguf",
    ] {
        std::fs::copy(fixture().join(f), dir.path().join(f)).unwrap();
    }
    dir
}

fn load_err(path: &Path) -> LoadError {
    match load(path.to_str().unwrap(), &LoadOptions::default()) {
        Ok(_) => panic!("{} loaded but should not", path.display()),
        Err(e) => e,
    }
}

fn edit_config(dir: &Path, f: impl FnOnce(&mut serde_json::Value)) {
    let path = dir.join("config.json");
    let mut v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(path, v.to_string()).unwrap();
}

fn rewrite_weights(dir: &Path, f: impl FnOnce(&mut HashMap<String, Tensor>)) {
    let path = dir.join("model.safetensors");
    let mut ts = candle_core::safetensors::load(&path, &Device::Cpu).unwrap();
    f(&mut ts);
    candle_core::safetensors::save(&ts, &path).unwrap();
}

#[test]
fn a_missing_path_is_not_found() {
    let err = load_err(Path::new("/definitely/not/here.gguf"));
    assert!(matches!(err, LoadError::NotFound { .. }), "{err}");
    assert!(err.to_string().contains("/definitely/not/here.gguf"));
}

#[test]
fn unsupported_architecture_and_rope_type() {
    let dir = copy_fixture();
    edit_config(dir.path(), |v| {
        v["architectures"] = serde_json::json!(["GPT2LMHeadModel"])
    });
    let err = load_err(dir.path());
    assert!(
        err.to_string().contains("GPT2LMHeadModel") && err.to_string().contains("config.json"),
        "{err}"
    );

    let dir = copy_fixture();
    edit_config(dir.path(), |v| {
        v["rope_parameters"] = serde_json::json!({"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0});
    });
    let err = load_err(dir.path());
    assert!(
        matches!(&err, LoadError::UnsupportedRope { found, .. } if found == "yarn"),
        "{err}"
    );
}

#[test]
fn a_tensor_of_the_wrong_shape_is_named() {
    let dir = copy_fixture();
    rewrite_weights(dir.path(), |ts| {
        let bad = Tensor::randn(0f32, 1.0, (63, 64), &Device::Cpu).unwrap();
        ts.insert("model.layers.1.self_attn.q_proj.weight".into(), bad);
    });
    let err = load_err(dir.path());
    let msg = err.to_string();
    assert!(matches!(err, LoadError::ShapeMismatch { .. }), "{msg}");
    assert!(
        msg.contains("model.layers.1.self_attn.q_proj.weight") && msg.contains("model.safetensors"),
        "{msg}"
    );
    assert!(msg.contains("[63, 64]") && msg.contains("[64, 64]"), "{msg}");
}

#[test]
fn a_missing_tensor_is_named_with_its_target() {
    let dir = copy_fixture();
    rewrite_weights(dir.path(), |ts| {
        ts.remove("model.layers.0.mlp.up_proj.weight");
    });
    let msg = load_err(dir.path()).to_string();
    assert!(msg.contains("model.layers.0.mlp.up_proj.weight"), "{msg}");
    assert!(
        msg.contains("topology.layers.0.layers.1.layers.1.up_proj.weight"),
        "{msg}"
    );
}

#[test]
fn truncated_safetensors_and_gguf_files() {
    let dir = copy_fixture();
    let st = dir.path().join("model.safetensors");
    let bytes = std::fs::read(&st).unwrap();
    std::fs::write(&st, &bytes[..bytes.len() / 2]).unwrap();
    let err = load_err(dir.path());
    assert!(
        matches!(
            err,
            LoadError::Corrupt {
                format: "safetensors",
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("model.safetensors"));

    let gguf = dir.path().join("tiny_llama.q8_0.gguf");
    let bytes = std::fs::read(&gguf).unwrap();
    // Cut inside the tensor data: the directory parses, a tensor runs past the end.
    std::fs::write(&gguf, &bytes[..bytes.len() - 5000]).unwrap();
    let msg = load_err(&gguf).to_string();
    assert!(
        msg.contains("tiny_llama.q8_0.gguf") && msg.contains("truncated"),
        "{msg}"
    );
    assert!(
        msg.contains("blk.") || msg.contains("token_embd") || msg.contains("output_norm"),
        "{msg}"
    );
    // Cut inside the metadata.
    std::fs::write(&gguf, &bytes[..200]).unwrap();
    let err = load_err(&gguf);
    assert!(matches!(err, LoadError::Corrupt { format: "GGUF", .. }), "{err}");
}

#[test]
fn a_directory_that_is_no_model_says_what_it_expected() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.txt"), "hello").unwrap();
    let err = load_err(dir.path());
    assert!(matches!(err, LoadError::UnknownSource { .. }), "{err}");
}

/// A caramba checkpoint (`model_spec.json` + `model.safetensors` named by topology path, as the
/// runner writes) loads to the same model as the HF directory it was made from; a run directory
/// resolves to its latest step.
#[test]
fn caramba_checkpoints_and_run_directories_load() {
    use caramba::loader::{LlamaConfig, names::llama_params};
    use caramba::model::ForwardCtx;

    let cfg = LlamaConfig::from_hf_file(&fixture().join("config.json")).unwrap();
    let hf = candle_core::safetensors::load(fixture().join("model.safetensors"), &Device::Cpu).unwrap();
    let run = tempfile::tempdir().unwrap();
    let step = run.path().join("checkpoints/step_20");
    std::fs::create_dir_all(&step).unwrap();
    let renamed: HashMap<String, Tensor> = llama_params(&cfg)
        .into_iter()
        .map(|p| (p.path.clone(), hf[&p.hf].clone()))
        .collect();
    candle_core::safetensors::save(&renamed, step.join("model.safetensors")).unwrap();
    std::fs::write(
        step.join("model_spec.json"),
        serde_json::to_string(&cfg.model_spec()).unwrap(),
    )
    .unwrap();
    std::fs::copy(
        fixture().join("tokenizer.json"),
        run.path().join("tokenizer.json"),
    )
    .unwrap();

    let from_hf = load(fixture().to_str().unwrap(), &LoadOptions::default()).unwrap();
    let from_run = load(run.path().to_str().unwrap(), &LoadOptions::default()).unwrap();
    assert_eq!(from_run.path, step);
    assert!(
        from_run.tokenizer.is_some(),
        "the run directory's tokenizer.json is found"
    );
    let ids = Tensor::new(&[[5u32, 17, 42, 9, 100, 3]], &Device::Cpu).unwrap();
    let a = from_hf.model.forward(&ids, &mut ForwardCtx::eval()).unwrap();
    let b = from_run.model.forward(&ids, &mut ForwardCtx::eval()).unwrap();
    let diff = (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert_eq!(diff, 0.0);

    // A checkpoint missing a tensor names it.
    let mut partial = renamed.clone();
    partial.remove("topology.layers.1.layers.0.layers.1.v_proj.weight");
    candle_core::safetensors::save(&partial, step.join("model.safetensors")).unwrap();
    let msg = load_err(&step).to_string();
    assert!(
        msg.contains("v_proj") && msg.contains("model.safetensors"),
        "{msg}"
    );
}

/// Where each tensor's directory entry sits in a GGUF file (v2/v3): name, the byte position of
/// its type (u32) and of its data offset (u64), and the offset.
struct GgufEntry {
    name: String,
    dims: Vec<u64>,
    type_at: usize,
    offset_at: usize,
    offset: u64,
}

fn gguf_entries(b: &[u8]) -> Vec<GgufEntry> {
    let u32_at = |p: usize| u32::from_le_bytes(b[p..p + 4].try_into().unwrap());
    let u64_at = |p: usize| u64::from_le_bytes(b[p..p + 8].try_into().unwrap());
    fn skip_value(b: &[u8], p: &mut usize, t: u32) {
        let u32_at = |p: usize| u32::from_le_bytes(b[p..p + 4].try_into().unwrap());
        let u64_at = |p: usize| u64::from_le_bytes(b[p..p + 8].try_into().unwrap());
        match t {
            0 | 1 | 7 => *p += 1,
            2 | 3 => *p += 2,
            4..=6 => *p += 4,
            10..=12 => *p += 8,
            8 => *p += 8 + u64_at(*p) as usize,
            9 => {
                let (et, n) = (u32_at(*p), u64_at(*p + 4));
                *p += 12;
                for _ in 0..n {
                    skip_value(b, p, et);
                }
            }
            other => panic!("GGUF value type {other}"),
        }
    }
    assert_eq!(&b[..4], b"GGUF");
    let (n_tensors, n_kv) = (u64_at(8), u64_at(16));
    let mut p = 24;
    for _ in 0..n_kv {
        p += 8 + u64_at(p) as usize;
        let t = u32_at(p);
        p += 4;
        skip_value(b, &mut p, t);
    }
    (0..n_tensors)
        .map(|_| {
            let len = u64_at(p) as usize;
            let name = String::from_utf8(b[p + 8..p + 8 + len].to_vec()).unwrap();
            p += 8 + len;
            let n_dims = u32_at(p) as usize;
            let dims = (0..n_dims).map(|i| u64_at(p + 4 + 8 * i)).collect();
            p += 4 + 8 * n_dims;
            let e = GgufEntry {
                name,
                dims,
                type_at: p,
                offset_at: p + 4,
                offset: u64_at(p + 4),
            };
            p += 12;
            e
        })
        .collect()
}

/// The fixture GGUF with `damage` applied, written into a fresh directory; the load error.
fn damaged_gguf(damage: impl FnOnce(&mut Vec<u8>, &[GgufEntry])) -> LoadError {
    let mut bytes = std::fs::read(fixture().join("tiny_llama.q8_0.gguf")).unwrap();
    let entries = gguf_entries(&bytes);
    damage(&mut bytes, &entries);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.gguf");
    std::fs::write(&path, &bytes).unwrap();
    load_err(&path)
}

fn set_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// A random matrix entry (2-D, Q8_0) of the fixture.
fn some_matrix(entries: &[GgufEntry]) -> &GgufEntry {
    use rand::seq::IndexedRandom;
    let matrices: Vec<&GgufEntry> = entries.iter().filter(|e| e.dims.len() == 2).collect();
    matrices.choose(&mut rand::rng()).unwrap()
}

#[track_caller]
fn assert_names(err: &LoadError, tensor: &str, needle: &str) {
    let msg = err.to_string();
    assert!(
        msg.contains("broken.gguf") && msg.contains(tensor) && msg.contains(needle),
        "expected `{tensor}` and `{needle}` in: {msg}"
    );
}

#[test]
fn gguf_offsets_that_wrap_or_run_past_the_end_are_refused() {
    let mut name = String::new();
    let err = damaged_gguf(|b, es| {
        let e = some_matrix(es);
        name = e.name.clone();
        // Aligned, and so large that offset + size wraps around 2^64.
        set_u64(b, e.offset_at, u64::MAX - 31);
    });
    assert_names(&err, &name, "end past");
    let err = damaged_gguf(|b, es| {
        let e = some_matrix(es);
        name = e.name.clone();
        let past = (b.len() as u64).next_multiple_of(32);
        set_u64(b, e.offset_at, past);
    });
    assert_names(&err, &name, "end past");
}

#[test]
fn gguf_misaligned_and_aliased_offsets_are_refused() {
    let mut name = String::new();
    let err = damaged_gguf(|b, es| {
        let e = some_matrix(es);
        name = e.name.clone();
        set_u64(b, e.offset_at, e.offset + 4);
    });
    assert_names(&err, &name, "not a multiple of the alignment");
    // Two tensors share one range (each then decodes the other's numbers).
    let err = damaged_gguf(|b, es| {
        let mut sorted: Vec<&GgufEntry> = es.iter().collect();
        sorted.sort_by_key(|e| e.offset);
        set_u64(b, sorted[2].offset_at, sorted[1].offset);
    });
    assert!(err.to_string().contains("overlaps"), "{err}");
}

#[test]
fn a_gguf_tensor_whose_type_changed_is_refused() {
    let err = damaged_gguf(|b, es| {
        let e = some_matrix(es);
        // Q8_0 (8) → Q4_0 (2): same shape, fewer bytes, so unused bytes follow it.
        b[e.type_at..e.type_at + 4].copy_from_slice(&2u32.to_le_bytes());
    });
    let msg = err.to_string();
    assert!(
        msg.contains("broken.gguf") && msg.contains("changed tensor type"),
        "{msg}"
    );
}

#[test]
fn a_byte_swapped_gguf_magic_is_refused() {
    let err = damaged_gguf(|b, _| b[..4].copy_from_slice(b"FUGG"));
    assert!(matches!(err, LoadError::Corrupt { format: "GGUF", .. }), "{err}");
    assert!(err.to_string().contains("byte-swapped"), "{err}");
}

#[test]
fn gguf_sizes_that_cannot_be_allocated_are_refused() {
    // A block_count of 2^32 - 1 would make the loader list four billion tensors.
    let mut bytes = std::fs::read(fixture().join("tiny_llama.q8_0.gguf")).unwrap();
    let key = b"llama.block_count";
    let at = bytes.windows(key.len()).position(|w| w == key).unwrap() + key.len();
    assert_eq!(
        u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()),
        4,
        "a u32 value (type 4)"
    );
    assert_eq!(
        u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap()),
        2,
        "two layers"
    );
    bytes[at + 4..at + 8].copy_from_slice(&u32::MAX.to_le_bytes());
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.gguf");
    std::fs::write(&path, &bytes).unwrap();
    let msg = load_err(&path).to_string();
    assert!(
        msg.contains("broken.gguf") && msg.contains("num_hidden_layers 4294967295"),
        "{msg}"
    );
}

#[test]
fn hf_configs_with_bad_eps_theta_or_sizes_are_refused() {
    let cases: [(&str, serde_json::Value, &str); 6] = [
        ("rms_norm_eps", serde_json::json!(-1.0), "rms_norm_eps"),
        ("rms_norm_eps", serde_json::json!(0.0), "rms_norm_eps"),
        ("rope_parameters.rope_theta", serde_json::json!(0.0), "rope_theta"),
        (
            "rope_parameters.rope_theta",
            serde_json::json!(-10000.0),
            "rope_theta",
        ),
        (
            "num_hidden_layers",
            serde_json::json!(1_000_000_000u64),
            "num_hidden_layers",
        ),
        ("vocab_size", serde_json::json!(1u64 << 30), "vocab_size"),
    ];
    for (key, value, needle) in cases {
        let dir = copy_fixture();
        edit_config(dir.path(), |v| match key.split_once('.') {
            Some((outer, inner)) => v[outer][inner] = value.clone(),
            None => v[key] = value.clone(),
        });
        let err = load_err(dir.path());
        let msg = err.to_string();
        assert!(matches!(err, LoadError::Config { .. }), "{key}={value}: {msg}");
        assert!(
            msg.contains("config.json") && msg.contains(needle),
            "{key}={value}: {msg}"
        );
    }
}

/// A safetensors file truncated after it was opened: an error (or the data read at open), never
/// SIGBUS from a memory map whose pages vanished.
#[test]
fn a_safetensors_file_truncated_while_loading_does_not_crash() {
    use caramba::loader::hf_dir::SafetensorsFiles;
    let dir = copy_fixture();
    let st = dir.path().join("model.safetensors");
    let files = SafetensorsFiles::open(std::slice::from_ref(&st)).unwrap();
    let names: Vec<String> = files.names().cloned().collect();
    let len = std::fs::metadata(&st).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&st)
        .unwrap()
        .set_len(len / 3)
        .unwrap();
    for name in names {
        // why: with a memory map, touching a page past the new end kills the test with SIGBUS.
        if let Err(e) = files.load(&name, candle_core::DType::F32, &Device::Cpu) {
            assert!(e.to_string().contains("model.safetensors"), "{e}");
        }
    }
}

/// A model whose weights hold a NaN gives an error for its perplexity, not a NaN "result".
#[test]
fn a_nan_perplexity_is_an_error() {
    let dir = copy_fixture();
    rewrite_weights(dir.path(), |ts| {
        let w = &ts["model.norm.weight"];
        let nan = Tensor::full(f32::NAN, w.shape(), &Device::Cpu).unwrap();
        ts.insert("model.norm.weight".into(), nan);
    });
    let loaded = load(dir.path().to_str().unwrap(), &LoadOptions::default()).unwrap();
    let tokens: Vec<u32> = (0..32).map(|_| rand::random_range(0..200)).collect();
    let err = caramba::infer::perplexity::perplexity(&loaded.model, &tokens, 16, None, &Device::Cpu)
        .expect_err("NaN weights");
    assert!(err.to_string().contains("not finite"), "{err}");
}

/// f16/bf16 with a GGUF model is refused when loading, not in the middle of the first forward.
#[test]
fn a_gguf_model_at_half_precision_is_refused_up_front() {
    for dtype in [candle_core::DType::F16, candle_core::DType::BF16] {
        let path = fixture().join("tiny_llama.q8_0.gguf");
        let opts = LoadOptions {
            dtype,
            ..LoadOptions::default()
        };
        let err = match load(path.to_str().unwrap(), &opts) {
            Ok(_) => panic!("{dtype:?} loaded"),
            Err(e) => e,
        };
        assert!(matches!(err, LoadError::UnsupportedDtype { .. }), "{err}");
        assert!(err.to_string().contains("tiny_llama.q8_0.gguf"), "{err}");
    }
}
