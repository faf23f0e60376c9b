/*
** videodata.h -- video-like Q/K/V for tests, benchmarks and the autotuner, and a loader for
** real Q/K/V dumped as .npy files.
**
** WHY
**   Uniform random Q and K make every score look alike: the pooled query of a block averages
**   its noise away, all scores of a tile fall within ln(1/p) of the maximum, and the
**   selection keeps almost everything. Real video attention is different: a query attends
**   to keys near it in space and time, plus a few "vertical" tokens that every query
**   favours. The generator below has both, so that sparsity, timings and errors behave like
**   those of a video model rather than of noise.
**
** THE MODEL (per batch b and KV head hk; every query head of the group shares it)
**   Token s of the sequence sits on a grid of frames of frame_height x frame_width tokens:
**   t = s / (H*W), y = (s / W) % H, x = s % W. Queries use the position of their key
**   (local query i is token i + Sk - Sq, bottom-right alignment as in the library).
**   F(t, y, x) is a smooth Gaussian field in R^D: value noise on a lattice with spacing
**   (corr_t, corr_y, corr_x), interpolated with smoothstep weights and renormalised so that
**   every component has unit variance everywhere. u is a random N(0, 1) direction; a few
**   fixed spatial positions (vertical_per_frame of them, drawn per head) are vertical in
**   every frame. e is fresh N(0, 1) noise per element.
**     q = f_h * field * F + q_bias * u + noise * e       f_h = 1 + head_variation * U(-1, 1),
**                                                         one factor per query head
**     k =       field * F + [vertical token] * vertical * u + noise * e
**     v = v_field * G + noise * e                         G: a second field, independent of F
**   So q.k is large for keys near the query in (t, y, x) (3-D local correlation) and for the
**   vertical keys; `noise` blurs both; f_h makes heads differ in how peaked they are.
**
** MEASURED SPARSITY (CPU float64 reference, va_ref_select + va_ref_sparsity; bf16, the
**   defaults below, p 0.9, Pq 64, Bk 16, Gk 16, D 128, B 1, H 2, seed 1):
**        S      causal: sparsity (kept of candidates)    non-causal: sparsity
**     2048      0.808 (11.0%)                              0.893
**     4096      0.855 (10.4%)                              0.895
**     8192      0.882 ( 9.7%)                              0.907
**    16384      0.894 ( 9.5%)                              0.904
**   so about 10% of the candidate keys are kept, and the kept share of all valid pairs
**   (forced keys included) is in the 5-20% bucket of the autotuner (va_tune_key), where the
**   method's video settings put real models. p sweeps every bucket: at S 4096, causal,
**   p 0.5 keeps 68% and p 0.99 keeps 6.6% (the forced keys alone are 4.5% there).
**   tests/test_videodata.c checks 0.80 .. 0.95 at S 4096, causal and non-causal.
**   Why so few: the rule is relative to each tile's running maximum, and the field makes
**   score differences within a tile large next to ln(1/0.9) = 0.105 except near the top.
**   The knobs that move it most: `field` and `noise` up -> sparser; down -> denser.
**
** DETERMINISM
**   The result depends only on the parameters (seed included), the sizes and the dtype:
**   never on the strides, the thread or whether q, k or v is generated. Each (b, head,
**   tensor) has its own random stream derived from the seed.
*/
#ifndef VECATTN_VIDEODATA_H
#define VECATTN_VIDEODATA_H

#include <stddef.h>
#include <stdint.h>

#include "vecattn.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- the generator ------------------------------------------------------------------- */

typedef struct va_video_params {
    int frame_height;        /* token rows per frame (default 24) */
    int frame_width;         /* token columns per frame (default 32): 768 tokens per frame */
    float corr_t;            /* correlation length of F in frames (default 3) */
    float corr_y;            /* ... in token rows (default 4) */
    float corr_x;            /* ... in token columns (default 4) */
    float field;             /* weight of F in q and k (default 0.4) */
    float noise;             /* weight of the per-element noise in q, k and v (default 0.15) */
    int vertical_per_frame;  /* vertical positions per frame (default 2; 0 disables) */
    float vertical;          /* weight of u in a vertical key (default 0.6) */
    float q_bias;            /* weight of u in every query (default 0.3) */
    float head_variation;    /* spread of the per-query-head factor f_h (default 0.3) */
    float v_field;           /* weight of V's own smooth field (default 1.0) */
    uint64_t seed;           /* default 1 */
} va_video_params;

/* Fill *p with the defaults above. */
void va_video_defaults(va_video_params *p);

