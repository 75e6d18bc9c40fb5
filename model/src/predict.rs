//! The fitted model in its fast, allocation-free form.

use std::path::Path;

use crate::artifact::Artifact;
use crate::{Categorical, ModelError, Numeric, Ride};

/// A loaded model, ready to predict. Categorical coefficients live in dense tables indexed by
/// slot, so predicting one ride is a few array reads and never allocates.
#[derive(Debug, Clone)]
pub struct Model {
    artifact: Artifact,
    intercept: f64,
    numeric: Vec<(Numeric, f64)>,
    tables: Vec<(Categorical, Vec<f64>)>,
}

impl Model {
    /// Builds the lookup tables from an artifact.
    pub fn from_artifact(artifact: Artifact) -> Result<Self, ModelError> {
        let mut tables = Vec::with_capacity(artifact.categorical.len());
        for block in &artifact.categorical {
            let mut table = vec![0.0; block.term.slots()];
            for (label, &coef) in block.vocabulary.iter().zip(&block.coef) {
                let slot = block.term.parse_label(label).ok_or_else(|| {
                    ModelError::InvalidArtifact(format!(
                        "{}: label `{label}` is not a valid category",
                        block.term.name()
                    ))
                })?;
                table[slot] = coef;
            }
            tables.push((block.term, table));
        }
        Ok(Self {
            intercept: artifact.intercept,
            numeric: artifact.numeric.iter().map(|n| (n.term, n.coef)).collect(),
            tables,
            artifact,
        })
    }

    /// Parses, verifies and loads an artifact from bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ModelError> {
        Self::from_artifact(Artifact::from_bytes(bytes)?)
    }

    /// Reads, verifies and loads an artifact file.
    pub fn load(path: &Path) -> Result<Self, ModelError> {
        Self::from_artifact(Artifact::load(path)?)
    }

    /// Predicted ride duration in minutes. A category unseen in training contributes nothing,
    /// as with scikit-learn's DictVectorizer.
    #[inline]
    pub fn predict(&self, ride: &Ride) -> f64 {
        let mut y = self.intercept;
        for &(term, coef) in &self.numeric {
            y += coef * term.value(ride);
        }
        for (term, table) in &self.tables {
            if let Some(slot) = term.slot(ride) {
                y += table[slot];
            }
        }
        y
    }

    /// The model version (content-derived).
    pub fn version(&self) -> &str {
        &self.artifact.version
    }

    /// The artifact the model was built from.
    pub fn artifact(&self) -> &Artifact {
        &self.artifact
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FeatureSpec;
    use crate::artifact::{CategoricalBlock, NumericCoef, TrainingMetadata};

    pub(crate) fn tiny() -> Artifact {
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

    fn ride(pu: u32, dol: u32, d: f64) -> Ride {
        Ride {
            pu_location_id: pu,
            do_location_id: dol,
            trip_distance: d,
            pickup_hour: None,
        }
    }

    #[test]
    fn predicts_intercept_plus_terms() {
        let m = Model::from_artifact(tiny()).unwrap();
        assert_eq!(m.predict(&ride(130, 205, 2.0)), 2.0 + 6.0 + 5.0);
        assert_eq!(m.predict(&ride(1, 2, 0.0)), 1.0);
    }

    #[test]
    fn unseen_category_is_ignored() {
        let m = Model::from_artifact(tiny()).unwrap();
        assert_eq!(m.predict(&ride(7, 7, 1.0)), 5.0);
        assert_eq!(m.predict(&ride(999, 7, 1.0)), 5.0);
    }

    #[test]
    fn artifact_round_trips_bit_for_bit() {
        let mut a = tiny();
        a.intercept = 0.1 + 0.2;
        a.categorical[0].coef[0] = std::f64::consts::PI / 7.0;
        let back = Artifact::from_bytes(&a.to_bytes().unwrap()).unwrap();
        assert_eq!(back, a);
    }

    #[test]
    fn corrupted_artifact_is_refused() {
        let mut bytes = tiny().to_bytes().unwrap();
        let i = bytes.len() - 10;
        bytes[i] ^= 0x01;
        assert!(matches!(
            Artifact::from_bytes(&bytes),
            Err(ModelError::Checksum { .. })
        ));
        bytes.truncate(bytes.len() - 20);
        assert!(matches!(
            Artifact::from_bytes(&bytes),
            Err(ModelError::Checksum { .. })
        ));
    }

    #[test]
    fn other_format_versions_and_foreign_files_are_refused() {
        let bytes = tiny().to_bytes().unwrap();
        let text = String::from_utf8(bytes).unwrap().replacen(
            "\"format_version\":1",
            "\"format_version\":99",
            1,
        );
        let err = Artifact::from_bytes(text.as_bytes()).unwrap_err();
        assert!(
            matches!(
                err,
                ModelError::UnsupportedVersion {
                    found: 99,
                    supported: 1
                }
            ),
            "{err}"
        );
        assert!(matches!(
            Artifact::from_bytes(b"PAR1\x00\x01"),
            Err(ModelError::NotAnArtifact(_))
        ));
        assert!(matches!(
            Artifact::from_bytes(b"{\"a\":1}\n{}"),
            Err(ModelError::NotAnArtifact(_))
        ));
    }

    #[test]
    fn mismatched_coefficients_are_refused() {
        let mut a = tiny();
        a.categorical[0].coef.pop();
        let err = Artifact::from_bytes(&a.to_bytes().unwrap()).unwrap_err();
        assert!(
            err.to_string().contains("2 labels but 1 coefficients"),
            "{err}"
        );
    }
}
