// The decode partials of a latent-K, latent-V layer with Hopper's warpgroup MMA (wgmma).
//
// Why: the mma.sync kernels re-read U (dims x rank) from shared memory through ldmatrix for
// every 16 keys, and their issue slots, not DRAM, bound them. Here each of the two
// warpgroups of a program rebuilds a 64-key tile in one asynchronous wgmma chain,
// K[64 keys, 256 dims] = z[64, RK] U^T + 1 b^T, with both operands read by the tensor
// cores straight from shared memory (U stays there for the whole program): 4x less U
// traffic per key and no instructions spent loading it. The accumulator rows a warp holds
// are its own 16 keys, so from there each warp works alone, as in the "warp" kernel: QK-norm
// sums, RoPE in registers (a pair's two halves sit in the same thread), scores^T = q K^T by
// mma.sync with the packed accumulators as the B operand, an online softmax of its own,
// o^T += z_v^T p^T. The 8 warps' states merge once at the end into the chunk's state,
// which the Triton combine finishes. Operands in shared memory use the no-swizzle
// core-matrix layout: 8 rows x 16 bytes per 128-byte block, LBO = 128 (the next 8 of K),
// SBO = the next 8 rows.
#define D 256
#define HALF 128
#define RK __RK__
#define RV __RV__
#define KS (RK / 16)                 // wgmma k-steps of z U^T; one more adds the bias
#define VM (RV / 16)                 // m-tiles of o^T = z_v^T p^T
#define WARPS 8
#define NTH 256
#define G __G__
#define KSCALE __KSCALE__            // each key's QK-norm factor read from the cache (weight folded into U)
#define SKT __SKT__                  // row strides of z and z_v (the cache's: K and V entries side by side),
#define SVT __SVT__                  // compile-time so that a tile's copies take immediate offsets
#define TILE 64                      // keys per warpgroup tile (wgmma M)
#define SBOU ((RK / 8 + 2) * 128)    // U rows: RK / 8 core matrices + the bias block (2)
#define SBOZ (RK * 16)               // z tile rows: RK / 8 core matrices
#define VS (RV + 8)                  // padded z_v rows (bf16): ldmatrix without bank conflicts
#define NEG_INF __int_as_float(0xff800000)
__HELPERS__
typedef unsigned long long u64;
__device__ __forceinline__ bf16 f2bf(float x) { bf16 r; asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(r) : "f"(x)); return r; }
// what cp.async / st.shared wrote, made visible to the tensor cores' (async proxy) reads
__device__ __forceinline__ void fence_async() { asm volatile("fence.proxy.async.shared::cta;" ::: "memory"); }
__device__ __forceinline__ void bar_wg(int wg) { asm volatile("bar.sync %0, 128;" :: "r"(wg + 1) : "memory"); }
// a shared-memory matrix descriptor, no swizzle: start, LBO, SBO in 16-byte units
__device__ __forceinline__ u64 desc(u32 addr, u32 lbo, u32 sbo) {
    return (u64)((addr & 0x3FFFF) >> 4) | ((u64)(lbo >> 4) << 16) | ((u64)(sbo >> 4) << 32);
}
__WGMMA__

struct Smem {
    unsigned char u[32 * SBOU];            // this KV head's U (256 dims x RK) + the bias block
    unsigned char ones[8 * 256];           // the bias step's A: 64 keys x 16, k 0 and 1 = 1
    unsigned char z[2][2][TILE * RK * 2];  // [warpgroup][stage] z tiles
    bf16 v[2][2][TILE][VS];                // [warpgroup][stage] z_v tiles
    int kp[2][2][TILE];                    // [warpgroup][stage] positions
#if KSCALE
    float ks[2][2][TILE];                  // [warpgroup][stage] the keys' 1 / rms (KSCALE)
#endif
    u32 q[8][D / 2 + 4];                   // the query heads (bf16 pairs), rows G-7 zero
    float4 pr[HALF];                       // per RoPE pair: frequency / rope scale, cos 8f, sin 8f
    float2 dw[HALF];                       // per pair: the norm weight (dim, dim + 128)
};
struct Merge {                             // the epilogue's, over z / v once the loop is done
    float m[WARPS][G], l[WARPS][G];
    float a[WARPS][G][RV];
};

