/*
** vecattn_ref.h -- the CPU reference of vector-sparse attention, in float64.
**
** This is shared/spec/vector-sparse-attention.md written as plain C, for the tests and the
** benchmarks. It is deliberately slow and simple: one loop nest per formula of the spec.
**
** INPUTS
**   Every function takes the same vecattn_prefill_args as the library, except that q, k
**   and v are HOST arrays of uint16 element bits (bf16 or fp16, per args->dtype) and the
**   strides are element strides, so any view the library accepts (BHSD, BSHD, ...) works
**   here too. o, lse and sparsity_out are never read or written: outputs go to the
**   arrays passed explicitly. The reference accepts any head_dim >= 1 and any pq, bk,
**   gk >= 1; it does not validate what vecattn_check_prefill_args validates.
**
** WHAT IS BIT-EXACT AND WHAT IS NOT
**   The pooled, scaled query (va_ref_pool) reproduces the GPU's float steps exactly, so
**   that the selection can be compared key by key. Scores are then computed in double;
**   the GPU accumulates them in fp32, so a key whose decision margin is within the fp32
**   error bound is reported as "ambiguous" (VA_REF_AMBIGUOUS) and may go either way.
**   Attention is computed entirely in double.
**
** THREADS
**   Every function is reentrant (no global state); the random helpers keep their state in
**   the caller's uint64_t.
*/
#ifndef VECATTN_REF_H
#define VECATTN_REF_H

#include <stddef.h>
#include <stdint.h>

#include "vecattn.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- element conversions ---------------------------------------------------------- */

/* The value of bf16/fp16 bits, exactly (every bf16 and fp16 value is a float). */
float va_ref_to_float(uint16_t bits, vecattn_dtype dt);

/* Round a float to bf16/fp16, to nearest even: fp16 subnormals are rounded correctly,
** values at or past the rounding edge of the largest finite value become +-Inf, NaN stays
** a (quiet) NaN. */
uint16_t va_ref_from_float(float x, vecattn_dtype dt);

/* ---- problem geometry (spec: "Query blocks", "Candidates and forced keys") ------------ */

/* a->scale if nonzero, else 1.0f / sqrtf((float)head_dim): the same float the GPU uses. */
float va_ref_scale(const vecattn_prefill_args *a);

/* The threshold of query head h: a->thresholds[h] when a->thresholds, else a->threshold. */
float va_ref_head_threshold(const vecattn_prefill_args *a, int h);

/* gap = (float)(-ln(p)), computed in double and rounded once. */
float va_ref_gap(float p);

/* nQ = ceil(Sq / pq). */
int va_ref_num_qblocks(const vecattn_prefill_args *a);

/* Rows of query block i: min(pq, Sq - i*pq). */
int va_ref_block_rows(const vecattn_prefill_args *a, int i);

/* p0(i) = i*pq + (Sk - Sq): the global key position of block i's first query. */
int64_t va_ref_block_p0(const vecattn_prefill_args *a, int i);

/* Candidate keys of block i as a half-open range [*lo, *hi) (empty when *lo >= *hi):
** causal: [pq, p0(i)) intersect [0, Sk); non-causal: [0, Sk). */
void va_ref_candidates(const vecattn_prefill_args *a, int i, int64_t *lo, int64_t *hi);

/* The spec's forced keys of block i as {start0, end0, start1, end1}, the layout of the
** API's forced_ranges: causal: the sink [0, min(pq, p0)) and the diagonal block
** [p0, p0 + rows); non-causal: two empty ranges. */
void va_ref_forced_ranges(const vecattn_prefill_args *a, int i, int32_t r[4]);

/* ---- selection (spec: "Query blocks", "Scores and the MinP-gap rule") ----------------- */

/* The pooled, scaled query of block i of (b, h), D floats, bit-exact with the GPU:
** sum in float over the rows in ascending order, divide by the row count, round to the
** dtype, multiply by the scale, round to the dtype again. */
void va_ref_pool(const vecattn_prefill_args *a, int b, int h, int i, float *qs);

/* Flags of va_ref_select_row. */
#define VA_REF_NOT_SELECTED 0  /* not a candidate, or fails the rule by a clear margin */
#define VA_REF_SELECTED 1      /* passes the rule by a clear margin: the GPU must keep it */
#define VA_REF_AMBIGUOUS 2     /* candidate within the fp32 error bound of the decision */

/*
** The selection of block i of (b, h), one flag per key: flags[Sk].
** Scores are s(j) = sum_d qs[d] * k[j][d] in double, from the float qs of va_ref_pool.
** Tiles of gk*bk keys and slices of bk keys are aligned to absolute key positions; per
** tile the running max m starts at -inf and, slice by slice, first takes the max of the
** slice's candidate scores, then tests each candidate: selected iff s + gap >= m.
** A candidate is VA_REF_AMBIGUOUS when |s + gap - m| <= 2*tol + 2^-23 * (|m| + gap), with
** tol = max over the tile's candidate keys of D * 2^-23 * sum_d |qs[d] * k[j][d]|: the
** first term bounds the GPU's fp32 error on s and on m, the second the rounding of the
** float addition s + gap (or subtraction m - gap). Exception: the key holding the running
** max by more than 2*tol over every other candidate seen in the tile is VA_REF_SELECTED
** (the GPU's max is the same key, and s + gap >= s = m holds in any float arithmetic).
*/
void va_ref_select_row(const vecattn_prefill_args *a, int b, int h, int i, signed char *flags);

