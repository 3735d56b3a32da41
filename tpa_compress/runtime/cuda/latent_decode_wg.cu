// The decode partials of a latent-K, latent-V layer with Hopper's warpgroup MMA (wgmma).
//
// Why: the mma.sync kernels re-read U (dims x rank) from shared memory through ldmatrix for
// every 16 keys, and their issue slots, not DRAM, bound them. Here each of the two
// warpgroups of a program rebuilds a 64-key tile with asynchronous wgmma, K[64 keys,
// 256 dims] = z[64, RK] U^T + 1 b^T, with both operands read by the tensor cores straight from
// shared memory (U stays there for the whole program): 4x less U traffic per key and no
// instructions spent loading it. Two chains of 128 dims each (U's rows stored 0-63,
// 128-191, 64-127, 192-255: each half holds whole RoPE pairs), two commit groups: the first
// half's RoPE and scores run while the second is rebuilt. The prologue is a bulk copy of
// per-layer images (cuda_decode.wg_images) and, launched with programmatic dependent
// launch, runs before the wait for the previous kernel, with the first tile (all but the
// step's write slot). The accumulator rows a warp holds are its own 16 keys, so from there
// each warp works alone, as in the "warp" kernel: QK-norm sums (or each key's factor from
// the cache: KSCALE), RoPE in registers (a pair's two halves sit in the same thread;
// KSCALE: on f16 pairs), scores = K q^T by mma.sync with the rotated keys as the A operand
// (the accumulators are laid out as its fragments; f16 has 3 more mantissa bits than bf16),
// an online softmax of its own, o^T += z_v^T p^T (p transposed in registers by movmatrix).
// The 8 warps' states merge once at the end into the chunk's state, which the Triton
// combine finishes. Operands in shared memory use the no-swizzle core-matrix layout: 8 rows
// x 16 bytes per 128-byte block, LBO = 128 (the next 8 of K), SBO = the next 8 rows.
// Sizes come from the build (cuda_decode.build_options: -DRK=... -DRV=... -DG=... -DKSCALE=...
// -DPHASES=... -DSKT=... -DSVT=...); KSCALE: each key's QK-norm factor read from the cache
// (weight folded into U); PHASES: the instrumented build (bench_decode_kernel --phases),
// per-phase clocks; SKT, SVT: the row strides of z and z_v (the cache's: K and V entries side
// by side), compile-time so that a tile's copies take immediate offsets.
#if !defined(RK) || !defined(RV) || !defined(G) || !defined(KSCALE) || !defined(PHASES) || !defined(SKT) || !defined(SVT)
#error "build with the sizes as -D options (cuda_decode.build_options)"
#endif
#include "helpers.cuh"
#include "merge.cuh"
#include "params.cuh"
#include "sink.cuh"
#include "wgmma.cuh"

