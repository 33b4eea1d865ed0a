/*
 * Row math shared by the hook and exported for tests: projection onto a
 * low-rank basis, the logistic readout, and addition or ablation of a
 * direction. Rows are float32 residual-stream vectors of width n_embd.
 * Dot products accumulate in double so that the C and numba kernels
 * (kernels/rows.py, kernels/readout.py) agree to float32 rounding.
 */
#pragma once
#include <stdint.h>

/* Return sum_i a[i] * b[i], accumulated in double. */
double lrg_dot(const float *a, const float *b, int64_t n);

/* h <- h + alpha * v over one row of width n. */
void lrg_add_row(float *h, const float *v, float alpha, int64_t n);

/* h <- h - (h . v) v over one row; v must have unit norm. */
void lrg_ablate_row(float *h, const float *v, int64_t n);

/*
 * Return the readout logit of one row, in double so that a threshold fitted
 * in float64 is compared without rounding:
 * bias + sum_j weight[j] * ((basis_t[j] . h) - mean[j]) / scale[j].
 * basis_t is [rank, n] row-major; mean, scale and weight are [rank].
 */
double lrg_readout_row(const float *h, int64_t n, const float *basis_t, int rank,
                      const float *mean, const float *scale, const float *weight,
                      float bias);

/* The readout of the row scale * h, without forming it. */
double lrg_readout_row_scaled(const float *h, int64_t n, double scale_h, const float *basis_t,
                              int rank, const float *mean, const float *scale,
                              const float *weight, float bias);

/* Batch forms over rows [n_rows, n], exported so tests can compare them
 * with the numba kernels. z is [n_rows, rank]; logits is [n_rows]. */
void lrg_project_rows(const float *rows, int64_t n_rows, int64_t n,
                      const float *basis_t, int rank, float *z);
void lrg_readout_rows(const float *rows, int64_t n_rows, int64_t n,
                      const float *basis_t, int rank, const float *mean,
                      const float *scale, const float *weight, float bias,
                      float *logits);
void lrg_add_rows(float *rows, int64_t n_rows, int64_t n, const float *v, float alpha);
void lrg_ablate_rows(float *rows, int64_t n_rows, int64_t n, const float *v);
