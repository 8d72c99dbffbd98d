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
