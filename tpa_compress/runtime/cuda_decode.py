"""Hand-written CUDA kernels for the decode step of a latent-K, latent-V layer.

Three kernels write the same per-chunk states (kind_for picks one, BUILD["kernel"]):
"wg" (cuda/latent_decode_wg.cu, Hopper only, the default there): two warpgroups per
program rebuild 64-key tiles with wgmma, U resident in shared memory and read by the
tensor cores; "warp" (the default elsewhere): each warp scores its own 16-key subtiles
with mma.sync, U in shared memory; "tile" (V ranks 256 the wg kernel cannot hold, described below): each warp owns
16 RoPE pairs with its slice of U in registers. docs/architecture.md compares them.

Why it exists: the Triton kernel (kernels.py) rebuilds K = U z per tile with U streamed
through shared memory on every tile. Here each of the 8 warps of a program owns 16 RoPE
pairs (32 of the 256 head dims) and keeps its slice of U in registers as mma B-fragments
for the whole program, so a tile only streams z:

  per 64-key tile:  z, z_v, positions --cp.async--> shared (2 stages)
  each warp:        K[keys, its dims] = z @ U^T + bias (mma.sync m16n8k16, bias as the
                    accumulator's start), the QK-norm's sum of squares over its dims,
                    RoPE in registers (a pair's two halves sit in the same thread; over
                    contiguous positions the angles advance by a fixed rotation per key,
                    so one sin/cos per pair and tile), partial scores = rotated K @ q^T
                    (the accumulator fragments are the next mma's A operand)
  all threads:      scores = sum of the 8 partials x rsqrt(mean square + eps) x scale x
                    log2(e), mask
  each warp:        online softmax in exp2 (the same in every warp) and p @ z_v for its
                    latent columns

It writes the same per-chunk softmax states as the Triton kernel's `_decode_partial`
(latent mixtures, LATENT_COMBINE), and the sink tile's own state, so the Triton combine
finishes the step. The "wg" kernel is launched with programmatic dependent launch where the
layer's DecodeAttention has it on (`launch_pdl`: its programs start under the previous
kernel's tail). Compiled when a layer is set up (`try_build`) with torch's NVRTC (`torch.cuda._compile_kernel`):
no compiler or package beyond torch. Serves head dim 256 with 8 query heads per KV head at
most, K ranks that are multiples of 16 up to 128, V ranks that are multiples of 16 up to 128
("wg", "warp"), above 128 where the wg kernel's buffers fit (wg_fits), else 128 or 256
("tile"), a bf16 cache, any K basis. Measured in docs/benchmarks.md (seventh and sixteenth runs).
"""
from __future__ import annotations

import ctypes
import functools
import warnings
from pathlib import Path

import torch

_WG_PATH = Path(__file__).parent / "cuda" / "latent_decode_wg.cu"  # the "wg" kernel's source
BLOCK = 0       # keys per tile: 0 picks by cache length (block_for); 64 or 128 forces
LONG = 8192     # cache slots from which tiles are 128 keys

