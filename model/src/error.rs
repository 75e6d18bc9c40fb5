use std::path::PathBuf;

/// Everything that can go wrong in the model crate. Messages name the problem and the fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The bytes are not a model artifact at all.
    #[error("not a taxi-duration model artifact: {0}")]
    NotAnArtifact(String),
    /// The artifact was written by a format this build cannot read.
    #[error(
        "model artifact format version {found} is not supported (this build reads version {supported}): retrain with this version or use a matching build"
    )]
    UnsupportedVersion {
        /// The version in the file.
        found: u32,
        /// The version this build reads.
        supported: u32,
    },
    /// The payload does not match its checksum.
    #[error(
        "model artifact is corrupted: checksum {found} does not match the recorded {expected}; fetch or retrain it again"
    )]
    Checksum {
        /// The recorded checksum.
        expected: String,
        /// The checksum of the bytes read.
        found: String,
    },
    /// The artifact parses but does not make a usable model.
    #[error("invalid model artifact: {0}")]
    InvalidArtifact(String),
    /// JSON (de)serialisation failed.
    #[error("model artifact JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// A trip-record file is missing, is not Parquet, or lacks needed columns.
    #[error("{path}: {message}")]
    Data {
        /// The file.
        path: PathBuf,
        /// What is wrong with it and how to fix it.
        message: String,
    },
    /// Training could not produce a model.
    #[error("training failed: {0}")]
    Training(String),
    /// A feature specification is not understood.
    #[error("unknown feature `{0}`: use pu_do, pu, do, hour or trip_distance")]
    UnknownFeature(String),
}

impl ModelError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            source,
        }
    }

    #[cfg(feature = "train")]
    pub(crate) fn data(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Self::Data {
            path: path.into(),
            message: message.into(),
        }
    }
}
