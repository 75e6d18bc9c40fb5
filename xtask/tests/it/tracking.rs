//! Experiment tracking against a real MLflow server (started by the harness) and the local run
//! store: what the tracker writes is read back through MLflow's own REST API, not our client.

use std::collections::BTreeMap;
use std::path::Path;

use clap::Parser;

use model::artifact::{Artifact, CategoricalBlock, DataFile, NumericCoef, TrainingMetadata};
use model::{Categorical, FeatureSpec, Metrics, Numeric};
use serde_json::Value;
use xtask::ctx::{Ctx, GlobalArgs};
use xtask::runs::RunsArgs;
use xtask::tracking::mlflow::Auth;
use xtask::tracking::{
    GateDecision, ModelSpec, PRODUCTION, RunInput, STAGING, Settings, Tracker, TrackerKind,
    gate_report,
};

use crate::mlflow::mlflow;

/// A valid artifact with validation RMSE `rmse_val`; `intercept` makes the versions differ.
fn artifact(intercept: f64, rmse_val: f64) -> Artifact {
    let file = |name: &str, hash: &str| DataFile {
        path: format!("data/{name}"),
        sha256: hash.repeat(32),
        rows: 100,
    };
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
            vocabulary: vec!["43_151".into(), "74_75".into()],
            coef: vec![1.5, -0.5],
        }],
        metadata: TrainingMetadata {
            created_at: "2026-03-04T05:06:07Z".into(),
            git_commit: Some("feedc0de".into()),
            train_files: vec![file("green_tripdata_2021-01.parquet", "1a")],
            val_files: vec![file("green_tripdata_2021-02.parquet", "2b")],
            train_rows: 90,
            val_rows: 80,
            n_features: 3,
            train_metrics: Metrics {
                rmse: rmse_val - 0.5,
                mae: 3.0,
                r2: 0.6,
                rows: 90,
            },
            val_metrics: Some(Metrics {
                rmse: rmse_val,
                mae: 3.5,
                r2: 0.55,
                rows: 80,
            }),
            params: BTreeMap::new(),
        },
    };
    a.version = a.content_version();
    a
}

fn mlflow_tracker(runs_dir: &Path) -> Tracker {
    Tracker::from_settings(&Settings {
        tracking_uri: Some(mlflow().uri.clone()),
        experiment: "taxi-duration-it".into(),
        registered_model: "taxi-duration-it".into(),
        runs_dir: runs_dir.to_path_buf(),
        auth: Auth::None,
    })
    .unwrap()
}

/// Records `a` and returns the run id and the artifact bytes.
async fn record(tracker: &Tracker, a: &Artifact) -> (xtask::tracking::RunRecord, Vec<u8>) {
    let bytes = a.to_bytes().unwrap();
    let params = BTreeMap::from([
        ("alpha".to_string(), "0.5".to_string()),
        ("solver".to_string(), "exact".to_string()),
    ]);
    let rec = tracker
        .record(&RunInput::new(a, &params, "dev", None), &bytes)
        .await
        .unwrap();
    (rec, bytes)
}

/// A GET on the MLflow server with plain reqwest, independent of the client under test.
async fn rest(path: &str) -> reqwest::Response {
    let resp = reqwest::get(format!("{}{path}", mlflow().uri))
        .await
        .unwrap();
    assert!(resp.status().is_success(), "GET {path}: {}", resp.status());
    resp
}

async fn rest_json(path: &str) -> Value {
    serde_json::from_slice(&rest(path).await.bytes().await.unwrap()).unwrap()
}

fn pairs(list: &Value) -> BTreeMap<String, Value> {
    list.as_array()
        .map(|a| {
            a.iter()
                .map(|kv| (kv["key"].as_str().unwrap().to_string(), kv["value"].clone()))
                .collect()
        })
        .unwrap_or_default()
}

#[derive(clap::Parser)]
struct Cli {
    #[command(flatten)]
    global: GlobalArgs,
    #[command(subcommand)]
    cmd: Sub,
}

#[derive(clap::Subcommand)]
enum Sub {
    Runs(RunsArgs),
}

