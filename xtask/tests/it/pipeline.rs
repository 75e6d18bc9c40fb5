//! `cargo xtask pipeline` against a real moto server: a clean run in stg (smoke rides through
//! the real input stream, run by the function as a process under our event-source emulator), a
//! run that fails at deploy and is resumed, and a run stopped by the quality gate.

use std::path::{Path, PathBuf};

use xtask::ctx::Ctx;
use xtask::deploy::{DeployArgs, ensure_foundation};
use xtask::pipeline::{
    Evaluated, PipelineArgs, PipelineRecord, PipelineStatus, STEPS, Smoked, StepStatus,
    pipelines_dir,
};
use xtask::teardown::teardown;
use xtask::tracking::{self, ModelSpec};

use crate::deploy::{ctx_for, function_env, model_file, push_image};

/// A synthetic training and validation month, written once per test.
fn months(dir: &tempfile::TempDir) -> (PathBuf, PathBuf) {
    let write = |month: &str, rows: usize, seed: u64| {
        let out = dir.path().join(format!("{month}.parquet"));
        let spec = model::synth::SynthSpec {
            month: month.into(),
            rows,
            seed,
        };
        model::synth::write(&spec, &out).unwrap();
        out
    };
    (write("2021-01", 4000, 11), write("2021-02", 2000, 12))
}

/// The environment's repository, with an image registered in moto's ECR, before the pipeline.
async fn image_for(ctx: &Ctx) -> String {
    let (outputs, _) = ensure_foundation(ctx).await.unwrap();
    push_image(ctx, &outputs, "v1").await
}

fn args(train: &Path, val: &Path, image: &str) -> PipelineArgs {
    PipelineArgs {
        train: vec![train.to_path_buf()],
        val: vec![val.to_path_buf()],
        image_uri: Some(image.to_string()),
        no_container: true,
        smoke_rides: Some(4),
        retry_base_ms: 10,
        ..Default::default()
    }
}

fn statuses(r: &PipelineRecord) -> Vec<(&str, StepStatus)> {
    r.steps
        .iter()
        .map(|s| (s.name.as_str(), s.status))
        .collect()
}

#[tokio::test]
async fn a_clean_run_deploys_smoke_tests_and_promotes() {
    let ctx = ctx_for("stg");
    let dir = tempfile::tempdir().unwrap();
    let (train, val) = months(&dir);
    let image = image_for(&ctx).await;

    let r = args(&train, &val, &image).execute(&ctx).await.unwrap();
    assert_eq!(r.status, PipelineStatus::Succeeded, "{r}");
    let names: Vec<&str> = r.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, STEPS);
    assert!(
        r.steps
            .iter()
            .all(|s| s.status == StepStatus::Succeeded && s.attempts == 1),
        "{r}"
    );
    let run = r.run_id.clone().expect("a registered run");

    // The function runs the registered run, and `staging` points at it.
    assert_eq!(function_env(&ctx).await["RUN_ID"], run);
    let staged = tracking::resolve_model(&ctx, &ModelSpec::Alias(tracking::STAGING.into()))
        .await
        .unwrap();
    assert_eq!(staged.run_id.as_deref(), Some(run.as_str()));

    // No model ran before: nothing to compare with. The smoke rides came back as predicted offline.
    let eval: Evaluated = r.outputs("evaluate").unwrap();
    assert_eq!(eval.decision, "first");
    assert!(
        eval.candidate_rmse.is_finite() && eval.rides > 1000,
        "{eval:?}"
    );
    let smoke: Smoked = r.outputs("smoke").unwrap();
    assert_eq!((smoke.rides, smoke.predicted), (4, 4));
    assert!(smoke.max_abs_error <= 1e-9);
    assert_eq!(smoke.function_mode, "process");

    // The record on disk is the one returned, and the text summary names every step.
    let kept = PipelineRecord::load(&pipelines_dir(&ctx).unwrap(), &r.id).unwrap();
    assert_eq!(kept.steps, r.steps);
    assert_eq!(kept.status, PipelineStatus::Succeeded);
    let text = r.to_string();
    for step in STEPS {
        assert!(text.contains(step), "{text}");
    }

    teardown(&ctx).await.unwrap();
}

