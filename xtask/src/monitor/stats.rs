//! Drift statistics, computed the way Evidently's default data-drift preset computes them with
//! scipy, so that a report from this tool and one from Evidently agree to rounding.
//!
//! Test choice (Evidently `_get_default_stattest`), with `n_values` the number of distinct
//! non-missing values over reference and current together:
//!
//! | reference rows | column | distinct values | test | drift when |
//! |---|---|---|---|---|
//! | ≤ 1000 | numerical | > 5 | two-sample K-S (`scipy.stats.ks_2samp`) | p < 0.05 |
//! | ≤ 1000 | numerical or categorical | 3.. | chi-square (`scipy.stats.chisquare`) | p < 0.05 |
//! | ≤ 1000 | numerical or categorical | ≤ 2 | two-proportion Z-test | p < 0.05 |
//! | > 1000 | numerical | > 5 | Wasserstein distance / reference std | ≥ 0.1 |
//! | > 1000 | otherwise | | Jensen–Shannon distance (natural log) | ≥ 0.1 |
//!
//! Missing values (null, NaN, ±inf) are dropped before testing, as Evidently does.
//! The p-value functions are ports of scipy's algorithms (`_ksstats.kolmogn`, the exact
//! lattice-path counts of `ks_2samp`, cephes `igamc` and `ndtr`); the tests compare them with
//! golden values scipy produced (`xtask/tests/golden/make_drift_goldens.py`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// References with at most this many rows get hypothesis tests; larger ones get distances.
pub const SMALL_REFERENCE_MAX_ROWS: usize = 1000;
/// A numerical column with at most this many distinct values is tested like a categorical one.
pub const FEW_VALUES_MAX: usize = 5;

/// How a column is declared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ColumnKind {
    /// A measured quantity: distances, durations, amounts, counts, predictions.
    Numerical,
    /// A label coded as a number, such as a taxi zone id.
    Categorical,
}

/// The statistical test applied to a column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StatTest {
    /// Two-sample Kolmogorov–Smirnov test; the score is its p-value.
    Ks,
    /// Pearson's chi-square test of current counts against reference proportions; p-value.
    ChiSquare,
    /// Two-proportion Z-test for columns with at most two values; p-value.
    Z,
    /// First Wasserstein distance divided by the reference's standard deviation.
    Wasserstein,
    /// Jensen–Shannon distance between the two value distributions.
    JensenShannon,
}

impl StatTest {
    /// Evidently's name for the test.
    pub fn name(self) -> &'static str {
        match self {
            Self::Ks => "ks",
            Self::ChiSquare => "chisquare",
            Self::Z => "z",
            Self::Wasserstein => "wasserstein",
            Self::JensenShannon => "jensenshannon",
        }
    }

    /// What the score is, for people.
    pub fn display_name(self) -> &'static str {
        match self {
            Self::Ks => "K-S p_value",
            Self::ChiSquare => "chi-square p_value",
            Self::Z => "Z-test p_value",
            Self::Wasserstein => "Wasserstein distance (normed)",
            Self::JensenShannon => "Jensen-Shannon distance",
        }
    }

    /// True when the score is a p-value (drift below the threshold), false for a distance
    /// (drift at or above it).
    pub fn is_p_value(self) -> bool {
        matches!(self, Self::Ks | Self::ChiSquare | Self::Z)
    }

    /// Evidently's default threshold: 0.05 for p-values, 0.1 for distances.
    pub fn default_threshold(self) -> f64 {
        if self.is_p_value() { 0.05 } else { 0.1 }
    }

    /// Whether a score means drift at a threshold.
    pub fn drifted(self, score: f64, threshold: f64) -> bool {
        if self.is_p_value() {
            score < threshold
        } else {
            score >= threshold
        }
    }

    /// Parses Evidently's name.
    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Ks,
            Self::ChiSquare,
            Self::Z,
            Self::Wasserstein,
            Self::JensenShannon,
        ]
        .into_iter()
        .find(|t| t.name() == s)
    }
}

/// The outcome of one column's test.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Drift {
    /// The test used.
    pub test: StatTest,
    /// Its score: a p-value or a distance.
    pub score: f64,
    /// The threshold applied.
    pub threshold: f64,
    /// Whether the column drifted.
    pub drifted: bool,
}

/// Keeps the values a test can use: drops NaN and infinities (Evidently replaces ±inf by NaN and
/// drops NaN before testing).
pub fn finite(values: &[f64]) -> Vec<f64> {
    values.iter().copied().filter(|v| v.is_finite()).collect()
}

/// Number of distinct values over both samples.
pub fn n_unique(reference: &[f64], current: &[f64]) -> usize {
    let mut all: Vec<f64> = reference.iter().chain(current).copied().collect();
    all.sort_by(f64::total_cmp);
    all.dedup();
    all.len()
}

/// Evidently's default test for a column, given its cleaned samples.
pub fn default_test(kind: ColumnKind, reference: &[f64], current: &[f64]) -> StatTest {
    let n_values = n_unique(reference, current);
    let few = n_values <= FEW_VALUES_MAX;
    if reference.len() <= SMALL_REFERENCE_MAX_ROWS {
        match kind {
            ColumnKind::Numerical if !few => StatTest::Ks,
            _ if n_values > 2 => StatTest::ChiSquare,
            _ => StatTest::Z,
        }
    } else {
        match kind {
            ColumnKind::Numerical if !few => StatTest::Wasserstein,
            _ => StatTest::JensenShannon,
        }
    }
}

