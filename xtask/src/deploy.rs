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
use crate::image::{ImageOptions, PublishedImage};
use crate::stack::{self, Plan, Release, ServiceOutputs};
use crate::tracking::{self, AliasSet, GateReport, ModelSpec};

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
    /// The function's image in this environment's repository (`<repository uri>:<tag>` or
    /// `@sha256:...`). Without it (and without --keep-image) deploy builds the image from this
    /// checkout and pushes it; a tag the registry already holds is not pushed again.
    #[arg(long, conflicts_with = "keep_image")]
    pub image_uri: Option<String>,
    /// Keep the deployed image instead of building one.
    #[arg(long)]
    pub keep_image: bool,
    /// When deploy builds the image: a dev-profile `bootstrap` (faster to build, larger).
    #[arg(long)]
    pub debug_image: bool,
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
    /// The model to deploy: `alias:<name>` (e.g. alias:staging), `run:<id>` or `version:<n>` from
    /// the run store or MLflow registry, `file:<path>` (or a bare path), or an uploaded `s3://...`.
    /// Without any model flag the deployed model is kept.
    #[arg(long, conflicts_with_all = ["model_file", "model_location", "run_id"])]
    pub model: Option<String>,
    /// Deploy to prod even when the promotion gate refuses the model.
    #[arg(long)]
    pub force: bool,
    /// Leave the environment's alias (stg: `staging`, prod: `production`) where it is.
    #[arg(long)]
    pub no_promote: bool,
}

impl DeployArgs {
    /// Expands `--model file:<path>`, a bare path and `s3://...` into --model-file and
    /// --model-location; registry specs (`alias:`, `run:`, `version:`) stay in `model`.
    pub fn resolved(&self) -> anyhow::Result<Self> {
        let mut out = self.clone();
        let Some(spec) = out.model.take() else {
            return Ok(out);
        };
        if spec.starts_with("s3://") {
            out.model_location = Some(spec);
        } else if !spec.contains(':') {
            out.model_file = Some(PathBuf::from(spec));
        } else {
            match ModelSpec::parse(&spec)? {
                ModelSpec::File(path) => out.model_file = Some(path),
                _ => out.model = Some(spec),
            }
        }
        Ok(out)
    }

