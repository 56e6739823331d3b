/* Kernels of model_collapse.families.gmm for 1-D mixtures, one chain per outer loop trip.
   em.py holds a NumPy path computing the same quantities; fast.py loads this file through
   model_collapse.native (compiled with the system C compiler on first use, flags in fast.py)
   and calls gmm_fit1d and gmm_sample1d through ctypes. */
#include <math.h>
#include <stdint.h>
#include <string.h>

#define BLK 64        /* block of points; a product of BLK sums in [1, K <= 64] fits a double */
#define KMAX 64
#define EPS10 (10 * 2.220446049250313e-16)   /* scikit-learn adds 10 eps to every nk */

typedef struct {
    int64_t n, k, trials, max_iter, km_max_iter;
    double tol, reg_covar, var_floor, km_tol, min_count;
} opts_t;

typedef double v4d __attribute__((vector_size(32)));

static inline uint64_t as_u(double x) { uint64_t u; memcpy(&u, &x, 8); return u; }
static inline double as_d(uint64_t u) { double x; memcpy(&x, &u, 8); return x; }

/* exp(x) for x <= 0 (clamped at -700): x = n ln2 + r, |r| <= ln2 / 2, degree-10 Chebyshev
   interpolant of exp(r) (max relative error 4e-16), 2^n built in the exponent bits. Branch-free
   so that gcc vectorises the loops calling it. */
static inline double exp_neg(double x) {
    x = x < -700.0 ? -700.0 : x;
    double kd = x * 0x1.71547652b82fep+0 + 0x1.8p52;
    uint64_t ki = as_u(kd);
    double n = kd - 0x1.8p52;
    double r = (x - n * 0x1.62e42fef00000p-1) - n * 0x1.473de6af278edp-34;
    double p = 0x1.28a2c0a7209fbp-22;
    p = p * r + 0x1.72faf024b693bp-19;
    p = p * r + 0x1.a019a66a75dd4p-16;
    p = p * r + 0x1.a01978c6baf81p-13;
    p = p * r + 0x1.6c16c17f43a58p-10;
    p = p * r + 0x1.1111112dd67c5p-7;
    p = p * r + 0x1.55555555520afp-5;
    p = p * r + 0x1.555555554b757p-3;
    p = p * r + 0x1.0000000000005p-1;
    p = p * r + 0x1.000000000001ep+0;
    p = p * r + 1.0;
    return p * as_d((ki << 52) + 0x3ff0000000000000ULL);
}

/* log(v) for normal v > 0: v = 2^e m, m in [sqrt(1/2), sqrt(2)) by integer arithmetic on the bits,
   then log(1 + f) = f - s (f - z q(z)), s = f / (2 + f), z = s^2, q a degree-6 Chebyshev fit. */
static inline double log_pos(double v) {
    uint64_t b = as_u(v) + (0x3ff0000000000000ULL - 0x3fe6a09e667f3bcdULL);
    double e = as_d(0x4330000000000000ULL | (b >> 52)) - 0x1p52 - 1023.0;
    double m = as_d((b & 0x000fffffffffffffULL) + 0x3fe6a09e667f3bcdULL);
    double f = m - 1.0, s = f / (2.0 + f), z = s * s;
    double q = 0x1.2b5900de53b32p-3;
    q = q * z + 0x1.39fe51a7c18f9p-3;
    q = q * z + 0x1.7462b51cb66b1p-3;
    q = q * z + 0x1.c71c62e3f11e6p-3;
    q = q * z + 0x1.2492492df281ap-2;
    q = q * z + 0x1.99999999952d7p-2;
    q = q * z + 0x1.5555555555558p-1;
    return e * 0x1.62e42fef00000p-1 + (f - s * (f - z * q) + e * 0x1.473de6af278edp-34);
}

/* Box-Muller (1958) from raw 64-bit words: pair j takes its radius from raw[j] and its angle
   from raw[npair + j]; out[j] = r cos, out[npair + j] = r sin. The angle 2 pi u is reduced
   exactly to a quarter turn q plus |a| <= pi / 4, where degree-6 (in a^2) fits give sin, cos. */
