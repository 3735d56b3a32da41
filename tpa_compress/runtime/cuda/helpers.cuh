// Device helpers of every decode kernel: bf16 / u32 types, mma.sync m16n8k16 (bf16), ldmatrix,
// cp.async, exp2, a quad's sum, o^T += z_v^T p^T and the fast cos / sin of the Triton kernel.
#ifndef TPA_HELPERS_CUH
#define TPA_HELPERS_CUH

// a macro as CUDA's own CUDART_INF_F: __int_as_float is not constexpr
#define NEG_INF __int_as_float(0xff800000)

typedef unsigned short bf16;
typedef unsigned int u32;
typedef unsigned long long u64;
__device__ __forceinline__ float bf2f(bf16 x) { return __uint_as_float(((u32)x) << 16); }
__device__ __forceinline__ u32 pack2(float lo, float hi) {
    u32 r; asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo)); return r;
}
__device__ __forceinline__ void mma(float* c, const u32* a, u32 b0, u32 b1) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
                 "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
__device__ __forceinline__ void ldsm4(u32* r, u32 s) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(s));
}
__device__ __forceinline__ void ldsm4t(u32* r, u32 s) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(s));
}
__device__ __forceinline__ void cp16a(u32 s, const void* src, bool ok) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" :: "r"(s), "l"(src), "r"(ok ? 16 : 0));
}
__device__ __forceinline__ void cp4a(u32 s, const void* src, bool ok) {
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;" :: "r"(s), "l"(src), "r"(ok ? 4 : 0));
}
__device__ __forceinline__ float ex2(float x) { float y; asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x)); return y; }
__device__ __forceinline__ void cp_commit() { asm volatile("cp.async.commit_group;"); }
__device__ __forceinline__ void cp_wait1() { asm volatile("cp.async.wait_group 1;" ::: "memory"); }
__device__ __forceinline__ void cp_wait0() { asm volatile("cp.async.wait_group 0;" ::: "memory"); }
// the sum over a quad, the 4 lanes of one g4 (lane >> 2): one row of an mma fragment
__device__ __forceinline__ float quad_sum(float x) {
    x += __shfl_xor_sync(0xffffffffu, x, 1);
    x += __shfl_xor_sync(0xffffffffu, x, 2);
    return x;
}
// o^T += z_v^T p^T, NVM m-tiles of 16 latent V columns: z_v^T the A operand (ldmatrix .trans
// from this lane's shared address vrows, 32 bytes a tile), p^T the B operand (pb0, pb1)
template <int NVM>
__device__ __forceinline__ void pv_mma(float (&acc)[NVM][4], u32 vrows, u32 pb0, u32 pb1) {
    #pragma unroll
    for (int vm = 0; vm < NVM; vm++) {
        u32 a[4];
        ldsm4t(a, vrows + vm * 32);
        mma(acc[vm], a, pb0, pb1);
    }
}
__device__ __forceinline__ void cos_sin(float x, float& c, float& s) {
    // reduce to [-pi, pi] (2 pi split in two constants, the first exact in a few bits),
    // then the special-function unit: the Triton kernel's FAST_TRIG, same constants
    float k = floorf(x * 0.15915494309189535f + 0.5f);
    float r = x - k * 6.28125f - k * 0.0019353071795864769f;
    c = __cosf(r); s = __sinf(r);
}

#endif  // TPA_HELPERS_CUH
