//! A hand-made model whose predictions can be checked by hand, shared by unit and integration
//! tests: duration = 2 + 3 * trip_distance, plus 5 for the zone pair 130→205 and -1 for 1→2.
#![allow(dead_code)]

use model::artifact::{Artifact, CategoricalBlock, NumericCoef, TrainingMetadata};
use model::{Categorical, FeatureSpec, Numeric};

/// The artifact.
pub fn artifact() -> Artifact {
    let mut a = Artifact {
        version: String::new(),
        features: FeatureSpec::default(),
        intercept: 2.0,
        numeric: vec![NumericCoef {
            term: Numeric::TripDistance,
            coef: 3.0,
        }],
        categorical: vec![CategoricalBlock {
            term: Categorical::PuDo,
            vocabulary: vec!["1_2".into(), "130_205".into()],
            coef: vec![-1.0, 5.0],
        }],
        metadata: TrainingMetadata::default(),
    };
    a.version = a.content_version();
    a
}

/// The artifact file's bytes.
pub fn bytes() -> Vec<u8> {
    artifact().to_bytes().unwrap()
}

/// The loaded model.
pub fn model() -> model::Model {
    model::Model::from_artifact(artifact()).unwrap()
}

/// The expected prediction, computed in the same order as the model adds its terms.
pub fn expected(pu: u32, dol: u32, distance: f64) -> f64 {
    let pair = match (pu, dol) {
        (130, 205) => 5.0,
        (1, 2) => -1.0,
        _ => 0.0,
    };
    2.0 + 3.0 * distance + pair
}