static void box_muller(const uint64_t *raw, int64_t npair, int64_t p0, int64_t p1, double *out) {
#pragma omp simd
    for (int64_t j = p0; j < p1; j++) {
        double u1 = as_d((raw[j] >> 12) | 0x3ff0000000000000ULL) - 1.0;
        double u2 = as_d((raw[npair + j] >> 12) | 0x3ff0000000000000ULL) - 1.0;
        double rad = sqrt(-2.0 * log_pos(1.0 - u1));
        double kd = 4.0 * u2 + 0x1.8p52;
        uint64_t q = as_u(kd) & 3;
        double a = (4.0 * u2 - (kd - 0x1.8p52)) * 0x1.921fb54442d18p+0, z = a * a;
        double sn = 0x1.5d87699eb6a31p-33;
        sn = sn * z - 0x1.ae5e37e850d20p-26;
        sn = sn * z + 0x1.71de3530aa14dp-19;
        sn = sn * z - 0x1.a01a019ba956dp-13;
        sn = sn * z + 0x1.111111110f3dcp-7;
        sn = sn * z - 0x1.5555555555543p-3;
        sn = a + a * z * sn;
        double cs = 0x1.1b8af554d31b3p-29;
        cs = cs * z - 0x1.27df400a3c797p-22;
        cs = cs * z + 0x1.a019f7fd878ecp-16;
        cs = cs * z - 0x1.6c16c163c5a72p-10;
        cs = cs * z + 0x1.555555554e7ebp-5;
        cs = cs * z - 0x1.fffffffffff79p-2;
        cs = 1.0 + z * cs;
        uint64_t odd = 0 - (q & 1), us = as_u(sn), uc = as_u(cs);
        uint64_t c0 = (us & odd) | (uc & ~odd), s0 = (uc & odd) | (us & ~odd);
        out[j] = rad * as_d(c0 ^ ((((q + 1) >> 1) & 1) << 63));
        out[npair + j] = rad * as_d(s0 ^ (((q >> 1) & 1) << 63));
    }
}

/* Sampling, in two phases so threads can split each: normals for pairs [p0, p1), then for chains
   [s0, s1) the slots of component k (counts[s, k] of them, in component order) get mu + sd z. */
void gmm_sample1d(const uint64_t *raw, int64_t npair, int64_t p0, int64_t p1, double *out,
                  int64_t s0, int64_t s1, int64_t n, int64_t K, const int64_t *counts,
                  const double *mu, const double *sd) {
    box_muller(raw, npair, p0, p1, out);
    for (int64_t s = s0; s < s1; s++) {
        double *zs = out + s * n;
        for (int64_t k = 0, at = 0; k < K; k++) {
            double m = mu[s * K + k], d = sd[s * K + k];
            int64_t c = counts[s * K + k];
#pragma omp simd
            for (int64_t j = 0; j < c; j++) zs[at + j] = m + d * zs[at + j];
            at += c;
        }
    }
}

/* log of a weight; a zero weight (a loaded state, never an M-step) stays finite */
static inline double logw(double w) { return log(w > 1e-300 ? w : 1e-300); }

/* Product of n doubles in four independent lanes (gcc does not vectorise a '*' reduction). */
static double prod(const double *v, int64_t n) {
    v4d p = {1.0, 1.0, 1.0, 1.0};
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) { v4d q; memcpy(&q, v + i, 32); p *= q; }
    double r = (p[0] * p[1]) * (p[2] * p[3]);
    for (; i < n; i++) r *= v[i];
    return r;
}

/* Greedy k-means++ (Arthur & Vassilvitskii 2007) with T local trials per centre, as scikit-learn.
   D (n) holds squared distances to the nearest centre, bs (n / BLK) their block sums, which make
   each cumulative-sum search O(n / BLK + BLK). Returns the data variance (for Lloyd's tol). */