_SRC = r"""
#define D 256
#define HALF 128
#define RK __RK__
#define RV __RV__
#define KS (RK / 16)
#define WARPS __WARPS__
#define NTH (32 * WARPS)
#define PW (HALF / WARPS)    // RoPE pairs per warp
#define NT (PW / 8)          // their n8 tiles per half (2 or 1)
#define VC (RV / WARPS)      // latent V columns per warp
#define VNT (VC / 8)         // their n8 tiles
#define G __G__
#define ZS (RK + 8)          // padded shared rows (bf16): ldmatrix without bank conflicts
#define VS (RV + 8)
#define BLK __BLK__          // keys per tile
#define SP (BLK + 4)         // padded score rows (floats)
#define MT (BLK / 16)        // m-tiles of 16 keys
#define NEG_INF __int_as_float(0xff800000)
typedef unsigned short bf16;
typedef unsigned int u32;

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
__device__ __forceinline__ void ldsm4(u32* r, const void* p) {
    u32 s = (u32)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(s));
}
__device__ __forceinline__ void ldsm4t(u32* r, const void* p) {
    u32 s = (u32)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(s));
}
__device__ __forceinline__ void ldsm2t(u32* r, const void* p) {
    u32 s = (u32)__cvta_generic_to_shared(p);
    asm volatile("ldmatrix.sync.aligned.m8n8.x2.trans.shared.b16 {%0,%1}, [%2];"
                 : "=r"(r[0]), "=r"(r[1]) : "r"(s));
}
__device__ __forceinline__ void cp16(void* dst, const void* src, bool ok) {
    u32 s = (u32)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" :: "r"(s), "l"(src), "r"(ok ? 16 : 0));
}
__device__ __forceinline__ void cp16a(u32 s, const void* src, bool ok) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" :: "r"(s), "l"(src), "r"(ok ? 16 : 0));
}
__device__ __forceinline__ float ex2(float x) { float y; asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x)); return y; }
__device__ __forceinline__ void cp4(void* dst, const void* src, bool ok) {
    u32 s = (u32)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4, %2;" :: "r"(s), "l"(src), "r"(ok ? 4 : 0));
}
__device__ __forceinline__ void cp_commit() { asm volatile("cp.async.commit_group;"); }
__device__ __forceinline__ void cp_wait1() { asm volatile("cp.async.wait_group 1;"); }
__device__ __forceinline__ void cp_wait0() { asm volatile("cp.async.wait_group 0;"); }
__device__ __forceinline__ void cos_sin(float x, float& c, float& s) {
    // reduce to [-pi, pi] (2 pi split in two constants, the first exact in a few bits),
    // then the special-function unit: the Triton kernel's FAST_TRIG, same constants
    float k = floorf(x * 0.15915494309189535f + 0.5f);
    float r = x - k * 6.28125f - k * 0.0019353071795864769f;
    c = __cosf(r); s = __sinf(r);
}

struct Smem {
    bf16 z[2][BLK][ZS];
    bf16 v[2][BLK][VS];
    int kp[2][BLK];
    float part[WARPS][G + 1][SP];  // [warp][head | the key's sum of squares][key] partials
    float fin[G][SP];          // [head][key] finished scores
};

extern "C" __global__ void __launch_bounds__(NTH, __MINB__)
latent_decode(__PARAMS__)
{
    extern __shared__ __align__(16) unsigned char smem_raw[];
    __PROLOGUE__
    const int tid = threadIdx.x, lane = tid & 31, w = tid >> 5;
    const int g4 = lane >> 2, t4 = lane & 3;
    const int pid_s = blockIdx.x, pid_bh = blockIdx.y;
    const int b = pid_bh / KV, h = pid_bh % KV;
    const long long qp = qpos[b];
    const int start = pid_s * CHUNK;
    const int stop = min(T, start + CHUNK);
    const bf16* kbase = kc + (long long)b * skc_b;
    const bf16* vbase = vc + (long long)b * svc_b;
    const int* pbase = kpos + (long long)b * sp_b;

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
        const bf16* kt = kbase + (long long)t0 * skc_t;
        const bf16* vt = vbase + (long long)t0 * svc_t;
        #pragma unroll
        for (int j = 0; j < NZ; j++)
            if (zrow[j] < BLK) {
                const bool ok = t0 + zrow[j] < stop;
                cp16a(sbase + zsh[j] + st * ZSTAGE, ok ? kt + zoff[j] : kbase, ok);
            }
        #pragma unroll
        for (int j = 0; j < NV; j++)
            if (vrow[j] < BLK) {
                const bool ok = t0 + vrow[j] < stop;
                cp16a(sbase + vsh[j] + st * VSTAGE, ok ? vt + voff[j] : vbase, ok);
            }
        if (tid < BLK) {
            const bool ok = t0 + tid < stop;
            cp4(&sh.kp[st][tid], ok ? pbase + t0 + tid : pbase, ok);
        }
    };

    if (start < stop) load_tile(start, 0);
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
            const uint2* row = reinterpret_cast<const uint2*>(ku + ((long long)h * D + d) * RK) + t4 * KS;
            #pragma unroll
            for (int ks = 0; ks < KS; ks++) {
                const uint2 x = row[ks];
                ub[hf][nt][ks][0] = x.x;
                ub[hf][nt][ks][1] = x.y;
            }
            #pragma unroll
            for (int j = 0; j < 2; j++) {
                const int dd = hf * HALF + PW * w + 8 * nt + 2 * t4 + j;
                kbias[hf][nt][j] = kb[h * D + dd];
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
        const bf16* qrow = q + (long long)b * sq_b + (long long)(h * G + (real ? g4 : 0)) * sq_h;
        #pragma unroll
        for (int hf = 0; hf < 2; hf++) {
            const u32* p = reinterpret_cast<const u32*>(qrow + hf * HALF + PW * w);
            qb[hf][0] = real ? p[t4] : 0u;
            qb[hf][1] = real && NT == 2 ? p[4 + t4] : 0u;
        }
    }

    float m_i = NEG_INF, l_i = 0.f;
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
    for (int t0 = start; t0 < stop; t0 += BLK, st ^= 1) {
        if (t0 + BLK < stop) load_tile(t0 + BLK, st ^ 1);
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
                sq0 += __shfl_xor_sync(0xffffffffu, sq0, 1);
                sq0 += __shfl_xor_sync(0xffffffffu, sq0, 2);
                sq1 += __shfl_xor_sync(0xffffffffu, sq1, 1);
                sq1 += __shfl_xor_sync(0xffffffffu, sq1, 2);
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
                const long long d = qp - kp;
                bool ok = (t0 + key < stop) && d >= 0 && (kp >= 0 || d == 0);
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
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
            mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
            const float m_new = fmaxf(m_i, mx);
            const float m_safe = m_new == NEG_INF ? 0.f : m_new;
            float sum = 0.f;
            #pragma unroll
            for (int ks = 0; ks < MT; ks++)
                #pragma unroll
                for (int i = 0; i < 4; i++) { p[ks][i] = ex2(p[ks][i] - m_safe); sum += p[ks][i]; }
            sum += __shfl_xor_sync(0xffffffffu, sum, 1);
            sum += __shfl_xor_sync(0xffffffffu, sum, 2);
            const float corr = ex2(m_i - m_safe);
            l_i = l_i * corr + sum;
            m_i = m_new;
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
        const long long row = ((long long)pid_bh * S + pid_s) * G + g4;
        if (w == 0 && t4 == 0) { m_out[row] = m_i * 0.6931471805599453f; l_out[row] = l_i; }  // log2 -> ln
        #pragma unroll
        for (int i = 0; i < VNT; i++) {
            const int col = w * VC + i * 8 + 2 * t4;
            acc_out[row * RV + col] = acc[i][0];
            acc_out[row * RV + col + 1] = acc[i][1];
        }
    }
    __SINK__
}
"""


_SINK = r"""
    // the exact sink tile's own state (head dim), which the combine merges
    if (NS > 0 && pid_s == 0 && w == 0) {
        for (int gg = 0; gg < G; gg++) {
            const bf16* qrow = q + (long long)b * sq_b + (long long)(h * G + gg) * sq_h;
            float qv[8];
            #pragma unroll
            for (int i = 0; i < 8; i++) qv[i] = bf2f(qrow[lane + 32 * i]);
            float ms = NEG_INF, ls = 0.f, as[8];
            #pragma unroll
            for (int i = 0; i < 8; i++) as[i] = 0.f;
            for (int j = 0; j < NS; j++) {
                const bf16* kr = sk + (long long)b * ss_b + (long long)h * ss_h + (long long)j * ss_j;
                const bf16* vr = sv + (long long)b * ss_b + (long long)h * ss_h + (long long)j * ss_j;
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
            const int r = pid_bh * G + gg;
            if (lane == 0) { sm[r] = ms; sl[r] = ls; }
            #pragma unroll
            for (int i = 0; i < 8; i++) sa[(long long)r * D + lane + 32 * i] = as[i];
        }
    }
"""