#[tokio::test]
async fn a_failed_deploy_is_resumed_without_redoing_what_succeeded() {
    let ctx = ctx_for("dev");
    let dir = tempfile::tempdir().unwrap();
    let (train, val) = months(&dir);
    let image = image_for(&ctx).await;
    let missing = image.replace(":v1", ":never-pushed");
    // The service runs (a poor model); the pipeline's deploy is an update of it.
    let (first_model, first_version) = model_file(&dir, 10.0);
    xtask::deploy::deploy(
        &ctx,
        &DeployArgs {
            model_file: Some(first_model),
            image_uri: Some(image.clone()),
            ..Default::default()
        },
    )
    .await
    .unwrap();

    // An image that is not in the repository: deploy fails and is rolled back; nothing after runs.
    let failed = args(&train, &val, &missing).execute(&ctx).await.unwrap();
    assert_eq!(failed.status, PipelineStatus::Failed, "{failed}");
    assert_eq!(
        statuses(&failed),
        [
            ("validate", StepStatus::Succeeded),
            ("train", StepStatus::Succeeded),
            ("evaluate", StepStatus::Succeeded),
            ("register", StepStatus::Succeeded),
            ("deploy", StepStatus::Failed),
        ]
    );
    let error = failed.step("deploy").unwrap().error.clone().unwrap();
    assert!(
        error.contains("never-pushed") && error.contains("rolled back"),
        "{error}"
    );
    assert_eq!(function_env(&ctx).await["RUN_ID"], first_version);
    let run = failed.run_id.clone().unwrap();

    // Resumed with the right image: the first four steps are reused, the same run is deployed.
    let resume = PipelineArgs {
        resume: Some(failed.id.clone()),
        image_uri: Some(image.clone()),
        retry_base_ms: 10,
        ..Default::default()
    };
    let r = resume.execute(&ctx).await.unwrap();
    assert_eq!(r.status, PipelineStatus::Succeeded, "{r}");
    assert_eq!((r.id.as_str(), r.attempts), (failed.id.as_str(), 2));
    assert_eq!(
        statuses(&r),
        [
            ("validate", StepStatus::Reused),
            ("train", StepStatus::Reused),
            ("evaluate", StepStatus::Reused),
            ("register", StepStatus::Reused),
            ("deploy", StepStatus::Succeeded),
            ("smoke", StepStatus::Succeeded),
            ("promote", StepStatus::Skipped),
        ]
    );
    assert_eq!(r.run_id.as_deref(), Some(run.as_str()));
    assert_eq!(function_env(&ctx).await["RUN_ID"], run);
    let runs = tracking::Tracker::from_ctx(&ctx)
        .unwrap()
        .list(100)
        .await
        .unwrap();
    assert_eq!(
        runs.len(),
        1,
        "the resumed pipeline registered a second run"
    );

    // A changed validation month changes the fingerprints from validate on: those steps run again.
    std::fs::copy(&train, &val).unwrap();
    let again = PipelineArgs {
        resume: Some(r.id.clone()),
        retry_base_ms: 10,
        ..Default::default()
    }
    .execute(&ctx)
    .await
    .unwrap();
    assert_eq!(again.status, PipelineStatus::Succeeded, "{again}");
    assert_eq!(
        again.step("validate").unwrap().status,
        StepStatus::Succeeded
    );
    assert_ne!(
        again.run_id, r.run_id,
        "a model trained on other data is a new run"
    );

    // An unknown id is an error that names the fix.
    let err = PipelineArgs {
        resume: Some("p-nope".into()),
        ..Default::default()
    }
    .execute(&ctx)
    .await
    .unwrap_err()
    .to_string();
    assert!(err.contains("no pipeline `p-nope`"), "{err}");

    teardown(&ctx).await.unwrap();
}

