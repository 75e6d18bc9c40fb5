//! The function's configuration, read once from environment variables at cold start.
//!
//! | variable | meaning |
//! |---|---|
//! | `MODEL_LOCATION` | `s3://bucket/key` or a file path of the model artifact (a key or path ending in `/` gets `model.json` appended) |
//! | `MODEL_BUCKET`, `RUN_ID`, `MODEL_PREFIX` | otherwise: the artifact at `s3://<MODEL_BUCKET>/<MODEL_PREFIX>/<RUN_ID>/model.json`; `MODEL_PREFIX` defaults to `models` |
//! | `PREDICTIONS_STREAM_NAME` | the Kinesis stream predictions go to (required unless `TEST_RUN`) |
//! | `DEAD_LETTER` | `kinesis:<stream>` or `s3://<bucket>/<prefix>`: where records that can never succeed go (required unless `TEST_RUN`) |
//! | `TEST_RUN` | `true`: return predictions in the response and write nothing |
//!
//! Empty values count as unset, because templates often pass `""` for an optional parameter.
//! When `MODEL_LOCATION` is set it wins over `MODEL_BUCKET`/`RUN_ID`; the init log line names the
//! location actually used.

use std::fmt;
use std::path::PathBuf;

use crate::Error;

/// The default key prefix under `MODEL_BUCKET`, the layout the training step writes.
pub const DEFAULT_MODEL_PREFIX: &str = "models";

/// Where the model artifact is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    /// An S3 object.
    S3 {
        /// The bucket.
        bucket: String,
        /// The object key.
        key: String,
    },
    /// A local file (for example baked into the image, or in tests).
    File(PathBuf),
}

impl fmt::Display for ModelSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::S3 { bucket, key } => write!(f, "s3://{bucket}/{key}"),
            Self::File(path) => write!(f, "{}", path.display()),
        }
    }
}

impl ModelSource {
    /// Parses `MODEL_LOCATION`: `s3://bucket/key` or a file path (`file://` allowed).
    pub fn parse(location: &str) -> Result<Self, Error> {
        if let Some(rest) = location.strip_prefix("s3://") {
            let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() || key.is_empty() {
                return Err(Error::InvalidEnv {
                    var: "MODEL_LOCATION",
                    value: location.to_string(),
                    expected: "s3://<bucket>/<key> naming both a bucket and a key",
                });
            }
            let key = if key.ends_with('/') {
                format!("{key}{}", model::artifact::FILE_NAME)
            } else {
                key.to_string()
            };
            return Ok(Self::S3 {
                bucket: bucket.to_string(),
                key,
            });
        }
        let path = PathBuf::from(location.strip_prefix("file://").unwrap_or(location));
        Ok(Self::File(if location.ends_with('/') {
            path.join(model::artifact::FILE_NAME)
        } else {
            path
        }))
    }
}

/// Where records that can never succeed are sent. Same syntax as the `dead_letter` setting of
/// `xtask`'s environment files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeadLetter {
    /// A Kinesis stream, by name.
    Kinesis(String),
    /// An S3 bucket and key prefix (no trailing slash; may be empty).
    S3 {
        /// The bucket.
        bucket: String,
        /// The key prefix.
        prefix: String,
    },
}

impl DeadLetter {
    /// Parses `kinesis:<stream>` or `s3://<bucket>/<prefix>`.
    pub fn parse(s: &str) -> Result<Self, Error> {
        let invalid = || Error::InvalidEnv {
            var: "DEAD_LETTER",
            value: s.to_string(),
            expected: "kinesis:<stream> or s3://<bucket>/<prefix>",
        };
        if let Some(stream) = s.strip_prefix("kinesis:") {
            return if stream.is_empty() {
                Err(invalid())
            } else {
                Ok(Self::Kinesis(stream.to_string()))
            };
        }
        if let Some(rest) = s.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err(invalid());
            }
            return Ok(Self::S3 {
                bucket: bucket.to_string(),
                prefix: prefix.trim_matches('/').to_string(),
            });
        }
        Err(invalid())
    }
}

impl fmt::Display for DeadLetter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Kinesis(stream) => write!(f, "kinesis:{stream}"),
            Self::S3 { bucket, prefix } => write!(f, "s3://{bucket}/{prefix}"),
        }
    }
}

/// Where predictions and dead letters go when the function is not in test-run mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destinations {
    /// The Kinesis stream predictions are written to.
    pub predictions_stream: String,
    /// Where records that can never succeed are written.
    pub dead_letter: DeadLetter,
}

