// The decode partials of a latent-K, latent-V layer, each warp owning 16 RoPE pairs with its
// slice of U in registers as mma B-fragments (cuda_decode's docstring: the "tile" kernel).
// Sizes come from the build (cuda_decode.build_options: -DRK=... -DRV=... -DG=... -DBLK=...
// -DWARPS=... -DMINB=...).
#if !defined(RK) || !defined(RV) || !defined(G) || !defined(BLK) || !defined(WARPS) || !defined(MINB)
#error "build with the sizes as -D options (cuda_decode.build_options)"
#endif
#include "helpers.cuh"
#include "params.cuh"
#include "sink.cuh"
#include "softmax.cuh"

#define D 256
#define HALF 128
#define KS (RK / 16)
#define NTH (32 * WARPS)
#define PW (HALF / WARPS)    // RoPE pairs per warp
#define NT (PW / 8)          // their n8 tiles per half (2 or 1)
#define VC (RV / WARPS)      // latent V columns per warp
#define VNT (VC / 8)         // their n8 tiles
#define ZS (RK + 8)          // padded shared rows (bf16): ldmatrix without bank conflicts
#define VS (RV + 8)
#define SP (BLK + 4)         // padded score rows (floats)
#define MT (BLK / 16)        // m-tiles of 16 keys
// the tile kernel's own: shared-memory operands by generic pointer (helpers.cuh's by shared address)
__device__ __forceinline__ u32 smem_addr(const void* p) { return (u32)__cvta_generic_to_shared(p); }
__device__ __forceinline__ void ldsm4(u32* r, const void* p) { ldsm4(r, smem_addr(p)); }
__device__ __forceinline__ void ldsm4t(u32* r, const void* p) { ldsm4t(r, smem_addr(p)); }
__device__ __forceinline__ void ldsm2t(u32* r, const void* p) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0,%1}, [%2];"
                 : "=r"(r[0]), "=r"(r[1]) : "r"(smem_addr(p)));
}
__device__ __forceinline__ void cp4(void* dst, const void* src, bool ok) { cp4a(smem_addr(dst), src, ok); }

struct Smem {
    bf16 z[2][BLK][ZS];
    bf16 v[2][BLK][VS];
    int kp[2][BLK];
    float part[WARPS][G + 1][SP];  // [warp][head | the key's sum of squares][key] partials
    float fin[G][SP];          // [head][key] finished scores
};

