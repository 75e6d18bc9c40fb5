//! Background processes that outlive the `cargo xtask` invocation that started them (the moto
//! server, the OCI registry), and the checks that make `down` kill only what `up` started.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

/// Starts `cmd` in a new session (so it survives our exit and a Ctrl-C in our terminal), with
/// stdout and stderr appended to `log`. Returns its process id.
pub fn spawn_detached(cmd: &mut Command, log: &Path) -> anyhow::Result<u32> {
    if let Some(dir) = log.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    let out = File::options()
        .create(true)
        .append(true)
        .open(log)
        .with_context(|| format!("open {}", log.display()))?;
    let err = out.try_clone()?;
    cmd.stdin(Stdio::null()).stdout(out).stderr(err);
    // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd
        .spawn()
        .with_context(|| format!("start {:?}", cmd.get_program()))?;
    Ok(child.id())
}

/// True when `pid` is a live (not zombie) process whose command line contains `needle`.
/// Guards against killing an unrelated process that reused a recorded pid.
pub fn is_running(pid: u32, needle: &str) -> bool {
    if exited(pid) {
        return false;
    }
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|raw| {
            String::from_utf8_lossy(&raw)
                .replace('\0', " ")
                .contains(needle)
        })
        .unwrap_or(false)
}

/// Collects the exit status of `pid` if it is our own exited child (as in tests, which start
/// and stop the emulator from one process); a no-op for any other process.
fn reap(pid: u32) {
    // SAFETY: waitpid with WNOHANG on a specific pid never blocks and fails harmlessly
    // with ECHILD when the process is not our child.
    unsafe {
        libc::waitpid(pid as libc::pid_t, std::ptr::null_mut(), libc::WNOHANG);
    }
}

/// Stops the process `pid` if (and only if) it still runs `needle`: SIGTERM, then SIGKILL after
/// `grace`. Returns whether a process was stopped.
pub fn stop(pid: u32, needle: &str, grace: Duration) -> anyhow::Result<bool> {
    if !is_running(pid, needle) {
        return Ok(false);
    }
    signal(pid, libc::SIGTERM)?;
    // Gone or a zombie, not merely a cleared command line: an exiting process drops its memory
    // (and /proc/<pid>/cmdline reads empty) before it is a zombie.
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if exited(pid) {
            return Ok(true);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    signal(pid, libc::SIGKILL)?;
    let deadline = Instant::now() + Duration::from_secs(5);
    while !exited(pid) {
        anyhow::ensure!(
            Instant::now() < deadline,
            "process {pid} ({needle}) survived SIGKILL"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(true)
}

/// True when `pid` is gone or a zombie (reaped first when it is our child).
fn exited(pid: u32) -> bool {
    reap(pid);
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return true;
    };
    // The state follows the parenthesised command name, which may itself contain spaces.
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next());
    matches!(state, Some("Z") | Some("X"))
}

fn signal(pid: u32, sig: libc::c_int) -> anyhow::Result<()> {
    // SAFETY: kill(2) with a positive pid signals exactly that process.
    let rc = unsafe { libc::kill(pid as libc::pid_t, sig) };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::ESRCH) {
            return Err(err).with_context(|| format!("signal process {pid}"));
        }
    }
    Ok(())
}

/// A free TCP port on the loopback interface.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")
        .context("bind a loopback port")?
        .local_addr()?
        .port())
}

/// True when something accepts TCP connections on `127.0.0.1:port`.
pub fn port_in_use(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(300))
        .is_ok()
}

/// Polls `probe` every 100 ms until it returns true, `what` names the awaited thing in the error.
/// `alive` lets the caller stop early when the awaited process has died.
pub async fn wait_until<F, Fut>(
    what: &str,
    timeout: Duration,
    mut alive: impl FnMut() -> bool,
    mut probe: F,
) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if probe().await {
            return Ok(());
        }
        anyhow::ensure!(alive(), "{what} exited before it became ready");
        anyhow::ensure!(
            Instant::now() < deadline,
            "{what} not ready after {} s",
            timeout.as_secs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_detached_process_is_found_and_stopped_by_its_command_line() {
        let dir = tempfile::tempdir().unwrap();
        let pid =
            spawn_detached(Command::new("sleep").arg("300"), &dir.path().join("log")).unwrap();
        assert!(is_running(pid, "sleep"));
        assert!(
            !is_running(pid, "moto_server"),
            "a pid running something else is not ours"
        );
        assert!(
            !stop(pid, "moto_server", Duration::from_millis(100)).unwrap(),
            "must not kill a stranger"
        );
        assert!(stop(pid, "sleep", Duration::from_secs(2)).unwrap());
        assert!(!is_running(pid, "sleep"));
    }
}
