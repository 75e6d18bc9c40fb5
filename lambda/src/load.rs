//! Loading the model artifact once, at cold start.

use aws_sdk_s3::error::ProvideErrorMetadata;
use model::Model;

use crate::Error;
use crate::config::ModelSource;
use crate::error::chain;

/// Fetches, verifies and loads the model. A missing object, an unreadable one and a corrupt or
/// foreign artifact are three different, clearly worded errors.
pub async fn load_model(source: &ModelSource, s3: &aws_sdk_s3::Client) -> Result<Model, Error> {
    let location = source.to_string();
    let bytes = match source {
        ModelSource::File(path) => match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::ModelNotFound { location });
            }
            Err(e) => {
                return Err(Error::ModelFetch {
                    location,
                    message: e.to_string(),
                });
            }
        },
        ModelSource::S3 { bucket, key } => {
            let out = match s3.get_object().bucket(bucket).key(key).send().await {
                Ok(out) => out,
                Err(e) => {
                    let missing = e.as_service_error().is_some_and(|s| {
                        s.is_no_such_key()
                            || matches!(s.code(), Some("NoSuchKey" | "NoSuchBucket" | "NotFound"))
                    });
                    if missing {
                        return Err(Error::ModelNotFound { location });
                    }
                    return Err(Error::ModelFetch {
                        location,
                        message: chain(&e),
                    });
                }
            };
            let body = out.body.collect().await.map_err(|e| Error::ModelFetch {
                location: location.clone(),
                message: chain(&e),
            })?;
            body.into_bytes().to_vec()
        }
    };
    Model::from_bytes(&bytes).map_err(|source| Error::InvalidModel { location, source })
}
