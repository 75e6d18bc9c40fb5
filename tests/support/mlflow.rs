//! Test harness: one real MLflow tracking server per test process, on a free loopback port, with
//! a SQLite backend and proxied artifacts in a scratch directory.
//!
//! Include it next to the moto harness, whose `tool_bin`, `free_port` and `http` it reuses:
//! ```ignore
//! #[path = "../../../tests/support/moto.rs"] mod moto;
//! #[path = "../../../tests/support/mlflow.rs"] mod mlflow;
//! ```
//! The server comes from `MLFLOW_BIN`, the project's venv (`$TAXI_CACHE_DIR/venvs/mlflow`, made by
//! `tools/setup.sh`), or `PATH`. A missing binary fails the test loudly with the command that
//! installs it. The server dies with the test process (PDEATHSIG), and scratch directories of dead
//! test processes are removed the next time a server starts.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use super::moto::{free_port, http, tool_bin};

/// A running MLflow tracking server.
pub struct Mlflow {
    /// The tracking URI, `http://127.0.0.1:<port>`.
    pub uri: String,
    /// The port.
    pub port: u16,
    /// The scratch directory holding `mlflow.db`, `artifacts/` and `server.log`.
    pub dir: PathBuf,
}

fn mlflow_bin() -> PathBuf {
    tool_bin("MLFLOW_BIN", "mlflow", "mlflow", "bash tools/setup.sh")
}

/// Removes the scratch directories of test processes that are gone.
fn remove_stale_dirs(base: &Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if let Some(pid) = name.strip_prefix("taxi-mlflow-")
            && !Path::new("/proc").join(pid).exists()
        {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// The last lines of the server's log, for failure messages.
fn log_tail(dir: &Path) -> String {
    let log = std::fs::read_to_string(dir.join("server.log")).unwrap_or_default();
    let lines: Vec<&str> = log.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// The shared MLflow server of this test process, started on first use.
pub fn mlflow() -> &'static Mlflow {
    static MLFLOW: OnceLock<Mlflow> = OnceLock::new();
    MLFLOW.get_or_init(|| {
        let tmp = std::env::temp_dir();
        remove_stale_dirs(&tmp);
        let dir = tmp.join(format!("taxi-mlflow-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let port = free_port();
        let bin = mlflow_bin();
        let log = std::fs::File::create(dir.join("server.log")).unwrap();
        let mut cmd = Command::new(&bin);
        cmd.arg("server")
            .args([
                "--host",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--workers",
                "1",
            ])
            .arg("--backend-store-uri")
            .arg(format!("sqlite:///{}", dir.join("mlflow.db").display()))
            .arg("--artifacts-destination")
            .arg(dir.join("artifacts"))
            .arg("--serve-artifacts")
            // The job runner (GenAI scorers) starts extra worker processes a tracking server for
            // this project never uses; without it the server starts faster and leaves nothing behind.
            .env("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
            .current_dir(&dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log);
        // Spawned from a thread that lives as long as the test process, with PDEATHSIG set, so
        // that the server dies with the tests; on SIGTERM `mlflow server` stops its uvicorn worker.
        #[cfg(target_os = "linux")]
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let child = cmd.spawn().map(|c| Arc::new(Mutex::new(c)));
            let ok = child.is_ok();
            tx.send(child.map_err(|e| format!("start {}: {e}", bin.display())))
                .unwrap();
            if ok {
                loop {
                    std::thread::park();
                }
            }
        });
        let child: Arc<Mutex<Child>> = rx.recv().unwrap().unwrap();
        let uri = format!("http://127.0.0.1:{port}");
        // Generous: on a loaded two-core machine the first start (database migrations) is slow.
        let deadline = Instant::now() + Duration::from_secs(180);
        while http(port, "GET", "/health")
            .map(|s| s != 200)
            .unwrap_or(true)
        {
            if let Some(status) = child.lock().unwrap().try_wait().unwrap() {
                panic!(
                    "mlflow server exited with {status} before answering; its log:\n{}",
                    log_tail(&dir)
                );
            }
            assert!(
                Instant::now() < deadline,
                "mlflow did not answer on {uri}/health within 180 s; its log:\n{}",
                log_tail(&dir)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        Mlflow { uri, port, dir }
    })
}
