// SwiGLU's gated activation h = silu(a) ⊙ b (a = gate(x), b = up(x)) and its backward. With
// s = sigmoid(a) and the output's gradient g:
//   da = g · b · s · (1 + a · (1 − s))
//   db = g · a · s
// The reference is the differentiable candle composite `silu(a) * b` (`ops::swiglu`); the
// launcher is src/kernels/swiglu.rs. One pass instead of candle's silu + mul forward (2 launches)
// and the ~12 element-wise launches of their autograd (neg, exp, +1, recip, 1−s, ·a, +1, the
// products and the accumulations), each a full pass over (rows, d_ff).
//
// Layout: a, b, h, g, da, db contiguous, n elements of T (bf16, f16 or f32); math in f32.
// Grid-stride loops over pairs of elements (one 4- or 8-byte load per operand), the odd last
// element by the thread that owns the pair index n / 2.

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

// Two consecutive elements of T, loaded and stored at once (T2's alignment is 2·sizeof(T); the
// launcher passes buffers at offset 0 of fresh allocations or checks the alignment).
template <typename T>
struct alignas(2 * sizeof(T)) Pair {
    T x, y;
};

__device__ __forceinline__ float sigmoid(float a) { return 1.0f / (1.0f + __expf(-a)); }

template <typename T>
__device__ __forceinline__ void fwd(const T* __restrict__ a, const T* __restrict__ b, T* __restrict__ h,
                                    long long n) {
    const long long pairs = n / 2;
    const Pair<T>* a2 = reinterpret_cast<const Pair<T>*>(a);
    const Pair<T>* b2 = reinterpret_cast<const Pair<T>*>(b);
    Pair<T>* h2 = reinterpret_cast<Pair<T>*>(h);
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i <= pairs;
         i += (long long)gridDim.x * blockDim.x) {
        if (i < pairs) {
            const Pair<T> av = a2[i], bv = b2[i];
            const float a0 = to_f32(av.x), a1 = to_f32(av.y);
            Pair<T> out;
            out.x = from_f32<T>(a0 * sigmoid(a0) * to_f32(bv.x));
            out.y = from_f32<T>(a1 * sigmoid(a1) * to_f32(bv.y));
            h2[i] = out;
        } else if (n & 1) {
            const float a0 = to_f32(a[n - 1]);
            h[n - 1] = from_f32<T>(a0 * sigmoid(a0) * to_f32(b[n - 1]));
        }
    }
}

template <typename T>
__device__ __forceinline__ void grads(float a, float b, float g, T* da, T* db) {
    const float s = sigmoid(a);
    *da = from_f32<T>(g * b * s * (1.0f + a * (1.0f - s)));
    *db = from_f32<T>(g * a * s);
}

template <typename T>
__device__ __forceinline__ void bwd(const T* __restrict__ a, const T* __restrict__ b, const T* __restrict__ g,
                                    T* __restrict__ da, T* __restrict__ db, long long n) {
    const long long pairs = n / 2;
    const Pair<T>* a2 = reinterpret_cast<const Pair<T>*>(a);
    const Pair<T>* b2 = reinterpret_cast<const Pair<T>*>(b);
    const Pair<T>* g2 = reinterpret_cast<const Pair<T>*>(g);
    Pair<T>* da2 = reinterpret_cast<Pair<T>*>(da);
    Pair<T>* db2 = reinterpret_cast<Pair<T>*>(db);
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i <= pairs;
         i += (long long)gridDim.x * blockDim.x) {
        if (i < pairs) {
            const Pair<T> av = a2[i], bv = b2[i], gv = g2[i];
            Pair<T> dav, dbv;
            grads(to_f32(av.x), to_f32(bv.x), to_f32(gv.x), &dav.x, &dbv.x);
            grads(to_f32(av.y), to_f32(bv.y), to_f32(gv.y), &dav.y, &dbv.y);
            da2[i] = dav;
            db2[i] = dbv;
        } else if (n & 1) {
            grads(to_f32(a[n - 1]), to_f32(b[n - 1]), to_f32(g[n - 1]), &da[n - 1], &db[n - 1]);
        }
    }
}

#define SWIGLU_DTYPE(NAME, T)                                                                       \
    extern "C" __global__ void swiglu_fwd_##NAME(const T* a, const T* b, T* h, long long n) {     \
        fwd<T>(a, b, h, n);                                                                         \
    }                                                                                               \
    extern "C" __global__ void swiglu_bwd_##NAME(const T* a, const T* b, const T* g, T* da, T* db, \
                                                 long long n) {                                     \
        bwd<T>(a, b, g, da, db, n);                                                                 \
    }

SWIGLU_DTYPE(bf16, __nv_bfloat16)
SWIGLU_DTYPE(f16, __half)
SWIGLU_DTYPE(f32, float)
