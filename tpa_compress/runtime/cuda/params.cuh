// What every decode kernel takes first (cuda_decode.launch passes it in this order) and the
// start of every kernel body: the check that its shared memory holds its struct.
#ifndef TPA_PARAMS_CUH
#define TPA_PARAMS_CUH
#include "helpers.cuh"

// a macro: a kernel's parameter list is not something a function or type can supply
#define DECODE_PARAMS                                                                                      \
    const bf16* __restrict__ q, const bf16* __restrict__ kc, const bf16* __restrict__ vc,                   \
        const int* __restrict__ kpos, const long long* __restrict__ qpos, const bf16* __restrict__ ku,      \
        const float* __restrict__ kb, const float* __restrict__ nw, const float* __restrict__ invf,         \
        const bf16* __restrict__ sk, const bf16* __restrict__ sv, float* __restrict__ sm,                   \
        float* __restrict__ sl, float* __restrict__ sa, float* __restrict__ m_out, float* __restrict__ l_out, \
        float* __restrict__ acc_out, int T, int CHUNK, int KV, int S, int NS, int sq_b, int sq_h, int skc_b, \
        int skc_t, int svc_b, int svc_t, int sp_b, int ss_b, int ss_h, int ss_j, int window, int sink,       \
        double eps_d, double scale_d, double rscale_d, int has_norm

// cuda_decode.smem_bytes must cover the kernel's shared-memory struct SM: a launch with less
// fails loudly (trap) and never overruns. (The kernel casts its shared memory itself: a pointer
// handed through a function here costs the compiler its folded offsets.)
template <class SM>
__device__ __forceinline__ void check_smem() {
    if (threadIdx.x == 0) {
        unsigned got;
        asm("mov.u32 %0, %%dynamic_smem_size;" : "=r"(got));
        if (got < sizeof(SM)) __trap();
    }
}

#endif  // TPA_PARAMS_CUH
