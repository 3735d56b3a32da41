
    // the exact sink tile's own state (head dim), which the combine merges: warp 0, each head
    if (NS > 0 && pid_s == 0 && w == 0) {
        for (int hs = 0; hs < G; hs++) {
__SINK_HEAD__        }
    }
