//! Test support for the end-to-end tests: brings the real local stack up once
//! (via `scripts/stack up`), serializes tests that break it on purpose, and
//! — with `CI=true` — fails instead of skipping when Docker is missing, so a
//! green CI run always means the Docker tests ran.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap_or_else(|_| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../..")))
}

/// True when running in CI (`CI=true`).
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// True when the Docker daemon answers.
pub fn docker_available() -> bool {
    Command::new("docker")
        .args(["version", "--format", "{{.Server.Version}}"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Decides whether a Docker-backed test can run: yes if Docker answers; if
/// not, panics in CI and prints a visible SKIP line elsewhere.
pub fn require_docker(test: &str) -> bool {
    if docker_available() {
        return true;
    }
    if in_ci() {
        panic!("{test}: Docker is required in CI (CI=true) but the daemon does not answer; start it (`systemctl start docker`) — Docker tests never skip in CI");
    }
    eprintln!("SKIPPED {test}: Docker is not available (set CI=true to make this a failure)");
    false
}

/// The running local stack.
pub struct Stack {
    /// Its config file (`tests/stack/daon.toml`).
    pub config: PathBuf,
}

static STACK: OnceLock<Result<PathBuf, String>> = OnceLock::new();

/// Brings the stack up (once per test process) and returns it, or `None` when
/// Docker is unavailable outside CI. Panics if the stack cannot start.
pub fn stack(test: &str) -> Option<Stack> {
    if !require_docker(test) {
        return None;
    }
    let r = STACK.get_or_init(|| {
        let _guard = lock();
        let root = repo_root();
        let out = Command::new("bash")
            .arg(root.join("scripts/stack"))
            .arg("up")
            .output()
            .map_err(|e| format!("running scripts/stack up: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "scripts/stack up failed ({}):\n{}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(root.join("tests/stack/daon.toml"))
    });
    match r {
        Ok(config) => Some(Stack {
            config: config.clone(),
        }),
        Err(e) => panic!("{test}: {e}"),
    }
}

/// An exclusive lock shared by every test process and thread that changes
/// the stack (stops a container, flips a fixture); released on drop.
pub struct StackLock(#[allow(dead_code)] File);

/// Takes the stack lock, waiting as long as needed.
pub fn lock() -> StackLock {
    let dir = repo_root().join("target");
    let _ = std::fs::create_dir_all(&dir);
    let f = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("daon-stack-tests.lock"))
        .unwrap_or_else(|e| panic!("opening the stack test lock: {e}"));
    f.lock()
        .unwrap_or_else(|e| panic!("locking the stack test lock: {e}"));
    StackLock(f)
}

/// The seven containers of the local stack.
pub const ALL_CONTAINERS: [&str; 7] = [
    "daon-postgres",
    "daon-redis",
    "daon-blockchain",
    "daon-api-1",
    "daon-api-2",
    "daon-api-3",
    "daon-caddy",
];

/// Path of another workspace binary (e.g. `daon-backup` in a reboot-guard
/// test), built on demand: cargo builds only the tested package's binaries.
pub fn workspace_bin(name: &str) -> PathBuf {
    let root = repo_root();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let st = Command::new(cargo)
        .args(["build", "--quiet", "--bin", name])
        .current_dir(&root)
        .status()
        .unwrap_or_else(|e| panic!("building {name}: {e}"));
    assert!(st.success(), "building {name} failed");
    let dir = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| root.join("target"));
    dir.join("debug").join(name)
}

/// Runs `docker ARGS`, returning its output.
pub fn docker(args: &[&str]) -> Output {
    Command::new("docker")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running docker {args:?}: {e}"))
}

/// Docker health of a container (`healthy`, `unhealthy`, `starting`, or the
/// state when it has none / is not running).
pub fn health(container: &str) -> String {
    let o = docker(&[
        "inspect",
        "-f",
        "{{if .State.Running}}{{if .State.Health}}{{.State.Health.Status}}{{else}}running{{end}}{{else}}{{.State.Status}}{{end}}",
        container,
    ]);
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// Waits until `container`'s health is exactly `want`; panics after `timeout`.
pub fn wait_health(container: &str, want: &str, timeout: Duration) {
    if let Err(e) = try_wait_health(container, want, timeout) {
        panic!("{e}");
    }
}

/// Waits until `container`'s health is exactly `want`, or says why not.
pub fn try_wait_health(container: &str, want: &str, timeout: Duration) -> Result<(), String> {
    let start = Instant::now();
    loop {
        let h = health(container);
        if h == want {
            return Ok(());
        }
        if start.elapsed() > timeout {
            return Err(format!(
                "{container} did not become {want} within {timeout:?} (it is {h:?})"
            ));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// Sends a fixture control request from inside a container
/// (`daon-fixture http POST URL`), e.g. to flip an API instance unhealthy.
pub fn fixture_ctl(container: &str, url: &str) {
    let o = docker(&["exec", container, "/daon-fixture", "http", "POST", url]);
    assert!(
        o.status.success(),
        "fixture control {url} in {container} failed: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Puts the stack back as `scripts/stack up` leaves it: every container
/// started, fixtures switched back to normal, all healthy.
pub fn restore_stack() -> Result<(), String> {
    restore_api_images()?;
    restore_caddy_config()?;
    // Every container, in case a test stopped the whole stack.
    for c in ALL_CONTAINERS {
        let _ = docker(&["start", c]);
    }
    for c in ["daon-api-1", "daon-api-2", "daon-api-3"] {
        let _ = docker(&[
            "exec",
            c,
            "/daon-fixture",
            "http",
            "POST",
            "http://127.0.0.1:3000/admin/health/ok",
        ]);
    }
    for path in [
        "admin/resume",
        "admin/chain-id/daon-devnet-1",
        "admin/catching-up/false",
        "admin/peers/0",
    ] {
        let _ = docker(&[
            "exec",
            "daon-blockchain",
            "/daon-fixture",
            "http",
            "POST",
            &format!("http://127.0.0.1:26657/{path}"),
        ]);
    }
    for c in [
        "daon-api-1",
        "daon-api-2",
        "daon-api-3",
        "daon-blockchain",
        "daon-postgres",
        "daon-redis",
        "daon-caddy",
    ] {
        try_wait_health(c, "healthy", Duration::from_secs(90))?;
    }
    Ok(())
}

/// Runs the stack's compose (v2, else v1) with `args`, without the variables
/// that pick API images or fixture modes, so services get the stack's defaults.
pub fn stack_compose(args: &[&str]) -> Output {
    let root = repo_root();
    let dir = root.join("tests/stack");
    let file = dir.join("docker-compose.yml");
    let env = dir.join(".env");
    let mut base: Vec<String> = vec!["-p".into(), "daon-stack".into()];
    base.extend(["-f".into(), file.display().to_string()]);
    base.extend(["--project-directory".into(), dir.display().to_string()]);
    if env.exists() {
        base.extend(["--env-file".into(), env.display().to_string()]);
    }
    let v2 = Command::new("docker")
        .args(["compose", "version"])
        .output()
        .is_ok_and(|o| o.status.success());
    let mut cmd = if v2 {
        let mut c = Command::new("docker");
        c.arg("compose");
        c
    } else {
        Command::new("docker-compose")
    };
    cmd.args(&base).args(args);
    for v in [
        "DAON_API_TAG",
        "DAON_API_START_PERIOD",
        "FIXTURE_START_DELAY_SECS",
        "FIXTURE_NEVER_HEALTHY",
        "FIXTURE_UNHEALTHY_AFTER_SECS",
    ] {
        cmd.env_remove(v);
    }
    cmd.output()
        .unwrap_or_else(|e| panic!("running compose {args:?}: {e}"))
}

fn image_id(reference: &str) -> String {
    let o = docker(&["image", "inspect", "-f", "{{.Id}}", reference]);
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// Puts every API instance back on `daon-api:local` (a deploy test may have
/// left another version running).
pub fn restore_api_images() -> Result<(), String> {
    let local = image_id("daon-api:local");
    for c in ["daon-api-1", "daon-api-2", "daon-api-3"] {
        let o = docker(&["inspect", "-f", "{{.Config.Image}} {{.Image}}", c]);
        let text = String::from_utf8_lossy(&o.stdout).trim().to_string();
        if o.status.success() && text == format!("daon-api:local {local}") {
            continue;
        }
        let o = stack_compose(&["up", "-d", "--no-deps", "--force-recreate", c]);
        if !o.status.success() {
            return Err(format!(
                "recreating {c} on daon-api:local: {}",
                String::from_utf8_lossy(&o.stderr)
            ));
        }
    }
    Ok(())
}

/// Reloads Caddy's own Caddyfile when its running config was changed through
/// the admin API (a drain left behind, an upstream missing).
pub fn restore_caddy_config() -> Result<(), String> {
    let o = docker(&[
        "exec",
        "daon-caddy",
        "curl",
        "-fsS",
        "http://127.0.0.1:2019/config/",
    ]);
    let cfg = String::from_utf8_lossy(&o.stdout);
    let intact = o.status.success()
        && !cfg.contains("daon_ops_drain_hold")
        && ["daon-api-1:3000", "daon-api-2:3000", "daon-api-3:3000"]
            .iter()
            .all(|u| cfg.matches(u).count() == 2);
    if intact {
        return Ok(());
    }
    let o = docker(&[
        "exec",
        "daon-caddy",
        "caddy",
        "reload",
        "--config",
        "/etc/caddy/Caddyfile",
        "--adapter",
        "caddyfile",
        "--force",
    ]);
    if o.status.success() {
        Ok(())
    } else {
        Err(format!(
            "reloading Caddy's Caddyfile: {}",
            String::from_utf8_lossy(&o.stderr)
        ))
    }
}

/// Holds the stack lock and restores the stack when dropped (even when the
/// test panics), so one failing test does not break the next.
pub struct Mutation(#[allow(dead_code)] StackLock);

impl Drop for Mutation {
    fn drop(&mut self) {
        if let Err(e) = restore_stack() {
            eprintln!("could not restore the stack after a test: {e}");
        }
    }
}

/// Takes the stack lock for a test that will break the stack on purpose.
pub fn mutate() -> Mutation {
    let l = lock();
    Mutation(l)
}

/// A real HTTP server on loopback that records every request and answers
/// with a status the test can change: the "service" a check looks at, a
/// webhook receiver, a dead-man ping receiver, a maintenance-mode switch.
pub struct Recorder {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// Status code of the answers (200 at first).
    pub status: std::sync::Arc<std::sync::atomic::AtomicU16>,
    /// ("METHOD path", body) of every request, in order.
    pub requests: std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>>,
}

impl Recorder {
    /// Starts one on an ephemeral port.
    pub fn start() -> Recorder {
        use std::io::{BufRead, BufReader, Read, Write};
        use std::sync::atomic::{AtomicU16, Ordering};
        use std::sync::{Arc, Mutex};
        let l = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap_or_else(|e| panic!("binding a recorder: {e}"));
        let url = format!(
            "http://{}",
            l.local_addr().map(|a| a.to_string()).unwrap_or_default()
        );
        let status = Arc::new(AtomicU16::new(200));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (st, rq) = (status.clone(), requests.clone());
        std::thread::spawn(move || {
            for s in l.incoming().flatten() {
                let Ok(clone) = s.try_clone() else { continue };
                let mut r = BufReader::new(clone);
                let mut first = String::new();
                if r.read_line(&mut first).is_err() {
                    continue;
                }
                let mut len = 0;
                loop {
                    let mut h = String::new();
                    if r.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                        break;
                    }
                    if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0; len];
                let _ = r.read_exact(&mut body);
                let line = first
                    .split_whitespace()
                    .take(2)
                    .collect::<Vec<_>>()
                    .join(" ");
                if let Ok(mut g) = rq.lock() {
                    g.push((line, String::from_utf8_lossy(&body).into_owned()));
                }
                let code = st.load(Ordering::SeqCst);
                let _ = (&s).write_all(
                    format!(
                        "HTTP/1.1 {code} X\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
                    )
                    .as_bytes(),
                );
            }
        });
        Recorder {
            url,
            status,
            requests,
        }
    }

    /// A copy of the requests so far.
    pub fn seen(&self) -> Vec<(String, String)> {
        self.requests.lock().map(|g| g.clone()).unwrap_or_default()
    }
}
