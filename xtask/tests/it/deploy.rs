//! deploy and teardown against a real moto server: create, update, no-op, a refused change,
//! teardown, and two environments side by side.

use std::collections::BTreeMap;

use model::artifact::{Artifact, CategoricalBlock, NumericCoef, TrainingMetadata};
use model::{Categorical, FeatureSpec, Metrics, Numeric};
use xtask::config::EnvConfig;
use xtask::ctx::{Ctx, OutputFormat};
use xtask::deploy::{DeployArgs, DeployStatus, deploy, ensure_foundation};
use xtask::stack::{self, ServiceOutputs};
use xtask::teardown::teardown;

use crate::moto;

/// An environment's context on moto, its names suffixed so that tests sharing the server never meet.
pub(crate) fn ctx_for(env: &str) -> Ctx {
    let root = xtask::ctx::repo_root();
    let mut cfg = EnvConfig::load(&root, env).unwrap();
    let sfx = moto::unique("t");
    for name in [
        &mut cfg.stack_name,
        &mut cfg.model_bucket,
        &mut cfg.input_stream,
        &mut cfg.output_stream,
        &mut cfg.failure_queue,
        &mut cfg.ecr_repository,
        &mut cfg.function_name,
    ] {
        name.push('-');
        name.push_str(&sfx);
    }
    cfg.dead_letter = format!("{}-{sfx}", cfg.dead_letter);
    Ctx {
        env: cfg,
        output: OutputFormat::Text,
        dry_run: false,
        yes: true,
        endpoint_override: Some(moto::moto().endpoint.clone()),
        root,
        cache: std::env::temp_dir().join("taxi-duration-xtask-tests"),
        runs_dir: Some(std::env::temp_dir().join(format!("taxi-duration-runs-{sfx}"))),
        tracking_uri: None,
    }
}

/// A valid model artifact; different `intercept`s give different versions.
fn artifact(intercept: f64) -> (Vec<u8>, String) {
    let a = artifact_with_rmse(intercept, None);
    (a.to_bytes().unwrap(), a.version.clone())
}

/// A valid model artifact with validation RMSE `rmse_val` (what the prod gate compares).
fn artifact_with_rmse(intercept: f64, rmse_val: Option<f64>) -> Artifact {
    let mut a = Artifact {
        version: String::new(),
        features: FeatureSpec::default(),
        intercept,
        numeric: vec![NumericCoef {
            term: Numeric::TripDistance,
            coef: 2.5,
        }],
        categorical: vec![CategoricalBlock {
            term: Categorical::PuDo,
            vocabulary: vec!["130_205".into()],
            coef: vec![1.0],
        }],
        metadata: TrainingMetadata {
            val_metrics: rmse_val.map(|rmse| Metrics {
                rmse,
                mae: rmse * 0.7,
                r2: 0.5,
                rows: 100,
            }),
            ..Default::default()
        },
    };
    a.version = a.content_version();
    a
}

pub(crate) fn model_file(dir: &tempfile::TempDir, intercept: f64) -> (std::path::PathBuf, String) {
    let (bytes, version) = artifact(intercept);
    let path = dir.path().join(format!("{version}.json"));
    std::fs::write(&path, bytes).unwrap();
    (path, version)
}

/// Pushes a small image manifest to the environment's repository with ECR PutImage (moto keeps
/// manifests, not layers) and returns `<repository uri>:<tag>`.
pub(crate) async fn push_image(ctx: &Ctx, outputs: &ServiceOutputs, tag: &str) -> String {
    let ecr = aws_sdk_ecr::Client::new(&ctx.aws().await.unwrap());
    let manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": 2, "digest": format!("sha256:{}", "0".repeat(64))},
        "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": 2, "digest": format!("sha256:{}", "1".repeat(63) + tag.len().to_string().as_str())}]
    });
    ecr.put_image()
        .repository_name(&outputs.repository_name)
        .image_manifest(manifest.to_string())
        .image_tag(tag)
        .send()
        .await
        .unwrap();
    format!("{}:{tag}", outputs.repository_uri)
}

