/*
** gpu_util.c -- the shared half of the GPU tests (see gpu_util.h).
*/
#include "gpu_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ref/vecattn_ref.h"
#include "test_util.h"

/* ------------------------------------------------------------------------------------- */
/* Session and memory                                                                     */
/* ------------------------------------------------------------------------------------- */

void gpu_must(CUresult r, const char *what)
{
    if (r == CUDA_SUCCESS)
        return;
    fprintf(stderr, "FATAL: %s failed: %s\n", what, va_cu_error_name(r));
    exit(1);
}

static void *host_alloc(size_t bytes)
{
    void *p = malloc(bytes ? bytes : 1);
    if (!p) {
        fprintf(stderr, "FATAL: out of host memory (%zu bytes)\n", bytes);
        exit(1);
    }
    return p;
}

int gpu_env_open(gpu_env *env)
{
    memset(env, 0, sizeof *env);
    char why[600];
    if (!test_gpu_available(why, sizeof why)) {
        printf("SKIP: %s\n", why);
        return TEST_SKIP;
    }
    vecattn_status st = vecattn_create(&env->ctx, 0, NULL, VECATTN_CREATE_DEFAULT);
    if (st == VECATTN_E_ARCH) {
        printf("SKIP: %s\n", vecattn_errmsg(env->ctx));
        vecattn_destroy(env->ctx);
        return TEST_SKIP;
    }
    if (st != VECATTN_OK) {
        fprintf(stderr, "vecattn_create: %s: %s\n", vecattn_status_string(st),
                vecattn_errmsg(env->ctx));
        vecattn_destroy(env->ctx);
        return 1;
    }
    /* the primary context is the one vecattn makes current during its calls */
    gpu_must(va_cuDeviceGet(&env->dev, 0), "cuDeviceGet");
    gpu_must(va_cuDevicePrimaryCtxRetain(&env->primary, env->dev), "cuDevicePrimaryCtxRetain");
    gpu_must(va_cuCtxPushCurrent(env->primary), "cuCtxPushCurrent");
    gpu_must(va_cuStreamCreate(&env->stream, 0), "cuStreamCreate");
    vecattn_device_info info;
    if (vecattn_get_device_info(env->ctx, &info) == VECATTN_OK)
        printf("device: %s (sm_%d%d, %d SMs), driver %d, NVRTC %d.%d\n", info.name,
               info.compute_major, info.compute_minor, info.sm_count, info.driver_version,
               info.nvrtc_major, info.nvrtc_minor);
    return 0;
}

void gpu_env_close(gpu_env *env)
{
    if (env->stream)
        va_cuStreamDestroy(env->stream);
    vecattn_destroy(env->ctx);
    if (env->primary) {
        CUcontext popped;
        va_cuCtxPopCurrent(&popped);
        va_cuDevicePrimaryCtxRelease(env->dev);
    }
    memset(env, 0, sizeof *env);
}

CUdeviceptr gpu_alloc(size_t bytes)
{
    CUdeviceptr p = 0;
    gpu_must(va_cuMemAlloc(&p, bytes < 16 ? 16 : bytes), "cuMemAlloc");
    return p;
}

void gpu_free(CUdeviceptr p)
{
    if (p)
        va_cuMemFree(p);
}

void gpu_upload(CUdeviceptr dst, const void *src, size_t bytes)
{
    if (bytes)
        gpu_must(va_cuMemcpyHtoD(dst, src, bytes), "cuMemcpyHtoD");
}

void gpu_download(void *dst, CUdeviceptr src, size_t bytes)
{
    /* the library's work runs on the test's stream: wait for everything first */
    gpu_must(va_cuCtxSynchronize(), "cuCtxSynchronize (before a download)");
    if (bytes)
        gpu_must(va_cuMemcpyDtoH(dst, src, bytes), "cuMemcpyDtoH");
}

void gpu_poison(CUdeviceptr p, size_t bytes)
{
    gpu_must(va_cuCtxSynchronize(), "cuCtxSynchronize (before poisoning)");
    if (bytes)
        gpu_must(va_cuMemsetD8(p, 0xFF, bytes), "cuMemsetD8");
}

/* ------------------------------------------------------------------------------------- */
/* Problems                                                                               */
/* ------------------------------------------------------------------------------------- */

/* FNV-1a of the case name: a case keeps its inputs when other cases are added. */
static uint64_t name_seed(const char *name)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (; *name; name++)
        h = (h ^ (unsigned char)*name) * 0x100000001b3ull;
    return h;
}

uint64_t problem_seed(const test_problem *p, uint64_t salt)
{
    uint64_t s = name_seed(p->c.name) ^ (salt * 0x9E3779B97F4A7C15ull);
    return va_ref_rng_next(&s);
}