// norm sums, norm weight and RoPE of a warp's 16 rebuilt keys in place, and their
// scores^T = q K_rot^T: d[4 j + 2 r + e] is key g4 + 8 r, dim 8 j + 2 t4 + e, and its
// rotation partner (dim + 128) is d[4 (j + 16) + 2 r + e]. 16 dims of each half at a time,
// rotated, then scored at once (the packed accumulators are the mma's B operand: k dims
// 2 t4.., n key g4), so few temporaries are live beside the 128 accumulators.
// CONTIG: key g4 + 8 is key g4 rotated by 8 f (contiguous positions). KSCALE: the norm
// weight is in U and the bias, and each key's 1 / rms comes from the cache (no sums here)
template <bool CONTIG>
__device__ __forceinline__ void rope_score(float (&d)[128], const Smem& sh, const u32* qr, int pk0, int pk1, int t4,
                                           float& sq0, float& sq1, float (&sT)[2][4])
{
    #pragma unroll
    for (int kk = 0; kk < 8; kk++) {
        #pragma unroll
        for (int j = 2 * kk; j < 2 * kk + 2; j++)
            #pragma unroll
            for (int e = 0; e < 2; e++) {
                const int c = 8 * j + 2 * t4 + e;
                const float4 p = sh.pr[c];
#if !KSCALE
                const float2 wv = sh.dw[c];
#endif
                float cs[2], sn[2];
                cos_sin((float)pk0 * p.x, cs[0], sn[0]);
                if (CONTIG) {
                    cs[1] = cs[0] * p.y - sn[0] * p.z;
                    sn[1] = sn[0] * p.y + cs[0] * p.z;
                } else {
                    cos_sin((float)pk1 * p.x, cs[1], sn[1]);
                }
                #pragma unroll
                for (int r = 0; r < 2; r++) {
                    const float x1 = d[4 * j + 2 * r + e], x2 = d[4 * (j + 16) + 2 * r + e];
#if KSCALE
                    const float a = x1, bb = x2;   // weighted already (U, bias); the norm from the cache
#else
                    float& sq = r ? sq1 : sq0;
                    sq = fmaf(x1, x1, sq);
                    sq = fmaf(x2, x2, sq);
                    const float a = x1 * wv.x, bb = x2 * wv.y;
#endif
                    d[4 * j + 2 * r + e] = a * cs[r] - bb * sn[r];
                    d[4 * (j + 16) + 2 * r + e] = bb * cs[r] + a * sn[r];
                }
            }
        #pragma unroll
        for (int hf = 0; hf < 2; hf++) {      // k-step kk of dims 0-127, then of 128-255
            const int ks = kk + 8 * hf, o = 8 * ks;
            const u32 qa[4] = {qr[o + t4], 0u, qr[o + 4 + t4], 0u};
            mma(sT[0], qa, pack2(d[o], d[o + 1]), pack2(d[o + 4], d[o + 5]));
            mma(sT[1], qa, pack2(d[o + 2], d[o + 3]), pack2(d[o + 6], d[o + 7]));
        }
    }
}

