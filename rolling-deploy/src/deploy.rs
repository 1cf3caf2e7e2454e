//! The rolling procedure itself: one instance at a time, drain → recreate →
//! healthy → back into the load balancer → watch; on any failure every
//! replaced instance goes back to the recorded image, each verified healthy.
//! Also `history` and `status`, which read what runs leave behind.

use crate::caddy::{self, Caddy};
use crate::state::{self, HistoryEntry, InstanceRecord, Journal};
use crate::{Failure, Settings};
use daon_common::docker::{Compose, ContainerStatus, Docker, Flavor, Health};
use daon_common::http::{self, AgentOptions};
use daon_common::notify::Report;
use daon_common::output::json_line;
use daon_common::process::Cmd;
use daon_common::{lock, Error, ExitCode};
use serde_json::{json, Value};
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Exit status of a run stopped by SIGINT/SIGTERM (128 + SIGINT).
pub const EXIT_INTERRUPTED: u8 = 130;

/// Splits `repo:tag` (a registry port in the repo is allowed); the tag must be present.
pub fn split_image(image: &str) -> Result<(String, String), String> {
    let slash = image.rfind('/').map_or(0, |i| i + 1);
    match image[slash..].rfind(':') {
        Some(i) if i > 0 && i + 1 < image.len() - slash => {
            let (repo, tag) = (&image[..slash + i], &image[slash + i + 1..]);
            let ok_tag = tag.len() <= 128
                && tag
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
                && !tag.starts_with(['.', '-']);
            if !ok_tag {
                return Err(format!("{image:?}: {tag:?} is not a valid Docker tag"));
            }
            Ok((repo.to_string(), tag.to_string()))
        }
        _ => Err(format!(
            "{image:?} has no tag: give REPO:TAG, e.g. daon-api:1.4.2 (the tag is what gets deployed)"
        )),
    }
}

/// `user@host` of this run, for locks, journals and history.
pub(crate) fn who() -> String {
    let user = ["SUDO_USER", "USER", "LOGNAME"]
        .iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
        .unwrap_or_else(|| {
            // cron and systemd often set no USER: name the uid instead.
            let uid = std::fs::read_to_string("/proc/self/status")
                .ok()
                .and_then(|s| {
                    s.lines()
                        .find_map(|l| l.strip_prefix("Uid:"))
                        .and_then(|r| r.split_whitespace().next().map(String::from))
                })
                .unwrap_or_default();
            match uid.as_str() {
                "0" => "root".into(),
                "" => "unknown".into(),
                u => format!("uid {u}"),
            }
        });
    format!("{user}@{}", lock::hostname())
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn ms(d: Duration) -> u64 {
    d.as_millis() as u64
}

fn secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

/// Why one instance could not be moved.
#[derive(Debug, Clone)]
struct StepFail {
    container: String,
    reason: String,
    logs: String,
}

/// Health-check timing of a container, from `docker inspect`.
#[derive(Debug, Clone, Copy)]
struct Probe {
    interval: Duration,
    timeout: Duration,
    start_period: Duration,
    retries: u32,
}

/// One deploy or rollback run.
pub struct Run<'a> {
    s: &'a Settings,
    out: &'a mut dyn Write,
    docker: Docker,
    compose: Option<Compose>,
    caddy: Option<Caddy>,
    base_cfg: Option<Value>,
    journal: Journal,
    stop: Arc<AtomicBool>,
    state_dir: PathBuf,
    /// The `--host` this run is on ("" without `--host`): journal, history, output.
    host: String,
    /// One host of a multi-host run: that run holds the lock and the signal
    /// handlers and prints the closing summary.
    nested: bool,
    run_id: String,
    cause: String,
}

/// What one host's run came to (for the multi-host run).
#[derive(Debug, Clone)]
pub struct HostResult {
    /// Its exit status.
    pub code: u8,
    /// `ok`, `rolled-back`, `failed`, `interrupted`, `dry-run`.
    pub outcome: String,
    /// Why it failed, if it did.
    pub error: String,
    /// The image it deployed.
    pub image: String,
    /// The image that puts it back as it was before the run.
    pub rollback_image: String,
    /// False when it already ran the image before the run (nothing to undo).
    pub changed: bool,
}

