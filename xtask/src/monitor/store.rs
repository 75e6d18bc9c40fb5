//! Monitoring metrics in PostgreSQL, for the Grafana dashboard in `config/grafana/`.
//!
//! Two tables, created when missing:
//! - [`WINDOWS_TABLE`]: one row per window (environment, granularity, start): the dataset-level
//!   metrics, the prediction's drift and the alerts;
//! - [`COLUMNS_TABLE`]: one row per window and column: the test, its score and the missing share.
//!
//! Writing a window again replaces its rows (upserts on the primary keys), so a backfill can be
//! re-run safely.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use tokio_postgres::{Client, NoTls};

use super::{ColumnMetrics, Summary, WindowMetrics};

/// One row per window.
pub const WINDOWS_TABLE: &str = "taxi_drift_windows";
/// One row per window and column.
pub const COLUMNS_TABLE: &str = "taxi_drift_columns";

/// The schema, idempotent.
pub const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS taxi_drift_windows (
    env                   text             NOT NULL,
    granularity           text             NOT NULL,
    window_start          timestamptz      NOT NULL,
    window_end            timestamptz      NOT NULL,
    reference_rows        bigint           NOT NULL,
    current_rows          bigint           NOT NULL,
    columns_tested        integer          NOT NULL,
    columns_drifted       integer          NOT NULL,
    share_drifted_columns double precision NOT NULL,
    dataset_drift         boolean          NOT NULL,
    missing_share         double precision NOT NULL,
    prediction_test       text,
    prediction_score      double precision,
    prediction_drift      boolean,
    model_version         text,
    alert                 boolean          NOT NULL,
    alerts                text             NOT NULL,
    computed_at           timestamptz      NOT NULL DEFAULT now(),
    PRIMARY KEY (env, granularity, window_start)
);
CREATE TABLE IF NOT EXISTS taxi_drift_columns (
    env            text             NOT NULL,
    granularity    text             NOT NULL,
    window_start   timestamptz      NOT NULL,
    window_end     timestamptz      NOT NULL,
    column_name    text             NOT NULL,
    column_kind    text             NOT NULL,
    stat_test      text,
    drift_score    double precision,
    threshold      double precision,
    drifted        boolean          NOT NULL,
    missing_share  double precision NOT NULL,
    current_values bigint           NOT NULL,
    PRIMARY KEY (env, granularity, window_start, column_name)
);
";

/// Connects to PostgreSQL (without TLS: a local or tunnelled server).
pub async fn connect(url: &str) -> anyhow::Result<Client> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.with_context(|| {
        format!(
            "connect to PostgreSQL at {}: is it running and is DATABASE_URL right? (`bash tools/postgres.sh` starts the local one)",
            redact(url)
        )
    })?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!("PostgreSQL connection ended: {e}");
        }
    });
    Ok(client)
}

/// The URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let userinfo = &url[s + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!(
                "{}://{}{}",
                &url[..s],
                if userinfo.contains(':') {
                    format!("{user}:***")
                } else {
                    user.to_string()
                },
                &url[at..]
            )
        }
        _ => url.to_string(),
    }
}

/// Creates the tables when missing. Concurrent `CREATE TABLE IF NOT EXISTS` can still collide
/// in PostgreSQL's catalog, so writers take a transaction-scoped advisory lock first.
pub async fn ensure_schema(client: &Client) -> anyhow::Result<()> {
    client
        .batch_execute(&format!(
            "BEGIN; SELECT pg_advisory_xact_lock({SCHEMA_LOCK}); {SCHEMA} COMMIT;"
        ))
        .await
        .context("create the monitoring tables")
}

/// The advisory lock key that serialises schema creation (an arbitrary constant).
const SCHEMA_LOCK: i64 = 0x7461_7869_6472;

fn time(us: i64) -> SystemTime {
    if us >= 0 {
        UNIX_EPOCH + Duration::from_micros(us as u64)
    } else {
        UNIX_EPOCH - Duration::from_micros(us.unsigned_abs())
    }
}

