// The embedding table's gradient: dW[v, :] = Σ_{p : ids[p] = v} g[p, :], in position order.
// The reference is candle's backward of `index_select` (zeros, then `index_add` of the rows),
// whose CUDA `index_add` walks every id once per output column: 4 ms a step at 8,192 ids into a
// 49,152 × 576 table on an H100. The launcher is src/kernels/embedding.rs.
//
// Layout: ids (n) u32; g (n, d) and dw (vocab, d) contiguous in T (bf16, f16 or f32); sums in f32.
// Block b owns the ROWS table rows [b·ROWS, b·ROWS + ROWS) and writes all of them (zeros where no
// id points): no zero fill beforehand and no atomics. It reads the ids in chunks of blockDim.x,
// compacts the chunk's matches in position order (warp ballots and a block prefix), then every
// thread adds those rows' values to its own columns of the f32 accumulators in shared memory
// (ROWS · d floats). Each row's sum is taken in increasing position, so dw is the same run to run.

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

#define ROWS 8
#define MAX_THREADS 256

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

// blockDim.x: a multiple of 32, at most MAX_THREADS. Dynamic shared memory: ROWS · d floats.
template <typename T>
__device__ __forceinline__ void emb_bwd(const uint32_t* __restrict__ ids, const T* __restrict__ g,
                                        T* __restrict__ dw, long long n, int vocab, int d) {
    extern __shared__ float acc[];
    __shared__ long long match_pos[MAX_THREADS];
    __shared__ int match_row[MAX_THREADS];
    __shared__ int warp_count[MAX_THREADS / 32];
    const long long v0 = (long long)blockIdx.x * ROWS;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, warps = blockDim.x >> 5;
    for (int i = threadIdx.x; i < ROWS * d; i += blockDim.x) acc[i] = 0.0f;
    for (long long base = 0; base < n; base += blockDim.x) {
        const long long p = base + threadIdx.x;
        int r = -1;
        if (p < n) {
            const long long id = ids[p];
            if (id >= v0 && id < v0 + ROWS) r = (int)(id - v0);
        }
        const unsigned hits = __ballot_sync(0xffffffffu, r >= 0);
        if (lane == 0) warp_count[warp] = __popc(hits);
        __syncthreads();  // the counts are in; the previous chunk's sums are done
        int before = 0, count = 0;
        for (int w = 0; w < warps; ++w) {
            before += w < warp ? warp_count[w] : 0;
            count += warp_count[w];
        }
        if (r >= 0) {
            const int k = before + __popc(hits & ((1u << lane) - 1u));
            match_pos[k] = p;
            match_row[k] = r;
        }
        __syncthreads();  // the chunk's matches are listed, in position order
        for (int k = 0; k < count; ++k) {
            const T* row = g + match_pos[k] * d;
            float* sum = acc + match_row[k] * d;
            for (int c = threadIdx.x; c < d; c += blockDim.x) sum[c] += to_f32(row[c]);
        }
        __syncthreads();  // before the next chunk reuses the lists and counts
    }
    for (int i = threadIdx.x; i < ROWS * d; i += blockDim.x) {
        if (v0 + i / d < vocab) dw[v0 * d + i] = from_f32<T>(acc[i]);
    }
}

#define EMB_DTYPE(NAME, T)                                                                           \
    extern "C" __global__ void emb_bwd_##NAME(const uint32_t* ids, const T* g, T* dw, long long n,  \
                                              int vocab, int d) {                                     \
        emb_bwd<T>(ids, g, dw, n, vocab, d);                                                          \
    }

EMB_DTYPE(bf16, __nv_bfloat16)
EMB_DTYPE(f16, __half)
EMB_DTYPE(f32, float)
