//! Exact least-squares training without a dense rows × categories matrix.
//!
//! The first categorical term (by default the `PU_DO` pair, 5,000 to 15,000 levels on a month)
//! is *absorbed*: every ride has exactly one level, so for fixed dense coefficients β the best
//! level coefficient is the level's mean residual. Demeaning the dense columns and the target
//! within levels (Frisch–Waugh–Lovell) leaves a small dense least-squares problem in β, which
//! linfa-linear solves by QR. Level coefficients are then recovered in closed form.
//!
//! One-hot plus intercept is rank-deficient by one: only `c_k + a` is determined. We return the
//! minimum-norm split, `a = Σα_k / (K + 1)` and `c_k = α_k − a`, which is what an LSQR solver
//! started at zero converges to, and which makes unseen levels predict `a + β·z`.
//!
//! Ridge (L2, intercept unpenalised) uses the same structure: eliminating `c_k` under the penalty
//! λ turns the problem into ordinary least squares on quasi-demeaned data, with
//! `t_k = 1 − sqrt(λ / (n_k + λ))`, and `c_k = (Σ_k y − Σ_k z·β − n_k a) / (n_k + λ)`.
//!
//! Further categorical terms are fitted as dense one-hot columns with their first level as the
//! reference (exact for predictions on seen levels; not minimum-norm).

use std::collections::BTreeMap;
use std::path::PathBuf;

use linfa::prelude::*;
use linfa_linear::LinearRegression;
use ndarray::{Array1, Array2};
use serde::{Deserialize, Serialize};

use crate::artifact::{Artifact, CategoricalBlock, NumericCoef, TrainingMetadata};
use crate::data::{CleanOptions, CleanReport, Trips, read_trips};
use crate::{Categorical, FeatureSpec, Metrics, Model, ModelError};

/// Training parameters, checked by [`TrainParams::check`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainParams {
    /// The features.
    pub features: FeatureSpec,
    /// L2 penalty on all coefficients but the intercept; 0 for ordinary least squares.
    pub ridge_alpha: f64,
    /// Cleaning bounds.
    pub clean: CleanOptions,
}

impl Default for TrainParams {
    fn default() -> Self {
        Self {
            features: FeatureSpec::default(),
            ridge_alpha: 0.0,
            clean: CleanOptions::default(),
        }
    }
}

impl TrainParams {
    /// Validates the parameters.
    pub fn check(&self) -> Result<&Self, ModelError> {
        if !(self.ridge_alpha >= 0.0 && self.ridge_alpha.is_finite()) {
            return Err(ModelError::Training(format!(
                "ridge alpha must be finite and >= 0, got {}",
                self.ridge_alpha
            )));
        }
        if self.clean.min_minutes.partial_cmp(&self.clean.max_minutes)
            != Some(std::cmp::Ordering::Less)
        {
            return Err(ModelError::Training(format!(
                "minimum duration {} must be below maximum {}",
                self.clean.min_minutes, self.clean.max_minutes
            )));
        }
        Ok(self)
    }

    /// The parameters as artifact metadata.
    pub fn to_metadata(&self) -> BTreeMap<String, serde_json::Value> {
        BTreeMap::from([
            ("features".into(), self.features.to_string().into()),
            ("ridge_alpha".into(), self.ridge_alpha.into()),
            ("min_minutes".into(), self.clean.min_minutes.into()),
            ("max_minutes".into(), self.clean.max_minutes.into()),
            (
                "solver".into(),
                "absorbed-one-hot + linfa-linear QR (exact)".into(),
            ),
        ])
    }
}

