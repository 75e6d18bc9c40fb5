//! Repository checks that run as ordinary tests: workflow structure, the CI entry point, the
//! README's quickstart, configuration files. The project we replace shipped an invalid workflow
//! and a test target that piped through `tee` without pipefail; these make both impossible.

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::path::PathBuf;

    use serde_yaml::Value;

    fn root() -> PathBuf {
        crate::ctx::repo_root()
    }

    fn read(rel: &str) -> String {
        std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"))
    }

    fn workflows() -> Vec<(String, Value)> {
        let dir = root().join(".github/workflows");
        let mut out: Vec<(String, Value)> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "yml" || x == "yaml"))
            .map(|p| {
                let text = std::fs::read_to_string(&p).unwrap();
                let v: Value = serde_yaml::from_str(&text)
                    .unwrap_or_else(|e| panic!("{} is not valid YAML: {e}", p.display()));
                (p.file_name().unwrap().to_string_lossy().into_owned(), v)
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    fn key<'a>(v: &'a Value, k: &str) -> Option<&'a Value> {
        v.as_mapping()?.get(Value::String(k.into()))
    }

    fn needs(job: &Value) -> Vec<String> {
        match key(job, "needs") {
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Sequence(s)) => s
                .iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect(),
            _ => Vec::new(),
        }
    }

    fn all_runs(wf: &Value) -> String {
        let mut out = String::new();
        for (_, job) in key(wf, "jobs")
            .and_then(Value::as_mapping)
            .into_iter()
            .flatten()
        {
            for step in key(job, "steps")
                .and_then(Value::as_sequence)
                .into_iter()
                .flatten()
            {
                if let Some(run) = key(step, "run").and_then(Value::as_str) {
                    out.push_str(run);
                    out.push('\n');
                }
            }
        }
        out
    }

    #[test]
    fn every_workflow_has_valid_structure() {
        let wfs = workflows();
        assert!(
            wfs.len() >= 2,
            "expected ci and cd workflows, found {:?}",
            wfs.iter().map(|w| &w.0).collect::<Vec<_>>()
        );
        for (name, wf) in &wfs {
            assert!(
                key(wf, "name").and_then(Value::as_str).is_some(),
                "{name}: no name"
            );
            // YAML 1.1 reads a bare `on:` as the boolean true; serde_yaml keeps it a string.
            assert!(key(wf, "on").is_some(), "{name}: no trigger (`on`)");
            let jobs = key(wf, "jobs")
                .and_then(Value::as_mapping)
                .unwrap_or_else(|| panic!("{name}: no jobs"));
            let ids: BTreeSet<String> = jobs
                .keys()
                .filter_map(|k| k.as_str().map(String::from))
                .collect();
            let mut graph: BTreeMap<String, Vec<String>> = BTreeMap::new();
            for (id, job) in jobs {
                let id = id.as_str().unwrap().to_string();
                assert!(key(job, "runs-on").is_some(), "{name}/{id}: no runs-on");
                let steps = key(job, "steps")
                    .and_then(Value::as_sequence)
                    .unwrap_or_else(|| panic!("{name}/{id}: no steps"));
                assert!(!steps.is_empty(), "{name}/{id}: empty steps");
                for (i, step) in steps.iter().enumerate() {
                    let (run, uses) = (key(step, "run").is_some(), key(step, "uses").is_some());
                    assert!(
                        run ^ uses,
                        "{name}/{id} step {i}: exactly one of run or uses"
                    );
                }
                for need in needs(job) {
                    assert!(
                        ids.contains(&need),
                        "{name}/{id}: needs unknown job `{need}`"
                    );
                }
                graph.insert(id, needs(job));
            }
            // No cycles in `needs`.
            fn visit(n: &str, g: &BTreeMap<String, Vec<String>>, stack: &mut Vec<String>) {
                assert!(
                    !stack.iter().any(|s| s == n),
                    "needs cycle through {stack:?} -> {n}"
                );
                stack.push(n.to_string());
                for m in &g[n] {
                    visit(m, g, stack);
                }
                stack.pop();
            }
            for id in graph.keys() {
                visit(id, &graph, &mut Vec::new());
            }
        }
    }

    #[test]
    fn ci_workflow_runs_the_quality_gates_and_the_end_to_end_run() {
        let wfs = workflows();
        let ci = &wfs.iter().find(|w| w.0 == "ci.yml").expect("ci.yml").1;
        let runs = all_runs(ci);
        for needle in [
            "cargo fmt --all --check",
            "clippy",
            "-D warnings",
            "--only setup,test",
            "e2e",
            "terraform fmt",
            "terraform -chdir=terraform validate",
        ] {
            assert!(runs.contains(needle), "ci.yml does not run `{needle}`");
        }
        let text = read(".github/workflows/ci.yml");
        assert!(
            text.contains("actions/cache") && text.contains("rust-cache"),
            "ci.yml caches between runs"
        );
    }

    #[test]
    fn retrain_workflow_is_scheduled_and_drift_triggered() {
        let wfs = workflows();
        let wf = &wfs
            .iter()
            .find(|w| w.0 == "retrain.yml")
            .expect("retrain.yml")
            .1;
        let on = key(wf, "on").expect("retrain.yml has triggers");
        let cron = key(on, "schedule")
            .and_then(Value::as_sequence)
            .and_then(|s| s.first())
            .and_then(|c| key(c, "cron"))
            .and_then(Value::as_str)
            .expect("a cron schedule");
        assert_eq!(cron.split_whitespace().count(), 5, "cron `{cron}`");
        let runs = all_runs(wf);
        for needle in ["monitor", "pipeline", "--if-drift", "--resume"] {
            assert!(runs.contains(needle), "retrain.yml does not run `{needle}`");
        }
        let jobs = key(wf, "jobs").unwrap();
        let retrain = key(jobs, "retrain").expect("a retrain job");
        assert_eq!(needs(retrain), ["monitor"]);
        let text = read(".github/workflows/retrain.yml");
        assert!(
            !text.contains("aws-access-key-id"),
            "OIDC, no long-lived keys"
        );
    }

    #[test]
    fn cd_workflow_uses_oidc_and_gates_prod_behind_an_environment() {
        let wfs = workflows();
        let cd = &wfs.iter().find(|w| w.0 == "cd.yml").expect("cd.yml").1;
        let perms = key(cd, "permissions").expect("cd.yml sets permissions");
        assert_eq!(
            key(perms, "id-token").and_then(Value::as_str),
            Some("write"),
            "OIDC needs id-token: write"
        );
        let text = read(".github/workflows/cd.yml");
        assert!(
            !text.contains("aws-access-key-id") && !text.contains("AWS_SECRET_ACCESS_KEY"),
            "no long-lived keys"
        );
        let jobs = key(cd, "jobs").unwrap();
        let prod = key(jobs, "deploy-prod").expect("deploy-prod job");
        assert_eq!(
            key(prod, "environment").and_then(Value::as_str),
            Some("production")
        );
        assert!(
            key(prod, "if")
                .and_then(Value::as_str)
                .unwrap()
                .contains("refs/tags/"),
            "prod deploys on tags"
        );
        let stg = key(jobs, "deploy-stg").expect("deploy-stg job");
        assert!(
            key(stg, "if")
                .and_then(Value::as_str)
                .unwrap()
                .contains("refs/heads/main")
        );
        assert!(
            all_runs(cd).contains("teardown"),
            "ephemeral stacks are torn down"
        );
    }

    #[test]
    fn ci_entry_point_fails_on_failing_tests_and_runs_the_readme_command() {
        let run = read(".ci/run");
        assert!(
            run.contains("set -euo pipefail"),
            ".ci/run must fail on any failing command, pipes included"
        );
        let readme = read("README.md");
        let test_cmd = quickstart(&readme)
            .pop()
            .expect("README quickstart has a test command");
        assert!(
            run.lines().any(|l| l.trim() == test_cmd),
            ".ci/run must call the README's test command `{test_cmd}`"
        );
    }

    /// The commands in the README's quickstart block.
    fn quickstart(readme: &str) -> Vec<String> {
        let start = readme
            .find("## Quickstart")
            .expect("README has a Quickstart section");
        let block = &readme[start..];
        let open = block.find("```").expect("quickstart code block");
        let body = &block[open + 3..];
        let body = &body[body.find('\n').unwrap() + 1..];
        let close = body.find("```").expect("closed code block");
        body[..close]
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(String::from)
            .collect()
    }

    #[test]
    fn readme_quickstart_has_exactly_two_commands() {
        let cmds = quickstart(&read("README.md"));
        assert_eq!(cmds.len(), 2, "quickstart commands: {cmds:?}");
        assert!(
            cmds.iter().all(|c| c.starts_with("cargo xtask ")),
            "{cmds:?}"
        );
    }

    #[test]
    fn configuration_files_parse() {
        let deny: toml::Table = toml::from_str(&read("deny.toml")).expect("deny.toml");
        for section in ["advisories", "licenses", "bans", "sources"] {
            assert!(deny.contains_key(section), "deny.toml has no [{section}]");
        }
        assert!(
            deny["bans"].get("multiple-versions").is_some(),
            "deny.toml says what duplicate versions do"
        );
        // The check that runs it: the `deny` step of `cargo xtask ci` and the workflow's deny job.
        let ci = crate::ci::steps(true);
        let step = ci.iter().find(|(n, _)| *n == "deny").expect("a deny step");
        assert_eq!(step.1.first(), Some(&"deny"));
        assert!(read(".github/workflows/ci.yml").contains("cargo-deny-action"));
        let _: toml::Table = toml::from_str(&read("rustfmt.toml")).expect("rustfmt.toml");
        let _: toml::Table = toml::from_str(&read("clippy.toml")).expect("clippy.toml");
        let pre: Value = serde_yaml::from_str(&read(".pre-commit-config.yaml"))
            .expect(".pre-commit-config.yaml");
        let ids: Vec<&str> = key(&pre, "repos")
            .and_then(Value::as_sequence)
            .into_iter()
            .flatten()
            .flat_map(|r| {
                key(r, "hooks")
                    .and_then(Value::as_sequence)
                    .into_iter()
                    .flatten()
            })
            .filter_map(|h| key(h, "id").and_then(Value::as_str))
            .collect();
        for id in ["rustfmt", "clippy", "terraform-fmt"] {
            assert!(
                ids.contains(&id),
                "pre-commit hook {id} missing from {ids:?}"
            );
        }
    }

    #[test]
    fn secrets_files_are_never_committed() {
        let gitignore = read(".gitignore");
        assert!(gitignore.lines().any(|l| l == ".env") && gitignore.lines().any(|l| l == ".env.*"));
    }
}