/*
** Write video-like Q, K, V as dtype bits (a->dtype: bf16 or fp16) into HOST arrays laid
** out by the element strides of a (q_stride for q, k_stride for k, v_stride for v; the last
** dimension contiguous). Sizes come from a (batch, heads_q, heads_kv, seq_q, seq_k,
** head_dim); a->q, a->k, a->v are ignored. Any of q, k, v may be NULL (not generated).
** p may be NULL for the defaults.
** Returns 0, or -1 when the arguments are inconsistent (sizes <= 0, heads_q % heads_kv,
** seq_q > seq_k, frame sizes or correlation lengths <= 0) or memory ran out.
*/
int va_video_fill(const vecattn_prefill_args *a, uint16_t *q, uint16_t *k, uint16_t *v,
                  const va_video_params *p);

/* float -> bf16/fp16 bits, round to nearest even (fp16 subnormals and overflow to Inf
** handled); and back. */
uint16_t va_video_from_float(float x, vecattn_dtype dt);
float va_video_to_float(uint16_t bits, vecattn_dtype dt);

/* ---- .npy files ------------------------------------------------------------------------ */

/*
** Real Q/K/V dumps in NumPy's .npy format (versions 1.0, 2.0 and 3.0), little-endian,
** C order, with shapes [S, D], [H, S, D] or [B, H, S, D]. Element types:
**   '<f2'         float16
**   '<u2', '<i2'  bfloat16 bit patterns (torch: t.view(torch.uint16 or torch.int16))
**   '<f4'         float32 (rounded to the requested dtype when converted)
** The header is checked strictly: the magic string, a known version, a header length that
** fits the file, a padded Python dict literal holding exactly 'descr', 'fortran_order' and
** 'shape' (no other keys, no duplicates), fortran_order False, 2 to 4 dimensions each
** >= 1, and a data size equal to the rest of the file (no truncation, no trailing bytes).
*/
typedef enum va_npy_status {
    VA_NPY_OK = 0,
    VA_NPY_E_OPEN = 1,        /* the file cannot be opened or read */
    VA_NPY_E_MAGIC = 2,       /* not an .npy file */
    VA_NPY_E_VERSION = 3,     /* unknown format version */
    VA_NPY_E_HEADER = 4,      /* malformed header dict */
    VA_NPY_E_DTYPE = 5,       /* descr not supported (big-endian, other types) */
    VA_NPY_E_ORDER = 6,       /* fortran_order True */
    VA_NPY_E_SHAPE = 7,       /* not 2 to 4 dimensions, a zero or huge dimension */
    VA_NPY_E_SIZE = 8,        /* data shorter or longer than the shape says */
    VA_NPY_E_NOMEM = 9,
    VA_NPY_E_MISMATCH = 10    /* shapes of arrays that must agree do not (va_npy_to_tensor) */
} va_npy_status;

/* "VA_NPY_E_SHAPE", ... (never NULL). */
const char *va_npy_status_name(va_npy_status st);

typedef enum va_npy_type { VA_NPY_F16 = 0, VA_NPY_BF16 = 1, VA_NPY_F32 = 2 } va_npy_type;

typedef struct va_npy_array {
    va_npy_type type;
    int ndim;                /* 2, 3 or 4 as in the file */
    int64_t shape[4];        /* as in the file */
    int batch, heads, seq, head_dim;  /* the shape read as [B, H, S, D] (missing dims are 1) */
    void *data;              /* malloc'ed, C order, little-endian elements */
    size_t count;            /* elements */
} va_npy_array;

/* Read a whole file. On failure *out is empty and msg (may be NULL) names the file, the
** field and the reason. */
va_npy_status va_npy_read(const char *path, va_npy_array *out, char *msg, size_t msg_size);

/* Parse an in-memory file image (the same checks; `name` is used in messages). */
va_npy_status va_npy_parse(const void *bytes, size_t size, const char *name, va_npy_array *out,
                           char *msg, size_t msg_size);

void va_npy_free(va_npy_array *a);

/*
** Convert into a host tensor of dtype `dt` with element strides stride[3] (batch, head,
** sequence; rows contiguous), shaped as the array's [B, H, S, D]. bf16 <-> fp16 goes
** through float; values that do not fit fp16 become +-Inf.
*/
void va_npy_to_tensor(const va_npy_array *a, vecattn_dtype dt, uint16_t *out,
                      const int64_t stride[3]);

/*
** Load dumped Q, K, V (k and v must have the same shape; q the same B and D, H a multiple
** of K's H, S <= K's S) into freshly malloc'ed contiguous [B, H, S, D] host tensors of
** dtype dt, and fill the sizes and strides of *a (a->q, a->k, a->v are left alone: the
** host tensors go to *q, *k, *v; free() them). VA_NPY_E_MISMATCH names the disagreeing
** dimension.
*/
va_npy_status va_npy_load_qkv(const char *q_path, const char *k_path, const char *v_path,
                              vecattn_dtype dt, vecattn_prefill_args *a, uint16_t **q,
                              uint16_t **k, uint16_t **v, char *msg, size_t msg_size);

#ifdef __cplusplus
}
#endif
#endif /* VECATTN_VIDEODATA_H */
