#!/usr/bin/env python3
"""Golden values for `cargo xtask monitor`'s drift statistics, computed with scipy.

The column tests follow Evidently's default data-drift preset (legacy stattests package):
`_get_default_stattest` picks the test, and `_ks_stat_test`, `_chi_stat_test`, `_z_stat_test`,
`_wasserstein_distance_norm` and `_jensenshannon` compute the scores. Their bodies are restated
here on pandas Series (Evidently itself is not installed: only numpy, scipy and pandas are
needed), so that the Rust port is checked against the same scipy calls.

Samples are drawn with numpy's default_rng from fixed seeds, rounded to 3 decimals (so that ties
occur, as in real data) and written into the JSON next to the results: the Rust tests read
exactly these samples.

Run with the reference venv:
    python3 -m venv ~/.cache/taxi-duration/venvs/reference
    ~/.cache/taxi-duration/venvs/reference/bin/pip install -r ../shared/reference/requirements.txt
    ~/.cache/taxi-duration/venvs/reference/bin/python xtask/tests/golden/make_drift_goldens.py
"""

import json
import pathlib

import numpy as np
import pandas as pd
import scipy
from scipy import stats
from scipy.spatial import distance

SEED = 20260213
OUT = pathlib.Path(__file__).with_name("drift_goldens.json")


# --- Evidently's default test choice and tests, restated -------------------------------------

def default_stattest(reference: pd.Series, current: pd.Series, kind: str) -> str:
    n_values = pd.concat([reference, current]).nunique()
    if reference.shape[0] <= 1000:
        if kind == "numerical" and n_values > 5:
            return "ks"
        return "chisquare" if n_values > 2 else "z"
    if kind == "numerical" and n_values > 5:
        return "wasserstein"
    return "jensenshannon"


def keys_of(reference: pd.Series, current: pd.Series) -> list:
    return list(set(reference.dropna().unique()) | set(current.dropna().unique()))


def ks_stat_test(reference, current):
    return stats.ks_2samp(reference, current)[1]


def chi_stat_test(reference, current):
    keys = keys_of(reference, current)
    ref_feature_dict = {**dict.fromkeys(keys, 0), **dict(reference.value_counts())}
    current_feature_dict = {**dict.fromkeys(keys, 0), **dict(current.value_counts())}
    k_norm = current.shape[0] / reference.shape[0]
    f_exp = [ref_feature_dict[key] * k_norm for key in keys]
    f_obs = [current_feature_dict[key] for key in keys]
    with np.errstate(divide="ignore", invalid="ignore"):
        return stats.chisquare(f_obs, f_exp)[1]


def z_stat_test(reference, current):
    if reference.nunique() == 1 and current.nunique() == 1 and reference.unique()[0] == current.unique()[0]:
        return 1.0
    keys = sorted(keys_of(reference, current))
    ref = reference.apply(lambda x, key=keys[0]: 0 if x == key else 1)
    cur = current.apply(lambda x, key=keys[0]: 0 if x == key else 1)
    n1, n2 = len(ref), len(cur)
    p1, p2 = float(sum(ref)) / n1, float(sum(cur)) / n2
    p = float(p1 * n1 + p2 * n2) / (n1 + n2)
    z = (p1 - p2) / np.sqrt(p * (1 - p) * (1.0 / n1 + 1.0 / n2))
    return 2 * (1 - stats.norm.cdf(np.abs(z)))


def wasserstein_stat_test(reference, current):
    norm = max(np.std(reference), 0.001)
    return stats.wasserstein_distance(reference, current) / norm


def jensenshannon_stat_test(reference, current):
    # get_binned_data(..., feel_zeroes=False) for categorical data and numerical data with
    # at most 20 reference values: shares over the union of values.
    keys = keys_of(reference, current)
    ref_feature_dict = {**dict.fromkeys(keys, 0), **dict(reference.value_counts())}
    current_feature_dict = {**dict.fromkeys(keys, 0), **dict(current.value_counts())}
    reference_percents = np.array([ref_feature_dict[key] for key in keys]) / len(reference)
    current_percents = np.array([current_feature_dict[key] for key in keys]) / len(current)
    return distance.jensenshannon(reference_percents, current_percents)


