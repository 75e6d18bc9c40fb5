use lambda_runtime::Diagnostic;

/// Everything that fails the function as a whole: configuration and model loading at cold start,
/// and events that are not Kinesis events at all. Records that fail one by one are not errors:
/// they are dead-lettered or reported for retry. Messages name the problem and the fix.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A required environment variable is missing.
    #[error("{var} is not set: {hint}")]
    MissingEnv {
        /// The variable.
        var: &'static str,
        /// What to set it to.
        hint: &'static str,
    },
    /// An environment variable has a value that cannot be used.
    #[error("{var}={value} is not valid: expected {expected}")]
    InvalidEnv {
        /// The variable.
        var: &'static str,
        /// Its value.
        value: String,
        /// What it should look like.
        expected: &'static str,
    },
    /// The model object or file does not exist.
    #[error(
        "model artifact {location} does not exist: check MODEL_LOCATION (or MODEL_BUCKET, MODEL_PREFIX and RUN_ID) and that training uploaded the run"
    )]
    ModelNotFound {
        /// Where it was looked for.
        location: String,
    },
    /// The model could not be fetched (access, network, endpoint).
    #[error(
        "could not read model artifact {location}: {message}; check the function's role, region and AWS_ENDPOINT_URL"
    )]
    ModelFetch {
        /// Where it was read from.
        location: String,
        /// The cause, with its error chain.
        message: String,
    },
    /// The bytes are not a usable model.
    #[error("model artifact {location} is unusable: {source}")]
    InvalidModel {
        /// Where it was read from.
        location: String,
        /// Why.
        #[source]
        source: model::ModelError,
    },
    /// The payload has a `Records` array but is not a Kinesis event.
    #[error(
        "payload has a `Records` array but is not a Kinesis event: {0}; send a Kinesis event, one ride object or a list of rides"
    )]
    InvalidEvent(String),
}

impl Error {
    /// A short error type for Lambda's `errorType`, so alarms and logs can tell init failures apart.
    pub fn error_type(&self) -> &'static str {
        match self {
            Self::MissingEnv { .. } | Self::InvalidEnv { .. } => "ConfigError",
            Self::ModelNotFound { .. } => "ModelNotFound",
            Self::ModelFetch { .. } => "ModelFetchError",
            Self::InvalidModel { .. } => "InvalidModel",
            Self::InvalidEvent(_) => "InvalidEvent",
        }
    }
}

impl From<Error> for Diagnostic {
    fn from(e: Error) -> Self {
        Diagnostic {
            error_type: e.error_type().to_string(),
            error_message: e.to_string(),
        }
    }
}

/// Renders an error with its whole source chain (`a: b: c`), since SDK errors put the useful part
/// (the service's code and message) in their sources.
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let s_text = s.to_string();
        if !out.contains(&s_text) {
            out.push_str(": ");
            out.push_str(&s_text);
        }
        cur = s.source();
    }
    out
}
