// Multi-tensor optimizer kernels: one launch updates every parameter of a model (llm.c's and
// apex's multi_tensor_apply), instead of ~14 element-wise launches per parameter through candle
// ops (~4,000 launches of 3-8 us a step at the SmolLM2-135M shape, docs/gpu.md).
//
// A table in device memory describes the tensors, one 64-byte slot each; blockIdx.y walks the
// slots and the x blocks of a slot stride over its elements. The arithmetic is the CPU update's
// (src/train/optimizer/adamw_fused.rs) in round-to-nearest intrinsics, so --use_fast_math does not
// change it: the division and square root are IEEE ones, and no multiply-add is contracted.

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

// Must match `Slot` in src/kernels/optimizer.rs (8 x u64).
struct Slot {
    float* p;        // f32 parameter (a master copy, or the parameter itself), updated in place
    const float* g;  // f32 gradient
    float* m;        // first moment, updated in place
    float* v;        // second moment, updated in place
    void* out;       // the half-precision parameter to write after the update, or null
    int64_t n;       // elements
    int64_t flags;   // bit 0: weight decay applies; bits 1-2: out dtype (0 none, 1 bf16, 2 f16)
    int64_t unused;
};

extern "C" __global__ void adamw_multi_tensor(
    const Slot* __restrict__ slots, int n_slots,
    float b1, float one_minus_b1, float b2, float one_minus_b2,
    float inv_bc1, float inv_bc2, float eps, float lr, float weight_decay)
{
    for (int i = blockIdx.y; i < n_slots; i += gridDim.y) {
        const Slot s = slots[i];
        const bool decay = s.flags & 1;
        const int out_kind = (int)((s.flags >> 1) & 3);
        const int64_t stride = (int64_t)gridDim.x * blockDim.x;
        for (int64_t j = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; j < s.n; j += stride) {
            const float g = s.g[j];
            const float m = __fadd_rn(__fmul_rn(s.m[j], b1), __fmul_rn(g, one_minus_b1));
            const float v = __fadd_rn(__fmul_rn(s.v[j], b2), __fmul_rn(__fmul_rn(g, g), one_minus_b2));
            s.m[j] = m;
            s.v[j] = v;
            const float m_hat = __fmul_rn(m, inv_bc1);
            const float v_hat = __fmul_rn(v, inv_bc2);
            float update = __fdiv_rn(m_hat, __fadd_rn(__fsqrt_rn(v_hat), eps));
            float p = s.p[j];
            if (decay) update = __fadd_rn(update, __fmul_rn(p, weight_decay));
            p = __fsub_rn(p, __fmul_rn(update, lr));
            s.p[j] = p;
            if (out_kind == 1) ((__nv_bfloat16*)s.out)[j] = __float2bfloat16_rn(p);
            else if (out_kind == 2) ((__half*)s.out)[j] = __float2half_rn(p);
        }
    }
}

// Sum of squares of each slot's f32 tensor (`p` of the slot) into sums[i] (f64, zeroed by the
// caller): the global gradient norm of clipping with one launch and one read back.
extern "C" __global__ void sum_squares_multi_tensor(
    const Slot* __restrict__ slots, int n_slots, double* __restrict__ sums)
{
    __shared__ float warp_sums[32];
    for (int i = blockIdx.y; i < n_slots; i += gridDim.y) {
        const Slot s = slots[i];
        const int64_t stride = (int64_t)gridDim.x * blockDim.x;
        float acc = 0.f;
        for (int64_t j = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; j < s.n; j += stride) {
            const float x = s.g[j];
            acc = fmaf(x, x, acc);
        }
        for (int o = 16; o > 0; o >>= 1) acc += __shfl_xor_sync(0xffffffffu, acc, o);
        const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
        if (lane == 0) warp_sums[warp] = acc;
        __syncthreads();
        if (warp == 0) {
            const int warps = (blockDim.x + 31) >> 5;
            float w = lane < warps ? warp_sums[lane] : 0.f;
            for (int o = 16; o > 0; o >>= 1) w += __shfl_xor_sync(0xffffffffu, w, o);
            if (lane == 0) atomicAdd(&sums[i], (double)w);
        }
        __syncthreads();
    }
}