TESTS = {
    "ks": (ks_stat_test, 0.05, True),
    "chisquare": (chi_stat_test, 0.05, True),
    "z": (z_stat_test, 0.05, True),
    "wasserstein": (wasserstein_stat_test, 0.1, False),
    "jensenshannon": (jensenshannon_stat_test, 0.1, False),
}


def column_case(name, kind, reference, current, note):
    reference = np.round(np.asarray(reference, dtype=float), 3)
    current = np.round(np.asarray(current, dtype=float), 3)
    r, c = pd.Series(reference), pd.Series(current)
    test = default_stattest(r, c, kind)
    func, threshold, is_p = TESTS[test]
    score = float(func(r, c))
    drifted = bool(score < threshold) if is_p else bool(score >= threshold)
    case = {
        "name": name,
        "note": note,
        "kind": kind,
        "reference": reference.tolist(),
        "current": current.tolist(),
        "test": test,
        "score": score,
        "drifted": drifted,
    }
    if test == "ks":
        res = stats.ks_2samp(reference, current)
        case["ks_statistic"] = float(res.statistic)
    return case


def main():
    cases = []
    rng = np.random.default_rng(SEED)
    normal = rng.normal
    # K-S, exact method, n1 != n2 (Hodges' inside method).
    cases.append(column_case("ks_exact_no_drift", "numerical", normal(10, 2, 300), normal(10, 2, 250),
                             "exact K-S, unequal sizes, same distribution"))
    cases.append(column_case("ks_exact_drift", "numerical", normal(10, 2, 500), normal(10.8, 2, 400),
                             "exact K-S, unequal sizes, shifted mean"))
    # K-S, exact method, n1 == n2 (the square formula).
    cases.append(column_case("ks_exact_equal_sizes", "numerical", normal(0, 1, 200), normal(0.25, 1, 200),
                             "exact K-S, equal sizes"))
    # K-S, asymptotic: the current sample has more than 10,000 values.
    cases.append(column_case("ks_asymp_no_drift", "numerical", rng.lognormal(1, 0.5, 800),
                             rng.lognormal(1, 0.5, 12000), "asymptotic K-S (kstwo, en ~ 750), no drift"))
    cases.append(column_case("ks_asymp_drift", "numerical", rng.lognormal(1, 0.5, 900),
                             rng.lognormal(1.1, 0.5, 11000), "asymptotic K-S (kstwo, en ~ 830), drift"))
    cases.append(column_case("ks_asymp_small_n", "numerical", normal(5, 1, 120), normal(5.1, 1, 10500),
                             "asymptotic K-S with en ~ 119 (kstwo n <= 140 branches)"))
    # Chi-square: a categorical with 12 values; a numerical with 4 values.
    zones = np.arange(1, 13)
    pz = rng.dirichlet(np.ones(12) * 5)
    cases.append(column_case("chi_no_drift", "categorical", rng.choice(zones, 700, p=pz),
                             rng.choice(zones, 650, p=pz), "chi-square, same proportions"))
    pz2 = rng.dirichlet(np.ones(12) * 5)
    cases.append(column_case("chi_drift", "categorical", rng.choice(zones, 900, p=pz),
                             rng.choice(zones, 800, p=pz2), "chi-square, other proportions"))
    cases.append(column_case("chi_new_category", "categorical", rng.choice(zones[:10], 400),
                             rng.choice(zones, 300), "a category the reference never had: p = 0"))
    cases.append(column_case("chi_numerical_few_values", "numerical", rng.choice([1, 2, 3, 5], 600),
                             rng.choice([1, 2, 3, 5], 500, p=[0.3, 0.3, 0.2, 0.2]),
                             "a numerical column with 4 values is tested by chi-square"))
    # Z-test: two values.
    cases.append(column_case("z_no_drift", "categorical", rng.choice([0, 1], 500, p=[0.3, 0.7]),
                             rng.choice([0, 1], 450, p=[0.3, 0.7]), "Z-test, same shares"))
    cases.append(column_case("z_drift", "categorical", rng.choice([0, 1], 500, p=[0.3, 0.7]),
                             rng.choice([0, 1], 450, p=[0.45, 0.55]), "Z-test, other shares"))
    # Wasserstein: large reference, numerical.
    cases.append(column_case("wasserstein_no_drift", "numerical", rng.gamma(2, 3, 5000), rng.gamma(2, 3, 4000),
                             "Wasserstein / std, same distribution"))
    cases.append(column_case("wasserstein_drift", "numerical", rng.gamma(2, 3, 5000), rng.gamma(2.6, 3, 4000),
                             "Wasserstein / std, other shape"))
    # Jensen-Shannon: large reference, categorical; and a numerical column with few values.
    many = np.arange(1, 61)
    pm = rng.dirichlet(np.ones(60))
    cases.append(column_case("js_no_drift", "categorical", rng.choice(many, 3000, p=pm), rng.choice(many, 2500, p=pm),
                             "Jensen-Shannon, same proportions"))
    pm2 = rng.dirichlet(np.ones(60))
    cases.append(column_case("js_drift", "categorical", rng.choice(many, 3000, p=pm), rng.choice(many, 2500, p=pm2),
                             "Jensen-Shannon, other proportions"))
    cases.append(column_case("js_numerical_few_values", "numerical", rng.choice([0, 1, 2, 3], 2000),
                             rng.choice([0, 1, 2, 3, 4], 1500), "numerical with 5 values, large reference"))

    # The distributions behind the p-values, over every branch scipy takes.
    kstwo = []
    for n in [1, 2, 5, 10, 50, 100, 119, 140, 141, 300, 750, 1000, 5000]:
        for x in [0.001, 0.004, 0.01, 0.02, 0.03, 0.05, 0.08, 0.1, 0.15, 0.2, 0.3, 0.45, 0.5, 0.6, 0.8, 0.95]:
            kstwo.append({"n": n, "x": x, "sf": float(stats.kstwo.sf(x, n))})
    smirnov = []
    for n in [2, 3, 10, 50, 140, 500, 1000]:
        for x in [0.01, 0.05, 0.1, 0.25, 0.5, 0.7, 0.9]:
            smirnov.append({"n": n, "x": x, "sf": float(scipy.special.smirnov(n, x))})
    chi2 = []
    for df in [1, 2, 3, 5, 11, 40, 59, 150, 263]:
        for x in [0.01, 0.5, 1.0, 3.0, 10.0, 30.0, 60.0, 120.0, 250.0, 400.0, 900.0]:
            chi2.append({"df": df, "x": x, "sf": float(stats.chi2.sf(x, df))})
    ndtr = [{"x": x, "cdf": float(stats.norm.cdf(x))} for x in [-8.0, -3.0, -1.0, -0.3, 0.0, 0.2, 0.7, 1.5, 3.0, 6.0]]
    ks_pairs = []
    for seed, (n1, n2, shift) in enumerate([(7, 5, 1.0), (30, 30, 0.5), (64, 48, 0.4), (250, 1000, 0.15),
                                           (1000, 999, 0.05), (60, 10001, 0.3)]):
        r = np.random.default_rng(seed)
        a = np.round(r.normal(0, 1, n1), 3)
        b = np.round(r.normal(shift, 1, n2), 3)
        res = stats.ks_2samp(a, b)
        ks_pairs.append({"a": a.tolist(), "b": b.tolist(), "statistic": float(res.statistic),
                         "p_value": float(res.pvalue)})

    doc = {
        "generator": "xtask/tests/golden/make_drift_goldens.py",
        "versions": {"numpy": np.__version__, "scipy": scipy.__version__, "pandas": pd.__version__},
        "columns": cases,
        "ks_2samp": ks_pairs,
        "kstwo_sf": kstwo,
        "smirnov_sf": smirnov,
        "chi2_sf": chi2,
        "ndtr": ndtr,
    }
    OUT.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {OUT}: {len(cases)} column cases, {len(ks_pairs)} K-S pairs, {len(kstwo)} kstwo, "
          f"{len(smirnov)} smirnov, {len(chi2)} chi2, {len(ndtr)} ndtr")
    for c in cases:
        print(f"  {c['name']:28} {c['test']:14} score={c['score']:.6g} drifted={c['drifted']}")


if __name__ == "__main__":
    main()
