//! Metrics into a real PostgreSQL: idempotent window writes, and every Grafana panel's SQL
//! (read from `config/grafana/dashboards/taxi-drift.json`) run against the rows written.

#[path = "../../../tests/support/postgres.rs"]
mod postgres;

use serde_json::Value;
use xtask::monitor::{Window, store};

use crate::monitor_data::{args, files};

/// Grafana's time range for the panels: the synthetic February days.
const FROM: &str = "2022-01-31T00:00:00Z";
const TO: &str = "2022-02-05T00:00:00Z";

fn dashboard() -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../config/grafana/dashboards/taxi-drift.json");
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// Expands the Grafana macros and variables the dashboard uses, as Grafana's PostgreSQL
/// datasource does, and fails on any it does not know.
fn expand(sql: &str, env: &str, granularity: &str) -> String {
    let mut out = sql.to_string();
    while let Some(i) = out.find("$__timeFilter(") {
        let close = i + out[i..].find(')').expect("closing parenthesis");
        let column = &out[i + "$__timeFilter(".len()..close];
        out = format!(
            "{}{column} BETWEEN '{FROM}' AND '{TO}'{}",
            &out[..i],
            &out[close + 1..]
        );
    }
    out = out
        .replace("$granularity", granularity)
        .replace("$env", env);
    assert!(!out.contains('$'), "unexpanded macro or variable in {sql}");
    out
}

