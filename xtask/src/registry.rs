//! A local OCI registry for image pushes: Debian's `docker-registry` binary (CNCF distribution),
//! run as a background process with its configuration and storage under a cache directory.
//!
//! `cargo xtask local up` starts one when Docker is present; image tests start their own with
//! [`start`] and stop it with [`RegistryHandle::stop`].

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};

use crate::daemon;

/// What identifies the registry process in `/proc/<pid>/cmdline`.
const PROCESS_NEEDLE: &str = "docker-registry";

/// A running registry.
#[derive(Debug, Clone)]
pub struct RegistryHandle {
    /// The process id.
    pub pid: u32,
    /// `127.0.0.1:<port>`, the host part of image references pushed to it.
    pub addr: String,
    /// The port.
    pub port: u16,
    /// The directory holding its configuration, storage and log.
    pub dir: PathBuf,
}

impl RegistryHandle {
    /// Stops the registry if it still runs. Its storage stays in `dir`.
    pub fn stop(&self) -> anyhow::Result<()> {
        stop(self.pid)
    }
}

/// The registry binary: `DOCKER_REGISTRY_BIN`, else `docker-registry` on `PATH` (Debian's
/// package installs `/usr/bin/docker-registry`). `None` when it is not installed.
pub fn binary() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("DOCKER_REGISTRY_BIN") {
        return Some(PathBuf::from(p));
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join("docker-registry"))
            .find(|p| p.is_file())
    })
}

/// How to get the binary, for error messages.
pub const INSTALL_HINT: &str = "install Debian's registry with `apt-get install -y docker-registry` (or run `bash tools/setup.sh`), \
     or set DOCKER_REGISTRY_BIN to a CNCF distribution `registry` binary";

/// Writes the registry's configuration for `port` into `dir/config.yml` (storage in `dir/data`)
/// and returns its path. Loopback only, no auth: it is for this machine's image tests and pushes.
pub fn write_config(dir: &Path, port: u16) -> anyhow::Result<PathBuf> {
    let data = dir.join("data");
    std::fs::create_dir_all(&data).with_context(|| format!("create {}", data.display()))?;
    let config = format!(
        "version: 0.1\n\
         log:\n  level: warn\n\
         storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
         http:\n  addr: 127.0.0.1:{port}\n",
        data.display()
    );
    let path = dir.join("config.yml");
    std::fs::write(&path, config).with_context(|| format!("write {}", path.display()))?;
    Ok(path)
}

/// Starts a registry on `127.0.0.1:port` with its files under `dir`, detached from this process,
/// and waits until `GET /v2/` answers. Pass a port from [`daemon::free_port`] when any will do.
pub async fn start(dir: &Path, port: u16) -> anyhow::Result<RegistryHandle> {
    let Some(bin) = binary() else {
        bail!("no OCI registry binary found: {INSTALL_HINT}");
    };
    if daemon::port_in_use(port) {
        bail!(
            "port {port} is already taken: choose another with TAXI_REGISTRY_PORT, or stop what listens there"
        );
    }
    let config = write_config(dir, port)?;
    let pid = daemon::spawn_detached(
        Command::new(&bin).arg("serve").arg(&config),
        &dir.join("registry.log"),
    )
    .with_context(|| format!("start {}", bin.display()))?;
    let addr = format!("127.0.0.1:{port}");
    let handle = RegistryHandle {
        pid,
        addr: addr.clone(),
        port,
        dir: dir.to_path_buf(),
    };
    let ready = daemon::wait_until(
        &format!("registry on {addr}"),
        Duration::from_secs(30),
        || daemon::is_running(pid, PROCESS_NEEDLE),
        || healthy(&addr),
    )
    .await;
    if let Err(e) = ready {
        let _ = handle.stop();
        let log = std::fs::read_to_string(dir.join("registry.log")).unwrap_or_default();
        return Err(e.context(format!("registry log:\n{}", tail(&log, 20))));
    }
    Ok(handle)
}

/// True when a registry answers `GET /v2/` with 200 on `addr` (`host:port`).
pub async fn healthy(addr: &str) -> bool {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .expect("static client config");
    matches!(client.get(format!("http://{addr}/v2/")).send().await, Ok(r) if r.status().is_success())
}

/// Stops the registry process `pid`, after checking that it still is a registry.
pub fn stop(pid: u32) -> anyhow::Result<()> {
    daemon::stop(pid, PROCESS_NEEDLE, Duration::from_secs(5))?;
    Ok(())
}

/// True when `pid` is still a running registry.
pub fn is_running(pid: u32) -> bool {
    daemon::is_running(pid, PROCESS_NEEDLE)
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_listens_on_loopback_and_stores_under_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let path = write_config(dir.path(), 5123).unwrap();
        let yaml: serde_yaml::Value =
            serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        assert_eq!(yaml["http"]["addr"].as_str(), Some("127.0.0.1:5123"));
        let root = yaml["storage"]["filesystem"]["rootdirectory"]
            .as_str()
            .unwrap();
        assert!(Path::new(root).starts_with(dir.path()), "{root}");
    }
}
