//! The embedded run store, used when no MLflow server is configured.
//!
//! ```text
//! <runs dir>/
//!   aliases.json                 {"production": "<run id>", "staging": "<run id>"}
//!   <run id>/run.json            experiment, name, created_at, params, metrics, tags
//!   <run id>/model.json          the artifact, byte for byte
//! ```
//!
//! Run ids sort by time: `<UTC timestamp with milliseconds>-<model version>`. A run appears whole
//! or not at all (written to a hidden folder, then renamed), and aliases.json is replaced
//! atomically, so a crash never leaves a half-written run or alias file behind.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use super::{AliasSet, ModelSpec, ResolvedModel, RunInfo, RunInput, RunRecord, TrackerKind};

/// The contents of `run.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct StoredRun {
    run_id: String,
    experiment: String,
    run_name: String,
    created_at: String,
    params: BTreeMap<String, String>,
    metrics: BTreeMap<String, f64>,
    tags: BTreeMap<String, String>,
}

/// A run store in a local directory.
#[derive(Debug, Clone)]
pub struct LocalStore {
    /// The directory holding the runs.
    pub dir: PathBuf,
    /// The experiment new runs are recorded in and runs are listed from.
    pub experiment: String,
}

impl LocalStore {
    /// A store in `dir`; nothing is created until a run is recorded.
    pub fn new(dir: &Path, experiment: &str) -> Self {
        Self {
            dir: dir.to_path_buf(),
            experiment: experiment.to_string(),
        }
    }

    fn aliases_path(&self) -> PathBuf {
        self.dir.join("aliases.json")
    }

    fn model_path(&self, run_id: &str) -> PathBuf {
        self.dir.join(run_id).join(model::artifact::FILE_NAME)
    }

    /// Records a run: `run.json` and the artifact under a new run id.
    pub fn record(&self, input: &RunInput, artifact_bytes: &[u8]) -> anyhow::Result<RunRecord> {
        std::fs::create_dir_all(&self.dir)
            .with_context(|| format!("create the run store {}", self.dir.display()))?;
        let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%S%3fZ").to_string();
        let short: String = input.model_version.chars().take(8).collect();
        let staging = tempfile::Builder::new()
            .prefix(".new-run-")
            .tempdir_in(&self.dir)
            .with_context(|| format!("create a folder in {}", self.dir.display()))?;
        std::fs::write(
            staging.path().join(model::artifact::FILE_NAME),
            artifact_bytes,
        )?;
        // Two runs of the same model in the same millisecond get a counter, so ids never collide.
        for n in 0..100 {
            let run_id = if n == 0 {
                format!("{stamp}-{short}")
            } else {
                format!("{stamp}-{short}-{n}")
            };
            let stored = StoredRun {
                run_id: run_id.clone(),
                experiment: self.experiment.clone(),
                run_name: input.run_name.clone(),
                created_at: input.created_at.clone(),
                params: input.params.clone(),
                metrics: input.metrics.clone(),
                tags: input.tags.clone(),
            };
            std::fs::write(
                staging.path().join("run.json"),
                serde_json::to_vec_pretty(&stored)?,
            )?;
            let dest = self.dir.join(&run_id);
            if dest.exists() {
                continue;
            }
            let staged = staging.keep();
            std::fs::rename(&staged, &dest)
                .with_context(|| format!("move the new run into {}", dest.display()))?;
            return Ok(RunRecord {
                artifact_uri: absolute(&self.model_path(&run_id)).display().to_string(),
                run_id,
                experiment: self.experiment.clone(),
                tracker: TrackerKind::Local,
                model_version: None,
            });
        }
        bail!(
            "could not find a free run id in {}: remove stale runs there",
            self.dir.display()
        )
    }

