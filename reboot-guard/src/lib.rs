//! daon-reboot-guard: kernel-update reboots done safely. From cron, it reboots
//! only when a reboot is needed, inside a maintenance window, with a fresh
//! backup, a healthy stack, no other tool at work and no reboot loop; it stops
//! the stack gracefully and leaves a marker. After boot, `verify` brings the
//! stack back, waits for health and reports.

pub mod gates;

use chrono::{DateTime, Utc};
use clap::{CommandFactory, Parser, Subcommand};
use daon_common::config::{self, Config, Loaded, Source};
use daon_common::docker::{Compose, Docker};
use daon_common::exit::EXIT_CODES_HELP;
use daon_common::http::{self, AgentOptions};
use daon_common::notify::{Message, Notifier};
use daon_common::process::Cmd;
use daon_common::{atomic, lock, Error, ExitCode};
use gates::Gate;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const AFTER_HELP: &str = "\
Examples:
  daon-reboot-guard                 # from cron, hourly: reboot only if needed, in the window, all gates passing
  daon-reboot-guard --dry-run       # say what would happen, change nothing
  daon-reboot-guard status --json   # reboot needed? next window? each gate? last reboots
  daon-reboot-guard verify          # at boot (@reboot cron or systemd): bring the stack back, wait for health

Crontab:
  47 * * * *  root  daon-reboot-guard --quiet
  @reboot     root  daon-reboot-guard verify

Gates (all must pass, each reported by name): backup (a Hetzner snapshot/backup via `daon-snapshot
check`, or a verified local backup set, younger than --max-backup-age), health (the stack is healthy;
--even-if-unhealthy overrides), locks (no deploy/backup/restore lock held), reboot-loop (fewer than
[reboot] max_reboots_per_day reboots in 24 h). Windows: [reboot] windows, e.g. \"Sun 03:00-04:00 Europe/Berlin\".";

/// Command line.
#[derive(Debug, Parser)]
#[command(
    name = "daon-reboot-guard",
    version,
    about = "Reboot for kernel updates only when it is safe, and verify after boot",
    after_help = "See --help for examples, gates and exit codes."
)]
pub struct Cli {
    /// Config file
    #[arg(short, long, value_name = "PATH", env = "DAON_CONFIG", global = true)]
    pub config: Option<PathBuf>,
    /// Say what would happen; change nothing
    #[arg(long, global = true)]
    pub dry_run: bool,
    /// JSON Lines output
    #[arg(long, global = true)]
    pub json: bool,
    /// For cron: print nothing when the run ends with exit 0 (no reboot needed,
    /// outside the window, verified); the whole report otherwise
    #[arg(short, long, global = true)]
    pub quiet: bool,
    /// Required freshness of a backup (default [reboot] max_backup_age)
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub max_backup_age: Option<Duration>,
    /// Reboot even if the stack is unhealthy now
    #[arg(long)]
    pub even_if_unhealthy: bool,
    /// Maintenance-mode URL: POST switches it on, DELETE off
    #[arg(long, value_name = "URL")]
    pub maintenance_url: Option<String>,
    /// Print the effective configuration and exit
    #[arg(long, global = true)]
    pub print_config: bool,
    /// What to do (default: decide and maybe reboot)
    #[command(subcommand)]
    pub action: Option<Action>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Action {
    /// After boot: if a marker is present, bring the stack up and wait for health
    Verify,
    /// Report: reboot needed, next window, gates, recent reboots
    Status,
}

/// The clap command (man pages, completions).
pub fn command() -> clap::Command {
    daon_common::cli::with_subcommand_help(Cli::command().after_long_help(format!(
        "{AFTER_HELP}\n\n{EXIT_CODES_HELP}\n\n{}",
        config::SEARCH_PATH_HELP
    )))
}

/// One line of the reboot history.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct HistoryEntry {
    /// `reboot`, `reboot-failed`, `verified`, `verify-failed`.
    pub event: String,
    /// When.
    pub time: DateTime<Utc>,
    /// Details.
    pub detail: String,
}

