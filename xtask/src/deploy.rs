//! `cargo xtask deploy --env E`: the service stack of one environment, by CloudFormation change
//! sets (default) or Terraform.
//!
//! Order of a first deploy: the model bucket and the image repository belong to the stack, so the
//! stack is first created without the function (`ImageUri` empty). Then the model is uploaded to
//! `s3://<bucket>/<model_prefix>/<run id>/model.json` and the image is chosen, and a second change
//! set adds the function, its event-source mapping and alarms. Later deploys are one change set.
//! The function reads its model only at cold start; a new run id changes its environment, which
//! makes Lambda start fresh execution environments that load the new model.

use std::fmt;
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use serde::Serialize;

use crate::ctx::Ctx;
use crate::stack::{self, Plan, Release, ServiceOutputs};

/// Which tool deploys the stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// CloudFormation change sets, from stacks/service.yaml.
    #[default]
    Cloudformation,
    /// Terraform or OpenTofu, from terraform/ with vars/<env>.tfvars.
    Terraform,
}

/// Deploy the service stack of an environment.
#[derive(Debug, Clone, Default, Args)]
pub struct DeployArgs {
    /// Which tool deploys the stack.
    #[arg(long, value_enum, default_value_t)]
    pub engine: Engine,
    /// The function's image in this environment's repository (`<repository uri>:<tag>` or `@sha256:...`).
    /// Without it the deployed image is kept.
    #[arg(long)]
    pub image_uri: Option<String>,
    /// A model artifact to upload to `s3://<bucket>/<model_prefix>/<run id>/model.json`; the run id
    /// is --run-id or else the artifact's version.
    #[arg(long, conflicts_with = "model_location")]
    pub model_file: Option<PathBuf>,
    /// An uploaded model, `s3://<bucket>/<model_prefix>/...`, used instead of a run id.
    #[arg(long, conflicts_with = "run_id")]
    pub model_location: Option<String>,
    /// The run id of a model already uploaded (or the run id to upload --model-file under).
    #[arg(long)]
    pub run_id: Option<String>,
    /// Shorthand for the three above: a local artifact path, `run:<id>` or `s3://...`.
    #[arg(long, conflicts_with_all = ["model_file", "model_location", "run_id"])]
    pub model: Option<String>,
}

impl DeployArgs {
    /// Expands `--model` into --model-file, --run-id or --model-location.
    pub fn resolved(&self) -> anyhow::Result<Self> {
        let mut out = self.clone();
        let Some(spec) = out.model.take() else {
            return Ok(out);
        };
        if let Some(id) = spec.strip_prefix("run:") {
            out.run_id = Some(id.to_string());
        } else if spec.starts_with("s3://") {
            out.model_location = Some(spec);
        } else if let Some(alias) = spec.strip_prefix("alias:") {
            bail!(
                "--model {spec}: model aliases such as `{alias}` live in the MLflow registry, which deploy does not \
                 read yet; pass --model run:<id> (or --model-file <artifact>) instead"
            );
        } else {
            out.model_file = Some(PathBuf::from(spec));
        }
        Ok(out)
    }
}

impl DeployArgs {
    pub async fn run(self, ctx: &Ctx) -> anyhow::Result<()> {
        let args = self.resolved()?;
        let report = match args.engine {
            Engine::Cloudformation => deploy(ctx, &args).await?,
            Engine::Terraform => crate::terraform::deploy(ctx, &args).await?,
        };
        ctx.emit(&report)
    }
}

/// What a deploy did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeployStatus {
    /// The stack was created.
    Created,
    /// The stack was updated.
    Updated,
    /// Nothing needed changing; nothing was changed.
    Unchanged,
    /// A dry run: the plan was printed, nothing was changed.
    Planned,
}

/// Where the deployed model is.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ModelRef {
    pub bucket: String,
    pub key: String,
    pub run_id: Option<String>,
    /// True when this deploy uploaded it.
    pub uploaded: bool,
}

/// The result of `deploy`.
#[derive(Debug, Clone, Serialize)]
pub struct DeployReport {
    pub environment: String,
    pub engine: Engine,
    pub status: DeployStatus,
    /// The change sets computed, in order (two on a first deploy).
    pub plans: Vec<Plan>,
    pub model: Option<ModelRef>,
    pub image_uri: Option<String>,
    pub outputs: Option<ServiceOutputs>,
}

impl fmt::Display for DeployReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.status {
            DeployStatus::Created => "created",
            DeployStatus::Updated => "updated",
            DeployStatus::Unchanged => "unchanged (no changes)",
            DeployStatus::Planned => "planned (dry run, nothing changed)",
        };
        writeln!(f, "deploy {}: {what}", self.environment)?;
        if let Some(m) = &self.model {
            let up = if m.uploaded { " (uploaded)" } else { "" };
            writeln!(f, "model: s3://{}/{}{up}", m.bucket, m.key)?;
        }
        if let Some(o) = &self.outputs {
            write!(f, "{o}")?;
        }
        Ok(())
    }
}

