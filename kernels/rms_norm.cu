// Fused RMSNorm backward: y = n ⊙ w with n = x · r, r = rsqrt(mean(x²) + eps), per row of x.
// With g = dL/dy and u = g ⊙ w:
//   dx = r · (u − n · mean(u ⊙ n))  =  r · (u − x · r² · mean(u ⊙ x))
//   dw = Σ_rows g ⊙ n
// The reference is the candle-ops closed form (`rms_norm_backward_reference` in
// src/layer/rms_norm.rs); the launcher is src/kernels/rms_norm.rs.
//
// Layout: x, g, dx (rows, d) contiguous in T (bf16, f16 or f32); w (d) in T; all math in f32.
// rms_bwd_rows_*: block b takes rows b, b + gridDim.x, …; one pass over a row sums x² and
// g·w·x (one block reduction of two values), a second pass writes dx and adds g·n into the
// block's column accumulators (shared memory when `smem` is set, else the block's own row of
// `partial`), which end up in partial (gridDim.x, d) f32. rms_bwd_dw_*: dw[c] = Σ_b partial[b, c]
// in block order, one thread per column. No atomics: the sums are the same run to run.

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

__device__ __forceinline__ float to_f32(float x) { return x; }
__device__ __forceinline__ float to_f32(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_f32(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T>
__device__ __forceinline__ T from_f32(float x);
template <>
__device__ __forceinline__ float from_f32<float>(float x) { return x; }
template <>
__device__ __forceinline__ __half from_f32<__half>(float x) { return __float2half_rn(x); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_f32<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }

// Sum of (a, b) over the block (blockDim.x a multiple of 32, at most 1024); every thread gets it.
__device__ __forceinline__ float2 block_sum2(float a, float b, float2* scratch) {
    for (int o = 16; o > 0; o >>= 1) {
        a += __shfl_xor_sync(0xffffffffu, a, o);
        b += __shfl_xor_sync(0xffffffffu, b, o);
    }
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    if (lane == 0) scratch[warp] = make_float2(a, b);
    __syncthreads();
    float2 s = make_float2(0.f, 0.f);
    // why: every thread adds the warp sums in the same order, so all agree bit for bit.
    for (int i = 0; i < warps; ++i) {
        s.x += scratch[i].x;
        s.y += scratch[i].y;
    }
    __syncthreads();  // scratch is reused by the next row
    return s;
}

template <typename T>
__device__ void rms_bwd_rows(const T* __restrict__ x, const T* __restrict__ w, const T* __restrict__ g,
                             T* __restrict__ dx, float* __restrict__ partial, int64_t rows, int d,
                             float eps, int smem) {
    extern __shared__ float acc_smem[];
    __shared__ float2 scratch[32];
    float* acc = smem ? acc_smem : partial + (int64_t)blockIdx.x * d;
    for (int c = threadIdx.x; c < d; c += blockDim.x) acc[c] = 0.f;
    // why: each thread only touches its own columns of acc, so no barrier is needed between the
    // zeroing and the accumulation below.
    const float inv_d = 1.f / (float)d;
    for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
        const T* xr = x + row * d;
        const T* gr = g + row * d;
        float ss = 0.f, gwx = 0.f;
        for (int c = threadIdx.x; c < d; c += blockDim.x) {
            const float xv = to_f32(xr[c]);
            ss = fmaf(xv, xv, ss);
            gwx = fmaf(to_f32(gr[c]) * to_f32(w[c]), xv, gwx);
        }
        const float2 s = block_sum2(ss, gwx, scratch);
        const float r = rsqrtf(s.x * inv_d + eps);
        // mean(u ⊙ n) · r = r² · mean(u ⊙ x)
        const float k = r * r * (s.y * inv_d);
        T* dxr = dx + row * d;
        for (int c = threadIdx.x; c < d; c += blockDim.x) {
            const float xv = to_f32(xr[c]);
            const float gv = to_f32(gr[c]);
            dxr[c] = from_f32<T>(r * (gv * to_f32(w[c]) - xv * k));
            acc[c] = fmaf(gv, xv * r, acc[c]);
        }
    }
    if (smem) {
        float* out = partial + (int64_t)blockIdx.x * d;
        for (int c = threadIdx.x; c < d; c += blockDim.x) out[c] = acc[c];
    }
}

template <typename T>
__device__ void rms_bwd_dw(const float* __restrict__ partial, T* __restrict__ dw, int blocks, int d) {
    const int c = blockIdx.x * blockDim.x + threadIdx.x;
    if (c >= d) return;
    float s = 0.f;
    for (int b = 0; b < blocks; ++b) s += partial[(int64_t)b * d + c];
    dw[c] = from_f32<T>(s);
}

// Entry points: rms_bwd_rows_{f32,f16,bf16} and rms_bwd_dw_{f32,f16,bf16}.
#define RMS_DTYPE(NAME, T)                                                                          \
    extern "C" __global__ void rms_bwd_rows_##NAME(const T* x, const T* w, const T* g, T* dx,       \
                                                   float* partial, int64_t rows, int d, float eps,  \
                                                   int smem) {                                      \
        rms_bwd_rows<T>(x, w, g, dx, partial, rows, d, eps, smem);                                  \
    }                                                                                               \
    extern "C" __global__ void rms_bwd_dw_##NAME(const float* partial, T* dw, int blocks, int d) { \
        rms_bwd_dw<T>(partial, dw, blocks, d);                                                      \
    }

RMS_DTYPE(f32, float)
RMS_DTYPE(f16, __half)
RMS_DTYPE(bf16, __nv_bfloat16)
