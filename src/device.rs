//! Where models run: `--device cpu|cuda[:N]|metal` and `--dtype auto|f32|bf16|f16`, shared by every
//! command and by manifests' `runtime.device` / `runtime.dtype`.
//!
//! A device the binary was not built for, or that the machine does not have, is an error that says
//! which of the two it is and what to do, before any work starts.

use candle_core::{DType, Device};

#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum DeviceError {
    #[error(
        "device `{name}`: this caramba was built without the `{feature}` feature (rebuild with `cargo build --release --features {feature}`; docs/gpu.md)"
    )]
    NotBuilt { name: String, feature: &'static str },
    #[error("device `{name}` is not available here: {reason}")]
    Unavailable { name: String, reason: String },
    #[error("unknown device `{0}` (use cpu, cuda, cuda:N or metal)")]
    Unknown(String),
    #[error("unknown dtype `{0}` (use auto, f32, bf16 or f16)")]
    UnknownDtype(String),
}

/// `cpu`, `cuda`, `cuda:N`, `metal`.
pub fn parse_device(name: &str) -> Result<Device, DeviceError> {
    let unavailable = |e: candle_core::Error| DeviceError::Unavailable {
        name: name.to_string(),
        reason: first_line(&e.to_string()),
    };
    match name {
        "cpu" => Ok(Device::Cpu),
        "metal" if !cfg!(feature = "metal") => Err(DeviceError::NotBuilt {
            name: name.into(),
            feature: "metal",
        }),
        "metal" => Device::new_metal(0).map_err(unavailable),
        _ => {
            let Some(rest) = name.strip_prefix("cuda") else {
                return Err(DeviceError::Unknown(name.into()));
            };
            let ordinal = match rest {
                "" => 0,
                _ => rest
                    .strip_prefix(':')
                    .and_then(|n| n.parse().ok())
                    .ok_or_else(|| DeviceError::Unknown(name.into()))?,
            };
            if !cfg!(feature = "cuda") {
                return Err(DeviceError::NotBuilt {
                    name: name.into(),
                    feature: "cuda",
                });
            }
            // candle's own message for a missing driver or GPU is a raw driver error code; say
            // what it means for the user.
            let device = Device::new_cuda(ordinal).map_err(|e| DeviceError::Unavailable {
                name: name.to_string(),
                reason: format!(
                    "{} (no NVIDIA driver or no GPU {ordinal}: check `nvidia-smi`, or run with --device cpu)",
                    first_line(&e.to_string())
                ),
            })?;
            single_stream(&device);
            keep_pool_memory(&device);
            Ok(device)
        }
    }
}

/// caramba runs all of a device's work on candle's one stream, so stream order alone orders every
/// read and write; candle's per-tensor CUDA events (driver calls for every operand of every op)
/// only matter across streams. `CARAMBA_CUDA_EVENTS=1` keeps them (to measure what they cost).
#[cfg(feature = "cuda")]
fn single_stream(device: &Device) {
    if std::env::var_os("CARAMBA_CUDA_EVENTS").is_some_and(|v| v == "1") {
        return;
    }
    if let Device::Cuda(dev) = device {
        // SAFETY: see above: no second stream ever touches these tensors.
        unsafe { dev.disable_event_tracking() }
    }
}

#[cfg(not(feature = "cuda"))]
fn single_stream(_device: &Device) {}

/// Keep freed GPU memory in the device's memory pool instead of handing it back to the driver.
/// candle allocates stream-ordered (`cuMemAllocAsync`) from the default pool, whose release
/// threshold is 0: every synchronization (each step reads its loss) returns all unused memory
/// to the driver, and the next step maps it again, allocation by allocation. PyTorch's caching
/// allocator keeps it, and so does this (`cuMemPoolSetAttribute(RELEASE_THRESHOLD, u64::MAX)`);
/// `CARAMBA_CUDA_TRIM=1` still trims after each training step.
#[cfg(feature = "cuda")]
fn keep_pool_memory(device: &Device) {
    use candle_core::cuda_backend::cudarc::driver::{result, sys};
    let Device::Cuda(dev) = device else { return };
    let cu_device = dev.cuda_stream().context().cu_device();
    let mut threshold = u64::MAX;
    // SAFETY: the device handle comes from a live context; the attribute takes a u64.
    let outcome = unsafe {
        result::device::get_default_mem_pool(cu_device).map(|pool| {
            sys::cuMemPoolSetAttribute(
                pool,
                sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
                (&raw mut threshold).cast(),
            )
            .result()
        })
    };
    if let Err(e) | Ok(Err(e)) = outcome {
        tracing::warn!("could not keep freed GPU memory in the pool: {e}");
    }
}