/// The resolved configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Where the model is read from.
    pub model: ModelSource,
    /// `None` in test-run mode: predictions are returned and nothing is written.
    pub destinations: Option<Destinations>,
}

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, Error> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the configuration through `lookup` (the environment in production, a map in tests).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, Error> {
        let get = |name: &str| {
            lookup(name)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let model = match (get("MODEL_LOCATION"), get("MODEL_BUCKET"), get("RUN_ID")) {
            (Some(location), _, _) => ModelSource::parse(&location)?,
            (None, Some(bucket), Some(run_id)) => {
                let prefix =
                    get("MODEL_PREFIX").unwrap_or_else(|| DEFAULT_MODEL_PREFIX.to_string());
                let prefix = prefix.trim_matches('/');
                let key = if prefix.is_empty() {
                    format!("{run_id}/{}", model::artifact::FILE_NAME)
                } else {
                    format!("{prefix}/{run_id}/{}", model::artifact::FILE_NAME)
                };
                ModelSource::S3 { bucket, key }
            }
            (None, Some(_), None) => {
                return Err(Error::MissingEnv {
                    var: "RUN_ID",
                    hint: "MODEL_BUCKET is set, so RUN_ID must name the training run whose model to serve",
                });
            }
            (None, None, _) => {
                return Err(Error::MissingEnv {
                    var: "MODEL_LOCATION",
                    hint: "set MODEL_LOCATION to s3://<bucket>/<key> or a file path, or set MODEL_BUCKET and RUN_ID",
                });
            }
        };
        let test_run = match get("TEST_RUN").map(|v| v.to_ascii_lowercase()) {
            None => false,
            Some(v) if v == "true" || v == "1" || v == "yes" => true,
            Some(v) if v == "false" || v == "0" || v == "no" => false,
            Some(v) => {
                return Err(Error::InvalidEnv {
                    var: "TEST_RUN",
                    value: v,
                    expected: "true or false",
                });
            }
        };
        let destinations = if test_run {
            None
        } else {
            let predictions_stream = get("PREDICTIONS_STREAM_NAME").ok_or(Error::MissingEnv {
                var: "PREDICTIONS_STREAM_NAME",
                hint: "name the Kinesis stream predictions are written to (or set TEST_RUN=true to write nothing)",
            })?;
            let dead_letter = DeadLetter::parse(&get("DEAD_LETTER").ok_or(Error::MissingEnv {
                var: "DEAD_LETTER",
                hint: "set kinesis:<stream> or s3://<bucket>/<prefix> for records that can never succeed (or TEST_RUN=true)",
            })?)?;
            Some(Destinations {
                predictions_stream,
                dead_letter,
            })
        };
        Ok(Self {
            model,
            destinations,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn config(vars: &[(&str, &str)]) -> Result<Config, Error> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|k| map.get(k).cloned())
    }

    const OUT: [(&str, &str); 2] = [
        ("PREDICTIONS_STREAM_NAME", "out"),
        ("DEAD_LETTER", "kinesis:dlq"),
    ];

    #[test]
    fn bucket_and_run_id_follow_the_training_layout() {
        let c = config(&[("MODEL_BUCKET", "b"), ("RUN_ID", "r1"), OUT[0], OUT[1]]).unwrap();
        assert_eq!(
            c.model,
            ModelSource::S3 {
                bucket: "b".into(),
                key: "models/r1/model.json".into()
            }
        );
        let c = config(&[
            ("MODEL_BUCKET", "b"),
            ("RUN_ID", "r1"),
            ("MODEL_PREFIX", "/m/x/"),
            OUT[0],
            OUT[1],
        ])
        .unwrap();
        assert_eq!(c.model.to_string(), "s3://b/m/x/r1/model.json");
        let d = c.destinations.unwrap();
        assert_eq!(d.predictions_stream, "out");
        assert_eq!(d.dead_letter, DeadLetter::Kinesis("dlq".into()));
    }

    #[test]
    fn model_location_takes_s3_urls_and_paths() {
        let c = config(&[
            ("MODEL_LOCATION", "s3://b/k/model.json"),
            ("RUN_ID", "ignored"),
            OUT[0],
            OUT[1],
        ])
        .unwrap();
        assert_eq!(
            c.model,
            ModelSource::S3 {
                bucket: "b".into(),
                key: "k/model.json".into()
            }
        );
        let c = config(&[("MODEL_LOCATION", "s3://b/runs/7/"), OUT[0], OUT[1]]).unwrap();
        assert_eq!(c.model.to_string(), "s3://b/runs/7/model.json");
        let c = config(&[("MODEL_LOCATION", "/opt/model/"), ("TEST_RUN", "true")]).unwrap();
        assert_eq!(c.model, ModelSource::File("/opt/model/model.json".into()));
        assert_eq!(c.destinations, None);
        assert!(matches!(
            config(&[("MODEL_LOCATION", "s3://bucket-only")]),
            Err(Error::InvalidEnv { .. })
        ));
    }

    #[test]
    fn missing_settings_name_the_variable() {
        let err = config(&[]).unwrap_err().to_string();
        assert!(
            err.contains("MODEL_LOCATION") && err.contains("RUN_ID"),
            "{err}"
        );
        let err = config(&[("MODEL_BUCKET", "b"), ("RUN_ID", "")])
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("RUN_ID is not set"), "{err}");
        let err = config(&[("MODEL_LOCATION", "/m")]).unwrap_err().to_string();
        assert!(err.contains("PREDICTIONS_STREAM_NAME"), "{err}");
        let err = config(&[("MODEL_LOCATION", "/m"), OUT[0]])
            .unwrap_err()
            .to_string();
        assert!(err.contains("DEAD_LETTER"), "{err}");
        let err = config(&[("MODEL_LOCATION", "/m"), OUT[0], ("DEAD_LETTER", "sqs:q")])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("sqs:q") && err.contains("kinesis:<stream>"),
            "{err}"
        );
        let err = config(&[("MODEL_LOCATION", "/m"), ("TEST_RUN", "maybe")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("TEST_RUN"), "{err}");
    }

    #[test]
    fn dead_letter_forms_parse() {
        assert_eq!(
            DeadLetter::parse("s3://b/dead/letters/").unwrap(),
            DeadLetter::S3 {
                bucket: "b".into(),
                prefix: "dead/letters".into()
            }
        );
        assert_eq!(
            DeadLetter::parse("s3://b").unwrap(),
            DeadLetter::S3 {
                bucket: "b".into(),
                prefix: String::new()
            }
        );
        assert!(DeadLetter::parse("kinesis:").is_err());
        assert!(DeadLetter::parse("s3:///x").is_err());
    }
}