#define D 256
#define HALF 128
#define KS (RK / 16)                 // wgmma k-steps of z U^T; one more adds the bias
#define VM (RV / 16)                 // m-tiles of o^T = z_v^T p^T
#define WARPS 8
#define NTH 256
#define TILE 64                      // keys per warpgroup tile (wgmma M)
#define SBOU ((RK / 8 + 2) * 128)    // U rows: RK / 8 core matrices + the bias block (2)
#define SBOZ (RK * 16)               // z tile rows: RK / 8 core matrices
#define VS (RV + 8)                  // padded z_v rows (bf16): ldmatrix without bank conflicts
#define QROW (16 * 4 + 4)            // a head's q^T fragments (16 k-steps x 4 lanes) + 32 bytes: no bank conflicts
// what cp.async / st.shared wrote, made visible to the tensor cores' (async proxy) reads
__device__ __forceinline__ void fence_async() { asm volatile("fence.proxy.async.shared::cta;" ::: "memory"); }
__device__ __forceinline__ void bar_wg(int wg) { asm volatile("bar.sync %0, 128;" :: "r"(wg + 1) : "memory"); }
// a shared-memory matrix descriptor, no swizzle: start, LBO, SBO in 16-byte units
__device__ __forceinline__ u64 desc(u32 addr, u32 lbo, u32 sbo) {
    return (u64)((addr & 0x3FFFF) >> 4) | ((u64)(lbo >> 4) << 16) | ((u64)(sbo >> 4) << 32);
}
__device__ __forceinline__ u32 packh(float lo, float hi) {
    u32 r; asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo)); return r;
}
// cos and sin of two pairs' angles at position x (frequencies f.x, f.y) as f16 pairs
__device__ __forceinline__ void cos_sin_h2(float x, float4 f, u32& c, u32& s) {
    float c0, s0, c1, s1;
    cos_sin(x * f.x, c0, s0);
    cos_sin(x * f.y, c1, s1);
    c = packh(c0, c1); s = packh(s0, s1);
}
__device__ __forceinline__ u32 hmul2(u32 a, u32 b) { u32 r; asm("mul.rn.f16x2 %0, %1, %2;" : "=r"(r) : "r"(a), "r"(b)); return r; }
__device__ __forceinline__ u32 hfma2(u32 a, u32 b, u32 c) {
    u32 r; asm("fma.rn.f16x2 %0, %1, %2, %3;" : "=r"(r) : "r"(a), "r"(b), "r"(c)); return r;
}
__device__ __forceinline__ u32 hneg2(u32 a) { u32 r; asm("neg.f16x2 %0, %1;" : "=r"(r) : "r"(a)); return r; }
// (ar + i ai)(br + i bi) on f16 pairs: a rotation by the angle whose cos, sin are br, bi
__device__ __forceinline__ void cmul_h2(u32 ar, u32 ai, u32 br, u32 bi, u32& re, u32& im) {
    re = hfma2(ar, br, hneg2(hmul2(ai, bi)));
    im = hfma2(ai, br, hmul2(ar, bi));
}
__device__ __forceinline__ void mma_h(float (&c)[4], u32 a0, u32 a1, u32 a2, u32 a3, uint2 b) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
                 "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b.x), "r"(b.y));
}
// U's image arrives by a bulk copy (the TMA unit), completing on an mbarrier
__device__ __forceinline__ void mbar_init(u32 bar) {   // (visible to the copy's completion: fence)
    asm volatile("mbarrier.init.shared::cta.b64 [%0], 1;\n\tfence.proxy.async.shared::cta;" :: "r"(bar) : "memory");
}
__device__ __forceinline__ void mbar_expect(u32 bar, u32 bytes) {
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" :: "r"(bar), "r"(bytes) : "memory");
}
__device__ __forceinline__ void mbar_wait(u32 bar) {   // phase 0's completion
    asm volatile("{\n\t.reg .pred p;\n\tW: mbarrier.try_wait.parity.shared::cta.b64 p, [%0], 0;\n\t@!p bra W;\n\t}"
                 :: "r"(bar) : "memory");
}
__device__ __forceinline__ void bulk_copy(u32 dst, const void* src, u32 bytes, u32 bar) {
    asm volatile("cp.async.bulk.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1], %2, [%3];"
                 :: "r"(dst), "l"(src), "r"(bytes), "r"(bar) : "memory");
}
__device__ __forceinline__ u32 trans8(u32 x) {  // an 8 x 8 b16 matrix, one row pair per lane, transposed
    u32 r; asm volatile("movmatrix.sync.aligned.m8n8.trans.b16 %0, %1;" : "=r"(r) : "r"(x)); return r;
}

struct Smem {
    unsigned char u[32 * SBOU];            // this KV head's U (256 dims x RK) + the bias block
    unsigned char ones[8 * 256];           // the bias step's A: 64 keys x 16, k 0 and 1 = 1
    unsigned char z[2][2][TILE * RK * 2];  // [warpgroup][stage] z tiles
    bf16 v[2][2][TILE][VS];                // [warpgroup][stage] z_v tiles
    int kp[2][2][TILE];                    // [warpgroup][stage] positions
#if KSCALE
    float ks[2][2][TILE];                  // [warpgroup][stage] the keys' 1 / rms (KSCALE)
#endif
    uint2 q[8][QROW];                      // q^T as mma B fragments (f16): [head][k-step][t4], rows G-7 zero
#if KSCALE
    float4 pp[HALF / 2];                   // per 2 pairs c, c + 1: their frequencies / rope scale, then
                                           // cos 8f and sin 8f of both as f16 pairs (the rotation by 8 keys)
    uint2 to[8][HALF / 2 + 4];             // cos, sin of g4 f (g4 = 0..7), f16 pairs; rows + 32 bytes: no bank conflicts
    uint2 tb[WARPS][HALF / 2];             // per warp and tile: cos, sin of its first key's angles (f16 pairs)
#else
    float4 pr[HALF];                       // per RoPE pair: frequency / rope scale, cos 8f, sin 8f
    float2 dw[HALF];                       // per pair: the norm weight (dim, dim + 128)
#endif
    unsigned long long ubar[2];            // U's (and the tables') arrival: an mbarrier (+ 8 bytes: 16 in all)
};
using Merge = MergeBuf<WARPS, G, RV>;      // the epilogue's, over z / v once the loop is done

