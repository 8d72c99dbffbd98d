//! The upcycle through the binary on a tiny random Llama-shaped teacher (a caramba checkpoint):
//! a blockwise phase killed with SIGKILL after its first checkpoint resumes from it and ends
//! bit-identical to an uninterrupted run; blockwise on the teacher's hidden states; a finished run reruns as a no-op; the global phase with
//! `distill_loss: kl` runs; `params: attention` leaves every other weight bit-identical and keeps
//! no optimizer state for it.

mod train_support;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use candle_core::{DType, Device, Tensor};
use caramba::model::init::is_buffer;
use caramba::model::{LanguageModel, SeededVarMap};
use caramba::train::{MetricLine, read_metrics};
use train_support::{english_corpus, tiny_model};

const LAYERS: usize = 2;
const STEPS: usize = 40;

/// A random teacher (d 32, 4 heads, 2 layers, bytes vocabulary) saved as a caramba checkpoint.
fn write_teacher(dir: &Path) -> PathBuf {
    let spec = tiny_model(256, 32, LAYERS, 4, 0.0);
    let vars = SeededVarMap::new(7);
    LanguageModel::build(&spec, vars.var_builder(DType::F32, &Device::Cpu)).expect("teacher builds");
    let out = dir.join("teacher");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::write(out.join("model_spec.json"), serde_json::to_string(&spec).unwrap()).unwrap();
    let tensors: HashMap<String, Tensor> = vars
        .named_vars()
        .into_iter()
        .map(|(n, v)| (n, v.as_tensor().clone()))
        .collect();
    candle_core::safetensors::save(&tensors, out.join("model.safetensors")).unwrap();
    out
}

fn manifest(dir: &Path, teacher: &Path, corpus: &Path) -> PathBuf {
    let text = format!(
        r#"
version: 2
name: tiny_upcycle
vars:
  student:
    type: TransformerModel
    tied_embeddings: true
    embedder: {{type: token, vocab_size: 256, d_model: 32}}
    topology:
      type: StackedTopology
      layers:
        - type: NestedTopology
          repeat: {LAYERS}
          layers:
            - type: ResidualTopology
              layers:
                - {{type: RMSNormLayer, d_model: 32}}
                - {{type: AttentionLayer, mode: decoupled, d_model: 32, n_heads: 4, sem_dim: 8, geo_dim: 8, v_dim: 16, rope_base: 10000.0}}
            - type: ResidualTopology
              layers:
                - {{type: RMSNormLayer, d_model: 32}}
                - {{type: SwiGLULayer, d_model: 32, d_ff: 85}}
        - {{type: RMSNormLayer, d_model: 32}}
  data:
    path: "{corpus}"
    block_size: 32
    tokenizer: bytes
defaults:
  runtime: {{seed: 5, device: cpu}}
targets:
  - name: chain
    trainer: upcycle
    teacher: "{teacher}"
    model: "${{student}}"
    data: "${{data}}"
    upcycle:
      calibration_batches: 1
      teacher_batches: 3
      verify_batches: 1
      latency_prompt_lens: []
      global: {{distill_loss: kl, temperature: 2.0, ce_weight: 0.5}}
    runs:
      - id: blockwise
        phase: blockwise
        steps: {STEPS}
        train: {{batch_size: 2, lr: 1.0e-3, schedule: cosine, warmup_steps: 3, weight_decay: 0.0, save_every: 5, keep_checkpoints: 2}}
      - id: finetune
        phase: global
        steps: 3
        train: {{batch_size: 2, lr: 1.0e-4, eval_every: 0, save_every: 3, weight_decay: 0.0}}
        verify: {{type: kvcache, min_reduction: 1.5}}
  - name: teacher_inputs
    trainer: upcycle
    teacher: "{teacher}"
    model: "${{student}}"
    data: "${{data}}"
    upcycle:
      calibration_batches: 1
      teacher_batches: 3
      verify_batches: 1
      latency_prompt_lens: []
      blockwise_input: teacher
    runs:
      - id: blockwise
        phase: blockwise
        steps: {STEPS}
        train: {{batch_size: 2, lr: 1.0e-3, schedule: cosine, warmup_steps: 3, weight_decay: 0.0, save_every: 5, keep_checkpoints: 2}}
  - name: half
    trainer: upcycle
    teacher: "{teacher}"
    model: "${{student}}"
    data: "${{data}}"
    upcycle:
      calibration_batches: 1
      teacher_batches: 2
      verify_batches: 1
      latency_prompt_lens: []
      blockwise_input: teacher
      global: {{distill_loss: kl, temperature: 1.0, ce_weight: 1.0}}
    runs:
      - id: blockwise
        phase: blockwise
        steps: 4
        train: {{batch_size: 2, lr: 1.0e-3, weight_decay: 0.0, dtype: bf16}}
      - id: finetune
        phase: global
        steps: 3
        train: {{batch_size: 2, lr: 1.0e-4, eval_every: 0, weight_decay: 0.0, dtype: bf16}}
  - name: attention_only
    trainer: upcycle
    teacher: "{teacher}"
    model: "${{student}}"
    data: "${{data}}"
    upcycle:
      calibration_batches: 1
      verify_batches: 1
      latency_prompt_lens: []
      global: {{params: attention}}
    runs:
      - id: finetune
        phase: global
        steps: 3
        train: {{batch_size: 2, lr: 1.0e-2, eval_every: 0, weight_decay: 0.1}}
"#,
        corpus = corpus.display(),
        teacher = teacher.display(),
    );
    let path = dir.join("tiny_upcycle.yml");
    std::fs::write(&path, text).unwrap();
    path
}