#[cfg(not(feature = "cuda"))]
fn keep_pool_memory(_device: &Device) {}

/// `auto` is bf16 on CUDA (every GPU candle's CUDA kernels target has bf16 arithmetic) and f32
/// on CPU and Metal, where bf16 matmuls are emulated and slower than f32.
pub fn resolve_dtype(name: &str, device: &Device) -> Result<DType, DeviceError> {
    match name {
        "auto" if device.is_cuda() => Ok(DType::BF16),
        "auto" | "f32" => Ok(DType::F32),
        "bf16" => Ok(DType::BF16),
        "f16" => Ok(DType::F16),
        "f64" => Ok(DType::F64),
        other => Err(DeviceError::UnknownDtype(other.into())),
    }
}

/// The dtype's manifest spelling.
pub fn dtype_name(dtype: DType) -> &'static str {
    match dtype {
        DType::F32 => "f32",
        DType::BF16 => "bf16",
        DType::F16 => "f16",
        DType::F64 => "f64",
        _ => "other",
    }
}

/// A human name for logs and reports: `cpu`, `cuda:0 (NVIDIA H100 80GB HBM3)`, `metal`.
pub fn describe(device: &Device) -> String {
    match device {
        Device::Cpu => "cpu".into(),
        Device::Metal(_) => "metal".into(),
        Device::Cuda(_) => cuda_name(device),
    }
}

#[cfg(feature = "cuda")]
fn cuda_name(device: &Device) -> String {
    match device.as_cuda_device() {
        Ok(dev) => {
            let stream = dev.cuda_stream();
            let ctx = stream.context();
            let name = ctx.name().unwrap_or_else(|_| "unknown GPU".into());
            format!("cuda:{} ({name})", ctx.ordinal())
        }
        Err(_) => "cuda".into(),
    }
}

#[cfg(not(feature = "cuda"))]
fn cuda_name(_device: &Device) -> String {
    "cuda".into()
}

/// GiB of this process's resident host memory (Linux `/proc/self/statm`), for training logs;
/// `None` where it cannot be read. A leak of tensors on the CPU shows up here.
pub fn host_memory_resident_gib() -> Option<f64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some((pages * 4096) as f64 / (1u64 << 30) as f64)
}

/// GiB of the GPU's memory in use (by every process), for training logs; `None` off CUDA.
#[cfg(feature = "cuda")]
pub fn gpu_memory_used_gib(device: &Device) -> Option<f64> {
    let dev = device.as_cuda_device().ok()?;
    let (free, total) = dev.cuda_stream().context().mem_get_info().ok()?;
    Some((total - free) as f64 / (1u64 << 30) as f64)
}

#[cfg(not(feature = "cuda"))]
pub fn gpu_memory_used_gib(_device: &Device) -> Option<f64> {
    None
}