// RoPE (and, without KSCALE, the norm sums and weight) of a warp's 16 rebuilt keys in one
// 128-dim half HF of the rebuild, and their scores: half HF holds dims 64 HF + (0..63) and
// their rotation partners (+ 128); d[4 l + 2 r + e] (l < 8) is key g4 + 8 r, dim
// 64 HF + 8 l + 2 t4 + e, and its partner is d[4 (l + 8) + 2 r + e]; that is the m16n8k16 A
// fragment's layout (row = key g4 + 8 r, k = dims 2 t4 + e), so the rotated keys, packed
// in f16 pairs, are the A operand as they stand and q^T (shared memory) is B. sc[2 r + i]
// (+ sc2, the partners' chain): key g4 + 8 r, head 2 t4 + i. 32 dims at a time (one
// k-step of each side), so few temporaries are live beside the accumulators.
// KSCALE: the norm weight is in U and the bias, each key's 1 / rms comes from the cache,
// and the rotation runs on f16 pairs (frequencies c, c + 1: half the instructions of fp32).
// CONTIG: key g4 + 8 is key g4 rotated by 8 f (contiguous positions); with KSCALE also key g4
// the warp's first key rotated by g4 f: two f16 complex products per pair and no sin / cos
// (the warp's first key's are computed once per tile, 4 per lane, into tb).
template <bool CONTIG, int HF>
__device__ __forceinline__ void rope_score(float (&d)[64], const Smem& sh, const uint2* qb, const uint2* tb,
                                           const uint2* to, int pk0, int pk1, int t4, float& sq0, float& sq1,
                                           float (&sc)[4], float (&sc2)[4])
{
    #pragma unroll
    for (int kl = 0; kl < 4; kl++) {
        const int kk = 4 * HF + kl;   // k-step of the dims 0..127 (and its partner kk + 8)
        u32 y1[2][2], y2[2][2];   // [j - 2 kk][r]: rotated dims 8 j + 2 t4 + (0, 1), and + 128
        #pragma unroll
        for (int jj = 0; jj < 2; jj++) {
            const int j = 2 * kk + jj, lj = 2 * kl + jj;   // j: 8-dim group (tables); lj: in this half's d
#if KSCALE
            const float4 p = sh.pp[4 * j + t4];    // pairs c = 8 j + 2 t4 and c + 1
            u32 cs[2], sn[2];
            if (CONTIG) {   // the warp's first key's angles (tb), rotated by g4 f (to)
                const uint2 bs = tb[4 * j + t4], of = to[4 * j + t4];
                cmul_h2(bs.x, bs.y, of.x, of.y, cs[0], sn[0]);
            } else {
                cos_sin_h2((float)pk0, p, cs[0], sn[0]);
            }
            if (CONTIG) {
                const u32 c8 = __float_as_uint(p.z), s8 = __float_as_uint(p.w);
                cmul_h2(cs[0], sn[0], c8, s8, cs[1], sn[1]);
            } else {
                cos_sin_h2((float)pk1, p, cs[1], sn[1]);
            }
            #pragma unroll
            for (int r = 0; r < 2; r++) {
                const u32 x1 = packh(d[4 * lj + 2 * r], d[4 * lj + 2 * r + 1]);
                const u32 x2 = packh(d[4 * (lj + 8) + 2 * r], d[4 * (lj + 8) + 2 * r + 1]);
                cmul_h2(x1, x2, cs[r], sn[r], y1[jj][r], y2[jj][r]);
            }
#else
            float o1[2][2], o2[2][2];   // [r][e]
            #pragma unroll
            for (int e = 0; e < 2; e++) {
                const int c = 8 * j + 2 * t4 + e;
                const float4 p = sh.pr[c];
                const float2 wv = sh.dw[c];
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
                    const float x1 = d[4 * lj + 2 * r + e], x2 = d[4 * (lj + 8) + 2 * r + e];
                    float& sq = r ? sq1 : sq0;
                    sq = fmaf(x1, x1, sq);
                    sq = fmaf(x2, x2, sq);
                    const float a = x1 * wv.x, bb = x2 * wv.y;
                    o1[r][e] = a * cs[r] - bb * sn[r];
                    o2[r][e] = bb * cs[r] + a * sn[r];
                }
            }
            #pragma unroll
            for (int r = 0; r < 2; r++) { y1[jj][r] = packh(o1[r][0], o1[r][1]); y2[jj][r] = packh(o2[r][0], o2[r][1]); }
#endif
        }
        // k-step kk (dims 16 kk..) and kk + 8 (dims 128 + 16 kk..): A rows keys g4, g4 + 8
        mma_h(sc, y1[0][0], y1[0][1], y1[1][0], y1[1][1], qb[4 * kk]);          // two chains: half the
        mma_h(sc2, y2[0][0], y2[0][1], y2[1][0], y2[1][1], qb[4 * (kk + 8)]);   // dependent mma latency
    }
}