/// Writes the windows alerts are judged on (every `--window` window, or the whole period) in one
/// transaction; returns how many.
pub async fn write(url: &str, summary: &Summary) -> anyhow::Result<usize> {
    let mut client = connect(url).await?;
    ensure_schema(&client).await?;
    let tx = client.transaction().await.context("begin a transaction")?;
    let windows = summary.judged();
    for w in &windows {
        write_window(&tx, summary, w)
            .await
            .with_context(|| format!("write window {}", w.start))?;
    }
    tx.commit().await.context("commit the monitoring metrics")?;
    Ok(windows.len())
}

async fn write_window(
    tx: &tokio_postgres::Transaction<'_>,
    summary: &Summary,
    w: &WindowMetrics,
) -> anyhow::Result<()> {
    let (start, end) = (time(w.start_us), time(w.end_us));
    let env = summary.env.as_str();
    let pred = w.prediction.as_ref().and_then(|p| p.drift);
    let alerts: Vec<&str> = w.alerts.iter().map(|a| a.name()).collect();
    tx.execute(
        "INSERT INTO taxi_drift_windows (env, granularity, window_start, window_end, reference_rows, current_rows,
             columns_tested, columns_drifted, share_drifted_columns, dataset_drift, missing_share,
             prediction_test, prediction_score, prediction_drift, model_version, alert, alerts, computed_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, now())
         ON CONFLICT (env, granularity, window_start) DO UPDATE SET
             window_end = EXCLUDED.window_end, reference_rows = EXCLUDED.reference_rows,
             current_rows = EXCLUDED.current_rows, columns_tested = EXCLUDED.columns_tested,
             columns_drifted = EXCLUDED.columns_drifted, share_drifted_columns = EXCLUDED.share_drifted_columns,
             dataset_drift = EXCLUDED.dataset_drift, missing_share = EXCLUDED.missing_share,
             prediction_test = EXCLUDED.prediction_test, prediction_score = EXCLUDED.prediction_score,
             prediction_drift = EXCLUDED.prediction_drift, model_version = EXCLUDED.model_version,
             alert = EXCLUDED.alert, alerts = EXCLUDED.alerts, computed_at = now()",
        &[
            &env,
            &w.granularity,
            &start,
            &end,
            &(summary.reference.rows as i64),
            &(w.rows as i64),
            &(w.columns_tested as i32),
            &(w.columns_drifted as i32),
            &w.share_drifted_columns,
            &w.dataset_drift,
            &w.missing_share,
            &pred.map(|d| d.test.name()),
            &pred.map(|d| d.score),
            &pred.map(|d| d.drifted),
            &summary.model_version,
            &!w.alerts.is_empty(),
            &alerts.join(","),
        ],
    )
    .await?;
    let columns: Vec<&ColumnMetrics> = w.columns.iter().chain(&w.prediction).collect();
    let names: Vec<&str> = columns.iter().map(|c| c.column.as_str()).collect();
    // A re-run without --model has no prediction row: drop rows this run no longer has.
    tx.execute(
        "DELETE FROM taxi_drift_columns WHERE env = $1 AND granularity = $2 AND window_start = $3
             AND NOT (column_name = ANY($4))",
        &[&env, &w.granularity, &start, &names],
    )
    .await?;
    for c in columns {
        let kind = match c.kind {
            super::stats::ColumnKind::Numerical => "numerical",
            super::stats::ColumnKind::Categorical => "categorical",
        };
        tx.execute(
            "INSERT INTO taxi_drift_columns (env, granularity, window_start, window_end, column_name, column_kind,
                 stat_test, drift_score, threshold, drifted, missing_share, current_values)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)
             ON CONFLICT (env, granularity, window_start, column_name) DO UPDATE SET
                 window_end = EXCLUDED.window_end, column_kind = EXCLUDED.column_kind,
                 stat_test = EXCLUDED.stat_test, drift_score = EXCLUDED.drift_score,
                 threshold = EXCLUDED.threshold, drifted = EXCLUDED.drifted,
                 missing_share = EXCLUDED.missing_share, current_values = EXCLUDED.current_values",
            &[
                &env,
                &w.granularity,
                &start,
                &end,
                &c.column,
                &kind,
                &c.drift.map(|d| d.test.name()),
                &c.drift.map(|d| d.score),
                &c.drift.map(|d| d.threshold),
                &c.drifted(),
                &c.missing_share,
                &(c.current_values as i64),
            ],
        )
        .await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords_only() {
        assert_eq!(
            redact("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("host=h user=u"), "host=h user=u");
    }
}
