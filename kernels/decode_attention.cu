// Fused single-token (T = 1) attention over a KV cache: standard/GQA and Decoupled Bottleneck
// Attention (DBA) share one kernel, since a DBA score is two dot products over two key segments:
//
//   score_j = s_sem · <q_sem, k_sem_j> + s_geo · <q_geo, k_geo_j>,   out = softmax(score) · V
//
// Standard attention is the case sem_dim = 0. Each key segment and V has its own storage kind
// (f32, f16, bf16, q8_0, q4_0), read directly: quantized rows are dequantized inside the dot
// product and the V accumulation, never materialized. Softmax is online and in f32.
//
// Work split (flash-decoding): block (kv head, query sub-group, split) scores its split's positions
// for up to MAXG query heads that share the KV head (one K/V read serves the group), keeps the
// scores in shared memory (never in global memory), accumulates softmax-weighted V, and writes a
// partial (max, sum, acc[dv]) per query head. `combine` merges the splits (and the optional null
// key/value, which every query sees) into the output.
//
// Layout: a segment is rows of `dim` elements; row j of KV head h (h over batch × kv heads) starts
// at base + h·head_stride + j·row_stride (bytes). Quantized rows are blocks of 32 elements:
// q8_0 = f16 scale + 32 int8 (34 B), q4_0 = f16 scale + 16 B of nibbles (18 B), element i < 16 in
// the low nibble of byte i and element i + 16 in its high nibble (llama.cpp's layouts).

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

#define MAXG 8
#define THREADS 128
#define WARPS (THREADS / 32)

enum Kind { F32 = 0, F16 = 1, BF16 = 2, Q8_0 = 3, Q4_0 = 4 };

__device__ __forceinline__ float half_at(const uint8_t* p) {
    return __half2float(*reinterpret_cast<const __half*>(p));
}

__device__ __forceinline__ void unpack_bf16x2(uint32_t w, float& a, float& b) {
    a = __uint_as_float(w << 16);
    b = __uint_as_float(w & 0xffff0000u);
}

__device__ __forceinline__ void unpack_f16x2(uint32_t w, float& a, float& b) {
    __half2 h = *reinterpret_cast<__half2*>(&w);
    float2 f = __half22float2(h);
    a = f.x;
    b = f.y;
}

// Elements [8c, 8c + 8) of a row of kind K into x.
template <int K>
__device__ __forceinline__ void load8(const uint8_t* row, int c, float x[8]) {
    if (K == F32) {
        const float4* p = reinterpret_cast<const float4*>(row + c * 32);
        float4 a = p[0], b = p[1];
        x[0] = a.x; x[1] = a.y; x[2] = a.z; x[3] = a.w;
        x[4] = b.x; x[5] = b.y; x[6] = b.z; x[7] = b.w;
    } else if (K == F16 || K == BF16) {
        uint4 w = *reinterpret_cast<const uint4*>(row + c * 16);
        if (K == BF16) {
            unpack_bf16x2(w.x, x[0], x[1]); unpack_bf16x2(w.y, x[2], x[3]);
            unpack_bf16x2(w.z, x[4], x[5]); unpack_bf16x2(w.w, x[6], x[7]);
        } else {
            unpack_f16x2(w.x, x[0], x[1]); unpack_f16x2(w.y, x[2], x[3]);
            unpack_f16x2(w.z, x[4], x[5]); unpack_f16x2(w.w, x[6], x[7]);
        }
    } else if (K == Q8_0) {
        const uint8_t* blk = row + (c >> 2) * 34;
        float d = half_at(blk);
        // 2-byte aligned (blocks are 34 B): four 16-bit loads.
        const uint16_t* q = reinterpret_cast<const uint16_t*>(blk + 2 + (c & 3) * 8);
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            uint16_t w = q[i];
            x[2 * i] = d * (float)(int8_t)(w & 0xff);
            x[2 * i + 1] = d * (float)(int8_t)(w >> 8);
        }
    } else {  // Q4_0
        const uint8_t* blk = row + (c >> 2) * 18;
        float d = half_at(blk);
        const uint16_t* q = reinterpret_cast<const uint16_t*>(blk + 2 + (c & 1) * 8);
        int shift = (c & 2) ? 4 : 0;
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            uint16_t w = q[i];
            x[2 * i] = d * (float)((int)((w >> shift) & 0xf) - 8);
            x[2 * i + 1] = d * (float)((int)((w >> (8 + shift)) & 0xf) - 8);
        }
    }
}