// Multi-threaded: the test trains the current model itself, and polars blocks in place.
#[tokio::test(flavor = "multi_thread")]
async fn the_quality_gate_stops_a_worse_model_before_deploying() {
    let ctx = ctx_for("dev");
    let dir = tempfile::tempdir().unwrap();
    let (train, val) = months(&dir);
    let image = image_for(&ctx).await;

    // The current model: trained on the same months, deployed.
    let (summary, _) = xtask::train::TrainArgs {
        train: vec![train.clone()],
        val: vec![val.clone()],
        out: dir.path().join("artifacts"),
        features: "pu_do,trip_distance".into(),
        ridge: 0.0,
        min_duration: 1.0,
        max_duration: 60.0,
    }
    .train(&ctx)
    .unwrap();
    xtask::deploy::deploy(
        &ctx,
        &DeployArgs {
            model_file: Some(summary.artifact.clone()),
            image_uri: Some(image.clone()),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let before = function_env(&ctx).await["RUN_ID"].clone();

    // A heavily penalised model is far worse on the same validation rides: the flow stops.
    let mut worse = args(&train, &val, &image);
    worse.ridge = Some(1e9);
    let r = worse.execute(&ctx).await.unwrap();
    assert_eq!(r.status, PipelineStatus::StoppedByGate, "{r}");
    let eval = r.step("evaluate").unwrap();
    assert_eq!(eval.status, StepStatus::Failed);
    assert_eq!(eval.attempts, 1, "a gate refusal is not retried");
    let error = eval.error.as_deref().unwrap();
    assert!(
        error.contains("--force") && error.contains(&summary.version),
        "{error}"
    );
    assert!(
        r.step("register").is_none() && r.step("deploy").is_none(),
        "{r}"
    );
    assert_eq!(function_env(&ctx).await["RUN_ID"], before);

    // The CLI path exits non-zero and says why.
    let err = worse.run(&ctx).await.unwrap_err().to_string();
    assert!(err.contains("stopped by the quality gate"), "{err}");

    teardown(&ctx).await.unwrap();
}

#[tokio::test]
async fn with_mlflow_the_run_and_the_pipeline_record_are_kept_there() {
    let mut ctx = ctx_for("stg");
    ctx.tracking_uri = Some(crate::mlflow::mlflow().uri.clone());
    let dir = tempfile::tempdir().unwrap();
    let (train, val) = months(&dir);
    let image = image_for(&ctx).await;

    let r = args(&train, &val, &image).execute(&ctx).await.unwrap();
    assert_eq!(r.status, PipelineStatus::Succeeded, "{r}");
    let run = r.run_id.clone().unwrap();

    // Read back through MLflow's own REST API: the run, its alias, and the record attached to it.
    let http = reqwest::Client::new();
    let base = &crate::mlflow::mlflow().uri;
    let got: serde_json::Value = http
        .get(format!("{base}/api/2.0/mlflow/runs/get?run_id={run}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(got["run"]["info"]["run_id"], run.as_str());
    let staged = tracking::resolve_model(&ctx, &ModelSpec::Alias(tracking::STAGING.into()))
        .await
        .unwrap();
    assert_eq!(staged.run_id.as_deref(), Some(run.as_str()));
    let record = http
        .get(format!(
            "{base}/get-artifact?path=pipeline/{}.json&run_uuid={run}",
            r.id
        ))
        .send()
        .await
        .unwrap();
    assert!(record.status().is_success(), "{}", record.status());
    let kept: PipelineRecord = record.json().await.unwrap();
    assert_eq!(kept.id, r.id);
    assert_eq!(kept.status, PipelineStatus::Succeeded);
    assert_eq!(kept.steps.len(), STEPS.len());

    teardown(&ctx).await.unwrap();
}

#[tokio::test]
async fn network_failures_are_retried_and_service_errors_are_not() {
    use std::time::Duration;
    use xtask::pipeline::{is_transient, with_retries};
    let ctx = ctx_for("dev");

    // A server that starts answering only after a while: the first tries are refused.
    let port = crate::moto::free_port();
    let server = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(400)).await;
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        let app = axum::Router::new().route("/", axum::routing::get(|| async { "up" }));
        axum::serve(listener, app).await.unwrap();
    });
    let url = format!("http://127.0.0.1:{port}/");
    let (got, tries) = with_retries(&ctx, "get", 5, Duration::from_millis(100), async || {
        Ok(reqwest::get(&url).await?.text().await?)
    })
    .await;
    assert_eq!(got.unwrap(), "up");
    assert!(tries >= 2, "{tries} tries");
    server.abort();

    // The AWS SDK: a closed port is transient; a missing bucket on a live moto is not.
    let closed = xtask::ctx::aws_config_for(
        "us-east-1",
        Some(&format!("http://127.0.0.1:{}", crate::moto::free_port())),
    )
    .await
    .unwrap();
    let err = xtask::ctx::s3_client(&closed)
        .head_bucket()
        .bucket("any")
        .send()
        .await
        .unwrap_err();
    assert!(is_transient(
        &anyhow::Error::new(err).context("head bucket")
    ));
    let sdk = ctx.aws().await.unwrap();
    let err = xtask::ctx::s3_client(&sdk)
        .get_object()
        .bucket("no-such-bucket-for-this-test")
        .key("k")
        .send()
        .await
        .unwrap_err();
    assert!(!is_transient(
        &anyhow::Error::new(err).context("get object")
    ));

    // A permanent failure is tried once.
    let (r, tries) = with_retries(&ctx, "bad", 3, Duration::from_millis(1), async || {
        anyhow::Result::<()>::Err(anyhow::anyhow!("no such file: x.parquet"))
    })
    .await;
    assert!(r.is_err());
    assert_eq!(tries, 1);
}

/// A `cargo xtask monitor --window day --report DIR` summary of `current` against the reference.
async fn monitor_summary(
    ctx: &Ctx,
    f: &crate::monitor_data::Files,
    current: &Path,
    name: &str,
) -> PathBuf {
    let mut a = crate::monitor_data::args(&f.reference, current);
    a.window = Some(xtask::monitor::Window::Day);
    let dir = f.dir.path().join(name);
    a.report = Some(dir.clone());
    // An alert is an error (exit code 3 on the CLI); the summary is written either way.
    let _ = a.run(ctx).await;
    dir.join("summary.json")
}

#[tokio::test(flavor = "multi_thread")]
async fn if_drift_runs_the_pipeline_only_when_drift_fired() {
    let ctx = ctx_for("dev");
    let f = crate::monitor_data::files();
    let steady = monitor_summary(&ctx, &f, &f.steady, "steady").await;
    let drifting = monitor_summary(&ctx, &f, &f.drifting, "drifting").await;
    let missing = f.dir.path().join("no-such-month.parquet");
    let run_if = |report: &Path| PipelineArgs {
        train: vec![missing.clone()],
        val: vec![f.reference.clone()],
        if_drift: Some(report.to_path_buf()),
        ..Default::default()
    };

    // No drift: nothing runs, and the CLI exits 0.
    let r = run_if(&steady).execute(&ctx).await.unwrap();
    assert_eq!(r.status, PipelineStatus::NoDrift, "{r}");
    assert!(r.steps.is_empty());
    assert!(!r.drift.as_ref().unwrap().fired);
    run_if(&steady).run(&ctx).await.unwrap();

    // Drift: the pipeline starts, and its first step names the file that is not there.
    let r = run_if(&drifting).execute(&ctx).await.unwrap();
    assert!(r.drift.as_ref().unwrap().fired, "{r}");
    assert_eq!(r.status, PipelineStatus::Failed);
    let validate = r.step("validate").unwrap();
    assert_eq!(validate.status, StepStatus::Failed);
    let error = validate.error.as_deref().unwrap();
    assert!(error.contains("no-such-month.parquet"), "{error}");
}

#[tokio::test]
async fn a_dry_run_changes_nothing_and_resuming_it_ships() {
    let ctx = ctx_for("dev");
    let dir = tempfile::tempdir().unwrap();
    let (train, val) = months(&dir);
    let image = image_for(&ctx).await;

    let mut dry = ctx.clone();
    dry.dry_run = true;
    let r = args(&train, &val, &image).execute(&dry).await.unwrap();
    assert!(r.dry_run);
    assert_eq!(r.status, PipelineStatus::Succeeded, "{r}");
    assert_eq!(
        statuses(&r),
        [
            ("validate", StepStatus::Succeeded),
            ("train", StepStatus::Succeeded),
            ("evaluate", StepStatus::Succeeded),
            ("register", StepStatus::Skipped),
            ("deploy", StepStatus::Skipped),
            ("smoke", StepStatus::Skipped),
            ("promote", StepStatus::Skipped),
        ]
    );
    assert!(r.run_id.is_none());
    let sdk = ctx.aws().await.unwrap();
    let out = xtask::stack::service_outputs(&sdk, &ctx.env)
        .await
        .unwrap()
        .unwrap();
    assert!(
        out.function_name.is_none(),
        "a dry run deployed the function"
    );
    let runs = tracking::Tracker::from_ctx(&ctx)
        .unwrap()
        .list(10)
        .await
        .unwrap();
    assert!(runs.is_empty(), "a dry run recorded a run");

    // Resumed for real: what the dry run did is reused, the rest runs.
    let real = PipelineArgs {
        resume: Some(r.id.clone()),
        retry_base_ms: 10,
        ..Default::default()
    }
    .execute(&ctx)
    .await
    .unwrap();
    assert_eq!(real.status, PipelineStatus::Succeeded, "{real}");
    assert!(!real.dry_run);
    assert_eq!(real.step("train").unwrap().status, StepStatus::Reused);
    assert_eq!(real.step("deploy").unwrap().status, StepStatus::Succeeded);
    assert_eq!(
        function_env(&ctx).await["RUN_ID"],
        real.run_id.clone().unwrap()
    );

    teardown(&ctx).await.unwrap();
}

#[tokio::test]
async fn prod_asks_before_it_starts() {
    let mut ctx = ctx_for("prod");
    ctx.yes = false;
    let dir = tempfile::tempdir().unwrap();
    let (train, val) = months(&dir);
    let err = args(&train, &val, "unused:tag")
        .execute(&ctx)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("--yes"), "{err}");
    assert!(
        !pipelines_dir(&ctx).unwrap().exists(),
        "a refused pipeline left a record"
    );
}