extern "C" __global__ void __launch_bounds__(NTH, 1)
latent_decode(DECODE_PARAMS, const float* __restrict__ kscale, int sks_b, int sks_t,
              const unsigned char* __restrict__ uimg, const unsigned char* __restrict__ timg,
              const long long* __restrict__ wslot
#if PHASES
              , unsigned long long* __restrict__ phases
#endif
              )
{
#if PHASES
    // clock64 per phase, recorded by lane 0 of each warpgroup's first warp (wait: copies +
    // barrier; mma: wgmma issue + the next tile's copies + the wait for the first half;
    // rope: rotate + score, both halves, with the wait for the second between them;
    // softmax: mask, softmax, z_v p, end barrier); the prologue's parts: the start up to U's
    // copy issued (+ barrier), the write slot's load, the first tile's copies before the PDL
    // wait, the wait, copies after it, tables + q, the sink state, U's arrival
    unsigned long long g_start, g_end, c_start = clock64(), c_pro = 0, c_loop = 0, c_end = 0, p_wait = 0, p_mma = 0,
        p_rope = 0, p_sm = 0, n_tiles = 0, c_a, c_b, c_w0 = 0, c_w1 = 0, c_issue, c_q, c_sink, c_u, c_m, c_ws;
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(g_start));
#define CLK(x) x = clock64()
#else
#define CLK(x)
#endif
    DECODE_SMEM(Smem, 1024);
    const float eps = (float)eps_d, scale = (float)scale_d, inv_rscale = (float)(1.0 / rscale_d);
    const int tid = threadIdx.x, lane = tid & 31, w = tid >> 5, wg = w >> 2, wl = w & 3, wt = tid & 127;
    const int g4 = lane >> 2, t4 = lane & 3;
    const Chunk ch = chunk_of(qpos, kc, vc, kpos, T, CHUNK, KV, skc_b, svc_b, sp_b, window, sink);
    const int qpi = ch.qpi, wlim = ch.wlim, plo = ch.plo;   // (as locals: the loop's mask reads no field of ch)
    const u32 sbase = (u32)__cvta_generic_to_shared(smem_raw);
    auto at = [&](const void* p) { return sbase + (u32)((const unsigned char*)p - smem_raw); };
    const u32 su = at(sh.u), sones = at(sh.ones), sz = at(sh.z), svv = at(sh.v), skp = at(sh.kp);
#if KSCALE
    const u32 sks = at(sh.ks);
    const float* ksb = kscale + (long long)ch.b * sks_b + ch.h;   // (sequence, slot, KV head)
