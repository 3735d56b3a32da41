// The decode partials of a latent-K, latent-V layer: each warp scores its own 16-key subtiles
// with mma.sync, U in shared memory (cuda_decode's docstring: the "warp" kernel). Sizes come
// from the build (cuda_decode.build_options: -DRK=... -DRV=... -DG=... -DUNROLL=... -DNORMZ=...).
#if !defined(RK) || !defined(RV) || !defined(G) || !defined(UNROLL) || !defined(NORMZ)
#error "build with the sizes as -D options (cuda_decode.build_options)"
#endif
#include "helpers.cuh"
#include "merge.cuh"
#include "params.cuh"
#include "sink.cuh"
#include "softmax.cuh"

#define D 256
#define HALF 128
#define KS (RK / 16)          // k-steps of the rebuild
#define VM (RV / 16)          // m-tiles of o^T = z_v^T p^T
#define WARPS 8
#define NTH (32 * WARPS)
#define US (RK + 8)           // padded shared rows (bf16): ldmatrix without bank conflicts
#define ZS (RK + 8)
#define VS (RV + 8)
#define SUB 16                // keys per warp subtile
// NORMZ: the QK-norm sum from z (orthonormal U per head, weight folded into U)
enum : int { REBUILD_UNROLL = UNROLL };  // (#pragma unroll takes a constant, not a macro; no storage)
// d = a b + c (c: the rebuild's start, the bias)
__device__ __forceinline__ void mma_c(float* d, const u32* a, u32 b0, u32 b1, const float4 c) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
                 "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%10,%11,%12,%13};"
                 : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1),
                   "f"(c.x), "f"(c.y), "f"(c.z), "f"(c.w));
}

struct Smem {
    bf16 u[D][US];                 // this KV head's U (dims x rank), loaded once
    float4 pr[HALF];               // per RoPE pair: frequency / rope scale, cos 8f, sin 8f
    float4 dw[HALF];               // per pair: bias (dim, dim + 128), norm weight (dim, dim + 128)
    bf16 cz[RK];                   // NORMZ: 2 U^T b, the linear term of |U z + b|^2
    float4 bq[D / 2];              // per 2 dims d, d + 1: the bias as an accumulator quad (d, d + 1, d, d + 1)
    bf16 z[WARPS][2][SUB][ZS];     // each warp's own 2 stages of z, z_v, positions
    bf16 v[WARPS][2][SUB][VS];
    int kp[WARPS][2][SUB];
    u32 q[8][D / 2 + 4];           // the query heads (bf16 pairs), rows G-7 zero
};
using Merge = MergeBuf<WARPS, G, RV>;  // the epilogue's, over z / v once the loop is done

