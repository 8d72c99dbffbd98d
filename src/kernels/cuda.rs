//! Loading the embedded kernel binaries once per device, and the raw-pointer plumbing the
//! launchers share.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use candle_core::backend::BackendStorage;
use candle_core::cuda_backend::CudaDevice;
use candle_core::cuda_backend::cudarc::driver::{CudaFunction, CudaModule, DevicePtr};
use candle_core::cuda_backend::cudarc::nvrtc::Ptx;
use candle_core::op::BackpropOp;
use candle_core::{CudaStorage, DType, Result, Shape, Storage, Tensor};

/// `kernels/decode_attention.cu`, built by `build.rs`.
pub static DECODE_ATTENTION: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/decode_attention.fatbin"));
/// `kernels/flash_attention.cu`, built by `build.rs`.
pub static FLASH_ATTENTION: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/flash_attention.fatbin"));
/// `kernels/optimizer.cu`, built by `build.rs`.
pub static OPTIMIZER: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/optimizer.fatbin"));
/// `kernels/rms_norm.cu`, built by `build.rs`.
pub static RMS_NORM: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/rms_norm.fatbin"));
/// `kernels/embedding.cu`, built by `build.rs`.
pub static EMBEDDING: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/embedding.fatbin"));
/// `kernels/swiglu.cu`, built by `build.rs`.
pub static SWIGLU: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/swiglu.fatbin"));
/// `kernels/cross_entropy.cu`, built by `build.rs`.
pub static CROSS_ENTROPY: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/cross_entropy.fatbin"));

type Key = (usize, &'static str);

fn modules() -> &'static Mutex<HashMap<Key, Arc<CudaModule>>> {
    static M: std::sync::OnceLock<Mutex<HashMap<Key, Arc<CudaModule>>>> = std::sync::OnceLock::new();
    M.get_or_init(|| Mutex::new(HashMap::new()))
}

fn functions() -> &'static Mutex<HashMap<(usize, String), CudaFunction>> {
    static F: std::sync::OnceLock<Mutex<HashMap<(usize, String), CudaFunction>>> = std::sync::OnceLock::new();
    F.get_or_init(|| Mutex::new(HashMap::new()))
}

fn cuda_err(e: impl std::fmt::Display) -> candle_core::Error {
    candle_core::Error::Cuda(e.to_string().into())
}

/// Function `name` of the module `module` (whose fat binary is `image`) on `dev`, loaded at first
/// use and kept for the process.
pub fn function(
    dev: &CudaDevice,
    module: &'static str,
    image: &'static [u8],
    name: &str,
) -> Result<CudaFunction> {
    let stream = dev.cuda_stream();
    let ordinal = stream.context().ordinal();
    let key = (ordinal, format!("{module}::{name}"));
    if let Some(f) = functions().lock().map_err(cuda_err)?.get(&key) {
        return Ok(f.clone());
    }
    let mdl = {
        let mut mods = modules().lock().map_err(cuda_err)?;
        match mods.get(&(ordinal, module)) {
            Some(m) => m.clone(),
            None => {
                let m = stream
                    .context()
                    .load_module(Ptx::from_binary(image.to_vec()))
                    .map_err(|e| cuda_err(format!("loading kernel module {module}: {e}")))?;
                mods.insert((ordinal, module), m.clone());
                m
            }
        }
    };
    let f = mdl
        .load_function(name)
        .map_err(|e| cuda_err(format!("kernel {module}::{name}: {e}")))?;
    functions().lock().map_err(cuda_err)?.insert(key, f.clone());
    Ok(f)
}

/// Multiprocessors of `dev` (sizes the split of long contexts).
pub fn sm_count(dev: &CudaDevice) -> usize {
    use candle_core::cuda_backend::cudarc::driver::sys::CUdevice_attribute;
    dev.cuda_stream()
        .context()
        .attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
        .map(|n| n.max(1) as usize)
        .unwrap_or(132)
}

/// The device address of element `extra` past `t`'s first element (its layout's start offset).
///
/// The kernels run on candle's stream, the one that wrote and will free `t`, so stream order
/// alone keeps the address valid and the data ready; the caller keeps `t` alive until the launch
/// is queued.
pub fn address(t: &Tensor, extra: usize) -> Result<u64> {
    let (storage, layout) = t.storage_and_layout();
    let Storage::Cuda(cs) = &*storage else {
        candle_core::bail!("a kernel operand is not on a CUDA device");
    };
    storage_address(cs, layout.start_offset() + extra)
}

/// The device address of element `at` of `cs` (for custom ops, which see storages, not tensors;
/// the same stream-order argument as [`address`] keeps it valid).
pub fn storage_address(cs: &CudaStorage, at: usize) -> Result<u64> {
    let stream = cs.device.cuda_stream();
    let (ptr, elem) = match cs.dtype() {
        DType::F32 => (cs.as_cuda_slice::<f32>()?.device_ptr(&stream).0, 4),
        DType::F16 => (cs.as_cuda_slice::<half::f16>()?.device_ptr(&stream).0, 2),
        DType::BF16 => (cs.as_cuda_slice::<half::bf16>()?.device_ptr(&stream).0, 2),
        DType::U32 => (cs.as_cuda_slice::<u32>()?.device_ptr(&stream).0, 4),
        DType::U8 => (cs.as_cuda_slice::<u8>()?.device_ptr(&stream).0, 1),
        other => candle_core::bail!("kernel operands are f32, f16, bf16, u32 or u8, not {other:?}"),
    };
    Ok(ptr + (at * elem) as u64)
}

/// An uninitialized contiguous storage of `n` elements (the caller's kernels write every one).
pub fn empty_storage(dev: &CudaDevice, dtype: DType, n: usize) -> Result<CudaStorage> {
    // SAFETY: the launchers write every element before anything reads it.
    let storage = unsafe {
        match dtype {
            DType::BF16 => CudaStorage::wrap_cuda_slice(dev.alloc::<half::bf16>(n)?, dev.clone()),
            DType::F16 => CudaStorage::wrap_cuda_slice(dev.alloc::<half::f16>(n)?, dev.clone()),
            DType::F32 => CudaStorage::wrap_cuda_slice(dev.alloc::<f32>(n)?, dev.clone()),
            other => candle_core::bail!("kernel outputs are f32, f16 or bf16, not {other:?}"),
        }
    };
    Ok(storage)
}

/// An uninitialized contiguous tensor (every element is written by a kernel).
pub fn empty(dev: &CudaDevice, dtype: DType, shape: impl Into<Shape>) -> Result<Tensor> {
    let shape = shape.into();
    let storage = empty_storage(dev, dtype, shape.elem_count())?;
    Ok(Tensor::from_storage(
        Storage::Cuda(storage),
        shape,
        BackpropOp::none(),
        false,
    ))
}
