// Flash-attention-2 style training attention (Dao, "FlashAttention-2", 2023): the forward writes
// O and each row's logsumexp L; the backward takes D = rowsum(dO ⊙ O), then dK/dV per key tile
// and dQ per query tile, each recomputing P = exp(S − L) from q, k and L. Nothing of size
// (g·t, kk) is ever stored. The reference is `RecomputingAttention` (src/ops/sdpa.rs).
//
// Layout (all contiguous; "bh" walks batch × KV heads):
//   q, dq (bh, g·t, DQ) pre-scaled, the g query heads of a KV group folded into rows (row gh·t + i
//   is query position i of head gh); k, dk (bh, kk, DQ); v, dv (bh, kk, DV); o, do (bh, g·t, DV);
//   lse, dsum (bh, g·t) f32.
// Visibility: with `causal`, query i sees key column j iff j ≤ i + shift, shift = kk − t (the
// n_null always-visible columns come first, and query i sits at absolute position kt − t + i);
// without, every column.
//
// bf16/f16: tensor cores through mma.sync m16n8k16 (f32 accumulation) with ldmatrix loads from
// padded shared tiles (row stride D + 8 halves: conflict-free ldmatrix rows). A warp owns 16 rows
// of the tile it iterates with; fragment layouts are PTX's (row g = lane/4, column pair 2·(lane%4)):
// the f32 accumulator of S = A·B for two adjacent 8-column blocks is, packed to 16 bits, the A
// operand of the next product (FA2's register reuse), so P and dS never leave registers.
// Tiles: forward and dQ 64 query rows × 64 keys (32 keys when a head dim is 128), dK/dV 64 keys
// (32 with 2 warps when a head dim is 128) × 64 query rows (32) — all under 48 KB of static
// shared memory. Loads are plain 16-byte ones, not yet cp.async double-buffered.
// f32: SIMT kernels, a warp per query row (forward, dQ) or per key (dK/dV); the tests' dtype.

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

// ---------------------------------------------------------------------------------------------
// Tensor-core helpers.

__device__ __forceinline__ void ldsm_x4(uint32_t (&r)[4], const uint16_t* p) {
    uint32_t a = static_cast<uint32_t>(__cvta_generic_to_shared(p));
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a));
}

__device__ __forceinline__ void ldsm_x4_t(uint32_t (&r)[4], const uint16_t* p) {
    uint32_t a = static_cast<uint32_t>(__cvta_generic_to_shared(p));
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(a));
}

template <typename T>
struct Mma;