fn caramba(manifest: &Path, target: &str, runs: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_caramba"));
    c.args([
        "run",
        &manifest.display().to_string(),
        "--target",
        target,
        "--runs-dir",
    ])
    .arg(runs)
    .env("RUST_LOG", "info")
    .env("NO_COLOR", "1");
    c
}

fn run_ok(manifest: &Path, target: &str, runs: &Path) -> String {
    let out = caramba(manifest, target, runs).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "caramba run --target {target} failed:\n{text}"
    );
    text
}

fn blockwise_losses(run_dir: &Path) -> Vec<(usize, f64)> {
    read_metrics(&run_dir.join("metrics.jsonl"))
        .unwrap()
        .into_iter()
        .filter_map(|l| match l {
            MetricLine::Train(t) => Some((t.step, t.loss)),
            _ => None,
        })
        .collect()
}

fn newest_step(ck_root: &Path) -> Option<usize> {
    std::fs::read_dir(ck_root)
        .ok()?
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.strip_prefix("step_")?.parse().ok())
        .max()
}

#[test]
fn killed_blockwise_resumes_bit_identically_and_attention_only_freezes_the_rest() {
    let tmp = tempfile::tempdir().unwrap();
    let corpus = english_corpus(tmp.path());
    let teacher = write_teacher(tmp.path());
    let manifest = manifest(tmp.path(), &teacher, &corpus);
    let target = |runs: &Path| runs.join("tiny_upcycle/chain");

    // Uninterrupted.
    let runs_a = tmp.path().join("runs_a");
    run_ok(&manifest, "chain", &runs_a);

    // Teacher hidden states as blockwise inputs: the first layer sees the same input either way
    // (embedding and norm are copied), so its steps match the student-prefix run bit for bit; the
    // second layer's input is the teacher's, not the distilled first layer's, so its steps differ.
    let runs_d = tmp.path().join("runs_d");
    run_ok(&manifest, "teacher_inputs", &runs_d);
    let (ls, lt) = (
        blockwise_losses(&target(&runs_a).join("blockwise")),
        blockwise_losses(&runs_d.join("tiny_upcycle/teacher_inputs/blockwise")),
    );
    assert_eq!(lt.len(), LAYERS * STEPS);
    assert_eq!(
        ls[..STEPS],
        lt[..STEPS],
        "layer 0 must see the same input in both modes"
    );
    assert_ne!(
        ls[STEPS..],
        lt[STEPS..],
        "layer 1 must see the teacher's input, not the student's"
    );

    // `dtype: bf16`: the student's parameters are bf16 (teacher inputs converted to it), the
    // report says so, the saved student is bf16, and its perplexity is finite.
    let runs_h = tmp.path().join("runs_h");
    run_ok(&manifest, "half", &runs_h);
    let dir_h = runs_h.join("tiny_upcycle/half");
    let report_h: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir_h.join("artifacts/report.json")).unwrap()).unwrap();
    assert_eq!(report_h["upcycle"]["dtype"], "bf16", "{}", report_h["upcycle"]);
    assert!(
        report_h["upcycle"]["summary"]["student_perplexity"]
            .as_f64()
            .unwrap()
            .is_finite()
    );
    let saved =
        candle_core::safetensors::load(dir_h.join("student/model.safetensors"), &Device::Cpu).unwrap();
    let (name, t) = saved
        .iter()
        .find(|(n, _)| n.ends_with("q_sem.weight") || n.contains("embedder"))
        .unwrap();
    assert_eq!(t.dtype(), DType::BF16, "{name}");

    // Killed (SIGKILL: no chance to save) after the first blockwise checkpoint, then rerun.
    let runs_b = tmp.path().join("runs_b");
    let ck_root = target(&runs_b).join("blockwise/checkpoints");
    let mut child = caramba(&manifest, "chain", &runs_b)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while newest_step(&ck_root).is_none() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before its first checkpoint"
        );
        assert!(
            t0.elapsed() < Duration::from_secs(300),
            "no blockwise checkpoint appeared"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let killed_at = newest_step(&ck_root).unwrap();
    assert!(
        killed_at < LAYERS * STEPS,
        "killed too late (step {killed_at}): the test must interrupt the blockwise phase"
    );
    let log = run_ok(&manifest, "chain", &runs_b);
    let resumed: usize = log
        .split("resuming blockwise from step ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no resume in the log:\n{log}"));
    assert!(resumed > 0 && resumed < LAYERS * STEPS, "resumed from {resumed}");

    let a = std::fs::read(target(&runs_a).join("student/model.safetensors")).unwrap();
    let b = std::fs::read(target(&runs_b).join("student/model.safetensors")).unwrap();
    assert!(a == b, "resumed student differs from the uninterrupted one");
    let (la, lb) = (
        blockwise_losses(&target(&runs_a).join("blockwise")),
        blockwise_losses(&target(&runs_b).join("blockwise")),
    );
    assert_eq!(la.len(), LAYERS * STEPS);
    assert_eq!(la, lb, "blockwise losses differ after the resume");

    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(target(&runs_b).join("artifacts/report.json")).unwrap())
            .unwrap();
    let global = &report["upcycle"]["phases"][1];
    assert_eq!(global["distill_loss"], "kl");
    assert!(global["final_loss"].as_f64().unwrap().is_finite());

    // A finished target reruns without training: same weights.
    let log = run_ok(&manifest, "chain", &runs_b);
    assert!(log.contains("already done"), "{log}");
    let c = std::fs::read(target(&runs_b).join("student/model.safetensors")).unwrap();
    assert!(a == c, "a no-op rerun changed the student");

    // Attention-only global: every non-attention tensor is the teacher's, bit for bit, and the
    // optimizer holds state for attention parameters only.
    let runs_c = tmp.path().join("runs_c");
    run_ok(&manifest, "attention_only", &runs_c);
    let dir = runs_c.join("tiny_upcycle/attention_only");
    let student =
        candle_core::safetensors::load(dir.join("student/model.safetensors"), &Device::Cpu).unwrap();
    let teacher_w = candle_core::safetensors::load(teacher.join("model.safetensors"), &Device::Cpu).unwrap();
    // Attention layers are the parents of tensors the teacher lacks (DBA's own names or shapes).
    let attention: Vec<String> = student
        .iter()
        .filter(|(n, t)| !is_buffer(n) && teacher_w.get(*n).is_none_or(|w| w.shape() != t.shape()))
        .map(|(n, _)| n.rsplitn(3, '.').nth(2).unwrap().to_string() + ".")
        .collect();
    assert!(!attention.is_empty());
    let in_attention = |n: &str| attention.iter().any(|p| n.starts_with(p.as_str()));
    let mut frozen = 0;
    for (name, t) in &student {
        if in_attention(name) || is_buffer(name) {
            continue;
        }
        let w = &teacher_w[name];
        let (x, y): (Vec<f32>, Vec<f32>) = (
            t.flatten_all().unwrap().to_vec1().unwrap(),
            w.flatten_all().unwrap().to_vec1().unwrap(),
        );
        assert!(
            x.iter().zip(&y).all(|(p, q)| p.to_bits() == q.to_bits()),
            "frozen `{name}` changed"
        );
        frozen += 1;
    }
    // Embedding, 2 × 2 norms + final norm, 2 × 3 MLP projections.
    assert!(frozen >= 12, "only {frozen} frozen tensors compared");
    let ck = std::fs::read_dir(dir.join("finetune/checkpoints"))
        .unwrap()
        .filter_map(|e| e.ok())
        .find(|e| e.file_name().to_string_lossy().starts_with("step_"))
        .unwrap()
        .path();
    let opt = candle_core::safetensors::load(ck.join("optimizer.safetensors"), &Device::Cpu).unwrap();
    assert!(!opt.is_empty());
    for name in opt.keys() {
        let param = name.split_once('.').unwrap().1;
        assert!(
            in_attention(param),
            "optimizer state for a frozen parameter: {name}"
        );
    }
}