/// Tests one column. Missing values must already be dropped (see [`finite`]); both samples must
/// be non-empty. `threshold` overrides the test's default.
pub fn column_drift(
    kind: ColumnKind,
    reference: &[f64],
    current: &[f64],
    threshold: Option<f64>,
) -> Drift {
    let test = default_test(kind, reference, current);
    let score = match test {
        StatTest::Ks => ks_2samp(reference, current).p_value,
        StatTest::ChiSquare => chi_stat_test(reference, current),
        StatTest::Z => z_stat_test(reference, current),
        StatTest::Wasserstein => wasserstein_norm(reference, current),
        StatTest::JensenShannon => jensenshannon_test(reference, current),
    };
    let threshold = threshold.unwrap_or_else(|| test.default_threshold());
    Drift {
        test,
        score,
        threshold,
        drifted: test.drifted(score, threshold),
    }
}

// ---------------------------------------------------------------------------------------------
// Summation and counting helpers.

/// numpy's pairwise summation (`np.sum` on a contiguous float64 array): blocks of 128 summed
/// with eight accumulators, halves above that. Matching it keeps sums within an ulp of scipy's.
pub fn pairwise_sum(a: &[f64]) -> f64 {
    let n = a.len();
    if n < 8 {
        a.iter().fold(-0.0, |s, x| s + x)
    } else if n <= 128 {
        let mut r = [0.0; 8];
        r.copy_from_slice(&a[..8]);
        let mut i = 8;
        while i < n - n % 8 {
            for j in 0..8 {
                r[j] += a[i + j];
            }
            i += 8;
        }
        let mut res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for x in &a[i..] {
            res += x;
        }
        res
    } else {
        let mut n2 = n / 2;
        n2 -= n2 % 8;
        pairwise_sum(&a[..n2]) + pairwise_sum(&a[n2..])
    }
}

/// Counts per distinct value, in value order.
fn value_counts(values: &[f64]) -> BTreeMap<u64, usize> {
    let mut counts = BTreeMap::new();
    for v in values {
        // Keys are ordered bit patterns, so -0.0 and 0.0 would differ: fold them as pandas does.
        *counts
            .entry(ordered_bits(if *v == 0.0 { 0.0 } else { *v }))
            .or_insert(0) += 1;
    }
    counts
}

/// A key whose integer order is the float order.
fn ordered_bits(v: f64) -> u64 {
    let b = v.to_bits();
    if b >> 63 == 1 { !b } else { b | (1 << 63) }
}

/// Counts of both samples over the union of their values (Evidently's `keys`).
fn joint_counts(reference: &[f64], current: &[f64]) -> (Vec<f64>, Vec<f64>) {
    let (r, c) = (value_counts(reference), value_counts(current));
    let mut keys: Vec<u64> = r.keys().chain(c.keys()).copied().collect();
    keys.sort_unstable();
    keys.dedup();
    let get = |m: &BTreeMap<u64, usize>, k: &u64| m.get(k).copied().unwrap_or(0) as f64;
    (
        keys.iter().map(|k| get(&r, k)).collect(),
        keys.iter().map(|k| get(&c, k)).collect(),
    )
}

fn sorted(values: &[f64]) -> Vec<f64> {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v
}

/// Number of elements of a sorted slice that are `<= x` (numpy `searchsorted(side='right')`).
fn count_le(sorted: &[f64], x: f64) -> usize {
    sorted.partition_point(|v| *v <= x)
}

// ---------------------------------------------------------------------------------------------
// Kolmogorov–Smirnov.

/// The two-sided two-sample K-S result.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KsResult {
    /// The largest distance between the two empirical CDFs.
    pub statistic: f64,
    /// The p-value.
    pub p_value: f64,
}