/// What a reboot left for `verify`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Marker {
    /// When the guard stopped the stack.
    pub time: DateTime<Utc>,
    /// Why (packages from reboot-required.pkgs).
    pub reason: String,
    /// Maintenance URL to switch off afterwards.
    pub maintenance_url: String,
    /// Who ran it.
    pub host: String,
    /// The running kernel before the reboot (`uname -r`); empty in markers
    /// written by older versions.
    #[serde(default)]
    pub kernel: String,
}

/// The running kernel's release (`uname -r`), or "" where it cannot be read.
fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Everything a run needs.
pub struct Settings {
    config: Config,
    source: Source,
    dry_run: bool,
    json: bool,
    quiet: bool,
    max_backup_age: Duration,
    even_if_unhealthy: bool,
    print_config: bool,
    action: Option<Action>,
}

/// Errors with their exit codes.
#[derive(Debug)]
pub struct Failure {
    /// Exit code.
    pub code: ExitCode,
    /// Message.
    pub message: String,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure {
            code: e.exit_code(),
            message: e.to_string(),
        }
    }
}

fn state_dir(c: &Config) -> PathBuf {
    c.paths.state_dir.join("reboot-guard")
}

fn read_history(c: &Config) -> Vec<HistoryEntry> {
    std::fs::read_to_string(state_dir(c).join("history.jsonl"))
        .map(|t| {
            t.lines()
                .filter_map(|l| serde_json::from_str(l).ok())
                .collect()
        })
        .unwrap_or_default()
}

fn append_history(c: &Config, event: &str, detail: &str) -> Result<(), Error> {
    let p = state_dir(c).join("history.jsonl");
    let mut all = std::fs::read(&p).unwrap_or_default();
    let e = HistoryEntry {
        event: event.into(),
        time: Utc::now(),
        detail: detail.into(),
    };
    all.extend(serde_json::to_vec(&e).map_err(|e| Error::Internal(e.to_string()))?);
    all.push(b'\n');
    atomic::write(&p, &all, 0o644)
}

/// Output sink honouring --json and --quiet (text held back until the run
/// ends, and printed only if it did not end with exit 0).
struct Out<'a, W: Write> {
    w: &'a mut W,
    json: bool,
    held: Option<Vec<u8>>,
}

impl<W: Write> Out<'_, W> {
    fn say(&mut self, kind: &str, text: &str, fields: serde_json::Value) -> Result<(), Failure> {
        let r = if self.json {
            let mut f = fields;
            if let Some(o) = f.as_object_mut() {
                o.insert("message".into(), text.into());
            }
            daon_common::output::json_line(self.w, kind, f)
        } else if let Some(h) = &mut self.held {
            writeln!(h, "{text}")
        } else {
            writeln!(self.w, "{text}")
        };
        r.map_err(|e| Failure {
            code: ExitCode::Io,
            message: format!("writing output: {e}"),
        })
    }
}

fn reboot_needed(c: &Config) -> Option<Vec<String>> {
    let f = &c.reboot.required_file;
    if !f.exists() {
        return None;
    }
    let mut pkgs_path = f.clone().into_os_string();
    pkgs_path.push(".pkgs");
    let pkgs = std::fs::read_to_string(PathBuf::from(pkgs_path))
        .map(|t| {
            t.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(String::from)
                .collect()
        })
        .unwrap_or_default();
    Some(pkgs)
}

fn maintenance(url: &str, on: bool) -> Result<(), Failure> {
    if url.is_empty() {
        return Ok(());
    }
    let agent = http::agent(AgentOptions::default())?;
    let req = if on {
        agent.post(url)
    } else {
        agent.delete(url)
    };
    match req.call() {
        Ok(_) => Ok(()),
        Err(e) => Err(Failure {
            code: ExitCode::Unavailable,
            message: format!(
                "could not switch maintenance mode {} at {}: {}",
                if on { "on" } else { "off" },
                daon_common::notify::redact_url(url),
                match e {
                    ureq::Error::Status(c, _) => format!("HTTP {c}"),
                    ureq::Error::Transport(t) => t.kind().to_string(),
                }
            ),
        }),
    }
}

