
    // chunk 0: the exact sink tile's own state (head dim), which the combine merges; warp
    // w, head w, from global memory while U is on its way
    if (NS > 0 && pid_s == 0 && w < G) {
        const int hs = w;
__SINK_HEAD__    }