static double kmeanspp(const double *x, int64_t n, int64_t K, int64_t T, const double *u,
                       double *restrict D, double *restrict bs, double *cen, double *xbar) {
    int64_t first = (int64_t)(u[0] * n), nb = n / BLK;
    if (first > n - 1) first = n - 1;
    double c = x[first], pot = 0, lin = 0;
    cen[0] = c;
    for (int64_t b = 0; b <= nb; b++) {
        double s = 0, l = 0;
#pragma omp simd reduction(+:s, l)
        for (int64_t j = b * BLK; j < (b < nb ? b * BLK + BLK : n); j++) {
            double e = x[j] - c;
            D[j] = e * e; s += e * e; l += e;
        }
        if (b < nb) bs[b] = s;
        pot += s; lin += l;
    }
    double var = (pot - lin * lin / n) / n;   /* moments about a data point: no cancellation */
    *xbar = c + lin / n;
    for (int64_t k = 1; k < K; k++) {
        double best_pot = INFINITY;
        int64_t best = 0;
        for (int64_t t = 0; t < T; t++) {
            /* first index whose running sum of D reaches u * pot (searchsorted, side=left) */
            double target = u[1 + (k - 1) * T + t] * pot, acc = 0;
            int64_t b = 0, cand = n - 1;
            while (b < nb && acc + bs[b] < target) acc += bs[b++];
            for (int64_t i = b * BLK; i < n; i++) {
                acc += D[i];
                if (acc >= target) { cand = i; break; }
            }
            double cc = x[cand], p = 0;
#pragma omp simd reduction(+:p)
            for (int64_t j = 0; j < n; j++) {
                double d = (x[j] - cc) * (x[j] - cc);
                p += d < D[j] ? d : D[j];
            }
            if (p < best_pot) { best_pot = p; best = cand; }
        }
        c = x[best];
        cen[k] = c;
        pot = best_pot;   /* scikit-learn carries the winning candidate's potential */
        if (k + 1 < K) {
            for (int64_t b = 0; b < nb; b++) {
                double s = 0;
#pragma omp simd reduction(+:s)
                for (int64_t j = b * BLK; j < b * BLK + BLK; j++) {
                    double d = (x[j] - c) * (x[j] - c);
                    D[j] = d < D[j] ? d : D[j];
                    s += D[j];
                }
                bs[b] = s;
            }
            for (int64_t j = nb * BLK; j < n; j++) {
                double d = (x[j] - c) * (x[j] - c);
                D[j] = d < D[j] ? d : D[j];
            }
        }
    }
    return var;
}

/* Nearest-centre labels (first minimum wins, as scikit-learn) and the partition's shifted sums
   cnt, a = sum (x - c_k), q = sum (x - c_k)^2 per label; returns how many labels changed. */
static int64_t assign(const double *x, int64_t n, int64_t K, const double *c, double *lab,
                      double *cnt, double *a, double *q) {
    int64_t changed = 0;
    if (K == 2) {
        double c0 = c[0], c1 = c[1], n1 = 0, a0 = 0, q0 = 0, a1 = 0, q1 = 0;
#pragma omp simd reduction(+:n1, a0, q0, a1, q1, changed)
        for (int64_t i = 0; i < n; i++) {
            double e0 = x[i] - c0, e1 = x[i] - c1;
            int up = e1 * e1 < e0 * e0;
            double m = up ? 1.0 : 0.0, f0 = up ? 0.0 : e0, f1 = up ? e1 : 0.0;
            changed += lab[i] != m;
            lab[i] = m;
            n1 += m; a0 += f0; q0 += f0 * f0; a1 += f1; q1 += f1 * f1;
        }
        cnt[0] = (double)n - n1; cnt[1] = n1; a[0] = a0; a[1] = a1; q[0] = q0; q[1] = q1;
        return changed;
    }
    for (int64_t k = 0; k < K; k++) cnt[k] = a[k] = q[k] = 0;
    for (int64_t i = 0; i < n; i++) {
        double bd = (x[i] - c[0]) * (x[i] - c[0]);
        int64_t b = 0;
        for (int64_t k = 1; k < K; k++) {
            double d = (x[i] - c[k]) * (x[i] - c[k]);
            if (d < bd) { bd = d; b = k; }
        }
        changed += lab[i] != (double)b;
        lab[i] = (double)b;
        cnt[b] += 1; a[b] += x[i] - c[b]; q[b] += bd;
    }
    return changed;
}

/* Empty clusters take the points farthest from their own centres (scikit-learn's rule); only
   the sums that move the centres change, the labels stay (as scikit-learn). */