/// Prints a plan where people read it: stdout in text mode, stderr beside JSON.
fn show(ctx: &Ctx, plan: &Plan) {
    if ctx.json() {
        ctx.note(plan);
    } else {
        println!("{plan}");
    }
}

/// Creates `ctx.env`'s stack without the function when there is none yet, so that the bucket and
/// the repository exist for the model and the image. Returns the stack's outputs and the plan
/// executed, if any. Used by [`deploy`]; e2e may call it to push an image before deploying.
pub async fn ensure_foundation(ctx: &Ctx) -> anyhow::Result<(ServiceOutputs, Option<Plan>)> {
    let sdk = ctx.aws().await?;
    let cf = stack::client(&sdk);
    let existing = stack::describe_stack(&cf, &ctx.env.stack_name).await?;
    let mut executed = None;
    if existing
        .as_ref()
        .is_none_or(|s| s.status == "REVIEW_IN_PROGRESS")
    {
        let template = stack::template_body(&ctx.root)?;
        let params = stack::parameters(&ctx.env, &Release::default())?;
        let plan = stack::create_change_set(&cf, &ctx.env, &template, &params).await?;
        show(ctx, &plan);
        if ctx.dry_run {
            stack::discard(&cf, &plan).await?;
            bail!(
                "dry run: stack {} does not exist yet, so there are no outputs to show",
                ctx.env.stack_name
            );
        }
        ctx.note(format!(
            "creating stack {} without the function (bucket and repository first)",
            ctx.env.stack_name
        ));
        stack::execute(ctx, &cf, &plan).await?;
        executed = Some(plan);
    }
    let outputs = stack::service_outputs(&sdk, &ctx.env)
        .await?
        .with_context(|| format!("stack {} vanished while deploying", ctx.env.stack_name))?;
    Ok((outputs, executed))
}

/// Deploys `ctx.env`'s stack by CloudFormation: see the module docs for the order.
/// Honours `ctx.dry_run` (prints the change sets, changes nothing) and asks `ctx.confirm` in prod.
pub async fn deploy(ctx: &Ctx, args: &DeployArgs) -> anyhow::Result<DeployReport> {
    let args = &args.resolved()?;
    if ctx.env.name == "prod" {
        ctx.confirm("deploy the service")?;
    }
    if let Some(loc) = &args.model_location
        && !loc.starts_with("s3://")
    {
        bail!(
            "--model-location {loc} is not an s3:// location: give s3://<bucket>/<key>, or use --model-file"
        );
    }
    let sdk = ctx.aws().await?;
    let cf = stack::client(&sdk);
    let template = stack::template_body(&ctx.root)?;
    let mut plans = Vec::new();
    let existed = stack::describe_stack(&cf, &ctx.env.stack_name)
        .await?
        .is_some_and(|s| s.status != "REVIEW_IN_PROGRESS");

    if !existed && ctx.dry_run {
        let params = stack::parameters(&ctx.env, &Release::default())?;
        let plan = stack::create_change_set(&cf, &ctx.env, &template, &params).await?;
        show(ctx, &plan);
        stack::discard(&cf, &plan).await?;
        ctx.note("then: upload the model to the new bucket, push the image, and add the function in a second change set");
        plans.push(plan);
        return Ok(report(ctx, DeployStatus::Planned, plans, None, None, None));
    }

    let (outputs, foundation) = ensure_foundation(ctx).await?;
    plans.extend(foundation);

    let model = resolve_model(ctx, &sdk, &outputs, args).await?;
    let image_uri = resolve_image(ctx, &outputs, args).await?;
    check_image_belongs_here(&image_uri, &outputs)?;
    let release = Release {
        image_uri: Some(image_uri.clone()),
        run_id: model.run_id.clone(),
        model_location: model.location.clone(),
    };

    let params = stack::parameters(&ctx.env, &release)?;
    let plan = stack::create_change_set(&cf, &ctx.env, &template, &params).await?;
    show(ctx, &plan);
    let status = if plan.is_empty() {
        ctx.note(format!(
            "no changes: stack {} is up to date",
            ctx.env.stack_name
        ));
        if existed {
            DeployStatus::Unchanged
        } else {
            DeployStatus::Created
        }
    } else if ctx.dry_run {
        stack::discard(&cf, &plan).await?;
        DeployStatus::Planned
    } else {
        stack::execute(ctx, &cf, &plan).await?;
        if existed {
            DeployStatus::Updated
        } else {
            DeployStatus::Created
        }
    };
    plans.push(plan);
    let outputs = match status {
        DeployStatus::Planned => Some(outputs),
        _ => stack::service_outputs(&sdk, &ctx.env).await?,
    };
    Ok(report(
        ctx,
        status,
        plans,
        Some(model.reference),
        Some(image_uri),
        outputs,
    ))
}

