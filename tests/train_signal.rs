//! SIGTERM (what schedulers and `kill` send) asks for a checkpoint and a stop, as Ctrl-C does,
//! instead of ending the process on the spot.
//!
//! Its own test binary: the signal and the interrupt flag are process-wide.

mod train_support;

use std::time::{Duration, Instant};

use caramba::model::{LanguageModel, SeededVarMap};
use caramba::train::{self, TrainError, TrainOptions, TrainSpec, Trainer};
use train_support::{english_dataset, tiny_model, tiny_train_spec};

#[test]
fn sigterm_checkpoints_after_the_current_step() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = english_dataset(dir.path(), 16, 0.1);
    let model = tiny_model(256, 32, 2, 2, 0.0);
    let spec = TrainSpec {
        save_every: Some(1000),
        ..tiny_train_spec()
    };
    let run_dir = dir.path().join("run");
    let vars = SeededVarMap::new(rand::random());
    let lm = LanguageModel::build(
        &model,
        vars.var_builder(candle_core::DType::F32, &candle_core::Device::Cpu),
    )
    .expect("model");
    let opts = TrainOptions::new(&model, &spec, 1_000_000, 3, &run_dir);
    let trainer = Trainer::new(lm, vars, &spec, &data, opts).expect("trainer");

    // The handler is installed before the signal, as `Trainer::run` does; without SIGTERM
    // handling this raise ends the test process.
    train::watch_ctrlc();
    // SAFETY: raising a signal in this process; its handler only sets a flag.
    assert_eq!(unsafe { libc::raise(libc::SIGTERM) }, 0);
    let t0 = Instant::now();
    while !train::interrupt_requested() {
        assert!(t0.elapsed() < Duration::from_secs(10), "SIGTERM was not seen");
        std::thread::sleep(Duration::from_millis(5));
    }

    // `run` clears earlier requests, so signal again once it is training.
    let handle = std::thread::spawn(|| {
        std::thread::sleep(Duration::from_millis(300));
        // SAFETY: as above.
        unsafe { libc::raise(libc::SIGTERM) };
    });
    let err = trainer.run().expect_err("stopped by SIGTERM");
    handle.join().expect("signal thread");
    let TrainError::Interrupted { step, checkpoint } = &err else {
        panic!("expected Interrupted, got {err}")
    };
    assert!(*step >= 1 && *step < 1_000_000);
    assert!(checkpoint.join("state.json").is_file());
    assert_eq!(err.exit_code(), 130);
}