/// Fits the model on cleaned trips. The returned artifact has empty metadata but for
/// `n_features`, `train_rows`, `train_metrics` and `params`.
pub fn fit(trips: &Trips, params: &TrainParams) -> Result<Artifact, ModelError> {
    params.check()?;
    let n = trips.len();
    if n == 0 {
        return Err(ModelError::Training(
            "no training rows left after cleaning: check the files and duration bounds".into(),
        ));
    }
    let spec = &params.features;
    let lambda = params.ridge_alpha;
    let primary = spec.categorical.first().copied();

    // Level index of every row for the absorbed term.
    let (levels, row_level) = match primary {
        Some(term) => index_levels(term, trips),
        None => (Vec::new(), vec![0; n]),
    };
    let k = levels.len().max(1);

    // Dense columns: numeric terms, then secondary one-hot columns (reference level dropped).
    let mut dense: Vec<Vec<f64>> = spec
        .numeric
        .iter()
        .map(|t| (0..n).map(|i| t.value(&trips.ride(i))).collect())
        .collect();
    let mut secondary: Vec<(Categorical, Vec<usize>)> = Vec::new();
    for &term in spec.categorical.iter().skip(1) {
        let (lv, rl) = index_levels(term, trips);
        for level in 1..lv.len() {
            dense.push(
                rl.iter()
                    .map(|&l| f64::from(u8::from(l == level)))
                    .collect(),
            );
        }
        secondary.push((term, lv));
    }
    let p = dense.len();

    // Per-level counts and sums.
    let mut count = vec![0usize; k];
    let mut sum_y = vec![0.0; k];
    let mut sum_z = vec![vec![0.0; k]; p];
    for i in 0..n {
        let l = row_level[i];
        count[l] += 1;
        sum_y[l] += trips.duration[i];
        for (j, col) in dense.iter().enumerate() {
            sum_z[j][l] += col[i];
        }
    }
    // Shrinkage of each level's mean: 1 when absorbed exactly, less under ridge.
    let t: Vec<f64> = count
        .iter()
        .map(|&c| {
            if primary.is_none() {
                0.0
            } else if lambda == 0.0 {
                1.0
            } else {
                1.0 - (lambda / (c as f64 + lambda)).sqrt()
            }
        })
        .collect();

    // The intercept is a free column unless the absorbed term already spans it (λ = 0).
    let free_intercept = primary.is_none() || lambda > 0.0;
    let cols = p + usize::from(free_intercept);
    let penalty_rows = if lambda > 0.0 { p } else { 0 };
    let mut x = Array2::<f64>::zeros((n + penalty_rows, cols));
    let mut y = Array1::<f64>::zeros(n + penalty_rows);
    for i in 0..n {
        let l = row_level[i];
        let tl = t[l] / count[l] as f64;
        y[i] = trips.duration[i] - tl * sum_y[l];
        for j in 0..p {
            x[[i, j]] = dense[j][i] - tl * sum_z[j][l];
        }
        if free_intercept {
            x[[i, p]] = 1.0 - t[l];
        }
    }
    for j in 0..penalty_rows {
        x[[n + j, j]] = lambda.sqrt();
    }

    let theta: Vec<f64> = if cols == 0 {
        Vec::new()
    } else {
        let fitted = LinearRegression::new()
            .with_intercept(false)
            .fit(&Dataset::new(x, y))
            .map_err(|e| ModelError::Training(format!("dense least squares failed: {e}")))?;
        fitted.params().to_vec()
    };
    if theta.iter().any(|v| !v.is_finite()) {
        return Err(ModelError::Training(
            "the dense features are collinear (a coefficient is not finite): drop a redundant feature".into(),
        ));
    }
    let beta = &theta[..p];

    // Level coefficients and intercept.
    let level_fit = |l: usize| sum_y[l] - (0..p).map(|j| beta[j] * sum_z[j][l]).sum::<f64>();
    let (intercept, level_coef): (f64, Vec<f64>) = if primary.is_none() {
        (theta[p], Vec::new())
    } else if lambda == 0.0 {
        let alpha: Vec<f64> = (0..k).map(|l| level_fit(l) / count[l] as f64).collect();
        let a = alpha.iter().sum::<f64>() / (k as f64 + 1.0);
        (a, alpha.iter().map(|al| al - a).collect())
    } else {
        let a = theta[p];
        (
            a,
            (0..k)
                .map(|l| (level_fit(l) - count[l] as f64 * a) / (count[l] as f64 + lambda))
                .collect(),
        )
    };

    // Assemble the artifact.
    let mut categorical = Vec::new();
    if let Some(term) = primary {
        categorical.push(block(term, &levels, level_coef));
    }
    let mut next = spec.numeric.len();
    for (term, lv) in &secondary {
        let mut coef = vec![0.0];
        coef.extend_from_slice(&beta[next..next + lv.len() - 1]);
        next += lv.len() - 1;
        categorical.push(block(*term, lv, coef));
    }
    let mut artifact = Artifact {
        version: String::new(),
        features: spec.clone(),
        intercept,
        numeric: spec
            .numeric
            .iter()
            .zip(beta)
            .map(|(&term, &coef)| NumericCoef { term, coef })
            .collect(),
        categorical,
        metadata: TrainingMetadata {
            params: params.to_metadata(),
            train_rows: n,
            ..Default::default()
        },
    };
    artifact.metadata.n_features = artifact.n_features();
    artifact.version = artifact.content_version();
    let model = Model::from_artifact(artifact.clone())?;
    artifact.metadata.train_metrics = evaluate(&model, trips);
    Ok(artifact)
}

/// Levels of a term in first-seen order, and each row's level index.
fn index_levels(term: Categorical, trips: &Trips) -> (Vec<usize>, Vec<usize>) {
    let mut slot_level = vec![usize::MAX; term.slots()];
    let mut levels = Vec::new();
    let mut row_level = Vec::with_capacity(trips.len());
    for i in 0..trips.len() {
        // Cleaning guarantees valid zones and hours, so every row has a slot.
        let slot = term
            .slot(&trips.ride(i))
            .expect("cleaned rows have valid categories");
        if slot_level[slot] == usize::MAX {
            slot_level[slot] = levels.len();
            levels.push(slot);
        }
        row_level.push(slot_level[slot]);
    }
    (levels, row_level)
}