    fn read_run(&self, run_id: &str) -> anyhow::Result<StoredRun> {
        if run_id.is_empty() || run_id.contains(['/', '\\']) || run_id.starts_with('.') {
            bail!("`{run_id}` is not a run id: list runs with `cargo xtask runs`");
        }
        let path = self.dir.join(run_id).join("run.json");
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                bail!(
                    "no run `{run_id}` in {}: list runs with `cargo xtask runs`",
                    self.dir.display()
                )
            }
            Err(e) => return Err(e).with_context(|| format!("read {}", path.display())),
        };
        serde_json::from_slice(&bytes).with_context(|| format!("parse {}", path.display()))
    }

    /// The aliases, alias → run id.
    pub fn aliases(&self) -> anyhow::Result<BTreeMap<String, String>> {
        let path = self.aliases_path();
        match std::fs::read(&path) {
            Ok(b) => {
                serde_json::from_slice(&b).with_context(|| format!("parse {}", path.display()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
            Err(e) => Err(e).with_context(|| format!("read {}", path.display())),
        }
    }

    /// Points `alias` at the run `target` names (a run, or the run another alias points at).
    pub fn set_alias(&self, alias: &str, target: &ModelSpec) -> anyhow::Result<AliasSet> {
        let mut aliases = self.aliases()?;
        let run_id = match target {
            ModelSpec::Run(id) => id.clone(),
            ModelSpec::Alias(other) => aliases
                .get(other)
                .cloned()
                .with_context(|| format!("alias `{other}` is not set in {}", self.dir.display()))?,
            ModelSpec::Version(_) | ModelSpec::File(_) => {
                bail!(
                    "the local run store has no registered versions or files to alias: name a run, e.g. run:<id>"
                )
            }
        };
        self.read_run(&run_id)?;
        aliases.insert(alias.to_string(), run_id.clone());
        let mut tmp = tempfile::NamedTempFile::new_in(&self.dir)?;
        std::io::Write::write_all(&mut tmp, &serde_json::to_vec_pretty(&aliases)?)?;
        tmp.persist(self.aliases_path())
            .with_context(|| format!("write {}", self.aliases_path().display()))?;
        Ok(AliasSet {
            alias: alias.to_string(),
            run_id,
            model_version: None,
            tracker: TrackerKind::Local,
        })
    }

    fn resolve_run(&self, run_id: &str, via: Option<&str>) -> anyhow::Result<ResolvedModel> {
        self.read_run(run_id)?;
        let path = self.model_path(run_id);
        let bytes = std::fs::read(&path).with_context(|| format!("read {}", path.display()))?;
        let source = match via {
            Some(alias) => format!("local alias `{alias}` (run {run_id})"),
            None => format!("local run {run_id}"),
        };
        ResolvedModel::from_bytes(bytes, Some(run_id.to_string()), None, source)
    }

    /// Finds the model a run or alias names.
    pub fn resolve(&self, spec: &ModelSpec) -> anyhow::Result<ResolvedModel> {
        match spec {
            ModelSpec::Run(id) => self.resolve_run(id, None),
            ModelSpec::Alias(alias) => self.resolve_alias(alias)?.with_context(|| {
                format!(
                    "alias `{alias}` is not set in {}: set it with `cargo xtask runs alias set {alias} <run>`",
                    self.dir.display()
                )
            }),
            ModelSpec::Version(v) => bail!(
                "version:{v} needs an MLflow registry, and MLFLOW_TRACKING_URI is not set: use run:<id> or alias:<name>"
            ),
            ModelSpec::File(_) => unreachable!("files are resolved without a store"),
        }
    }

    /// The model an alias points at, or `None` when it is not set.
    pub fn resolve_alias(&self, alias: &str) -> anyhow::Result<Option<ResolvedModel>> {
        match self.aliases()?.get(alias) {
            Some(run_id) => self.resolve_run(run_id, Some(alias)).map(Some),
            None => Ok(None),
        }
    }

    fn info(&self, run: StoredRun, aliases: &BTreeMap<String, String>) -> RunInfo {
        RunInfo {
            aliases: aliases
                .iter()
                .filter(|(_, r)| **r == run.run_id)
                .map(|(a, _)| a.clone())
                .collect(),
            artifact_uri: absolute(&self.model_path(&run.run_id))
                .display()
                .to_string(),
            run_id: run.run_id,
            experiment: run.experiment,
            run_name: run.run_name,
            status: "FINISHED".to_string(),
            created_at: run.created_at,
            params: run.params,
            metrics: run.metrics,
            tags: run.tags,
        }
    }

    /// The newest `limit` runs of the experiment, newest first.
    pub fn list(&self, limit: usize) -> anyhow::Result<Vec<RunInfo>> {
        let mut ids: Vec<String> = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries
                .flatten()
                .filter(|e| e.path().join("run.json").is_file())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.starts_with('.'))
                .collect(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e).with_context(|| format!("list {}", self.dir.display())),
        };
        ids.sort_unstable_by(|a, b| b.cmp(a));
        let aliases = self.aliases()?;
        let mut out = Vec::new();
        for id in ids {
            let run = self.read_run(&id)?;
            if run.experiment == self.experiment {
                out.push(self.info(run, &aliases));
                if out.len() == limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// One run, by id, whatever its experiment.
    pub fn show(&self, run_id: &str) -> anyhow::Result<RunInfo> {
        let run = self.read_run(run_id)?;
        Ok(self.info(run, &self.aliases()?))
    }
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tracking::tests::artifact;
    use crate::tracking::{PRODUCTION, STAGING, Tracker, check_promotion};

    fn record(store: &LocalStore, rmse: f64, intercept: f64) -> (RunRecord, Vec<u8>) {
        let a = artifact(intercept, Some(rmse));
        let bytes = a.to_bytes().unwrap();
        let input = RunInput::new(
            &a,
            &BTreeMap::from([("alpha".into(), "1".into())]),
            "dev",
            None,
        );
        (store.record(&input, &bytes).unwrap(), bytes)
    }

    #[test]
    fn recorded_runs_read_back_with_params_metrics_tags_and_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path(), "taxi-duration-dev");
        let (rec, bytes) = record(&store, 6.0, 1.0);
        assert_eq!(rec.tracker, TrackerKind::Local);
        assert_eq!(std::fs::read(&rec.artifact_uri).unwrap(), bytes);
        let info = store.show(&rec.run_id).unwrap();
        assert_eq!(info.params["alpha"], "1");
        assert_eq!(info.metrics["rmse_val"], 6.0);
        assert_eq!(
            info.tags["data.train.green_tripdata_2021-01.parquet.sha256"],
            "aa".repeat(32)
        );
        let resolved = store.resolve(&ModelSpec::Run(rec.run_id.clone())).unwrap();
        assert_eq!(resolved.bytes, bytes);
        assert_eq!(resolved.run_id.as_deref(), Some(rec.run_id.as_str()));
        // No stray staging folders remain.
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from(&rec.run_id)]);
    }

    #[test]
    fn runs_list_newest_first_with_unique_ids_and_only_their_experiment() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path(), "taxi-duration-dev");
        let ids: Vec<String> = (0..3).map(|_| record(&store, 6.0, 1.0).0.run_id).collect();
        let other = LocalStore::new(dir.path(), "taxi-duration-prod");
        record(&other, 6.0, 1.0);
        let listed: Vec<String> = store
            .list(10)
            .unwrap()
            .into_iter()
            .map(|r| r.run_id)
            .collect();
        let mut want = ids.clone();
        want.sort();
        want.reverse();
        assert_eq!(listed, want);
        assert_eq!(store.list(2).unwrap().len(), 2);
        assert_eq!(other.list(10).unwrap().len(), 1);
    }

    #[tokio::test]
    async fn aliases_point_at_runs_and_feed_the_gate() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path(), "taxi-duration-dev");
        let (good, good_bytes) = record(&store, 5.0, 1.0);
        let (worse, _) = record(&store, 6.0, 2.0);
        let tracker = Tracker::Local(store.clone());
        assert!(tracker.resolve_alias(PRODUCTION).await.unwrap().is_none());
        tracker
            .set_alias(STAGING, &ModelSpec::Run(good.run_id.clone()))
            .await
            .unwrap();
        tracker
            .set_alias(PRODUCTION, &ModelSpec::Alias(STAGING.into()))
            .await
            .unwrap();
        let prod = tracker
            .resolve(&ModelSpec::Alias(PRODUCTION.into()))
            .await
            .unwrap();
        assert_eq!(prod.bytes, good_bytes);
        assert_eq!(
            store.show(&good.run_id).unwrap().aliases,
            vec![PRODUCTION.to_string(), STAGING.to_string()]
        );
        let candidate = tracker
            .resolve(&ModelSpec::Run(worse.run_id.clone()))
            .await
            .unwrap();
        assert!(check_promotion(&candidate.artifact, Some(&prod.artifact), 0.02).is_err());
        // Aliases name existing runs only.
        let err = tracker
            .set_alias(STAGING, &ModelSpec::Run("nope".into()))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("no run `nope`"), "{err}");
        assert!(
            tracker
                .resolve(&ModelSpec::Alias("canary".into()))
                .await
                .is_err()
        );
    }

    #[test]
    fn run_ids_cannot_escape_the_store() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::new(dir.path(), "x");
        assert!(store.show("../etc").is_err());
        assert!(store.show(".new-run-x").is_err());
    }
}