// one subtile's rebuild, RoPE, norm sums and scores^T over all 256 dims, 16 pairs at a
// time; CONTIG: the keys' positions are contiguous (key g4 + 8 = key g4 rotated by 8 f)
template <bool CONTIG, bool NZ>
__device__ __forceinline__ void rebuild_score(const Smem& sh, const u32 (&za)[KS][4], int pk0, int pk1, int g4, int t4,
                                              u32 u0, u32 ub_off, float (&sT)[2][4], float& sq0, float& sq1)
{
    const u32* qr = &sh.q[g4][0];
    u32 qa[2][4] = {{0u, 0u, 0u, 0u}, {0u, 0u, 0u, 0u}};  // q's A operand, rows 8-15 zero
    #pragma unroll REBUILD_UNROLL
    for (int c = 0; c < 8; c++) {     // RoPE pairs 16 c .. 16 c + 15: dims of both halves
        float4 pr[2][2], dw[2][2];    // [nt][j]: pair 16 c + 8 nt + 2 t4 + j
        #pragma unroll
        for (int nt = 0; nt < 2; nt++)
            #pragma unroll
            for (int j = 0; j < 2; j++) {
                pr[nt][j] = sh.pr[16 * c + 8 * nt + 2 * t4 + j];
                dw[nt][j] = sh.dw[16 * c + 8 * nt + 2 * t4 + j];
            }
        float k[2][2][4];             // [half][nt]: rows keys g4 | g4 + 8, cols 2 dims
        #pragma unroll
        for (int ks = 0; ks < KS; ks++) {
            u32 ub[2][4];
            ldsm4(ub[0], u0 + ub_off + (u32)((16 * c) * US * 2) + ks * 32);
            ldsm4(ub[1], u0 + ub_off + (u32)((HALF + 16 * c) * US * 2) + ks * 32);
            #pragma unroll
            for (int hf = 0; hf < 2; hf++)
                #pragma unroll
                for (int nt = 0; nt < 2; nt++) {
                    if (ks == 0) mma_c(k[hf][nt], za[0], ub[hf][2 * nt], ub[hf][2 * nt + 1], sh.bq[hf * 64 + 8 * c + 4 * nt + t4]);
                    else mma(k[hf][nt], za[ks], ub[hf][2 * nt], ub[hf][2 * nt + 1]);
                }
        }
        // cos / sin of (key g4 | g4 + 8, pair [nt][j])
        float cs[2][2][2], sn[2][2][2];  // [key row][nt][j]
        #pragma unroll
        for (int nt = 0; nt < 2; nt++)
            #pragma unroll
            for (int j = 0; j < 2; j++) {
                const float4 p = pr[nt][j];
                cos_sin((float)pk0 * p.x, cs[0][nt][j], sn[0][nt][j]);
                if (CONTIG) {
                    cs[1][nt][j] = cs[0][nt][j] * p.y - sn[0][nt][j] * p.z;
                    sn[1][nt][j] = sn[0][nt][j] * p.y + cs[0][nt][j] * p.z;
                } else {
                    cos_sin((float)pk1 * p.x, cs[1][nt][j], sn[1][nt][j]);
                }
            }
        float r1[2][4], r2[2][4];
        #pragma unroll
        for (int nt = 0; nt < 2; nt++)
            #pragma unroll
            for (int i = 0; i < 4; i++) {
                const int j = i & 1, kr = i >> 1;
                const float cc = cs[kr][nt][j], ss = sn[kr][nt][j];
                float x1 = k[0][nt][i], x2 = k[1][nt][i];
                if (!NZ) {  // else the sum comes from z and the weight is in U
                    if (kr == 0) { sq0 = fmaf(x1, x1, sq0); sq0 = fmaf(x2, x2, sq0); }
                    else { sq1 = fmaf(x1, x1, sq1); sq1 = fmaf(x2, x2, sq1); }
                    x1 *= dw[nt][j].z;
                    x2 *= dw[nt][j].w;
                }
                r1[nt][i] = x1 * cc - x2 * ss;
                r2[nt][i] = x2 * cc + x1 * ss;
            }
        // scores^T += q[:, dims] K_rot[keys, dims]^T: B (k dims 2t4.., n key g4) is the
        // rotated accumulator itself, packed
        qa[0][0] = qr[8 * c + t4]; qa[0][2] = qr[8 * c + 4 + t4];
        qa[1][0] = qr[64 + 8 * c + t4]; qa[1][2] = qr[68 + 8 * c + t4];
        mma(sT[0], qa[0], pack2(r1[0][0], r1[0][1]), pack2(r1[1][0], r1[1][1]));
        mma(sT[1], qa[0], pack2(r1[0][2], r1[0][3]), pack2(r1[1][2], r1[1][3]));
        mma(sT[0], qa[1], pack2(r2[0][0], r2[0][1]), pack2(r2[1][0], r2[1][1]));
        mma(sT[1], qa[1], pack2(r2[0][2], r2[0][3]), pack2(r2[1][2], r2[1][3]));
    }
}

