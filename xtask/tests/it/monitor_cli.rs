//! `cargo xtask monitor` as a user runs it: exit codes, JSON on stdout, the report folder, and the
//! Grafana provisioning files.

use std::process::Command;

use serde_json::Value;

use crate::monitor_data::files;

fn xtask() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_xtask"));
    // Metrics go to PostgreSQL only when a test asks for it.
    cmd.env_remove("DATABASE_URL").env("TAXI_ENV", "dev");
    cmd
}

#[test]
fn steady_data_exits_0_with_a_json_summary() {
    let f = files();
    let out = xtask()
        .args(["monitor", "--output", "json", "--reference"])
        .arg(&f.reference)
        .arg("--current")
        .arg(&f.steady)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let summary: Value = serde_json::from_slice(&out.stdout).expect("stdout is one JSON document");
    assert_eq!(summary["alert"], false);
    assert_eq!(summary["overall"]["rows"], 1800);
    assert_eq!(summary["overall"]["columns"].as_array().unwrap().len(), 6);
    assert_eq!(
        summary["overall"]["columns"][0]["drift"]["test"],
        "wasserstein"
    );
}

#[test]
fn drift_exits_3_and_writes_a_self_contained_report() {
    let f = files();
    let report = f.dir.path().join("report");
    let out = xtask()
        .args(["monitor", "--window", "day", "--reference"])
        .arg(&f.reference)
        .arg("--current")
        .arg(&f.drifting)
        .arg("--model")
        .arg(&f.model)
        .arg("--report")
        .arg(&report)
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(
        out.status.code(),
        Some(3),
        "alerts exit with 3\n{stdout}\n{stderr}"
    );
    assert!(stderr.contains("alert"), "{stderr}");
    assert!(stdout.contains("2022-02-03T00:00:00Z"), "{stdout}");
    let html = std::fs::read_to_string(report.join("report.html")).unwrap();
    assert_eq!(
        html.matches("<svg").count(),
        7,
        "a plot per column and one for the prediction"
    );
    assert!(
        !html.contains("<script") && !html.contains("<link") && !html.contains("src="),
        "no external assets"
    );
    assert!(html.contains("prediction") && html.contains("An alert fired"));
    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(report.join("summary.json")).unwrap())
            .unwrap();
    assert_eq!(summary["windows"].as_array().unwrap().len(), 3);
    assert_eq!(
        summary["skipped_windows"][0]["start"],
        "2009-01-01T00:00:00Z"
    );
    assert_eq!(summary["alert"], true);
}

#[test]
fn thresholds_are_flags() {
    let f = files();
    // A share above 1 is refused: it would silently disable the dataset-drift alert.
    let out = xtask()
        .args(["monitor", "--drift-share", "1.5", "--reference"])
        .arg(&f.reference)
        .arg("--current")
        .arg(&f.steady)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    // Tolerating every missing value and any drift share short of all columns: the drifted file passes.
    let out = xtask()
        .args([
            "monitor",
            "--drift-share",
            "1",
            "--max-missing-share",
            "1",
            "--prediction-threshold",
            "1000",
            "--reference",
        ])
        .arg(&f.reference)
        .arg("--current")
        .arg(&f.drifting)
        .arg("--model")
        .arg(&f.model)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn a_missing_file_exits_1_and_names_the_fix() {
    let out = xtask()
        .args([
            "monitor",
            "--reference",
            "/no/such.parquet",
            "--current",
            "/no/such.parquet",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("/no/such.parquet does not exist") && stderr.contains("pass a TLC"),
        "{stderr}"
    );
}

#[test]
fn grafana_provisioning_is_json_and_points_at_the_dashboard_datasource() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../config/grafana");
    let read = |p: &str| -> Value {
        let text = std::fs::read_to_string(dir.join(p)).unwrap();
        // Grafana reads these as YAML; they are written as JSON, which is YAML too.
        let yaml: serde_yaml::Value = serde_yaml::from_str(&text).unwrap();
        assert!(yaml.is_mapping());
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{p}: {e}"))
    };
    let ds = read("provisioning/datasources/taxi-drift.yaml");
    let dash_provider = read("provisioning/dashboards/taxi-drift.yaml");
    let dash = read("dashboards/taxi-drift.json");
    let source = &ds["datasources"][0];
    assert_eq!(source["type"], "grafana-postgresql-datasource");
    for placeholder in ["${POSTGRES_HOST}", "${POSTGRES_USER}"] {
        assert!(
            source.to_string().contains(placeholder),
            "credentials come from the environment"
        );
    }
    assert_eq!(dash_provider["providers"][0]["type"], "file");
    let uid = source["uid"].as_str().unwrap();
    for panel in dash["panels"].as_array().unwrap() {
        assert_eq!(panel["datasource"]["uid"], uid, "panel {}", panel["title"]);
        for t in panel["targets"].as_array().unwrap() {
            assert_eq!(t["datasource"]["uid"], uid);
            assert_eq!(t["rawQuery"], true);
        }
    }
}
