//! A registry per test: `xtask::registry::start` on a free port with its storage in a temporary
//! folder, stopped when the handle drops (a panicking test included).

use xtask::registry::RegistryHandle;

/// A running registry.
pub struct Registry {
    /// `127.0.0.1:<port>`, as image references spell it.
    pub addr: String,
    handle: RegistryHandle,
    _dir: tempfile::TempDir,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.handle.stop();
    }
}

/// Starts a registry and waits until `/v2/` answers.
pub async fn start() -> Registry {
    let dir = tempfile::tempdir().unwrap();
    let handle = xtask::registry::start(dir.path(), xtask::daemon::free_port().unwrap())
        .await
        .expect("start docker-registry (`bash tools/setup.sh` installs it)");
    Registry {
        addr: handle.addr.clone(),
        handle,
        _dir: dir,
    }
}