// the warp's step after a subtile's scores sT (sT[nk][0..1]: head g4, keys 8 nk + 2 t4 + (0, 1)):
// the QK-norm factor (each key's full sum of squares: a quad holds a key's dims, then fetched for
// the keys this lane scores), the mask, an online softmax of the warp's own keys (m_i, l_i: head
// g4, log2 units) and o^T += z_v^T p^T (acc; z_v: the stage st at shared address vs0)
__device__ __forceinline__ void softmax_pv(const float (&sT)[2][4], float sq0, float sq1, const int* kp, int t0, int stop,
                                           int qpi, int wlim, int plo, bool hv, int t4, int has_norm, float bsq,
                                           float eps, float qk_scale, int st, u32 vs0, u32 va_off, float& m_i,
                                           float& l_i, float (&acc)[VM][4])
{
    constexpr u32 VST = SUB * VS * 2;
    float f[2][2];
    if (has_norm) {
        sq0 = quad_sum(sq0);
        sq1 = quad_sum(sq1);
        const float a0 = __shfl_sync(0xffffffffu, sq0, 8 * t4) + bsq, a1 = __shfl_sync(0xffffffffu, sq0, 8 * t4 + 4) + bsq;
        const float b0 = __shfl_sync(0xffffffffu, sq1, 8 * t4) + bsq, b1 = __shfl_sync(0xffffffffu, sq1, 8 * t4 + 4) + bsq;
        f[0][0] = rsqrtf(a0 * (1.f / D) + eps) * qk_scale; f[0][1] = rsqrtf(a1 * (1.f / D) + eps) * qk_scale;
        f[1][0] = rsqrtf(b0 * (1.f / D) + eps) * qk_scale; f[1][1] = rsqrtf(b1 * (1.f / D) + eps) * qk_scale;
    } else {
        f[0][0] = f[0][1] = f[1][0] = f[1][1] = qk_scale;
    }
    float s[2][2], mx = NEG_INF;
    #pragma unroll
    for (int nk = 0; nk < 2; nk++) {
        const int2 kk = *reinterpret_cast<const int2*>(&kp[8 * nk + 2 * t4]);
        #pragma unroll
        for (int j = 0; j < 2; j++) {
            const int kpj = j ? kk.y : kk.x, dq = qpi - kpj;
            // a written slot (position >= 0, not a sink slot) not after the query, in the
            // window; an unwritten slot only at the query's own step
            const bool ok = hv && t0 + 8 * nk + 2 * t4 + j < stop && dq >= 0 && dq < wlim
                            && (kpj >= plo || (kpj < 0 && dq == 0));
            s[nk][j] = ok ? sT[nk][j] * f[nk][j] : NEG_INF;
            mx = fmaxf(mx, s[nk][j]);
        }
    }
    const float corr = softmax_step(s, mx, m_i, l_i);
    // o^T (columns: heads 2 t4, 2 t4 + 1) *= their corrections; += z_v^T p^T
    if (__any_sync(0xffffffffu, corr != 1.f)) {  // a head's max moved
        const float ca = __shfl_sync(0xffffffffu, corr, 8 * t4), cb = __shfl_sync(0xffffffffu, corr, 8 * t4 + 4);
        #pragma unroll
        for (int vm = 0; vm < VM; vm++) { acc[vm][0] *= ca; acc[vm][1] *= cb; acc[vm][2] *= ca; acc[vm][3] *= cb; }
    }
    const u32 pb0 = pack2(s[0][0], s[0][1]), pb1 = pack2(s[1][0], s[1][1]);
    const u32 vrows = vs0 + st * VST + va_off;
    pv_mma(acc, vrows, pb0, pb1);
}

// lane's piece j (16 bytes) of a subtile with P pieces a row: its row r, offset go in the cache
// (row stride gs) and shared address so (rows of ROW bf16 from s0); where P divides a warp's 32,
// from the lane's first piece (row r0, offset o0, address d0) by a fixed step
template <int P, int ROW>
__device__ __forceinline__ void piece(int j, int lane, int r0, long long o0, u32 d0, u32 s0, int gs, int& r,
                                      long long& go, u32& so)
{
    if constexpr (32 % P == 0) {
        r = r0 + j * (32 / P); go = o0 + (long long)j * (32 / P) * gs; so = d0 + j * (32 / P) * ROW * 2;
    } else {
        const int i = lane + 32 * j, rr = i / P, c = i % P;
        r = rr; go = (long long)rr * gs + c * 8; so = s0 + (u32)(rr * ROW + c * 8) * 2;
    }
}