static void relocate(const double *x, int64_t n, int64_t K, const double *c, const double *lab,
                     double *cnt, double *a) {
    int64_t taken[KMAX], ntaken = 0;
    for (int64_t e = 0; e < K; e++) {
        if (cnt[e] > 0) continue;
        double bd = -1;
        int64_t bi = 0;
        for (int64_t i = 0; i < n; i++) {
            double d = (x[i] - c[(int64_t)lab[i]]) * (x[i] - c[(int64_t)lab[i]]);
            int used = 0;
            for (int64_t t = 0; t < ntaken; t++) used |= taken[t] == i;
            if (d > bd && !used) { bd = d; bi = i; }
        }
        taken[ntaken++] = bi;
        int64_t from = (int64_t)lab[bi];
        cnt[from] -= 1; a[from] -= x[bi] - c[from];
        cnt[e] = 1; a[e] = x[bi] - c[e];
    }
}

/* Lloyd's k-means with scikit-learn's stopping rule (labels unchanged, or centre shift <= tol).
   Leaves the final partition's sums (nk, a, q) taken around sh. */
static void lloyd(const double *x, int64_t n, int64_t K, double *c, double *lab, int64_t max_iter,
                  double tol, double *nk, double *a, double *q, double *sh) {
    double cnt2[KMAX], a2[KMAX];
    int strict = 0;
    for (int64_t i = 0; i < n; i++) lab[i] = -1.0;
    for (int64_t it = 0; it < max_iter; it++) {
        int64_t changed = assign(x, n, K, c, lab, nk, a, q);
        int empty = 0;
        for (int64_t k = 0; k < K; k++) { sh[k] = c[k]; cnt2[k] = nk[k]; a2[k] = a[k]; empty |= nk[k] == 0; }
        if (empty) relocate(x, n, K, c, lab, cnt2, a2);
        double shift = 0;
        for (int64_t k = 0; k < K; k++) {
            double nc = cnt2[k] > 0 ? c[k] + a2[k] / cnt2[k] : c[k];
            shift += (nc - c[k]) * (nc - c[k]);
            c[k] = nc;
        }
        if (changed == 0) { strict = 1; break; }
        if (shift <= tol) break;
    }
    if (!strict) {
        assign(x, n, K, c, lab, nk, a, q);
        for (int64_t k = 0; k < K; k++) sh[k] = c[k];
    }
}

/* M-step from sums around the current means mu (updated in place); weights nk / N for the
   k-means start, nk / sum(nk) in EM, as scikit-learn. var_raw is the variance before reg_covar. */
static void mstep(int64_t n, int64_t K, const double *nk, const double *a, const double *q,
                  double *w, double *mu, double *var, double *var_raw, int normalise,
                  const opts_t *o) {
    double tot = 0;
    for (int64_t k = 0; k < K; k++) {
        double nke = nk[k] + EPS10, d = a[k] / nke;
        double vr = (q[k] - 2.0 * d * a[k] + d * d * nk[k]) / nke;
        vr = vr > 0 ? vr : 0;
        double v = vr + o->reg_covar;
        var_raw[k] = vr;
        var[k] = v > o->var_floor ? v : o->var_floor;
        mu[k] += d;
        w[k] = nke;
        tot += nke;
    }
    double den = normalise ? tot : (double)n;
    for (int64_t k = 0; k < K; k++) w[k] /= den;
}

/* Two-component E-step fused into one pass (the usual case). With e = x - mu1 the log-odds
   d = L1 - L0 is a quadratic in e, and the responsibility of the likelier side is 1 / (1 + t) with
   t = exp(-|d|): one exp per point. log p = L1 + max(-d, 0) + log(1 + t), and the logs of a block
   of 512 points are one log of the product of (1 + t) in [1, 2]. With direct = 0 only component 1's
   sums are accumulated and component 0's follow from the data moments (xbar, ss = sum (x - xbar)^2),
   which saves a quarter of the work; the caller redoes the pass with direct = 1 when that
   subtraction would lose digits (a small component 0). Returns sum log p; nk, a, q get the
   responsibility sums around the current means. */
