//! Test harness: Debian's `docker-registry` (distribution 2.8) on a free loopback port with its
//! storage in a temporary folder, killed when the handle drops. Docker pushes to loopback
//! registries over plain HTTP without any daemon configuration.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::moto::{free_port, http};

/// A running registry.
pub struct Registry {
    /// `127.0.0.1:<port>`, as image references spell it.
    pub addr: String,
    child: Child,
    _storage: tempfile::TempDir,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn registry_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("DOCKER_REGISTRY_BIN") {
        return PathBuf::from(p);
    }
    std::env::var_os("PATH")
        .and_then(|paths| std::env::split_paths(&paths).map(|d| d.join("docker-registry")).find(|p| p.exists()))
        .unwrap_or_else(|| {
            panic!(
                "docker-registry not found: run `bash tools/setup.sh` (or `apt-get install -y docker-registry`), \
                 or set DOCKER_REGISTRY_BIN"
            )
        })
}

/// Starts a registry and waits until `/v2/` answers.
pub fn start() -> Registry {
    let storage = tempfile::tempdir().unwrap();
    let port = free_port();
    let config = storage.path().join("config.yml");
    std::fs::write(
        &config,
        format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
             http:\n  addr: 127.0.0.1:{port}\n",
            storage.path().join("data").display()
        ),
    )
    .unwrap();
    let mut cmd = Command::new(registry_bin());
    cmd.arg("serve")
        .arg(&config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // The registry dies with the test process even when a test panics before the handle drops.
    #[cfg(target_os = "linux")]
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    let mut child = cmd.spawn().expect("start docker-registry");
    let deadline = Instant::now() + Duration::from_secs(30);
    while http(port, "GET", "/v2/").map(|s| s != 200).unwrap_or(true) {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("docker-registry exited with {status} before answering");
        }
        assert!(
            Instant::now() < deadline,
            "docker-registry did not answer on port {port} within 30 s"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Registry {
        addr: format!("127.0.0.1:{port}"),
        child,
        _storage: storage,
    }
}
