// Fused cross-entropy over the vocabulary: for logits x (n, v) and targets t (n),
//   lse_i  = log Σ_j exp(x_ij)              (online max / rescaled sum, f32)
//   loss_i = lse_i − x_{i, t_i}
//   dx_ij  = (exp(x_ij − lse_i) − [j = t_i]) · g_i      (g = dL/dloss, f32 per row)
// so no f32 (n, v) tensor is ever written: the forward reads the logits once, the backward reads
// them once and writes dx in their dtype. The reference is the CPU path of
// src/ops/cross_entropy.rs; the launcher is src/kernels/cross_entropy.rs.
//
// Layout: x, dx (n, v) contiguous in T (bf16, f16 or f32); t (n) u32; loss, lse, g (n) f32.
// One block per row (rows strided over the grid). Rows whose start is 16-byte aligned and whose
// length is a multiple of a 16-byte pack are read (and written) in 16-byte packs, others one
// element at a time. A target outside [0, v) gives a NaN loss.

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <math.h>
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

// A running (max m, Σ exp(x − m)) pair; m = −∞ with s = 0 is the empty set.
struct MaxSum {
    float m, s;
};

__device__ __forceinline__ MaxSum combine(MaxSum a, MaxSum b) {
    if (a.m == -INFINITY) return b;
    if (b.m == -INFINITY) return a;
    const float m = fmaxf(a.m, b.m);
    return {m, a.s * __expf(a.m - m) + b.s * __expf(b.m - m)};
}

__device__ __forceinline__ MaxSum push(MaxSum a, float x) {
    if (x == -INFINITY) return a;  // a masked logit adds nothing (and −∞ − −∞ would be NaN)
    if (x <= a.m) return {a.m, a.s + __expf(x - a.m)};
    // a new max (also the first finite element): rescale what was summed
    return {x, (a.m == -INFINITY ? 0.f : a.s * __expf(a.m - x)) + 1.f};
}

// The block's combined pair (blockDim.x a multiple of 32, at most 1024); every thread gets it.
__device__ __forceinline__ MaxSum block_combine(MaxSum v, MaxSum* scratch) {
    for (int o = 16; o > 0; o >>= 1) {
        MaxSum other = {__shfl_xor_sync(0xffffffffu, v.m, o), __shfl_xor_sync(0xffffffffu, v.s, o)};
        v = combine(v, other);
    }
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    MaxSum all = {-INFINITY, 0.f};
    for (int i = 0; i < warps; ++i) all = combine(all, scratch[i]);
    __syncthreads();  // scratch is reused by the next row
    return all;
}

template <typename T>
struct Pack {
    static constexpr int N = 16 / sizeof(T);
    union {
        uint4 raw;
        T v[N];
    };
};

template <typename T>
__device__ __forceinline__ bool packed_row(const T* row, int v) {
    return (reinterpret_cast<uintptr_t>(row) % 16 == 0) && (v % Pack<T>::N == 0);
}

template <typename T>
__device__ void ce_fwd(const T* __restrict__ x, const uint32_t* __restrict__ targets, float* __restrict__ loss,
                       float* __restrict__ lse, int64_t n, int v) {
    __shared__ MaxSum scratch[32];
    for (int64_t row = blockIdx.x; row < n; row += gridDim.x) {
        const T* xr = x + row * v;
        MaxSum acc = {-INFINITY, 0.f};
        if (packed_row(xr, v)) {
            const uint4* p = reinterpret_cast<const uint4*>(xr);
            const int packs = v / Pack<T>::N;
            for (int i = threadIdx.x; i < packs; i += blockDim.x) {
                Pack<T> pk;
                pk.raw = p[i];
#pragma unroll
                for (int k = 0; k < Pack<T>::N; ++k) acc = push(acc, to_f32(pk.v[k]));
            }
        } else {
            for (int j = threadIdx.x; j < v; j += blockDim.x) acc = push(acc, to_f32(xr[j]));
        }
        const MaxSum all = block_combine(acc, scratch);
        if (threadIdx.x == 0) {
            const float l = all.m + logf(all.s);
            const uint32_t t = targets[row];
            lse[row] = l;
            loss[row] = t < (uint32_t)v ? l - to_f32(xr[t]) : NAN;
        }
    }
}

template <typename T>
__device__ __forceinline__ float ce_grad(float xv, float l, float gi, int j, uint32_t t) {
    return (__expf(xv - l) - (j == (int)t ? 1.f : 0.f)) * gi;
}

template <typename T>
__device__ void ce_bwd(const T* __restrict__ x, const uint32_t* __restrict__ targets, const float* __restrict__ lse,
                       const float* __restrict__ g, T* __restrict__ dx, int64_t n, int v) {
    for (int64_t row = blockIdx.x; row < n; row += gridDim.x) {
        const T* xr = x + row * v;
        T* dr = dx + row * v;
        const float l = lse[row], gi = g[row];
        const uint32_t t = targets[row];
        if (packed_row(xr, v) && packed_row<T>(dr, v)) {
            const uint4* p = reinterpret_cast<const uint4*>(xr);
            uint4* q = reinterpret_cast<uint4*>(dr);
            const int packs = v / Pack<T>::N;
            for (int i = threadIdx.x; i < packs; i += blockDim.x) {
                Pack<T> in, out;
                in.raw = p[i];
#pragma unroll
                for (int k = 0; k < Pack<T>::N; ++k)
                    out.v[k] = from_f32<T>(ce_grad<T>(to_f32(in.v[k]), l, gi, i * Pack<T>::N + k, t));
                q[i] = out.raw;
            }
        } else {
            for (int j = threadIdx.x; j < v; j += blockDim.x)
                dr[j] = from_f32<T>(ce_grad<T>(to_f32(xr[j]), l, gi, j, t));
        }
    }
}

// Entry points: ce_fwd_{f32,f16,bf16} and ce_bwd_{f32,f16,bf16}.
#define CE_DTYPE(NAME, T)                                                                              \
    extern "C" __global__ void ce_fwd_##NAME(const T* x, const uint32_t* targets, float* loss,         \
                                             float* lse, int64_t n, int v) {                           \
        ce_fwd<T>(x, targets, loss, lse, n, v);                                                        \
    }                                                                                                  \
    extern "C" __global__ void ce_bwd_##NAME(const T* x, const uint32_t* targets, const float* lse,    \
                                             const float* g, T* dx, int64_t n, int v) {                \
        ce_bwd<T>(x, targets, lse, g, dx, n, v);                                                       \
    }

CE_DTYPE(f32, float)
CE_DTYPE(f16, __half)
CE_DTYPE(bf16, __nv_bfloat16)
