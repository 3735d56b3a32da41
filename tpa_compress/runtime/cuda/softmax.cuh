// The online softmax step of the mma.sync kernels ("tile", "warp"), where the 4 lanes of a
// quad (one g4) hold one query head's scores of a tile between them.
#ifndef TPA_SOFTMAX_CUH
#define TPA_SOFTMAX_CUH
#include "helpers.cuh"

// p: this lane's scores (log2 units, NEG_INF: masked), mx: their max. The quad's max joins the
// running max m_i, p becomes exp2(p - max) in place, and the quad's sum of p joins the running
// sum l_i; returns the factor exp2(old m_i - new m_i) for what was summed before.
template <int A, int B>
__device__ __forceinline__ float softmax_step(float (&p)[A][B], float mx, float& m_i, float& l_i)
{
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
    const float m_new = fmaxf(m_i, mx);
    const float m_safe = m_new == NEG_INF ? 0.f : m_new;
    float sum = 0.f;
    #pragma unroll
    for (int a = 0; a < A; a++)
        #pragma unroll
        for (int i = 0; i < B; i++) { p[a][i] = ex2(p[a][i] - m_safe); sum += p[a][i]; }
    sum = quad_sum(sum);
    const float corr = ex2(m_i - m_safe);
    l_i = l_i * corr + sum;
    m_i = m_new;
    return corr;
}

#endif  // TPA_SOFTMAX_CUH