__device__ __forceinline__ float to_f32(float x) { return x; }
__device__ __forceinline__ float to_f32(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_f32(__nv_bfloat16 x) { return __bfloat162float(x); }

// Rows in flight per lane group in the score and value loops: several independent loads before
// the first use keep enough bytes in flight to approach the memory bandwidth.
#define UNROLL 4

struct Segment {
    const uint8_t* base;
    long long head_stride;  // bytes
    long long row_stride;   // bytes
    int dim;                // elements, a multiple of 8 (32 for quantized kinds)
};

__device__ __forceinline__ int pow2_at_least(int n) {
    int p = 1;
    while (p < n) p <<= 1;
    return p;
}

// grid: (kv heads × batch × sub-groups, splits); block: THREADS.
// q: (B·H, sem_dim + geo_dim) f32. part_acc: (B·H, splits, dv); part_ml: (B·H, splits, 2).
template <typename QT, int KS, int KG, int KV>
__device__ void partial_impl(const QT* __restrict__ q, Segment ks, Segment kg, Segment vs, int n_kv,
                             int group, int n_sub, int len, int split_len, float s_sem, float s_geo,
                             float* __restrict__ part_acc, float* __restrict__ part_ml) {
    // [MAXG][2] (max, sum) per head, then the scores [MAXG][split_len], whose space the final
    // cross-warp sum [WARPS][MAXG][dv] reuses (the launcher sizes it for the larger of the two).
    extern __shared__ float smem_raw[];
    float* red = smem_raw;
    float* smem = smem_raw + 2 * MAXG;
    const int sub = blockIdx.x % n_sub;
    const int hk = blockIdx.x / n_sub;  // batch · n_kv + kv head
    const int b = hk / n_kv;
    const int kvh = hk % n_kv;
    const int h0 = kvh * group + sub * MAXG;
    const int gq = min(MAXG, group - sub * MAXG);
    const int n_heads = n_kv * group;
    const int split = blockIdx.y;
    const int start = split * split_len;
    const int end = min(len, start + split_len);
    const int n = end - start;
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    const int dk = ks.dim + kg.dim;
    const int cs = ks.dim / 8, cg = kg.dim / 8;

    // Scores: a group of `lpt` lanes reads one key row (one 8-element chunk per lane).
    const int lpt = pow2_at_least(cs + cg);
    const int tpw = 32 / lpt;
    const int lg = lane % lpt;
    float qr[MAXG][8];
#pragma unroll
    for (int h = 0; h < MAXG; ++h) {
#pragma unroll
        for (int e = 0; e < 8; ++e) {
            float v = 0.f;
            if (h < gq && lg < cs + cg) {
                int col = lg * 8 + e;
                float s = lg < cs ? s_sem : s_geo;
                v = s * to_f32(q[(size_t)(b * n_heads + h0 + h) * dk + col]);
            }
            qr[h][e] = v;
        }
    }
    const uint8_t* kbase_s = ks.base + hk * ks.head_stride;
    const uint8_t* kbase_g = kg.base + hk * kg.head_stride;
    for (int j0 = warp * tpw * UNROLL; j0 < n; j0 += WARPS * tpw * UNROLL) {
        float x[UNROLL][8];
#pragma unroll
        for (int u = 0; u < UNROLL; ++u) {
            int j = j0 + u * tpw + lane / lpt;
            if (j < n && lg < cs + cg) {
                if (lg < cs) load8<KS>(kbase_s + (size_t)(start + j) * ks.row_stride, lg, x[u]);
                else load8<KG>(kbase_g + (size_t)(start + j) * kg.row_stride, lg - cs, x[u]);
            } else {
#pragma unroll
                for (int e = 0; e < 8; ++e) x[u][e] = 0.f;
            }
        }
#pragma unroll
        for (int u = 0; u < UNROLL; ++u) {
            int j = j0 + u * tpw + lane / lpt;
#pragma unroll
            for (int h = 0; h < MAXG; ++h) {
                if (h < gq) {
                    float part = 0.f;
#pragma unroll
                    for (int e = 0; e < 8; ++e) part += qr[h][e] * x[u][e];
                    for (int off = lpt / 2; off > 0; off >>= 1) part += __shfl_xor_sync(0xffffffffu, part, off);
                    if (j < n && lg == 0) smem[h * split_len + j] = part;
                }
            }
        }
    }
    __syncthreads();

    // Per head: max and sum of exp over the split; scores become weights in place.
    for (int h = warp; h < gq; h += WARPS) {
        float* s = smem + h * split_len;
        float m = -INFINITY;
        for (int j = lane; j < n; j += 32) m = fmaxf(m, s[j]);
        for (int off = 16; off > 0; off >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, off));
        float l = 0.f;
        for (int j = lane; j < n; j += 32) {
            float p = __expf(s[j] - m);
            s[j] = p;
            l += p;
        }
        for (int off = 16; off > 0; off >>= 1) l += __shfl_xor_sync(0xffffffffu, l, off);
        if (lane == 0) {
            red[2 * h] = m;
            red[2 * h + 1] = l;
        }
    }
    __syncthreads();

    // Weighted V: a group of `lpv` lanes reads one value row.
    const int cv = vs.dim / 8;
    const int lpv = pow2_at_least(cv);
    const int tpv = 32 / lpv;
    const int lv = lane % lpv;
    float acc[MAXG][8];
#pragma unroll
    for (int h = 0; h < MAXG; ++h)
#pragma unroll
        for (int e = 0; e < 8; ++e) acc[h][e] = 0.f;
    const uint8_t* vbase = vs.base + hk * vs.head_stride;
    for (int j0 = warp * tpv * UNROLL; j0 < n; j0 += WARPS * tpv * UNROLL) {
        float x[UNROLL][8];
#pragma unroll
        for (int u = 0; u < UNROLL; ++u) {
            int j = j0 + u * tpv + lane / lpv;
            if (j < n && lv < cv) {
                load8<KV>(vbase + (size_t)(start + j) * vs.row_stride, lv, x[u]);
            } else {
#pragma unroll
                for (int e = 0; e < 8; ++e) x[u][e] = 0.f;
            }
        }
#pragma unroll
        for (int u = 0; u < UNROLL; ++u) {
            int j = j0 + u * tpv + lane / lpv;
            if (j < n) {
#pragma unroll
                for (int h = 0; h < MAXG; ++h) {
                    if (h < gq) {
                        float p = smem[h * split_len + j];
#pragma unroll
                        for (int e = 0; e < 8; ++e) acc[h][e] += p * x[u][e];
                    }
                }
            }
        }
    }
    // Sum over the warp's row slots, then over warps through shared memory.
#pragma unroll
    for (int h = 0; h < MAXG; ++h)
#pragma unroll
        for (int e = 0; e < 8; ++e)
            for (int off = lpv; off < 32; off <<= 1) acc[h][e] += __shfl_xor_sync(0xffffffffu, acc[h][e], off);
    __syncthreads();  // the weights are read; reuse the score space
    float* wsum = smem;  // [WARPS][MAXG][dv]
    const int dv = vs.dim;
    if (lane < lpv && lv < cv) {
#pragma unroll
        for (int h = 0; h < MAXG; ++h)
            if (h < gq)
#pragma unroll
                for (int e = 0; e < 8; ++e) wsum[(warp * MAXG + h) * dv + lv * 8 + e] = acc[h][e];
    }
    __syncthreads();
    for (int i = threadIdx.x; i < gq * dv; i += THREADS) {
        int h = i / dv, d = i % dv;
        float s = 0.f;
#pragma unroll
        for (int w = 0; w < WARPS; ++w) s += wsum[(w * MAXG + h) * dv + d];
        size_t row = (size_t)(b * n_heads + h0 + h) * gridDim.y + split;
        part_acc[row * dv + d] = s;
        if (d == 0) {
            part_ml[row * 2] = red[2 * h];
            part_ml[row * 2 + 1] = red[2 * h + 1];
        }
    }
}

