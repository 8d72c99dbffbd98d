// Metal twin of kernels/decode_attention.cu: the fused single-token attention over a KV cache for
// standard/GQA and Decoupled Bottleneck Attention, structurally parallel to the CUDA kernel
// (same segments, same storage kinds, same partial + combine split). NOT BUILT OR RUN HERE: this
// project's machines have no Mac; nothing in the Rust crate loads it yet (docs/gpu.md).
//
//   score_j = s_sem · <q_sem, k_sem_j> + s_geo · <q_geo, k_geo_j>,   out = softmax(score) · V
//
// Threadgroup (kv head × sub-group, split) of 128 threads = 4 SIMD groups of 32: scores for up to
// MAXG query heads in threadgroup memory, per-head max/sum, softmax-weighted V, partial
// (max, sum, acc[dv]) per query head; `decode_combine` merges splits and the optional null key.

#include <metal_stdlib>
using namespace metal;

#define MAXG 8
#define THREADS 128
#define SIMDS (THREADS / 32)

enum Kind : int { F32 = 0, F16 = 1, BF16 = 2, Q8_0 = 3, Q4_0 = 4 };

struct Segment {
    ulong head_stride;  // bytes
    ulong row_stride;   // bytes
    int dim;            // elements: a multiple of 8 (32 for quantized kinds)
};

struct Params {
    Segment ks, kg, vs;
    int n_kv, group, n_sub, len, split_len;
    float s_sem, s_geo;
};

static inline float bf16_to_float(ushort b) { return as_type<float>(uint(b) << 16); }

// Elements [8c, 8c + 8) of a row of kind K.
template <int K>
static inline void load8(device const uchar* row, int c, thread float x[8]) {
    if (K == F32) {
        device const float4* p = (device const float4*)(row + c * 32);
        float4 a = p[0], b = p[1];
        x[0] = a.x; x[1] = a.y; x[2] = a.z; x[3] = a.w; x[4] = b.x; x[5] = b.y; x[6] = b.z; x[7] = b.w;
    } else if (K == F16) {
        device const half* p = (device const half*)(row + c * 16);
        for (int i = 0; i < 8; ++i) x[i] = float(p[i]);
    } else if (K == BF16) {
        device const ushort* p = (device const ushort*)(row + c * 16);
        for (int i = 0; i < 8; ++i) x[i] = bf16_to_float(p[i]);
    } else if (K == Q8_0) {
        device const uchar* blk = row + (c >> 2) * 34;
        float d = float(*(device const half*)blk);
        device const char* q = (device const char*)(blk + 2 + (c & 3) * 8);
        for (int i = 0; i < 8; ++i) x[i] = d * float(q[i]);
    } else {  // Q4_0: element i < 16 in the low nibble of byte i, i + 16 in its high nibble
        device const uchar* blk = row + (c >> 2) * 18;
        float d = float(*(device const half*)blk);
        device const uchar* q = blk + 2 + (c & 1) * 8;
        int shift = (c & 2) ? 4 : 0;
        for (int i = 0; i < 8; ++i) x[i] = d * float(int((q[i] >> shift) & 0xf) - 8);
    }
}

static inline int pow2_at_least(int n) {
    int p = 1;
    while (p < n) p <<= 1;
    return p;
}

