
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
