//! A full disk: a checkpoint save that fails leaves no `.tmp-step_*` directory behind, stale ones
//! from an earlier crash go at the next start, and the run resumes from the last good checkpoint.
//!
//! Its own test binary: the full disk is simulated with `RLIMIT_FSIZE`, which is per process.

mod train_support;

use std::fs;
use std::path::Path;

use caramba::train::{self, TrainError, TrainOptions, TrainSpec};
use train_support::{english_dataset, tiny_model, tiny_train_spec};

fn temps(ck: &Path) -> Vec<String> {
    fs::read_dir(ck)
        .expect("checkpoints")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".tmp-"))
        .collect()
}

fn set_file_size_limit(bytes: libc::rlim_t) {
    let limit = libc::rlimit {
        rlim_cur: bytes,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: plain syscalls on this process's own limits and signal disposition.
    unsafe {
        // why: past the limit write(2) fails with EFBIG, as on a full disk, instead of SIGXFSZ.
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &limit), 0);
    }
}

#[test]
fn a_failed_save_leaves_no_temporary_and_the_run_resumes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let data = english_dataset(dir.path(), 16, 0.1);
    let model = tiny_model(256, 32, 2, 2, 0.0);
    let spec = TrainSpec {
        save_every: Some(3),
        ..tiny_train_spec()
    };
    let run_dir = dir.path().join("run");
    let opts = |stop| TrainOptions {
        stop_after: Some(stop),
        ..TrainOptions::new(&model, &spec, 12, 5, &run_dir)
    };
    train::run(&model, &spec, &data, opts(3)).expect("first checkpoint");
    let ck = run_dir.join("checkpoints");
    let weights = fs::metadata(ck.join("step_000003/model.safetensors"))
        .expect("weights")
        .len();

    // The disk fills up: files may grow to a random size below the weights' (metrics still fit).
    let room = rand::random_range(16 * 1024..weights / 2);
    set_file_size_limit(room as libc::rlim_t);
    let err = train::run(&model, &spec, &data, opts(6)).expect_err("the save cannot fit");
    set_file_size_limit(libc::RLIM_INFINITY);
    assert!(
        matches!(err, TrainError::Tensor(_) | TrainError::Io { .. }),
        "{err}"
    );
    assert_eq!(temps(&ck), Vec::<String>::new(), "the failed save cleaned up");

    // A crash mid-save (no cleanup ran) leaves a stale temporary; the next start removes it.
    let stale = ck.join(format!(".tmp-step_000006-{}", rand::random::<u32>()));
    fs::create_dir_all(&stale).expect("stale");
    fs::write(stale.join("model.safetensors"), b"partial").expect("partial");
    let resumed = train::run(&model, &spec, &data, opts(6)).expect("resume");
    assert_eq!(resumed.resumed_from, Some(3));
    assert_eq!(temps(&ck), Vec::<String>::new());
}
