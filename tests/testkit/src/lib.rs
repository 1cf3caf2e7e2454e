//! Test support for the end-to-end tests: brings the real local stack up once
//! (via `scripts/stack up`), serializes tests that break it on purpose, and
//! — with `CI=true` — fails instead of skipping when Docker is missing, so a
//! green CI run always means the Docker tests ran.

pub mod host2;

pub use host2::{host2, Host2};

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

/// A free TCP port on 127.0.0.1 (bound once, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("finding a free port: {e}"))
}

/// aiosmtpd with an authenticator: argv port, maildir, user; the password in
/// $SMTP_TEST_PASSWORD (never on a command line).
const SMTP_AUTH_SERVER: &str = r#"
import os, sys, time
from aiosmtpd.controller import Controller
from aiosmtpd.handlers import Mailbox
from aiosmtpd.smtp import AuthResult, LoginPassword
port, maildir, user = int(sys.argv[1]), sys.argv[2], sys.argv[3]
password = os.environ["SMTP_TEST_PASSWORD"]
def check(server, session, envelope, mechanism, data):
    ok = isinstance(data, LoginPassword) and data.login.decode() == user and data.password.decode() == password
    return AuthResult(success=ok, handled=False)
Controller(Mailbox(maildir), hostname="127.0.0.1", port=port, authenticator=check,
           auth_required=True, auth_require_tls=False).start()
while True:
    time.sleep(3600)
"#;

/// aiosmtpd over TLS: argv port, maildir, starttls|tls, cert, key.
const SMTP_TLS_SERVER: &str = r#"
import ssl, sys, time
from aiosmtpd.controller import Controller
from aiosmtpd.handlers import Mailbox
port, maildir, mode, cert, key = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5]
ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
ctx.load_cert_chain(cert, key)
if mode == "tls":
    Controller(Mailbox(maildir), hostname="127.0.0.1", port=port, ssl_context=ctx).start()
else:
    Controller(Mailbox(maildir), hostname="127.0.0.1", port=port, tls_context=ctx,
               require_starttls=True).start()
while True:
    time.sleep(3600)
"#;

/// A real SMTP server on loopback: aiosmtpd (Debian's python3-aiosmtpd, so
/// /usr/bin/python3) writing every message it takes to a maildir. Killed on drop.
pub struct Smtp {
    /// Port on 127.0.0.1.
    pub port: u16,
    /// Where messages land (`new/` holds one file per message).
    pub maildir: PathBuf,
    child: std::process::Child,
}

impl Drop for Smtp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Smtp {
    /// Starts one on a free port, with its maildir under `dir`.
    pub fn start(dir: &Path) -> Smtp {
        Smtp::on(free_port(), dir)
    }

    /// Starts one on `port`, with its maildir under `dir`.
    pub fn on(port: u16, dir: &Path) -> Smtp {
        let maildir = dir.join("maildir");
        let mut c = Command::new("/usr/bin/python3");
        c.args(["-m", "aiosmtpd", "-n", "-l"])
            .arg(format!("127.0.0.1:{port}"))
            .args(["-c", "aiosmtpd.handlers.Mailbox"])
            .arg(&maildir);
        Smtp::spawn(c, port, maildir)
    }

    /// Starts one that requires SMTP AUTH (PLAIN or LOGIN) as `user` with
    /// `password`, on a free port (over plain TCP: loopback only).
    pub fn with_auth(dir: &Path, user: &str, password: &str) -> Smtp {
        let port = free_port();
        let maildir = dir.join("maildir");
        let script = dir.join("smtp-auth-server.py");
        std::fs::write(&script, SMTP_AUTH_SERVER)
            .unwrap_or_else(|e| panic!("writing {}: {e}", script.display()));
        let mut c = Command::new("/usr/bin/python3");
        c.arg(&script)
            .arg(port.to_string())
            .arg(&maildir)
            .arg(user)
            .env("SMTP_TEST_PASSWORD", password);
        Smtp::spawn(c, port, maildir)
    }

