// The fakes' matrix products (fake_cudnn.cpp, fake_cublas.cpp): oneDNN's
// sgemm on an OpenMP team of a fixed size, whatever thread calls.
//
// Why: oneDNN splits a product's sums over the calling thread's OpenMP
// team, so their last bits depend on its size, where a real cuDNN's or
// cuBLAS's results do not depend on which host thread calls. The
// model-parallel pipe drives its stages from threads of one OpenMP thread
// each, the tests from the main thread: with the team's size fixed, a stage
// computes in its thread what it computes in the main one.
#ifndef TESTS_CUDA_EMU_FAKE_GEMM_H
#define TESTS_CUDA_EMU_FAKE_GEMM_H

#include <dnnl.h>
#include <omp.h>

enum { FAKE_GEMM_THREADS = 2 };

static inline dnnl_status_t fake_sgemm(char ta, char tb, dnnl_dim_t m, dnnl_dim_t n, dnnl_dim_t k, float alpha,
                                       const float *a, dnnl_dim_t lda, const float *b, dnnl_dim_t ldb, float beta,
                                       float *c, dnnl_dim_t ldc) {
    int was = omp_get_max_threads();
    omp_set_num_threads(FAKE_GEMM_THREADS);
    dnnl_status_t s = dnnl_sgemm(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    omp_set_num_threads(was);
    return s;
}

#endif