fn report(
    ctx: &Ctx,
    status: DeployStatus,
    plans: Vec<Plan>,
    model: Option<ModelRef>,
    image_uri: Option<String>,
    outputs: Option<ServiceOutputs>,
) -> DeployReport {
    DeployReport {
        environment: ctx.env.name.clone(),
        engine: Engine::Cloudformation,
        status,
        plans,
        model,
        image_uri,
        outputs,
    }
}

/// The model a deploy points the function at.
#[derive(Debug, Clone)]
pub struct ResolvedModel {
    pub run_id: Option<String>,
    pub location: Option<String>,
    pub reference: ModelRef,
}

/// Splits `s3://bucket/key`.
pub fn parse_s3(uri: &str) -> anyhow::Result<(String, String)> {
    let rest = uri
        .strip_prefix("s3://")
        .with_context(|| format!("{uri} is not an s3:// uri"))?;
    match rest.split_once('/') {
        Some((b, k)) if !b.is_empty() && !k.is_empty() => Ok((b.to_string(), k.to_string())),
        _ => bail!("{uri} names no object: write s3://<bucket>/<key>"),
    }
}

/// Uploads `--model-file`, or checks that `--run-id` / `--model-location` exist, or keeps the
/// deployed model. The artifact is verified (format, checksum) before it is uploaded.
pub async fn resolve_model(
    ctx: &Ctx,
    sdk: &aws_config::SdkConfig,
    outputs: &ServiceOutputs,
    args: &DeployArgs,
) -> anyhow::Result<ResolvedModel> {
    let s3 = crate::ctx::s3_client(sdk);
    let bucket = outputs.model_bucket.clone();
    if let Some(path) = &args.model_file {
        let bytes =
            std::fs::read(path).with_context(|| format!("read model file {}", path.display()))?;
        let artifact = model::artifact::Artifact::from_bytes(&bytes).with_context(|| {
            format!(
                "{} is not a valid model artifact (train one with `cargo xtask train`)",
                path.display()
            )
        })?;
        let run_id = args
            .run_id
            .clone()
            .unwrap_or_else(|| artifact.version.clone());
        let key = outputs.model_key(&run_id);
        let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes));
        let same = match s3.head_object().bucket(&bucket).key(&key).send().await {
            Ok(h) => h.metadata().and_then(|m| m.get("sha256")) == Some(&sha),
            Err(_) => false,
        };
        let uploaded = if same {
            ctx.note(format!("model s3://{bucket}/{key} already uploaded"));
            false
        } else if ctx.dry_run {
            ctx.note(format!(
                "would upload {} to s3://{bucket}/{key}",
                path.display()
            ));
            false
        } else {
            s3.put_object()
                .bucket(&bucket)
                .key(&key)
                .body(bytes.into())
                .content_type("application/json")
                .metadata("sha256", &sha)
                .metadata("model-version", &artifact.version)
                .send()
                .await
                .with_context(|| format!("upload the model to s3://{bucket}/{key}"))?;
            ctx.note(format!(
                "uploaded model {} to s3://{bucket}/{key}",
                artifact.version
            ));
            true
        };
        return Ok(ResolvedModel {
            run_id: Some(run_id.clone()),
            location: None,
            reference: ModelRef {
                bucket,
                key,
                run_id: Some(run_id),
                uploaded,
            },
        });
    }
    if let Some(loc) = &args.model_location {
        let (b, k) = parse_s3(loc)?;
        let prefix = format!("{}/", outputs.model_prefix);
        if b != bucket || !k.starts_with(&prefix) {
            bail!(
                "--model-location {loc} is outside s3://{bucket}/{prefix}: the function may read only its own bucket's \
                 model prefix; upload the model with --model-file instead"
            );
        }
        s3.head_object()
            .bucket(&b)
            .key(&k)
            .send()
            .await
            .with_context(|| format!("no model at {loc}: upload one with --model-file"))?;
        return Ok(ResolvedModel {
            run_id: None,
            location: Some(loc.clone()),
            reference: ModelRef {
                bucket: b,
                key: k,
                run_id: None,
                uploaded: false,
            },
        });
    }
    let (run_id, location) = match (&args.run_id, &outputs.run_id, &outputs.model_location) {
        (Some(r), _, _) => (Some(r.clone()), None),
        (None, _, Some(l)) => (None, Some(l.clone())),
        (None, Some(r), None) => (Some(r.clone()), None),
        (None, None, None) => bail!(
            "no model deployed in `{}` yet: pass --model-file <artifact> (or --run-id <id> of an upload under s3://{bucket}/{}/)",
            ctx.env.name,
            outputs.model_prefix
        ),
    };
    let (b, key) = match &location {
        Some(l) => parse_s3(l)?,
        None => (
            bucket.clone(),
            outputs.model_key(run_id.as_deref().expect("run id set")),
        ),
    };
    s3.head_object()
        .bucket(&b)
        .key(&key)
        .send()
        .await
        .with_context(|| {
            format!(
                "no model at s3://{b}/{key}: upload it with --model-file <artifact> --run-id {}",
                run_id.clone().unwrap_or_default()
            )
        })?;
    Ok(ResolvedModel {
        run_id: run_id.clone(),
        location,
        reference: ModelRef {
            bucket: b,
            key,
            run_id,
            uploaded: false,
        },
    })
}