/// Parses `cargo xtask <args>` as the CLI does and runs the `runs` command against `tracker`,
/// returning its JSON output. In-process rather than through the binary: the shared target
/// directory of parallel worktrees can swap `target/debug/xtask` under a running test.
async fn xtask(tracker: &Tracker, args: &[&str]) -> anyhow::Result<Value> {
    let cli = Cli::try_parse_from(std::iter::once("xtask").chain(args.iter().copied()))?;
    let ctx = Ctx::new(&cli.global)?;
    let Sub::Runs(runs) = cli.cmd;
    let out = runs.execute(&ctx, tracker).await?;
    let json = serde_json::to_value(&out)?;
    out.into_result()?;
    Ok(json)
}

/// `runs gate --env prod` refuses `worse_run` (validation RMSE 6.0 against production's 5.0)
/// with a message naming the override, and passes it as `forced` with `--force`.
async fn gate_refuses_then_force_passes(tracker: &Tracker, worse_run: &str) {
    let spec = format!("run:{worse_run}");
    let gate = ["--env", "prod", "runs", "gate", "--model", &spec];
    let refused = xtask(tracker, &gate).await.unwrap_err();
    let msg = format!("{refused:#}");
    assert!(msg.contains("--force") && msg.contains("6.0000"), "{msg}");
    let forced = xtask(tracker, &[&gate[..], &["--force"]].concat())
        .await
        .unwrap();
    assert_eq!(forced["decision"], "forced");
}

#[tokio::test]
async fn mlflow_run_reads_back_through_the_rest_api() {
    let dir = tempfile::tempdir().unwrap();
    let tracker = mlflow_tracker(dir.path());
    let a = artifact(1.0, 6.0);
    let (rec, bytes) = record(&tracker, &a).await;
    assert_eq!(rec.tracker, TrackerKind::Mlflow);
    assert_eq!(rec.model_version.as_deref(), Some("1"));

    let run = rest_json(&format!("/api/2.0/mlflow/runs/get?run_id={}", rec.run_id)).await;
    let run = &run["run"];
    assert_eq!(run["info"]["status"], "FINISHED");
    assert_eq!(run["info"]["run_name"], format!("train-{}", a.version));
    let params = pairs(&run["data"]["params"]);
    assert_eq!(params["alpha"], "0.5");
    assert_eq!(params["solver"], "exact");
    let metrics = pairs(&run["data"]["metrics"]);
    assert_eq!(metrics["rmse_val"], 6.0);
    assert_eq!(metrics["rmse_train"], 5.5);
    assert_eq!(metrics["mae_val"], 3.5);
    assert_eq!(metrics["r2_val"], 0.55);
    assert_eq!(metrics["train_rows"], 90.0);
    assert_eq!(metrics["val_rows"], 80.0);
    assert_eq!(metrics["n_features"], 3.0);
    let tags = pairs(&run["data"]["tags"]);
    assert_eq!(tags["mlflow.source.git.commit"], "feedc0de");
    assert_eq!(
        tags["data.train.green_tripdata_2021-01.parquet.sha256"],
        "1a".repeat(32)
    );
    assert_eq!(
        tags["data.val.green_tripdata_2021-02.parquet.sha256"],
        "2b".repeat(32)
    );
    assert_eq!(tags["taxi.model_version"], a.version);

    // The artifact, downloaded through the artifact proxy, is the file byte for byte.
    let exp_id = run["info"]["experiment_id"].as_str().unwrap();
    let url = format!(
        "/api/2.0/mlflow-artifacts/artifacts/{exp_id}/{}/artifacts/model/model.json",
        rec.run_id
    );
    assert_eq!(rest(&url).await.bytes().await.unwrap().to_vec(), bytes);
    // The server keeps it under --artifacts-destination.
    assert!(
        mlflow()
            .dir
            .join("artifacts")
            .join(exp_id)
            .join(&rec.run_id)
            .join("artifacts/model/model.json")
            .is_file()
    );

    // The registered version points at the run's model folder.
    let mv = rest_json("/api/2.0/mlflow/model-versions/get?name=taxi-duration-it&version=1").await;
    assert_eq!(mv["model_version"]["run_id"], rec.run_id.as_str());
    assert!(
        mv["model_version"]["source"]
            .as_str()
            .unwrap()
            .ends_with(&format!("{}/artifacts/model", rec.run_id))
    );

    // A second run reuses the experiment and becomes version 2; listing is newest first.
    let (rec2, _) = record(&tracker, &artifact(2.0, 5.0)).await;
    assert_eq!(rec2.model_version.as_deref(), Some("2"));
    let exp =
        rest_json("/api/2.0/mlflow/experiments/get-by-name?experiment_name=taxi-duration-it").await;
    assert_eq!(exp["experiment"]["experiment_id"], exp_id);
    let listed: Vec<String> = tracker
        .list(10)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.run_id)
        .collect();
    assert_eq!(listed, vec![rec2.run_id.clone(), rec.run_id.clone()]);
    let shown = tracker.show(&rec.run_id).await.unwrap();
    assert_eq!(shown.metrics["rmse_val"], 6.0);
    assert_eq!(shown.experiment, "taxi-duration-it");
    // MLflow's internal tags stay out of the listing, the commit stays in.
    assert!(!shown.tags.contains_key("mlflow.runName"));
    assert_eq!(shown.tags["mlflow.source.git.commit"], "feedc0de");

    // A param longer than MLflow accepts is cut to its limit rather than failing the run.
    let long = BTreeMap::from([("train_paths".to_string(), "x".repeat(7000))]);
    let input = RunInput::new(&a, &long, "dev", None);
    let rec3 = tracker.record(&input, &bytes).await.unwrap();
    let run3 = rest_json(&format!("/api/2.0/mlflow/runs/get?run_id={}", rec3.run_id)).await;
    let params3 = pairs(&run3["run"]["data"]["params"]);
    assert_eq!(params3["train_paths"].as_str().unwrap().len(), 6000);
}