/// A categorical block with labels sorted as DictVectorizer sorts feature names.
fn block(term: Categorical, levels: &[usize], coef: Vec<f64>) -> CategoricalBlock {
    let mut pairs: Vec<(String, f64)> = levels.iter().map(|&s| term.label(s)).zip(coef).collect();
    pairs.sort_by(|a, b| a.0.cmp(&b.0));
    let (vocabulary, coef) = pairs.into_iter().unzip();
    CategoricalBlock {
        term,
        vocabulary,
        coef,
    }
}

/// Metrics of a model on trips.
pub fn evaluate(model: &Model, trips: &Trips) -> Metrics {
    let pred: Vec<f64> = (0..trips.len())
        .map(|i| model.predict(&trips.ride(i)))
        .collect();
    Metrics::compute(&trips.duration, &pred)
}

/// Files and parameters of one training job.
#[derive(Debug, Clone)]
pub struct TrainJob {
    /// Training files or directories.
    pub train: Vec<PathBuf>,
    /// Validation files or directories (may be empty).
    pub val: Vec<PathBuf>,
    /// Parameters.
    pub params: TrainParams,
    /// The git commit to record.
    pub git_commit: Option<String>,
}

/// The outcome of a training job.
#[derive(Debug, Clone)]
pub struct TrainOutcome {
    /// The trained model, with full metadata.
    pub artifact: Artifact,
    /// Cleaning of the training files.
    pub train_report: CleanReport,
    /// Cleaning of the validation files.
    pub val_report: Option<CleanReport>,
}