async fn count(client: &tokio_postgres::Client, table: &str, env: &str) -> i64 {
    client
        .query_one(
            &format!("SELECT count(*) FROM {table} WHERE env = $1"),
            &[&env],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn windows_are_upserted_and_every_dashboard_panel_reads_them() {
    let (client, url) = postgres::client().await;
    let f = files();
    let env = postgres::unique("test-monitor");

    // A backfill by day, with predictions: 3 windows (the stray 2009 trip is skipped).
    let mut a = args(&f.reference, &f.drifting);
    a.window = Some(Window::Day);
    a.model = Some(f.model.clone());
    let summary = a.analyze(&env).unwrap().summary;
    assert_eq!(summary.windows.len(), 3);
    assert_eq!(summary.skipped_windows.len(), 1);
    assert_eq!(store::write(&url, &summary).await.unwrap(), 3);
    assert_eq!(
        store::write(&url, &summary).await.unwrap(),
        3,
        "a second write of the same windows"
    );
    assert_eq!(
        count(&client, store::WINDOWS_TABLE, &env).await,
        3,
        "writing twice keeps one row per window"
    );
    assert_eq!(
        count(&client, store::COLUMNS_TABLE, &env).await,
        3 * 7,
        "six columns and the prediction per window"
    );

    // The rows hold what the analysis found.
    let rows = client
        .query(
            "SELECT to_char(window_start AT TIME ZONE 'UTC', 'YYYY-MM-DD'), share_drifted_columns, dataset_drift, alert, alerts, prediction_score
             FROM taxi_drift_windows WHERE env = $1 ORDER BY window_start",
            &[&env],
        )
        .await
        .unwrap();
    for (row, w) in rows.iter().zip(&summary.windows) {
        assert_eq!(format!("{}T00:00:00Z", row.get::<_, String>(0)), w.start);
        assert_eq!(row.get::<_, f64>(1), w.share_drifted_columns);
        assert_eq!(row.get::<_, bool>(2), w.dataset_drift);
        assert_eq!(row.get::<_, bool>(3), !w.alerts.is_empty());
        assert_eq!(
            row.get::<_, Option<f64>>(5),
            w.prediction.as_ref().and_then(|p| p.drift).map(|d| d.score)
        );
    }
    let (first, last) = (&rows[0], &rows[2]);
    assert!(
        !first.get::<_, bool>(3),
        "the first, normal day raises no alert"
    );
    assert!(
        last.get::<_, bool>(2) && last.get::<_, bool>(3),
        "the drifted day has dataset drift and an alert"
    );
    let alerts: String = last.get(4);
    assert!(
        alerts.contains("dataset_drift")
            && alerts.contains("prediction_drift")
            && alerts.contains("missing_values"),
        "{alerts}"
    );

    // Every panel and variable query of the dashboard runs and finds these rows.
    let dash = dashboard();
    for var in dash["templating"]["list"].as_array().unwrap() {
        let sql = var["query"].as_str().unwrap();
        let values: Vec<String> = client
            .query(sql, &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        let want = if var["name"] == "env" {
            env.clone()
        } else {
            "day".to_string()
        };
        assert!(
            values.contains(&want),
            "variable {} offers {values:?}",
            var["name"]
        );
    }
    let panels = dash["panels"].as_array().unwrap();
    assert!(panels.len() >= 8);
    for panel in panels {
        let title = panel["title"].as_str().unwrap();
        for target in panel["targets"].as_array().unwrap() {
            let raw = target["rawSql"].as_str().unwrap();
            for table in raw
                .split_whitespace()
                .skip_while(|w| !w.eq_ignore_ascii_case("FROM"))
                .skip(1)
                .take(1)
            {
                assert!(
                    table == store::WINDOWS_TABLE || table == store::COLUMNS_TABLE,
                    "{title} reads {table}"
                );
            }
            let sql = expand(raw, &env, "day");
            let rows = client
                .query(&sql, &[])
                .await
                .unwrap_or_else(|e| panic!("panel `{title}`: {e}\n{sql}"));
            assert!(!rows.is_empty(), "panel `{title}` found no rows:\n{sql}");
            match panel["id"].as_i64().unwrap() {
                1 => assert_eq!(
                    rows[0].get::<_, i64>(0),
                    summary
                        .windows
                        .iter()
                        .filter(|w| !w.alerts.is_empty())
                        .count() as i64
                ),
                5 => {
                    let got: Vec<f64> = rows.iter().map(|r| r.get(1)).collect();
                    let want: Vec<f64> = summary
                        .windows
                        .iter()
                        .map(|w| w.share_drifted_columns)
                        .collect();
                    assert_eq!(got, want, "{title}");
                }
                7 => assert_eq!(
                    rows.len(),
                    summary
                        .windows
                        .iter()
                        .map(|w| w.columns_tested + 1)
                        .sum::<usize>(),
                    "{title}"
                ),
                _ => {}
            }
        }
    }
    // Another environment's panels see none of it.
    let other = expand(
        panels[4]["targets"][0]["rawSql"].as_str().unwrap(),
        "no-such-env",
        "day",
    );
    assert!(client.query(&other, &[]).await.unwrap().is_empty());

    // Re-running without the model replaces the windows and drops their prediction rows.
    let mut b = args(&f.reference, &f.drifting);
    b.window = Some(Window::Day);
    let again = b.analyze(&env).unwrap().summary;
    assert_eq!(store::write(&url, &again).await.unwrap(), 3);
    assert_eq!(count(&client, store::WINDOWS_TABLE, &env).await, 3);
    assert_eq!(count(&client, store::COLUMNS_TABLE, &env).await, 3 * 6);
    let preds: i64 = client
        .query_one("SELECT count(*) FROM taxi_drift_windows WHERE env = $1 AND prediction_score IS NOT NULL", &[&env])
        .await
        .unwrap()
        .get(0);
    assert_eq!(preds, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_without_windows_writes_one_period_row() {
    let (client, url) = postgres::client().await;
    let f = files();
    let env = postgres::unique("test-monitor-period");
    let summary = args(&f.reference, &f.steady).analyze(&env).unwrap().summary;
    assert_eq!(store::write(&url, &summary).await.unwrap(), 1);
    let row = client
        .query_one(
            "SELECT granularity, current_rows, alert FROM taxi_drift_windows WHERE env = $1",
            &[&env],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "period");
    assert_eq!(row.get::<_, i64>(1), 1800);
    assert!(
        !row.get::<_, bool>(2),
        "steady data raises no alert: {summary}"
    );
}