fn notify(c: &Config, event: &str, subject: &str, body: &str, fields: serde_json::Value) {
    if let Ok(n) = Notifier::new(&c.notify, &c.paths.state_dir) {
        n.flush_pending();
        if n.enabled() {
            n.send(&Message {
                tool: "daon-reboot-guard".into(),
                event: event.into(),
                subject: format!("[DAON {}] {subject}", lock::hostname()),
                body: body.into(),
                fields,
            });
        }
    }
}

fn compose(c: &Config) -> Result<Compose, Failure> {
    Ok(Compose::detect(c, &Docker::new(c))?)
}

/// Decides and, if everything allows, reboots.
fn guard<W: Write>(s: &Settings, out: &mut Out<W>) -> Result<ExitCode, Failure> {
    let c = &s.config;
    let now = Utc::now();
    let Some(pkgs) = reboot_needed(c) else {
        out.say(
            "decision",
            &format!(
                "no reboot needed ({} is absent)",
                c.reboot.required_file.display()
            ),
            serde_json::json!({"reboot_needed": false}),
        )?;
        return Ok(ExitCode::Ok);
    };
    let why = if pkgs.is_empty() {
        "reboot required".to_string()
    } else {
        format!("reboot required by {}", pkgs.join(", "))
    };
    out.say("reboot_needed", &why, serde_json::json!({"packages": pkgs}))?;
    if !c.reboot.windows.iter().any(|w| w.contains(now)) {
        let next = c
            .reboot
            .windows
            .iter()
            .filter_map(|w| w.next_open(now).map(|t| (t, w)))
            .min_by_key(|(t, _)| *t);
        let text = match &next {
            Some((t, w)) => format!(
                "outside the maintenance window; the next one (\"{w}\") opens {}",
                t.format("%Y-%m-%d %H:%M UTC")
            ),
            None => {
                "outside the maintenance window, and no window is configured ([reboot] windows)"
                    .into()
            }
        };
        out.say(
            "decision",
            &text,
            serde_json::json!({"in_window": false, "next_window": next.map(|(t, _)| t)}),
        )?;
        return Ok(ExitCode::Ok);
    }
    // Our own lock first: two guards must not both decide.
    let own = c.paths.lock_dir.join("reboot-guard.lock");
    let _lock = lock::acquire(&own, Duration::ZERO, "daon-reboot-guard")?;
    let history = read_history(c);
    let gates: Vec<Gate> = vec![
        gates::backup(c, s.max_backup_age, now),
        gates::health(c, s.even_if_unhealthy),
        gates::locks(&c.paths.lock_dir, &own),
        gates::reboot_loop(&history, c.reboot.max_reboots_per_day, now),
    ];
    for g in &gates {
        out.say(
            "gate",
            &format!(
                "gate {:<12} {}  {}",
                g.name,
                if g.pass { "PASS" } else { "FAIL" },
                g.reason
            ),
            serde_json::to_value(g).unwrap_or_default(),
        )?;
    }
    let failed: Vec<&str> = gates.iter().filter(|g| !g.pass).map(|g| g.name).collect();
    if !failed.is_empty() {
        out.say(
            "decision",
            &format!("not rebooting: gate(s) {} failed", failed.join(", ")),
            serde_json::json!({"reboot": false, "failed_gates": failed}),
        )?;
        return Ok(ExitCode::Negative);
    }
    let r = &c.reboot;
    let plan = format!(
        "maintenance on{}, wait {} for in-flight requests, stop the stack (timeout {}), write the marker, run `{}`",
        if r.maintenance_url.is_empty() { " (no URL: skipped)" } else { "" },
        humantime::format_duration(r.drain),
        humantime::format_duration(r.stop_timeout),
        r.command.join(" ")
    );
    if s.dry_run {
        out.say(
            "decision",
            &format!("dry run: would reboot: {plan}"),
            serde_json::json!({"reboot": false, "dry_run": true}),
        )?;
        return Ok(ExitCode::Ok);
    }
    out.say(
        "decision",
        &format!("rebooting: {plan}"),
        serde_json::json!({"reboot": true}),
    )?;
    maintenance(&r.maintenance_url, true)?;
    std::thread::sleep(r.drain);
    let compose = compose(c)?;
    let secs = r.stop_timeout.as_secs().to_string();
    let stop = compose
        .cmd()
        .args(["stop", "-t", &secs])
        .timeout(r.stop_timeout + Duration::from_secs(30));
    if let Err(e) = stop.run() {
        let _ = compose
            .cmd()
            .args(["up", "-d"])
            .timeout(r.stop_timeout)
            .run();
        let _ = maintenance(&r.maintenance_url, false);
        return Err(Failure {
            code: ExitCode::Internal,
            message: format!("stopping the stack failed, brought it back up, not rebooting: {e}"),
        });
    }
    let marker = Marker {
        time: Utc::now(),
        reason: why.clone(),
        maintenance_url: r.maintenance_url.clone(),
        host: lock::hostname(),
        kernel: kernel_release(),
    };
    atomic::write(
        &state_dir(c).join("marker.json"),
        &serde_json::to_vec_pretty(&marker).unwrap_or_default(),
        0o644,
    )?;
    append_history(c, "reboot", &why)?;
    notify(c, "reboot", &format!("rebooting for updates: {why}"), &format!("daon-reboot-guard stopped the stack and is rebooting ({why}).\nGates:\n{}\nAfter boot, `daon-reboot-guard verify` brings the stack back.", gates.iter().map(|g| format!("  {}: {}", g.name, g.reason)).collect::<Vec<_>>().join("\n")), serde_json::json!({"reason": why, "kernel_before": marker.kernel, "stopped_at": marker.time.to_rfc3339()}));
    let Some((prog, args)) = r.command.split_first() else {
        return Err(Failure {
            code: ExitCode::Config,
            message: "[reboot] command is empty".into(),
        });
    };
    if let Err(e) = Cmd::new(prog)
        .args(args)
        .timeout(Duration::from_secs(120))
        .run()
    {
        // The reboot did not happen: undo, so the server keeps serving.
        let _ = compose
            .cmd()
            .args(["up", "-d"])
            .timeout(r.stop_timeout)
            .run();
        let _ = maintenance(&r.maintenance_url, false);
        let _ = std::fs::remove_file(state_dir(c).join("marker.json"));
        let _ = append_history(c, "reboot-failed", &e.to_string());
        notify(
            c,
            "failure",
            "reboot command failed",
            &format!("The reboot command failed; the stack was started again.\n{e}"),
            serde_json::json!({}),
        );
        return Err(Failure {
            code: ExitCode::Internal,
            message: format!("the reboot command failed; the stack was started again: {e}"),
        });
    }
    Ok(ExitCode::Ok)
}