/// Bytes of live tensor memory on `device`, for the training logs and `metrics.jsonl`: on CUDA the
/// allocations in use from the device's default memory pool (candle allocates stream-ordered
/// from it; unlike the driver's used memory this leaves out what the pool keeps cached for
/// reuse), on the CPU the bytes glibc's malloc has handed out and not taken back (`mallinfo2`:
/// heap plus mmapped). A step's tensors are freed at its end, so this is flat from step to step
/// unless something keeps them. `None` where the device has no such statistic.
pub fn memory_in_use_bytes(device: &Device) -> Option<u64> {
    match device {
        Device::Cpu => host_heap_in_use_bytes(),
        Device::Cuda(_) => cuda_pool_in_use_bytes(device),
        _ => None,
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn host_heap_in_use_bytes() -> Option<u64> {
    // SAFETY: mallinfo2 only reads the allocator's counters (glibc ≥ 2.33).
    let info = unsafe { libc::mallinfo2() };
    Some((info.uordblks + info.hblkhd) as u64)
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn host_heap_in_use_bytes() -> Option<u64> {
    None
}

#[cfg(feature = "cuda")]
fn cuda_pool_in_use_bytes(device: &Device) -> Option<u64> {
    use candle_core::cuda_backend::cudarc::driver::{result, sys};
    let dev = device.as_cuda_device().ok()?;
    let stream = dev.cuda_stream();
    stream.synchronize().ok()?;
    let mut used: u64 = 0;
    // SAFETY: the device handle comes from a live context; the attribute is a u64 counter.
    unsafe {
        let pool = result::device::get_default_mem_pool(stream.context().cu_device()).ok()?;
        sys::cuMemPoolGetAttribute(
            pool,
            sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_USED_MEM_CURRENT,
            (&raw mut used).cast(),
        )
        .result()
        .ok()?;
    }
    Some(used)
}

#[cfg(not(feature = "cuda"))]
fn cuda_pool_in_use_bytes(_device: &Device) -> Option<u64> {
    None
}

/// With `CARAMBA_CUDA_TRIM=1`, hand the CUDA memory pool's unused memory back to the driver
/// (`cuMemPoolTrimTo(pool, 0)`; candle allocates stream-ordered from the device's default pool).
/// An experiment for the upcycle's global phase, whose GPU memory in use grew ~140 MB a step
/// until out of memory on the H100 (docs/gpu.md): if the growth is the pool's fragmentation,
/// trimming after each step stops it; if tensors leak, it does not. Off by default (untried).
#[cfg(feature = "cuda")]
pub fn trim_memory_pool(device: &Device) {
    if !std::env::var_os("CARAMBA_CUDA_TRIM").is_some_and(|v| v == "1") {
        return;
    }
    let Ok(dev) = device.as_cuda_device() else { return };
    let stream = dev.cuda_stream();
    if stream.synchronize().is_err() {
        return;
    }
    let cu_device = stream.context().cu_device();
    // SAFETY: the device handle comes from a live context; trimming only releases unused memory.
    unsafe {
        use candle_core::cuda_backend::cudarc::driver::{result, sys};
        if let Ok(pool) = result::device::get_default_mem_pool(cu_device) {
            let _ = sys::cuMemPoolTrimTo(pool, 0);
        }
    }
}

#[cfg(not(feature = "cuda"))]
pub fn trim_memory_pool(_device: &Device) {}

/// `CARAMBA_CUDA_PROFILE_STEP=N`: the training step (1-based) whose kernels, and only those, a
/// profiler started with `--profile-from-start off` records (`ncu`, `nsys`): one whole step
/// instead of a guessed slice of launches.
pub fn profiled_step() -> Option<usize> {
    std::env::var("CARAMBA_CUDA_PROFILE_STEP").ok()?.parse().ok()
}

/// Open (`true`) or close the CUDA profiler's capture range after the queued work; no-op off CUDA.
#[cfg(feature = "cuda")]
pub fn cuda_profiler(device: &Device, on: bool) {
    if !device.is_cuda() || device.synchronize().is_err() {
        return;
    }
    use candle_core::cuda_backend::cudarc::driver::{profiler_start, profiler_stop};
    let result = if on { profiler_start() } else { profiler_stop() };
    if let Err(e) = result {
        tracing::warn!("CUDA profiler range: {e}");
    }
}

#[cfg(not(feature = "cuda"))]
pub fn cuda_profiler(_device: &Device, _on: bool) {}

/// Wait for the device's queued work: timings on a GPU are otherwise the launch time.
pub fn synchronize(device: &Device) -> candle_core::Result<()> {
    device.synchronize()
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or(s).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_and_auto_dtype() {
        let d = parse_device("cpu").expect("cpu");
        assert!(d.is_cpu());
        assert_eq!(resolve_dtype("auto", &d).expect("auto"), DType::F32);
        assert_eq!(resolve_dtype("bf16", &d).expect("bf16"), DType::BF16);
        assert!(matches!(
            resolve_dtype("f8", &d),
            Err(DeviceError::UnknownDtype(_))
        ));
    }

    #[test]
    fn bad_names_say_what_is_accepted() {
        for bad in ["gpu", "cuda0", "cuda:x", "cuda:"] {
            let err = parse_device(bad).expect_err(bad).to_string();
            assert!(err.contains("cpu, cuda, cuda:N"), "{bad}: {err}");
        }
    }

    #[cfg(not(feature = "cuda"))]
    #[test]
    fn cuda_without_the_feature_says_how_to_rebuild() {
        let err = parse_device("cuda:1").expect_err("no cuda feature").to_string();
        assert!(err.contains("--features cuda"), "{err}");
    }
}