// grid: B·H; block: THREADS. Merges the splits and the optional null key/value (k_null:
// (n_kv, dk) f32, v_null: (n_kv, dv) f32) into out (B·H, dv) of type OUT.
template <typename OUT>
__device__ void combine_impl(const float* __restrict__ part_acc, const float* __restrict__ part_ml, int splits,
                             int dv, const OUT* __restrict__ q, int sem_dim, int geo_dim, float s_sem,
                             float s_geo, const float* __restrict__ k_null, const float* __restrict__ v_null,
                             int group, int n_kv, OUT* __restrict__ out) {
    __shared__ float red[WARPS];
    __shared__ float null_score;
    const int bh = blockIdx.x;
    const int kvh = (bh % (n_kv * group)) / group;
    const int dk = sem_dim + geo_dim;
    if (k_null != nullptr) {
        float s = 0.f;
        for (int c = threadIdx.x; c < dk; c += THREADS)
            s += (c < sem_dim ? s_sem : s_geo) * to_f32(q[(size_t)bh * dk + c]) * k_null[(size_t)kvh * dk + c];
        for (int off = 16; off > 0; off >>= 1) s += __shfl_xor_sync(0xffffffffu, s, off);
        if (threadIdx.x % 32 == 0) red[threadIdx.x / 32] = s;
        __syncthreads();
        if (threadIdx.x == 0) {
            float t = 0.f;
            for (int w = 0; w < WARPS; ++w) t += red[w];
            null_score = t;
        }
        __syncthreads();
    }
    const float* ml = part_ml + (size_t)bh * splits * 2;
    float m = k_null != nullptr ? null_score : -INFINITY;
    for (int s = 0; s < splits; ++s) m = fmaxf(m, ml[2 * s]);
    float l = k_null != nullptr ? __expf(null_score - m) : 0.f;
    for (int s = 0; s < splits; ++s) l += ml[2 * s + 1] * __expf(ml[2 * s] - m);
    const float inv = 1.f / l;
    for (int d = threadIdx.x; d < dv; d += THREADS) {
        float a = k_null != nullptr ? v_null[(size_t)kvh * dv + d] * __expf(null_score - m) : 0.f;
        for (int s = 0; s < splits; ++s) a += part_acc[((size_t)bh * splits + s) * dv + d] * __expf(ml[2 * s] - m);
        float r = a * inv;
        if constexpr (sizeof(OUT) == 4) out[(size_t)bh * dv + d] = r;
        else out[(size_t)bh * dv + d] = OUT(r);
    }
}