template <int KS, int KG, int KV>
static void partial_impl(device const float* q, device const uchar* ks_base, device const uchar* kg_base,
                         device const uchar* v_base, constant Params& p, device float* part_acc,
                         device float* part_ml, threadgroup float* smem_raw, uint2 tg, uint tid,
                         uint splits) {
    threadgroup float* red = smem_raw;              // [MAXG][2]
    threadgroup float* smem = smem_raw + 2 * MAXG;  // scores [MAXG][split_len], then [SIMDS][MAXG][dv]
    const int sub = int(tg.x) % p.n_sub;
    const int hk = int(tg.x) / p.n_sub;
    const int b = hk / p.n_kv, kvh = hk % p.n_kv;
    const int h0 = kvh * p.group + sub * MAXG;
    const int gq = min(MAXG, p.group - sub * MAXG);
    const int n_heads = p.n_kv * p.group;
    const int split = int(tg.y);
    const int start = split * p.split_len;
    const int n = min(p.len, start + p.split_len) - start;
    const int warp = int(tid) / 32, lane = int(tid) % 32;
    const int dk = p.ks.dim + p.kg.dim;
    const int cs = p.ks.dim / 8, cg = p.kg.dim / 8;
    const int lpt = pow2_at_least(cs + cg), tpw = 32 / lpt, lg = lane % lpt;

    float qr[MAXG][8];
    for (int h = 0; h < MAXG; ++h)
        for (int e = 0; e < 8; ++e) {
            float v = 0.f;
            if (h < gq && lg < cs + cg)
                v = (lg < cs ? p.s_sem : p.s_geo) * q[(b * n_heads + h0 + h) * dk + lg * 8 + e];
            qr[h][e] = v;
        }
    device const uchar* kbs = ks_base + hk * p.ks.head_stride;
    device const uchar* kbg = kg_base + hk * p.kg.head_stride;
    for (int j0 = warp * tpw; j0 < n; j0 += SIMDS * tpw) {
        int j = j0 + lane / lpt;
        float part[MAXG];
        for (int h = 0; h < MAXG; ++h) part[h] = 0.f;
        if (j < n && lg < cs + cg) {
            float x[8];
            if (lg < cs) load8<KS>(kbs + (start + j) * p.ks.row_stride, lg, x);
            else load8<KG>(kbg + (start + j) * p.kg.row_stride, lg - cs, x);
            for (int h = 0; h < MAXG; ++h)
                for (int e = 0; e < 8; ++e) part[h] += qr[h][e] * x[e];
        }
        for (int h = 0; h < MAXG; ++h)
            for (ushort off = ushort(lpt / 2); off > 0; off >>= 1) part[h] += simd_shuffle_xor(part[h], off);
        if (j < n && lg == 0)
            for (int h = 0; h < gq; ++h) smem[h * p.split_len + j] = part[h];
    }
    threadgroup_barrier(mem_flags::mem_threadgroup);

    for (int h = warp; h < gq; h += SIMDS) {
        threadgroup float* s = smem + h * p.split_len;
        float m = -INFINITY;
        for (int j = lane; j < n; j += 32) m = max(m, s[j]);
        m = simd_max(m);
        float l = 0.f;
        for (int j = lane; j < n; j += 32) {
            float e = exp(s[j] - m);
            s[j] = e;
            l += e;
        }
        l = simd_sum(l);
        if (lane == 0) {
            red[2 * h] = m;
            red[2 * h + 1] = l;
        }
    }
    threadgroup_barrier(mem_flags::mem_threadgroup);

    const int cv = p.vs.dim / 8, lpv = pow2_at_least(cv), tpv = 32 / lpv, lv = lane % lpv;
    float acc[MAXG][8];
    for (int h = 0; h < MAXG; ++h)
        for (int e = 0; e < 8; ++e) acc[h][e] = 0.f;
    device const uchar* vb = v_base + hk * p.vs.head_stride;
    for (int j0 = warp * tpv; j0 < n; j0 += SIMDS * tpv) {
        int j = j0 + lane / lpv;
        if (j < n && lv < cv) {
            float x[8];
            load8<KV>(vb + (start + j) * p.vs.row_stride, lv, x);
            for (int h = 0; h < gq; ++h) {
                float w = smem[h * p.split_len + j];
                for (int e = 0; e < 8; ++e) acc[h][e] += w * x[e];
            }
        }
    }
    for (int h = 0; h < MAXG; ++h)
        for (int e = 0; e < 8; ++e)
            for (ushort off = ushort(lpv); off < 32; off <<= 1) acc[h][e] += simd_shuffle_xor(acc[h][e], off);
    threadgroup_barrier(mem_flags::mem_threadgroup);
    const int dv = p.vs.dim;
    if (lane < lpv && lv < cv)
        for (int h = 0; h < gq; ++h)
            for (int e = 0; e < 8; ++e) smem[(warp * MAXG + h) * dv + lv * 8 + e] = acc[h][e];
    threadgroup_barrier(mem_flags::mem_threadgroup);
    for (int i = int(tid); i < gq * dv; i += THREADS) {
        int h = i / dv, d = i % dv;
        float s = 0.f;
        for (int w = 0; w < SIMDS; ++w) s += smem[(w * MAXG + h) * dv + d];
        uint row = uint(b * n_heads + h0 + h) * splits + uint(split);
        part_acc[row * dv + d] = s;
        if (d == 0) {
            part_ml[row * 2] = red[2 * h];
            part_ml[row * 2 + 1] = red[2 * h + 1];
        }
    }
}