static inline __attribute__((always_inline)) double
estep2_impl(const double *x, int64_t n, const double *w, const double *mu, const double *var,
            double xbar, double ss, double *nk, double *a, double *q, const int direct) {
    double m0 = mu[0], m1 = mu[1], dl = m1 - m0;
    double c0 = logw(w[0]) - 0.5 * log(6.283185307179586 * var[0]), h0 = -0.5 / var[0];
    double c1 = logw(w[1]) - 0.5 * log(6.283185307179586 * var[1]), h1 = -0.5 / var[1];
    double P = h1 - h0, Q = -2.0 * h0 * dl, R = c1 - c0 - h0 * dl * dl;
    double A0 = 0, B0 = 0, Q0 = 0, A1 = 0, B1 = 0, Q1 = 0, LM = 0, LL = 0, tt[512];
    for (int64_t b = 0; b < n; b += 512) {
        int64_t end = n - b < 512 ? n : b + 512;
        double lm = 0, a0 = 0, b0 = 0, q0 = 0, a1 = 0, b1 = 0, q1 = 0;
#pragma omp simd reduction(+:lm, a0, b0, q0, a1, b1, q1)
        for (int64_t i = b; i < end; i++) {
            double e = x[i] - m1;
            double d = (P * e + Q) * e + R, ad = fabs(d);
            double t = exp_neg(-ad), s = 1.0 + t, iv = 1.0 / s, rs = t * iv;
            int up = d > 0;
            double r1 = up ? iv : rs;
            lm += up ? 0.0 : ad;
            tt[i - b] = s;
            double p1 = r1 * e;
            a1 += r1; b1 += p1; q1 += p1 * e;
            if (direct) {
                double r0 = up ? rs : iv, e0 = x[i] - m0, p0 = r0 * e0;
                a0 += r0; b0 += p0; q0 += p0 * e0;
            }
        }
        LL += log(prod(tt, end - b));
        LM += lm; A0 += a0; B0 += b0; Q0 += q0; A1 += a1; B1 += b1; Q1 += q1;
    }
    double g0 = xbar - m0, g1 = xbar - m1;
    if (!direct) {   /* sums over component 0 = sums over all points - sums over component 1 */
        A0 = (double)n - A1;
        B0 = (double)n * g0 - (B1 + dl * A1);
        Q0 = ss + (double)n * g0 * g0 - (Q1 + 2.0 * dl * B1 + dl * dl * A1);
    }
    nk[0] = A0; a[0] = B0; q[0] = Q0; nk[1] = A1; a[1] = B1; q[1] = Q1;
    return (double)n * c1 + h1 * (ss + (double)n * g1 * g1) + LM + LL;
}

static double estep2(const double *x, int64_t n, const double *w, const double *mu, const double *var,
                     double xbar, double ss, double *nk, double *a, double *q) {
    double ll = estep2_impl(x, n, w, mu, var, xbar, ss, nk, a, q, 0);
    double g0 = xbar - mu[0], tot0 = ss + (double)n * g0 * g0;
    if (nk[0] < 1e-3 * (double)n || q[0] < 1e-6 * tot0)   /* derived sums too inexact: do it directly */
        ll = estep2_impl(x, n, w, mu, var, xbar, ss, nk, a, q, 1);
    return ll;
}

/* Mean and sum of squared deviations of x (n), about x[0] (no cancellation for any offset). */
static void moments(const double *x, int64_t n, double *xbar, double *ss) {
    double c = x[0], l = 0, s = 0;
#pragma omp simd reduction(+:l, s)
    for (int64_t i = 0; i < n; i++) { double e = x[i] - c; l += e; s += e * e; }
    *xbar = c + l / n;
    *ss = s - l * l / n;
}