/* Head 0 gets p = 1 (gap 0, the edge of the range); the others spread over (p^3, p]. */
static float *per_head_thresholds(const test_case *c)
{
    float *th = host_alloc(sizeof(float) * (size_t)c->heads_q);
    for (int h = 0; h < c->heads_q; h++)
        th[h] = h == 0 ? 1.0f : powf(c->threshold, 1.0f + 2.0f * (float)h / (float)c->heads_q);
    return th;
}

static void set_args(vecattn_prefill_args *a, const test_case *c)
{
    vecattn_prefill_args_init(a);
    a->batch = c->batch, a->heads_q = c->heads_q, a->heads_kv = c->heads_kv;
    a->seq_q = c->seq_q, a->seq_k = c->seq_k, a->head_dim = c->head_dim;
    a->dtype = c->dtype, a->causal = c->causal;
    a->pq = c->pq, a->bk = c->bk, a->gk = c->gk, a->threshold = c->threshold;
    if (c->flags & TC_BSHD)
        vecattn_set_contiguous_bshd(a);
    else
        vecattn_set_contiguous_bhsd(a);
}

static void fill_inputs(test_problem *p)
{
    uint64_t rng = problem_seed(p, 0);
    if (p->c.flags & TC_VERTICAL) {
        va_ref_vertical vp;
        va_ref_vertical_defaults(&vp);
        va_ref_fill_vertical(&p->host, p->q, p->k, &rng, &vp);
    } else {
        va_ref_fill_random(p->q, p->q_elems, p->c.dtype, &rng, -1.0f, 1.0f);
        va_ref_fill_random(p->k, p->kv_elems, p->c.dtype, &rng, -1.0f, 1.0f);
    }
    va_ref_fill_random(p->v, p->kv_elems, p->c.dtype, &rng, -1.0f, 1.0f);
}

void problem_create(test_problem *p, const test_case *c)
{
    memset(p, 0, sizeof *p);
    p->c = *c;
    set_args(&p->dev, c);
    p->q_elems = (size_t)c->batch * c->heads_q * c->seq_q * c->head_dim;
    p->kv_elems = (size_t)c->batch * c->heads_kv * c->seq_k * c->head_dim;
    p->q = host_alloc(p->q_elems * sizeof(uint16_t));
    p->k = host_alloc(p->kv_elems * sizeof(uint16_t));
    p->v = host_alloc(p->kv_elems * sizeof(uint16_t));
    if (c->flags & TC_PER_HEAD)
        p->thresholds = per_head_thresholds(c);
    p->dev.thresholds = p->thresholds; /* a host array in the API too */

    p->host = p->dev;
    p->host.q = p->q, p->host.k = p->k, p->host.v = p->v;
    fill_inputs(p);

    p->dq = gpu_alloc(p->q_elems * 2);
    p->dk = gpu_alloc(p->kv_elems * 2);
    p->dv = gpu_alloc(p->kv_elems * 2);
    p->dout = gpu_alloc(p->q_elems * 2);
    gpu_upload(p->dq, p->q, p->q_elems * 2);
    gpu_upload(p->dk, p->k, p->kv_elems * 2);
    gpu_upload(p->dv, p->v, p->kv_elems * 2);
    p->dev.q = (const void *)p->dq, p->dev.k = (const void *)p->dk;
    p->dev.v = (const void *)p->dv, p->dev.o = (void *)p->dout;
    if (c->flags & TC_LSE) {
        p->dlse = gpu_alloc(sizeof(float) * (size_t)c->batch * c->heads_q * c->seq_q);
        p->dev.lse = (float *)p->dlse;
    }
    p->nq = va_ref_num_qblocks(&p->host);
    p->rows = (int64_t)c->batch * c->heads_q * p->nq;
}

void problem_destroy(test_problem *p)
{
    gpu_free(p->dq), gpu_free(p->dk), gpu_free(p->dv), gpu_free(p->dout), gpu_free(p->dlse);
    free(p->q), free(p->k), free(p->v), free(p->thresholds);
    memset(p, 0, sizeof *p);
}

void problem_poison_outputs(const test_problem *p)
{
    gpu_poison(p->dout, p->q_elems * 2);
    if (p->dlse)
        gpu_poison(p->dlse, sizeof(float) * (size_t)p->c.batch * p->c.heads_q * p->c.seq_q);
}

void problem_download_outputs(const test_problem *p, uint16_t *o, float *lse)
{
    gpu_download(o, p->dout, p->q_elems * 2);
    if (p->dlse && lse)
        gpu_download(lse, p->dlse, sizeof(float) * (size_t)p->c.batch * p->c.heads_q * p->c.seq_q);
}

