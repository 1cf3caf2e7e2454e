//! The second Docker host for multi-host tests (`scripts/stack host2 up`): a
//! real dockerd in its own network namespace on this machine, running its
//! own copy of the stack (Caddy, daon-api-1..3, the chain node) published on
//! 10.240.2.2. Like [`crate::stack`], it fails instead of skipping in CI.

use crate::{in_ci, repo_root, require_docker};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// The second host's Docker endpoint.
pub const DOCKER: &str = "unix:///run/daon-dc2/docker.sock";
/// Its Caddy (plain HTTP), in front of its daon-api-1..3.
pub const LB_URL: &str = "http://10.240.2.2:18080";
/// Its Caddy admin API.
pub const CADDY_ADMIN_URL: &str = "http://10.240.2.2:12019";
/// Its chain node RPC.
pub const RPC_URL: &str = "http://10.240.2.2:36657";

/// The running second host.
#[derive(Debug, Clone)]
pub struct Host2 {
    /// Docker endpoint (`unix:///run/daon-dc2/docker.sock`).
    pub docker: String,
    /// Its Caddy, plain HTTP.
    pub lb_url: String,
    /// Its Caddy admin API.
    pub caddy_admin_url: String,
    /// Its chain RPC.
    pub rpc_url: String,
}

static HOST2: OnceLock<Result<(), String>> = OnceLock::new();

fn script(args: &[&str]) -> Result<Output, String> {
    Command::new("bash")
        .arg(repo_root().join("scripts/stack"))
        .args(args)
        .output()
        .map_err(|e| format!("running scripts/stack {}: {e}", args.join(" ")))
}

fn checked(args: &[&str]) -> Result<(), String> {
    let o = script(args)?;
    if o.status.success() {
        Ok(())
    } else {
        Err(format!(
            "scripts/stack {} failed ({}):\n{}{}",
            args.join(" "),
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ))
    }
}

/// Brings the second host up (once per test process) and returns it; `None`
/// outside CI when Docker is missing or this is not root (a visible SKIPPED
/// line). Panics in CI, or when it cannot start.
pub fn host2(test: &str) -> Option<Host2> {
    if !require_docker(test) {
        return None;
    }
    let root = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|r| r.split_whitespace().next().map(|u| u == "0"))
        })
        .unwrap_or(false);
    if !root {
        if in_ci() {
            panic!("{test}: the second Docker host needs root (a network namespace and a second dockerd); CI runs as root — multi-host tests never skip in CI");
        }
        eprintln!("SKIPPED {test}: the second Docker host needs root (set CI=true to make this a failure)");
        return None;
    }
    let r = HOST2.get_or_init(|| checked(&["host2", "up"]));
    match r {
        Ok(()) => Some(Host2 {
            docker: DOCKER.into(),
            lb_url: LB_URL.into(),
            caddy_admin_url: CADDY_ADMIN_URL.into(),
            rpc_url: RPC_URL.into(),
        }),
        Err(e) => panic!("{test}: {e}"),
    }
}

impl Host2 {
    /// Runs `docker --host <host2> ARGS`.
    pub fn docker(&self, args: &[&str]) -> Output {
        Command::new("docker")
            .arg("--host")
            .arg(&self.docker)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("running docker --host {} {args:?}: {e}", self.docker))
    }

    /// Docker health of a container on the second host (as [`crate::health`]).
    pub fn health(&self, container: &str) -> String {
        let o = self.docker(&[
            "inspect",
            "-f",
            "{{if .State.Running}}{{if .State.Health}}{{.State.Health.Status}}{{else}}running{{end}}{{else}}{{.State.Status}}{{end}}",
            container,
        ]);
        String::from_utf8_lossy(&o.stdout).trim().to_string()
    }

    /// `daon-api:VERSION` in the second host's own image store
    /// (`scripts/stack host2 api-image VERSION --mode MODE`).
    pub fn api_image(&self, version: &str, mode: &str) -> Result<(), String> {
        checked(&["host2", "api-image", version, "--mode", mode])
    }

    /// Puts it back as `up` leaves it (instances on daon-api:local, Caddy's own
    /// config, all healthy).
    pub fn restore(&self) -> Result<(), String> {
        checked(&["host2", "up"])
    }

    /// A guard that restores the second host when dropped (even on panic).
    pub fn restore_on_drop(&self) -> Restore {
        Restore(self.clone())
    }
}

/// Restores the second host on drop.
pub struct Restore(Host2);

impl Drop for Restore {
    fn drop(&mut self) {
        if let Err(e) = self.0.restore() {
            eprintln!("could not restore the second Docker host after a test: {e}");
        }
    }
}