pub(crate) async fn function_env(ctx: &Ctx) -> BTreeMap<String, String> {
    let lambda = aws_sdk_lambda::Client::new(&ctx.aws().await.unwrap());
    let f = lambda
        .get_function()
        .function_name(&ctx.env.function_name)
        .send()
        .await
        .unwrap();
    f.configuration()
        .unwrap()
        .environment()
        .unwrap()
        .variables()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Creates the foundation, pushes an image, deploys a model: the full first deploy.
async fn first_deploy(ctx: &Ctx, dir: &tempfile::TempDir) -> (ServiceOutputs, String, String) {
    let (outputs, plan) = ensure_foundation(ctx).await.unwrap();
    let plan = plan.expect("a new stack is created");
    assert_eq!(plan.kind, "create");
    assert!(
        plan.resources
            .iter()
            .any(|r| r.logical_id == "ModelBucket" && r.action == "add"),
        "{plan}"
    );
    let image = push_image(ctx, &outputs, "v1").await;
    let (path, version) = model_file(dir, 10.0);
    let args = DeployArgs {
        image_uri: Some(image.clone()),
        model_file: Some(path),
        ..Default::default()
    };
    let report = deploy(ctx, &args).await.unwrap();
    assert_eq!(report.status, DeployStatus::Updated);
    (report.outputs.unwrap(), image, version)
}

#[tokio::test]
async fn create_update_noop_refused_change_and_teardown() {
    let ctx = ctx_for("dev");
    let dir = tempfile::tempdir().unwrap();
    let (out, image, v1) = first_deploy(&ctx, &dir).await;

    // Create: names come from the config, the bucket carries the account id, the model is uploaded.
    assert_eq!(out.input_stream, ctx.env.input_stream);
    assert_eq!(out.output_stream, ctx.env.output_stream);
    assert!(
        out.model_bucket
            .starts_with(&format!("{}-", ctx.env.model_bucket)),
        "{}",
        out.model_bucket
    );
    assert_eq!(
        out.model_bucket.len(),
        ctx.env.model_bucket.len() + 13,
        "{}",
        out.model_bucket
    );
    assert_eq!(out.run_id.as_deref(), Some(v1.as_str()));
    assert_eq!(out.image_uri.as_deref(), Some(image.as_str()));
    assert!(
        out.function_arn
            .as_deref()
            .unwrap()
            .ends_with(&format!(":function:{}", ctx.env.function_name))
    );
    let s3 = xtask::ctx::s3_client(&ctx.aws().await.unwrap());
    let key = out.model_key(&v1);
    let obj = s3
        .get_object()
        .bucket(&out.model_bucket)
        .key(&key)
        .send()
        .await
        .unwrap();
    let body = obj.body.collect().await.unwrap().into_bytes();
    assert_eq!(Artifact::from_bytes(&body).unwrap().version, v1);

    // The function's environment and its single mapping: on the INPUT stream, never the output.
    let env = function_env(&ctx).await;
    assert_eq!(env["MODEL_BUCKET"], out.model_bucket);
    assert_eq!(env["MODEL_PREFIX"], ctx.env.model_prefix);
    assert_eq!(env["RUN_ID"], v1);
    assert_eq!(
        env["MODEL_LOCATION"],
        format!("s3://{}/{key}", out.model_bucket)
    );
    assert_eq!(env["PREDICTIONS_STREAM_NAME"], ctx.env.output_stream);
    assert_eq!(env["DEAD_LETTER"], ctx.env.dead_letter);
    let sdk = ctx.aws().await.unwrap();
    let lambda = aws_sdk_lambda::Client::new(&sdk);
    let kinesis = aws_sdk_kinesis::Client::new(&sdk);
    let arn = |name: String| {
        let kinesis = kinesis.clone();
        async move {
            kinesis
                .describe_stream_summary()
                .stream_name(name)
                .send()
                .await
                .unwrap()
                .stream_description_summary
                .unwrap()
                .stream_arn
        }
    };
    let input_arn = arn(ctx.env.input_stream.clone()).await;
    let output_arn = arn(ctx.env.output_stream.clone()).await;
    let maps = lambda
        .list_event_source_mappings()
        .function_name(&ctx.env.function_name)
        .send()
        .await
        .unwrap();
    let maps = maps.event_source_mappings();
    assert_eq!(maps.len(), 1);
    let m = &maps[0];
    assert_eq!(m.event_source_arn(), Some(input_arn.as_str()));
    assert_ne!(
        m.event_source_arn(),
        Some(output_arn.as_str()),
        "the function must never read its own output"
    );
    assert_eq!(m.uuid(), out.event_source_mapping_id.as_deref());
    assert_eq!(m.batch_size(), Some(ctx.env.batch_size as i32));
    assert_eq!(
        m.maximum_batching_window_in_seconds(),
        Some(ctx.env.batching_window_s as i32)
    );
    assert_eq!(m.bisect_batch_on_function_error(), Some(true));
    assert_eq!(m.maximum_retry_attempts(), Some(ctx.env.max_retry_attempts));
    assert_eq!(
        m.function_response_types()
            .iter()
            .map(|t| t.as_str())
            .collect::<Vec<_>>(),
        ["ReportBatchItemFailures"]
    );
    let dest = m
        .destination_config()
        .and_then(|d| d.on_failure())
        .and_then(|o| o.destination())
        .unwrap();
    assert!(
        dest.ends_with(&format!(":{}", ctx.env.failure_queue)),
        "{dest}"
    );

    // Update: a new model version changes RUN_ID, and nothing else.
    let (path2, v2) = model_file(&dir, 11.0);
    assert_ne!(v1, v2);
    let report = deploy(
        &ctx,
        &DeployArgs {
            model_file: Some(path2),
            keep_image: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(report.status, DeployStatus::Updated);
    let plan = report.plans.last().unwrap();
    assert_eq!(
        plan.parameters
            .iter()
            .map(|p| p.key.as_str())
            .collect::<Vec<_>>(),
        ["RunId"],
        "{plan}"
    );
    assert!(report.model.as_ref().unwrap().uploaded);
    assert_eq!(function_env(&ctx).await["RUN_ID"], v2);
    assert_eq!(
        report.outputs.as_ref().unwrap().image_uri.as_deref(),
        Some(image.as_str()),
        "the image is kept"
    );

    // No-op: the same deploy again changes nothing and leaves no change set behind.
    let report = deploy(
        &ctx,
        &DeployArgs {
            run_id: Some(v2.clone()),
            keep_image: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(report.status, DeployStatus::Unchanged);
    assert!(report.plans.iter().all(|p| p.is_empty()));
    let cf = stack::client(&sdk);
    let sets = cf
        .list_change_sets()
        .stack_name(&ctx.env.stack_name)
        .send()
        .await
        .unwrap();
    assert!(
        sets.summaries()
            .iter()
            .all(|s| s.execution_status().map(|e| e.as_str()) != Some("AVAILABLE")),
        "an empty change set was left behind"
    );

    // A bad value is refused before anything changes: the stack and the function stay as they were.
    let mut bad = ctx.clone();
    bad.env.batch_size = 0;
    let err = format!(
        "{:#}",
        deploy(&bad, &DeployArgs::default()).await.unwrap_err()
    );
    assert!(
        err.contains("BatchSize = 0 is below its minimum 1"),
        "{err}"
    );
    let after = stack::service_outputs(&sdk, &ctx.env)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(after.run_id.as_deref(), Some(v2.as_str()));
    let m = lambda
        .list_event_source_mappings()
        .function_name(&ctx.env.function_name)
        .send()
        .await
        .unwrap();
    assert_eq!(
        m.event_source_mappings()[0].batch_size(),
        Some(ctx.env.batch_size as i32)
    );

    // An unknown run id is refused with the fix named.
    let err = format!(
        "{:#}",
        deploy(
            &ctx,
            &DeployArgs {
                run_id: Some("nope".into()),
                ..Default::default()
            }
        )
        .await
        .unwrap_err()
    );
    assert!(
        err.contains("no model at") && err.contains("--model-file"),
        "{err}"
    );
    // So is an image of another repository.
    let other = image.replace(&ctx.env.ecr_repository, "taxi-duration-stg-lambda");
    let err = format!(
        "{:#}",
        deploy(
            &ctx,
            &DeployArgs {
                image_uri: Some(other),
                ..Default::default()
            }
        )
        .await
        .unwrap_err()
    );
    assert!(
        err.contains("not in this environment's repository"),
        "{err}"
    );

    // Teardown: a dry run changes nothing, then everything goes.
    let mut dry = ctx.clone();
    dry.dry_run = true;
    let plan = teardown(&dry).await.unwrap();
    assert!(plan.dry_run);
    assert_eq!(plan.actions.len(), 4, "{plan}");
    assert!(
        stack::describe_stack(&cf, &ctx.env.stack_name)
            .await
            .unwrap()
            .is_some()
    );
    let report = teardown(&ctx).await.unwrap();
    assert!(report.remaining.is_empty());
    assert!(
        stack::describe_stack(&cf, &ctx.env.stack_name)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        s3.head_bucket()
            .bucket(&out.model_bucket)
            .send()
            .await
            .is_err(),
        "bucket still there"
    );
    assert!(
        lambda
            .get_function()
            .function_name(&ctx.env.function_name)
            .send()
            .await
            .is_err(),
        "function still there"
    );
    assert!(
        kinesis
            .describe_stream_summary()
            .stream_name(&ctx.env.input_stream)
            .send()
            .await
            .is_err(),
        "stream still there"
    );
}

#[tokio::test]
async fn tearing_down_dev_leaves_stg_alone() {
    let dev = ctx_for("dev");
    let stg = ctx_for("stg");
    let dir = tempfile::tempdir().unwrap();
    let (dev_out, _, _) = first_deploy(&dev, &dir).await;
    let (stg_out, _, stg_run) = first_deploy(&stg, &dir).await;
    assert_ne!(dev_out.model_bucket, stg_out.model_bucket);

    teardown(&dev).await.unwrap();

    let sdk = stg.aws().await.unwrap();
    let cf = stack::client(&sdk);
    assert!(
        stack::describe_stack(&cf, &dev.env.stack_name)
            .await
            .unwrap()
            .is_none()
    );
    let still = stack::service_outputs(&sdk, &stg.env)
        .await
        .unwrap()
        .expect("stg stack intact");
    assert_eq!(still, stg_out);
    let s3 = xtask::ctx::s3_client(&sdk);
    s3.head_object()
        .bucket(&stg_out.model_bucket)
        .key(stg_out.model_key(&stg_run))
        .send()
        .await
        .expect("stg model intact");
    let ecr = aws_sdk_ecr::Client::new(&sdk);
    let images = ecr
        .list_images()
        .repository_name(&stg.env.ecr_repository)
        .send()
        .await
        .unwrap();
    assert_eq!(images.image_ids().len(), 1, "stg image intact");
    assert_eq!(function_env(&stg).await["RUN_ID"], stg_run);
    let left =
        xtask::teardown::remaining(&sdk, &stg.env, Some(&stg_out), Some(&stg_out.model_bucket))
            .await
            .unwrap();
    assert!(
        left.iter().any(|r| r.contains(&stg.env.input_stream)),
        "{left:?}"
    );
    assert!(
        !left.iter().any(|r| r.contains("-dev-")),
        "dev leftovers reported for stg: {left:?}"
    );

    teardown(&stg).await.unwrap();
}

#[tokio::test]
async fn a_dry_run_of_a_new_stack_creates_nothing() {
    let mut ctx = ctx_for("dev");
    ctx.dry_run = true;
    let report = deploy(&ctx, &DeployArgs::default()).await.unwrap();
    assert_eq!(report.status, DeployStatus::Planned);
    let plan = &report.plans[0];
    assert_eq!(plan.kind, "create");
    for id in [
        "ModelBucket",
        "InputStream",
        "OutputStream",
        "Repository",
        "FunctionRole",
        "LogGroup",
    ] {
        assert!(
            plan.resources.iter().any(|r| r.logical_id == id),
            "{id} missing from\n{plan}"
        );
    }
    let cf = stack::client(&ctx.aws().await.unwrap());
    assert!(
        stack::describe_stack(&cf, &ctx.env.stack_name)
            .await
            .unwrap()
            .is_none(),
        "a dry run left a stack behind"
    );
}

#[tokio::test]
async fn prod_needs_confirmation() {
    let mut ctx = ctx_for("prod");
    ctx.yes = false;
    let err = deploy(&ctx, &DeployArgs::default())
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("--yes"), "{err}");
    let err = teardown(&ctx).await.unwrap_err().to_string();
    assert!(err.contains("--yes"), "{err}");
}

/// The function's RUN_ID and image as Lambda reports them.
async fn function_image(ctx: &Ctx) -> Option<String> {
    let lambda = aws_sdk_lambda::Client::new(&ctx.aws().await.unwrap());
    let f = lambda
        .get_function()
        .function_name(&ctx.env.function_name)
        .send()
        .await
        .unwrap();
    f.code().and_then(|c| c.image_uri()).map(str::to_string)
}

#[tokio::test]
async fn a_failing_change_rolls_back_and_names_its_cause() {
    let ctx = ctx_for("dev");
    let dir = tempfile::tempdir().unwrap();
    let (before, image, v1) = first_deploy(&ctx, &dir).await;
    let sdk = ctx.aws().await.unwrap();

    // A new model with an image tag that was never pushed: the Function's update fails (moto
    // checks the image in ECR, as AWS does) after its configuration has already changed.
    let missing = format!("{}:never-pushed", before.repository_uri);
    let (path, v2) = model_file(&dir, 12.0);
    let err = deploy(
        &ctx,
        &DeployArgs {
            model_file: Some(path),
            image_uri: Some(missing),
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("rolled back"), "{msg}");
    assert!(
        msg.contains("never-pushed") && msg.contains("does not exist"),
        "the cause is not named: {msg}"
    );

    // Everything is as it was: outputs, the function's model and image, the mapping.
    let after = stack::service_outputs(&sdk, &ctx.env)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(after, before);
    assert_ne!(v1, v2);
    assert_eq!(function_env(&ctx).await["RUN_ID"], v1);
    assert_eq!(function_image(&ctx).await.as_deref(), Some(image.as_str()));
    let lambda = aws_sdk_lambda::Client::new(&sdk);
    let maps = lambda
        .list_event_source_mappings()
        .function_name(&ctx.env.function_name)
        .send()
        .await
        .unwrap();
    let sources: Vec<_> = maps
        .event_source_mappings()
        .iter()
        .filter_map(|m| m.event_source_arn())
        .collect();
    assert_eq!(sources.len(), 1, "{sources:?}");
    assert!(
        sources[0].ends_with(&format!("/{}", ctx.env.input_stream)),
        "{sources:?}"
    );

    // And the stack takes the next good change.
    let (path, v3) = model_file(&dir, 13.0);
    let r = deploy(
        &ctx,
        &DeployArgs {
            model_file: Some(path),
            keep_image: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(r.status, DeployStatus::Updated);
    assert_eq!(function_env(&ctx).await["RUN_ID"], v3);

    teardown(&ctx).await.unwrap();
}

/// Records a training run of `artifact` in `ctx`'s local run store and returns its id.
async fn tracked_run(ctx: &Ctx, artifact: &Artifact) -> String {
    let bytes = artifact.to_bytes().unwrap();
    xtask::tracking::record_training_run(ctx, artifact, &bytes, &BTreeMap::new())
        .await
        .unwrap()
        .run_id
}

#[tokio::test]
async fn models_come_from_the_run_store_and_prod_is_gated() {
    use xtask::tracking::{self, GateDecision, ModelSpec};
    let stg = ctx_for("stg");
    let mut prod = ctx_for("prod");
    // One registry for every environment: an alias names a stage in a model's life.
    prod.runs_dir = stg.runs_dir.clone();
    let good = tracked_run(&stg, &artifact_with_rmse(10.0, Some(5.0))).await;
    let worse = tracked_run(&stg, &artifact_with_rmse(11.0, Some(6.0))).await;
    tracking::set_alias(&stg, tracking::STAGING, &ModelSpec::Run(good.clone()))
        .await
        .unwrap();

    // stg: the staging alias resolves to its run, which is uploaded under its run id.
    let (outputs, _) = ensure_foundation(&stg).await.unwrap();
    let image = push_image(&stg, &outputs, "v1").await;
    let r = deploy(
        &stg,
        &DeployArgs {
            model: Some("alias:staging".into()),
            image_uri: Some(image),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(
        r.model.as_ref().unwrap().run_id.as_deref(),
        Some(good.as_str())
    );
    assert!(r.gate.is_none(), "the gate is prod's");
    assert_eq!(function_env(&stg).await["RUN_ID"], good);
    assert_eq!(r.alias.as_ref().unwrap().alias, tracking::STAGING);

    // prod: no production model yet, so the gate passes, and `production` moves to the run.
    let (pout, _) = ensure_foundation(&prod).await.unwrap();
    let pimage = push_image(&prod, &pout, "v1").await;
    let r = deploy(
        &prod,
        &DeployArgs {
            model: Some("alias:staging".into()),
            image_uri: Some(pimage),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(r.gate.as_ref().unwrap().decision, GateDecision::Pass);
    let set = r.alias.unwrap();
    assert_eq!(
        (set.alias.as_str(), set.run_id.as_str()),
        (tracking::PRODUCTION, good.as_str())
    );
    assert_eq!(function_env(&prod).await["RUN_ID"], good);

    // A model 20 % worse than production's is refused before anything is uploaded or changed.
    let refused = deploy(
        &prod,
        &DeployArgs {
            model: Some(format!("run:{worse}")),
            keep_image: true,
            ..Default::default()
        },
    )
    .await
    .unwrap_err();
    let msg = format!("{refused:#}");
    assert!(msg.contains("--force") && msg.contains("6.0000"), "{msg}");
    assert_eq!(function_env(&prod).await["RUN_ID"], good);
    let s3 = xtask::ctx::s3_client(&prod.aws().await.unwrap());
    assert!(
        s3.head_object()
            .bucket(&pout.model_bucket)
            .key(pout.model_key(&worse))
            .send()
            .await
            .is_err(),
        "a refused model was uploaded"
    );

    // --force deploys it anyway, says so, and moves `production`.
    let r = deploy(
        &prod,
        &DeployArgs {
            model: Some(format!("run:{worse}")),
            keep_image: true,
            force: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(r.gate.as_ref().unwrap().decision, GateDecision::Forced);
    assert_eq!(function_env(&prod).await["RUN_ID"], worse);
    assert_eq!(r.alias.unwrap().run_id, worse);

    teardown(&stg).await.unwrap();
    teardown(&prod).await.unwrap();
}

#[tokio::test]
async fn deploy_builds_and_pushes_the_image_it_needs() {
    let reg = crate::registry::start().await;
    let mut ctx = ctx_for("dev");
    let cache = tempfile::tempdir().unwrap();
    ctx.cache = cache.path().to_path_buf();
    xtask::ctx::LocalState {
        endpoint: moto::moto().endpoint.clone(),
        pid: None,
        kind: "external".into(),
        registry: Some(reg.addr.clone()),
        registry_pid: None,
    }
    .write(&ctx.cache)
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (path, version) = model_file(&dir, 10.0);
    let args = DeployArgs {
        model_file: Some(path),
        debug_image: true,
        ..Default::default()
    };

    // A first deploy with no image given: built from this checkout, pushed, and run.
    let r = deploy(&ctx, &args).await.unwrap();
    assert_eq!(r.status, DeployStatus::Created);
    let image = r.image.as_ref().expect("deploy built an image");
    assert!(image.pushed.pushed);
    let out = r.outputs.as_ref().unwrap();
    assert_eq!(
        image.uri,
        format!("{}:{}", out.repository_uri, image.built.tag)
    );
    assert_eq!(out.image_uri.as_deref(), Some(image.uri.as_str()));
    assert_eq!(
        function_image(&ctx).await.as_deref(),
        Some(image.uri.as_str())
    );
    let target = xtask::image::registry_target(&ctx).await.unwrap();
    assert_eq!(
        xtask::image::remote_digest(&target, &image.built.tag)
            .await
            .unwrap()
            .as_deref(),
        Some(image.pushed.digest.as_str()),
        "the registry holds the pushed tag"
    );
    assert_eq!(function_env(&ctx).await["RUN_ID"], version);

    // Again with nothing changed: the same image, not pushed again, and no change to the stack.
    let again = deploy(&ctx, &args).await.unwrap();
    assert_eq!(again.status, DeployStatus::Unchanged, "{:?}", again.plans);
    let image2 = again.image.as_ref().unwrap();
    assert_eq!(image2.uri, image.uri);
    assert!(
        !image2.pushed.pushed,
        "an image the registry holds was pushed again"
    );

    teardown(&ctx).await.unwrap();
}