extern "C" __global__ void __launch_bounds__(NTH, 1)
latent_decode(__PARAMS__, const float* __restrict__ kscale, int sks_b, int sks_t)
{
    extern __shared__ __align__(1024) unsigned char smem_raw[];
    __PROLOGUE__
    const int tid = threadIdx.x, lane = tid & 31, w = tid >> 5, wg = w >> 2, wl = w & 3, wt = tid & 127;
    __INDICES__
    auto at = [&](const void* p) { return sbase + (u32)((const unsigned char*)p - smem_raw); };
    const u32 su = at(sh.u), sones = at(sh.ones), sz = at(sh.z), svv = at(sh.v), skp = at(sh.kp);
#if KSCALE
    const u32 sks = at(sh.ks);
    const float* ksb = kscale + (long long)b * sks_b + h;   // (sequence, slot, KV head)
#endif

    // U into the core-matrix layout (one group, waited for below): thread = dim row
    #pragma unroll
    for (int kb8 = 0; kb8 < RK / 8; kb8++)
        cp16a(su + (tid >> 3) * SBOU + kb8 * 128 + (tid & 7) * 16, ku + ((long long)h * D + tid) * RK + kb8 * 8, true);
    cp_commit();
    {   // the bias block, k = RK: the bias in bf16 and its rounding error (k = RK + 1), so
        // that 1 * hi + 1 * lo rebuilds it to ~16 bits; the rest of the 16 k zero
        const float bf = kb[h * D + tid];
        const bf16 hi = f2bf(bf), lo = f2bf(bf - bf2f(hi));
        unsigned char* row = sh.u + (tid >> 3) * SBOU + (RK / 8) * 128 + (tid & 7) * 16;
        *reinterpret_cast<uint4*>(row) = make_uint4((u32)hi | ((u32)lo << 16), 0u, 0u, 0u);
        *reinterpret_cast<uint4*>(row + 128) = make_uint4(0u, 0u, 0u, 0u);
    }
    if (tid < 128) {
        const int mrow = tid & 63, kb8 = tid >> 6;
        *reinterpret_cast<uint4*>(sh.ones + (mrow >> 3) * 256 + kb8 * 128 + (mrow & 7) * 16) =
            kb8 == 0 ? make_uint4(0x3F803F80u, 0u, 0u, 0u) : make_uint4(0u, 0u, 0u, 0u);
    }
    if (tid < HALF) {
        const float f = invf[tid] * inv_rscale;
        float s8, c8;
        sincosf(8.f * f, &s8, &c8);
        sh.pr[tid] = make_float4(f, c8, s8, 0.f);
        sh.dw[tid] = make_float2(has_norm ? nw[tid] : 1.f, has_norm ? nw[HALF + tid] : 1.f);
    }

    // a warpgroup's tile (64 keys from t0) into stage st: 16-byte pieces. Thread wt copies
    // z row wt % 64, pieces wt / 64 + 2 j, and z_v rows NJV (wt / PV) + j, piece wt % PV
    // (where PV, z_v's pieces per row, divides 128; else piece by piece): one base address
    // and steps within the +-2 KB a copy's immediate offset reaches (z: 32 bytes, z_v: one
    // row), so a whole tile's copies compute no address and overwrite no register a queued
    // copy still reads (each such overwrite stalls until the copy has issued). The chunk's
    // last tile: rows past its end zero-filled (their positions too: masked below by the key index)
    constexpr int PV = RV / 8, NJV = RV / 16;
    constexpr bool VSTEP = 128 % PV == 0;
    const int zr = wt & 63, vr = (wt / PV) * NJV;
    const u32 zd0 = sz + (u32)(wg * 2 * TILE * RK * 2 + (zr >> 3) * SBOZ + (wt >> 6) * 128 + (zr & 7) * 16);
    const u32 vd0 = svv + (u32)(wg * 2 * TILE * VS * 2 + (vr * VS + (wt % PV) * 8) * 2);
    const bf16* zs0 = kbase + zr * SKT + (wt >> 6) * 8;
    const bf16* vs0 = vbase + vr * SVT + (wt % PV) * 8;
    auto load = [&](int t0, int st) {
        const int left = stop - t0;
        const bf16* zsrc = zs0 + (long long)t0 * SKT;
        const bf16* vsrc = vs0 + (long long)t0 * SVT;
        const u32 zd = zd0 + (u32)(st * TILE * RK * 2), vd = vd0 + (u32)(st * TILE * VS * 2);
        const u32 vst = svv + (u32)((wg * 2 + st) * TILE * VS * 2);
        if (wt < TILE) {  // first: their address registers are free again before the big copies' turn
            const bool ok = wt < left;
            cp4a(skp + (u32)((wg * 2 + st) * TILE + wt) * 4, ok ? pbase + t0 + wt : pbase, ok);
#if KSCALE
            cp4a(sks + (u32)((wg * 2 + st) * TILE + wt) * 4, ok ? ksb + (long long)(t0 + wt) * sks_t : ksb, ok);
#endif
        }
        if (left >= TILE) {  // a whole tile: each copy one base address + an immediate, unpredicated
            #pragma unroll
            for (int j = 0; j < RK / 16; j++) cp16a(zd + j * 256, zsrc + 16 * j, true);
            #pragma unroll
            for (int j = 0; j < RV / 16; j++) {
                if constexpr (VSTEP) {
                    cp16a(vd + j * VS * 2, vsrc + j * SVT, true);
                } else {
                    const int i = wt + 128 * j, r = i / PV, c = i % PV;
                    cp16a(vst + (u32)(r * VS + c * 8) * 2, vbase + (long long)(t0 + r) * SVT + c * 8, true);
                }
            }
        } else {   // the chunk's last tile: rows past its end zero-filled
            #pragma unroll
            for (int j = 0; j < RK / 16; j++) cp16a(zd + j * 256, zr < left ? zsrc + 16 * j : kbase, zr < left);
            #pragma unroll
            for (int j = 0; j < RV / 16; j++) {
                if constexpr (VSTEP) {
                    const bool ok = vr + j < left;
                    cp16a(vd + j * VS * 2, ok ? vsrc + j * SVT : vbase, ok);
                } else {
                    const int i = wt + 128 * j, r = i / PV, c = i % PV;
                    const bool ok = r < left;
                    cp16a(vst + (u32)(r * VS + c * 8) * 2, ok ? vbase + (long long)(t0 + r) * SVT + c * 8 : vbase, ok);
                }
            }
        }
    };
    int t0 = start + TILE * wg;
    if (t0 < stop) load(t0, 0);
    cp_commit();

    // q, the A operand of scores^T = q K^T (rows: heads, 8-15 zero; k: dims)
    for (int i = tid; i < 8 * (D / 2); i += NTH) {
        const int hh = i / (D / 2), c = i % (D / 2);
        sh.q[hh][c] = hh < G ? reinterpret_cast<const u32*>(q + (long long)b * sq_b + (long long)(h * G + hh) * sq_h)[c] : 0u;
    }
    float m_i = NEG_INF, l_i = 0.f;   // this warp's softmax state for head g4 (log2 units)
    float acc[VM][4];                 // o^T: rows latent V column, cols heads 2 t4, 2 t4 + 1
    #pragma unroll
    for (int i = 0; i < VM; i++) acc[i][0] = acc[i][1] = acc[i][2] = acc[i][3] = 0.f;
    const float qk_scale = scale * 1.4426950408889634f;  // scores in log2 units: exp2 below
    __SINK_STATE__
    cp_wait1();          // U (the first tile may still be on its way)
    fence_async();
    __syncthreads();     // U, the bias and ones blocks, q and the tables visible to all

    const u32 va_off = (u32)((((lane & 7) + ((lane >> 4) << 3)) * VS + ((lane >> 3) & 1) * 8) * 2);
    const u64 du = desc(su, 128, SBOU), dones = desc(sones, 128, 256);

    int st = 0;
    for (; t0 < stop; t0 += 2 * TILE, st ^= 1) {
        cp_wait0();
        fence_async();
        bar_wg(wg);      // this tile's pieces, from every thread of the warpgroup
        const int* kp = &sh.kp[wg][st][16 * wl];
#if KSCALE
        const float* ksm = &sh.ks[wg][st][16 * wl];
#endif
        float sq0 = 0.f, sq1 = 0.f;       // keys g4, g4 + 8: sum of squares over this thread's dims
        float sT[2][4] = {{0.f, 0.f, 0.f, 0.f}, {0.f, 0.f, 0.f, 0.f}};  // scores^T: keys 0-7, 8-15
        const u64 dz = desc(sz + (u32)((wg * 2 + st) * TILE * RK * 2), 128, SBOZ);
        float d[128];
        wgmma_fence();
        #pragma unroll
        for (int kk = 0; kk < KS; kk++) wgmma_ss(d, dz + 16 * kk, du + 16 * kk, kk);
        wgmma_ss(d, dones, du + 16 * KS, 1);   // + 1 (hi + lo)^T: the bias
        wgmma_commit();
        // the next tile's copies go out while the tensor cores work (the other stage:
        // every warp finished with it at the end of the last iteration)
        if (t0 + 2 * TILE < stop) load(t0 + 2 * TILE, st ^ 1);
        cp_commit();
        wgmma_wait0(d);
        const int pk0 = kp[g4], pk1 = kp[g4 + 8];
        if (__all_sync(0xffffffffu, pk1 == pk0 + 8)) rope_score<true>(d, sh, &sh.q[g4][0], pk0, pk1, t4, sq0, sq1, sT);
        else rope_score<false>(d, sh, &sh.q[g4][0], pk0, pk1, t4, sq0, sq1, sT);
        __SOFTMAX_PV__
        bar_wg(wg);      // every warp done with this stage: the next iteration reloads it
    }
    cp_wait0();
    __syncthreads();     // every warp done with z / v: the merge reuses them
    __MERGE__
}
