//! Regression metrics.

use serde::{Deserialize, Serialize};

/// Error measures of predictions against targets.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
pub struct Metrics {
    /// Root mean squared error, in minutes.
    pub rmse: f64,
    /// Mean absolute error, in minutes.
    pub mae: f64,
    /// Coefficient of determination.
    pub r2: f64,
    /// Rows the metrics were computed on.
    pub rows: usize,
}

impl Metrics {
    /// Computes the metrics of `pred` against `y`. Empty input gives NaN errors and 0 rows.
    pub fn compute(y: &[f64], pred: &[f64]) -> Self {
        assert_eq!(
            y.len(),
            pred.len(),
            "targets and predictions differ in length"
        );
        let n = y.len();
        if n == 0 {
            return Self {
                rmse: f64::NAN,
                mae: f64::NAN,
                r2: f64::NAN,
                rows: 0,
            };
        }
        let mean = y.iter().sum::<f64>() / n as f64;
        let (mut sse, mut sae, mut sst) = (0.0, 0.0, 0.0);
        for (&t, &p) in y.iter().zip(pred) {
            let e = t - p;
            sse += e * e;
            sae += e.abs();
            sst += (t - mean) * (t - mean);
        }
        Self {
            rmse: (sse / n as f64).sqrt(),
            mae: sae / n as f64,
            r2: 1.0 - sse / sst,
            rows: n,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perfect_predictions_have_zero_error_and_unit_r2() {
        let m = Metrics::compute(&[1.0, 2.0, 3.0], &[1.0, 2.0, 3.0]);
        assert_eq!((m.rmse, m.mae, m.r2, m.rows), (0.0, 0.0, 1.0, 3));
    }

    #[test]
    fn hand_checked_errors() {
        // Errors 1 and -3: mse 5, mae 2; the mean is 2, so sst = 1 + 1 and r2 = 1 - 10 / 2.
        let m = Metrics::compute(&[1.0, 3.0], &[0.0, 6.0]);
        assert!((m.rmse - 5f64.sqrt()).abs() < 1e-12);
        assert!((m.mae - 2.0).abs() < 1e-12);
        assert!((m.r2 - (1.0 - 10.0 / 2.0)).abs() < 1e-12);
    }
}