/// `scipy.stats.ks_2samp(a, b)` with its defaults: two-sided, `method='auto'` (exact when both
/// samples have at most 10,000 values, otherwise the asymptotic `kstwo` distribution).
pub fn ks_2samp(a: &[f64], b: &[f64]) -> KsResult {
    const MAX_AUTO_N: usize = 10_000;
    let (a, b) = (sorted(a), sorted(b));
    let (n1, n2) = (a.len(), b.len());
    assert!(n1 > 0 && n2 > 0, "ks_2samp needs two non-empty samples");
    let (mut max_s, mut min_s) = (f64::NEG_INFINITY, f64::INFINITY);
    for &x in a.iter().chain(&b) {
        let diff = count_le(&a, x) as f64 / n1 as f64 - count_le(&b, x) as f64 / n2 as f64;
        max_s = max_s.max(diff);
        min_s = min_s.min(diff);
    }
    let min_s = (-min_s).clamp(0.0, 1.0);
    let mut d = if min_s > max_s { min_s } else { max_s };
    let g = gcd(n1 as u64, n2 as u64);
    if n1.max(n2) <= MAX_AUTO_N {
        if let Some((d_exact, p)) = ks_2samp_exact(n1 as u64, n2 as u64, g, d) {
            return KsResult {
                statistic: d_exact,
                p_value: p.clamp(0.0, 1.0),
            };
        }
        // scipy falls back to the asymptotic distribution, with the rounded statistic.
        let lcm = (n1 as u64 / g) * n2 as u64;
        d = round_half_even(d * lcm as f64) / lcm as f64;
    }
    let (m, n) = if n1 >= n2 {
        (n1 as f64, n2 as f64)
    } else {
        (n2 as f64, n1 as f64)
    };
    let en = m * n / (m + n);
    let p = kstwo_sf(round_half_even(en) as u64, d);
    KsResult {
        statistic: d,
        p_value: p.clamp(0.0, 1.0),
    }
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// numpy's `np.round`: halves go to the even neighbour.
fn round_half_even(x: f64) -> f64 {
    x.round_ties_even()
}

/// scipy `_attempt_exact_2kssamp` (two-sided): `Some((rounded statistic, p))`, or `None` when
/// floating point overflowed and scipy would switch to the asymptotic method.
fn ks_2samp_exact(n1: u64, n2: u64, g: u64, d: f64) -> Option<(f64, f64)> {
    let lcm = (n1 / g) * n2;
    let h = round_half_even(d * lcm as f64) as u64;
    let d = h as f64 / lcm as f64;
    if h == 0 {
        return Some((d, 1.0));
    }
    let p = if n1 == n2 {
        prob_outside_square(n1, h)
    } else {
        outer_prob_inside_method(n1, n2, g, h)
    };
    (p.is_finite() && (0.0..=1.0).contains(&p)).then_some((d, p))
}

/// scipy `_compute_prob_outside_square`: P(D_{n,n} >= h/n), Horner-like to avoid cancellation.
fn prob_outside_square(n: u64, h: u64) -> f64 {
    let (n, h) = (n as i64, h as i64);
    let mut p = 0.0;
    let mut k = n / h;
    while k >= 0 {
        let mut p1 = 1.0;
        for j in 0..h {
            p1 = (n - k * h - j) as f64 * p1 / (n + k * h + j + 1) as f64;
        }
        p = p1 * (1.0 - p);
        k -= 1;
    }
    2.0 * p
}

/// scipy `_compute_outer_prob_inside_method` (Hodges' inside method, Viehmann's recursion for
/// 1 - p): the share of lattice paths that leave the band |x/m - y/n| < h / lcm(m, n).
fn outer_prob_inside_method(m: u64, n: u64, g: u64, h: u64) -> f64 {
    let (m, n) = if m < n {
        (n as i64, m as i64)
    } else {
        (m as i64, n as i64)
    };
    let (g, h) = (g as i64, h as i64);
    let (mg, ng) = (m / g, n / g);
    let mut minj: i64 = 0;
    let mut maxj: i64 = ((h as f64 / mg as f64).ceil() as i64).min(n + 1);
    let mut curlen = maxj - minj;
    let len_a = (2 * maxj + 2).min(n + 1) as usize;
    let mut a = vec![1.0f64; len_a];
    for v in a.iter_mut().take(maxj as usize).skip(minj as usize) {
        *v = 0.0;
    }
    for i in 1..=m {
        let (lastminj, lastlen) = (minj, curlen);
        minj = ((((ng * i - h) as f64 / mg as f64).floor() as i64) + 1).max(0);
        minj = minj.min(n);
        maxj = (((ng * i + h) as f64 / mg as f64).ceil() as i64).min(n + 1);
        if maxj <= minj {
            return 1.0;
        }
        let mut val = if minj == 0 { 0.0 } else { 1.0 };
        for jj in 0..(maxj - minj) {
            let j = jj + minj;
            val = (a[(jj + minj - lastminj) as usize] * i as f64 + val * j as f64) / (i + j) as f64;
            a[jj as usize] = val;
        }
        curlen = maxj - minj;
        if lastlen > curlen {
            let start = (maxj - minj) as usize;
            let end = (start + (lastlen - curlen) as usize).min(a.len());
            for v in &mut a[start..end] {
                *v = 1.0;
            }
        }
    }
    a[(maxj - minj - 1) as usize]
}

/// Survival function of the two-sided one-sample K-S statistic D_n: `scipy.stats.kstwo.sf(x, n)`,
/// a port of scipy's `_ksstats._kolmogn` (Simard & L'Ecuyer's choice of methods).
pub fn kstwo_sf(n: u64, x: f64) -> f64 {
    let clip = |p: f64| p.clamp(0.0, 1.0);
    if n == 0 || x.is_nan() {
        return f64::NAN;
    }
    if x >= 1.0 {
        return 0.0;
    }
    if x <= 0.0 {
        return 1.0;
    }
    let nf = n as f64;
    let t = nf * x;
    if t <= 1.0 {
        // Ruben–Gambino: 1/2n <= x <= 1/n.
        if t <= 0.5 {
            return 1.0;
        }
        let prob = if n <= 140 {
            (1..=n)
                .map(|i| i as f64 * (1.0 / nf) * (2.0 * t - 1.0))
                .product::<f64>()
        } else {
            (log_nfactorial_div_n_pow_n(nf) + nf * (2.0 * t - 1.0).ln()).exp()
        };
        return clip(1.0 - prob);
    }
    if t >= nf - 1.0 {
        return clip(2.0 * (1.0 - x).powi(n as i32));
    }
    if x >= 0.5 {
        return clip(2.0 * smirnov_sf(n, x));
    }
    let nxsquared = t * x;
    if n <= 140 {
        if nxsquared <= 0.754693 {
            return clip(1.0 - kolmogn_dmtw(n, x));
        }
        if nxsquared <= 4.0 {
            return clip(1.0 - kolmogn_pomeranz(n, x));
        }
        return clip(2.0 * smirnov_sf(n, x));
    }
    if nxsquared >= 370.0 {
        return 0.0;
    }
    if nxsquared >= 2.2 {
        return clip(2.0 * smirnov_sf(n, x));
    }
    let cdf = if nxsquared >= 18.0 {
        1.0
    } else if n <= 100_000 && nf * x.powf(1.5) <= 1.4 {
        kolmogn_dmtw(n, x)
    } else {
        kolmogn_pelz_good(n, x)
    };
    clip(1.0 - cdf)
}

// The digits as scipy writes them, so that the two can be compared by eye.
#[allow(clippy::excessive_precision)]
const STIRLING_COEFFS: [f64; 8] = [
    -2.955065359477124183e-2,
    6.4102564102564102564e-3,
    -1.9175269175269175269e-3,
    8.4175084175084175084e-4,
    -5.952380952380952381e-4,
    7.9365079365079365079e-4,
    -2.7777777777777777778e-3,
    8.3333333333333333333e-2,
];

/// log(n! / n^n) by Stirling's series.
fn log_nfactorial_div_n_pow_n(n: f64) -> f64 {
    let rn = 1.0 / n;
    let poly = STIRLING_COEFFS
        .iter()
        .fold(0.0, |acc, c| acc * (rn / n) + c);
    n.ln() / 2.0 - n + (2.0 * std::f64::consts::PI).ln() / 2.0 + rn * poly
}

/// Rescaling step for the matrix methods, as in scipy (2^128).
const EP128: f64 = 3.402_823_669_209_385e38;
const EM128: f64 = 1.0 / EP128;

/// Pr(D_n <= d) by Durbin's matrix algorithm as Marsaglia, Tsang and Wang compute it.
fn kolmogn_dmtw(n: u64, d: f64) -> f64 {
    if d >= 1.0 {
        return 1.0;
    }
    let nd = n as f64 * d;
    if nd <= 0.5 {
        return 0.0;
    }
    let k = nd.ceil() as usize;
    let h = k as f64 - nd;
    let m = 2 * k - 1;
    let mut hm = vec![0.0f64; m * m];
    let at = |i: usize, j: usize| i * m + j;
    let mut v: Vec<f64> = (1..=m).map(|j| 1.0 - h.powi(j as i32)).collect();
    let mut w = vec![0.0f64; m];
    let mut fac = 1.0f64;
    for j in 1..=m {
        w[j - 1] = fac;
        fac /= j as f64;
        v[j - 1] *= fac;
    }
    let tt = (2.0 * h - 1.0).max(0.0).powi(m as i32) - 2.0 * h.powi(m as i32);
    v[m - 1] = (1.0 + tt) * fac;
    for i in 1..m {
        for r in (i - 1)..m {
            hm[at(r, i)] = w[r - (i - 1)];
        }
    }
    for r in 0..m {
        hm[at(r, 0)] = v[r];
    }
    for c in 0..m {
        hm[at(m - 1, c)] = v[m - 1 - c];
    }
    let matmul = |a: &[f64], b: &[f64]| -> Vec<f64> {
        let mut out = vec![0.0; m * m];
        for i in 0..m {
            for l in 0..m {
                let ail = a[i * m + l];
                if ail != 0.0 {
                    for j in 0..m {
                        out[i * m + j] += ail * b[l * m + j];
                    }
                }
            }
        }
        out
    };
    let mut hpwr: Vec<f64> = (0..m * m)
        .map(|i| if i / m == i % m { 1.0 } else { 0.0 })
        .collect();
    let mut nn = n;
    let (mut expnt, mut hexpnt): (i32, i32) = (0, 0);
    while nn > 0 {
        if nn % 2 == 1 {
            hpwr = matmul(&hpwr, &hm);
            expnt += hexpnt;
        }
        hm = matmul(&hm, &hm);
        hexpnt *= 2;
        if hm[at(k - 1, k - 1)].abs() > EP128 {
            for x in &mut hm {
                *x /= EP128;
            }
            hexpnt += 128;
        }
        nn /= 2;
    }
    let mut p = hpwr[at(k - 1, k - 1)];
    for i in 1..=n {
        p = i as f64 * p / n as f64;
        if p.abs() < EM128 {
            p *= EP128;
            expnt -= 128;
        }
    }
    if expnt != 0 {
        p = ldexp(p, expnt);
    }
    p.clamp(0.0, 1.0)
}

fn ldexp(x: f64, e: i32) -> f64 {
    // Two steps keep the intermediate power of two representable.
    let half = e / 2;
    x * 2f64.powi(half) * 2f64.powi(e - half)
}

/// scipy `_pomeranz_compute_j1j2`.
fn pomeranz_j1j2(i: i64, n: i64, ll: i64, ceilf: i64, roundf: i64) -> (i64, i64) {
    let (j1, j2) = if i == 0 {
        (-ll - ceilf - 1, ll + ceilf - 1)
    } else {
        let (ip1div2, ip1mod2) = ((i + 1).div_euclid(2), (i + 1).rem_euclid(2));
        if ip1mod2 == 0 {
            if ip1div2 == n + 1 {
                (n - ll - ceilf - 1, n + ll + ceilf - 1)
            } else {
                (ip1div2 - 1 - ll - roundf - 1, ip1div2 + ll - 1 + ceilf - 1)
            }
        } else {
            (ip1div2 - 1 - ll - 1, ip1div2 + ll + roundf - 1)
        }
    };
    ((j1 + 2).max(0), j2.min(n))
}

/// Pr(D_n <= x) by Pomeranz's recursion.
fn kolmogn_pomeranz(n: u64, x: f64) -> f64 {
    let ni = n as i64;
    let t = n as f64 * x;
    let ll = t.floor() as i64;
    let f = t - ll as f64;
    let g = f.min(1.0 - f);
    let ceilf = i64::from(f > 0.0);
    let roundf = i64::from(f > 0.5);
    let npwrs = (2 * (ll + 1)) as usize;
    let mut gpower = vec![0.0; npwrs];
    let mut twogpower = vec![0.0; npwrs];
    let mut onem2gpower = vec![0.0; npwrs];
    gpower[0] = 1.0;
    twogpower[0] = 1.0;
    onem2gpower[0] = 1.0;
    let nf = n as f64;
    let (g_over_n, two_g_over_n, one_minus_two_g_over_n) =
        (g / nf, 2.0 * g / nf, (1.0 - 2.0 * g) / nf);
    for m in 1..npwrs {
        gpower[m] = gpower[m - 1] * g_over_n / m as f64;
        twogpower[m] = twogpower[m - 1] * two_g_over_n / m as f64;
        onem2gpower[m] = onem2gpower[m - 1] * one_minus_two_g_over_n / m as f64;
    }
    let mut v0 = vec![0.0; npwrs];
    let mut v1 = vec![0.0; npwrs];
    v1[0] = 1.0;
    let (mut v0s, mut v1s): (i64, i64) = (0, 0);
    let mut expnt: i32 = 0;
    let (mut j1, mut _j2) = pomeranz_j1j2(0, ni, ll, ceilf, roundf);
    for i in 1..(2 * ni + 2) {
        let k1 = j1;
        std::mem::swap(&mut v0, &mut v1);
        std::mem::swap(&mut v0s, &mut v1s);
        v1.fill(0.0);
        let (nj1, nj2) = pomeranz_j1j2(i, ni, ll, ceilf, roundf);
        j1 = nj1;
        _j2 = nj2;
        let pwrs = if i == 1 || i == 2 * ni + 1 {
            &gpower
        } else if i % 2 == 1 {
            &twogpower
        } else {
            &onem2gpower
        };
        let ln2 = nj2 - k1 + 1;
        if ln2 > 0 {
            let ln2 = ln2 as usize;
            let start = (k1 - v0s) as usize;
            // numpy slices stop at the end of the array; so do these.
            let a = &v0[start.min(npwrs)..(start + ln2).min(npwrs)];
            let b = &pwrs[..ln2.min(npwrs)];
            let conv = convolve(a, b);
            let conv_start = (j1 - k1) as usize;
            let conv_len = (nj2 - j1 + 1).max(0) as usize;
            for (idx, v) in v1.iter_mut().take(conv_len).enumerate() {
                *v = conv.get(conv_start + idx).copied().unwrap_or(0.0);
            }
            let vmax = v1.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            if 0.0 < vmax && vmax < EM128 {
                for x in &mut v1 {
                    *x *= EP128;
                }
                expnt -= 128;
            }
            v1s = v0s + j1 - k1;
        }
    }
    let mut ans = v1[(ni - v1s) as usize];
    for m in 1..=n {
        if ans.abs() > EP128 {
            ans *= EM128;
            expnt += 128;
        }
        ans *= m as f64;
    }
    if expnt != 0 {
        ans = ldexp(ans, expnt);
    }
    ans.clamp(0.0, 1.0)
}

/// Full discrete convolution (`np.convolve(a, b)`).
fn convolve(a: &[f64], b: &[f64]) -> Vec<f64> {
    if a.is_empty() || b.is_empty() {
        return Vec::new();
    }
    let mut out = vec![0.0; a.len() + b.len() - 1];
    for (i, x) in a.iter().enumerate() {
        for (j, y) in b.iter().enumerate() {
            out[i + j] += x * y;
        }
    }
    out
}

/// Pr(D_n <= x) by the Pelz–Good asymptotic series.
fn kolmogn_pelz_good(n: u64, x: f64) -> f64 {
    use std::f64::consts::PI;
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let sqrt2pi = (2.0 * PI).sqrt();
    let (pi2, pi4, pi6) = (PI * PI, PI.powi(4), PI.powi(6));
    let z = (n as f64).sqrt() * x;
    let (z2, z3, z4, z6) = (z * z, z.powi(3), z.powi(4), z.powi(6));
    let qlog = -pi2 / 8.0 / z2;
    if qlog < -708.0 {
        return 0.0;
    }
    let q = qlog.exp();
    let (k1a, k1b) = (-z2, pi2 / 4.0);
    let k2a = 6.0 * z6 + 2.0 * z4;
    let k2b = (2.0 * z4 - 5.0 * z2) * pi2 / 4.0;
    let k2c = pi4 * (1.0 - 2.0 * z2) / 16.0;
    let k3d = pi6 * (5.0 - 30.0 * z2) / 64.0;
    let k3c = pi4 * (-60.0 * z2 + 212.0 * z4) / 16.0;
    let k3b = pi2 * (135.0 * z4 - 96.0 * z6) / 4.0;
    let k3a = -30.0 * z6 - 90.0 * z.powi(8);
    let mut k = [0.0f64; 4];
    let maxk = (16.0 * z / PI).ceil() as i64;
    for kk in (1..=maxk).rev() {
        let m = (2 * kk - 1) as f64;
        let (m2, m4, m6) = (m * m, m.powi(4), m.powi(6));
        let qpower = q.powf((8 * kk) as f64);
        let coeffs = [
            1.0,
            k1a + k1b * m2,
            k2a + k2b * m2 + k2c * m4,
            k3a + k3b * m2 + k3c * m4 + k3d * m6,
        ];
        for (acc, c) in k.iter_mut().zip(coeffs) {
            *acc = *acc * qpower + c;
        }
    }
    let div = [z, 6.0 * z4, 72.0 * z.powi(7), 6480.0 * z.powi(10)];
    for (acc, d) in k.iter_mut().zip(div) {
        *acc = *acc * q * sqrt2pi / d;
    }
    let q = (-pi2 / 2.0 / z2).exp();
    let sqrt3z = 3f64.sqrt() * z;
    let (mut k2extra, mut k3extra) = (0.0, 0.0);
    for kk in (1..=maxk).rev() {
        let ks = kk as f64;
        let ksq = ks * ks;
        let qp = q.powf(ksq);
        k2extra += ksq * qp;
        let kspi = PI * ks;
        k3extra += (sqrt3z + kspi) * (sqrt3z - kspi) * ksq * qp;
    }
    k[2] += k2extra * pi2 * sqrt2pi / (-36.0 * z3);
    k[3] += k3extra * pi2 * sqrt2pi / (216.0 * z6);
    let nf = n as f64;
    for (i, acc) in k.iter_mut().enumerate() {
        *acc /= nf.powf(i as f64 / 2.0);
    }
    k.iter().sum()
}

/// Survival function of the one-sided statistic D_n^+ (scipy.special.smirnov), by the
/// Birnbaum–Tingey sum. Its terms are positive, so summing them in log space is accurate.
pub fn smirnov_sf(n: u64, x: f64) -> f64 {
    const MINLOG: f64 = -7.083_964_185_322_641e2;
    if x.is_nan() || n == 0 || !(0.0..=1.0).contains(&x) {
        return f64::NAN;
    }
    if n == 1 {
        return 1.0 - x;
    }
    if x == 0.0 {
        return 1.0;
    }
    if x == 1.0 {
        return 0.0;
    }
    let nf = n as f64;
    // n*x as an unevaluated sum, so that 1 - x - v/n is computed without cancellation.
    let nx_hi = nf * x;
    let nx_lo = nf.mul_add(x, -nx_hi);
    let mut nxfl = nx_hi.floor();
    let mut alpha = (nx_hi - nxfl) + nx_lo;
    if alpha < 0.0 {
        nxfl -= 1.0;
        alpha += 1.0;
    }
    if alpha >= 1.0 {
        nxfl += 1.0;
        alpha = 0.0;
    }
    if nxfl == 0.0 || (nxfl == 1.0 && alpha == 0.0) {
        let cdf = x * (1.0 + x).powf(nf - 1.0);
        return 1.0 - cdf;
    }
    if -2.0 * nf * x * x < MINLOG {
        return 0.0;
    }
    if nxfl >= nf - 1.0 {
        return (1.0 - x).powf(nf);
    }
    // v runs while 1 - x - v/n > 0.
    let last = (nf - nxfl - 1.0).max(0.0) as u64;
    let mut logs = Vec::with_capacity(last as usize + 1);
    let mut log_c = 0.0f64; // log C(n, v)
    for v in 0..=last {
        let vf = v as f64;
        if v > 0 {
            log_c += ((nf - vf + 1.0) / vf).ln();
        }
        // 1 - x - v/n = ((n - v) - n x) / n ; x + v/n = (n x + v) / n.
        let t2 = (((nf - vf) - nx_hi) - nx_lo) / nf;
        if t2 <= 0.0 {
            break;
        }
        let t1 = (nx_hi + vf) / nf;
        logs.push(log_c + (vf - 1.0) * t1.ln() + (nf - vf) * t2.ln());
    }
    let top = logs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let sum: f64 = logs.iter().map(|l| (l - top).exp()).sum();
    // In logs, so that a tiny survival probability does not underflow before the last step.
    (top + sum.ln() + x.ln()).exp().clamp(0.0, 1.0)
}

// ---------------------------------------------------------------------------------------------
// Chi-square and Z tests.

/// Evidently `chi_stat_test`: `scipy.stats.chisquare` of the current counts against the
/// reference proportions scaled to the current size, over the union of values. A value the
/// reference never had makes the statistic infinite and the p-value 0.
pub fn chi_stat_test(reference: &[f64], current: &[f64]) -> f64 {
    let (r, c) = joint_counts(reference, current);
    let k_norm = current.len() as f64 / reference.len() as f64;
    let f_exp: Vec<f64> = r.iter().map(|x| x * k_norm).collect();
    chisquare(&c, &f_exp).1
}

/// `scipy.stats.chisquare(f_obs, f_exp)`: Pearson's statistic and its p-value (k - 1 degrees of
/// freedom).
pub fn chisquare(f_obs: &[f64], f_exp: &[f64]) -> (f64, f64) {
    let terms: Vec<f64> = f_obs
        .iter()
        .zip(f_exp)
        .map(|(o, e)| (o - e).powi(2) / e)
        .collect();
    let stat = pairwise_sum(&terms);
    let df = f_obs.len() as f64 - 1.0;
    (stat, chi2_sf(stat, df))
}

/// Survival function of the chi-square distribution (`scipy.stats.chi2.sf`, cephes `chdtrc`).
pub fn chi2_sf(x: f64, df: f64) -> f64 {
    if x.is_nan() || df.is_nan() || df < 0.0 {
        return f64::NAN;
    }
    if x < 0.0 {
        return 1.0;
    }
    gamma_q(df / 2.0, x / 2.0)
}

/// The regularized upper incomplete gamma function Q(a, x), by its power series (x < a + 1,
/// through P = 1 - Q) or Lentz's continued fraction (elsewhere).
pub fn gamma_q(a: f64, x: f64) -> f64 {
    if a.is_nan() || x.is_nan() || x < 0.0 || a < 0.0 {
        return f64::NAN;
    }
    if a == 0.0 {
        return if x > 0.0 { 0.0 } else { f64::NAN };
    }
    if x == 0.0 {
        return 1.0;
    }
    if x.is_infinite() {
        return 0.0;
    }
    let log_prefactor = a * x.ln() - x - libm::lgamma(a);
    if x < a + 1.0 {
        let mut ap = a;
        let mut del = 1.0 / a;
        let mut sum = del;
        for _ in 0..100_000 {
            ap += 1.0;
            del *= x / ap;
            sum += del;
            if del.abs() < sum.abs() * f64::EPSILON * 0.5 {
                break;
            }
        }
        1.0 - sum * log_prefactor.exp()
    } else {
        const TINY: f64 = 1e-300;
        let mut b = x + 1.0 - a;
        let mut c = 1.0 / TINY;
        let mut d = 1.0 / b;
        let mut h = d;
        for i in 1..100_000 {
            let an = -(i as f64) * (i as f64 - a);
            b += 2.0;
            d = an * d + b;
            if d.abs() < TINY {
                d = TINY;
            }
            c = b + an / c;
            if c.abs() < TINY {
                c = TINY;
            }
            d = 1.0 / d;
            let del = d * c;
            h *= del;
            if (del - 1.0).abs() < f64::EPSILON * 0.5 {
                break;
            }
        }
        (log_prefactor.exp() * h).clamp(0.0, 1.0)
    }
}

/// The standard normal CDF (`scipy.special.ndtr`).
pub fn ndtr(a: f64) -> f64 {
    let x = a * std::f64::consts::FRAC_1_SQRT_2;
    let z = x.abs();
    if z < std::f64::consts::FRAC_1_SQRT_2 {
        0.5 + 0.5 * libm::erf(x)
    } else {
        let y = 0.5 * libm::erfc(z);
        if x > 0.0 { 1.0 - y } else { y }
    }
}

/// Evidently `z_stat_test`: the two-proportion Z-test of "is the first value" between the
/// samples, p = 2 (1 - Φ(|z|)). One identical value on both sides gives p = 1.
pub fn z_stat_test(reference: &[f64], current: &[f64]) -> f64 {
    let (r, c) = joint_counts(reference, current);
    if r.len() == 1 {
        return 1.0;
    }
    let (n1, n2) = (reference.len() as f64, current.len() as f64);
    // Shares of the values other than the first (smallest) one.
    let p1 = (n1 - r[0]) / n1;
    let p2 = (n2 - c[0]) / n2;
    let p = (p1 * n1 + p2 * n2) / (n1 + n2);
    let z = (p1 - p2) / (p * (1.0 - p) * (1.0 / n1 + 1.0 / n2)).sqrt();
    2.0 * (1.0 - ndtr(z.abs()))
}

// ---------------------------------------------------------------------------------------------
// Distances.

/// The population standard deviation (`np.std`, ddof = 0).
pub fn std_pop(values: &[f64]) -> f64 {
    let n = values.len() as f64;
    let mean = pairwise_sum(values) / n;
    let sq: Vec<f64> = values.iter().map(|v| (v - mean) * (v - mean)).collect();
    (pairwise_sum(&sq) / n).sqrt()
}

/// `scipy.stats.wasserstein_distance(u, v)`: the area between the two empirical CDFs.
pub fn wasserstein_distance(u: &[f64], v: &[f64]) -> f64 {
    let (us, vs) = (sorted(u), sorted(v));
    let mut all: Vec<f64> = us.iter().chain(&vs).copied().collect();
    all.sort_by(f64::total_cmp);
    let (nu, nv) = (us.len() as f64, vs.len() as f64);
    let terms: Vec<f64> = all
        .windows(2)
        .map(|w| {
            let (ucdf, vcdf) = (
                count_le(&us, w[0]) as f64 / nu,
                count_le(&vs, w[0]) as f64 / nv,
            );
            (ucdf - vcdf).abs() * (w[1] - w[0])
        })
        .collect();
    pairwise_sum(&terms)
}

/// Evidently `wasserstein_stat_test`: the Wasserstein distance divided by the reference's
/// standard deviation (at least 0.001).
pub fn wasserstein_norm(reference: &[f64], current: &[f64]) -> f64 {
    let norm = std_pop(reference).max(0.001);
    wasserstein_distance(reference, current) / norm
}

/// `scipy.spatial.distance.jensenshannon(p, q)` with the natural logarithm; the inputs are
/// normalised to sum to 1 first.
pub fn jensenshannon(p: &[f64], q: &[f64]) -> f64 {
    let (sp, sq) = (pairwise_sum(p), pairwise_sum(q));
    let p: Vec<f64> = p.iter().map(|x| x / sp).collect();
    let q: Vec<f64> = q.iter().map(|x| x / sq).collect();
    let m: Vec<f64> = p.iter().zip(&q).map(|(a, b)| (a + b) / 2.0).collect();
    let left: Vec<f64> = p.iter().zip(&m).map(|(a, b)| rel_entr(*a, *b)).collect();
    let right: Vec<f64> = q.iter().zip(&m).map(|(a, b)| rel_entr(*a, *b)).collect();
    let js = pairwise_sum(&left) + pairwise_sum(&right);
    (js / 2.0).sqrt()
}

/// `scipy.special.rel_entr`.
fn rel_entr(x: f64, y: f64) -> f64 {
    if x > 0.0 && y > 0.0 {
        x * (x / y).ln()
    } else if x == 0.0 && y >= 0.0 {
        0.0
    } else {
        f64::INFINITY
    }
}

/// Evidently `jensenshannon_stat_test` for categorical data (and numerical columns with few
/// values): the distance between the value shares of the two samples.
pub fn jensenshannon_test(reference: &[f64], current: &[f64]) -> f64 {
    let (r, c) = joint_counts(reference, current);
    let (nr, nc) = (reference.len() as f64, current.len() as f64);
    let rp: Vec<f64> = r.iter().map(|x| x / nr).collect();
    let cp: Vec<f64> = c.iter().map(|x| x / nc).collect();
    jensenshannon(&rp, &cp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_samples_do_not_drift_under_any_test() {
        let small: Vec<f64> = (0..100).map(|i| (i % 17) as f64).collect();
        let large: Vec<f64> = (0..3000).map(|i| (i % 17) as f64).collect();
        for (kind, data) in [
            (ColumnKind::Numerical, &small),
            (ColumnKind::Numerical, &large),
        ] {
            let d = column_drift(kind, data, data, None);
            assert!(!d.drifted, "{d:?}");
        }
        assert_eq!(ks_2samp(&small, &small).statistic, 0.0);
        assert_eq!(wasserstein_norm(&large, &large), 0.0);
        assert_eq!(jensenshannon_test(&large, &large), 0.0);
    }

    #[test]
    fn test_choice_follows_evidently_size_and_cardinality_rules() {
        let many: Vec<f64> = (0..500).map(f64::from).collect();
        let three: Vec<f64> = (0..500).map(|i| f64::from(i % 3)).collect();
        let two: Vec<f64> = (0..500).map(|i| f64::from(i % 2)).collect();
        let big: Vec<f64> = (0..1001).map(f64::from).collect();
        assert_eq!(
            default_test(ColumnKind::Numerical, &many, &many),
            StatTest::Ks
        );
        assert_eq!(
            default_test(ColumnKind::Numerical, &three, &three),
            StatTest::ChiSquare
        );
        assert_eq!(default_test(ColumnKind::Numerical, &two, &two), StatTest::Z);
        assert_eq!(
            default_test(ColumnKind::Categorical, &many, &many),
            StatTest::ChiSquare
        );
        assert_eq!(
            default_test(ColumnKind::Numerical, &big, &big),
            StatTest::Wasserstein
        );
        assert_eq!(
            default_test(ColumnKind::Categorical, &big, &big),
            StatTest::JensenShannon
        );
        assert_eq!(
            default_test(
                ColumnKind::Numerical,
                &[three.clone(), three.clone(), three].concat(),
                &two
            ),
            StatTest::JensenShannon
        );
    }

    #[test]
    fn wasserstein_of_a_shift_is_the_shift() {
        let a = [0.0, 1.0, 2.0, 3.0];
        let b = [0.5, 1.5, 2.5, 3.5];
        assert!((wasserstein_distance(&a, &b) - 0.5).abs() < 1e-15);
    }

    #[test]
    fn disjoint_distributions_have_js_distance_sqrt_ln2() {
        let d = jensenshannon(&[1.0, 0.0], &[0.0, 1.0]);
        assert!((d - std::f64::consts::LN_2.sqrt()).abs() < 1e-15);
    }

    #[test]
    fn chi_square_sf_matches_closed_form_for_two_degrees_of_freedom() {
        // For df = 2 the survival function is exp(-x/2).
        for x in [0.1, 1.0, 5.0, 40.0, 300.0] {
            let want = (-x / 2.0f64).exp();
            assert!((chi2_sf(x, 2.0) - want).abs() <= 1e-13 * want, "x={x}");
        }
    }

    #[test]
    fn a_category_the_reference_never_had_gives_p_zero() {
        let r = [1.0, 1.0, 2.0, 2.0, 3.0];
        let c = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(chi_stat_test(&r, &c), 0.0);
    }

    #[test]
    fn pairwise_sum_matches_plain_sum_of_integers() {
        let v: Vec<f64> = (1..=1000).map(f64::from).collect();
        assert_eq!(pairwise_sum(&v), 500_500.0);
    }
}
