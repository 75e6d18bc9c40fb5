//! Test harness: one real moto server per test binary, on a free loopback port.
//!
//! Included by integration tests with `#[path = "../../../tests/support/moto.rs"] mod moto;`.
//! The server binary is found through `MOTO_SERVER_BIN`, the project's venv
//! (`$TAXI_CACHE_DIR/venvs/moto`, set up by `.ci/run` or `cargo xtask local up`), or `PATH`.
//! A missing binary fails the test loudly with the command that installs it.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// A running moto server.
pub struct Moto {
    /// `http://127.0.0.1:<port>`.
    pub endpoint: String,
    /// The port.
    pub port: u16,
}

/// The project's cache directory (mirrors `xtask::ctx::cache_dir`).
pub fn cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("TAXI_CACHE_DIR") {
        return PathBuf::from(dir);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("taxi-duration")
}

/// A tool's binary: `$<var>`, else `<bin>` in the project's venv `<venv>`, else on `PATH`.
/// Panics with the command that installs it.
pub fn tool_bin(var: &str, venv: &str, bin: &str, install: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(var) {
        return PathBuf::from(p);
    }
    let in_venv = cache_dir().join("venvs").join(venv).join("bin").join(bin);
    if in_venv.exists() {
        return in_venv;
    }
    if let Some(p) = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(bin))
            .find(|p| p.exists())
    }) {
        return p;
    }
    panic!(
        "{bin} not found: run `{install}` to install it into {}, or set {var}",
        cache_dir().join("venvs").join(venv).display()
    )
}

fn moto_bin() -> PathBuf {
    tool_bin(
        "MOTO_SERVER_BIN",
        "moto",
        "moto_server",
        "bash .ci/run` (or `cargo xtask local up",
    )
}

/// A free loopback port.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The shared moto server of this test binary, started on first use.
pub fn moto() -> &'static Moto {
    static MOTO: OnceLock<Moto> = OnceLock::new();
    MOTO.get_or_init(|| {
        let port = free_port();
        let bin = moto_bin();
        // The server is spawned from a thread that lives as long as the test process, with
        // PDEATHSIG set, so that it dies with the tests and never outlives them.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut cmd = Command::new(&bin);
            cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                // moto runs its own Lambda executor on every Kinesis put to a stream that has an
                // event-source mapping, pulling images through Docker (0.4 s or more per record,
                // failing offline). xtask emulates mappings itself; a dead socket makes moto skip at once.
                .env(
                    "DOCKER_HOST",
                    "unix:///nonexistent/taxi-duration-no-docker.sock",
                )
                // Like AWS (and `cargo xtask local up`): a function's image must be in ECR.
                .env("MOTO_LAMBDA_STUB_ECR", "false")
                // As `cargo xtask local up` starts it: records of mapped streams are left to the
                // toolkit's poller (tools/moto-patches/sitecustomize.py).
                .env(
                    "PYTHONPATH",
                    concat!(env!("CARGO_MANIFEST_DIR"), "/../tools/moto-patches"),
                );
            #[cfg(target_os = "linux")]
            unsafe {
                use std::os::unix::process::CommandExt;
                cmd.pre_exec(|| {
                    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                    Ok(())
                });
            }
            let child = cmd.spawn();
            let ok = child.is_ok();
            tx.send(
                child
                    .map(|_| ())
                    .map_err(|e| format!("start {}: {e}", bin.display())),
            )
            .unwrap();
            if ok {
                loop {
                    std::thread::park();
                }
            }
        });
        rx.recv().unwrap().unwrap();
        let endpoint = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(60);
        while http(port, "GET", "/moto-api/")
            .map(|s| s != 200)
            .unwrap_or(true)
        {
            assert!(
                Instant::now() < deadline,
                "moto did not answer on {endpoint} within 60 s"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Moto { endpoint, port }
    })
}

/// A minimal HTTP/1.1 request; returns the status code.
pub fn http(port: u16, method: &str, path: &str) -> std::io::Result<u16> {
    let mut s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let head = String::from_utf8_lossy(&buf);
    head.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("bad HTTP answer: {head:.80}")))
}

/// A name no other test in this process uses: `<prefix>-<pid>-<n>`.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}
