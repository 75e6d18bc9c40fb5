//! `cargo xtask invoke`: run the function once on an event, locally through the Runtime API
//! emulator (the static `bootstrap`, or the image with `--image`), or with `--remote` through the
//! Lambda Invoke API of the environment's deployed function.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use serde::Serialize;

use crate::config::EnvConfig;
use crate::ctx::Ctx;
use crate::runtime_api::{FunctionHost, FunctionMode, FunctionSpec, InvokeOutcome};

/// moto's account: the account of every ARN on the local emulator.
pub const EMULATOR_ACCOUNT: &str = "123456789012";

/// Where the local function loads its model from.
#[derive(Debug, Clone, Default, Args)]
pub struct ModelArgs {
    /// Model artifact location for the function (`MODEL_LOCATION`): a local path or an `s3://` URI.
    #[arg(long, conflicts_with_all = ["model_bucket", "run_id"])]
    pub model_location: Option<String>,
    /// Bucket holding the model (`MODEL_BUCKET`); defaults to the environment's model_bucket.
    #[arg(long)]
    pub model_bucket: Option<String>,
    /// Training run whose model to load (`RUN_ID`).
    #[arg(long, env = "TAXI_RUN_ID")]
    pub run_id: Option<String>,
}

/// How the function runs locally.
#[derive(Debug, Clone, Default, Args)]
pub struct FunctionArgs {
    #[command(flatten)]
    pub model: ModelArgs,
    /// Run this container image (entrypoint `/bootstrap`) instead of the `bootstrap` binary.
    #[arg(long)]
    pub image: Option<String>,
    /// Run this bootstrap executable instead of building one.
    #[arg(long, conflicts_with = "image")]
    pub bootstrap: Option<PathBuf>,
}

/// Invoke the function once.
#[derive(Debug, Args)]
pub struct InvokeArgs {
    /// A JSON event file (e.g. a Kinesis event).
    #[arg(long, required_unless_present = "ride", conflicts_with = "ride")]
    event: Option<PathBuf>,
    /// One ride as JSON, wrapped into a one-record Kinesis event.
    #[arg(long)]
    ride: Option<String>,
    /// Call the deployed function through the Lambda Invoke API instead of running it locally.
    #[arg(long)]
    remote: bool,
    #[command(flatten)]
    function: FunctionArgs,
}

/// What an invocation returned.
#[derive(Debug, Serialize)]
pub struct InvokeReport {
    /// The function that ran.
    pub function: String,
    /// `local` or `remote`.
    pub mode: String,
    /// Wall time, cold start included for local runs.
    pub duration_ms: u64,
    /// The outcome.
    #[serde(flatten)]
    pub outcome: InvokeOutcome,
}

impl std::fmt::Display for InvokeReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{} ({}, {} ms)",
            self.function, self.mode, self.duration_ms
        )?;
        write!(f, "{}", self.outcome)
    }
}

impl InvokeArgs {
    pub async fn run(self, ctx: &Ctx) -> anyhow::Result<()> {
        let event = match (&self.event, &self.ride) {
            (Some(path), _) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("read event file {}", path.display()))?;
                serde_json::from_str(&text)
                    .with_context(|| format!("{} is not JSON", path.display()))?
            }
            (None, Some(ride)) => {
                let ride: serde_json::Value =
                    serde_json::from_str(ride).context("--ride is not JSON")?;
                ride_event(&ctx.env, &ride)?
            }
            (None, None) => bail!("give --event FILE or --ride JSON"),
        };
        let started = Instant::now();
        let (mode, outcome) = if self.remote {
            ("remote", invoke_remote(ctx, &event).await?)
        } else {
            let host = local_host(ctx, &self.function).await?;
            let outcome = host.invoke(&event).await?;
            host.shutdown().await;
            ("local", outcome)
        };
        let report = InvokeReport {
            function: ctx.env.function_name.clone(),
            mode: mode.into(),
            duration_ms: started.elapsed().as_millis() as u64,
            outcome,
        };
        ctx.emit(&report)?;
        if !report.outcome.is_ok() {
            bail!("the invocation failed");
        }
        Ok(())
    }
}

/// A one-record Kinesis event carrying `ride`, as the input stream would deliver it.
pub fn ride_event(env: &EnvConfig, ride: &serde_json::Value) -> anyhow::Result<serde_json::Value> {
    use base64::Engine;
    let data = base64::engine::general_purpose::STANDARD.encode(serde_json::to_vec(ride)?);
    let stream_arn = format!(
        "arn:aws:kinesis:{}:{EMULATOR_ACCOUNT}:stream/{}",
        env.region, env.input_stream
    );
    let seq = "49590338271490256608559692538361571095921575989136588898";
    Ok(serde_json::json!({
        "Records": [{
            "kinesis": {
                "kinesisSchemaVersion": "1.0",
                "partitionKey": "ride",
                "sequenceNumber": seq,
                "data": data,
                "approximateArrivalTimestamp": chrono::Utc::now().timestamp() as f64,
            },
            "eventSource": "aws:kinesis",
            "eventVersion": "1.0",
            "eventID": format!("shardId-000000000000:{seq}"),
            "eventName": "aws:kinesis:record",
            "awsRegion": env.region,
            "eventSourceARN": stream_arn,
        }]
    }))
}

