//! One process per run directory: a second `caramba run` on a run directory in use exits 1 naming
//! the holder's pid, and leaves the holder's record alone.

use assert_cmd::Command;

#[test]
fn a_second_run_on_a_locked_run_directory_exits_1_naming_the_holder() {
    let dir = tempfile::tempdir().expect("tempdir");
    let corpus: String = (0..40)
        .map(|i| format!("Line {i}: the quick brown fox {} jumps. ", rand::random::<u16>()))
        .collect();
    std::fs::write(dir.path().join("corpus.txt"), corpus).expect("corpus");
    let manifest = "\
version: 2
name: locked
model:
  type: TransformerModel
  tied_embeddings: true
  embedder: {type: token, vocab_size: 256, d_model: 16}
  topology:
    type: StackedTopology
    layers:
      - {type: RMSNormLayer, d_model: 16}
targets:
  - name: quick
    data: {path: tokens.npy, block_size: 8, prepare: {input: [corpus.txt]}}
    runs: [{id: train, steps: 2, train: {batch_size: 2, save_every: 1}}]
";
    std::fs::write(dir.path().join("m.yml"), manifest).expect("manifest");
    let run_dir = dir.path().join("runs/locked/quick/train");
    let marker = run_dir.join("metrics.jsonl");
    std::fs::create_dir_all(&run_dir).expect("run dir");
    std::fs::write(&marker, b"the holder's record\n").expect("marker");

    // This test process plays the first `caramba run`.
    let lock = caramba::record::DirLock::acquire(&run_dir).expect("lock");
    let out = Command::cargo_bin("caramba")
        .expect("the binary is built")
        .current_dir(dir.path())
        .args(["run", "m.yml"])
        .output()
        .expect("run");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("process {}", std::process::id())),
        "{stderr}"
    );
    assert_eq!(std::fs::read(&marker).expect("marker"), b"the holder's record\n");
    assert!(!run_dir.join("checkpoints").exists());

    // Once the holder is gone the same command runs.
    drop(lock);
    let out = Command::cargo_bin("caramba")
        .expect("the binary is built")
        .current_dir(dir.path())
        .args(["-q", "run", "m.yml"])
        .output()
        .expect("run");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(run_dir.join("checkpoints/step_000002/state.json").is_file());
}
