// Hopper's warpgroup MMA (wgmma, sm_90a) as the "wg" kernel uses it: m64n128k16 with both
// operands in shared memory (by descriptor), its 64 fp32 accumulators as asm operands (so the
// compiler keeps them in registers and orders a wait before any read of them); waits for all
// groups (wait0) or all but the newest (wait1: a tile's first half while the second is in flight).
#ifndef TPA_WGMMA_CUH
#define TPA_WGMMA_CUH
#include "helpers.cuh"

// The 64 accumulators as read-write asm operands %0..%63 (a macro: an asm operand list cannot
// come from a function)
#define WGMMA_ACC64(d)                                                                                               \
    "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3]), "+f"(d[4]), "+f"(d[5]), "+f"(d[6]), "+f"(d[7]), "+f"(d[8]),    \
        "+f"(d[9]), "+f"(d[10]), "+f"(d[11]), "+f"(d[12]), "+f"(d[13]), "+f"(d[14]), "+f"(d[15]), "+f"(d[16]),       \
        "+f"(d[17]), "+f"(d[18]), "+f"(d[19]), "+f"(d[20]), "+f"(d[21]), "+f"(d[22]), "+f"(d[23]), "+f"(d[24]),      \
        "+f"(d[25]), "+f"(d[26]), "+f"(d[27]), "+f"(d[28]), "+f"(d[29]), "+f"(d[30]), "+f"(d[31]), "+f"(d[32]),      \
        "+f"(d[33]), "+f"(d[34]), "+f"(d[35]), "+f"(d[36]), "+f"(d[37]), "+f"(d[38]), "+f"(d[39]), "+f"(d[40]),      \
        "+f"(d[41]), "+f"(d[42]), "+f"(d[43]), "+f"(d[44]), "+f"(d[45]), "+f"(d[46]), "+f"(d[47]), "+f"(d[48]),      \
        "+f"(d[49]), "+f"(d[50]), "+f"(d[51]), "+f"(d[52]), "+f"(d[53]), "+f"(d[54]), "+f"(d[55]), "+f"(d[56]),      \
        "+f"(d[57]), "+f"(d[58]), "+f"(d[59]), "+f"(d[60]), "+f"(d[61]), "+f"(d[62]), "+f"(d[63])

__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory"); }
__device__ __forceinline__ void wgmma_wait0(float (&d)[64]) {
    asm volatile("wgmma.wait_group.sync.aligned 0;"
                 : WGMMA_ACC64(d)
                 :: "memory");
}
__device__ __forceinline__ void wgmma_wait1(float (&d)[64]) {
    asm volatile("wgmma.wait_group.sync.aligned 1;"
                 : WGMMA_ACC64(d)
                 :: "memory");
}
// d (scale_d ? += : =) A B: A 64 x 16 (K-major), B 128 x 16 (K-major), both by descriptor
__device__ __forceinline__ void wgmma_ss(float (&d)[64], u64 da, u64 db, int scale_d) {
    asm volatile("{\n.reg .pred p;\nsetp.ne.b32 p, %66, 0;\n"
                 "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {"
                 "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, "
                 "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, "
                 "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, "
                 "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63}, "
                 "%64, %65, p, 1, 1, 0, 0;\n}\n"
                 : WGMMA_ACC64(d)
                 : "l"(da), "l"(db), "r"(scale_d));
}

#endif  // TPA_WGMMA_CUH