/// The function's own variables, from the environment's config and the model flags. The
/// deployed function (when the emulator has one) adds its configured variables underneath.
pub fn function_env(env: &EnvConfig, model: &ModelArgs) -> BTreeMap<String, String> {
    let mut vars = BTreeMap::new();
    match &model.model_location {
        Some(loc) => {
            vars.insert("MODEL_LOCATION".to_string(), loc.clone());
        }
        None => {
            vars.insert(
                "MODEL_BUCKET".into(),
                model
                    .model_bucket
                    .clone()
                    .unwrap_or_else(|| env.model_bucket.clone()),
            );
            if let Some(run) = &model.run_id {
                vars.insert("RUN_ID".into(), run.clone());
            }
        }
    }
    vars.insert("PREDICTIONS_STREAM_NAME".into(), env.output_stream.clone());
    vars.insert("DEAD_LETTER".into(), env.dead_letter().to_env_value());
    vars
}

/// A [`FunctionHost`] for the environment's function: the deployed configuration when the
/// emulator has the function (ARN, timeout, memory, variables), the environment's config otherwise.
pub async fn local_host(ctx: &Ctx, args: &FunctionArgs) -> anyhow::Result<FunctionHost> {
    let mode = match (&args.image, &args.bootstrap) {
        (Some(image), _) => FunctionMode::Container {
            image: image.clone(),
        },
        (None, Some(path)) => FunctionMode::Process {
            bootstrap: path.clone(),
        },
        (None, None) => {
            let root = ctx.root.clone();
            let built =
                tokio::task::spawn_blocking(move || crate::build::build_lambda(&root, false))
                    .await??;
            FunctionMode::Process {
                bootstrap: built.path,
            }
        }
    };
    let env = &ctx.env;
    // A `local` environment needs its emulator (the error says how to start it); an `aws` one
    // runs the function locally against real AWS.
    let endpoint = ctx.endpoint()?;
    let arn = format!(
        "arn:aws:lambda:{}:{EMULATOR_ACCOUNT}:function:{}",
        env.region, env.function_name
    );
    let mut spec = FunctionSpec::new(&env.function_name, &arn, &env.region, mode);
    spec.timeout = Duration::from_secs(env.timeout_s.into());
    spec.memory_mb = env.memory_mb;
    spec.endpoint = endpoint.clone();
    if endpoint.is_some() {
        deployed_config(ctx, &mut spec).await?;
    }
    spec.env.extend(function_env(env, &args.model));
    FunctionHost::start(spec).await
}

/// Overlays the deployed function's configuration, when the emulator has the function.
async fn deployed_config(ctx: &Ctx, spec: &mut FunctionSpec) -> anyhow::Result<()> {
    let lambda = aws_sdk_lambda::Client::new(&ctx.aws().await?);
    let Ok(found) = lambda
        .get_function_configuration()
        .function_name(&spec.function_name)
        .send()
        .await
    else {
        return Ok(());
    };
    if let Some(arn) = found.function_arn() {
        spec.arn = arn.to_string();
    }
    if let Some(t) = found.timeout() {
        spec.timeout = Duration::from_secs(t.max(1) as u64);
    }
    if let Some(m) = found.memory_size() {
        spec.memory_mb = m.max(128) as u32;
    }
    if let Some(vars) = found.environment().and_then(|e| e.variables()) {
        spec.env
            .extend(vars.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    Ok(())
}

async fn invoke_remote(ctx: &Ctx, event: &serde_json::Value) -> anyhow::Result<InvokeOutcome> {
    let lambda = aws_sdk_lambda::Client::new(&ctx.aws().await?);
    let name = &ctx.env.function_name;
    let out = lambda
        .invoke()
        .function_name(name)
        .payload(aws_smithy_types::Blob::new(serde_json::to_vec(event)?))
        .send()
        .await
        .with_context(|| {
            format!(
                "invoke {name}: deploy it first with `cargo xtask deploy --env {}`",
                ctx.env.name
            )
        })?;
    let body = out
        .payload()
        .map(|b| b.as_ref().to_vec())
        .unwrap_or_default();
    let doc: serde_json::Value = serde_json::from_slice(&body)
        .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&body).into()));
    Ok(match out.function_error() {
        None => InvokeOutcome::Ok { response: doc },
        Some(kind) => InvokeOutcome::FunctionError {
            error_type: doc
                .get("errorType")
                .and_then(|v| v.as_str())
                .unwrap_or(kind)
                .to_string(),
            error_message: doc
                .get("errorMessage")
                .and_then(|v| v.as_str())
                .unwrap_or_default()
                .to_string(),
        },
    })
}
