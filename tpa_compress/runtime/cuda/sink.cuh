// The exact sink tile's own softmax state for one query head (head dim DIM), which the
// Triton combine merges: one warp, lane l holding dims l + 32 i of q, the keys' and values'
// rows, and the mixture. NG: query heads per KV head.
#ifndef TPA_SINK_CUH
#define TPA_SINK_CUH
#include "helpers.cuh"

// head hs of KV head h of sequence b (program row pid_bh = b KV + h): its state into sm, sl
// (max and sum, natural log units) and sa (the mixture), rows pid_bh NG + hs
template <int NG, int DIM>
__device__ __forceinline__ void sink_state(const bf16* __restrict__ q, const bf16* __restrict__ sk,
                                           const bf16* __restrict__ sv, float* __restrict__ sm,
                                           float* __restrict__ sl, float* __restrict__ sa, int b, int h, int hs,
                                           int pid_bh, int lane, long long qp, int NS, int sq_b, int sq_h,
                                           int ss_b, int ss_h, int ss_j, int window, float scale)
{
    static_assert(DIM == 8 * 32, "a lane holds 8 dims of the head");
    const bf16* qrow = q + (long long)b * sq_b + (long long)(h * NG + hs) * sq_h;
    float qv[8];
    #pragma unroll
    for (int i = 0; i < 8; i++) qv[i] = bf2f(qrow[lane + 32 * i]);
    float ms = NEG_INF, ls = 0.f, as[8];
    #pragma unroll
    for (int i = 0; i < 8; i++) as[i] = 0.f;
    for (int j = 0; j < NS; j++) {
        const long long off = (long long)b * ss_b + (long long)h * ss_h + (long long)j * ss_j;
        const bf16* kr = sk + off;
        const bf16* vr = sv + off;
        float s = 0.f;
        #pragma unroll
        for (int i = 0; i < 8; i++) s += qv[i] * bf2f(kr[lane + 32 * i]);
        #pragma unroll
        for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
        bool ok = qp - j >= 0;
        if (window > 0) ok = ok && qp - j < window;
        s = ok ? s * scale : NEG_INF;
        const float mn = fmaxf(ms, s);
        const float msafe = mn == NEG_INF ? 0.f : mn;
        const float c = __expf(ms - msafe), pj = __expf(s - msafe);
        ls = ls * c + pj;
        #pragma unroll
        for (int i = 0; i < 8; i++) as[i] = as[i] * c + pj * bf2f(vr[lane + 32 * i]);
        ms = mn;
    }
    const int r = pid_bh * NG + hs;
    if (lane == 0) { sm[r] = ms; sl[r] = ls; }
    #pragma unroll
    for (int i = 0; i < 8; i++) sa[(long long)r * DIM + lane + 32 * i] = as[i];
}

#endif  // TPA_SINK_CUH