extern "C" __global__ void __launch_bounds__(NTH, MINB)
latent_decode(DECODE_PARAMS)
{
    DECODE_SMEM(Smem, 16);
    const float eps = (float)eps_d, scale = (float)scale_d, inv_rscale = (float)(1.0 / rscale_d);
    const int tid = threadIdx.x, lane = tid & 31, w = tid >> 5;
    const int g4 = lane >> 2, t4 = lane & 3;
    const Chunk ch = chunk_of(qpos, kc, vc, kpos, T, CHUNK, KV, skc_b, svc_b, sp_b, window, sink);

    // cp.async pieces of 16 bytes: each thread's row and shared offset, computed once
    constexpr int NZ = (BLK * RK / 8 + NTH - 1) / NTH, NV = (BLK * RV / 8 + NTH - 1) / NTH;
    const u32 sbase = (u32)__cvta_generic_to_shared(smem_raw);
    int zrow[NZ], zoff[NZ], vrow[NV], voff[NV];
    u32 zsh[NZ], vsh[NV];
    #pragma unroll
    for (int j = 0; j < NZ; j++) {
        const int i = tid + NTH * j, r = i / (RK / 8), c = i % (RK / 8);
        zrow[j] = i < BLK * RK / 8 ? r : BLK;  // BLK: no piece
        zoff[j] = r * skc_t + c * 8;
        zsh[j] = (u32)((const unsigned char*)&sh.z[0][r][c * 8] - smem_raw);
    }
    #pragma unroll
    for (int j = 0; j < NV; j++) {
        const int i = tid + NTH * j, r = i / (RV / 8), c = i % (RV / 8);
        vrow[j] = i < BLK * RV / 8 ? r : BLK;
        voff[j] = r * svc_t + c * 8;
        vsh[j] = (u32)((const unsigned char*)&sh.v[0][r][c * 8] - smem_raw);
    }
    constexpr u32 ZSTAGE = sizeof(sh.z[0]), VSTAGE = sizeof(sh.v[0]);
    auto load_tile = [&](int t0, int st) {
        const bf16* kt = ch.kbase + (long long)t0 * skc_t;
        const bf16* vt = ch.vbase + (long long)t0 * svc_t;
        #pragma unroll
        for (int j = 0; j < NZ; j++)
            if (zrow[j] < BLK) {
                const bool ok = t0 + zrow[j] < ch.stop;
                cp16a(sbase + zsh[j] + st * ZSTAGE, ok ? kt + zoff[j] : ch.kbase, ok);
            }
        #pragma unroll
        for (int j = 0; j < NV; j++)
            if (vrow[j] < BLK) {
                const bool ok = t0 + vrow[j] < ch.stop;
                cp16a(sbase + vsh[j] + st * VSTAGE, ok ? vt + voff[j] : ch.vbase, ok);
            }
        if (tid < BLK) {
            const bool ok = t0 + tid < ch.stop;
            cp4(&sh.kp[st][tid], ok ? ch.pbase + t0 + tid : ch.pbase, ok);
        }
    };

    if (ch.start < ch.stop) load_tile(ch.start, 0);
    cp_commit();

    // this warp's U slice as B fragments: K half `hf`, n8 tile nt (dims PW w + 8nt + g4),
    // k-step ks. U's rows come permuted (cuda_decode.permute_up) so a lane's 2 KS words are adjacent
    u32 ub[2][NT][KS][2];
    float kbias[2][NT][2], kw[2][NT][2], fr[NT][2];
    #pragma unroll
    for (int hf = 0; hf < 2; hf++)
        #pragma unroll
        for (int nt = 0; nt < NT; nt++) {
            const int d = hf * HALF + PW * w + 8 * nt + g4;
            const uint2* row = reinterpret_cast<const uint2*>(ku + ((long long)ch.h * D + d) * RK) + t4 * KS;
            #pragma unroll
            for (int ks = 0; ks < KS; ks++) {
                const uint2 x = row[ks];
                ub[hf][nt][ks][0] = x.x;
                ub[hf][nt][ks][1] = x.y;
            }
            #pragma unroll
            for (int j = 0; j < 2; j++) {
                const int dd = hf * HALF + PW * w + 8 * nt + 2 * t4 + j;
                kbias[hf][nt][j] = kb[ch.h * D + dd];
                kw[hf][nt][j] = has_norm ? nw[dd] : 1.f;
            }
        }
    #pragma unroll
    for (int nt = 0; nt < NT; nt++)
        #pragma unroll
        for (int j = 0; j < 2; j++) fr[nt][j] = invf[PW * w + 8 * nt + 2 * t4 + j];
    // q as B fragments for scores = K_rot @ q^T over this warp's dims: k = dim, n = head.
    // NT 2: one k-step per half (16 dims each); NT 1: one k-step, 8 dims of each half
    u32 qb[2][2];
    {
        const bool real = g4 < G;
        const bf16* qrow = q + (long long)ch.b * sq_b + (long long)(ch.h * G + (real ? g4 : 0)) * sq_h;
        #pragma unroll
        for (int hf = 0; hf < 2; hf++) {
            const u32* p = reinterpret_cast<const u32*>(qrow + hf * HALF + PW * w);
            qb[hf][0] = real ? p[t4] : 0u;
            qb[hf][1] = real && NT == 2 ? p[4 + t4] : 0u;
        }
    }

    float l_i = 0.f, m_i = NEG_INF;   // head g4's running sum and max (log2 units)
    float acc[VNT][4];
    #pragma unroll
    for (int i = 0; i < VNT; i++) acc[i][0] = acc[i][1] = acc[i][2] = acc[i][3] = 0.f;

    // RoPE: keys g4 + 8 n (n = 0..7) of a tile are this thread's; over contiguous
    // positions their angles advance by 8 f per key, so one sin/cos per pair and tile and
    // a rotation by (cos 8f, sin 8f) per further key replace 7 of 8 sin/cos
    float c8[NT][2], s8[NT][2];
    #pragma unroll
    for (int nt = 0; nt < NT; nt++)
        #pragma unroll
        for (int j = 0; j < 2; j++) {
            fr[nt][j] *= inv_rscale;
            cos_sin(8.f * fr[nt][j], c8[nt][j], s8[nt][j]);
        }
    const float LOG2E = 1.4426950408889634f;
    const float qk_scale = scale * LOG2E;  // scores in log2 units: exp2 in the softmax

    int st = 0;
    for (int t0 = ch.start; t0 < ch.stop; t0 += BLK, st ^= 1) {
        if (t0 + BLK < ch.stop) load_tile(t0 + BLK, st ^ 1);
        cp_commit();
        cp_wait1();
        __syncthreads();
        const int pk0 = sh.kp[st][g4];
        bool contig = true;
        #pragma unroll
        for (int n = 1; n < BLK / 8; n++) contig = contig && sh.kp[st][g4 + 8 * n] == pk0 + 8 * n;
        contig = __all_sync(0xffffffffu, contig);
        float cc[NT][2], ss[NT][2];  // cos / sin at the current key of this thread (contig)
        if (contig) {
            #pragma unroll
            for (int nt = 0; nt < NT; nt++)
                #pragma unroll
                for (int j = 0; j < 2; j++) cos_sin((float)pk0 * fr[nt][j], cc[nt][j], ss[nt][j]);
        }
        // rebuild, rotate, partial scores: 4 m-tiles of 16 keys
        #pragma unroll
        for (int mt = 0; mt < MT; mt++) {
            float k[2][NT][4];
            #pragma unroll
            for (int hf = 0; hf < 2; hf++)
                #pragma unroll
                for (int nt = 0; nt < NT; nt++)
                    #pragma unroll
                    for (int i = 0; i < 4; i++) k[hf][nt][i] = kbias[hf][nt][i & 1];  // + bias, free
            #pragma unroll
            for (int ks = 0; ks < KS; ks++) {
                u32 a[4];
                ldsm4(a, &sh.z[st][mt * 16 + (lane & 15)][ks * 16 + (lane >> 4) * 8]);
                #pragma unroll
                for (int hf = 0; hf < 2; hf++)
                    #pragma unroll
                    for (int nt = 0; nt < NT; nt++) mma(k[hf][nt], a, ub[hf][nt][ks][0], ub[hf][nt][ks][1]);
            }
            // cos / sin for (key g4 | g4 + 8, pair j of n8 tile nt)
            float cs[2][NT][2], sn[2][NT][2];  // [key row][nt][j]
            if (contig) {
                #pragma unroll
                for (int nt = 0; nt < NT; nt++)
                    #pragma unroll
                    for (int j = 0; j < 2; j++) {
                        cs[0][nt][j] = cc[nt][j]; sn[0][nt][j] = ss[nt][j];
                        const float c1 = cc[nt][j] * c8[nt][j] - ss[nt][j] * s8[nt][j];
                        const float s1 = ss[nt][j] * c8[nt][j] + cc[nt][j] * s8[nt][j];
                        cs[1][nt][j] = c1; sn[1][nt][j] = s1;
                        cc[nt][j] = c1 * c8[nt][j] - s1 * s8[nt][j];
                        ss[nt][j] = s1 * c8[nt][j] + c1 * s8[nt][j];
                    }
            } else {
                const float p0 = (float)sh.kp[st][mt * 16 + g4], p1 = (float)sh.kp[st][mt * 16 + g4 + 8];
                #pragma unroll
                for (int nt = 0; nt < NT; nt++)
                    #pragma unroll
                    for (int j = 0; j < 2; j++) {
                        cos_sin(p0 * fr[nt][j], cs[0][nt][j], sn[0][nt][j]);
                        cos_sin(p1 * fr[nt][j], cs[1][nt][j], sn[1][nt][j]);
                    }
            }
            u32 a1[4], a2[4];
            float sq0 = 0.f, sq1 = 0.f;  // keys g4, g4 + 8: sum of squares over this thread's dims
            #pragma unroll
            for (int nt = 0; nt < NT; nt++) {
                float r1[4], r2[4];
                #pragma unroll
                for (int i = 0; i < 4; i++) {
                    const int j = i & 1, kr = i >> 1;
                    const float c = cs[kr][nt][j], sv_ = sn[kr][nt][j];
                    float x1 = k[0][nt][i], x2 = k[1][nt][i];
                    if (kr == 0) sq0 += x1 * x1 + x2 * x2; else sq1 += x1 * x1 + x2 * x2;
                    x1 *= kw[0][nt][j];
                    x2 *= kw[1][nt][j];
                    r1[i] = x1 * c - x2 * sv_;
                    r2[i] = x2 * c + x1 * sv_;
                }
                a1[2 * nt] = pack2(r1[0], r1[1]); a1[2 * nt + 1] = pack2(r1[2], r1[3]);
                a2[2 * nt] = pack2(r2[0], r2[1]); a2[2 * nt + 1] = pack2(r2[2], r2[3]);
            }
            // A fragment order: (row g, k 0-7), (row g+8, k 0-7), (row g, k 8-15), (row g+8, k 8-15)
            float sc[4] = {0.f, 0.f, 0.f, 0.f};
#if NT == 2
            mma(sc, a1, qb[0][0], qb[0][1]);
            mma(sc, a2, qb[1][0], qb[1][1]);
#else       // k cols 0-7: the first half's 8 dims, 8-15: the second half's
            const u32 a12[4] = {a1[0], a1[1], a2[0], a2[1]};
            mma(sc, a12, qb[0][0], qb[1][0]);
#endif
            // sc: (key g, heads 2t, 2t+1), (key g+8, heads 2t, 2t+1)
            if (2 * t4 < G) {
                sh.part[w][2 * t4][mt * 16 + g4] = sc[0];
                sh.part[w][2 * t4][mt * 16 + g4 + 8] = sc[2];
            }
            if (2 * t4 + 1 < G) {
                sh.part[w][2 * t4 + 1][mt * 16 + g4] = sc[1];
                sh.part[w][2 * t4 + 1][mt * 16 + g4 + 8] = sc[3];
            }
            if (has_norm) {  // the 4 threads of a key row hold its 32 dims of this warp
                sq0 = quad_sum(sq0);
                sq1 = quad_sum(sq1);
                if (t4 == 0) { sh.part[w][G][mt * 16 + g4] = sq0; sh.part[w][G][mt * 16 + g4 + 8] = sq1; }
            }
        }
        __syncthreads();
        // finished scores (log2 units): the 8 warps' partials, norm, scale, mask; G x BLK
        // entries, (G * BLK) / 256 per thread
        #pragma unroll
        for (int it = 0; it < (G * BLK + NTH - 1) / NTH; it++) {
            const int i = tid + NTH * it;
            if (i < G * BLK) {
                const int hh = i / BLK, key = i % BLK;
                float s = 0.f;
                #pragma unroll
                for (int ww = 0; ww < WARPS; ww++) s += sh.part[ww][hh][key];
                if (has_norm) {
                    float sq = 0.f;
                    #pragma unroll
                    for (int ww = 0; ww < WARPS; ww++) sq += sh.part[ww][G][key];
                    s *= rsqrtf(sq * (1.f / D) + eps);
                }
                const long long kp = sh.kp[st][key];
                const long long d = ch.qp - kp;
                bool ok = (t0 + key < ch.stop) && d >= 0 && (kp >= 0 || d == 0);
                if (sink > 0) ok = ok && (kp < 0 || kp >= sink);
                if (window > 0) ok = ok && d < window;
                sh.fin[hh][key] = ok ? s * qk_scale : NEG_INF;
            }
        }
        __syncthreads();
        // online softmax (every warp, the same) and p @ z_v for this warp's columns
        {
            float p[MT][4];
            float mx = NEG_INF;
            #pragma unroll
            for (int ks = 0; ks < MT; ks++) {
                if (g4 < G) {
                    const float2 lo = *reinterpret_cast<const float2*>(&sh.fin[g4][ks * 16 + 2 * t4]);
                    const float2 hi = *reinterpret_cast<const float2*>(&sh.fin[g4][ks * 16 + 2 * t4 + 8]);
                    p[ks][0] = lo.x; p[ks][1] = lo.y; p[ks][2] = hi.x; p[ks][3] = hi.y;
                } else {
                    p[ks][0] = p[ks][1] = p[ks][2] = p[ks][3] = NEG_INF;
                }
                mx = fmaxf(mx, fmaxf(fmaxf(p[ks][0], p[ks][1]), fmaxf(p[ks][2], p[ks][3])));
            }
            const float corr = softmax_step(p, mx, m_i, l_i);
            #pragma unroll
            for (int i = 0; i < VNT; i++) { acc[i][0] *= corr; acc[i][1] *= corr; }
            #pragma unroll
            for (int ks = 0; ks < MT; ks++) {
                u32 a[4] = {pack2(p[ks][0], p[ks][1]), 0u, pack2(p[ks][2], p[ks][3]), 0u};
#if VNT == 1
                {
                    u32 bv[2];
                    ldsm2t(bv, &sh.v[st][ks * 16 + (lane & 15)][w * VC]);
                    mma(acc[0], a, bv[0], bv[1]);
                }
#else
                #pragma unroll
                for (int cg = 0; cg < VNT / 2; cg++) {
                    u32 bv[4];
                    ldsm4t(bv, &sh.v[st][ks * 16 + (lane & 15)][w * VC + cg * 16 + (lane >> 4) * 8]);
                    mma(acc[2 * cg], a, bv[0], bv[1]);
                    mma(acc[2 * cg + 1], a, bv[2], bv[3]);
                }
#endif
            }
        }
        __syncthreads();
    }
    cp_wait0();
    // chunk state: rows (sequence, KV head, chunk, head), as kernels._decode_partial writes them
    if (g4 < G) {
        const long long row = ((long long)ch.pid_bh * S + ch.pid_s) * G + g4;
        if (w == 0 && t4 == 0) { m_out[row] = m_i * 0.6931471805599453f; l_out[row] = l_i; }  // log2 -> ln
        #pragma unroll
        for (int i = 0; i < VNT; i++) {
            const int col = w * VC + i * 8 + 2 * t4;
            acc_out[row * RV + col] = acc[i][0];
            acc_out[row * RV + col + 1] = acc[i][1];
        }
    }
    // the exact sink tile's own state (head dim), which the combine merges: warp 0, each head
    if (NS > 0 && ch.pid_s == 0 && w == 0) {
        for (int hs = 0; hs < G; hs++)
            sink_state<G, D>(q, sk, sv, sm, sl, sa, ch.b, ch.h, hs, ch.pid_bh, lane, ch.qp, NS, sq_b, sq_h, ss_b, ss_h, ss_j, window, scale);
    }
}
