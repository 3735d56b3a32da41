
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
