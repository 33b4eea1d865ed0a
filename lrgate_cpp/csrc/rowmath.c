#include "rowmath.h"

double lrg_dot(const float *a, const float *b, int64_t n) {
    double acc = 0.0;
    for (int64_t i = 0; i < n; i++) {
        acc += (double)a[i] * (double)b[i];
    }
    return acc;
}

void lrg_add_row(float *h, const float *v, float alpha, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        h[i] += alpha * v[i];
    }
}

void lrg_ablate_row(float *h, const float *v, int64_t n) {
    const float proj = (float)lrg_dot(h, v, n);
    for (int64_t i = 0; i < n; i++) {
        h[i] -= proj * v[i];
    }
}

double lrg_readout_row(const float *h, int64_t n, const float *basis_t, int rank,
                      const float *mean, const float *scale, const float *weight,
                      float bias) {
    double logit = (double)bias;
    for (int j = 0; j < rank; j++) {
        const double z = lrg_dot(basis_t + (int64_t)j * n, h, n);
        logit += (double)weight[j] * ((z - (double)mean[j]) / (double)scale[j]);
    }
    return logit;
}

double lrg_readout_row_scaled(const float *h, int64_t n, double scale_h, const float *basis_t,
                              int rank, const float *mean, const float *scale,
                              const float *weight, float bias) {
    double logit = (double)bias;
    for (int j = 0; j < rank; j++) {
        const double z = scale_h * lrg_dot(basis_t + (int64_t)j * n, h, n);
        logit += (double)weight[j] * ((z - (double)mean[j]) / (double)scale[j]);
    }
    return logit;
}

void lrg_project_rows(const float *rows, int64_t n_rows, int64_t n,
                      const float *basis_t, int rank, float *z) {
    for (int64_t r = 0; r < n_rows; r++) {
        for (int j = 0; j < rank; j++) {
            z[r * rank + j] = (float)lrg_dot(basis_t + (int64_t)j * n, rows + r * n, n);
        }
    }
}

void lrg_readout_rows(const float *rows, int64_t n_rows, int64_t n,
                      const float *basis_t, int rank, const float *mean,
                      const float *scale, const float *weight, float bias,
                      float *logits) {
    for (int64_t r = 0; r < n_rows; r++) {
        logits[r] = (float)lrg_readout_row(rows + r * n, n, basis_t, rank, mean, scale, weight, bias);
    }
}

void lrg_add_rows(float *rows, int64_t n_rows, int64_t n, const float *v, float alpha) {
    for (int64_t r = 0; r < n_rows; r++) {
        lrg_add_row(rows + r * n, v, alpha, n);
    }
}

void lrg_ablate_rows(float *rows, int64_t n_rows, int64_t n, const float *v) {
    for (int64_t r = 0; r < n_rows; r++) {
        lrg_ablate_row(rows + r * n, v, n);
    }
}