template <>
struct Mma<__nv_bfloat16> {
    // c (16×8, f32) += a (16×16) · b (16×8)
    static __device__ __forceinline__ void run(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
        asm volatile(
            "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
            "{%0,%1,%2,%3};\n"
            : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
    }
    // Two values as one 32-bit register, x in the low half (the lower column).
    static __device__ __forceinline__ uint32_t pack(float x, float y) {
        __nv_bfloat162 h = __floats2bfloat162_rn(x, y);
        return *reinterpret_cast<uint32_t*>(&h);
    }
};

template <>
struct Mma<__half> {
    static __device__ __forceinline__ void run(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
        asm volatile(
            "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
            "{%0,%1,%2,%3};\n"
            : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
    }
    static __device__ __forceinline__ uint32_t pack(float x, float y) {
        __half2 h = __floats2half2_rn(x, y);
        return *reinterpret_cast<uint32_t*>(&h);
    }
};

// Rows [0, rows) of a shared tile with row stride D + 8 halves from `rows_valid` consecutive global
// rows of D halves at `g` (16-byte aligned); rows past rows_valid are zeros.
template <int D, int THREADS>
__device__ __forceinline__ void load_tile(uint16_t* s, const void* g, int rows_valid, int rows) {
    constexpr int C = D / 8;  // 16-byte chunks per row
    const uint4* src = reinterpret_cast<const uint4*>(g);
    for (int idx = threadIdx.x; idx < rows * C; idx += THREADS) {
        const int r = idx / C, c = idx % C;
        uint4 val = make_uint4(0u, 0u, 0u, 0u);
        if (r < rows_valid) val = src[(size_t)r * C + c];
        *reinterpret_cast<uint4*>(s + r * (D + 8) + c * 8) = val;
    }
}

// The A operand of the 16×16 block at (row0, col0) of a shared tile with row stride `stride`.
__device__ __forceinline__ void ldsm_a(uint32_t (&r)[4], const uint16_t* s, int stride, int row0, int col0) {
    const int lane = threadIdx.x & 31;
    ldsm_x4(r, s + (row0 + (lane & 15)) * stride + col0 + (lane >> 4) * 8);
}

// B operands of B = Mᵀ for two 8-column blocks, M a shared tile whose rows are B's columns
// (n0..n0+15) and whose columns are the k (k0..k0+15): r[0..1] for columns n0..n0+7, r[2..3] for
// n0+8..n0+15.
__device__ __forceinline__ void ldsm_bt(uint32_t (&r)[4], const uint16_t* s, int stride, int n0, int k0) {
    const int lane = threadIdx.x & 31;
    ldsm_x4(r, s + (n0 + (lane & 7) + ((lane >> 4) << 3)) * stride + k0 + ((lane >> 3) & 1) * 8);
}

// B operands of B = M itself (rows k0..k0+15, columns n0..n0+15 of a shared tile), through the
// transposing load; r[0..1] for columns n0..n0+7, r[2..3] for n0+8..n0+15.
__device__ __forceinline__ void ldsm_b(uint32_t (&r)[4], const uint16_t* s, int stride, int k0, int n0) {
    const int lane = threadIdx.x & 31;
    ldsm_x4_t(r, s + (k0 + (lane & 7) + ((lane >> 3) & 1) * 8) * stride + n0 + (lane >> 4) * 8);
}

template <int DQ, int DV>
struct Tiles {
    static constexpr bool WIDE = DQ > 64 || DV > 64;
    static constexpr int BR = 64;                   // query rows of a forward / dQ block (4 warps × 16)
    static constexpr int BC = WIDE ? 32 : 64;       // keys per step of a forward / dQ block
    static constexpr int KV_WARPS = WIDE ? 2 : 4;   // warps of a dK/dV block (16 keys each)
    static constexpr int BK = 16 * KV_WARPS;        // keys of a dK/dV block
    static constexpr int BQ = WIDE ? 32 : 64;       // query rows per step of a dK/dV block
    static constexpr int SQ = DQ + 8, SV = DV + 8;  // shared row strides (halves)
};

// ---------------------------------------------------------------------------------------------
// Forward. grid (ceil(t / 64), g, bh); block 128.

template <typename T, int DQ, int DV>
__device__ __forceinline__ void fwd_mma(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
                                        T* __restrict__ o, float* __restrict__ lse, int t, int g, int kk, int causal) {
    using TL = Tiles<DQ, DV>;
    constexpr int BR = TL::BR, BC = TL::BC, SQ = TL::SQ, SV = TL::SV;
    __shared__ __align__(16) uint16_t sQ[BR * SQ];
    __shared__ __align__(16) uint16_t sK[BC * SQ];
    __shared__ __align__(16) uint16_t sV[BC * SV];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int gq = lane >> 2, tq = lane & 3;
    const int i0 = (gridDim.x - 1 - blockIdx.x) * BR;  // the longest (latest) query tiles first
    const int gh = blockIdx.y, bh = blockIdx.z;
    const int shift = kk - t;
    const size_t row0 = (size_t)bh * g * t + (size_t)gh * t + i0;
    const int rows_valid = min(BR, t - i0);
    const T* kb = k + (size_t)bh * kk * DQ;
    const T* vb = v + (size_t)bh * kk * DV;

    load_tile<DQ, 128>(sQ, q + row0 * DQ, rows_valid, BR);
    __syncthreads();
    uint32_t qf[DQ / 16][4];
#pragma unroll
    for (int c = 0; c < DQ / 16; ++c) ldsm_a(qf[c], sQ, SQ, warp * 16, c * 16);

    const int n_cols = causal ? min(kk, i0 + rows_valid - 1 + shift + 1) : kk;
    const int ia = i0 + warp * 16 + gq, ib = ia + 8;  // query positions of the thread's two rows
    float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};
    float acc[DV / 8][4];
#pragma unroll
    for (int n = 0; n < DV / 8; ++n) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.f;

    for (int j0 = 0; j0 < n_cols; j0 += BC) {
        __syncthreads();  // the previous tile's K and V are read
        load_tile<DQ, 128>(sK, kb + (size_t)j0 * DQ, min(BC, kk - j0), BC);
        load_tile<DV, 128>(sV, vb + (size_t)j0 * DV, min(BC, kk - j0), BC);
        __syncthreads();
        float s[BC / 8][4];
#pragma unroll
        for (int n = 0; n < BC / 8; ++n) s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.f;
#pragma unroll
        for (int c = 0; c < DQ / 16; ++c) {
#pragma unroll
            for (int n = 0; n < BC / 16; ++n) {
                uint32_t b[4];
                ldsm_bt(b, sK, SQ, n * 16, c * 16);
                Mma<T>::run(s[2 * n], qf[c], b[0], b[1]);
                Mma<T>::run(s[2 * n + 1], qf[c], b[2], b[3]);
            }
        }
        // Mask, row max (a row lives in the 4 lanes of a quad), rescale.
        float mx[2] = {m[0], m[1]};
#pragma unroll
        for (int n = 0; n < BC / 8; ++n) {
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int j = j0 + n * 8 + 2 * tq + (e & 1);
                const int i = e < 2 ? ia : ib;
                if (j >= kk || (causal && j > i + shift)) s[n][e] = -INFINITY;
                mx[e >> 1] = fmaxf(mx[e >> 1], s[n][e]);
            }
        }
        float base[2], alpha[2];
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            mx[h] = fmaxf(mx[h], __shfl_xor_sync(0xffffffffu, mx[h], 1));
            mx[h] = fmaxf(mx[h], __shfl_xor_sync(0xffffffffu, mx[h], 2));
            base[h] = mx[h] == -INFINITY ? 0.f : mx[h];  // a row with nothing visible yet
            alpha[h] = __expf(m[h] - base[h]);
            m[h] = mx[h];
            l[h] *= alpha[h];
        }
#pragma unroll
        for (int n = 0; n < BC / 8; ++n) {
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                s[n][e] = __expf(s[n][e] - base[e >> 1]);
                l[e >> 1] += s[n][e];
            }
        }