#define PARTIAL(NAME, QT, KS, KG, KV)                                                                      \
    extern "C" __global__ void __launch_bounds__(THREADS) NAME(                                              \
        const QT* q, const uint8_t* ks_base, long long ks_head, long long ks_row, int ks_dim,           \
        const uint8_t* kg_base, long long kg_head, long long kg_row, int kg_dim, const uint8_t* v_base,   \
        long long v_head, long long v_row, int v_dim, int n_kv, int group, int n_sub, int len,              \
        int split_len, float s_sem, float s_geo, float* part_acc, float* part_ml) {                          \
        Segment ks{ks_base, ks_head, ks_row, ks_dim};                                                       \
        Segment kg{kg_base, kg_head, kg_row, kg_dim};                                                       \
        Segment vs{v_base, v_head, v_row, v_dim};                                                           \
        partial_impl<QT, KS, KG, KV>(q, ks, kg, vs, n_kv, group, n_sub, len, split_len, s_sem, s_geo, part_acc, \
                                 part_ml);                                                                  \
    }

// Plain caches: q has the cache's dtype.
PARTIAL(decode_partial_f32, float, F32, F32, F32)
PARTIAL(decode_partial_f16, __half, F16, F16, F16)
PARTIAL(decode_partial_bf16, __nv_bfloat16, BF16, BF16, BF16)
// Quantized caches, for each query dtype: all q8_0, all q4_0, K q8_0 / V q4_0 (standard
// attention's best quality per byte) and DBA's sem q4_0 / geo q8_0 / v q4_0.
#define QUANTIZED(SUFFIX, QT)                                                          \
    PARTIAL(decode_partial_q8_0_##SUFFIX, QT, Q8_0, Q8_0, Q8_0)                        \
    PARTIAL(decode_partial_q4_0_##SUFFIX, QT, Q4_0, Q4_0, Q4_0)                        \
    PARTIAL(decode_partial_q8_0_q8_0_q4_0_##SUFFIX, QT, Q8_0, Q8_0, Q4_0)              \
    PARTIAL(decode_partial_q4_0_q8_0_q4_0_##SUFFIX, QT, Q4_0, Q8_0, Q4_0)
QUANTIZED(f32, float)
QUANTIZED(f16, __half)
QUANTIZED(bf16, __nv_bfloat16)

#define COMBINE(NAME, OUT)                                                                                \
    extern "C" __global__ void __launch_bounds__(THREADS) NAME(                                             \
        const float* part_acc, const float* part_ml, int splits, int dv, const OUT* q, int sem_dim,       \
        int geo_dim, float s_sem, float s_geo, const float* k_null, const float* v_null, int group,        \
        int n_kv, OUT* out) {                                                                             \
        combine_impl<OUT>(part_acc, part_ml, splits, dv, q, sem_dim, geo_dim, s_sem, s_geo, k_null, v_null, \
                          group, n_kv, out);                                                              \
    }

COMBINE(decode_combine_f32, float)
COMBINE(decode_combine_f16, __half)
COMBINE(decode_combine_bf16, __nv_bfloat16)