    /// Starts one that speaks TLS — `starttls` (required before MAIL) or
    /// `tls` (implicit, SMTPS) — with a certificate for 127.0.0.1 from a CA
    /// made here; returns it and the CA's PEM file (what `smtp_ca_file` names).
    pub fn with_tls(dir: &Path, mode: &str) -> (Smtp, PathBuf) {
        let port = free_port();
        let maildir = dir.join("maildir");
        let (ca, cert, key) = (
            dir.join("ca.pem"),
            dir.join("smtp.pem"),
            dir.join("smtp.key"),
        );
        let ext = dir.join("san.ext");
        std::fs::write(&ext, "subjectAltName=IP:127.0.0.1\n")
            .unwrap_or_else(|e| panic!("writing {}: {e}", ext.display()));
        let d = dir.display();
        let openssl = format!(
            "set -e; cd '{d}'
             openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=daon-test-ca -keyout ca.key -out ca.pem 2>/dev/null
             openssl req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -keyout smtp.key -out smtp.csr 2>/dev/null
             openssl x509 -req -in smtp.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 -extfile san.ext -out smtp.pem 2>/dev/null"
        );
        let o = Command::new("sh")
            .args(["-c", &openssl])
            .output()
            .unwrap_or_else(|e| panic!("running openssl: {e}"));
        assert!(
            o.status.success(),
            "making a test CA with openssl: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let script = dir.join("smtp-tls-server.py");
        std::fs::write(&script, SMTP_TLS_SERVER)
            .unwrap_or_else(|e| panic!("writing {}: {e}", script.display()));
        let mut c = Command::new("/usr/bin/python3");
        c.arg(&script)
            .arg(port.to_string())
            .arg(&maildir)
            .arg(mode)
            .arg(&cert)
            .arg(&key);
        (Smtp::spawn(c, port, maildir), ca)
    }

    fn spawn(mut c: Command, port: u16, maildir: PathBuf) -> Smtp {
        let mut child = c
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("starting aiosmtpd (apt install python3-aiosmtpd): {e}"));
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Smtp {
                    port,
                    maildir,
                    child,
                };
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        let _ = child.wait();
        panic!("aiosmtpd did not start on port {port} (is python3-aiosmtpd installed?)");
    }

    /// `[notify]` lines that send mail to this server (no TLS, no auth).
    pub fn notify_toml(&self) -> String {
        format!(
            "email_to = [\"ops@example.org\"]\nemail_from = \"daon@example.org\"\nsmtp_host = \"127.0.0.1\"\nsmtp_port = {}\nsmtp_security = \"none\"\n",
            self.port
        )
    }

    /// The received messages (headers and body), in arrival order.
    pub fn messages(&self) -> Vec<String> {
        let mut files: Vec<(std::time::SystemTime, PathBuf)> =
            std::fs::read_dir(self.maildir.join("new"))
                .map(|d| {
                    d.flatten()
                        .filter_map(|e| {
                            let t = e.metadata().and_then(|m| m.modified()).ok()?;
                            Some((t, e.path()))
                        })
                        .collect()
                })
                .unwrap_or_default();
        files.sort();
        files
            .iter()
            .filter_map(|(_, p)| std::fs::read_to_string(p).ok())
            .collect()
    }

    /// Subjects of the received messages, in arrival order.
    pub fn subjects(&self) -> Vec<String> {
        self.messages()
            .iter()
            .map(|m| {
                m.lines()
                    .find_map(|l| l.strip_prefix("Subject: "))
                    .unwrap_or("")
                    .to_string()
            })
            .collect()
    }

    /// Every received message, joined.
    pub fn bodies(&self) -> String {
        self.messages().join("\n")
    }
}

/// The receivers a monitored tool run talks to ([notify]): one HTTP
/// [`Recorder`] for the webhook (`/hook/<token>`) and the dead-man pings
/// (`/ping/<uuid>/...`), and a real SMTP server.
pub struct Monitoring {
    /// Webhook and ping receiver.
    pub http: Recorder,
    /// Mail receiver.
    pub smtp: Smtp,
}

impl Monitoring {
    /// Secret part of the webhook URL (must never be printed).
    pub const HOOK_TOKEN: &'static str = "hook-T0KEN-5ecret";
    /// Secret part of the ping URL (must never be printed).
    pub const PING_UUID: &'static str = "5d1b3c1e-ping-5ecret";