#endif

    // the step's write slot (below), asked for first: its load's latency (~0.7 us) under U's
    // copy instead of after it (asm volatile: kept ahead of the copies' asm)
    long long ws;
    asm volatile("ld.global.nc.b64 %0, [%1];" : "=l"(ws) : "l"(wslot));
    // U and its bias block (and, KSCALE, the pair tables pp and to, which sit together) as
    // laid out once per layer (cuda_decode.wg_images), waited for below: bulk copies by one
    // thread (as 16-byte cp.async they were 18 copies and their addresses per thread).
    // (Clusters of 2 or 4 programs that multicast U measured slower: 15.6 and 22.5 against
    // 15.0 us at batch 1, 32K keys.)
    const u32 sbar = at(sh.ubar);
    if (tid == 0) {
        mbar_init(sbar);
#if KSCALE
        mbar_expect(sbar, 32 * SBOU + sizeof(sh.pp) + sizeof(sh.to));
        bulk_copy(at(sh.pp), timg, sizeof(sh.pp) + sizeof(sh.to), sbar);
#else
        mbar_expect(sbar, 32 * SBOU);
#endif
        bulk_copy(su, uimg + (long long)ch.h * (32 * SBOU), 32 * SBOU, sbar);
    }
    __syncthreads();     // the mbarrier set up before any thread waits on it
    CLK(c_m);
    // a warpgroup's tile (64 keys from t0) into stage st (row >= 0: without its row `row`,
    // or with `only` that row alone; the loop's calls pass -1, which folds the tests away):
    // 16-byte pieces. Thread wt copies z row wt % 64, pieces wt / 64 + 2 j, and z_v rows
    // NJV (wt / PV) + j, piece wt % PV (where PV, z_v's pieces per row, divides 128; else
    // piece by piece): one base address and steps within the +-2 KB a copy's immediate
    // offset reaches (z: 32 bytes, z_v: one row), so a whole tile's copies compute no
    // address and overwrite no register a queued copy still reads (each such overwrite
    // stalls until the copy has issued). The chunk's last tile: rows past its end
    // zero-filled (their positions too: masked below by the key index)
    constexpr int PV = RV / 8, NJV = RV / 16;
    constexpr bool VSTEP = 128 % PV == 0;
    const int zr = wt & 63, vr = (wt / PV) * NJV;
    const u32 zd0 = sz + (u32)(wg * 2 * TILE * RK * 2 + (zr >> 3) * SBOZ + (wt >> 6) * 128 + (zr & 7) * 16);
    const u32 vd0 = svv + (u32)(wg * 2 * TILE * VS * 2 + (vr * VS + (wt % PV) * 8) * 2);
    const bf16* zs0 = ch.kbase + zr * SKT + (wt >> 6) * 8;
    const bf16* vs0 = ch.vbase + vr * SVT + (wt % PV) * 8;
    auto load = [&](int t0, int st, int row, bool only) {
        auto sel = [&](int r) { return row < 0 || ((r == row) == only); };
        const int left = ch.stop - t0;
        const bf16* zsrc = zs0 + (long long)t0 * SKT;
        const bf16* vsrc = vs0 + (long long)t0 * SVT;
        const u32 zd = zd0 + (u32)(st * TILE * RK * 2), vd = vd0 + (u32)(st * TILE * VS * 2);
        const u32 vst = svv + (u32)((wg * 2 + st) * TILE * VS * 2);
        if (wt < TILE && sel(wt)) {  // first: their address registers are free again before the big copies' turn
            const bool ok = wt < left;
            cp4a(skp + (u32)((wg * 2 + st) * TILE + wt) * 4, ok ? ch.pbase + t0 + wt : ch.pbase, ok);
#if KSCALE
            cp4a(sks + (u32)((wg * 2 + st) * TILE + wt) * 4, ok ? ksb + (long long)(t0 + wt) * sks_t : ksb, ok);
#endif
        }
        if (left >= TILE) {  // a whole tile: each copy one base address + an immediate, unpredicated
            #pragma unroll
            for (int j = 0; j < RK / 16; j++) if (sel(zr)) cp16a(zd + j * 256, zsrc + 16 * j, true);
            #pragma unroll
            for (int j = 0; j < RV / 16; j++) {
                if constexpr (VSTEP) {
                    if (sel(vr + j)) cp16a(vd + j * VS * 2, vsrc + j * SVT, true);
                } else {
                    const int i = wt + 128 * j, r = i / PV, c = i % PV;
                    if (sel(r)) cp16a(vst + (u32)(r * VS + c * 8) * 2, ch.vbase + (long long)(t0 + r) * SVT + c * 8, true);
                }
            }
        } else {   // the chunk's last tile: rows past its end zero-filled
            #pragma unroll
            for (int j = 0; j < RK / 16; j++) if (sel(zr)) cp16a(zd + j * 256, zr < left ? zsrc + 16 * j : ch.kbase, zr < left);
            #pragma unroll
            for (int j = 0; j < RV / 16; j++) {
                if constexpr (VSTEP) {
                    const bool ok = vr + j < left;
                    if (sel(vr + j)) cp16a(vd + j * VS * 2, ok ? vsrc + j * SVT : ch.vbase, ok);
                } else {
                    const int i = wt + 128 * j, r = i / PV, c = i % PV;
                    const bool ok = r < left;
                    if (sel(r)) cp16a(vst + (u32)(r * VS + c * 8) * 2, ok ? ch.vbase + (long long)(t0 + r) * SVT + c * 8 : ch.vbase, ok);
                }
            }
        }
    };
    // Programmatic dependent launch (cuda_decode.launch): this program may start while the
    // step's previous kernel still runs. Before griddepcontrol.wait it reads only what no
    // kernel of this step writes: U's image and the first tile's rows other than the step's
    // write slot (wslot, its cache column; -1: unknown, the whole tile waits). After it, that
    // row (an L2 hit: just written), q, the sink tile. Without PDL the wait returns at once.
    int t0 = ch.start + TILE * wg;   // the first tile goes out right behind U
    const int wr = ws < 0 ? -1 : (int)min(ws - t0, (long long)TILE);   // its row in the first tile (TILE: none)
#if PHASES
    asm volatile("" :: "r"(wr));   // (the clock after the slot's load has landed)
