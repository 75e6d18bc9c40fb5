//! Test harness: a real PostgreSQL for tests of the monitoring metrics.
//!
//! Included by integration tests with `#[path = "../../../tests/support/postgres.rs"] mod postgres;`.
//! The database is `TAXI_TEST_DATABASE_URL`, by default the local one `tools/postgres.sh`
//! prepares (`postgres://taxi:taxi@127.0.0.1:5432/taxi_test`). When it does not answer, the
//! harness runs `tools/postgres.sh` once (start the cluster, create role and database) and
//! retries; if it still does not answer, the test fails with the command that fixes it.
#![allow(dead_code)]

use std::path::Path;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The default test database, as `tools/postgres.sh` creates it.
pub const DEFAULT_URL: &str = "postgres://taxi:taxi@127.0.0.1:5432/taxi_test";

/// The test database's URL.
pub fn url() -> String {
    std::env::var("TAXI_TEST_DATABASE_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| DEFAULT_URL.to_string())
}

async fn try_connect(url: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// A connected client to the test database, starting PostgreSQL first when needed.
pub async fn client() -> (tokio_postgres::Client, String) {
    let url = url();
    if let Ok(c) = try_connect(&url).await {
        return (c, url);
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tools/postgres.sh");
    let status = std::process::Command::new("bash").arg(&script).status();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match try_connect(&url).await {
            Ok(c) => return (c, url),
            Err(e) if Instant::now() > deadline => panic!(
                "PostgreSQL at {url} does not answer ({e}); `bash {}` exited with {status:?}. \
                 Run `bash tools/setup.sh` (or tools/postgres.sh), or point TAXI_TEST_DATABASE_URL at a server",
                script.display()
            ),
            Err(_) => tokio::time::sleep(Duration::from_millis(300)).await,
        }
    }
}

/// A name no other test (or earlier run) uses, for rows a test owns: `<prefix>-<pid>-<n>-<nanos>`.
pub fn unique(prefix: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}-{}-{}-{nanos}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}
