//! The model artifact: one self-describing, versioned, checksummed file.
//!
//! Layout: a one-line JSON header, a newline, then the JSON payload.
//!
//! ```text
//! {"format":"taxi-duration-model","format_version":1,"sha256":"<hex of payload>","payload_bytes":N}
//! {"version":"...","features":{...},"intercept":...,"numeric":[...],"categorical":[...],"metadata":{...}}
//! ```
//!
//! Loading checks the format name, the format version, the length and the checksum before it
//! parses the payload, so a truncated, edited or foreign file is refused with a clear error.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{Categorical, FeatureSpec, Metrics, ModelError, Numeric};

/// The format name in every header.
pub const FORMAT: &str = "taxi-duration-model";
/// The payload layout this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// The file name the training step writes inside a run's directory or S3 prefix.
pub const FILE_NAME: &str = "model.json";

#[derive(Debug, Serialize, Deserialize)]
struct Header {
    format: String,
    format_version: u32,
    sha256: String,
    payload_bytes: usize,
}

/// The fitted model and how it was made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Artifact {
    /// Content-derived model version: the first 12 hex digits of the SHA-256 of the coefficients.
    pub version: String,
    /// The features the coefficients belong to.
    pub features: FeatureSpec,
    /// The intercept.
    pub intercept: f64,
    /// One coefficient per numeric term, in `features.numeric` order.
    pub numeric: Vec<NumericCoef>,
    /// One block per categorical term, in `features.categorical` order.
    pub categorical: Vec<CategoricalBlock>,
    /// How the model was trained.
    pub metadata: TrainingMetadata,
}

/// A numeric term's coefficient.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NumericCoef {
    /// The term.
    pub term: Numeric,
    /// Its coefficient.
    pub coef: f64,
}

/// A categorical term's vocabulary and coefficients; categories not in the vocabulary add nothing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CategoricalBlock {
    /// The term.
    pub term: Categorical,
    /// Labels as DictVectorizer writes them after `=`, e.g. `"130_205"`.
    pub vocabulary: Vec<String>,
    /// One coefficient per label.
    pub coef: Vec<f64>,
}

/// A data file the model was trained or validated on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataFile {
    /// The path as given.
    pub path: String,
    /// SHA-256 of the file's bytes.
    pub sha256: String,
    /// Rows read from it.
    pub rows: usize,
}

/// Training metadata.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct TrainingMetadata {
    /// RFC 3339 time of training.
    pub created_at: String,
    /// The git commit of the code that trained it, when known.
    pub git_commit: Option<String>,
    /// Training files.
    pub train_files: Vec<DataFile>,
    /// Validation files.
    pub val_files: Vec<DataFile>,
    /// Rows kept for training after cleaning.
    pub train_rows: usize,
    /// Rows kept for validation after cleaning.
    pub val_rows: usize,
    /// Number of model features (vocabulary sizes plus numeric terms).
    pub n_features: usize,
    /// Metrics on the training rows.
    pub train_metrics: Metrics,
    /// Metrics on the validation rows, when there were any.
    pub val_metrics: Option<Metrics>,
    /// Training parameters (solver, ridge alpha, duration bounds, ...).
    pub params: BTreeMap<String, serde_json::Value>,
}

impl Artifact {
    /// Computes the content-derived version from the coefficients and features.
    pub fn content_version(&self) -> String {
        let mut h = Sha256::new();
        h.update(serde_json::to_vec(&self.features).expect("serialisable"));
        h.update(self.intercept.to_le_bytes());
        for n in &self.numeric {
            h.update(n.coef.to_le_bytes());
        }
        for block in &self.categorical {
            for (label, coef) in block.vocabulary.iter().zip(&block.coef) {
                h.update(label.as_bytes());
                h.update(coef.to_le_bytes());
            }
        }
        hex::encode(&h.finalize()[..6])
    }