#endif
    CLK(c_ws);
    #pragma unroll 1
    for (int pass = 0; pass < 2; pass++) {   // (a loop: one copy of load's code for both)
        if (pass) {
            CLK(c_w0);
            asm volatile("griddepcontrol.wait;" ::: "memory");
            asm volatile("griddepcontrol.launch_dependents;");   // the combine may start its launch
            CLK(c_w1);
        }
        const bool go = pass ? ws < 0 || (wr >= 0 && wr < TILE) : ws >= 0;
        if (go && t0 < ch.stop) load(t0, 0, pass ? wr : (wr < 0 ? TILE : wr), pass && ws >= 0);
        cp_commit();
    }
    CLK(c_issue);

    if (tid < 128) {
        const int mrow = tid & 63, kb8 = tid >> 6;
        *reinterpret_cast<uint4*>(sh.ones + (mrow >> 3) * 256 + kb8 * 128 + (mrow & 7) * 16) =
            kb8 == 0 ? make_uint4(0x3F803F80u, 0u, 0u, 0u) : make_uint4(0u, 0u, 0u, 0u);
    }
#if !KSCALE
    if (tid < HALF) {
        const float f = invf[tid] * inv_rscale;
        float s8, c8;
        __sincosf(8.f * f, &s8, &c8);
        sh.pr[tid] = make_float4(f, c8, s8, 0.f);
        sh.dw[tid] = make_float2(has_norm ? nw[tid] : 1.f, has_norm ? nw[HALF + tid] : 1.f);
    }
#endif

    // q^T, the B operand of scores = K q^T, in f16 (bf16 converts exactly): head hh's
    // k-step ks, lane t4 holds dims 16 ks + 2 t4 (+1) and 16 ks + 8 + 2 t4 (+1); heads G-7 zero
    // (all loads first, as bf16 pairs: one L2 round trip, not one per item; cuda_decode.launch
    // hands in q with even strides)
    u32 qw[8 * 64 / NTH][2];
    #pragma unroll
    for (int j = 0; j < 8 * 64 / NTH; j++) {
        const int i = tid + NTH * j, hh = i >> 6, ks = (i >> 2) & 15, tq = i & 3;
        qw[j][0] = qw[j][1] = 0u;
        if (hh < G) {
            const u32* qh = reinterpret_cast<const u32*>(q + (long long)ch.b * sq_b + (long long)(ch.h * G + hh) * sq_h + 16 * ks + 2 * tq);
            qw[j][0] = qh[0]; qw[j][1] = qh[4];
        }
    }
    #pragma unroll
    for (int j = 0; j < 8 * 64 / NTH; j++) {
        const int i = tid + NTH * j, hh = i >> 6, ks = (i >> 2) & 15, tq = i & 3;
        auto lo = [](u32 x) { return __uint_as_float(x << 16); };
        auto hi = [](u32 x) { return __uint_as_float(x & 0xffff0000u); };
        sh.q[hh][4 * ks + tq] = make_uint2(packh(lo(qw[j][0]), hi(qw[j][0])), packh(lo(qw[j][1]), hi(qw[j][1])));
    }
    // this lane's softmax states, heads 2 t4 and 2 t4 + 1 (log2 units): the maxima shared by
    // the warp's lanes of one t4, the sums this lane's own keys' (added up in the merge)
    float m_i[2] = {NEG_INF, NEG_INF}, l_i[2] = {0.f, 0.f};
    float acc[VM][4];                 // o^T: rows latent V column, cols heads 2 t4, 2 t4 + 1
    #pragma unroll
    for (int i = 0; i < VM; i++) acc[i][0] = acc[i][1] = acc[i][2] = acc[i][3] = 0.f;
    const float qk_scale = scale * 1.4426950408889634f;  // scores in log2 units: exp2 below
    CLK(c_q);
    // chunk 0: the exact sink tile's own state (head dim), which the combine merges; warp
    // w, head w, from global memory while U is on its way
    if (NS > 0 && ch.pid_s == 0 && w < G)
        sink_state<G, D>(q, sk, sv, sm, sl, sa, ch.b, ch.h, w, ch.pid_bh, lane, ch.qp, NS, sq_b, sq_h, ss_b, ss_h, ss_j, window, scale);
    CLK(c_sink);
    mbar_wait(sbar);     // U (the first tile may still be on its way)
    CLK(c_u);
    fence_async();
    __syncthreads();     // U, the bias and ones blocks, q and the tables visible to all
#if PHASES
    c_pro = clock64();