impl TrainJob {
    /// Reads, cleans, fits and evaluates.
    pub fn run(&self) -> Result<TrainOutcome, ModelError> {
        self.params.check()?;
        let (train, train_report) = read_trips(&self.train, &self.params.clean)?;
        let mut artifact = fit(&train, &self.params)?;
        let val_report = if self.val.is_empty() {
            None
        } else {
            let (val, report) = read_trips(&self.val, &self.params.clean)?;
            let model = Model::from_artifact(artifact.clone())?;
            artifact.metadata.val_metrics = Some(evaluate(&model, &val));
            artifact.metadata.val_rows = val.len();
            Some(report)
        };
        artifact.metadata.train_files = train_report.files.clone();
        artifact.metadata.val_files = val_report
            .as_ref()
            .map(|r| r.files.clone())
            .unwrap_or_default();
        artifact.metadata.git_commit = self.git_commit.clone();
        artifact.metadata.created_at =
            chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        Ok(TrainOutcome {
            artifact,
            train_report,
            val_report,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Numeric, Ride};

    fn trips(rows: &[(u32, u32, f64, f64)]) -> Trips {
        let mut t = Trips::default();
        for &(pu, dol, d, y) in rows {
            t.pu.push(pu);
            t.dol.push(dol);
            t.trip_distance.push(d);
            t.pickup_hour.push(8);
            t.duration.push(y);
        }
        t
    }

    fn ride(pu: u32, dol: u32, d: f64) -> Ride {
        Ride {
            pu_location_id: pu,
            do_location_id: dol,
            trip_distance: d,
            pickup_hour: Some(8),
        }
    }

    #[test]
    fn fits_a_line_through_two_dots() {
        let params = TrainParams {
            features: FeatureSpec {
                categorical: vec![],
                numeric: vec![Numeric::TripDistance],
            },
            ..Default::default()
        };
        let a = fit(&trips(&[(1, 1, 1.0, 5.0), (1, 1, 3.0, 9.0)]), &params).unwrap();
        // y = 3 + 2 d
        assert!((a.intercept - 3.0).abs() < 1e-12, "{}", a.intercept);
        assert!((a.numeric[0].coef - 2.0).abs() < 1e-12);
    }

    #[test]
    fn two_categories_and_a_line_are_fitted_exactly_with_the_minimum_norm_split() {
        // Category 1_1: y = 2 + 2d; category 2_2: y = 6 + 2d (exact, no noise).
        let data = [
            (1, 1, 1.0, 4.0),
            (1, 1, 2.0, 6.0),
            (2, 2, 1.0, 8.0),
            (2, 2, 3.0, 12.0),
        ];
        let a = fit(&trips(&data), &TrainParams::default()).unwrap();
        let m = Model::from_artifact(a.clone()).unwrap();
        for &(pu, dol, d, y) in &data {
            assert!((m.predict(&ride(pu, dol, d)) - y).abs() < 1e-12);
        }
        // alpha = (2, 6); minimum norm: a = 8 / 3, c = (2 - 8/3, 6 - 8/3).
        assert!((a.intercept - 8.0 / 3.0).abs() < 1e-12, "{}", a.intercept);
        assert_eq!(a.categorical[0].vocabulary, vec!["1_1", "2_2"]);
        assert!((a.categorical[0].coef[0] - (2.0 - 8.0 / 3.0)).abs() < 1e-12);
        assert!((a.numeric[0].coef - 2.0).abs() < 1e-12);
        // An unseen pair predicts the intercept plus the distance term.
        assert!((m.predict(&ride(9, 9, 1.0)) - (8.0 / 3.0 + 2.0)).abs() < 1e-12);
        assert_eq!(a.metadata.n_features, 3);
        assert!(a.metadata.train_metrics.rmse < 1e-12);
    }

    #[test]
    fn within_level_slope_is_the_least_squares_slope() {
        // Level means differ; the common slope is the pooled within-level slope:
        // level A: d = (0, 2), y = (1, 3) -> dev (-1, 1), (-1, 1); level B: d = (0, 1), y = (0, 3) -> (-.5,.5),(-1.5,1.5)
        // beta = (1 + 1 + .75 + .75) / (1 + 1 + .25 + .25) = 3.5 / 2.5 = 1.4
        let data = [
            (1, 1, 0.0, 1.0),
            (1, 1, 2.0, 3.0),
            (2, 2, 0.0, 0.0),
            (2, 2, 1.0, 3.0),
        ];
        let a = fit(&trips(&data), &TrainParams::default()).unwrap();
        assert!(
            (a.numeric[0].coef - 1.4).abs() < 1e-12,
            "{}",
            a.numeric[0].coef
        );
    }

    #[test]
    fn ridge_shrinks_towards_the_intercept_and_matches_the_normal_equations() {
        // With λ > 0 and two levels, check against the normal equations solved by hand:
        // minimise Σ (y - a - c_l - b d)² + λ (c_1² + c_2² + b²).
        let data = [
            (1, 1, 1.0, 4.0),
            (1, 1, 2.0, 6.0),
            (2, 2, 1.0, 8.0),
            (2, 2, 3.0, 12.5),
        ];
        let lambda = 0.7;
        let params = TrainParams {
            ridge_alpha: lambda,
            ..Default::default()
        };
        let a = fit(&trips(&data), &params).unwrap();
        let (c1, c2, b, a0) = (
            a.categorical[0].coef[0],
            a.categorical[0].coef[1],
            a.numeric[0].coef,
            a.intercept,
        );
        // Gradient of the objective must vanish.
        let r: Vec<f64> = data
            .iter()
            .map(|&(pu, _, d, y)| y - a0 - if pu == 1 { c1 } else { c2 } - b * d)
            .collect();
        let g_a: f64 = r.iter().sum();
        let g_c1: f64 = r[..2].iter().sum::<f64>() - lambda * c1;
        let g_c2: f64 = r[2..].iter().sum::<f64>() - lambda * c2;
        let g_b: f64 = data.iter().zip(&r).map(|(row, ri)| row.2 * ri).sum::<f64>() - lambda * b;
        for g in [g_a, g_c1, g_c2, g_b] {
            assert!(g.abs() < 1e-9, "gradient {g} (a={a0} c=({c1},{c2}) b={b})");
        }
    }

    #[test]
    fn secondary_categorical_terms_fit_exactly_on_seen_levels() {
        // y = PU effect + DO effect, exactly additive.
        let pu_eff = [0.0, 1.0, 5.0];
        let do_eff = [0.0, 0.0, 2.0, -1.0];
        let mut rows = Vec::new();
        for pu in 1..=2u32 {
            for dol in 1..=3u32 {
                rows.push((
                    pu,
                    dol,
                    1.0 + (pu + dol) as f64,
                    10.0 + pu_eff[pu as usize] + do_eff[dol as usize],
                ));
            }
        }
        let params = TrainParams {
            features: FeatureSpec::parse("pu,do").unwrap(),
            ..Default::default()
        };
        let a = fit(&trips(&rows), &params).unwrap();
        let m = Model::from_artifact(a).unwrap();
        for &(pu, dol, d, y) in &rows {
            assert!((m.predict(&ride(pu, dol, d)) - y).abs() < 1e-9);
        }
    }

    #[test]
    fn bad_parameters_and_empty_data_are_refused() {
        let params = TrainParams {
            ridge_alpha: -1.0,
            ..Default::default()
        };
        assert!(fit(&trips(&[(1, 1, 1.0, 1.0)]), &params).is_err());
        let err = fit(&Trips::default(), &TrainParams::default()).unwrap_err();
        assert!(err.to_string().contains("no training rows"), "{err}");
    }
}