# the warp-owned-keys kernel (BUILD["kernel"] "warp"): each warp scores its own 16-key
# subtiles over all 256 dims, U in shared memory, no block barrier in the loop
_SRC_WARP = r"""
#define D 256
#define HALF 128
#define RK __RK__
#define RV __RV__
#define KS (RK / 16)          // k-steps of the rebuild
#define VM (RV / 16)          // m-tiles of o^T = z_v^T p^T
#define WARPS 8
#define NTH (32 * WARPS)
#define G __G__
#define US (RK + 8)           // padded shared rows (bf16): ldmatrix without bank conflicts
#define ZS (RK + 8)
#define VS (RV + 8)
#define SUB 16                // keys per warp subtile
#define NORMZ __NORMZ__        // the QK-norm sum from z (orthonormal U per head, weight folded into U)
#define NEG_INF __int_as_float(0xff800000)
__HELPERS__
// d = a b + c (c: the rebuild's start, the bias)
__device__ __forceinline__ void mma_c(float* d, const u32* a, u32 b0, u32 b1, const float4 c) {
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
                 "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%10,%11,%12,%13};"
                 : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1),
                   "f"(c.x), "f"(c.y), "f"(c.z), "f"(c.w));
}
__device__ __forceinline__ void ldsm4(u32* r, u32 s) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3]) : "r"(s));
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
struct Merge {                     // the epilogue's, over z / v once the loop is done
    float m[WARPS][G], l[WARPS][G];
    float a[WARPS][G][RV];
};

// one subtile's rebuild, RoPE, norm sums and scores^T over all 256 dims, 16 pairs at a
// time; CONTIG: the keys' positions are contiguous (key g4 + 8 = key g4 rotated by 8 f)
template <bool CONTIG, bool NZ>
__device__ __forceinline__ void rebuild_score(const Smem& sh, const u32 (&za)[KS][4], int pk0, int pk1, int g4, int t4,
                                              u32 u0, u32 ub_off, float (&sT)[2][4], float& sq0, float& sq1)
{
    const u32* qr = &sh.q[g4][0];
    u32 qa[2][4] = {{0u, 0u, 0u, 0u}, {0u, 0u, 0u, 0u}};  // q's A operand, rows 8-15 zero
    #pragma unroll __UNROLL__
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

extern "C" __global__ void __launch_bounds__(NTH, 1)
latent_decode(__PARAMS__,
              const bf16* __restrict__ cz, const float* __restrict__ cbb, int has_e)
{
    extern __shared__ __align__(16) unsigned char smem_raw[];
    __PROLOGUE__
    const int tid = threadIdx.x, lane = tid & 31, w = tid >> 5;
    __INDICES__

    // U (this KV head's D rows of RK) into shared memory: one group, waited for below
    #pragma unroll
    for (int j = 0; j < D * RK / 8 / NTH; j++) {
        const int i = tid + NTH * j, r = i / (RK / 8), c = i % (RK / 8);
        cp16a(sbase + (u32)((const unsigned char*)&sh.u[r][c * 8] - smem_raw), ku + ((long long)h * D + r) * RK + c * 8, true);
    }
    cp_commit();
    if (tid < HALF) {
        const float f = invf[tid] * inv_rscale;
        float c8, s8;
        cos_sin(8.f * f, c8, s8);
        sh.pr[tid] = make_float4(f, c8, s8, 0.f);
        sh.dw[tid] = make_float4(kb[h * D + tid], kb[h * D + HALF + tid],
                                 has_norm ? nw[tid] : 1.f, has_norm ? nw[HALF + tid] : 1.f);
        if (NORMZ && tid < RK) sh.cz[tid] = cz[h * RK + tid];
        const float b0 = kb[h * D + 2 * tid], b1 = kb[h * D + 2 * tid + 1];
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
    auto zpiece = [&](int j, int& r, long long& go, u32& so) {
        if constexpr (32 % PZ == 0) {
            r = zr0 + j * (32 / PZ); go = zo0 + (long long)j * (32 / PZ) * skc_t; so = zd0 + j * (32 / PZ) * ZS * 2;
        } else {
            const int i = lane + 32 * j, rr = i / PZ, c = i % PZ;
            r = rr; go = (long long)rr * skc_t + c * 8; so = zs0 + (u32)(rr * ZS + c * 8) * 2;
        }
    };
    auto vpiece = [&](int j, int& r, long long& go, u32& so) {
        if constexpr (32 % PV == 0) {
            r = vr0 + j * (32 / PV); go = vo0 + (long long)j * (32 / PV) * svc_t; so = vd0 + j * (32 / PV) * VS * 2;
        } else {
            const int i = lane + 32 * j, rr = i / PV, c = i % PV;
            r = rr; go = (long long)rr * svc_t + c * 8; so = vs0 + (u32)(rr * VS + c * 8) * 2;
        }
    };
    auto load = [&](int t0, int st) {
        const bf16* kt = kbase + (long long)t0 * skc_t;
        const bf16* vt = vbase + (long long)t0 * svc_t;
        const int left = stop - t0;
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
                cp16a(so + st * ZST, r < left ? kt + go : kbase, r < left);
            }
            #pragma unroll
            for (int j = 0; j < NV; j++) {
                int r; long long go; u32 so;
                vpiece(j, r, go, so);
                cp16a(so + st * VST, r < left ? vt + go : vbase, r < left);
            }
        }
        if (lane < SUB) cp4a(ps0 + (u32)(st * SUB + lane) * 4, lane < left ? pbase + t0 + lane : pbase, lane < left);
    };
    int t0 = start + SUB * w;
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
    const float bsq = NORMZ ? cbb[h] : 0.f;              // NORMZ: |b|^2, the constant of the sum

    __SINK_STATE__
    cp_wait1();          // U
    __syncthreads();     // U and the tables visible to every warp

    // ldmatrix lane addresses: z (A, rows keys), U (B, rows dims), z_v^T (A via .trans)
    const u32 za_off = (u32)(((lane & 15) * ZS + (lane >> 4) * 8) * 2);
    const u32 ub_off = (u32)((((lane & 7) + ((lane >> 4) << 3)) * US + ((lane >> 3) & 1) * 8) * 2);
    const u32 va_off = (u32)((((lane & 7) + ((lane >> 4) << 3)) * VS + ((lane >> 3) & 1) * 8) * 2);
    const u32 u0 = sbase + (u32)((const unsigned char*)&sh.u[0][0] - smem_raw);

    int st = 0;
    for (; t0 < stop; t0 += SUB * WARPS, st ^= 1) {
        if (t0 + SUB * WARPS < stop) load(t0 + SUB * WARPS, st ^ 1);
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
        __SOFTMAX_PV__
        __syncwarp();    // the next load reuses this stage
    }
    cp_wait0();
    __syncthreads();     // every warp done with z / v: the merge reuses them
    __MERGE__
}
"""