#define PARTIAL(NAME, KS, KG, KV)                                                                      \
    kernel void NAME(device const float* q [[buffer(0)]], device const uchar* ks [[buffer(1)]],         \
                     device const uchar* kg [[buffer(2)]], device const uchar* vs [[buffer(3)]],        \
                     constant Params& p [[buffer(4)]], device float* part_acc [[buffer(5)]],             \
                     device float* part_ml [[buffer(6)]], threadgroup float* smem [[threadgroup(0)]],   \
                     uint2 tg [[threadgroup_position_in_grid]], uint2 ntg [[threadgroups_per_grid]],     \
                     uint tid [[thread_index_in_threadgroup]]) {                                          \
        partial_impl<KS, KG, KV>(q, ks, kg, vs, p, part_acc, part_ml, smem, tg, tid, ntg.y);              \
    }

PARTIAL(decode_partial_f32, F32, F32, F32)
PARTIAL(decode_partial_f16, F16, F16, F16)
PARTIAL(decode_partial_bf16, BF16, BF16, BF16)
PARTIAL(decode_partial_q8_0, Q8_0, Q8_0, Q8_0)
PARTIAL(decode_partial_q4_0, Q4_0, Q4_0, Q4_0)
PARTIAL(decode_partial_q8_0_q8_0_q4_0, Q8_0, Q8_0, Q4_0)
PARTIAL(decode_partial_q4_0_q8_0_q4_0, Q4_0, Q8_0, Q4_0)

struct CombineParams {
    int splits, dv, sem_dim, geo_dim, group, n_kv, has_null;
    float s_sem, s_geo;
};

// One threadgroup per (batch, query head); out in f32 (the launcher converts).
kernel void decode_combine(device const float* part_acc [[buffer(0)]], device const float* part_ml [[buffer(1)]],
                           device const float* q [[buffer(2)]], device const float* k_null [[buffer(3)]],
                           device const float* v_null [[buffer(4)]], constant CombineParams& p [[buffer(5)]],
                           device float* out [[buffer(6)]], uint bh [[threadgroup_position_in_grid]],
                           uint tid [[thread_index_in_threadgroup]]) {
    threadgroup float red[SIMDS];
    const int kvh = (int(bh) % (p.n_kv * p.group)) / p.group;
    const int dk = p.sem_dim + p.geo_dim;
    float null_score = 0.f;
    if (p.has_null) {
        float s = 0.f;
        for (int c = int(tid); c < dk; c += THREADS)
            s += (c < p.sem_dim ? p.s_sem : p.s_geo) * q[bh * dk + c] * k_null[kvh * dk + c];
        s = simd_sum(s);
        if (tid % 32 == 0) red[tid / 32] = s;
        threadgroup_barrier(mem_flags::mem_threadgroup);
        for (int w = 0; w < SIMDS; ++w) null_score += red[w];
    }
    device const float* ml = part_ml + bh * p.splits * 2;
    float m = p.has_null ? null_score : -INFINITY;
    for (int s = 0; s < p.splits; ++s) m = max(m, ml[2 * s]);
    float l = p.has_null ? exp(null_score - m) : 0.f;
    for (int s = 0; s < p.splits; ++s) l += ml[2 * s + 1] * exp(ml[2 * s] - m);
    for (int d = int(tid); d < p.dv; d += THREADS) {
        float a = p.has_null ? v_null[kvh * p.dv + d] * exp(null_score - m) : 0.f;
        for (int s = 0; s < p.splits; ++s) a += part_acc[(bh * p.splits + s) * p.dv + d] * exp(ml[2 * s] - m);
        out[bh * p.dv + d] = a / l;
    }
}
