//! The drift statistics against golden values scipy computed on fixed samples
//! (`xtask/tests/golden/make_drift_goldens.py` → `drift_goldens.json`).

use serde::Deserialize;
use xtask::monitor::stats::{self, ColumnKind, StatTest};

/// Relative agreement required with scipy.
const RTOL: f64 = 1e-9;

#[derive(Deserialize)]
struct Goldens {
    columns: Vec<ColumnCase>,
    ks_2samp: Vec<KsPair>,
    kstwo_sf: Vec<NxSf>,
    smirnov_sf: Vec<NxSf>,
    chi2_sf: Vec<Chi2Case>,
    ndtr: Vec<NdtrCase>,
}

#[derive(Deserialize)]
struct ColumnCase {
    name: String,
    kind: ColumnKind,
    reference: Vec<f64>,
    current: Vec<f64>,
    test: String,
    score: f64,
    drifted: bool,
    ks_statistic: Option<f64>,
}

#[derive(Deserialize)]
struct KsPair {
    a: Vec<f64>,
    b: Vec<f64>,
    statistic: f64,
    p_value: f64,
}

#[derive(Deserialize)]
struct NxSf {
    n: u64,
    x: f64,
    sf: f64,
}

#[derive(Deserialize)]
struct Chi2Case {
    df: f64,
    x: f64,
    sf: f64,
}

#[derive(Deserialize)]
struct NdtrCase {
    x: f64,
    cdf: f64,
}

fn goldens() -> Goldens {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/drift_goldens.json");
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_str(&text).expect("parse drift_goldens.json")
}

/// Comparisons against scipy: the disagreements beyond [`RTOL`], and the largest relative gap.
#[derive(Default)]
struct Agreement {
    failures: Vec<String>,
    max_rel: f64,
    compared: usize,
}

impl Agreement {
    fn check(&mut self, what: &str, got: f64, want: f64) {
        self.compared += 1;
        let rel = if got == want {
            0.0
        } else {
            (got - want).abs() / want.abs().max(got.abs())
        };
        self.max_rel = self.max_rel.max(rel);
        if rel > RTOL {
            self.failures
                .push(format!("{what}: got {got:e}, scipy {want:e}, rel {rel:e}"));
        }
    }

    /// Fails with every disagreement; reports the largest gap.
    fn finish(self, what: &str) {
        eprintln!(
            "{what}: {} values, largest relative difference from scipy {:e}",
            self.compared, self.max_rel
        );
        assert!(
            self.failures.is_empty(),
            "{} disagreements:\n{}",
            self.failures.len(),
            self.failures.join("\n")
        );
    }
}

#[test]
fn column_tests_choose_evidentlys_test_and_match_scipy_scores() {
    let g = goldens();
    let mut agree = Agreement::default();
    let mut seen = std::collections::HashSet::new();
    for case in &g.columns {
        let drift = stats::column_drift(case.kind, &case.reference, &case.current, None);
        seen.insert(drift.test);
        assert_eq!(
            drift.test,
            StatTest::parse(&case.test).unwrap(),
            "{}: test choice",
            case.name
        );
        agree.check(&case.name, drift.score, case.score);
        assert_eq!(
            drift.drifted, case.drifted,
            "{}: drift verdict (score {})",
            case.name, drift.score
        );
        if let Some(d) = case.ks_statistic {
            agree.check(
                &format!("{} statistic", case.name),
                stats::ks_2samp(&case.reference, &case.current).statistic,
                d,
            );
        }
    }
    agree.finish("column scores");
    assert_eq!(seen.len(), 5, "the goldens exercise every test");
    assert!(g.columns.iter().any(|c| c.drifted) && g.columns.iter().any(|c| !c.drifted));
}

#[test]
fn ks_2samp_matches_scipy_exact_and_asymptotic() {
    let mut agree = Agreement::default();
    for (i, pair) in goldens().ks_2samp.iter().enumerate() {
        let got = stats::ks_2samp(&pair.a, &pair.b);
        let what = format!("pair {i} ({} vs {})", pair.a.len(), pair.b.len());
        agree.check(&format!("{what} statistic"), got.statistic, pair.statistic);
        agree.check(&format!("{what} p"), got.p_value, pair.p_value);
    }
    agree.finish("ks_2samp");
}

#[test]
fn kstwo_and_smirnov_survival_functions_match_scipy() {
    let g = goldens();
    let mut agree = Agreement::default();
    for c in &g.kstwo_sf {
        agree.check(
            &format!("kstwo.sf({}, n={})", c.x, c.n),
            stats::kstwo_sf(c.n, c.x),
            c.sf,
        );
    }
    for c in &g.smirnov_sf {
        agree.check(
            &format!("smirnov({}, {})", c.n, c.x),
            stats::smirnov_sf(c.n, c.x),
            c.sf,
        );
    }
    agree.finish("kstwo.sf and smirnov");
}

#[test]
fn chi2_sf_and_normal_cdf_match_scipy() {
    let g = goldens();
    let mut agree = Agreement::default();
    for c in &g.chi2_sf {
        agree.check(
            &format!("chi2.sf({}, df={})", c.x, c.df),
            stats::chi2_sf(c.x, c.df),
            c.sf,
        );
    }
    for c in &g.ndtr {
        agree.check(&format!("ndtr({})", c.x), stats::ndtr(c.x), c.cdf);
    }
    agree.finish("chi2.sf and ndtr");
}