# what every kernel takes (cuda_decode.launch passes it; "warp" adds its NORMZ tables) and
# the start of every kernel body
_PARAMS = r"""const bf16* __restrict__ q, const bf16* __restrict__ kc, const bf16* __restrict__ vc,
              const int* __restrict__ kpos, const long long* __restrict__ qpos,
              const bf16* __restrict__ ku, const float* __restrict__ kb, const float* __restrict__ nw,
              const float* __restrict__ invf,
              const bf16* __restrict__ sk, const bf16* __restrict__ sv,
              float* __restrict__ sm, float* __restrict__ sl, float* __restrict__ sa,
              float* __restrict__ m_out, float* __restrict__ l_out, float* __restrict__ acc_out,
              int T, int CHUNK, int KV, int S, int NS,
              int sq_b, int sq_h, int skc_b, int skc_t, int svc_b, int svc_t, int sp_b,
              int ss_b, int ss_h, int ss_j,
              int window, int sink, double eps_d, double scale_d, double rscale_d, int has_norm"""

_PROLOGUE = r"""Smem& sh = *reinterpret_cast<Smem*>(smem_raw);
    if (threadIdx.x == 0) {  // smem_bytes() must cover the struct: fail loudly, never overrun
        unsigned got;
        asm("mov.u32 %0, %%dynamic_smem_size;" : "=r"(got));
        if (got < sizeof(Smem)) __trap();
    }
    const float eps = (float)eps_d, scale = (float)scale_d, inv_rscale = (float)(1.0 / rscale_d);
"""

# the warp-level kernels' per-program indices: lane quad (g4, t4), chunk, sequence, KV
# head, query position, the visibility limits, this sequence's cache rows
_INDICES = r"""const int g4 = lane >> 2, t4 = lane & 3;
    const int pid_s = blockIdx.x, pid_bh = blockIdx.y;
    const int b = pid_bh / KV, h = pid_bh % KV;
    const long long qp = qpos[b];
    const int qpi = (int)qp, wlim = window > 0 ? window : 0x7fffffff, plo = sink > 0 ? sink : 0;
    const bool hv = g4 < G;
    const int start = pid_s * CHUNK;
    const int stop = min(T, start + CHUNK);
    const bf16* kbase = kc + (long long)b * skc_b;
    const bf16* vbase = vc + (long long)b * svc_b;
    const int* pbase = kpos + (long long)b * sp_b;
    const u32 sbase = (u32)__cvta_generic_to_shared(smem_raw);
"""

# the "warp" kernel's per-warp step after the scores: the QK-norm factor, the mask, an
# online softmax of the warp's own and o^T += z_v^T p^T ("wg" has its own: scores K q^T)
_SOFTMAX_PV = r"""
// sT[nk][0..1]: head g4, keys 8 nk + 2 t4 + (0, 1). The norm: each key's full sum of
        // squares (a quad holds a key's dims), then fetched for the keys this lane scores
        float f[2][2];
        if (has_norm) {
            sq0 += __shfl_xor_sync(0xffffffffu, sq0, 1);
            sq0 += __shfl_xor_sync(0xffffffffu, sq0, 2);
            sq1 += __shfl_xor_sync(0xffffffffu, sq1, 1);
            sq1 += __shfl_xor_sync(0xffffffffu, sq1, 2);
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
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
        const float m_new = fmaxf(m_i, mx);
        const float m_safe = m_new == NEG_INF ? 0.f : m_new;
        float sum = 0.f;
        #pragma unroll
        for (int nk = 0; nk < 2; nk++)
            #pragma unroll
            for (int j = 0; j < 2; j++) { s[nk][j] = ex2(s[nk][j] - m_safe); sum += s[nk][j]; }
        sum += __shfl_xor_sync(0xffffffffu, sum, 1);
        sum += __shfl_xor_sync(0xffffffffu, sum, 2);
        const float corr = ex2(m_i - m_safe);
        l_i = l_i * corr + sum;
        m_i = m_new;
        // o^T (columns: heads 2 t4, 2 t4 + 1) *= their corrections; += z_v^T p^T
        if (__any_sync(0xffffffffu, corr != 1.f)) {  // a head's max moved
            const float ca = __shfl_sync(0xffffffffu, corr, 8 * t4), cb = __shfl_sync(0xffffffffu, corr, 8 * t4 + 4);
            #pragma unroll
            for (int vm = 0; vm < VM; vm++) { acc[vm][0] *= ca; acc[vm][1] *= cb; acc[vm][2] *= ca; acc[vm][3] *= cb; }
        }
        const u32 pb0 = pack2(s[0][0], s[0][1]), pb1 = pack2(s[1][0], s[1][1]);
        const u32 vrows = vs0 + st * VST + va_off;
        #pragma unroll
        for (int vm = 0; vm < VM; vm++) {
            u32 a[4];
            ldsm4t(a, vrows + vm * 32);
            mma(acc[vm], a, pb0, pb1);
        }
"""


# device helpers both warp-level kernels ("warp", "wg") use
_HELPERS = r"""
typedef unsigned short bf16;
typedef unsigned int u32;

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
__device__ __forceinline__ void cos_sin(float x, float& c, float& s) {
    // reduce to [-pi, pi] (2 pi split in two constants, the first exact in a few bits),
    // then the special-function unit: the Triton kernel's FAST_TRIG, same constants
    float k = floorf(x * 0.15915494309189535f + 0.5f);
    float r = x - k * 6.28125f - k * 0.0019353071795864769f;
    c = __cosf(r); s = __sinf(r);
}
"""