#endif

    const u32 va_off = (u32)((((lane & 7) + ((lane >> 4) << 3)) * VS + ((lane >> 3) & 1) * 8) * 2);
    const u64 du = desc(su, 128, SBOU), du2 = desc(su + 16 * SBOU, 128, SBOU), dones = desc(sones, 128, 256);

    int st = 0;
    for (; t0 < ch.stop; t0 += 2 * TILE, st ^= 1) {
        CLK(c_a);
        cp_wait0();
        fence_async();
        bar_wg(wg);      // this tile's pieces, from every thread of the warpgroup
#if PHASES
        CLK(c_b); p_wait += c_b - c_a; c_a = c_b; n_tiles++;
#endif
        const int* kp = &sh.kp[wg][st][16 * wl];
#if KSCALE
        const float* ksm = &sh.ks[wg][st][16 * wl];
#endif
        float sq0 = 0.f, sq1 = 0.f;       // keys g4, g4 + 8: sum of squares over this thread's dims
        float sc[4] = {0.f, 0.f, 0.f, 0.f}, sc2[4] = {0.f, 0.f, 0.f, 0.f};  // scores (two chains): keys g4, g4 + 8 x heads 2 t4, 2 t4 + 1
        const u64 dz = desc(sz + (u32)((wg * 2 + st) * TILE * RK * 2), 128, SBOZ);
        // two halves of the rebuild, 128 dims each (U's rows are stored as dims 0-63, 128-191,
        // 64-127, 192-255: each half holds its RoPE pairs whole), two commit groups: the RoPE
        // and scores of the first half run while the tensor cores rebuild the second
        float da[64], db[64];
        wgmma_fence();
        #pragma unroll
        for (int kk = 0; kk < KS; kk++) wgmma_ss(da, dz + 16 * kk, du + 16 * kk, kk);
        wgmma_ss(da, dones, du + 16 * KS, 1);   // + 1 (hi + lo)^T: the bias
        wgmma_commit();
        #pragma unroll
        for (int kk = 0; kk < KS; kk++) wgmma_ss(db, dz + 16 * kk, du2 + 16 * kk, kk);
        wgmma_ss(db, dones, du2 + 16 * KS, 1);
        wgmma_commit();
        // the next tile's copies go out while the tensor cores work (the other stage:
        // every warp finished with it at the end of the last iteration)
        if (t0 + 2 * TILE < ch.stop) load(t0 + 2 * TILE, st ^ 1, -1, false);
        cp_commit();
        const int pk0 = kp[g4], pk1 = kp[g4 + 8];
#if KSCALE
        const uint2 *tb = sh.tb[w], *to = sh.to[g4];
        const int pw = kp[0];   // the warp's first key: contiguous keys' angles from its own
        const bool contig = __all_sync(0xffffffffu, pk0 == pw + g4 && pk1 == pk0 + 8);
        if (contig) {
            #pragma unroll
            for (int i = 0; i < 2; i++) {   // lane: pairs 2 (lane + 32 i) and + 1
                u32 c, s;
                cos_sin_h2((float)pw, sh.pp[lane + 32 * i], c, s);
                sh.tb[w][lane + 32 * i] = make_uint2(c, s);
            }
            __syncwarp();
        }
#else
        const uint2 *tb = nullptr, *to = nullptr;
        const bool contig = __all_sync(0xffffffffu, pk1 == pk0 + 8);
#endif
        wgmma_wait1(da);
#if PHASES
        CLK(c_b); p_mma += c_b - c_a; c_a = c_b;
#endif
        if (contig) rope_score<true, 0>(da, sh, &sh.q[g4][t4], tb, to, pk0, pk1, t4, sq0, sq1, sc, sc2);
        else rope_score<false, 0>(da, sh, &sh.q[g4][t4], tb, to, pk0, pk1, t4, sq0, sq1, sc, sc2);
        wgmma_wait0(db);
        if (contig) rope_score<true, 1>(db, sh, &sh.q[g4][t4], tb, to, pk0, pk1, t4, sq0, sq1, sc, sc2);
        else rope_score<false, 1>(db, sh, &sh.q[g4][t4], tb, to, pk0, pk1, t4, sq0, sq1, sc, sc2);
        #pragma unroll
        for (int i = 0; i < 4; i++) sc[i] += sc2[i];
#if PHASES
        CLK(c_b); p_rope += c_b - c_a; c_a = c_b;
#endif
        // each key's norm factor x the softmax scale (log2 units)
        float f[2];
#if KSCALE
        f[0] = ksm[g4] * qk_scale; f[1] = ksm[g4 + 8] * qk_scale;   // from the cache: 1 / rms
#else
        sq0 = quad_sum(sq0);   // a quad holds a key's dims
        sq1 = quad_sum(sq1);
        f[0] = has_norm ? rsqrtf(sq0 * (1.f / D) + eps) * qk_scale : qk_scale;
        f[1] = has_norm ? rsqrtf(sq1 * (1.f / D) + eps) * qk_scale : qk_scale;
#endif
        // mask: a written slot (position >= 0, not a sink slot) not after the query, in the
        // window; an unwritten slot only at the query's own step; heads past G
        float s[2][2];   // [key r][head i]
        #pragma unroll
        for (int r = 0; r < 2; r++) {
            const int kpr = r ? pk1 : pk0, dq = qpi - kpr;
            const bool ok = t0 + 16 * wl + g4 + 8 * r < ch.stop && dq >= 0 && dq < wlim
                            && (kpr >= plo || (kpr < 0 && dq == 0));
            #pragma unroll
            for (int i = 0; i < 2; i++) s[r][i] = ok && 2 * t4 + i < G ? sc[2 * r + i] * f[r] : NEG_INF;
        }
        float corr[2];
        #pragma unroll
        for (int i = 0; i < 2; i++) {   // head 2 t4 + i: the max over the warp's 16 keys (lanes of this t4)
            float mx = fmaxf(s[0][i], s[1][i]);
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 4));
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 8));
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 16));
            const float m_new = fmaxf(m_i[i], mx);
            const float m_safe = m_new == NEG_INF ? 0.f : m_new;
            s[0][i] = ex2(s[0][i] - m_safe); s[1][i] = ex2(s[1][i] - m_safe);
            corr[i] = m_i[i] == NEG_INF ? 1.f : ex2(m_i[i] - m_safe);   // nothing summed yet: no rescale
            l_i[i] = l_i[i] * corr[i] + s[0][i] + s[1][i];
            m_i[i] = m_new;
        }
        // o^T (columns: heads 2 t4, 2 t4 + 1: this lane's own) *= their corrections; += z_v^T p^T
        if (__any_sync(0xffffffffu, corr[0] != 1.f || corr[1] != 1.f)) {  // a head's max moved
            #pragma unroll
            for (int vm = 0; vm < VM; vm++) { acc[vm][0] *= corr[0]; acc[vm][1] *= corr[1]; acc[vm][2] *= corr[0]; acc[vm][3] *= corr[1]; }
        }
        // p^T as the B operand (keys 2 t4 (+1), 8 + 2 t4 (+1); head g4): each 8 x 8 block transposed
        const u32 pb0 = trans8(pack2(s[0][0], s[0][1])), pb1 = trans8(pack2(s[1][0], s[1][1]));
        const u32 vrows = svv + (u32)(((wg * 2 + st) * TILE + 16 * wl) * VS * 2) + va_off;
        pv_mma(acc, vrows, pb0, pb1);
        bar_wg(wg);      // every warp done with this stage: the next iteration reloads it
