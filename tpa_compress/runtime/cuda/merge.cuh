// The epilogue of the warp-level kernels ("warp", "wg"): the NW warps' softmax states of a
// chunk (each warp's max m and sum l per head, written by the kernel, and its o^T) merged into
// the chunk's state, over the z / v buffers once every warp is done with them.
#ifndef TPA_MERGE_CUH
#define TPA_MERGE_CUH
#include "helpers.cuh"

// NW warps, NG query heads, NRV latent V columns
template <int NW, int NG, int NRV>
struct MergeBuf {
    float m[NW][NG], l[NW][NG];
    float a[NW][NG][NRV];
};

// buf: the MergeBuf in shared memory, where the kernel wrote each warp's m / l; acc: this
// lane's o^T (rows latent V column vm 16 + g4 (+ 8), cols heads 2 t4, 2 t4 + 1) into its a,
// then the chunk's state: rows (sequence, KV head, chunk, head), as kernels._decode_partial
// writes them (m in natural log units). (buf as an address, cast here: a reference handed in
// costs the compiler the loads' folded offsets.)
template <int NW, int NG, int NRV>
__device__ __forceinline__ void merge_states(void* buf, const float (&acc)[NRV / 16][4], int tid, int w, int g4, int t4,
                                             int pid_bh, int pid_s, int S, float* __restrict__ m_out,
                                             float* __restrict__ l_out, float* __restrict__ acc_out)
{
    constexpr int NVM = NRV / 16, NTHR = 32 * NW;
    MergeBuf<NW, NG, NRV>& mg = *reinterpret_cast<MergeBuf<NW, NG, NRV>*>(buf);
    #pragma unroll
    for (int vm = 0; vm < NVM; vm++)
        #pragma unroll
        for (int i = 0; i < 4; i++) {
            const int hh = 2 * t4 + (i & 1);
            if (hh < NG) mg.a[w][hh][vm * 16 + g4 + 8 * (i >> 1)] = acc[vm][i];
        }
    __syncthreads();
    for (int i = tid; i < NG * NRV; i += NTHR) {
        const int hh = i / NRV, col = i % NRV;
        float mm = NEG_INF;
        #pragma unroll
        for (int ww = 0; ww < NW; ww++) mm = fmaxf(mm, mg.m[ww][hh]);
        const float ms = mm == NEG_INF ? 0.f : mm;
        float ll = 0.f, aa = 0.f;
        #pragma unroll
        for (int ww = 0; ww < NW; ww++) {
            const float e = ex2(mg.m[ww][hh] - ms);
            ll += mg.l[ww][hh] * e;
            aa += mg.a[ww][hh][col] * e;
        }
        const long long row = ((long long)pid_bh * S + pid_s) * NG + hh;
        acc_out[row * NRV + col] = aa;
        if (col == 0) { m_out[row] = mm * 0.6931471805599453f; l_out[row] = ll; }  // log2 -> ln
    }
}

#endif  // TPA_MERGE_CUH