# the blocks both warp-level kernels share: chunk 0's exact sink state (warp w, head w,
# from global memory while U is on its way) and the epilogue that merges the 8 warps'
# softmax states into the chunk's (over the z / v buffers, once every warp is done)
_SINK_STATE = r"""
    // chunk 0: the exact sink tile's own state (head dim), which the combine merges; warp
    // w, head w, from global memory while U is on its way
    if (NS > 0 && pid_s == 0 && w < G) {
        const bf16* qrow = q + (long long)b * sq_b + (long long)(h * G + w) * sq_h;
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
        const int r = pid_bh * G + w;
        if (lane == 0) { sm[r] = ms; sl[r] = ls; }
        #pragma unroll
        for (int i = 0; i < 8; i++) sa[(long long)r * D + lane + 32 * i] = as[i];
    }
"""

# the merge after each warp's m / l went into mg ("wg" stores its own: two heads per lane)
_MERGE_ACC = r"""
    #pragma unroll
    for (int vm = 0; vm < VM; vm++)
        #pragma unroll
        for (int i = 0; i < 4; i++) {
            const int hh = 2 * t4 + (i & 1);
            if (hh < G) mg.a[w][hh][vm * 16 + g4 + 8 * (i >> 1)] = acc[vm][i];
        }
    __syncthreads();
    // the chunk's state: rows (sequence, KV head, chunk, head), as kernels._decode_partial writes them
    for (int i = tid; i < G * RV; i += NTH) {
        const int hh = i / RV, col = i % RV;
        float mm = NEG_INF;
        #pragma unroll
        for (int ww = 0; ww < WARPS; ww++) mm = fmaxf(mm, mg.m[ww][hh]);
        const float ms = mm == NEG_INF ? 0.f : mm;
        float ll = 0.f, aa = 0.f;
        #pragma unroll
        for (int ww = 0; ww < WARPS; ww++) {
            const float e = ex2(mg.m[ww][hh] - ms);
            ll += mg.l[ww][hh] * e;
            aa += mg.a[ww][hh][col] * e;
        }
        const long long row = ((long long)pid_bh * S + pid_s) * G + hh;
        acc_out[row * RV + col] = aa;
        if (col == 0) { m_out[row] = mm * 0.6931471805599453f; l_out[row] = ll; }  // log2 -> ln
    }
"""
_MERGE = r"""
    Merge& mg = *reinterpret_cast<Merge*>(&sh.z);
    if (t4 == 0 && g4 < G) { mg.m[w][g4] = m_i; mg.l[w][g4] = l_i; }
""" + _MERGE_ACC


@functools.lru_cache(maxsize=None)
def hopper(device_index: int | None = None) -> bool:
    """wgmma (the "wg" kernel) is sm_90a only."""
    return torch.cuda.is_available() and torch.cuda.get_device_capability(device_index) == (9, 0)


def kind_for(rv: int, rk: int = 128) -> str:
    """Which kernel a layer takes: BUILD["kernel"] where it serves the ranks ("wg" on
    Hopper, else "warp"; V ranks above 128 take "wg" where its buffers fit, else "tile")."""
    if BUILD["kernel"] == "wg" and hopper() and rv > 128 and _wg_v_rank(rk, rv):
        return "wg"
    if BUILD["kernel"] in ("wg", "warp") and rv <= 128:
        return "wg" if BUILD["kernel"] == "wg" and hopper() else "warp"
    return "tile"


WG_SMEM_MAX = 232448  # bytes of shared memory a Hopper program may opt in to (227 KB)


def wg_fits(rk: int, rv: int) -> bool:
    """The wg kernel's buffers for these ranks fit a program's shared memory (with or
    without the cached norm factors): K 128 takes V up to 128, K 112 up to 160, K 96 up to
    192, K 64 up to 256 (the V stages grow with V's rank, U's image with K's)."""
    return max(smem_bytes(rk, rv, 1, 128, 8, "wg", ks) for ks in (False, True)) <= WG_SMEM_MAX


def _wg_v_rank(rk: int, rv: int) -> bool:
    """A V rank the wg kernel takes beside K rank rk: a multiple of 16 up to 128, or above
    128 where its buffers fit (wg_fits)."""
    return rv % 16 == 0 and (rv <= 128 or (rv <= 256 and wg_fits(rk, rv)))


def _wgmma_defs() -> str:
    """The warpgroup MMA wrappers of the "wg" kernel: m64n128k16 with both operands in
    shared memory, its 64 fp32 accumulators as operands (so the compiler keeps them in
    registers and orders a wait before any read of them); waits for all groups (wait0) or
    all but the newest (wait1: a tile's first half while the second is in flight)."""
    outs = ", ".join(f'"+f"(d[{i}])' for i in range(64))
    regs = ", ".join(f"%{i}" for i in range(64))
    return (
        "__device__ __forceinline__ void wgmma_fence() { asm volatile(\"wgmma.fence.sync.aligned;\" ::: \"memory\"); }\n"
        "__device__ __forceinline__ void wgmma_commit() { asm volatile(\"wgmma.commit_group.sync.aligned;\" ::: \"memory\"); }\n"
        + "".join(f"__device__ __forceinline__ void wgmma_wait{n}(float (&d)[64]) {{\n"
                  f"    asm volatile(\"wgmma.wait_group.sync.aligned {n};\" : {outs} :: \"memory\");\n}}\n" for n in (0, 1))
        + "// d (scale_d ? += : =) A B: A 64 x 16 (K-major), B 128 x 16 (K-major), both by descriptor\n"
        "__device__ __forceinline__ void wgmma_ss(float (&d)[64], u64 da, u64 db, int scale_d) {\n"
        "    asm volatile(\"{\\n.reg .pred p;\\nsetp.ne.b32 p, %66, 0;\\n\"\n"
        f"                 \"wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {{{regs}}}, %64, %65, p, 1, 1, 0, 0;\\n}}\\n\"\n"
        f"                 : {outs} : \"l\"(da), \"l\"(db), \"r\"(scale_d));\n}}\n")