/*
** The whole selection in the API's CSR layout (see vecattn_selection):
**   counts  [B, Hq, nQ] (caller's array), row r = (b*Hq + h)*nQ + i;
**   offsets [B*Hq*nQ + 1] (caller's array);
**   *indices is malloc'ed here (never NULL on success; free() it).
** Ambiguous keys count as selected when they pass in double. Returns the total number of
** kept keys, or -1 when memory ran out.
*/
int64_t va_ref_select(const vecattn_prefill_args *a, int32_t *counts, int64_t *offsets,
                      int32_t **indices);

/* ---- attention (spec: "Attention") ---------------------------------------------------- */

/*
** Attention in float64. For query t of block i the key set is forced(i) U the listed keys:
**   forced(i)  forced_ranges[((b*Hq + h)*nQ + i)*4 + 0..3] (host, {s0, e0, s1, e1}, clipped
**              to [0, Sk)) when not NULL, else the spec's rule (va_ref_forced_ranges);
**   listed     indices[offsets[r] .. offsets[r] + counts[r]) when counts is not NULL.
** When a->causal, key j is visible to local query t iff j <= t + Sk - Sq. When a->dense,
** the key set is every key (still causal-masked when causal) and forced/listed are ignored.
** Scores are (double)va_ref_scale(a) * q.k.
** o: [B, Hq, Sq, D] contiguous; lse: [B, Hq, Sq] natural-log sum of exp, or NULL.
** An empty key set gives o = 0 and lse = -INFINITY.
** Returns 0, or -1 when memory ran out.
*/
int va_ref_attention(const vecattn_prefill_args *a, const int32_t *forced_ranges,
                     const int32_t *counts, const int64_t *offsets, const int32_t *indices,
                     double *o, double *lse);

/*
** Spec "Sparsity": 1 - attended pairs / valid pairs over the whole problem, for the spec's
** forced keys plus counts[B, Hq, nQ] listed keys per block (NULL: none). Valid pairs are
** all Sq*Sk (non-causal) or the causally visible ones; forced keys are counted with the
** causal mask (a block of r rows attends r*(sink + count) + r*(r+1)/2 pairs). Listed keys
** are assumed visible to the whole block, as the spec's selection guarantees. a->dense
** gives 0.
*/
double va_ref_sparsity(const vecattn_prefill_args *a, const int32_t *counts);

/* ---- test data and comparison ---------------------------------------------------------- */

/* splitmix64: any state is valid (zero included). */
uint64_t va_ref_rng_next(uint64_t *state);

/* Uniform float in [lo, hi] (hi only through float rounding). */
float va_ref_rng_uniform(uint64_t *state, float lo, float hi);

/* Fill n elements with uniform values in [lo, hi) rounded to dt. No element is ever +-0
** (a value that rounds to zero is drawn again, and after a few tries replaced by the
** rounded hi, or lo, or 1): a zero-filled buffer can never pass for a written one. */
void va_ref_fill_random(uint16_t *x, size_t n, vecattn_dtype dt, uint64_t *rng_state, float lo,
                        float hi);

/*
** "Vertical" test data: Q and K such that a few keys score far above the rest for every
** query block, so that the selection at p = 0.9 is neither trivially dense nor empty.
** Per (batch, KV head) a random direction u (entries U(-1, 1)) and a random phase are drawn;
**   q[t][d] = U(-noise, noise) + q_bias * u[d]                (every query of the KV group)
**   k[j][d] = U(-noise, noise) + (vertical(j) ? amplitude * u[d] : 0)
** where key j is vertical iff (j + phase) % period == 0. With the defaults a vertical key
** scores about q_bias * amplitude * sqrt(D) / 3 (3.8 at D 128) against about
** q_bias * noise / 3 = 0.33 (one standard deviation) for the others, so with Pq 64, Bk 16,
** Gk 16 and p 0.9 a few keys per 256-key tile are kept: about 2% of the candidates (causal
** sparsity 0.80 at S = 1024, where the forced keys dominate, 0.94 at S = 4096).
** q and k are the host arrays described by a (sizes, dtype, q_stride, k_stride; a->q and
** a->k are ignored). V is not touched: fill it with va_ref_fill_random.
*/
typedef struct va_ref_vertical {
    float noise;      /* amplitude of the uniform noise in every element (default 1) */
    float q_bias;     /* weight of u in every query (default 1) */
    float amplitude;  /* weight of u in a vertical key (default 1) */
    int period;       /* one key in `period` is vertical (default 50) */
} va_ref_vertical;

void va_ref_vertical_defaults(va_ref_vertical *vp);
void va_ref_fill_vertical(const vecattn_prefill_args *a, uint16_t *q, uint16_t *k,
                          uint64_t *rng_state, const va_ref_vertical *vp);

/*
** ||out - ref||_2 / ||ref||_2 over [B, H, S, D]: out is dtype bits addressed by the element
** strides stride[3] (batch, head, sequence; last dim contiguous), ref is contiguous.
** Any NaN or Inf in out gives INFINITY. With ||ref|| == 0 it is 0 when out is all zero
** and INFINITY otherwise.
*/
double va_ref_rel_l2(const uint16_t *out, vecattn_dtype dt, const int64_t stride[3],
                     const double *ref, int B, int H, int S, int D);

#ifdef __cplusplus
}
#endif
#endif /* VECATTN_REF_H */