/* General-K E-step over blocks of BLK points (log-sum-exp with one exp per point and component). */
static double estep(const double *x, int64_t n, int64_t K, const double *w, const double *mu,
                    const double *var, double *nk, double *a, double *q, double *buf) {
    double cst[KMAX], hp[KMAX];
    double *restrict L = buf, *restrict E = buf + K * BLK, *restrict M = E + K * BLK;
    double *restrict S = M + BLK;
    for (int64_t k = 0; k < K; k++) {
        cst[k] = logw(w[k]) - 0.5 * log(6.283185307179586 * var[k]);
        hp[k] = -0.5 / var[k];
        nk[k] = a[k] = q[k] = 0;
    }
    double ll = 0;
    for (int64_t b = 0; b < n; b += BLK) {
        int64_t nb = n - b < BLK ? n - b : BLK;
        const double *xb = x + b;
        for (int64_t k = 0; k < K; k++) {
            double m = mu[k], c = cst[k], h = hp[k];
#pragma omp simd
            for (int64_t i = 0; i < nb; i++) { double e = xb[i] - m; L[k * BLK + i] = c + h * e * e; }
        }
#pragma omp simd
        for (int64_t i = 0; i < nb; i++) { M[i] = L[i]; S[i] = 0; }
        for (int64_t k = 1; k < K; k++) {
#pragma omp simd
            for (int64_t i = 0; i < nb; i++) M[i] = L[k * BLK + i] > M[i] ? L[k * BLK + i] : M[i];
        }
        for (int64_t k = 0; k < K; k++) {
#pragma omp simd
            for (int64_t i = 0; i < nb; i++) {
                E[k * BLK + i] = exp_neg(L[k * BLK + i] - M[i]);
                S[i] += E[k * BLK + i];
            }
        }
        double lm = 0;
#pragma omp simd reduction(+:lm)
        for (int64_t i = 0; i < nb; i++) lm += M[i];
        ll += lm + log(prod(S, nb));
#pragma omp simd
        for (int64_t i = 0; i < nb; i++) S[i] = 1.0 / S[i];
        for (int64_t k = 0; k < K; k++) {
            double s0 = 0, s1 = 0, s2 = 0, m = mu[k];
#pragma omp simd reduction(+:s0, s1, s2)
            for (int64_t i = 0; i < nb; i++) {
                double r = E[k * BLK + i] * S[i], e = xb[i] - m, p = r * e;
                s0 += r; s1 += p; s2 += p * e;
            }
            nk[k] += s0; a[k] += s1; q[k] += s2;
        }
    }
    return ll;
}

/* Fit chains [s0, s1) of X (S, n): k-means++ and Lloyd start where fresh[s], then EM (Dempster
   et al. 1977) with scikit-learn's loop: stop once the mean log-likelihood moves by < tol.
   W, MU, V (S, K) hold the start (warm) and receive the fit; diag (S, 4): n_iter, converged,
   lower bound, degenerate. scratch: n + n / BLK + 2 (K + 1) BLK doubles. */
void gmm_fit1d(const double *X, int64_t s0, int64_t s1, const opts_t *o, const double *U,
               const uint8_t *fresh, double *W, double *MU, double *V, double *diag,
               double *scratch) {
    int64_t n = o->n, K = o->k, T = o->trials, nu = 1 + (K - 1) * T;
    double nk[KMAX], a[KMAX], q[KMAX], vr[KMAX], w0[KMAX], m0[KMAX], v0[KMAX];
    for (int64_t s = s0; s < s1; s++) {
        const double *x = X + s * n;
        double *w = W + s * K, *mu = MU + s * K, *var = V + s * K, *dg = diag + s * 4;
        for (int64_t k = 0; k < K; k++) { w0[k] = w[k]; m0[k] = mu[k]; v0[k] = var[k]; }
        double xbar = 0, ss = 0;
        if (fresh[s]) {
            double c[KMAX];
            double xv = kmeanspp(x, n, K, T, U + s * nu, scratch, scratch + n, c, &xbar);
            ss = xv * n;
            lloyd(x, n, K, c, scratch, o->km_max_iter, o->km_tol * xv, nk, a, q, mu);
            mstep(n, K, nk, a, q, w, mu, var, vr, 0, o);
        } else if (K == 2) {
            moments(x, n, &xbar, &ss);
        }
        double lb = -INFINITY;
        int64_t it = 0;
        int conv = 0;
        while (it < o->max_iter) {
            it++;
            double prev = lb;
            double ll = K == 2 ? estep2(x, n, w, mu, var, xbar, ss, nk, a, q)
                               : estep(x, n, K, w, mu, var, nk, a, q, scratch);
            mstep(n, K, nk, a, q, w, mu, var, vr, 1, o);
            lb = ll / n;
            if (fabs(lb - prev) < o->tol) { conv = 1; break; }
        }
        int degen = 0, finite = 1;
        double low = o->reg_covar > o->var_floor ? o->reg_covar : o->var_floor;
        for (int64_t k = 0; k < K; k++) {
            degen |= nk[k] < o->min_count || vr[k] < low;
            finite &= isfinite(w[k]) && isfinite(mu[k]) && isfinite(var[k]);
        }
        if (!finite) {   /* never hand on NaN: keep the previous fit and flag the chain */
            for (int64_t k = 0; k < K; k++) { w[k] = w0[k]; mu[k] = m0[k]; var[k] = v0[k]; }
            degen = 1;
        }
        dg[0] = (double)it; dg[1] = conv; dg[2] = lb; dg[3] = degen;
    }
}