    /// Starts both receivers (the maildir goes under `dir`).
    pub fn start(dir: &Path) -> Monitoring {
        Monitoring {
            http: Recorder::start(),
            smtp: Smtp::start(dir),
        }
    }

    /// The `DAON_NOTIFY_*` variables that point a tool at these receivers.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            (
                "DAON_NOTIFY_WEBHOOK_URL",
                format!("{}/hook/{}", self.http.url, Self::HOOK_TOKEN),
            ),
            (
                "DAON_NOTIFY_PING_URL",
                format!("{}/ping/{}", self.http.url, Self::PING_UUID),
            ),
            ("DAON_NOTIFY_EMAIL_TO", "ops@example.org".into()),
            ("DAON_NOTIFY_EMAIL_FROM", "daon@example.org".into()),
            ("DAON_NOTIFY_SMTP_HOST", "127.0.0.1".into()),
            ("DAON_NOTIFY_SMTP_PORT", self.smtp.port.to_string()),
            ("DAON_NOTIFY_SMTP_SECURITY", "none".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }

    /// What arrived, in order, in short form: `ping start`, `ping 0`,
    /// `hook success`, `hook failure`...
    pub fn events(&self) -> Vec<String> {
        self.http
            .seen()
            .iter()
            .map(|(line, body)| {
                let path = line.split('?').next().unwrap_or("");
                if let Some(p) = path.split(&format!("/ping/{}/", Self::PING_UUID)).nth(1) {
                    format!("ping {p}")
                } else if path.contains("/hook/") {
                    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
                    format!("hook {}", v["event"].as_str().unwrap_or("?"))
                } else {
                    format!("other {line}")
                }
            })
            .collect()
    }

    /// The webhook payloads, parsed, in order.
    pub fn hooks(&self) -> Vec<serde_json::Value> {
        self.http
            .seen()
            .iter()
            .filter(|(l, _)| l.contains("/hook/"))
            .map(|(_, b)| {
                serde_json::from_str(b).unwrap_or_else(|e| panic!("webhook body {b:?}: {e}"))
            })
            .collect()
    }

    /// Bodies of the end pings (`/ping/<uuid>/<code>`), in order.
    pub fn end_pings(&self) -> Vec<(String, String)> {
        self.http
            .seen()
            .iter()
            .filter_map(|(line, body)| {
                let path = line.split('?').next().unwrap_or("");
                let code = path.split(&format!("/ping/{}/", Self::PING_UUID)).nth(1)?;
                (code != "start").then(|| (code.to_string(), body.clone()))
            })
            .collect()
    }

    /// The mails as text: headers unfolded, the body decoded
    /// (quoted-printable or base64, as lettre chose).
    pub fn mails(&self) -> Vec<String> {
        self.smtp
            .messages()
            .iter()
            .map(|m| readable_mail(m))
            .collect()
    }

    /// Waits until `n` mails arrived (delivery is synchronous, but the
    /// maildir write may trail the SMTP reply by a moment).
    pub fn wait_mails(&self, n: usize) -> Vec<String> {
        let t0 = Instant::now();
        loop {
            let m = self.mails();
            if m.len() >= n || t0.elapsed() > Duration::from_secs(10) {
                return m;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Panics when `secret` appears in anything the receivers got.
    pub fn assert_never_seen(&self, secret: &str, what: &str) {
        assert!(!secret.is_empty(), "empty secret for {what}");
        for (line, body) in self.http.seen() {
            assert!(!body.contains(secret), "{what} leaked into {line}: {body}");
        }
        for m in self.mails() {
            assert!(!m.contains(secret), "{what} leaked into a mail: {m}");
        }
    }
}

/// A raw message as a person reads it: headers unfolded, the body decoded.
pub fn readable_mail(raw: &str) -> String {
    let raw = raw.replace("\r\n", "\n");
    let (head, body) = raw.split_once("\n\n").unwrap_or((raw.as_str(), ""));
    let head = head.replace("\n ", " ").replace("\n\t", " ");
    let enc = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Transfer-Encoding: "))
        .unwrap_or("7bit")
        .trim()
        .to_ascii_lowercase();
    let body = match enc.as_str() {
        "quoted-printable" => {
            let b = body.replace("=\n", "");
            let bytes = b.as_bytes();
            let mut out = Vec::with_capacity(bytes.len());
            let mut i = 0;
            while i < bytes.len() {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match (bytes[i], hex) {
                    (b'=', Some(v)) => {
                        out.push(v);
                        i += 3;
                    }
                    (c, _) => {
                        out.push(c);
                        i += 1;
                    }
                }
            }
            String::from_utf8_lossy(&out).into_owned()
        }
        "base64" => {
            let val = |c: u8| match c {
                b'A'..=b'Z' => Some(c - b'A'),
                b'a'..=b'z' => Some(c - b'a' + 26),
                b'0'..=b'9' => Some(c - b'0' + 52),
                b'+' => Some(62),
                b'/' => Some(63),
                _ => None,
            };
            let digits: Vec<u8> = body.bytes().filter_map(val).collect();
            let mut out = Vec::new();
            for chunk in digits.chunks(4) {
                let n = chunk
                    .iter()
                    .enumerate()
                    .fold(0u32, |acc, (k, d)| acc | (u32::from(*d) << (18 - 6 * k)));
                let take = chunk.len().saturating_sub(1);
                out.extend_from_slice(&n.to_be_bytes()[1..1 + take]);
            }
            String::from_utf8_lossy(&out).into_owned()
        }
        _ => body.to_string(),
    };
    format!("{head}\n\n{body}")
}

/// `psql` as the stack's superuser in `daon-postgres` (`-X -At`, stop on the
/// first error): the trimmed output. Panics, with psql's stderr, on failure.
pub fn psql(sql: &str) -> String {
    let o = psql_output(sql);
    assert!(
        o.status.success(),
        "psql {sql}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// [`psql`] without the success check: the whole output.
pub fn psql_output(sql: &str) -> Output {
    docker(&[
        "exec",
        "daon-postgres",
        "psql",
        "-X",
        "-q",
        "-U",
        "daon",
        "-d",
        "daon",
        "-v",
        "ON_ERROR_STOP=1",
        "-At",
        "-c",
        sql,
    ])
}

/// [`psql`]'s trimmed output, whether or not it succeeded (for a database
/// that may just have been wiped).
pub fn psql_lenient(sql: &str) -> String {
    String::from_utf8_lossy(&psql_output(sql).stdout)
        .trim()
        .to_string()
}

/// A daon tool of this workspace with a clean environment (no `DAON_*`, no
/// `DOCKER_HOST` from the caller), pointed at `config` (or the built-in
/// default), with its backup, lock and state directories under `tmp`.
pub fn tool(name: &str, config: Option<&Path>, tmp: &Path) -> assert_cmd::Command {
    let mut c = assert_cmd::Command::new(assert_cmd::cargo::cargo_bin(name));
    for (k, _) in std::env::vars() {
        if k.starts_with("DAON_") || k == "DOCKER_HOST" {
            c.env_remove(k);
        }
    }
    if let Some(cfg) = config {
        c.env("DAON_CONFIG", cfg);
    }
    c.env("DAON_PATHS_BACKUP_DIR", tmp.join("backups"))
        .env("DAON_PATHS_LOCK_DIR", tmp.join("lock"))
        .env("DAON_PATHS_STATE_DIR", tmp.join("state"))
        .timeout(Duration::from_secs(400));
    c
}

/// Exit status, stdout and stderr of a finished command, for assertion messages.
pub fn output_text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[cfg(test)]
mod tests {
    use super::readable_mail;

    #[test]
    fn mails_are_decoded() {
        let qp = "Subject: a\r\n b\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nline =\r\none =3D 1\r\n  indented\r\n";
        assert_eq!(readable_mail(qp), "Subject: a b\nContent-Transfer-Encoding: quoted-printable\n\nline one = 1\n  indented\n");
        let b64 = "Content-Transfer-Encoding: base64\r\n\r\naMOpbGxv\r\nIHdvcmxk\r\n";
        assert_eq!(
            readable_mail(b64),
            "Content-Transfer-Encoding: base64\n\nhéllo world"
        );
    }
}
