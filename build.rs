//! With the `cuda` feature: compile `kernels/*.cu` with nvcc into fat binaries (machine code for
//! `CUDA_COMPUTE_CAP`, default 90, plus PTX of that architecture for newer GPUs to JIT), embedded
//! by `src/kernels/`. Machine code loads in well under a millisecond and needs no compiler at run
//! time; NVRTC would add 20–130 ms per module at first use and the CUDA headers on the user's
//! machine (shared/cuda/README.md measured both). Without the feature nothing is built.

use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=kernels");
    println!("cargo:rerun-if-env-changed=CUDA_COMPUTE_CAP");
    println!("cargo:rerun-if-env-changed=NVCC");
    if std::env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let cap = std::env::var("CUDA_COMPUTE_CAP").unwrap_or_else(|_| "90".into());
    let nvcc = std::env::var("NVCC").unwrap_or_else(|_| "nvcc".into());
    let mut sources: Vec<PathBuf> = std::fs::read_dir("kernels")
        .expect("kernels/ exists")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "cu"))
        .collect();
    sources.sort();
    for src in sources {
        let stem = src
            .file_stem()
            .and_then(|s| s.to_str())
            .expect("a UTF-8 kernel file name");
        let dst = out.join(format!("{stem}.fatbin"));
        let status = Command::new(&nvcc)
            .args(["-fatbin", "-O3", "-std=c++17", "--use_fast_math"])
            .arg(format!("-gencode=arch=compute_{cap},code=[sm_{cap},compute_{cap}]"))
            .arg("-o")
            .arg(&dst)
            .arg(&src)
            .status()
            .unwrap_or_else(|e| {
                panic!(
                    "the `cuda` feature needs nvcc on PATH (or NVCC=/path/to/nvcc) to build {}: {e}; see docs/gpu.md",
                    src.display()
                )
            });
        assert!(status.success(), "nvcc failed on {}", src.display());
    }
}
