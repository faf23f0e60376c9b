/*
** tensor_map.c -- TMA descriptors of K and V for the warp-specialized attention kernel.
**
** A step whose keys are one run of consecutive rows (the dense mode, the causal sink and
** diagonal, forced ranges) needs no gather: one thread asks the Tensor Memory Accelerator for
** the whole tile, in the same 128-byte-swizzled slabs the gathers write. The descriptor views
** K (or V) as a 4-D tensor [batch][heads_kv][seq_k][D] with the caller's strides; each box is
** 64 columns (one 128-byte slab row) by block_n rows, rows past seq_k read as zeros.
** Where the driver refuses a layout (TMA takes strides that are multiples of 16 bytes below
** 2^40, and no zero stride), the kernel gathers every step instead: same results, slower.
*/
#include <string.h>

#include "runtime/runtime.h"
#include "templates/vecattn_params.h"

static int encode_one(const void *base, const int64_t stride[3], const vecattn_prefill_args *a, int rows,
                      vecattn_tensor_map *out) {
    const cuuint64_t dims[4] = {(cuuint64_t)a->head_dim, (cuuint64_t)a->seq_k, (cuuint64_t)a->heads_kv,
                                (cuuint64_t)a->batch};
    /* bytes between consecutive rows, heads, batches (the innermost dimension is dense) */
    cuuint64_t strides[3] = {(cuuint64_t)stride[2] * 2, (cuuint64_t)stride[1] * 2, (cuuint64_t)stride[0] * 2};
    const cuuint32_t box[4] = {64, (cuuint32_t)rows, 1, 1};
    const cuuint32_t element_strides[4] = {1, 1, 1, 1};
    for (int i = 0; i < 3; ++i) {
        /* a dimension of one has no stride worth checking (a caller may pass 0 for it) */
        if (dims[i + 1] == 1) strides[i] = i == 0 ? dims[0] * 2 : strides[i - 1] * dims[i];
        if (strides[i] == 0) return 0;
    }
    CUtensorMap map;
    const CUtensorMapDataType type = a->dtype == VECATTN_FP16 ? CU_TENSOR_MAP_DATA_TYPE_FLOAT16 : CU_TENSOR_MAP_DATA_TYPE_BFLOAT16;
    CUresult r = va_cuTensorMapEncodeTiled(&map, type, 4, (void *)base, dims,
                                           strides, box, element_strides, CU_TENSOR_MAP_INTERLEAVE_NONE,
                                           CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                                           CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
    if (r != CUDA_SUCCESS) return 0;
    _Static_assert(sizeof map == sizeof *out, "CUtensorMap is 128 bytes");
    memcpy(out, &map, sizeof map);
    return 1;
}

int va_encode_kv_maps(const vecattn_prefill_args *a, int block_n, struct vecattn_attn_params *ap) {
    ap->tma = encode_one(a->k, a->k_stride, a, block_n, &ap->tma_k) &&
              encode_one(a->v, a->v_stride, a, block_n, &ap->tma_v);
    return ap->tma;
}