    /// Number of model features: vocabulary sizes plus numeric terms.
    pub fn n_features(&self) -> usize {
        self.categorical
            .iter()
            .map(|b| b.vocabulary.len())
            .sum::<usize>()
            + self.numeric.len()
    }

    /// Serialises to the artifact file format.
    pub fn to_bytes(&self) -> Result<Vec<u8>, ModelError> {
        let payload = serde_json::to_vec(self)?;
        let header = Header {
            format: FORMAT.to_string(),
            format_version: FORMAT_VERSION,
            sha256: hex::encode(Sha256::digest(&payload)),
            payload_bytes: payload.len(),
        };
        let mut out = serde_json::to_vec(&header)?;
        out.push(b'\n');
        out.extend_from_slice(&payload);
        Ok(out)
    }

    /// Parses and verifies the artifact file format.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, ModelError> {
        let nl = bytes
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| ModelError::NotAnArtifact("no header line".into()))?;
        let header: Header = serde_json::from_slice(&bytes[..nl])
            .map_err(|e| ModelError::NotAnArtifact(format!("header is not JSON: {e}")))?;
        if header.format != FORMAT {
            return Err(ModelError::NotAnArtifact(format!(
                "format is `{}`, expected `{FORMAT}`",
                header.format
            )));
        }
        if header.format_version != FORMAT_VERSION {
            return Err(ModelError::UnsupportedVersion {
                found: header.format_version,
                supported: FORMAT_VERSION,
            });
        }
        let payload = &bytes[nl + 1..];
        let found = hex::encode(Sha256::digest(payload));
        if payload.len() != header.payload_bytes || found != header.sha256 {
            return Err(ModelError::Checksum {
                expected: header.sha256,
                found,
            });
        }
        let artifact: Artifact = serde_json::from_slice(payload)?;
        artifact.validate()?;
        Ok(artifact)
    }

    /// Writes the artifact to a file.
    pub fn save(&self, path: &Path) -> Result<(), ModelError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| ModelError::io(dir, e))?;
        }
        std::fs::write(path, self.to_bytes()?).map_err(|e| ModelError::io(path, e))
    }

    /// Reads and verifies an artifact file.
    pub fn load(path: &Path) -> Result<Self, ModelError> {
        let bytes = std::fs::read(path).map_err(|e| ModelError::io(path, e))?;
        Self::from_bytes(&bytes)
    }

    /// Checks that the coefficients match the feature spec.
    fn validate(&self) -> Result<(), ModelError> {
        let invalid = |m: String| Err(ModelError::InvalidArtifact(m));
        let terms: Vec<Numeric> = self.numeric.iter().map(|n| n.term).collect();
        if terms != self.features.numeric {
            return invalid(format!(
                "numeric coefficients {terms:?} do not match features {:?}",
                self.features.numeric
            ));
        }
        let blocks: Vec<Categorical> = self.categorical.iter().map(|b| b.term).collect();
        if blocks != self.features.categorical {
            return invalid(format!(
                "categorical blocks {blocks:?} do not match features {:?}",
                self.features.categorical
            ));
        }
        for b in &self.categorical {
            if b.vocabulary.len() != b.coef.len() {
                return invalid(format!(
                    "{}: {} labels but {} coefficients",
                    b.term.name(),
                    b.vocabulary.len(),
                    b.coef.len()
                ));
            }
            if let Some(bad) = b
                .vocabulary
                .iter()
                .find(|l| b.term.parse_label(l).is_none())
            {
                return invalid(format!(
                    "{}: label `{bad}` is not a valid category",
                    b.term.name()
                ));
            }
        }
        let all = std::iter::once(self.intercept)
            .chain(self.numeric.iter().map(|n| n.coef))
            .chain(self.categorical.iter().flat_map(|b| b.coef.iter().copied()));
        if let Some(bad) = all.into_iter().find(|c| !c.is_finite()) {
            return invalid(format!("coefficient {bad} is not finite"));
        }
        Ok(())
    }
}
