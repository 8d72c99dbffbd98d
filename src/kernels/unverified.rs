//! The gate for GPU code that compiles and whose CPU paths pass, but that has not yet run on a
//! GPU: now the fused SwiGLU and embedding-backward kernels and the copy-free recording of fused
//! ops on CUDA (`ops::closed_form`), written 2026-12-07 after that day's last GPU call (the fused
//! RMSNorm backward and cross-entropy passed `tests/gpu_kernels.rs` on an H100 and left it). A kernel that was never run could be silently wrong, and the default training
//! path must never be: until `tests/gpu_kernels.rs` passes on an H100 and the numbers are in
//! docs/gpu.md, these kernels run only when asked for (`CARAMBA_UNVERIFIED_KERNELS=1`, or
//! [`set_unverified_kernels`] as the GPU tests do); otherwise their candle-ops paths run.

use std::sync::atomic::{AtomicBool, Ordering};

static ON: AtomicBool = AtomicBool::new(false);

/// Turn the not-yet-GPU-verified kernels on or off for this process (the GPU tests turn them on).
pub fn set_unverified_kernels(on: bool) {
    ON.store(on, Ordering::Relaxed);
}

/// Whether the not-yet-GPU-verified kernels may run: [`set_unverified_kernels`] or
/// `CARAMBA_UNVERIFIED_KERNELS=1`.
pub fn unverified_kernels() -> bool {
    static ENV_ON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let env_on = *ENV_ON.get_or_init(|| {
        std::env::var("CARAMBA_UNVERIFIED_KERNELS").is_ok_and(|v| matches!(v.trim(), "1" | "true" | "on"))
    });
    ON.load(Ordering::Relaxed) || env_on
}

/// The fallback reason the gated kernels log.
pub const REASON: &str = "not yet verified on a GPU (CARAMBA_UNVERIFIED_KERNELS=1 runs the fused kernel)";

#[cfg(test)]
mod tests {
    #[test]
    fn the_gate_follows_the_switch() {
        // The environment variable is not set in the test process; the switch decides.
        if std::env::var_os("CARAMBA_UNVERIFIED_KERNELS").is_some() {
            return;
        }
        super::set_unverified_kernels(false);
        assert!(!super::unverified_kernels());
        super::set_unverified_kernels(true);
        assert!(super::unverified_kernels());
        super::set_unverified_kernels(false);
    }
}