def smem_bytes(rk: int, rv: int, g: int, block: int, warps: int, kind: str = "tile", kscale: bool = False) -> int:
    if kind == "wg":  # its Smem struct: U + bias block, ones, 2 warpgroups x 2 stages of z / z_v / positions
        # (+ the keys' norm factors), q, pair tables, U's mbarrier (16 bytes)
        return (32 * (rk // 8 + 2) * 128 + 2048 + 4 * 64 * (rk * 2 + (rv + 8) * 2 + 4 + 4 * kscale)
                + 8 * (64 + 4) * 8 + ((64 * 16 + 8 * (2 * 64 + 4) * 8) if kscale else 128 * 24) + 16)
    if kind == "warp":  # the Smem struct: U, pair tables, 2 U^T b, bias quads, per-warp stages of z / z_v / positions, q
        return (256 * (rk + 8) * 2 + 2 * 128 * 16 + rk * 2 + 128 * 16 + 8 * 2 * 16 * ((rk + 8) + (rv + 8)) * 2
                + 8 * 2 * 16 * 4 + 8 * (128 + 4) * 4)
    z = 2 * block * (rk + 8) * 2
    v = 2 * block * (rv + 8) * 2
    return z + v + 2 * block * 4 + warps * (g + 1) * (block + 4) * 4 + g * (block + 4) * 4


def block_for(rk: int, rv: int, g: int, t: int) -> int:
    """Keys per tile for a cache of t slots: 128 from LONG slots up (fewer barriers per key:
    410 vs 431 us at batch 32, 32K keys), else 64 (128 is slower at 512 keys: 15.3 vs 11.9
    us at batch 1); 64 also where 128's buffers exceed a program's shared memory.
    BLOCK, when set, forces one size (bench_decode_kernel --cuda-builds)."""
    if kind_for(rv, rk) in ("warp", "wg"):
        return 128  # 8 warps x 16-key subtiles; 2 warpgroups x 64-key tiles
    blk = BLOCK or (128 if t >= LONG else 64)
    return blk if smem_bytes(rk, rv, g, blk, BUILD["warps"]) <= 227 * 1024 else 64


# the wg kernel's U rows: dims 0-63, 128-191 (its first 128-dim half), 64-127, 192-255
WG_ROWS = torch.cat([torch.arange(0, 64), torch.arange(128, 192), torch.arange(64, 128), torch.arange(192, 256)])


def wg_images(up: torch.Tensor, bias: torch.Tensor, invf: torch.Tensor, rscale: float, kv: int):
    """The "wg" kernel's constant shared memory, laid out once per layer so that a program's
    prologue is two bulk copies (no loads feeding arithmetic, no sin/cos before the first tile):
    per KV head, U (256 dims x r, bf16, rows in WG_ROWS order) in the no-swizzle
    core-matrix layout followed in each 8-row group by the bias block (k = r: the bias in
    bf16 and its rounding error, so 1 * hi + 1 * lo rebuilds it to ~16 bits; the next 16
    bytes x 8 rows zero), (kv, 32 * SBOU) uint8; and the KSCALE pair tables as the
    kernel's Smem holds them, pp (per 2 pairs: both frequencies / rope scale, cos 8f and
    sin 8f as f16 pairs) then to (cos and sin of g4 f for g4 = 0..7, f16 pairs, rows
    padded to 68 entries), uint8."""
    d, r = 256, up.shape[1]
    sbou = (r // 8 + 2) * 128
    # rows in the order the kernel's two 128-dim halves take them (WG_ROWS): each half holds
    # whole RoPE pairs (dim, dim + 128)
    up = up.reshape(kv, d, r)[:, WG_ROWS.to(up.device)].reshape(kv * d, r)
    bias = bias.reshape(kv, d)[:, WG_ROWS.to(bias.device)].reshape(kv * d)
    img = torch.zeros(kv, 32, sbou, dtype=torch.uint8, device=up.device)
    u = up.to(torch.bfloat16).reshape(kv, 32, 8, r // 8, 8).permute(0, 1, 3, 2, 4).contiguous()
    img[:, :, :r // 8 * 128] = u.view(torch.uint8).reshape(kv, 32, r // 8 * 128)
    hi = bias.float().to(torch.bfloat16)
    lo = (bias.float() - hi.float()).to(torch.bfloat16)
    blk = torch.zeros(kv * d, 8, dtype=torch.bfloat16, device=up.device)
    blk[:, 0], blk[:, 1] = hi, lo
    img[:, :, r // 8 * 128:r // 8 * 128 + 128] = blk.view(torch.uint8).reshape(kv, 32, 128)
    inv = torch.tensor(1.0 / rscale, dtype=torch.float32, device=invf.device)  # the kernel's products, in its order
    f = invf.float() * inv
    f0, f1 = f[0::2], f[1::2]
    half2 = lambda a, b: torch.stack([a, b], -1).to(torch.float16).view(torch.int32).squeeze(-1)  # noqa: E731
    pp = torch.stack([f0.view(torch.int32), f1.view(torch.int32), half2(torch.cos(8 * f0), torch.cos(8 * f1)),
                      half2(torch.sin(8 * f0), torch.sin(8 * f1))], -1)                      # (64, 4) words
    o = torch.arange(8, dtype=torch.float32, device=f.device)[:, None]
    a0, a1 = (o * invf.float()[0::2]) * inv, (o * invf.float()[1::2]) * inv
    to = torch.zeros(8, 68, 2, dtype=torch.int32, device=f.device)
    to[:, :64, 0], to[:, :64, 1] = half2(torch.cos(a0), torch.cos(a1)), half2(torch.sin(a0), torch.sin(a1))
    tab = torch.cat([pp.reshape(-1), to.reshape(-1)]).view(torch.uint8)
    return img.view(kv, 32 * sbou), tab.to(up.device)


def permute_up(up: torch.Tensor) -> torch.Tensor:
    """U (rows, r) bf16 with each row's 32-bit words reordered so that the mma B-fragment
    words a lane needs (k-step ks: words 8 ks + t and 8 ks + 4 + t, t = lane % 4) sit
    together: one 8-byte load per k-step instead of two scattered 4-byte loads."""
    ks = up.shape[1] // 16
    words = up.contiguous().view(torch.int32)                    # (rows, r / 2)
    perm = [8 * k + 4 * i + t for t in range(4) for k in range(ks) for i in range(2)]
    return words[:, perm].contiguous().view(up.dtype)


def _heads_and_k(d: int, g: int, rk: int) -> bool:
    """Head dim, query heads per KV head and K rank every CUDA kernel here is written for."""
    return d == 256 and 1 <= g <= 8 and rk % 16 == 0 and 16 <= rk <= 128


def wg_shape(d: int, g: int, rk: int, rv: int) -> bool:
    """The latent ranks and head shapes the Hopper wg kernel is written for (no device
    check; convert notes converted layers outside them)."""
    return _heads_and_k(d, g, rk) and _wg_v_rank(rk, rv)


def serves(d: int, g: int, rk: int, rv: int, cache_dtype: torch.dtype) -> bool:
    """The shapes this kernel is written for (else the Triton kernel runs)."""
    # V ranks above 128 the wg kernel cannot hold take the tile kernel, written for 128 and
    # 256 only (a V rank of 160 passed here before and would have built it for that width)
    return (torch.cuda.is_available() and hasattr(torch.cuda, "_compile_kernel") and _heads_and_k(d, g, rk)
            and (rv % 128 == 0 or (kind_for(rv, rk) in ("warp", "wg") and rv % 16 == 0)) and rv <= 256
            and cache_dtype == torch.bfloat16)


# build knobs (bench/bench_decode_kernel.py --cuda-builds): programs per SM the register
# budget is cut for (launch bounds; 1: 230-250 registers, no spills, one program per SM;
# 2: capped at 128, spills, 673 vs 438 us at batch 32, 32K keys, 64-key tiles) and warps
# per program (8: 16 RoPE pairs each; 16 measured slower, 450 vs 414 us)
BUILD = {"minb": 1, "warps": 8, "kernel": "wg", "unroll": 4}
PER_SM = 1  # programs per SM the chunking plans for (the register budget allows one)
PHASES = None  # an int64 tensor: the "wg" kernel built with per-phase clocks writes them there (bench --phases)


def source(rk: int, rv: int, g: int, minb: int = 1, block: int = 64, warps: int = 8, kind: str = "tile",
           unroll: int = 1, normz: bool = False, kscale: bool = False, strides: tuple[int, int] = (0, 0),
           phases: bool = False) -> str:
    """A kernel's CUDA C++ with its shared blocks and build parameters filled in."""
    src = {"warp": _SRC_WARP, "wg": _WG_PATH.read_text() if kind == "wg" else ""}.get(kind, _SRC)
    src = (src.replace("__SINK__", _SINK).replace("__SINK_STATE__", _SINK_STATE).replace("__MERGE__", _MERGE).replace("__MERGE_ACC__", _MERGE_ACC)
           .replace("__HELPERS__", _HELPERS).replace("__PARAMS__", _PARAMS).replace("__PROLOGUE__", _PROLOGUE)
           .replace("__INDICES__", _INDICES)
           .replace("__SOFTMAX_PV__", _SOFTMAX_PV if kind == "warp" else "")
           .replace("__WGMMA__", _wgmma_defs() if kind == "wg" else ""))
    for key, val in (("RK", rk), ("RV", rv), ("G", g), ("MINB", minb), ("BLK", block), ("WARPS", warps),
                     ("UNROLL", unroll), ("NORMZ", int(normz)), ("KSCALE", int(kscale)),
                     ("SKT", strides[0]), ("SVT", strides[1]), ("PHASES", int(phases))):
        src = src.replace(f"__{key}__", str(val))
    return src


@functools.lru_cache(maxsize=None)
def compiled(rk: int, rv: int, g: int, device_index: int, minb: int = 1, block: int = 64, warps: int = 8,
             kind: str = "tile", unroll: int = 1, normz: bool = False, kscale: bool = False,
             strides: tuple[int, int] = (0, 0), phases: bool = False):
    """The kernel for these ranks and group size (NVRTC; cached per process); "wg" is built
    for the cache's row strides of z and z_v (strides)."""
    src = source(rk, rv, g, minb, block, warps, kind, unroll, normz, kscale, strides, phases)
    with torch.cuda.device(device_index):
        fn = torch.cuda._compile_kernel(src, "latent_decode", compute_capability="90a" if kind == "wg" else None,
                                        nvcc_options=["-std=c++17"])
        fn.set_shared_memory_config(smem_bytes(rk, rv, g, block, warps, kind, kscale))
    return fn


_FAILED: dict = {}


def try_build(rk: int, rv: int, g: int, device_index: int, normz: bool = False, kscale: bool = False) -> str | None:
    """Compile the builds a layer of these shapes can take (both tile sizes; kscale: the
    layer's cache keeps K's norm factors); None when they build, else the reason, warned
    about once per process."""
    kind = kind_for(rv, rk)
    key = (rk, rv, g, device_index, BUILD["minb"], BUILD["warps"], kind, BUILD["unroll"], normz, kscale)
    if key not in _FAILED:
        try:
            for blk in {block_for(rk, rv, g, 0), block_for(rk, rv, g, LONG)}:
                wg = kind == "wg"  # built for the cache's row strides (K and V entries side by side)
                compiled(rk, rv, g, device_index, BUILD["minb"], blk, BUILD["warps"], kind, BUILD["unroll"],
                         normz and kind == "warp", kscale and wg, (rk + rv, rk + rv) if wg else (0, 0))
            _FAILED[key] = None
        except Exception as e:  # NVRTC missing, an API change, a compile error
            _FAILED[key] = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]
            warnings.warn(f"CUDA decode kernel unavailable, using the Triton kernel: {_FAILED[key]}",
                          RuntimeWarning, stacklevel=3)
    return _FAILED[key]


class _LaunchConfig(ctypes.Structure):   # the driver's CUlaunchConfig
    _fields_ = [("grid", ctypes.c_uint * 3), ("block", ctypes.c_uint * 3), ("shared", ctypes.c_uint),
                ("stream", ctypes.c_void_p), ("attrs", ctypes.c_void_p), ("n_attrs", ctypes.c_uint)]


class _LaunchAttr(ctypes.Structure):     # CUlaunchAttribute: an id, padding, a 64-byte value union
    _fields_ = [("id", ctypes.c_int), ("pad", ctypes.c_char * 4), ("value", ctypes.c_int * 16)]


_PROGRAMMATIC_STREAM_SERIALIZATION = 6   # CU_LAUNCH_ATTRIBUTE_PROGRAMMATIC_STREAM_SERIALIZATION


def launch_pdl(fn, grid, block, shared_mem: int, args: list) -> None:
    """fn (a torch.cuda._compile_kernel kernel) launched with programmatic dependent launch:
    its programs may start while the stream's previous kernel finishes (they wait for it with
    griddepcontrol.wait). torch's launcher takes no launch attributes, hence cuLaunchKernelEx
    here, with the same argument conversion (tensors: pointers, ints: int, floats: double)."""
    from torch.cuda._utils import _check_cuda, _get_gpu_runtime_library
    keep = [ctypes.c_void_p(a.data_ptr()) if isinstance(a, torch.Tensor) else
            ctypes.c_int(a) if isinstance(a, int) else ctypes.c_double(a) for a in args]
    params = (ctypes.c_void_p * len(keep))(*[ctypes.cast(ctypes.byref(k), ctypes.c_void_p) for k in keep])
    attr = _LaunchAttr(id=_PROGRAMMATIC_STREAM_SERIALIZATION)
    attr.value[0] = 1
    cfg = _LaunchConfig((ctypes.c_uint * 3)(*grid), (ctypes.c_uint * 3)(*block), shared_mem,
                        ctypes.c_void_p(torch.cuda.current_stream().cuda_stream),
                        ctypes.cast(ctypes.byref(attr), ctypes.c_void_p), 1)
    _check_cuda(_get_gpu_runtime_library().cuLaunchKernelEx(ctypes.byref(cfg), fn.func, params, None))


_PREFETCH = r"""
extern "C" __global__ void l2_prefetch(const char* __restrict__ p, int n) {   // (torch's launcher: ints are int)
    const long long step = (long long)gridDim.x * blockDim.x * 128;
    for (long long i = ((long long)blockIdx.x * blockDim.x + threadIdx.x) * 128; i < n; i += step)
        asm volatile("prefetch.global.L2 [%0];" :: "l"(p + i));
}
"""


@functools.lru_cache(maxsize=None)
def _prefetch_kernel(device_index: int):
    with torch.cuda.device(device_index):
        return torch.cuda._compile_kernel(_PREFETCH, "l2_prefetch")


def prefetch_l2(t: torch.Tensor, programs: int = 16) -> None:
    """Ask L2 for a tensor's bytes (a cache a later kernel of the step reads), 128-byte
    lines, on the current stream; nothing waits for them."""
    n = t.numel() * t.element_size()
    if n >= 1 << 31:  # (an int in the kernel; L2 is far smaller anyway)
        raise ValueError(f"prefetch_l2: {n} bytes, at most 2 GiB")
    _prefetch_kernel(t.device.index or 0)(grid=(programs, 1, 1), block=(256, 1, 1), args=[t, n])


def launch(da, q, kc, vc, k_pos, qp, ks, vs, ns, sstr, m, l, acc, sm, sl, sa, chunk, n, blk, k_scale=None,
           wslot=None):
    """One decode step's partial states from the cache (da: a kernels.DecodeAttention,
    which prepared the arguments: qp (B,) int64 query positions, the sink tile ks / vs
    with ns rows and strides sstr, the chunking for tiles of blk keys; k_scale: each
    key's QK-norm factor (B, T, KV) fp32 as the cache holds it, or None; wslot: (1,) int64,
    the cache column this step's entries went to (the wg kernel reads every other row of its
    first tile before waiting for the previous kernel), or None)."""
    b, t = kc.shape[0], kc.shape[1]
    kind = kind_for(da.rv, da.rk)
    warps = 8 if kind in ("warp", "wg") else BUILD["warps"]
    # the QK-norm sum from z: the warp kernel's option (the wg kernel measured slower with it,
    # 334 vs 317 us at batch 32, 32K keys: the mma work beside the rebuild costs more than it saves)
    normz = kind == "warp" and da.cu_normz is not None
    kscale = kind == "wg" and k_scale is not None and da.has_norm  # (no norm: no factors to read)
    phases = kind == "wg" and PHASES is not None
    fn = compiled(da.rk, da.rv, da.g, q.device.index or 0, BUILD["minb"], blk, warps, kind, BUILD["unroll"], normz,
                  kscale, (kc.stride(1), vc.stride(1)) if kind == "wg" else (0, 0), phases)
    # the warp kernels take the raw U, bias and norm weight (the norm from the rebuilt key);
    # with the norm factors from the cache, U and the bias with the weight folded in
    up, bias = (da.ku, da.kb) if normz else (da.cu_up if kind == "tile" else da.cu_raw_up, da.cu_bias)
    if kscale:
        up, bias = da.cu_wup, da.cu_wbias
    extra = [*da.cu_normz, int(da.has_e)] if normz else ([da.nw, da.nw, 0] if kind == "warp" else [])
    if kind == "wg":
        extra = [k_scale, k_scale.stride(0), k_scale.stride(1)] if kscale else [m, 0, 0]
        extra += list(da.cu_img[kscale])   # U + bias block, pair tables: laid out once (wg_images)
        extra.append(da.no_slot if wslot is None else wslot)
    qp = qp if qp.dtype == torch.int64 else qp.long()  # the kernel reads long long
    if kind == "wg" and ((q.stride(0) | q.stride(1)) & 1 or q.data_ptr() % 4):
        q = q.contiguous()  # (the wg kernel reads q's rows as bf16 pairs)
    grid, block = (n, b * da.kv, 1), (32 * warps, 1, 1)
    shared = smem_bytes(da.rk, da.rv, da.g, blk, warps, kind, kscale)
    args = [q, kc, vc, k_pos, qp, up, bias, da.nw, da.invf, ks, vs, sm, sl, sa, m, l, acc,
            t, chunk, da.kv, n, ns, q.stride(0), q.stride(1), kc.stride(0), kc.stride(1),
            vc.stride(0), vc.stride(1), k_pos.stride(0), *sstr, da.window or 0, da.sink if ns else 0,
            float(da.eps), float(da.scale), float(da.rscale), int(da.has_norm), *extra, *([PHASES] if phases else [])]
    if kind == "wg" and da.pdl:
        launch_pdl(fn, grid, block, shared, args)
    else:
        fn(grid=grid, block=block, shared_mem=shared, args=args)
