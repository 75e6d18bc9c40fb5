//! Per-environment configuration: defaults, then `config/env/<env>.toml`, then a `.env.<env>`
//! file (secrets, never committed), then `TAXI_<KEY>` environment variables.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

/// The environments a stack can be deployed to. Nothing ever touches another environment.
pub const ENVIRONMENTS: [&str; 3] = ["dev", "stg", "prod"];

/// Where an environment's resources live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// The local AWS emulator (moto by default, LocalStack or another through `AWS_ENDPOINT_URL`).
    Local,
    /// A real AWS account.
    Aws,
}

/// Where records that can never succeed are sent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub enum DeadLetter {
    /// A Kinesis stream, by name.
    Kinesis(String),
    /// An S3 bucket and key prefix.
    S3 { bucket: String, prefix: String },
}

impl DeadLetter {
    /// Parses `kinesis:<stream>` or `s3://<bucket>/<prefix>`.
    pub fn parse(s: &str) -> anyhow::Result<Self> {
        if let Some(stream) = s.strip_prefix("kinesis:") {
            if stream.is_empty() {
                bail!("dead_letter `{s}` names no stream: write `kinesis:<stream name>`");
            }
            return Ok(Self::Kinesis(stream.to_string()));
        }
        if let Some(rest) = s.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                bail!("dead_letter `{s}` names no bucket: write `s3://<bucket>/<prefix>`");
            }
            return Ok(Self::S3 {
                bucket: bucket.to_string(),
                prefix: prefix.trim_end_matches('/').to_string(),
            });
        }
        bail!("dead_letter `{s}` is neither `kinesis:<stream>` nor `s3://<bucket>/<prefix>`")
    }

    /// The form the Lambda's `DEAD_LETTER` variable takes.
    pub fn to_env_value(&self) -> String {
        match self {
            Self::Kinesis(stream) => format!("kinesis:{stream}"),
            Self::S3 { bucket, prefix } => format!("s3://{bucket}/{prefix}"),
        }
    }
}

/// One environment's settings, fully resolved.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvConfig {
    pub name: String,
    pub target: Target,
    pub region: String,
    pub stack_name: String,
    pub model_bucket: String,
    pub model_prefix: String,
    pub input_stream: String,
    pub output_stream: String,
    pub dead_letter: String,
    pub ecr_repository: String,
    pub function_name: String,
    pub input_shards: u32,
    pub output_shards: u32,
    pub memory_mb: u32,
    pub timeout_s: u32,
    pub batch_size: u32,
    pub batching_window_s: u32,
    pub max_retry_attempts: i32,
    pub log_retention_days: u32,
    pub alarm_errors_threshold: u32,
    pub alarm_iterator_age_ms: u64,
    pub promotion_margin: f64,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

impl EnvConfig {
    /// Loads `config/env/<env>.toml` under `root`, overlaid with `.env.<env>` and `TAXI_*` variables.
    pub fn load(root: &Path, env: &str) -> anyhow::Result<Self> {
        if !ENVIRONMENTS.contains(&env) {
            bail!(
                "unknown environment `{env}`: use one of {}",
                ENVIRONMENTS.join(", ")
            );
        }
        let path = root.join("config/env").join(format!("{env}.toml"));
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("read environment config {}", path.display()))?;
        let mut table: toml::Table =
            toml::from_str(&text).with_context(|| format!("parse {}", path.display()))?;
        let dotenv = read_dotenv(&root.join(format!(".env.{env}")))?;
        let vars: BTreeMap<String, String> = dotenv.into_iter().chain(std::env::vars()).collect();
        for (key, value) in table.iter_mut() {
            if key == "tags" {
                continue;
            }
            let var = format!("TAXI_{}", key.to_uppercase());
            if let Some(raw) = vars.get(&var) {
                *value = override_value(value, raw).with_context(|| {
                    format!("{var}={raw} does not fit `{key}` in {}", path.display())
                })?;
            }
        }
        let cfg: EnvConfig = table
            .try_into()
            .with_context(|| format!("{} is not a valid environment config", path.display()))?;
        if cfg.name != env {
            bail!(
                "{} says name = \"{}\", expected \"{env}\"",
                path.display(),
                cfg.name
            );
        }
        DeadLetter::parse(&cfg.dead_letter)?;
        Ok(cfg)
    }

    /// The dead-letter destination, parsed.
    pub fn dead_letter(&self) -> DeadLetter {
        DeadLetter::parse(&self.dead_letter).expect("validated at load")
    }
}

/// Keeps the type of the file's value: a number stays a number.
fn override_value(current: &toml::Value, raw: &str) -> anyhow::Result<toml::Value> {
    Ok(match current {
        toml::Value::Integer(_) => toml::Value::Integer(raw.trim().parse()?),
        toml::Value::Float(_) => toml::Value::Float(raw.trim().parse()?),
        toml::Value::Boolean(_) => toml::Value::Boolean(raw.trim().parse()?),
        _ => toml::Value::String(raw.to_string()),
    })
}

/// Reads `KEY=VALUE` lines from a `.env` file; a missing file is empty. Quotes around values are removed.
pub fn read_dotenv(path: &Path) -> anyhow::Result<Vec<(String, String)>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("read {}", path.display())),
    };
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((k, v)) = line.split_once('=') else {
            bail!("{}:{}: expected KEY=VALUE", path.display(), n + 1);
        };
        let v = v.trim();
        let v = v
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .or_else(|| v.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
            .unwrap_or(v);
        out.push((k.trim().to_string(), v.to_string()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .unwrap()
            .to_path_buf()
    }

    #[test]
    fn every_environment_loads_and_names_its_own_resources() {
        for env in ENVIRONMENTS {
            let cfg = EnvConfig::load(&root(), env).unwrap();
            assert_eq!(cfg.name, env);
            for name in [
                &cfg.stack_name,
                &cfg.model_bucket,
                &cfg.input_stream,
                &cfg.output_stream,
                &cfg.function_name,
            ] {
                assert!(
                    name.contains(env),
                    "{name} should carry the environment name {env}"
                );
            }
            assert_ne!(
                cfg.input_stream, cfg.output_stream,
                "the function must not read its own output"
            );
        }
    }

    #[test]
    fn unknown_environment_is_refused() {
        let err = EnvConfig::load(&root(), "qa").unwrap_err().to_string();
        assert!(err.contains("dev, stg, prod"), "{err}");
    }

    #[test]
    fn dead_letter_forms_parse() {
        assert_eq!(
            DeadLetter::parse("kinesis:dlq").unwrap(),
            DeadLetter::Kinesis("dlq".into())
        );
        assert_eq!(
            DeadLetter::parse("s3://b/dead/").unwrap(),
            DeadLetter::S3 {
                bucket: "b".into(),
                prefix: "dead".into()
            }
        );
        assert!(DeadLetter::parse("sqs:q").is_err());
    }

    #[test]
    fn dotenv_lines_parse() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(".env.dev");
        std::fs::write(&p, "# c\nexport A=1\nB=\"two\"\n\nC='3'\n").unwrap();
        let v = read_dotenv(&p).unwrap();
        assert_eq!(
            v,
            vec![
                ("A".into(), "1".into()),
                ("B".into(), "two".into()),
                ("C".into(), "3".into())
            ]
        );
    }
}