#[tokio::test]
async fn mlflow_aliases_resolve_and_the_gate_refuses_a_worse_model() {
    let dir = tempfile::tempdir().unwrap();
    let tracker = mlflow_tracker(dir.path());
    let (good, good_bytes) = record(&tracker, &artifact(1.0, 5.0)).await;
    let (worse, worse_bytes) = record(&tracker, &artifact(2.0, 6.0)).await;

    assert!(tracker.resolve_alias(PRODUCTION).await.unwrap().is_none());
    let set = tracker
        .set_alias(PRODUCTION, &ModelSpec::Run(good.run_id.clone()))
        .await
        .unwrap();
    assert_eq!(set.model_version, good.model_version);
    tracker
        .set_alias(STAGING, &ModelSpec::Run(worse.run_id.clone()))
        .await
        .unwrap();
    let alias =
        rest_json("/api/2.0/mlflow/registered-models/alias?name=taxi-duration-it&alias=production")
            .await;
    assert_eq!(alias["model_version"]["run_id"], good.run_id.as_str());

    let prod = tracker
        .resolve(&ModelSpec::Alias(PRODUCTION.into()))
        .await
        .unwrap();
    assert_eq!(prod.bytes, good_bytes);
    assert_eq!(prod.run_id.as_deref(), Some(good.run_id.as_str()));
    let staging = tracker
        .resolve(&ModelSpec::Alias(STAGING.into()))
        .await
        .unwrap();
    assert_eq!(staging.bytes, worse_bytes);
    let by_version = tracker
        .resolve(&ModelSpec::Version(worse.model_version.clone().unwrap()))
        .await
        .unwrap();
    assert_eq!(by_version.bytes, worse_bytes);
    let by_run = tracker
        .resolve(&ModelSpec::Run(worse.run_id.clone()))
        .await
        .unwrap();
    assert_eq!(by_run.bytes, worse_bytes);
    let err = tracker
        .resolve(&ModelSpec::Alias("canary".into()))
        .await
        .unwrap_err();
    assert!(
        format!("{err:#}").contains("runs alias set canary"),
        "{err:#}"
    );

    // The gate: 6.0 is more than 2 % worse than 5.0.
    assert_eq!(
        gate_report(&staging, Some(&prod), 0.02, false).decision,
        GateDecision::Refused
    );
    assert_eq!(
        gate_report(&staging, Some(&prod), 0.02, true).decision,
        GateDecision::Forced
    );
    assert_eq!(
        gate_report(&prod, Some(&prod), 0.02, false).decision,
        GateDecision::Pass
    );

    // The same through the CLI, as CI and deploy use it.
    gate_refuses_then_force_passes(&tracker, &worse.run_id).await;
    let pass = xtask(
        &tracker,
        &[
            "--env",
            "prod",
            "runs",
            "gate",
            "--model",
            "alias:production",
        ],
    )
    .await
    .unwrap();
    assert_eq!(pass["decision"], "pass");
    assert_eq!(pass["production_rmse"], 5.0);

    // Promoting the worse model to production through the CLI is gated too.
    let promote = xtask(
        &tracker,
        &["--yes", "runs", "alias", "set", "production", &worse.run_id],
    )
    .await;
    assert!(promote.is_err(), "{promote:?}");
    let alias =
        rest_json("/api/2.0/mlflow/registered-models/alias?name=taxi-duration-it&alias=production")
            .await;
    assert_eq!(
        alias["model_version"]["run_id"],
        good.run_id.as_str(),
        "a refused promotion must not move the alias"
    );

    let listed = xtask(&tracker, &["runs"]).await.unwrap();
    assert_eq!(listed["tracker"], "mlflow");
    let runs = listed["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0]["run_id"], worse.run_id.as_str());
    assert_eq!(runs[0]["aliases"], serde_json::json!(["staging"]));
    assert_eq!(runs[1]["aliases"], serde_json::json!(["production"]));
}

#[tokio::test]
async fn local_store_round_trip_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let runs_dir = dir.path().join("runs");
    let tracker = Tracker::from_settings(&Settings {
        tracking_uri: None,
        experiment: "taxi-duration-dev".into(),
        registered_model: "unused".into(),
        runs_dir: runs_dir.clone(),
        auth: Auth::None,
    })
    .unwrap();
    let (good, good_bytes) = record(&tracker, &artifact(1.0, 5.0)).await;
    let (worse, _) = record(&tracker, &artifact(2.0, 6.0)).await;
    assert_eq!(good.tracker, TrackerKind::Local);
    assert_eq!(
        std::fs::read(runs_dir.join(&good.run_id).join("model.json")).unwrap(),
        good_bytes
    );

    let listed = xtask(&tracker, &["runs"]).await.unwrap();
    assert_eq!(listed["tracker"], "local");
    let ids: Vec<&str> = listed["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["run_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![worse.run_id.as_str(), good.run_id.as_str()]);

    let shown = xtask(&tracker, &["runs", "show", &good.run_id])
        .await
        .unwrap();
    assert_eq!(shown["params"]["alpha"], "0.5");
    assert_eq!(shown["metrics"]["rmse_val"], 5.0);
    assert_eq!(shown["tags"]["mlflow.source.git.commit"], "feedc0de");

    // --dry-run changes nothing; production needs --yes without a terminal.
    let dry = xtask(
        &tracker,
        &[
            "--dry-run",
            "runs",
            "alias",
            "set",
            "production",
            &good.run_id,
        ],
    )
    .await
    .unwrap();
    assert!(
        dry["dry_run"].as_str().unwrap().contains("production"),
        "{dry}"
    );
    assert!(!runs_dir.join("aliases.json").exists());
    let unconfirmed = xtask(
        &tracker,
        &["runs", "alias", "set", "production", &good.run_id],
    )
    .await
    .unwrap_err();
    assert!(unconfirmed.to_string().contains("--yes"), "{unconfirmed}");
    let set = xtask(
        &tracker,
        &["--yes", "runs", "alias", "set", "production", &good.run_id],
    )
    .await
    .unwrap();
    assert_eq!(set["run_id"], good.run_id.as_str());

    gate_refuses_then_force_passes(&tracker, &worse.run_id).await;
    let aliases: BTreeMap<String, String> =
        serde_json::from_slice(&std::fs::read(runs_dir.join("aliases.json")).unwrap()).unwrap();
    assert_eq!(aliases[PRODUCTION], good.run_id);
}
