// What every decode kernel takes first (cuda_decode.launch passes it in this order) and the
// start of every kernel body: its shared memory bound and checked, the chunk it decodes.
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

// The start of every kernel body: its dynamic shared memory bound to its struct SM (aligned to
// ALIGN bytes) as `sh`, and the check below. (A macro: the kernel declares and casts its shared
// memory itself, see check_smem.)
#define DECODE_SMEM(SM, ALIGN)                                   \
    extern __shared__ __align__(ALIGN) unsigned char smem_raw[]; \
    SM& sh = *reinterpret_cast<SM*>(smem_raw);                   \
    check_smem<SM>()

// What a program decodes and the mask's bounds: grid x the chunk pid_s, keys [start, stop) of
// its sequence's cache; grid y pid_bh = sequence b, KV head h (b KV + h); qp the query's
// position (qpi: as int), wlim the window (INT_MAX: none), plo the first position past the sink
// slots; kbase, vbase, pbase: sequence b's rows of z, z_v and the key positions.
struct Chunk {
    int pid_s, pid_bh, b, h;
    long long qp;
    int qpi, wlim, plo;
    int start, stop;
    const bf16* kbase;
    const bf16* vbase;
    const int* pbase;
};

// from DECODE_PARAMS' names, each kernel alike:
// chunk_of(qpos, kc, vc, kpos, T, CHUNK, KV, skc_b, svc_b, sp_b, window, sink). (The order of
// the assignments is the order the kernels computed these in: nvcc's PTX follows it.)
__device__ __forceinline__ Chunk chunk_of(const long long* qpos, const bf16* kc, const bf16* vc, const int* kpos, int T,
                                          int CHUNK, int KV, int skc_b, int svc_b, int sp_b, int window, int sink)
{
    Chunk c;
    c.pid_s = blockIdx.x;
    c.pid_bh = blockIdx.y;
    c.b = c.pid_bh / KV;
    c.h = c.pid_bh % KV;
    c.qp = qpos[c.b];
    c.plo = sink > 0 ? sink : 0;
    c.qpi = (int)c.qp;
    c.wlim = window > 0 ? window : 0x7fffffff;
    c.start = c.pid_s * CHUNK;
    c.stop = min(T, c.start + CHUNK);
    c.kbase = kc + (long long)c.b * skc_b;
    c.vbase = vc + (long long)c.b * svc_b;
    c.pbase = kpos + (long long)c.b * sp_b;
    return c;
}

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
