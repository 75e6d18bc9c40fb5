//! `cargo xtask local`: moto and the registry are started detached (their own session), found
//! again through the state file, and stopped by `down`; other emulators are adopted, not touched.
//!
//! The tests drive the library functions the CLI calls, in process: the CLI binary in the shared
//! target directory may belong to another worktree's build.

use std::path::Path;

use xtask::ctx::LocalState;
use xtask::local::{self, UpOptions};

use crate::{moto, support};

fn options(cache: &Path, port: u16) -> UpOptions {
    UpOptions {
        cache: cache.to_path_buf(),
        root: xtask::ctx::repo_root(),
        port,
        endpoint: None,
        registry: true,
        registry_port: Some(moto::free_port()),
        moto_bin: Some(support::moto_bin()),
    }
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| !s.contains(") Z "))
}

/// The session id of a process (field 6 of /proc/<pid>/stat).
fn session(pid: u32) -> i64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    stat.rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .nth(3)
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn up_status_reset_down_cycle() {
    let cache = tempfile::tempdir().unwrap();
    let port = moto::free_port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let opts = options(cache.path(), port);

    let up = local::up(&opts).await.unwrap();
    assert_eq!(up.action, "started");
    let state = up.state.clone().unwrap();
    assert_eq!(
        (state.kind.as_str(), state.endpoint.as_str()),
        ("moto", endpoint.as_str())
    );
    assert!(up.emulator_healthy);
    let pid = state.pid.unwrap();
    assert!(alive(pid));
    assert_eq!(
        session(pid),
        i64::from(pid),
        "moto leads its own session, so it outlives the command"
    );
    assert_eq!(
        LocalState::read(cache.path()).unwrap().as_ref(),
        Some(&state),
        "state recorded for other shells"
    );
    if xtask::registry::binary().is_some() {
        assert_eq!(up.registry_healthy, Some(true), "{:?}", up.notes);
        assert!(alive(state.registry_pid.unwrap()));
    }

    let again = local::up(&opts).await.unwrap();
    assert_eq!(again.action, "already running");
    assert_eq!(
        again.state.as_ref().unwrap().pid,
        Some(pid),
        "idempotent: the same server"
    );

    let status = local::status(cache.path()).await.unwrap();
    assert!(status.emulator_healthy);
    assert_eq!(status.state.as_ref().unwrap().registry, state.registry);

    // Reset wipes resources: a stream created before it is gone after it.
    let sdk = xtask::ctx::aws_config_for("us-east-1", Some(&endpoint))
        .await
        .unwrap();
    let kinesis = aws_sdk_kinesis::Client::new(&sdk);
    kinesis
        .create_stream()
        .stream_name("before-reset")
        .shard_count(1)
        .send()
        .await
        .unwrap();
    local::reset(cache.path(), &endpoint).await.unwrap();
    let streams = kinesis.list_streams().send().await.unwrap();
    assert!(
        streams.stream_names().is_empty(),
        "{:?}",
        streams.stream_names()
    );

    let down = local::down(cache.path()).unwrap();
    assert_eq!(down.action, "stopped");
    assert!(!alive(pid), "down stops moto");
    if let Some(r) = state.registry_pid {
        assert!(!alive(r), "down stops the registry");
    }
    assert!(!LocalState::path(cache.path()).exists());
    assert_eq!(
        local::status(cache.path()).await.unwrap().action,
        "not running"
    );
    assert_eq!(
        local::down(cache.path()).unwrap().action,
        "not running",
        "down twice is harmless"
    );
}

#[tokio::test]
async fn a_stale_state_file_is_replaced_and_a_reused_pid_is_not_killed() {
    let cache = tempfile::tempdir().unwrap();
    // A state file naming a live process that is not moto (ourselves), on a dead endpoint.
    let stale = LocalState {
        endpoint: format!("http://127.0.0.1:{}", moto::free_port()),
        pid: Some(std::process::id()),
        kind: "moto".into(),
        registry: None,
        registry_pid: None,
    };
    stale.write(cache.path()).unwrap();
    let mut opts = options(cache.path(), moto::free_port());
    opts.registry = false;
    let up = local::up(&opts).await.unwrap();
    assert_eq!(up.action, "started");
    assert!(
        up.notes.iter().any(|n| n.contains("is gone")),
        "{:?}",
        up.notes
    );
    local::down(cache.path()).unwrap();
}

#[tokio::test]
async fn a_running_external_emulator_is_adopted_and_left_alone() {
    let cache = tempfile::tempdir().unwrap();
    let shared = moto::moto();
    let mut opts = options(cache.path(), moto::free_port());
    opts.endpoint = Some(shared.endpoint.clone());
    opts.registry = false;
    let up = local::up(&opts).await.unwrap();
    assert_eq!(up.action, "adopted");
    let state = up.state.unwrap();
    assert_eq!((state.kind.as_str(), state.pid), ("external", None));
    local::down(cache.path()).unwrap();
    assert_eq!(
        moto::http(shared.port, "GET", "/moto-api/").unwrap(),
        200,
        "down must not stop a server it did not start"
    );
}

#[tokio::test]
async fn an_unanswering_endpoint_is_refused_with_the_fix() {
    let cache = tempfile::tempdir().unwrap();
    let mut opts = options(cache.path(), moto::free_port());
    opts.endpoint = Some(format!("http://127.0.0.1:{}", moto::free_port()));
    let err = local::up(&opts).await.err().unwrap().to_string();
    assert!(
        err.contains("does not answer") && err.contains("docker-compose.local.yaml"),
        "{err}"
    );
    assert!(LocalState::read(cache.path()).unwrap().is_none());
}

#[tokio::test]
async fn the_registry_starts_answers_and_stops() {
    assert!(
        xtask::registry::binary().is_some(),
        "docker-registry is not installed: {}",
        xtask::registry::INSTALL_HINT
    );
    let dir = tempfile::tempdir().unwrap();
    let handle = xtask::registry::start(dir.path(), moto::free_port())
        .await
        .unwrap();
    assert!(xtask::registry::healthy(&handle.addr).await);
    assert!(xtask::registry::is_running(handle.pid));
    handle.stop().unwrap();
    assert!(!xtask::registry::is_running(handle.pid));
    assert!(!xtask::registry::healthy(&handle.addr).await);
}