#if PHASES
        CLK(c_b); p_sm += c_b - c_a;
#endif
    }
#if PHASES
    c_loop = clock64();
#endif
    cp_wait0();
    __syncthreads();     // every warp done with z / v: the merge reuses them
    Merge& mg = *reinterpret_cast<Merge*>(&sh.z);
    #pragma unroll
    for (int i = 0; i < 2; i++) {   // the warp's sums: its lanes of one t4 hold the same head
        l_i[i] += __shfl_xor_sync(0xffffffffu, l_i[i], 4);
        l_i[i] += __shfl_xor_sync(0xffffffffu, l_i[i], 8);
        l_i[i] += __shfl_xor_sync(0xffffffffu, l_i[i], 16);
        if (g4 == 0 && 2 * t4 + i < G) { mg.m[w][2 * t4 + i] = m_i[i]; mg.l[w][2 * t4 + i] = l_i[i]; }
    }
    merge_states<WARPS, G, RV>(&sh.z, acc, tid, w, g4, t4, ch.pid_bh, ch.pid_s, S, m_out, l_out, acc_out);
#if PHASES
    c_end = clock64();
    asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(g_end));
    if (wt == 0) {   // per program and warpgroup: 18 values (bench_decode_kernel --phases reads them)
        unsigned long long* o = phases + ((long long)(blockIdx.y * gridDim.x + blockIdx.x) * 2 + wg) * 18;
        o[0] = g_start; o[1] = g_end; o[2] = c_pro - c_start; o[3] = c_loop - c_pro; o[4] = c_end - c_loop;
        o[5] = p_wait; o[6] = p_mma; o[7] = p_rope; o[8] = p_sm; o[9] = n_tiles;
        o[10] = c_w0 - c_ws; o[11] = c_w1 - c_w0; o[16] = c_m - c_start; o[17] = c_ws - c_m; o[12] = c_issue - c_w1; o[13] = c_q - c_issue;
        o[14] = c_sink - c_q; o[15] = c_u - c_sink;
    }
#endif
}
