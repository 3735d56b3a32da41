Smem& sh = *reinterpret_cast<Smem*>(smem_raw);
    if (threadIdx.x == 0) {  // smem_bytes() must cover the struct: fail loudly, never overrun
        unsigned got;
        asm("mov.u32 %0, %%dynamic_smem_size;" : "=r"(got));
        if (got < sizeof(Smem)) __trap();
    }
    const float eps = (float)eps_d, scale = (float)scale_d, inv_rscale = (float)(1.0 / rscale_d);