#pragma unroll
        for (int n = 0; n < DV / 8; ++n) {
            acc[n][0] *= alpha[0];
            acc[n][1] *= alpha[0];
            acc[n][2] *= alpha[1];
            acc[n][3] *= alpha[1];
        }
        // O += P·V
#pragma unroll
        for (int c = 0; c < BC / 16; ++c) {
            const uint32_t a[4] = {Mma<T>::pack(s[2 * c][0], s[2 * c][1]), Mma<T>::pack(s[2 * c][2], s[2 * c][3]),
                                   Mma<T>::pack(s[2 * c + 1][0], s[2 * c + 1][1]),
                                   Mma<T>::pack(s[2 * c + 1][2], s[2 * c + 1][3])};
#pragma unroll
            for (int n = 0; n < DV / 16; ++n) {
                uint32_t b[4];
                ldsm_b(b, sV, SV, c * 16, n * 16);
                Mma<T>::run(acc[2 * n], a, b[0], b[1]);
                Mma<T>::run(acc[2 * n + 1], a, b[2], b[3]);
            }
        }
    }
#pragma unroll
    for (int h = 0; h < 2; ++h) {
        l[h] += __shfl_xor_sync(0xffffffffu, l[h], 1);
        l[h] += __shfl_xor_sync(0xffffffffu, l[h], 2);
        const int i = h ? ib : ia;
        if (i < t) {
            const size_t row = (size_t)bh * g * t + (size_t)gh * t + i;
            const float inv = 1.f / l[h];
            uint32_t* orow = reinterpret_cast<uint32_t*>(o + row * DV);
#pragma unroll
            for (int n = 0; n < DV / 8; ++n)
                orow[n * 4 + tq] = Mma<T>::pack(acc[n][2 * h] * inv, acc[n][2 * h + 1] * inv);
            if (tq == 0) lse[row] = m[h] + __logf(l[h]);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// dQ = dS·K with dS = P ⊙ (dO·Vᵀ − D), P = exp(Q·Kᵀ − L). grid (ceil(t / 64), g, bh); block 128.

template <typename T, int DQ, int DV>
__device__ __forceinline__ void bwd_dq_mma(const T* __restrict__ q, const T* __restrict__ k, const T* __restrict__ v,
                                           const T* __restrict__ dout, const float* __restrict__ lse,
                                           const float* __restrict__ dsum, T* __restrict__ dq, int t, int g, int kk,
                                           int causal) {
    using TL = Tiles<DQ, DV>;
    constexpr int BR = TL::BR, BC = TL::BC, SQ = TL::SQ, SV = TL::SV;
    constexpr int SW = SQ > SV ? SQ : SV;
    __shared__ __align__(16) uint16_t sStage[BR * SW];  // Q, then dO, on their way to registers
    __shared__ __align__(16) uint16_t sK[BC * SQ];
    __shared__ __align__(16) uint16_t sV[BC * SV];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int gq = lane >> 2, tq = lane & 3;
    const int i0 = (gridDim.x - 1 - blockIdx.x) * BR;
    const int gh = blockIdx.y, bh = blockIdx.z;
    const int shift = kk - t;
    const size_t row0 = (size_t)bh * g * t + (size_t)gh * t + i0;
    const int rows_valid = min(BR, t - i0);
    const T* kb = k + (size_t)bh * kk * DQ;
    const T* vb = v + (size_t)bh * kk * DV;

    uint32_t qf[DQ / 16][4], df[DV / 16][4];
    load_tile<DQ, 128>(sStage, q + row0 * DQ, rows_valid, BR);
    __syncthreads();
#pragma unroll
    for (int c = 0; c < DQ / 16; ++c) ldsm_a(qf[c], sStage, SQ, warp * 16, c * 16);
    __syncthreads();
    load_tile<DV, 128>(sStage, dout + row0 * DV, rows_valid, BR);
    __syncthreads();
#pragma unroll
    for (int c = 0; c < DV / 16; ++c) ldsm_a(df[c], sStage, SV, warp * 16, c * 16);

    const int ia = i0 + warp * 16 + gq, ib = ia + 8;
    float L[2], Dd[2];
    L[0] = ia < t ? lse[row0 + warp * 16 + gq] : 0.f;
    L[1] = ib < t ? lse[row0 + warp * 16 + gq + 8] : 0.f;
    Dd[0] = ia < t ? dsum[row0 + warp * 16 + gq] : 0.f;
    Dd[1] = ib < t ? dsum[row0 + warp * 16 + gq + 8] : 0.f;
    const int n_cols = causal ? min(kk, i0 + rows_valid - 1 + shift + 1) : kk;
    float acc[DQ / 8][4];
#pragma unroll
    for (int n = 0; n < DQ / 8; ++n) acc[n][0] = acc[n][1] = acc[n][2] = acc[n][3] = 0.f;

    for (int j0 = 0; j0 < n_cols; j0 += BC) {
        __syncthreads();
        load_tile<DQ, 128>(sK, kb + (size_t)j0 * DQ, min(BC, kk - j0), BC);
        load_tile<DV, 128>(sV, vb + (size_t)j0 * DV, min(BC, kk - j0), BC);
        __syncthreads();
        float s[BC / 8][4], dp[BC / 8][4];
#pragma unroll
        for (int n = 0; n < BC / 8; ++n) {
            s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.f;
            dp[n][0] = dp[n][1] = dp[n][2] = dp[n][3] = 0.f;
        }
#pragma unroll
        for (int c = 0; c < DQ / 16; ++c) {
#pragma unroll
            for (int n = 0; n < BC / 16; ++n) {
                uint32_t b[4];
                ldsm_bt(b, sK, SQ, n * 16, c * 16);
                Mma<T>::run(s[2 * n], qf[c], b[0], b[1]);
                Mma<T>::run(s[2 * n + 1], qf[c], b[2], b[3]);
            }
        }
#pragma unroll
        for (int c = 0; c < DV / 16; ++c) {
#pragma unroll
            for (int n = 0; n < BC / 16; ++n) {
                uint32_t b[4];
                ldsm_bt(b, sV, SV, n * 16, c * 16);
                Mma<T>::run(dp[2 * n], df[c], b[0], b[1]);
                Mma<T>::run(dp[2 * n + 1], df[c], b[2], b[3]);
            }
        }
        // dS in place of S.
#pragma unroll
        for (int n = 0; n < BC / 8; ++n) {
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                const int j = j0 + n * 8 + 2 * tq + (e & 1);
                const int i = e < 2 ? ia : ib;
                const bool seen = j < kk && !(causal && j > i + shift);
                const float p = seen ? __expf(s[n][e] - L[e >> 1]) : 0.f;
                s[n][e] = p * (dp[n][e] - Dd[e >> 1]);
            }
        }
        // dQ += dS·K
#pragma unroll
        for (int c = 0; c < BC / 16; ++c) {
            const uint32_t a[4] = {Mma<T>::pack(s[2 * c][0], s[2 * c][1]), Mma<T>::pack(s[2 * c][2], s[2 * c][3]),
                                   Mma<T>::pack(s[2 * c + 1][0], s[2 * c + 1][1]),
                                   Mma<T>::pack(s[2 * c + 1][2], s[2 * c + 1][3])};
#pragma unroll
            for (int n = 0; n < DQ / 16; ++n) {
                uint32_t b[4];
                ldsm_b(b, sK, SQ, c * 16, n * 16);
                Mma<T>::run(acc[2 * n], a, b[0], b[1]);
                Mma<T>::run(acc[2 * n + 1], a, b[2], b[3]);
            }
        }
    }
#pragma unroll
    for (int h = 0; h < 2; ++h) {
        const int i = h ? ib : ia;
        if (i < t) {
            uint32_t* row = reinterpret_cast<uint32_t*>(dq + (row0 + warp * 16 + gq + 8 * h) * DQ);
#pragma unroll
            for (int n = 0; n < DQ / 8; ++n) row[n * 4 + tq] = Mma<T>::pack(acc[n][2 * h], acc[n][2 * h + 1]);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// dV = Pᵀ·dO and dK = dSᵀ·Q for one key tile over every query row of the group that sees it (the
// g heads' sum of GQA falls out of the loop). Computed transposed — keys are the rows — so that
// Pᵀ and dSᵀ come out of the accumulators as A operands. grid (ceil(kk / BK), bh); block 32·KV_WARPS.

template <typename T, int DQ, int DV>
__device__ __forceinline__ void bwd_dkv_mma(const T* __restrict__ q, const T* __restrict__ k,
                                            const T* __restrict__ v, const T* __restrict__ dout,
                                            const float* __restrict__ lse, const float* __restrict__ dsum,
                                            T* __restrict__ dk, T* __restrict__ dv, int t, int g, int kk, int causal) {
    using TL = Tiles<DQ, DV>;
    constexpr int BK = TL::BK, BQ = TL::BQ, SQ = TL::SQ, SV = TL::SV;
    constexpr int THREADS = 32 * TL::KV_WARPS;
    __shared__ __align__(16) uint16_t sK[BK * SQ];
    __shared__ __align__(16) uint16_t sV[BK * SV];
    __shared__ __align__(16) uint16_t sQ[BQ * SQ];
    __shared__ __align__(16) uint16_t sO[BQ * SV];  // dO
    __shared__ float sL[BQ], sD[BQ];
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int gq = lane >> 2, tq = lane & 3;
    const int j0 = blockIdx.x * BK;
    const int bh = blockIdx.y;
    const int shift = kk - t;
    const int keys_valid = min(BK, kk - j0);
    load_tile<DQ, THREADS>(sK, k + ((size_t)bh * kk + j0) * DQ, keys_valid, BK);
    load_tile<DV, THREADS>(sV, v + ((size_t)bh * kk + j0) * DV, keys_valid, BK);

    const int ja = j0 + warp * 16 + gq, jb = ja + 8;  // the thread's two keys
    float accv[DV / 8][4], acck[DQ / 8][4];
#pragma unroll
    for (int n = 0; n < DV / 8; ++n) accv[n][0] = accv[n][1] = accv[n][2] = accv[n][3] = 0.f;
#pragma unroll
    for (int n = 0; n < DQ / 8; ++n) acck[n][0] = acck[n][1] = acck[n][2] = acck[n][3] = 0.f;

    // Queries i see this tile's first key iff i ≥ j0 − shift.
    const int i_first = causal ? max(0, j0 - shift) / BQ * BQ : 0;
    for (int gh = 0; gh < g; ++gh) {
        for (int i0 = i_first; i0 < t; i0 += BQ) {
            const size_t row0 = (size_t)bh * g * t + (size_t)gh * t + i0;
            const int rows_valid = min(BQ, t - i0);
            __syncthreads();  // the previous step's tiles are read (and, first, K and V are written)
            load_tile<DQ, THREADS>(sQ, q + row0 * DQ, rows_valid, BQ);
            load_tile<DV, THREADS>(sO, dout + row0 * DV, rows_valid, BQ);
            for (int r = threadIdx.x; r < BQ; r += THREADS) {
                sL[r] = r < rows_valid ? lse[row0 + r] : 0.f;
                sD[r] = r < rows_valid ? dsum[row0 + r] : 0.f;
            }
            __syncthreads();
            // Sᵀ = K·Qᵀ and dPᵀ = V·dOᵀ: (16 keys × BQ queries) per warp.
            float s[BQ / 8][4], dp[BQ / 8][4];
#pragma unroll
            for (int n = 0; n < BQ / 8; ++n) {
                s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.f;
                dp[n][0] = dp[n][1] = dp[n][2] = dp[n][3] = 0.f;
            }
#pragma unroll
            for (int c = 0; c < DQ / 16; ++c) {
                uint32_t a[4];
                ldsm_a(a, sK, SQ, warp * 16, c * 16);
#pragma unroll
                for (int n = 0; n < BQ / 16; ++n) {
                    uint32_t b[4];
                    ldsm_bt(b, sQ, SQ, n * 16, c * 16);
                    Mma<T>::run(s[2 * n], a, b[0], b[1]);
                    Mma<T>::run(s[2 * n + 1], a, b[2], b[3]);
                }
            }
#pragma unroll
            for (int c = 0; c < DV / 16; ++c) {
                uint32_t a[4];
                ldsm_a(a, sV, SV, warp * 16, c * 16);
#pragma unroll
                for (int n = 0; n < BQ / 16; ++n) {
                    uint32_t b[4];
                    ldsm_bt(b, sO, SV, n * 16, c * 16);
                    Mma<T>::run(dp[2 * n], a, b[0], b[1]);
                    Mma<T>::run(dp[2 * n + 1], a, b[2], b[3]);
                }
            }
            // Pᵀ in s, dSᵀ in dp.
#pragma unroll
            for (int n = 0; n < BQ / 8; ++n) {
#pragma unroll
                for (int e = 0; e < 4; ++e) {
                    const int col = n * 8 + 2 * tq + (e & 1);
                    const int i = i0 + col;
                    const int j = e < 2 ? ja : jb;
                    const bool seen = col < rows_valid && !(causal && j > i + shift);
                    const float p = seen ? __expf(s[n][e] - sL[col]) : 0.f;
                    s[n][e] = p;
                    dp[n][e] = p * (dp[n][e] - sD[col]);
                }
            }
            // dV += Pᵀ·dO, dK += dSᵀ·Q
#pragma unroll
            for (int c = 0; c < BQ / 16; ++c) {
                const uint32_t a[4] = {Mma<T>::pack(s[2 * c][0], s[2 * c][1]), Mma<T>::pack(s[2 * c][2], s[2 * c][3]),
                                       Mma<T>::pack(s[2 * c + 1][0], s[2 * c + 1][1]),
                                       Mma<T>::pack(s[2 * c + 1][2], s[2 * c + 1][3])};
#pragma unroll
                for (int n = 0; n < DV / 16; ++n) {
                    uint32_t b[4];
                    ldsm_b(b, sO, SV, c * 16, n * 16);
                    Mma<T>::run(accv[2 * n], a, b[0], b[1]);
                    Mma<T>::run(accv[2 * n + 1], a, b[2], b[3]);
                }
                const uint32_t ds[4] = {Mma<T>::pack(dp[2 * c][0], dp[2 * c][1]),
                                        Mma<T>::pack(dp[2 * c][2], dp[2 * c][3]),
                                        Mma<T>::pack(dp[2 * c + 1][0], dp[2 * c + 1][1]),
                                        Mma<T>::pack(dp[2 * c + 1][2], dp[2 * c + 1][3])};
#pragma unroll
                for (int n = 0; n < DQ / 16; ++n) {
                    uint32_t b[4];
                    ldsm_b(b, sQ, SQ, c * 16, n * 16);
                    Mma<T>::run(acck[2 * n], ds, b[0], b[1]);
                    Mma<T>::run(acck[2 * n + 1], ds, b[2], b[3]);
                }
            }
        }
    }
#pragma unroll
    for (int h = 0; h < 2; ++h) {
        const int j = h ? jb : ja;
        if (j < kk) {
            uint32_t* vrow = reinterpret_cast<uint32_t*>(dv + ((size_t)bh * kk + j) * DV);
#pragma unroll
            for (int n = 0; n < DV / 8; ++n) vrow[n * 4 + tq] = Mma<T>::pack(accv[n][2 * h], accv[n][2 * h + 1]);
            uint32_t* krow = reinterpret_cast<uint32_t*>(dk + ((size_t)bh * kk + j) * DQ);
#pragma unroll
            for (int n = 0; n < DQ / 8; ++n) krow[n * 4 + tq] = Mma<T>::pack(acck[n][2 * h], acck[n][2 * h + 1]);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// D = rowsum(dO ⊙ O) in f32, a warp per row. grid ceil(rows / 8); block 256.

__device__ __forceinline__ float to_f32(float x) { return x; }
__device__ __forceinline__ float to_f32(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_f32(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename T>
__device__ __forceinline__ void bwd_dot(const T* __restrict__ dout, const T* __restrict__ o, float* __restrict__ dsum,
                                        int rows, int dv) {
    const int row = blockIdx.x * 8 + (threadIdx.x >> 5), lane = threadIdx.x & 31;
    if (row >= rows) return;
    float s = 0.f;
    for (int d = lane; d < dv; d += 32) s += to_f32(dout[(size_t)row * dv + d]) * to_f32(o[(size_t)row * dv + d]);
    for (int off = 16; off > 0; off >>= 1) s += __shfl_xor_sync(0xffffffffu, s, off);
    if (lane == 0) dsum[row] = s;
}

// ---------------------------------------------------------------------------------------------
// f32 SIMT kernels (head dims up to 128): a warp per query row (forward, dQ) or key (dK/dV); the
// lanes take 32 keys (rows) at a time, then own head dims lane, lane + 32, ... for the sums.
// grid (ceil(rows / 8), bh); block 256.

#define F32_MAX_D 128

extern "C" __global__ void __launch_bounds__(256)
    fa_fwd_f32(const float* __restrict__ q, const float* __restrict__ k, const float* __restrict__ v,
               float* __restrict__ o, float* __restrict__ lse, int t, int g, int kk, int causal, int dq, int dv) {
    __shared__ float sq[8][F32_MAX_D];
    const int w = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int r = blockIdx.x * 8 + w, bh = blockIdx.y;
    const int rows = g * t;
    if (r >= rows) return;  // whole warps leave; no block barrier below
    const size_t row = (size_t)bh * rows + r;
    for (int d = lane; d < dq; d += 32) sq[w][d] = q[row * dq + d];
    __syncwarp();
    const int i = r % t;
    const int n_cols = causal ? min(kk, i + kk - t + 1) : kk;
    const float* kb = k + (size_t)bh * kk * dq;
    const float* vb = v + (size_t)bh * kk * dv;
    float m = -INFINITY, l = 0.f, acc[F32_MAX_D / 32];
    for (int c = 0; c < F32_MAX_D / 32; ++c) acc[c] = 0.f;
    for (int j0 = 0; j0 < n_cols; j0 += 32) {
        const int j = j0 + lane;
        float s = -INFINITY;
        if (j < n_cols) {
            s = 0.f;
            for (int d = 0; d < dq; ++d) s += sq[w][d] * kb[(size_t)j * dq + d];
        }
        float mx = s;
        for (int off = 16; off > 0; off >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, off));
        const float m_new = fmaxf(m, mx);  // finite: column j0 is visible
        const float alpha = __expf(m - m_new);
        const float p = j < n_cols ? __expf(s - m_new) : 0.f;
        float ps = p;
        for (int off = 16; off > 0; off >>= 1) ps += __shfl_xor_sync(0xffffffffu, ps, off);
        l = l * alpha + ps;
        m = m_new;
        for (int c = 0; c < F32_MAX_D / 32; ++c) acc[c] *= alpha;
        const int n = min(32, n_cols - j0);
        for (int jj = 0; jj < n; ++jj) {
            const float pj = __shfl_sync(0xffffffffu, p, jj);
            for (int c = 0; c < F32_MAX_D / 32; ++c) {
                const int d = lane + 32 * c;
                if (d < dv) acc[c] += pj * vb[(size_t)(j0 + jj) * dv + d];
            }
        }
    }
    const float inv = 1.f / l;
    for (int c = 0; c < F32_MAX_D / 32; ++c) {
        const int d = lane + 32 * c;
        if (d < dv) o[row * dv + d] = acc[c] * inv;
    }
    if (lane == 0) lse[row] = m + __logf(l);
}

extern "C" __global__ void __launch_bounds__(256)
    fa_bwd_dq_f32(const float* __restrict__ q, const float* __restrict__ k, const float* __restrict__ v,
                  const float* __restrict__ dout, const float* __restrict__ lse, const float* __restrict__ dsum,
                  float* __restrict__ dq_out, int t, int g, int kk, int causal, int dq, int dv) {
    __shared__ float sq[8][F32_MAX_D], sdo[8][F32_MAX_D];
    const int w = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int r = blockIdx.x * 8 + w, bh = blockIdx.y;
    const int rows = g * t;
    if (r >= rows) return;
    const size_t row = (size_t)bh * rows + r;
    for (int d = lane; d < dq; d += 32) sq[w][d] = q[row * dq + d];
    for (int d = lane; d < dv; d += 32) sdo[w][d] = dout[row * dv + d];
    __syncwarp();
    const float L = lse[row], D = dsum[row];
    const int i = r % t;
    const int n_cols = causal ? min(kk, i + kk - t + 1) : kk;
    const float* kb = k + (size_t)bh * kk * dq;
    const float* vb = v + (size_t)bh * kk * dv;
    float acc[F32_MAX_D / 32];
    for (int c = 0; c < F32_MAX_D / 32; ++c) acc[c] = 0.f;
    for (int j0 = 0; j0 < n_cols; j0 += 32) {
        const int j = j0 + lane;
        float ds = 0.f;
        if (j < n_cols) {
            float s = 0.f, dp = 0.f;
            for (int d = 0; d < dq; ++d) s += sq[w][d] * kb[(size_t)j * dq + d];
            for (int d = 0; d < dv; ++d) dp += sdo[w][d] * vb[(size_t)j * dv + d];
            ds = __expf(s - L) * (dp - D);
        }
        const int n = min(32, n_cols - j0);
        for (int jj = 0; jj < n; ++jj) {
            const float dsj = __shfl_sync(0xffffffffu, ds, jj);
            for (int c = 0; c < F32_MAX_D / 32; ++c) {
                const int d = lane + 32 * c;
                if (d < dq) acc[c] += dsj * kb[(size_t)(j0 + jj) * dq + d];
            }
        }
    }
    for (int c = 0; c < F32_MAX_D / 32; ++c) {
        const int d = lane + 32 * c;
        if (d < dq) dq_out[row * dq + d] = acc[c];
    }
}

extern "C" __global__ void __launch_bounds__(256)
    fa_bwd_dkv_f32(const float* __restrict__ q, const float* __restrict__ k, const float* __restrict__ v,
                   const float* __restrict__ dout, const float* __restrict__ lse, const float* __restrict__ dsum,
                   float* __restrict__ dk, float* __restrict__ dv_out, int t, int g, int kk, int causal, int dq,
                   int dv) {
    __shared__ float sk[8][F32_MAX_D], sv[8][F32_MAX_D];
    const int w = threadIdx.x >> 5, lane = threadIdx.x & 31;
    const int j = blockIdx.x * 8 + w, bh = blockIdx.y;
    if (j >= kk) return;
    const size_t key = (size_t)bh * kk + j;
    for (int d = lane; d < dq; d += 32) sk[w][d] = k[key * dq + d];
    for (int d = lane; d < dv; d += 32) sv[w][d] = v[key * dv + d];
    __syncwarp();
    const int rows = g * t, shift = kk - t;
    const float* qb = q + (size_t)bh * rows * dq;
    const float* ob = dout + (size_t)bh * rows * dv;
    const float* lb = lse + (size_t)bh * rows;
    const float* db = dsum + (size_t)bh * rows;
    float ak[F32_MAX_D / 32], av[F32_MAX_D / 32];
    for (int c = 0; c < F32_MAX_D / 32; ++c) ak[c] = av[c] = 0.f;
    for (int r0 = 0; r0 < rows; r0 += 32) {
        const int r = r0 + lane;
        float p = 0.f, ds = 0.f;
        if (r < rows && !(causal && j > r % t + shift)) {
            float s = 0.f, dp = 0.f;
            for (int d = 0; d < dq; ++d) s += qb[(size_t)r * dq + d] * sk[w][d];
            for (int d = 0; d < dv; ++d) dp += ob[(size_t)r * dv + d] * sv[w][d];
            p = __expf(s - lb[r]);
            ds = p * (dp - db[r]);
        }
        const int n = min(32, rows - r0);
        for (int rr = 0; rr < n; ++rr) {
            const float pr = __shfl_sync(0xffffffffu, p, rr);
            const float dsr = __shfl_sync(0xffffffffu, ds, rr);
            for (int c = 0; c < F32_MAX_D / 32; ++c) {
                const int d = lane + 32 * c;
                if (d < dv) av[c] += pr * ob[(size_t)(r0 + rr) * dv + d];
                if (d < dq) ak[c] += dsr * qb[(size_t)(r0 + rr) * dq + d];
            }
        }
    }
    for (int c = 0; c < F32_MAX_D / 32; ++c) {
        const int d = lane + 32 * c;
        if (d < dv) dv_out[key * dv + d] = av[c];
        if (d < dq) dk[key * dq + d] = ak[c];
    }
}

// ---------------------------------------------------------------------------------------------
// Entry points: fa_{fwd,bwd_dq,bwd_dkv}_{bf16,f16}_q{DQ}_v{DV} and fa_bwd_dot_{f32,f16,bf16}.

#define FA_MMA(SUFFIX, T, DQ, DV)                                                                                  \
    extern "C" __global__ void __launch_bounds__(128) fa_fwd_##SUFFIX##_q##DQ##_v##DV(                            \
        const T* q, const T* k, const T* v, T* o, float* lse, int t, int g, int kk, int causal) {                 \
        fwd_mma<T, DQ, DV>(q, k, v, o, lse, t, g, kk, causal);                                                     \
    }                                                                                                              \
    extern "C" __global__ void __launch_bounds__(128) fa_bwd_dq_##SUFFIX##_q##DQ##_v##DV(                         \
        const T* q, const T* k, const T* v, const T* dout, const float* lse, const float* dsum, T* dq, int t,      \
        int g, int kk, int causal) {                                                                               \
        bwd_dq_mma<T, DQ, DV>(q, k, v, dout, lse, dsum, dq, t, g, kk, causal);                                     \
    }                                                                                                              \
    extern "C" __global__ void __launch_bounds__(32 * Tiles<DQ, DV>::KV_WARPS) fa_bwd_dkv_##SUFFIX##_q##DQ##_v##DV( \
        const T* q, const T* k, const T* v, const T* dout, const float* lse, const float* dsum, T* dk, T* dv,      \
        int t, int g, int kk, int causal) {                                                                        \
        bwd_dkv_mma<T, DQ, DV>(q, k, v, dout, lse, dsum, dk, dv, t, g, kk, causal);                                \
    }

#define FA_DV(SUFFIX, T, DQ) \
    FA_MMA(SUFFIX, T, DQ, 16) FA_MMA(SUFFIX, T, DQ, 32) FA_MMA(SUFFIX, T, DQ, 64) FA_MMA(SUFFIX, T, DQ, 128)
#define FA_DTYPE(SUFFIX, T) \
    FA_DV(SUFFIX, T, 16) FA_DV(SUFFIX, T, 32) FA_DV(SUFFIX, T, 64) FA_DV(SUFFIX, T, 128)

FA_DTYPE(bf16, __nv_bfloat16)
FA_DTYPE(f16, __half)

#define FA_DOT(SUFFIX, T)                                                                            \
    extern "C" __global__ void __launch_bounds__(256)                                                \
        fa_bwd_dot_##SUFFIX(const T* dout, const T* o, float* dsum, int rows, int dv) {              \
        bwd_dot<T>(dout, o, dsum, rows, dv);                                                         \
    }
FA_DOT(f32, float)
FA_DOT(f16, __half)
FA_DOT(bf16, __nv_bfloat16)