/* ------------------------------------------------------------------------------------- */
/* Selections                                                                             */
/* ------------------------------------------------------------------------------------- */

void gpu_selection_alloc_host(gpu_selection *s, int64_t rows, int64_t total)
{
    memset(s, 0, sizeof *s);
    s->rows = rows, s->total = total;
    s->counts = host_alloc(sizeof(int32_t) * (size_t)rows);
    s->offsets = host_alloc(sizeof(int64_t) * ((size_t)rows + 1));
    s->indices = host_alloc(sizeof(int32_t) * (size_t)(total > 0 ? total : 1));
}

void gpu_selection_free(gpu_selection *s)
{
    gpu_free((CUdeviceptr)s->dev.counts);
    gpu_free((CUdeviceptr)s->dev.offsets);
    gpu_free((CUdeviceptr)s->dev.indices);
    free(s->counts), free(s->offsets), free(s->indices);
    memset(s, 0, sizeof *s);
}

static void alloc_device_csr(gpu_selection *s, int64_t rows)
{
    s->dev.counts = (int32_t *)gpu_alloc(sizeof(int32_t) * (size_t)rows);
    s->dev.offsets = (int64_t *)gpu_alloc(sizeof(int64_t) * ((size_t)rows + 1));
}

void gpu_selection_upload(gpu_selection *s)
{
    alloc_device_csr(s, s->rows);
    s->dev.indices = (int32_t *)gpu_alloc(sizeof(int32_t) * (size_t)(s->total > 0 ? s->total : 1));
    s->dev.indices_capacity = s->total;
    gpu_upload((CUdeviceptr)s->dev.counts, s->counts, sizeof(int32_t) * (size_t)s->rows);
    gpu_upload((CUdeviceptr)s->dev.offsets, s->offsets, sizeof(int64_t) * ((size_t)s->rows + 1));
    gpu_upload((CUdeviceptr)s->dev.indices, s->indices, sizeof(int32_t) * (size_t)s->total);
}

vecattn_status gpu_select(gpu_env *env, const test_problem *p, gpu_selection *s,
                          int *consistent)
{
    memset(s, 0, sizeof *s);
    *consistent = 1;
    alloc_device_csr(s, p->rows);
    gpu_poison((CUdeviceptr)s->dev.counts, sizeof(int32_t) * (size_t)p->rows);
    gpu_poison((CUdeviceptr)s->dev.offsets, sizeof(int64_t) * ((size_t)p->rows + 1));
    int64_t total = -1;
    vecattn_status st = vecattn_select(env->ctx, &p->dev, &s->dev, &total, env->stream);
    if (st != VECATTN_OK || total < 0) {
        gpu_selection_free(s);
        return st != VECATTN_OK ? st : VECATTN_E_INTERNAL;
    }
    s->dev.indices = (int32_t *)gpu_alloc(sizeof(int32_t) * (size_t)(total > 0 ? total : 1));
    s->dev.indices_capacity = total;
    gpu_poison((CUdeviceptr)s->dev.counts, sizeof(int32_t) * (size_t)p->rows);
    gpu_poison((CUdeviceptr)s->dev.offsets, sizeof(int64_t) * ((size_t)p->rows + 1));
    gpu_poison((CUdeviceptr)s->dev.indices, sizeof(int32_t) * (size_t)(total > 0 ? total : 1));
    int64_t total2 = -1;
    st = vecattn_select(env->ctx, &p->dev, &s->dev, &total2, env->stream);
    if (st != VECATTN_OK) {
        gpu_selection_free(s);
        return st;
    }
    *consistent = total2 == total;

    /* keep the device buffers, add the host copies */
    vecattn_selection dev = s->dev;
    gpu_selection_alloc_host(s, p->rows, total);
    s->dev = dev;
    gpu_download(s->counts, (CUdeviceptr)dev.counts, sizeof(int32_t) * (size_t)p->rows);
    gpu_download(s->offsets, (CUdeviceptr)dev.offsets, sizeof(int64_t) * ((size_t)p->rows + 1));
    gpu_download(s->indices, (CUdeviceptr)dev.indices, sizeof(int32_t) * (size_t)total);
    return VECATTN_OK;
}

int gpu_selection_equal(const gpu_selection *x, const gpu_selection *y)
{
    return x->rows == y->rows && x->total == y->total &&
           !memcmp(x->counts, y->counts, sizeof(int32_t) * (size_t)x->rows) &&
           !memcmp(x->offsets, y->offsets, sizeof(int64_t) * ((size_t)x->rows + 1)) &&
           !memcmp(x->indices, y->indices, sizeof(int32_t) * (size_t)x->total);
}