extern "C" __global__ void __launch_bounds__(NTH, 1)
latent_decode(DECODE_PARAMS,
              const bf16* __restrict__ cz, const float* __restrict__ cbb, int has_e)
{
    DECODE_SMEM(Smem, 16);
    const float eps = (float)eps_d, scale = (float)scale_d, inv_rscale = (float)(1.0 / rscale_d);
    const int tid = threadIdx.x, lane = tid & 31, w = tid >> 5;
    const int g4 = lane >> 2, t4 = lane & 3;
    const Chunk ch = chunk_of(qpos, kc, vc, kpos, T, CHUNK, KV, skc_b, svc_b, sp_b, window, sink);
    const u32 sbase = (u32)__cvta_generic_to_shared(smem_raw);

    // U (this KV head's D rows of RK) into shared memory: one group, waited for below
    #pragma unroll
    for (int j = 0; j < D * RK / 8 / NTH; j++) {
        const int i = tid + NTH * j, r = i / (RK / 8), c = i % (RK / 8);
        cp16a(sbase + (u32)((const unsigned char*)&sh.u[r][c * 8] - smem_raw), ku + ((long long)ch.h * D + r) * RK + c * 8, true);
    }
    cp_commit();
    if (tid < HALF) {
        const float f = invf[tid] * inv_rscale;
        float c8, s8;
        cos_sin(8.f * f, c8, s8);
        sh.pr[tid] = make_float4(f, c8, s8, 0.f);
        sh.dw[tid] = make_float4(kb[ch.h * D + tid], kb[ch.h * D + HALF + tid],
                                 has_norm ? nw[tid] : 1.f, has_norm ? nw[HALF + tid] : 1.f);
        if (NORMZ && tid < RK) sh.cz[tid] = cz[ch.h * RK + tid];
        const float b0 = kb[ch.h * D + 2 * tid], b1 = kb[ch.h * D + 2 * tid + 1];
        sh.bq[tid] = make_float4(b0, b1, b0, b1);
    }

    // this warp's subtiles: keys start + SUB (w + WARPS i), i = 0, 1, ...; each lane copies
    // 16-byte pieces of its own rows (SUB * RK / 8 / 32 of z, of z_v)
    constexpr int NZ = SUB * RK / 8 / 32, NV = SUB * RV / 8 / 32;
    const u32 zs0 = (u32)((const unsigned char*)&sh.z[w][0][0][0] - smem_raw) + sbase;
    const u32 vs0 = (u32)((const unsigned char*)&sh.v[w][0][0][0] - smem_raw) + sbase;
    const u32 ps0 = (u32)((const unsigned char*)&sh.kp[w][0][0] - smem_raw) + sbase;
    constexpr u32 ZST = SUB * ZS * 2, VST = SUB * VS * 2;
    // a lane's pieces: where RK / 8 (RV / 8) pieces of a row divide a warp's 32, lane l
    // copies piece l % (R / 8) of rows l / (R / 8) + j 32 / (R / 8): one base address and a
    // fixed step (else per-piece offsets)
    constexpr int PZ = RK / 8, PV = RV / 8;
    const int zr0 = lane / PZ, vr0 = lane / PV;
    const u32 zd0 = zs0 + (u32)(zr0 * ZS + (lane % PZ) * 8) * 2, vd0 = vs0 + (u32)(vr0 * VS + (lane % PV) * 8) * 2;
    const long long zo0 = (long long)zr0 * skc_t + (lane % PZ) * 8, vo0 = (long long)vr0 * svc_t + (lane % PV) * 8;
    auto zpiece = [&](int j, int& r, long long& go, u32& so) { piece<PZ, ZS>(j, lane, zr0, zo0, zd0, zs0, skc_t, r, go, so); };
    auto vpiece = [&](int j, int& r, long long& go, u32& so) { piece<PV, VS>(j, lane, vr0, vo0, vd0, vs0, svc_t, r, go, so); };
    auto load = [&](int t0, int st) {
        const bf16* kt = ch.kbase + (long long)t0 * skc_t;
        const bf16* vt = ch.vbase + (long long)t0 * svc_t;
        const int left = ch.stop - t0;
        if (left >= SUB) {   // a whole subtile
            #pragma unroll
            for (int j = 0; j < NZ; j++) {
                int r; long long go; u32 so;
                zpiece(j, r, go, so);
                cp16a(so + st * ZST, kt + go, true);
            }
            #pragma unroll
            for (int j = 0; j < NV; j++) {
                int r; long long go; u32 so;
                vpiece(j, r, go, so);
                cp16a(so + st * VST, vt + go, true);
            }
        } else {             // the chunk's last: rows past its end zero-filled
            #pragma unroll
            for (int j = 0; j < NZ; j++) {
                int r; long long go; u32 so;
                zpiece(j, r, go, so);
                cp16a(so + st * ZST, r < left ? kt + go : ch.kbase, r < left);
            }
            #pragma unroll
            for (int j = 0; j < NV; j++) {
                int r; long long go; u32 so;
                vpiece(j, r, go, so);
                cp16a(so + st * VST, r < left ? vt + go : ch.vbase, r < left);
            }
        }
        if (lane < SUB) cp4a(ps0 + (u32)(st * SUB + lane) * 4, lane < left ? ch.pbase + t0 + lane : ch.pbase, lane < left);
    };
    int t0 = ch.start + SUB * w;
    if (t0 < ch.stop) load(t0, 0);
    cp_commit();

    // q, the A operand of scores^T = q K^T (rows: heads, 8-15 zero; k: dims)
    for (int i = tid; i < 8 * (D / 2); i += NTH) {
        const int hh = i / (D / 2), c = i % (D / 2);
        sh.q[hh][c] = hh < G ? reinterpret_cast<const u32*>(q + (long long)ch.b * sq_b + (long long)(ch.h * G + hh) * sq_h)[c] : 0u;
    }
    float m_i = NEG_INF, l_i = 0.f;   // this warp's softmax state for head g4 (log2 units)
    float acc[VM][4];                 // o^T: rows latent V column, cols heads 2 t4, 2 t4 + 1
    #pragma unroll
    for (int i = 0; i < VM; i++) acc[i][0] = acc[i][1] = acc[i][2] = acc[i][3] = 0.f;
    const float qk_scale = scale * 1.4426950408889634f;  // scores in log2 units: exp2 below
    const float bsq = NORMZ ? cbb[ch.h] : 0.f;           // NORMZ: |b|^2, the constant of the sum

    // chunk 0: the exact sink tile's own state (head dim), which the combine merges; warp
    // w, head w, from global memory while U is on its way
    if (NS > 0 && ch.pid_s == 0 && w < G)
        sink_state<G, D>(q, sk, sv, sm, sl, sa, ch.b, ch.h, w, ch.pid_bh, lane, ch.qp, NS, sq_b, sq_h, ss_b, ss_h, ss_j, window, scale);
    cp_wait1();          // U
    __syncthreads();     // U and the tables visible to every warp

    // ldmatrix lane addresses: z (A, rows keys), U (B, rows dims), z_v^T (A via .trans)
    const u32 za_off = (u32)(((lane & 15) * ZS + (lane >> 4) * 8) * 2);
    const u32 ub_off = (u32)((((lane & 7) + ((lane >> 4) << 3)) * US + ((lane >> 3) & 1) * 8) * 2);
    const u32 va_off = (u32)((((lane & 7) + ((lane >> 4) << 3)) * VS + ((lane >> 3) & 1) * 8) * 2);
    const u32 u0 = sbase + (u32)((const unsigned char*)&sh.u[0][0] - smem_raw);

    const bool hv = g4 < G;           // head g4 is one of the G
    int st = 0;
    for (; t0 < ch.stop; t0 += SUB * WARPS, st ^= 1) {
        if (t0 + SUB * WARPS < ch.stop) load(t0 + SUB * WARPS, st ^ 1);
        cp_commit();
        cp_wait1();
        __syncwarp();
        const int* kp = &sh.kp[w][st][0];
        const int pk0 = kp[g4], pk1 = kp[g4 + 8];
        const bool contig = __all_sync(0xffffffffu, pk1 == pk0 + 8);
        u32 za[KS][4];
        #pragma unroll
        for (int ks = 0; ks < KS; ks++) ldsm4(za[ks], zs0 + st * ZST + za_off + ks * 32);
        float sT[2][4] = {{0.f, 0.f, 0.f, 0.f}, {0.f, 0.f, 0.f, 0.f}};  // scores^T: keys 0-7, 8-15
        float sq0 = 0.f, sq1 = 0.f;       // keys g4, g4 + 8: sum of squares over this thread's dims
        if constexpr (NORMZ) {
            // |U z + b|^2 = |z|^2 + 2 c.z + |b|^2 (U orthonormal, c = U^T b): the Gram
            // matrix z z^T's diagonal (z's A fragments are also its B fragments) plus z (2c)
            float gr[2][4] = {{0.f, 0.f, 0.f, 0.f}, {0.f, 0.f, 0.f, 0.f}}, li[4] = {0.f, 0.f, 0.f, 0.f};
            #pragma unroll
            for (int ks = 0; ks < KS; ks++) {
                mma(gr[0], za[ks], za[ks][0], za[ks][2]);
                mma(gr[1], za[ks], za[ks][1], za[ks][3]);
                if (has_e) {
                    const u32* cw = reinterpret_cast<const u32*>(&sh.cz[ks * 16]);
                    mma(li, za[ks], g4 == 0 ? cw[t4] : 0u, g4 == 0 ? cw[4 + t4] : 0u);
                }
            }
            // key g4's diagonal entry sits in lane (g4, t4 = g4 / 2), g4 + 8's likewise
            const bool dg = t4 == (g4 >> 1);
            const bool odd = g4 & 1;
            sq0 = (dg ? (odd ? gr[0][1] : gr[0][0]) : 0.f) + (t4 == 0 ? li[0] : 0.f);
            sq1 = (dg ? (odd ? gr[1][3] : gr[1][2]) : 0.f) + (t4 == 0 ? li[2] : 0.f);
            if (contig) rebuild_score<true, true>(sh, za, pk0, pk1, g4, t4, u0, ub_off, sT, sq0, sq1);
            else rebuild_score<false, true>(sh, za, pk0, pk1, g4, t4, u0, ub_off, sT, sq0, sq1);
        } else {
            if (contig) rebuild_score<true, false>(sh, za, pk0, pk1, g4, t4, u0, ub_off, sT, sq0, sq1);
            else rebuild_score<false, false>(sh, za, pk0, pk1, g4, t4, u0, ub_off, sT, sq0, sq1);
        }
        softmax_pv(sT, sq0, sq1, kp, t0, ch.stop, ch.qpi, ch.wlim, ch.plo, hv, t4, has_norm, bsq, eps, qk_scale, st, vs0, va_off, m_i,
                   l_i, acc);
        __syncwarp();    // the next load reuses this stage
    }
    cp_wait0();
    __syncthreads();     // every warp done with z / v: the merge reuses them
    Merge& mg = *reinterpret_cast<Merge*>(&sh.z);
    if (t4 == 0 && g4 < G) { mg.m[w][g4] = m_i; mg.l[w][g4] = l_i; }
    merge_states<WARPS, G, RV>(&sh.z, acc, tid, w, g4, t4, ch.pid_bh, ch.pid_s, S, m_out, l_out, acc_out);
}
