//! `type: SSMLayer` from a manifest: it compiles and prints, a hybrid model (attention + SSM)
//! decodes through its cache exactly as its full forward, a Mamba stack trains on CPU (loss
//! falls), and bad sizes are located manifest errors with a hint.

mod train_support;

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use caramba::compiler::{compile_str, render_plan};
use caramba::manifest::{Format, Problem};
use caramba::model::{ForwardCtx, KvCache, LanguageModel, SeededVarMap};
use caramba::train::{self, TrainOptions};
use train_support::{english_dataset, tiny_train_spec};

const SSM: &str = "\
version: 2
name: ssm
model:
  type: TransformerModel
  tied_embeddings: true
  embedder: {type: token, vocab_size: 256, d_model: 32}
  topology:
    type: StackedTopology
    layers:
      - type: NestedTopology
        repeat: 2
        layers:
          - type: ResidualTopology
            layers:
              - {type: RMSNormLayer, d_model: 32}
              - {type: AttentionLayer, d_model: 32, n_heads: 4}
          - type: ResidualTopology
            layers:
              - {type: RMSNormLayer, d_model: 32}
              - {type: mamba, d_model: 32, d_state: 8, d_conv: 4, expand: 2, dt_min: 0.001, dt_max: 0.1}
      - {type: RMSNormLayer, d_model: 32}
targets:
  - name: quick
    data: {path: data/t.npy, block_size: 32}
    runs:
      - id: train
        steps: 60
";

#[test]
fn a_hybrid_model_compiles_prints_and_decodes_as_its_full_forward() -> candle_core::Result<()> {
    let c = compile_str(Path::new("ssm.yml"), SSM, Format::Yaml).expect("valid manifest");
    let plan = render_plan(&c);
    assert!(
        plan.contains("layer=SSMLayer path=model.topology.layers[0].layers[1].layers[1] d_model=32 d_state=8 d_conv=4 expand=2 dt_rank=2 d_inner=64"),
        "{plan}"
    );
    // E = 64, N = 8, R = 2: 2Ed + E·4 + E + E(R + 2N) + RE + E + EN + E + Ed.
    let ssm = 2 * 64 * 32 + 64 * 4 + 64 + 64 * 18 + 2 * 64 + 64 + 64 * 8 + 64 + 64 * 32;
    let attn = 4 * 32 * 32;
    assert_eq!(
        c.plan.targets[0].stats.params,
        (2 * (attn + ssm) + 5 * 32 + 256 * 32) as u64
    );

    let vars = SeededVarMap::new(7);
    let model = LanguageModel::build(
        &c.plan.targets[0].model,
        vars.var_builder(DType::F32, &Device::Cpu),
    )?;
    assert_eq!(model.n_slots(), 4, "two attention and two recurrent slots");
    let ids = Tensor::new(&[[3u32, 100, 7, 42, 9, 250, 1, 77, 5, 6]], &Device::Cpu)?;
    let full = model.forward(&ids, &mut ForwardCtx::eval())?;
    let mut cache = KvCache::new(model.n_slots(), DType::F32);
    let mut steps = vec![model.forward(&ids.narrow(1, 0, 3)?, &mut ForwardCtx::cached(&mut cache, 0))?];
    for i in 3..10 {
        steps.push(model.forward(&ids.narrow(1, i, 1)?, &mut ForwardCtx::cached(&mut cache, i))?);
    }
    let stepped = Tensor::cat(&steps, 1)?;
    let d = (full - stepped)?
        .abs()?
        .flatten_all()?
        .max(0)?
        .to_scalar::<f32>()?;
    assert!(d < 1e-4, "cached logits differ by {d}");
    Ok(())
}

#[test]
fn a_mamba_stack_trains_on_cpu() {
    let yaml = SSM.replace(
        "              - {type: AttentionLayer, d_model: 32, n_heads: 4}",
        "              - {type: ssm, d_model: 32, d_state: 8}",
    );
    let c = compile_str(Path::new("ssm.yml"), &yaml, Format::Yaml).expect("valid manifest");
    let model = c.plan.targets[0].model.clone();
    let dir = tempfile::tempdir().expect("tempdir");
    let data = english_dataset(dir.path(), 32, 0.0);
    let spec = tiny_train_spec();
    let run_dir = dir.path().join("run");
    let opts = TrainOptions::new(&model, &spec, 60, 3, &run_dir);
    let summary = train::run(&model, &spec, &data, opts).expect("train");
    let first = train::read_metrics(&run_dir.join("metrics.jsonl"))
        .expect("metrics")
        .into_iter()
        .find_map(|l| match l {
            train::MetricLine::Train(t) => Some(t.loss),
            _ => None,
        })
        .expect("a train line");
    assert!(
        summary.final_loss < 0.8 * first && summary.final_loss.is_finite(),
        "loss {first} -> {}",
        summary.final_loss
    );
}

fn problems(yaml: &str) -> Vec<Problem> {
    match compile_str(Path::new("t.yml"), yaml, Format::Yaml) {
        Ok(_) => panic!("expected an error for:\n{yaml}"),
        Err(e) => e.problems().to_vec(),
    }
}

/// The problem at `field` of the SSM layer with `needle` in its message, at line 20 (the layer's
/// line), column `col`, with a help line.
#[track_caller]
fn expect_at(from: &str, to: &str, field: &str, needle: &str, col: usize) {
    let yaml = SSM.replacen(from, to, 1);
    let path = format!("model.topology.layers[0].layers[1].layers[1].{field}");
    let ps = problems(&yaml);
    let p = ps.iter().find(|p| p.path == path).unwrap_or_else(|| {
        panic!(
            "no problem at `{path}`; got {:#?}",
            ps.iter().map(Problem::headline).collect::<Vec<_>>()
        )
    });
    assert!(p.message.contains(needle), "{}", p.message);
    assert_eq!((p.line, p.column), (Some(20), Some(col)), "{}", p.headline());
    assert!(p.help.is_some(), "{}", p.headline());
}

#[test]
fn d_state_zero_is_located() {
    expect_at("d_state: 8", "d_state: 0", "d_state", "must be in 1..=", 44);
}

#[test]
fn dt_max_below_dt_min_is_located() {
    expect_at(
        "dt_max: 0.1",
        "dt_max: 0.0001",
        "dt_max",
        "larger than dt_min",
        93,
    );
}