    /// The registry spec left after [`DeployArgs::resolved`], if any.
    fn registry_spec(&self) -> anyhow::Result<Option<ModelSpec>> {
        self.model.as_deref().map(ModelSpec::parse).transpose()
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
    /// The image deploy built and pushed, when it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image: Option<PublishedImage>,
    /// The promotion gate's verdict (prod, when a model was given).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gate: Option<GateReport>,
    /// The alias moved to the deployed model (stg: `staging`, prod: `production`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alias: Option<AliasSet>,
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
        if let Some(g) = &self.gate {
            writeln!(f, "{g}")?;
        }
        if let Some(m) = &self.model {
            let up = if m.uploaded { " (uploaded)" } else { "" };
            writeln!(f, "model: s3://{}/{}{up}", m.bucket, m.key)?;
        }
        if let Some(i) = &self.image {
            writeln!(f, "{i}")?;
        }
        if let Some(a) = &self.alias {
            writeln!(f, "{a}")?;
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
/// In prod the promotion gate runs first; after a deploy the environment's alias moves to the
/// deployed run (unless `--no-promote`).
pub async fn deploy(ctx: &Ctx, args: &DeployArgs) -> anyhow::Result<DeployReport> {
    let args = &args.resolved()?;
    if let Some(loc) = &args.model_location
        && !loc.starts_with("s3://")
    {
        bail!(
            "--model-location {loc} is not an s3:// location: give s3://<bucket>/<key>, or use --model-file"
        );
    }
    // The configuration is checked against the template's constraints, and the model found,
    // verified and (in prod) gated, before anything is built or changed.
    let template = stack::template_body(&ctx.root)?;
    stack::validate_parameters(
        &template,
        &stack::parameters(&ctx.env, &Release::default())?,
    )?;
    let (candidate, args) = &resolve_candidate(ctx, args).await?;
    let mut gate = match candidate {
        Some(c) => gate_in_prod(ctx, c, args.force).await?,
        None => None,
    };
    if ctx.env.name == "prod" {
        ctx.confirm("deploy the service")?;
    }
    let sdk = ctx.aws().await?;
    let cf = stack::client(&sdk);
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
        let mut r = report(ctx, DeployStatus::Planned, plans, None, None, None);
        r.gate = gate;
        return Ok(r);
    }

    let (outputs, foundation) = ensure_foundation(ctx).await?;
    plans.extend(foundation);
    // What the stack runs now, to put back if the change fails (a first deploy's second phase
    // included: a failed function leaves the bucket and repository as they were).
    let before = stack::snapshot(&cf, &ctx.env.stack_name)
        .await?
        .with_context(|| format!("stack {} vanished while deploying", ctx.env.stack_name))?;

    let model = place_model(ctx, &sdk, &outputs, args, candidate.as_ref()).await?;
    if gate.is_none()
        && candidate.is_none()
        && (args.run_id.is_some() || args.model_location.is_some())
    {
        // A model named by its upload: gate what is in the bucket.
        let uploaded = fetch_uploaded(&sdk, &model.reference).await?;
        gate = gate_in_prod(ctx, &uploaded, args.force).await?;
    }
    let (image_uri, image) = resolve_image(ctx, &outputs, args, model.version.clone()).await?;
    if let Some(uri) = &image_uri {
        check_image_belongs_here(uri, &outputs)?;
    }
    let release = Release {
        image_uri: image_uri.clone(),
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
        stack::execute_or_roll_back(ctx, &cf, &plan, &before).await?;
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
    let alias = if status == DeployStatus::Planned || args.no_promote {
        None
    } else {
        promote(ctx, &model, candidate.as_ref()).await?
    };
    let mut r = report(
        ctx,
        status,
        plans,
        Some(model.reference),
        image_uri,
        outputs,
    );
    r.image = image;
    r.gate = gate;
    r.alias = alias;
    Ok(r)
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
        image: None,
        gate: None,
        alias: None,
        outputs,
    }
}

/// The alias a deploy to `env` moves: stg → `staging`, prod → `production`; dev has none.
pub fn alias_for_env(env: &str) -> Option<&'static str> {
    match env {
        "stg" => Some(tracking::STAGING),
        "prod" => Some(tracking::PRODUCTION),
        _ => None,
    }
}

/// Finds and verifies the model `--model <registry spec>` or `--model-file` names. A `run:<id>`
/// the run store does not know falls back to an upload under that run id (deploys before
/// tracking existed uploaded by run id), which `place_model` then checks.
pub async fn resolve_candidate(
    ctx: &Ctx,
    args: &DeployArgs,
) -> anyhow::Result<(Option<tracking::ResolvedModel>, DeployArgs)> {
    let mut args = args.clone();
    if let Some(spec) = args.registry_spec()? {
        args.model = None;
        return match tracking::resolve_model(ctx, &spec).await {
            Ok(found) => {
                ctx.note(format!("model {spec}: {}", found.source));
                Ok((Some(found), args))
            }
            Err(e) => match spec {
                ModelSpec::Run(id) => {
                    ctx.note(format!(
                        "run {id} is not in the run store ({e:#}); looking for a model uploaded under that run id"
                    ));
                    args.run_id = Some(id);
                    Ok((None, args))
                }
                _ => Err(e),
            },
        };
    }
    if let Some(path) = &args.model_file {
        let found = tracking::resolve_model(ctx, &ModelSpec::File(path.clone()))
            .await
            .with_context(|| {
                format!(
                    "{} is not a valid model artifact (train one with `cargo xtask train`)",
                    path.display()
                )
            })?;
        return Ok((Some(found), args));
    }
    Ok((None, args))
}

/// The promotion gate, in prod only: refuses a model worse than production's by more than the
/// environment's margin unless `force`.
async fn gate_in_prod(
    ctx: &Ctx,
    candidate: &tracking::ResolvedModel,
    force: bool,
) -> anyhow::Result<Option<GateReport>> {
    if ctx.env.name != "prod" {
        return Ok(None);
    }
    let report = tracking::gate(ctx, candidate, force).await?;
    ctx.note(&report);
    Ok(Some(report.into_result()?))
}

/// Reads an uploaded model back, to gate it.
async fn fetch_uploaded(
    sdk: &aws_config::SdkConfig,
    m: &ModelRef,
) -> anyhow::Result<tracking::ResolvedModel> {
    let s3 = crate::ctx::s3_client(sdk);
    let obj = s3
        .get_object()
        .bucket(&m.bucket)
        .key(&m.key)
        .send()
        .await
        .with_context(|| format!("read s3://{}/{}", m.bucket, m.key))?;
    let bytes = obj.body.collect().await?.into_bytes().to_vec();
    tracking::ResolvedModel::from_bytes(
        bytes,
        m.run_id.clone(),
        None,
        format!("s3://{}/{}", m.bucket, m.key),
    )
}

/// The model the environment's function runs now, read back from its bucket; `None` before the
/// first deploy of a function.
pub async fn current_model(ctx: &Ctx) -> anyhow::Result<Option<tracking::ResolvedModel>> {
    let sdk = ctx.aws().await?;
    let Some(out) = stack::service_outputs(&sdk, &ctx.env).await? else {
        return Ok(None);
    };
    if out.run_id.is_none() && out.model_location.is_none() {
        return Ok(None);
    }
    // No model flags: the deployed model, as a deploy that keeps it finds it.
    let deployed = place_model(ctx, &sdk, &out, &DeployArgs::default(), None).await?;
    fetch_uploaded(&sdk, &deployed.reference)
        .await
        .map(Some)
        .with_context(|| format!("read the model `{}` runs now", ctx.env.name))
}

/// Moves the environment's alias to the deployed model's run. A model that is in no run store
/// (a plain file, an upload) leaves the alias where it is, with a note.
async fn promote(
    ctx: &Ctx,
    model: &ResolvedModel,
    candidate: Option<&tracking::ResolvedModel>,
) -> anyhow::Result<Option<AliasSet>> {
    let Some(alias) = alias_for_env(&ctx.env.name) else {
        return Ok(None);
    };
    let tracked = candidate.and_then(|c| c.run_id.clone());
    let Some(run_id) = tracked.clone().or_else(|| model.run_id.clone()) else {
        ctx.note(format!(
            "alias `{alias}` not moved: the deployed model is not a tracked run (deploy --model run:<id> or alias:<name> to move it)"
        ));
        return Ok(None);
    };
    match tracking::set_alias(ctx, alias, &ModelSpec::Run(run_id.clone())).await {
        Ok(set) => Ok(Some(set)),
        Err(e) if tracked.is_none() => {
            ctx.note(format!(
                "alias `{alias}` not moved: run {run_id} is not in the run store ({e:#})"
            ));
            Ok(None)
        }
        Err(e) => Err(e.context(format!(
            "deployed, but alias `{alias}` could not be moved to run {run_id}: retry with `cargo xtask runs alias set {alias} {run_id}`"
        ))),
    }
}

/// The model a deploy points the function at.
#[derive(Debug, Clone)]
pub struct ResolvedModel {
    pub run_id: Option<String>,
    pub location: Option<String>,
    /// The artifact's version, when known (from the artifact or the upload's metadata).
    pub version: Option<String>,
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

/// Uploads `candidate` (once: an upload with the same checksum is kept) under its run id, or
/// checks that `--run-id` / `--model-location` exist, or keeps the deployed model.
pub async fn place_model(
    ctx: &Ctx,
    sdk: &aws_config::SdkConfig,
    outputs: &ServiceOutputs,
    args: &DeployArgs,
    candidate: Option<&tracking::ResolvedModel>,
) -> anyhow::Result<ResolvedModel> {
    let s3 = crate::ctx::s3_client(sdk);
    let bucket = outputs.model_bucket.clone();
    if let Some(found) = candidate {
        let artifact = &found.artifact;
        let bytes = &found.bytes;
        let run_id = args
            .run_id
            .clone()
            .or_else(|| found.run_id.clone())
            .unwrap_or_else(|| artifact.version.clone());
        let key = outputs.model_key(&run_id);
        let sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(bytes));
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
                found.source
            ));
            false
        } else {
            s3.put_object()
                .bucket(&bucket)
                .key(&key)
                .body(bytes.clone().into())
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
            version: Some(artifact.version.clone()),
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
        let head = s3
            .head_object()
            .bucket(&b)
            .key(&k)
            .send()
            .await
            .with_context(|| format!("no model at {loc}: upload one with --model-file"))?;
        return Ok(ResolvedModel {
            run_id: None,
            location: Some(loc.clone()),
            version: uploaded_version(&head),
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
    let head = s3
        .head_object()
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
        version: uploaded_version(&head),
        reference: ModelRef {
            bucket: b,
            key,
            run_id,
            uploaded: false,
        },
    })
}