impl<'a> Run<'a> {
    /// Prepares a run (no change yet).
    pub fn new(s: &'a Settings, out: &'a mut dyn Write) -> Result<Run<'a>, Failure> {
        let docker = Docker::new(&s.config);
        let caddy = if s.config.deploy.caddy_admin_url.is_empty() {
            None
        } else {
            Some(Caddy::new(&s.config.deploy.caddy_admin_url)?)
        };
        Ok(Run {
            s,
            out,
            docker,
            compose: None,
            caddy,
            base_cfg: None,
            journal: Journal::default(),
            stop: Arc::new(AtomicBool::new(false)),
            state_dir: s.config.paths.state_dir.clone(),
            host: String::new(),
            nested: false,
            run_id: String::new(),
            cause: String::new(),
        })
    }

    /// One host's run inside a multi-host run: `s` already targets that host
    /// (`hosts::settings_for`); `stop` is the multi-host run's signal flag.
    pub fn for_host(
        s: &'a Settings,
        out: &'a mut dyn Write,
        host: &str,
        stop: Arc<AtomicBool>,
        run_id: &str,
    ) -> Result<Run<'a>, Failure> {
        let mut r = Run::new(s, out)?;
        r.stop = stop;
        r.host = host.to_string();
        r.nested = true;
        r.run_id = run_id.to_string();
        Ok(r)
    }

    /// Records why this run happens (a rollback another host's failure caused).
    pub fn caused_by(mut self, cause: &str) -> Self {
        self.cause = cause.to_string();
        self
    }

    fn say(&mut self, kind: &str, text: String, fields: Value) {
        if self.s.json {
            let mut f = fields;
            if let Value::Object(m) = &mut f {
                m.insert("message".into(), Value::String(text));
                if !self.host.is_empty() {
                    m.insert("host".into(), Value::String(self.host.clone()));
                }
            }
            let _ = json_line(&mut self.out, kind, f);
        } else if self.host.is_empty() {
            eprintln!("daon-rolling-deploy: {text}");
        } else {
            eprintln!("daon-rolling-deploy: [{}] {text}", self.host);
        }
    }

    /// `[host] ` before a line of output in a multi-host run.
    fn prefix(&self) -> String {
        if self.host.is_empty() {
            String::new()
        } else {
            format!("[{}] ", self.host)
        }
    }

    fn inspect_one(&self, c: &str) -> Result<ContainerStatus, Error> {
        let r = self.docker.inspect(&[c.to_string()])?;
        r.found
            .into_iter()
            .next()
            .ok_or_else(|| Error::NotFound(format!("container {c} does not exist")))
    }

    fn image_id(&self, image: &str) -> Result<Option<String>, Error> {
        let o = self
            .docker
            .cmd()
            .args(["image", "inspect", "--format", "{{.Id}}", image])
            .run_unchecked()
            .map_err(|e| self.docker.classify(e))?;
        Ok(o.success().then(|| o.stdout_str().trim().to_string()))
    }

    fn probe(&self, c: &str) -> Option<Probe> {
        let o = self
            .docker
            .cmd()
            .args(["inspect", "--format", "{{json .Config.Healthcheck}}", c])
            .run()
            .ok()?;
        let v: Value = serde_json::from_str(o.stdout_str().trim()).ok()?;
        let ns = |k: &str, default: u64| {
            Duration::from_nanos(v[k].as_u64().filter(|n| *n > 0).unwrap_or(default))
        };
        v.get("Test")?;
        Some(Probe {
            interval: ns("Interval", 30_000_000_000),
            timeout: ns("Timeout", 30_000_000_000),
            start_period: ns("StartPeriod", 0),
            retries: v["Retries"]
                .as_u64()
                .filter(|n| *n > 0)
                .unwrap_or(3)
                .try_into()
                .unwrap_or(3),
        })
    }

    fn logs(&self, c: &str) -> String {
        self.docker
            .cmd()
            .args(["logs", "--tail", "20", c])
            .run_unchecked()
            .map(|o| format!("{}{}", o.stdout_str(), o.stderr_str()))
            .unwrap_or_default()
    }

    fn save_journal(&self) {
        if let Err(e) = self.journal.save(&self.state_dir) {
            eprintln!("daon-rolling-deploy: warning: journal not written: {e}");
        }
    }

    fn hook(&self, cmd: &str, outcome: &str) -> Result<(), String> {
        let j = &self.journal;
        let version = split_image(&j.image).map(|(_, t)| t).unwrap_or_default();
        Cmd::new("sh")
            .args(["-c", cmd])
            .env("DAON_DEPLOY_KIND", &j.kind)
            .env("DAON_DEPLOY_IMAGE", &j.image)
            .env("DAON_DEPLOY_VERSION", version)
            .env("DAON_DEPLOY_PREVIOUS", &j.previous)
            .env("DAON_DEPLOY_SERVICE", &self.s.service)
            .env("DAON_DEPLOY_OUTCOME", outcome)
            .env("DAON_DEPLOY_HOST", &self.host)
            .timeout(Duration::from_secs(600))
            .run()
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// Puts Caddy back as it was before the run.
    fn restore_lb(&mut self) -> Result<(), Error> {
        if let (Some(c), Some(cfg)) = (&self.caddy, &self.base_cfg) {
            c.load(cfg)?;
        }
        self.journal.drained = None;
        Ok(())
    }

    /// Replaces one instance with `image`; the instance serves again when it returns Ok.
    fn replace(
        &mut self,
        c: &str,
        image: &str,
        monitor: Duration,
    ) -> Result<InstanceRecord, StepFail> {
        let fail = |me: &Self, reason: String| StepFail {
            container: c.to_string(),
            reason,
            logs: me.logs(c),
        };
        // A run killed during `compose up` can leave the container missing:
        // then there is nothing to drain and compose creates it.
        let before = match self.inspect_one(c) {
            Ok(b) => b,
            Err(Error::NotFound(_)) => missing_status(c),
            Err(e) => return Err(fail(self, e.to_string())),
        };
        let mut rec = InstanceRecord {
            container: c.to_string(),
            from: before.image.clone(),
            to: image.to_string(),
            ..InstanceRecord::default()
        };
        let (_, tag) = split_image(image).map_err(|e| fail(self, e))?;
        // 1. drain
        if let (Some(caddy), Some(base)) = (&self.caddy, &self.base_cfg) {
            let addr = format!("{c}:{}", self.s.config.deploy.upstream_port);
            if caddy::upstream_dials(base).iter().any(|d| d == &addr) {
                self.journal.phase = format!("drain {c}");
                self.journal.drained = Some(c.to_string());
                self.save_journal();
                let d = caddy
                    .drain(base, &addr, self.s.config.deploy.drain_timeout)
                    .map_err(|e| fail(self, format!("draining through Caddy: {e}")))?;
                rec.drain_ms = ms(d.took);
                rec.in_flight = d.in_flight_at_start;
                let note = if d.complete {
                    String::new()
                } else {
                    " (drain timeout: requests still in flight)".into()
                };
                self.say(
                    "step",
                    format!(
                        "{c}: drained from the load balancer in {} ({} in flight){note}",
                        secs(d.took),
                        d.in_flight_at_start
                    ),
                    json!({"container": c, "step": "drain", "ms": rec.drain_ms, "in_flight": rec.in_flight, "complete": d.complete}),
                );
            } else {
                self.say(
                    "warning",
                    format!("{c}: {addr} is not an upstream of Caddy; not drained"),
                    json!({"container": c}),
                );
            }
        }
        // 2. recreate
        self.journal.phase = format!("recreate {c}");
        self.save_journal();
        let service = if before.compose_service.is_empty() {
            c.to_string()
        } else {
            before.compose_service.clone()
        };
        let t = Instant::now();
        let compose = self
            .compose
            .clone()
            .ok_or_else(|| fail(self, "compose not detected".into()))?;
        let mut up = compose.cmd().env(&self.s.config.deploy.image_env, &tag);
        if compose.flavor == Flavor::V2 {
            // Nothing on its output pipes unless it fails: if this process is
            // killed, compose does not die of SIGPIPE half-way through.
            up = up.args(["--progress", "quiet"]);
        }
        up.args(["up", "-d", "--no-deps", "--force-recreate", &service])
            .timeout(Duration::from_secs(300))
            .run()
            .map_err(|e| fail(self, format!("recreating: {e}")))?;
        rec.recreate_ms = ms(t.elapsed());
        let now_st = self.inspect_one(c).map_err(|e| fail(self, e.to_string()))?;
        if now_st.image != image {
            return Err(fail(
                self,
                format!(
                    "after `compose up` {c} runs {} instead of {image}: does the compose file take the tag from ${{{}}}?",
                    now_st.image, self.s.config.deploy.image_env
                ),
            ));
        }
        // 3. healthy
        let t = Instant::now();
        let probe = self.probe(c);
        let mut limit = self.s.config.deploy.health_timeout;
        if let Some(p) = probe {
            let own = p.start_period
                + (p.interval + p.timeout) * (p.retries + 1)
                + Duration::from_secs(5);
            limit = limit.max(own);
        }
        loop {
            let st = self.inspect_one(c).map_err(|e| fail(self, e.to_string()))?;
            if !st.is_running() {
                return Err(fail(
                    self,
                    format!("{c} is {} (exit code {})", st.state, st.exit_code),
                ));
            }
            match (&st.health, probe) {
                (Health::Healthy, _) => break,
                (Health::None, None) if t.elapsed() >= Duration::from_secs(2) => break,
                (Health::Unhealthy, _) => {
                    return Err(fail(
                        self,
                        format!(
                            "{c} became unhealthy after {}: {}",
                            secs(t.elapsed()),
                            st.health_log
                        ),
                    ))
                }
                _ => {}
            }
            if t.elapsed() >= limit {
                return Err(fail(
                    self,
                    format!(
                        "{c} not healthy within {} (it is {}; start period {}): {}",
                        secs(limit),
                        st.health.as_str(),
                        probe.map_or("none".into(), |p| secs(p.start_period)),
                        st.health_log
                    ),
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        rec.healthy_ms = ms(t.elapsed());
        self.say(
            "step",
            format!("{c}: healthy on {image} after {}", secs(t.elapsed())),
            json!({"container": c, "step": "healthy", "ms": rec.healthy_ms, "recreate_ms": rec.recreate_ms}),
        );
        // 4. back into the load balancer
        self.journal.phase = format!("undrain {c}");
        self.restore_lb()
            .map_err(|e| fail(self, format!("putting {c} back into Caddy: {e}")))?;
        self.save_journal();
        // 5. watch
        if !monitor.is_zero() {
            self.journal.phase = format!("monitor {c}");
            let t = Instant::now();
            let restarts = self
                .inspect_one(c)
                .map(|s| s.restart_count)
                .unwrap_or_default();
            while t.elapsed() < monitor && !self.stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(250));
                let st = self.inspect_one(c).map_err(|e| fail(self, e.to_string()))?;
                let bad = if !st.is_running() {
                    Some(format!("{} (exit code {})", st.state, st.exit_code))
                } else if st.restart_count != restarts {
                    Some(format!("restarted {} times", st.restart_count - restarts))
                } else if st.health == Health::Unhealthy {
                    Some(format!("unhealthy: {}", st.health_log))
                } else {
                    None
                };
                if let Some(b) = bad {
                    return Err(fail(
                        self,
                        format!(
                            "{c} failed {} into the {} watch window: {b}",
                            secs(t.elapsed()),
                            secs(monitor)
                        ),
                    ));
                }
            }
            rec.monitor_ms = ms(t.elapsed());
            self.say(
                "step",
                format!("{c}: stayed healthy for {}", secs(t.elapsed())),
                json!({"container": c, "step": "monitor", "ms": rec.monitor_ms}),
            );
        }
        rec.outcome = "replaced".into();
        Ok(rec)
    }

    fn verify(&self) -> Result<(), String> {
        let agent = http::agent(AgentOptions {
            timeout: Duration::from_secs(5),
            ..AgentOptions::default()
        })
        .map_err(|e| e.to_string())?;
        let url = &self.s.config.deploy.health_url;
        if !url.is_empty() {
            let mut last = String::new();
            let ok = (0..10).any(|i| {
                if i > 0 {
                    std::thread::sleep(Duration::from_secs(1));
                }
                match http::get(&agent, url) {
                    Ok(r) if (200..300).contains(&r.status) => true,
                    Ok(r) => {
                        last = format!("HTTP {}: {}", r.status, r.body.trim());
                        false
                    }
                    Err(e) => {
                        last = e.to_string();
                        false
                    }
                }
            });
            if !ok {
                return Err(format!(
                    "the API through the load balancer ({url}) fails: {last}"
                ));
            }
        }
        let rpc = &self.s.config.chain.rpc_url;
        if self.s.config.deploy.verify_chain && !rpc.is_empty() {
            let v = http::get_json(&agent, &format!("{}/status", rpc.trim_end_matches('/')))
                .map_err(|e| format!("chain status: {e}"))?;
            let st = v.get("result").unwrap_or(&v);
            if st.pointer("/sync_info/latest_block_height").is_none() {
                return Err(format!("chain status from {rpc} has no sync_info"));
            }
        }
        Ok(())
    }

    /// Caddy's config to restore after each instance: the running one, or
    /// the one an unfinished run recorded when it left a drain behind.
    /// Instances that do not serve now stay out until they are replaced.
    fn recover_lb(
        &mut self,
        caddy: &Caddy,
        containers: &[String],
        statuses: &[ContainerStatus],
        leftover: Option<&Journal>,
    ) -> Result<Value, Failure> {
        let s = self.s;
        let current = caddy.config()?;
        let mut base = current.clone();
        let mut recovered = false;
        if caddy::has_hold_server(&current) {
            match leftover.and_then(|j| j.caddy_config.clone()) {
                Some(orig) => {
                    base = orig;
                    recovered = true;
                }
                None => {
                    return Err(Failure::new(
                        ExitCode::Negative,
                        "Caddy still holds a drain from an earlier run and no journal says what it was: reload Caddy's own config (`docker exec CADDY caddy reload --config /etc/caddy/Caddyfile`) and retry",
                    ))
                }
            }
        }
        // Instances that do not serve now (left stopped or missing by a
        // killed run) stay out of the load balancer until replaced: one load,
        // so Caddy never routes to them in between.
        let port = s.config.deploy.upstream_port;
        let bad: Vec<&String> = containers
            .iter()
            .filter(|c| {
                !statuses
                    .iter()
                    .any(|st| &st.name == *c && st.is_running() && st.health == Health::Healthy)
            })
            .collect();
        let mut want = base.clone();
        if !bad.is_empty() && bad.len() < containers.len() {
            for b in &bad {
                want = caddy::without_upstream(&want, &format!("{b}:{port}"));
            }
            let names: Vec<&str> = bad.iter().map(|b| b.as_str()).collect();
            self.say(
                "step",
                format!(
                    "{} not serving: kept out of the load balancer until replaced",
                    names.join(", ")
                ),
                json!({"containers": names}),
            );
        }
        if want != current {
            caddy.load(&want)?;
        }
        if recovered {
            self.say(
                "recovered",
                "put Caddy's config back as it was before the unfinished run".into(),
                json!({}),
            );
        }
        Ok(base)
    }

    /// Runs a deploy (`kind` "deploy", `target` REPO:TAG) or a rollback
    /// (`target` a tag, or none for the recorded rollback point); with
    /// `--host`, on every host in order (see `hosts`).
    pub fn execute(
        self,
        kind: &str,
        target: Option<String>,
        build: Option<PathBuf>,
        report: &mut Report,
    ) -> Result<u8, Failure> {
        if self.s.hosts.is_empty() {
            return self
                .execute_host(kind, target, build, report)
                .map(|r| r.code);
        }
        crate::hosts::execute(self.s, self.out, kind, target, build, report)
    }

    /// The procedure on this run's one Docker host.
    pub fn execute_host(
        mut self,
        kind: &str,
        target: Option<String>,
        build: Option<PathBuf>,
        report: &mut Report,
    ) -> Result<HostResult, Failure> {
        let s = self.s;
        let started = now();
        let t0 = Instant::now();
        self.docker.ping()?;
        let containers = s.containers.clone();
        let inspected = self.docker.inspect(&containers)?;
        let leftover = Journal::load(&self.state_dir, &self.host);
        // After a killed run an instance may be missing: the run recreates it.
        if !inspected.missing.is_empty() && leftover.is_none() {
            return Err(Failure::new(
                ExitCode::Negative,
                format!(
                    "{} not found: a rolling deploy needs every instance of {} running first (`docker compose up -d`)",
                    inspected.missing.join(", "),
                    s.service
                ),
            ));
        }
        let statuses = inspected.found;
        let running = statuses
            .iter()
            .find(|c| !c.image.is_empty())
            .map(|c| c.image.clone())
            .unwrap_or_default();
        let (repo, _) = split_image(&running).unwrap_or((running.clone(), String::new()));

        // What to deploy.
        let image = match (kind, target) {
            ("deploy", Some(i)) => i,
            (_, Some(v)) if v.contains(':') => v,
            (_, Some(v)) => format!("{repo}:{v}"),
            (_, None) => rollback_point(&self.state_dir, &self.host, &running, leftover.as_ref())
                .or_else(|| {
                    self.image_id(&format!("{repo}:previous"))
                        .ok()
                        .flatten()
                        .map(|_| format!("{repo}:previous"))
                })
                .ok_or_else(|| {
                    Failure::new(
                        ExitCode::Negative,
                        format!("no rollback point recorded for {running}: name a version (`rollback VERSION`; `history` lists them)"),
                    )
                })?,
        };
        let (_, tag) = split_image(&image).map_err(|m| Failure::new(ExitCode::Usage, m))?;

        if s.dry_run {
            let code = self.plan(kind, &image, &statuses, leftover.as_ref(), build.as_ref())?;
            if build.is_none() && self.image_id(&image)?.is_none() {
                self.say(
                    "error",
                    format!("image {image} does not exist here: the run would stop (build it with --build PATH, pull or load it)"),
                    json!({"image": image}),
                );
                return Ok(HostResult {
                    code: ExitCode::Negative.code(),
                    outcome: "dry-run".into(),
                    error: format!("image {image} does not exist"),
                    image,
                    rollback_image: String::new(),
                    changed: false,
                });
            }
            return Ok(HostResult {
                code,
                outcome: "dry-run".into(),
                error: String::new(),
                image,
                rollback_image: String::new(),
                changed: false,
            });
        }

        // A multi-host run holds the lock for all its hosts.
        let what = format!("daon-rolling-deploy {kind} {image} by {}", who());
        let lock_path = s.config.paths.lock_dir.join("rolling-deploy.lock");
        let _lock = if self.nested {
            None
        } else {
            Some(lock::acquire(&lock_path, s.lock_wait, &what)?)
        };

        // What an earlier run left behind.
        if let Some(j) = &leftover {
            self.say(
                "found",
                format!("found: {}", j.describe()),
                json!({"journal": j}),
            );
        }
        self.compose = Some(Compose::detect(&s.config, &self.docker)?);
        if let Some(caddy) = self.caddy.take() {
            let cfg = self.recover_lb(&caddy, &containers, &statuses, leftover.as_ref());
            self.caddy = Some(caddy);
            self.base_cfg = Some(cfg?);
        }
        if let Some(j) = &leftover {
            if !j.interrupted {
                let _ = state::append_history(
                    &self.state_dir,
                    &HistoryEntry {
                        kind: j.kind.clone(),
                        version: split_image(&j.image).map(|x| x.1).unwrap_or_default(),
                        image: j.image.clone(),
                        previous: j.previous.clone(),
                        who: j.who.clone(),
                        start: j.started.clone(),
                        end: now(),
                        outcome: "killed".into(),
                        error: format!("found by the next run; last step: {}", j.phase),
                        host: self.host.clone(),
                        ..HistoryEntry::default()
                    },
                );
            }
        }

        // The image.
        if let Some(dir) = &build {
            self.say(
                "step",
                format!("building {image} from {}", dir.display()),
                json!({"step": "build", "image": image}),
            );
            self.docker
                .cmd()
                .args(["build", "-t", &image])
                .arg(dir)
                .timeout(Duration::from_secs(3600))
                .run()
                .map_err(|e| Failure::from(self.docker.classify(e)))?;
        }
        let Some(target_id) = self.image_id(&image)? else {
            return Err(Failure::new(
                ExitCode::Negative,
                format!("image {image} does not exist here: build it (--build PATH), pull or load it first"),
            ));
        };

        // The rollback point: what runs now (or what the unfinished run recorded).
        let (previous, previous_id) = match &leftover {
            Some(j) if !j.previous.is_empty() => (j.previous.clone(), j.previous_id.clone()),
            _ => {
                let cur = statuses
                    .iter()
                    .find(|c| c.image_id != target_id)
                    .or(statuses.first());
                cur.map(|c| (c.image.clone(), c.image_id.clone()))
                    .unwrap_or_default()
            }
        };
        if !previous_id.is_empty() && previous_id != target_id && kind == "deploy" {
            let (prepo, _) = split_image(&previous).unwrap_or((repo.clone(), String::new()));
            let _ = self
                .docker
                .cmd()
                .args(["tag", &previous_id, &format!("{prepo}:previous")])
                .run();
        }
        // Roll back to the tag if it still names the recorded image, else to :previous.
        let rollback_image = match self.image_id(&previous)? {
            Some(id) if id == previous_id => previous.clone(),
            _ => {
                let (prepo, _) = split_image(&previous).unwrap_or((repo.clone(), String::new()));
                format!("{prepo}:previous")
            }
        };
        self.journal = Journal {
            kind: kind.to_string(),
            pid: std::process::id(),
            who: who(),
            started: started.clone(),
            image: image.clone(),
            previous: previous.clone(),
            previous_id: previous_id.clone(),
            phase: "start".into(),
            updated: Vec::new(),
            drained: None,
            caddy_config: self.base_cfg.clone(),
            interrupted: false,
            host: self.host.clone(),
        };
        self.save_journal();
        self.say(
            "start",
            format!(
                "{kind} {image} to {} ({}); rollback point {previous}",
                s.service,
                containers.join(", ")
            ),
            json!({"kind": kind, "image": image, "previous": previous, "containers": containers}),
        );
        if let Some(h) = &s.pre_deploy {
            if let Err(e) = self.hook(h, "") {
                Journal::remove(&self.state_dir, &self.host)?;
                return Err(Failure::new(
                    ExitCode::Negative,
                    format!("pre-deploy hook failed, nothing changed: {e}"),
                ));
            }
        }
        if !self.nested {
            for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
                let _ = signal_hook::flag::register(sig, self.stop.clone());
            }
        }

        let mut records = Vec::new();
        let mut failure: Option<StepFail> = None;
        let mut interrupted = false;
        for c in &containers {
            if self.stop.load(Ordering::SeqCst) {
                interrupted = true;
                break;
            }
            let st = match self.inspect_one(c) {
                Ok(st) => st,
                Err(Error::NotFound(_)) => {
                    self.say(
                        "warning",
                        format!("{c}: missing (left by the unfinished run); creating it"),
                        json!({"container": c}),
                    );
                    missing_status(c)
                }
                Err(e) => return Err(e.into()),
            };
            if st.image_id == target_id && st.image == image && st.health == Health::Healthy {
                self.say(
                    "step",
                    format!("{c}: already on {image}"),
                    json!({"container": c, "step": "skip"}),
                );
                records.push(InstanceRecord {
                    container: c.clone(),
                    from: st.image,
                    to: image.clone(),
                    outcome: "skipped".into(),
                    ..InstanceRecord::default()
                });
                continue;
            }
            match self.replace(c, &image, s.config.deploy.monitor) {
                Ok(rec) => {
                    records.push(rec);
                    self.journal.updated.push(c.clone());
                    self.save_journal();
                }
                Err(f) => {
                    records.push(InstanceRecord {
                        container: c.clone(),
                        to: image.clone(),
                        outcome: "failed".into(),
                        ..InstanceRecord::default()
                    });
                    failure = Some(f);
                    break;
                }
            }
        }
        if self.stop.load(Ordering::SeqCst) && failure.is_none() {
            interrupted = true;
        }
        if failure.is_none() && !interrupted {
            if let Err(e) = self.verify() {
                failure = Some(StepFail {
                    container: String::new(),
                    reason: format!("after the deploy: {e}"),
                    logs: String::new(),
                });
            }
        }

        // Roll back everything replaced (the failing one first).
        let mut rolled = Vec::new();
        let mut rollback_failed = Vec::new();
        if let Some(f) = &failure {
            self.say(
                "failed",
                format!("FAILED: {}; rolling back to {rollback_image}", f.reason),
                json!({"container": f.container, "reason": f.reason}),
            );
            let mut back: Vec<String> = self.journal.updated.clone();
            if !f.container.is_empty() && !back.contains(&f.container) {
                back.push(f.container.clone());
            }
            back.reverse();
            self.journal.phase = "rollback".into();
            self.save_journal();
            for c in back {
                match self.replace(&c, &rollback_image, Duration::ZERO) {
                    Ok(mut r) => {
                        r.outcome = "rolled-back".into();
                        rolled.push(r);
                        self.journal.updated.retain(|u| u != &c);
                        self.save_journal();
                    }
                    Err(e) => {
                        self.say(
                            "error",
                            format!("rollback of {c} failed: {}", e.reason),
                            json!({"container": c, "reason": e.reason}),
                        );
                        rollback_failed.push(c.clone());
                        rolled.push(InstanceRecord {
                            container: c,
                            to: rollback_image.clone(),
                            outcome: "failed".into(),
                            ..InstanceRecord::default()
                        });
                    }
                }
            }
        }
        let lb_restored = self.restore_lb();

        let outcome = if interrupted {
            "interrupted"
        } else if failure.is_none() {
            "ok"
        } else if rollback_failed.is_empty() {
            "rolled-back"
        } else {
            "failed"
        };
        let error = failure
            .as_ref()
            .map(|f| f.reason.clone())
            .unwrap_or_default();
        let entry = HistoryEntry {
            kind: kind.to_string(),
            version: tag.clone(),
            image: image.clone(),
            previous: previous.clone(),
            who: who(),
            start: started,
            end: now(),
            duration_s: (t0.elapsed().as_secs_f64() * 10.0).round() / 10.0,
            outcome: outcome.into(),
            error: error.clone(),
            instances: records,
            rolled_back: rolled,
            host: self.host.clone(),
            run_id: self.run_id.clone(),
            cause: self.cause.clone(),
        };
        report.subject = format!(
            "{kind} of {image}: {outcome} in {} (previous {previous})",
            secs(t0.elapsed())
        );
        if let Value::Object(m) = serde_json::to_value(&entry).unwrap_or_default() {
            report.fields = m;
        }
        if let Some(f) = failure.as_ref().filter(|f| !f.logs.trim().is_empty()) {
            report.set("failing_container", f.container.clone());
            report.set("failing_container_logs", f.logs.clone());
        }
        state::append_history(&self.state_dir, &entry)?;
        if interrupted {
            self.journal.interrupted = true;
            self.journal.phase = "interrupted".into();
            self.save_journal();
        } else {
            Journal::remove(&self.state_dir, &self.host)?;
        }
        if let Some(h) = &s.post_deploy {
            if let Err(e) = self.hook(h, outcome) {
                self.say(
                    "warning",
                    format!("post-deploy hook failed: {e}"),
                    json!({}),
                );
            }
        }
        if outcome == "ok" {
            self.prune(&image, &previous);
        }
        if let Err(e) = lb_restored {
            self.say(
                "error",
                format!("could not put Caddy's config back: {e}"),
                json!({}),
            );
        }
        let summary = format!(
            "{}{kind} of {image}: {outcome} in {}{}",
            self.prefix(),
            secs(t0.elapsed()),
            if error.is_empty() {
                String::new()
            } else {
                format!(" ({error})")
            }
        );
        if s.json {
            // One host of a multi-host run: a `host_result` record; that run closes
            // with the `summary`.
            let _ = json_line(
                &mut self.out,
                if self.nested {
                    "host_result"
                } else {
                    "summary"
                },
                serde_json::to_value(&entry).unwrap_or_default(),
            );
        } else if self.nested {
            eprintln!("daon-rolling-deploy: {summary}");
        } else {
            let _ = writeln!(self.out, "{summary}");
        }
        if let Some(f) = &failure {
            if !f.logs.trim().is_empty() {
                eprintln!("daon-rolling-deploy: last log lines of {}:", f.container);
                for l in f.logs.lines() {
                    eprintln!("  {l}");
                }
            }
        }
        Ok(HostResult {
            code: match outcome {
                "ok" => 0,
                "interrupted" => EXIT_INTERRUPTED,
                "rolled-back" => ExitCode::Negative.code(),
                _ => ExitCode::Internal.code(),
            },
            outcome: outcome.to_string(),
            error,
            image,
            rollback_image,
            changed: !previous_id.is_empty() && previous_id != target_id,
        })
    }

    fn plan(
        &mut self,
        kind: &str,
        image: &str,
        statuses: &[ContainerStatus],
        leftover: Option<&Journal>,
        build: Option<&PathBuf>,
    ) -> Result<u8, Failure> {
        let d = &self.s.config.deploy;
        let drain = if d.caddy_admin_url.is_empty() {
            "no drain (deploy.caddy_admin_url is empty)".to_string()
        } else {
            format!("drain through Caddy {}", d.caddy_admin_url)
        };
        if let Some(j) = leftover {
            self.say(
                "found",
                format!("found: {}", j.describe()),
                json!({"journal": j}),
            );
        }
        let io = |e: std::io::Error| Failure::from(Error::io("writing", "standard output", e));
        let host = self.host.clone();
        let pre = self.prefix();
        if let Some(b) = build {
            if self.s.json {
                json_line(
                    &mut self.out,
                    "plan",
                    json!({"step": "build", "image": image, "context": b, "host": host}),
                )
                .map_err(io)?;
            } else {
                writeln!(self.out, "{pre}build {image} from {}", b.display()).map_err(io)?;
            }
        }
        for st in statuses {
            let steps = format!(
                "{drain}; {} {}={} compose up -d --no-deps --force-recreate {}; wait healthy (≥{}); back into Caddy; watch {}",
                st.name,
                d.image_env,
                split_image(image).map(|x| x.1).unwrap_or_default(),
                if st.compose_service.is_empty() { &st.name } else { &st.compose_service },
                secs(d.health_timeout),
                secs(d.monitor)
            );
            if self.s.json {
                json_line(&mut self.out,
                    "plan",
                    json!({"kind": kind, "container": st.name, "from": st.image, "to": image, "health": st.health.as_str(), "steps": steps, "host": host}),
                )
                .map_err(io)?;
            } else {
                writeln!(
                    self.out,
                    "{pre}{}: {} ({}) -> {image}: {steps}",
                    st.name,
                    st.image,
                    st.health.as_str()
                )
                .map_err(io)?;
            }
        }
        if self.s.json {
            json_line(
                &mut self.out,
                if self.nested { "host_result" } else { "summary" },
                json!({"dry_run": true, "kind": kind, "image": image, "instances": statuses.len(), "host": host}),
            )
            .map_err(io)?;
        } else {
            writeln!(
                self.out,
                "{pre}then: check {} and the chain status ({}); on any failure roll back every replaced instance{}",
                d.health_url,
                self.s.config.chain.rpc_url,
                if self.nested { "" } else { " (dry run: nothing changed)" }
            )
            .map_err(io)?;
        }
        Ok(0)
    }

    /// Keeps the newest `keep_images` versions this tool deployed; untags older ones.
    fn prune(&mut self, current: &str, previous: &str) {
        let keep = self.s.config.deploy.keep_images;
        if keep == 0 {
            return;
        }
        let Ok(h) = state::read_history(&self.state_dir) else {
            return;
        };
        let mut seen: Vec<String> = Vec::new();
        // Images this tool deployed on this host (each host has its own store).
        for e in h.iter().rev().filter(|e| e.host == self.host) {
            if !e.image.is_empty() && !seen.contains(&e.image) {
                seen.push(e.image.clone());
            }
        }
        for old in seen.iter().skip(keep) {
            if old == current || old == previous || old.ends_with(":previous") {
                continue;
            }
            if self
                .docker
                .cmd()
                .args(["image", "rm", old])
                .run_unchecked()
                .is_ok_and(|o| o.success())
            {
                self.say(
                    "pruned",
                    format!("removed old image {old}"),
                    json!({"image": old}),
                );
            }
        }
    }
}

/// Stands for a container that does not exist (compose will create it).
fn missing_status(c: &str) -> ContainerStatus {
    ContainerStatus {
        name: c.to_string(),
        id: String::new(),
        state: "missing".into(),
        health: Health::None,
        health_log: String::new(),
        restart_count: 0,
        image_id: String::new(),
        image: String::new(),
        exit_code: 0,
        compose_service: String::new(),
        compose_project: String::new(),
    }
}

/// The image the running one replaced, from the history (or the unfinished run).
fn rollback_point(
    state_dir: &std::path::Path,
    host: &str,
    running: &str,
    leftover: Option<&Journal>,
) -> Option<String> {
    if let Some(j) = leftover {
        if !j.previous.is_empty() {
            return Some(j.previous.clone());
        }
    }
    state::read_history(state_dir)
        .ok()?
        .into_iter()
        .rev()
        .find(|e| {
            e.host == host && e.image == running && e.outcome == "ok" && !e.previous.is_empty()
        })
        .map(|e| e.previous)
}

/// `history`: a table, or JSON Lines with `--json`.
pub fn history(s: &Settings, limit: Option<usize>, out: &mut dyn Write) -> Result<u8, Failure> {
    let io = |e: std::io::Error| Failure::from(Error::io("writing", "standard output", e));
    let mut h = state::read_history(&s.config.paths.state_dir)?;
    // `--host`: only those hosts' runs.
    if !s.hosts.is_empty() {
        h.retain(|e| s.hosts.iter().any(|x| x.name == e.host));
    }
    let with_host = h.iter().any(|e| !e.host.is_empty());
    if let Some(n) = limit {
        let skip = h.len().saturating_sub(n);
        h.drain(..skip);
    }
    if s.json {
        for e in &h {
            json_line(
                &mut &mut *out,
                "run",
                serde_json::to_value(e).unwrap_or_default(),
            )
            .map_err(io)?;
        }
        json_line(&mut &mut *out, "summary", json!({"runs": h.len()})).map_err(io)?;
        return Ok(0);
    }
    let host_col = |h: &str| {
        if with_host {
            format!("{:<12} ", if h.is_empty() { "-" } else { h })
        } else {
            String::new()
        }
    };
    writeln!(
        out,
        "{:<24} {}{:<8} {:<20} {:<20} {:<11} {:>8}  {:<20} INSTANCES",
        "START",
        host_col("HOST"),
        "KIND",
        "IMAGE",
        "PREVIOUS",
        "OUTCOME",
        "SECONDS",
        "WHO"
    )
    .map_err(io)?;
    for e in &h {
        let inst: Vec<String> = e
            .instances
            .iter()
            .chain(e.rolled_back.iter())
            .map(|i| {
                format!(
                    "{}:{}({:.1}s)",
                    i.container,
                    i.outcome,
                    (i.drain_ms + i.recreate_ms + i.healthy_ms + i.monitor_ms) as f64 / 1000.0
                )
            })
            .collect();
        writeln!(
            out,
            "{:<24} {}{:<8} {:<20} {:<20} {:<11} {:>8.1}  {:<20} {}",
            e.start.get(..23).unwrap_or(&e.start),
            host_col(&e.host),
            e.kind,
            e.image,
            e.previous,
            e.outcome,
            e.duration_s,
            e.who,
            inst.join(" ")
        )
        .map_err(io)?;
        if !e.error.is_empty() {
            writeln!(out, "    error: {}", e.error).map_err(io)?;
        }
        if !e.cause.is_empty() {
            writeln!(out, "    because {}", e.cause).map_err(io)?;
        }
    }
    Ok(0)
}

/// `status`: instances, lock holder, unfinished run, last run; with
/// `--host`, a section per host (JSON: records carry `host`, one `host_result`
/// per host, then the `summary`).
pub fn status(s: &Settings, out: &mut dyn Write) -> Result<u8, Failure> {
    if s.hosts.is_empty() {
        return status_host(s, "", out).map(|ok| if ok { 0 } else { 1 });
    }
    let io = |e: std::io::Error| Failure::from(Error::io("writing", "standard output", e));
    let mut all = true;
    let mut per = Vec::new();
    for h in &s.hosts {
        let hs = crate::hosts::settings_for(s, h);
        if !s.json {
            writeln!(out, "== host {} ==", h.name).map_err(io)?;
        }
        let ok = match status_host(&hs, &h.name, out) {
            Ok(ok) => ok,
            Err(f) => {
                if s.json {
                    json_line(
                        &mut &mut *out,
                        "error",
                        json!({"host": h.name, "message": f.message}),
                    )
                    .map_err(io)?;
                } else {
                    writeln!(out, "unreachable: {}", f.message).map_err(io)?;
                }
                false
            }
        };
        per.push(json!({"host": h.name, "all_healthy": ok}));
        all &= ok;
    }
    if s.json {
        json_line(
            &mut &mut *out,
            "summary",
            json!({"all_healthy": all, "hosts": per}),
        )
        .map_err(io)?;
    }
    Ok(if all { 0 } else { 1 })
}

/// One host's part of `status`; true when every instance is healthy.
fn status_host(s: &Settings, host: &str, out: &mut dyn Write) -> Result<bool, Failure> {
    let io = |e: std::io::Error| Failure::from(Error::io("writing", "standard output", e));
    let docker = Docker::new(&s.config);
    let r = docker.inspect(&s.containers)?;
    let lock_path = s.config.paths.lock_dir.join("rolling-deploy.lock");
    let holder = match lock::acquire(&lock_path, Duration::ZERO, "daon-rolling-deploy status") {
        Ok(_g) => None,
        Err(Error::LockHeld { holder, .. }) => Some(holder),
        Err(_) => None,
    };
    let journal = Journal::load(&s.config.paths.state_dir, host);
    let last = state::read_history(&s.config.paths.state_dir)?
        .into_iter()
        .rfind(|e| e.host == host);
    let all_healthy = r.missing.is_empty() && r.found.iter().all(|c| c.health == Health::Healthy);
    if s.json {
        for c in &r.found {
            json_line(&mut &mut *out,
                "instance",
                json!({"container": c.name, "image": c.image, "state": c.state, "health": c.health.as_str(), "host": host}),
            )
            .map_err(io)?;
        }
        json_line(&mut &mut *out,
            if host.is_empty() { "summary" } else { "host_result" },
            json!({"all_healthy": all_healthy, "missing": r.missing, "lock_holder": holder, "unfinished": journal, "last": last, "host": host}),
        )
        .map_err(io)?;
    } else {
        for c in &r.found {
            writeln!(
                out,
                "{:<16} {:<24} {:<9} {}",
                c.name,
                c.image,
                c.state,
                c.health.as_str()
            )
            .map_err(io)?;
        }
        for m in &r.missing {
            writeln!(out, "{m:<16} missing").map_err(io)?;
        }
        match &holder {
            Some(h) => writeln!(out, "deploy in progress: {h}").map_err(io)?,
            None => writeln!(out, "no deploy in progress").map_err(io)?,
        }
        if let Some(j) = &journal {
            if holder.is_none() {
                writeln!(out, "unfinished: {}", j.describe()).map_err(io)?;
            }
        }
        if let Some(l) = &last {
            writeln!(
                out,
                "last: {} of {} {} at {} by {}",
                l.kind, l.image, l.outcome, l.end, l.who
            )
            .map_err(io)?;
        }
    }
    Ok(all_healthy)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn images_need_a_valid_tag() {
        assert_eq!(
            split_image("daon-api:1.4.2").unwrap(),
            ("daon-api".into(), "1.4.2".into())
        );
        assert_eq!(
            split_image("reg.example:5000/daon-api:abc").unwrap(),
            ("reg.example:5000/daon-api".into(), "abc".into())
        );
        assert!(split_image("daon-api").is_err());
        assert!(split_image("reg.example:5000/daon-api").is_err());
        assert!(split_image("daon-api:").is_err());
        assert!(split_image("daon-api:bad tag").is_err());
    }
}