/// `--image-uri`, else the deployed image, else an error saying how to get one.
async fn resolve_image(
    ctx: &Ctx,
    outputs: &ServiceOutputs,
    args: &DeployArgs,
) -> anyhow::Result<String> {
    if let Some(uri) = &args.image_uri {
        return Ok(uri.clone());
    }
    if let Some(uri) = &outputs.image_uri {
        return Ok(uri.clone());
    }
    // TODO(image): call crate::image::ensure_image(ctx) once the image command lands on main.
    bail!(
        "no image deployed in `{}` yet: build and push one to {} and pass --image-uri {}:<tag>",
        ctx.env.name,
        outputs.repository_uri,
        outputs.repository_uri
    )
}

/// The image must live in this environment's repository: the function may pull only from there,
/// and an image of another environment must never be deployed by accident.
pub fn check_image_belongs_here(image_uri: &str, outputs: &ServiceOutputs) -> anyhow::Result<()> {
    let repo = &outputs.repository_uri;
    let reference = image_uri
        .strip_prefix(repo.as_str())
        .and_then(|r| r.strip_prefix(':').or_else(|| r.strip_prefix('@')));
    match reference {
        Some(r) if !r.is_empty() && !r.contains('/') => Ok(()),
        Some(_) => bail!(
            "image {image_uri} has no tag or digest: pass {repo}:<tag> or {repo}@sha256:<digest>"
        ),
        None => bail!(
            "image {image_uri} is not in this environment's repository {repo}: push it there and pass {repo}:<tag>"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outputs() -> ServiceOutputs {
        ServiceOutputs {
            environment: "dev".into(),
            stack: "s".into(),
            status: "CREATE_COMPLETE".into(),
            model_bucket: "b-123".into(),
            model_prefix: "models".into(),
            input_stream: "i".into(),
            output_stream: "o".into(),
            dead_letter: "kinesis:d".into(),
            repository_name: "r".into(),
            repository_uri: "123456789012.dkr.ecr.us-east-1.amazonaws.com/taxi-duration-dev-lambda"
                .into(),
            log_group: "/aws/lambda/f".into(),
            function_name: None,
            function_arn: None,
            event_source_mapping_id: None,
            image_uri: None,
            run_id: None,
            model_location: None,
        }
    }

    #[test]
    fn images_of_this_repository_are_accepted() {
        let o = outputs();
        check_image_belongs_here(&format!("{}:abc", o.repository_uri), &o).unwrap();
        check_image_belongs_here(&format!("{}@sha256:00ff", o.repository_uri), &o).unwrap();
    }

    #[test]
    fn images_of_another_environment_are_refused() {
        let o = outputs();
        let other = o.repository_uri.replace("-dev-", "-stg-");
        let err = check_image_belongs_here(&format!("{other}:abc"), &o)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("not in this environment's repository"),
            "{err}"
        );
        assert!(
            check_image_belongs_here(&o.repository_uri, &o).is_err(),
            "no tag must be refused"
        );
    }

    #[test]
    fn model_shorthand_expands() {
        let m = |s: &str| {
            DeployArgs {
                model: Some(s.into()),
                ..Default::default()
            }
            .resolved()
        };
        assert_eq!(m("run:abc").unwrap().run_id.as_deref(), Some("abc"));
        assert_eq!(
            m("s3://b/models/x/model.json")
                .unwrap()
                .model_location
                .as_deref(),
            Some("s3://b/models/x/model.json")
        );
        assert_eq!(
            m("runs/x/model.json").unwrap().model_file,
            Some(PathBuf::from("runs/x/model.json"))
        );
        assert!(
            m("alias:staging")
                .unwrap_err()
                .to_string()
                .contains("MLflow")
        );
    }

    #[test]
    fn s3_uris_split() {
        assert_eq!(
            parse_s3("s3://b/models/x/model.json").unwrap(),
            ("b".into(), "models/x/model.json".into())
        );
        assert!(parse_s3("s3://b").is_err());
        assert!(parse_s3("https://b/k").is_err());
    }
}