/// The `model-version` metadata deploy writes on upload.
fn uploaded_version(head: &aws_sdk_s3::operation::head_object::HeadObjectOutput) -> Option<String> {
    head.metadata()
        .and_then(|m| m.get("model-version"))
        .cloned()
}

/// `--image-uri`; with `--keep-image` the deployed one; else the image built from this checkout
/// and pushed (a dry run builds nothing and plans with the deployed image). Returns the URI for
/// the stack (none: no function yet) and the build, when there was one.
async fn resolve_image(
    ctx: &Ctx,
    outputs: &ServiceOutputs,
    args: &DeployArgs,
    model_version: Option<String>,
) -> anyhow::Result<(Option<String>, Option<PublishedImage>)> {
    if let Some(uri) = &args.image_uri {
        return Ok((Some(uri.clone()), None));
    }
    if args.keep_image {
        let uri = outputs.image_uri.clone().with_context(|| {
            format!(
                "--keep-image: no image is deployed in `{}` yet; drop --keep-image to build and push one",
                ctx.env.name
            )
        })?;
        return Ok((Some(uri), None));
    }
    if ctx.dry_run {
        ctx.note(format!(
            "dry run: would build the image from this checkout and push it to {}; the plan keeps {}",
            outputs.repository_uri,
            outputs.image_uri.as_deref().unwrap_or("no function")
        ));
        return Ok((outputs.image_uri.clone(), None));
    }
    let opts = ImageOptions {
        debug: args.debug_image,
        model_version,
        ..Default::default()
    };
    let published = crate::image::publish(
        ctx,
        &outputs.repository_name,
        &outputs.repository_uri,
        &opts,
    )
    .await
    .context("build and push the image (or pass --image-uri / --keep-image)")?;
    ctx.note(&published);
    Ok((Some(published.uri.clone()), Some(published)))
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
        assert_eq!(m("run:abc").unwrap().model.as_deref(), Some("run:abc"));
        assert_eq!(
            m("alias:staging").unwrap().model.as_deref(),
            Some("alias:staging")
        );
        assert_eq!(
            m("file:a/model.json").unwrap().model_file,
            Some(PathBuf::from("a/model.json"))
        );
        assert!(m("nope:x").is_err());
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
