// common.cuh -- the few device helpers the vecattn kernels need, written with inline PTX so
// that generated sources compile with NVRTC alone (no cuda_bf16.h, no include paths).
// Element values travel as raw 16-bit patterns (unsigned short); Bf16 selects bf16 or fp16.
#pragma once

#ifndef VECATTN_GENERATED
#include "vecattn_params.h"
#endif

namespace vecattn {

typedef unsigned short elem_t;  // one bf16 or fp16 value, as bits

// +infinity without math.h (NVRTC compiles with no headers).
#define VA_INF __int_as_float(0x7f800000)

// ---- conversions --------------------------------------------------------------------

template <bool Bf16>
__device__ __forceinline__ float to_float(elem_t x) {
    if (Bf16) {
        return __uint_as_float(((unsigned)x) << 16);
    } else {
        float f;
        asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(x));
        return f;
    }
}

template <bool Bf16>
__device__ __forceinline__ elem_t from_float(float f) {
    elem_t x;
    if (Bf16)
        asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(x) : "f"(f));
    else
        asm("cvt.rn.f16.f32 %0, %1;" : "=h"(x) : "f"(f));
    return x;
}

// Two floats to a packed pair: `lo` in the low half (the lower column / k index).
template <bool Bf16>
__device__ __forceinline__ unsigned pack2(float lo, float hi) {
    unsigned r;
    if (Bf16)
        asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
    else
        asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
}

// Both halves of a packed pair to floats.
template <bool Bf16>
__device__ __forceinline__ void unpack2(unsigned p, float &lo, float &hi) {
    lo = to_float<Bf16>((elem_t)(p & 0xffffu));
    hi = to_float<Bf16>((elem_t)(p >> 16));
}

__device__ __forceinline__ float exp2_approx(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
}

// ---- shared memory and asynchronous copies ---------------------------------------------

__device__ __forceinline__ unsigned smem_addr(const void *p) {
    return (unsigned)__cvta_generic_to_shared(p);
}

// 16-byte global -> shared copy; when `valid` is false the destination is zero-filled and
// nothing is read (src-size 0), so out-of-range rows never touch memory.
__device__ __forceinline__ void cp_async_16(unsigned dst, const void *src, bool valid) {
    int src_size = valid ? 16 : 0;
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src),
                 "r"(src_size));
}

__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }

template <int N>
__device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

// ---- tensor cores (sm_80+) ---------------------------------------------------------------

__device__ __forceinline__ void ldmatrix_x4(unsigned addr, unsigned &r0, unsigned &r1, unsigned &r2,
                                            unsigned &r3) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
                 : "r"(addr));
}

__device__ __forceinline__ void ldmatrix_x4_trans(unsigned addr, unsigned &r0, unsigned &r1,
                                                  unsigned &r2, unsigned &r3) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                 : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3)
                 : "r"(addr));
}

// D = A(16x16, row) * B(16x8, col) + D, fp32 accumulation.
template <bool Bf16>
__device__ __forceinline__ void mma_16816(float (&d)[4], const unsigned (&a)[4], unsigned b0,
                                          unsigned b1) {
    if (Bf16) {
        asm volatile(
            "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
            "{%8,%9}, {%0,%1,%2,%3};\n"
            : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
    } else {
        asm volatile(
            "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
            "{%8,%9}, {%0,%1,%2,%3};\n"
            : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
            : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
    }
}

// ---- tile layout -----------------------------------------------------------------------

// Byte offset of the 16-byte chunk `chunk` of row `row` in a tile whose rows hold
// RowChunks chunks: the chunk index is XORed with row % 8 so that the 8 rows read by one
// ldmatrix (or 8 threads reading the same logical chunk) hit 8 different bank groups.
template <int RowChunks>
__device__ __forceinline__ unsigned swizzle(int row, int chunk) {
    return (unsigned)(row * RowChunks + (chunk ^ (row & 7))) * 16u;
}

__device__ __forceinline__ float warp_max(float v, int width) {
    for (int o = width / 2; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

}  // namespace vecattn