/// After boot: bring the stack back and wait for health.
fn verify<W: Write>(s: &Settings, out: &mut Out<W>) -> Result<ExitCode, Failure> {
    let c = &s.config;
    let marker_path = state_dir(c).join("marker.json");
    let Ok(bytes) = std::fs::read(&marker_path) else {
        out.say(
            "verify",
            "no reboot marker: nothing to verify",
            serde_json::json!({"marker": false}),
        )?;
        return Ok(ExitCode::Ok);
    };
    let marker: Marker = serde_json::from_slice(&bytes).map_err(|e| Failure {
        code: ExitCode::Io,
        message: format!(
            "corrupt marker {}: {e}; remove it after checking the stack by hand",
            marker_path.display()
        ),
    })?;
    if s.dry_run {
        out.say("verify", &format!("dry run: would start the stack, wait up to {} for health, switch maintenance off and clear the marker from {}", humantime::format_duration(c.reboot.verify_deadline), marker.time), serde_json::json!({"dry_run": true}))?;
        return Ok(ExitCode::Ok);
    }
    let start = Instant::now();
    compose(c)?
        .cmd()
        .args(["up", "-d"])
        .timeout(c.reboot.verify_deadline)
        .run()
        .map_err(|e| Failure {
            code: ExitCode::Unavailable,
            message: format!("bringing the stack up failed: {e}"),
        })?;
    out.say(
        "verify",
        "stack started; waiting for every check to pass",
        serde_json::json!({}),
    )?;
    let mut last: Vec<String>;
    loop {
        let results = daon_health_check::check_stack(c);
        last = results
            .iter()
            .filter(|r| r.status != daon_health_check::check::Status::Ok)
            .map(|r| format!("{} {}: {}", r.status.word(), r.name, r.summary))
            .collect();
        if last.is_empty() || start.elapsed() >= c.reboot.verify_deadline {
            break;
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    let took = humantime::format_duration(Duration::from_secs(start.elapsed().as_secs()));
    let ok = last.is_empty();
    let _ = maintenance(&marker.maintenance_url, false);
    let _ = std::fs::remove_file(&marker_path);
    if ok {
        append_history(c, "verified", &format!("healthy {took} after start"))?;
        out.say(
            "verify",
            &format!(
                "the stack is healthy again ({took}); rebooted for: {}",
                marker.reason
            ),
            serde_json::json!({"healthy": true, "seconds": start.elapsed().as_secs()}),
        )?;
        let kernel_after = kernel_release();
        let down = (Utc::now() - marker.time).num_seconds();
        notify(
            c,
            "success",
            "back after reboot, healthy",
            &format!(
                "The stack is healthy {took} after boot.\nRebooted for: {}\nKernel before: {}\nKernel after: {kernel_after}\nStack stopped at {} ({down} s ago)",
                marker.reason,
                if marker.kernel.is_empty() { "unknown" } else { &marker.kernel },
                marker.time.format("%Y-%m-%d %H:%M:%S UTC"),
            ),
            serde_json::json!({
                "healthy": true,
                "reason": marker.reason,
                "kernel_before": marker.kernel,
                "kernel_after": kernel_after,
                "stopped_at": marker.time.to_rfc3339(),
                "down_seconds": down,
                "healthy_after_boot_seconds": start.elapsed().as_secs(),
            }),
        );
        Ok(ExitCode::Ok)
    } else {
        append_history(c, "verify-failed", &last.join("; "))?;
        out.say(
            "verify",
            &format!(
                "NOT healthy {took} after boot (deadline {}): {}",
                humantime::format_duration(c.reboot.verify_deadline),
                last.join("; ")
            ),
            serde_json::json!({"healthy": false, "failing": last}),
        )?;
        notify(c, "failure", "EMERGENCY: unhealthy after reboot", &format!("After the reboot the stack is not healthy:\n  {}\nNext: docker compose ps; daon-health-check; docker logs <container>", last.join("\n  ")), serde_json::json!({"healthy": false, "failing": last}));
        Ok(ExitCode::Negative)
    }
}

fn status<W: Write>(s: &Settings, out: &mut Out<W>) -> Result<ExitCode, Failure> {
    let c = &s.config;
    let now = Utc::now();
    let needed = reboot_needed(c);
    out.say(
        "reboot_needed",
        &match &needed {
            Some(p) if !p.is_empty() => format!("reboot needed by {}", p.join(", ")),
            Some(_) => "reboot needed".into(),
            None => "no reboot needed".into(),
        },
        serde_json::json!({"reboot_needed": needed.is_some(), "packages": needed}),
    )?;
    for w in &c.reboot.windows {
        let open = w.contains(now);
        out.say("window", &format!("window \"{w}\": {}", if open { "open now".to_string() } else { w.next_open(now).map(|t| format!("next opens {}", t.format("%Y-%m-%d %H:%M UTC"))).unwrap_or_default() }), serde_json::json!({"window": w.to_string(), "open": open, "next_open": w.next_open(now)}))?;
    }
    let own = c.paths.lock_dir.join("reboot-guard.lock");
    let history = read_history(c);
    for g in [
        gates::backup(c, s.max_backup_age, now),
        gates::health(c, s.even_if_unhealthy),
        gates::locks(&c.paths.lock_dir, &own),
        gates::reboot_loop(&history, c.reboot.max_reboots_per_day, now),
    ] {
        out.say(
            "gate",
            &format!(
                "gate {:<12} {}  {}",
                g.name,
                if g.pass { "PASS" } else { "FAIL" },
                g.reason
            ),
            serde_json::to_value(&g).unwrap_or_default(),
        )?;
    }
    for h in history.iter().rev().take(5) {
        out.say(
            "history",
            &format!(
                "{} {} {}",
                h.time.format("%Y-%m-%d %H:%M UTC"),
                h.event,
                h.detail
            ),
            serde_json::to_value(h).unwrap_or_default(),
        )?;
    }
    Ok(ExitCode::Ok)
}

/// Runs the tool.
pub fn run<W: Write>(s: &Settings, w: &mut W) -> Result<ExitCode, Failure> {
    if s.print_config {
        write!(w, "{}", s.config.effective_toml(&s.source)?).map_err(|e| Failure {
            code: ExitCode::Io,
            message: e.to_string(),
        })?;
        return Ok(ExitCode::Ok);
    }
    let mut out = Out {
        w,
        json: s.json,
        held: (s.quiet && !s.json).then(Vec::new),
    };
    let r = match s.action {
        None => guard(s, &mut out),
        Some(Action::Verify) => verify(s, &mut out),
        Some(Action::Status) => status(s, &mut out),
    };
    let code = match &r {
        Ok(c) => *c,
        Err(f) => f.code,
    };
    if let Some(h) = out.held.take().filter(|_| code != ExitCode::Ok) {
        let _ = out.w.write_all(&h);
    }
    if s.json {
        let _ = daon_common::output::json_line(
            out.w,
            "summary",
            serde_json::json!({"code": code.code(), "error": r.as_ref().err().map(|f| f.message.clone())}),
        );
    }
    r
}

/// Parse, load, run; returns the exit code.
pub fn main_with(args: impl IntoIterator<Item = std::ffi::OsString>) -> u8 {
    let cli: Cli = match daon_common::cli::parse(command(), args, ExitCode::Usage.code()) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let loaded = match Config::load(cli.config.as_deref()) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("daon-reboot-guard: error: {e}");
            return e.exit_code().code();
        }
    };
    let Loaded {
        mut config, source, ..
    } = loaded;
    if let Some(u) = cli.maintenance_url {
        config.reboot.maintenance_url = u;
    }
    let s = Settings {
        max_backup_age: cli.max_backup_age.unwrap_or(config.reboot.max_backup_age),
        config,
        source,
        dry_run: cli.dry_run,
        json: cli.json,
        quiet: cli.quiet,
        even_if_unhealthy: cli.even_if_unhealthy,
        print_config: cli.print_config,
        action: cli.action,
    };
    // Pings around every run, with the end of its output; the guard sends
    // its own messages (reboot, verified, EMERGENCY) as it goes.
    let r = if s.print_config {
        run(&s, &mut std::io::stdout().lock())
    } else {
        daon_common::notify::monitored(
            &s.config.notify,
            &s.config.paths.state_dir,
            "daon-reboot-guard",
            false,
            "",
            |out, _| run(&s, out),
            |r| match r {
                Ok(c) => c.code(),
                Err(f) => f.code.code(),
            },
        )
    };
    match r {
        Ok(c) => c.code(),
        Err(f) => {
            eprintln!("daon-reboot-guard: error: {}", f.message);
            f.code.code()
        }
    }
}
