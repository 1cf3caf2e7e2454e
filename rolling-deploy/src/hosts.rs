//! Multi-host deploys (`--host`, given once per Docker host): which daemon and
//! which URLs each host means, and the run that deploys host by host — the
//! first is the canary — and, when one host fails, rolls every host already
//! updated back to its own rollback point with the same rolling procedure.

use crate::deploy::{HostResult, Run, EXIT_INTERRUPTED};
use crate::{Failure, Settings};
use daon_common::config::{check_docker_endpoint, is_docker_endpoint, Config};
use daon_common::notify::Report;
use daon_common::output::json_line;
use daon_common::{lock, Error, ExitCode};
use serde_json::{json, Value};
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// One `--host`: a Docker daemon and the URLs to drain and check it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    /// What identifies it in history, journals and output: the
    /// `[deploy.hosts]` name, or the context/endpoint as given.
    pub name: String,
    /// Docker context name or endpoint URL; empty: `[docker]` as configured.
    pub docker: String,
    /// Its Caddy admin API.
    pub caddy_admin_url: String,
    /// Its API through its load balancer.
    pub health_url: String,
    /// Its chain node RPC.
    pub rpc_url: String,
}

fn context_name_ok(s: &str) -> bool {
    // The docker CLI's rule for context names.
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || "_.+-".contains(c))
}

/// Resolves the `--host` values in order: a `[deploy.hosts.NAME]` name, else a
/// Docker endpoint (`ssh://`, `unix://`, `tcp://`...), else a Docker context
/// name; the last two use `[deploy]`'s and `[chain]`'s URLs.
pub fn resolve(values: &[String], config: &Config) -> Result<Vec<Host>, String> {
    let d = &config.deploy;
    let or = |v: &str, default: &str| {
        if v.is_empty() {
            default.to_string()
        } else {
            v.to_string()
        }
    };
    let mut out: Vec<Host> = Vec::new();
    for v in values {
        let v = v.trim();
        let host = if let Some(h) = d.hosts.get(v) {
            Host {
                name: v.to_string(),
                docker: h.docker.clone(),
                caddy_admin_url: or(&h.caddy_admin_url, &d.caddy_admin_url),
                health_url: or(&h.health_url, &d.health_url),
                rpc_url: or(&h.rpc_url, &config.chain.rpc_url),
            }
        } else if is_docker_endpoint(v) {
            check_docker_endpoint(v).map_err(|e| format!("--host {e}"))?;
            Host {
                name: v.to_string(),
                docker: v.to_string(),
                caddy_admin_url: d.caddy_admin_url.clone(),
                health_url: d.health_url.clone(),
                rpc_url: config.chain.rpc_url.clone(),
            }
        } else if context_name_ok(v) {
            Host {
                name: v.to_string(),
                docker: v.to_string(),
                caddy_admin_url: d.caddy_admin_url.clone(),
                health_url: d.health_url.clone(),
                rpc_url: config.chain.rpc_url.clone(),
            }
        } else {
            let names: Vec<&str> = d.hosts.keys().map(String::as_str).collect();
            return Err(format!(
                "--host {v:?} is neither a configured host (deploy.hosts: {}), a Docker context name nor an endpoint (ssh://USER@HOST, unix:///PATH, tcp://HOST:PORT)",
                if names.is_empty() { "none".to_string() } else { names.join(", ") }
            ));
        };
        if let Some(o) = out.iter().find(|o| o.name == host.name) {
            return Err(format!("--host {} is given twice", o.name));
        }
        if let Some(o) = out.iter().find(|o| o.docker == host.docker) {
            return Err(format!(
                "--host {} and --host {} are the same Docker host ({})",
                o.name,
                host.name,
                if host.docker.is_empty() {
                    "the configured one"
                } else {
                    &host.docker
                }
            ));
        }
        out.push(host);
    }
    Ok(out)
}

/// The settings of one host's run: its daemon and URLs, no other host.
pub fn settings_for(s: &Settings, h: &Host) -> Settings {
    let mut hs = s.clone();
    hs.hosts = Vec::new();
    let c = &mut hs.config;
    if is_docker_endpoint(&h.docker) {
        c.docker.host = h.docker.clone();
        c.docker.context.clear();
    } else if !h.docker.is_empty() {
        c.docker.context = h.docker.clone();
        c.docker.host.clear();
    }
    c.deploy.caddy_admin_url = h.caddy_admin_url.clone();
    c.deploy.health_url = h.health_url.clone();
    c.chain.rpc_url = h.rpc_url.clone();
    hs
}

fn say(s: &Settings, out: &mut dyn Write, kind: &str, text: String, fields: Value) {
    if s.json {
        let mut f = fields;
        if let Value::Object(m) = &mut f {
            m.insert("message".into(), Value::String(text));
        }
        let _ = json_line(&mut &mut *out, kind, f);
    } else {
        eprintln!("daon-rolling-deploy: {text}");
    }
}

/// The URLs of a raw remote endpoint (`ssh://`, `tcp://`) that point at this
/// machine: the defaults are rarely right for another host.
pub fn loopback_urls(config: &Config, h: &Host) -> Vec<String> {
    let remote = h.docker.starts_with("ssh://") || h.docker.starts_with("tcp://");
    if !remote || config.deploy.hosts.contains_key(&h.name) {
        return Vec::new();
    }
    [&h.caddy_admin_url, &h.health_url, &h.rpc_url]
        .into_iter()
        .filter(|u| {
            let rest = u.split_once("://").map_or(u.as_str(), |x| x.1);
            ["127.", "localhost", "[::1]"]
                .iter()
                .any(|l| rest.starts_with(l))
        })
        .cloned()
        .collect()
}

/// What one host's part of the run came to.
#[derive(Debug, Clone)]
struct Part {
    host: String,
    code: u8,
    outcome: String,
    error: String,
}

/// Deploys (or rolls back) every `--host` in order; see the module doc.
pub fn execute(
    s: &Settings,
    out: &mut dyn Write,
    kind: &str,
    target: Option<String>,
    build: Option<PathBuf>,
    report: &mut Report,
) -> Result<u8, Failure> {
    let t0 = Instant::now();
    let per: Vec<Settings> = s.hosts.iter().map(|h| settings_for(s, h)).collect();
    let names: Vec<String> = s.hosts.iter().map(|h| h.name.clone()).collect();
    let run_id = format!(
        "{}-{}",
        chrono::Utc::now().format("%Y%m%dT%H%M%S%.3fZ"),
        std::process::id()
    );
    let stop = Arc::new(AtomicBool::new(false));
    let what = target
        .clone()
        .unwrap_or_else(|| "the rollback point".into());
    for h in &s.hosts {
        let local = loopback_urls(&s.config, h);
        if !local.is_empty() {
            say(
                s,
                &mut *out,
                "warning",
                format!(
                    "[{}] is a remote Docker host but {} point at this machine: name it in [deploy.hosts.NAME] with its own caddy_admin_url, health_url and rpc_url",
                    h.name,
                    local.join(", ")
                ),
                json!({"host": h.name, "urls": local}),
            );
        }
    }

    if s.dry_run {
        let mut code = 0;
        for (h, hs) in s.hosts.iter().zip(&per) {
            let r = Run::for_host(hs, &mut *out, &h.name, stop.clone(), &run_id)
                .and_then(|run| run.execute_host(kind, target.clone(), build.clone(), report));
            match r {
                Ok(r) => code = code.max(r.code),
                Err(f) => {
                    say(
                        s,
                        &mut *out,
                        "error",
                        format!("[{}] {}", h.name, f.message),
                        json!({"host": h.name, "code": f.code.code()}),
                    );
                    code = code.max(f.code.code());
                }
            }
        }
        let io = |e: std::io::Error| Failure::from(Error::io("writing", "standard output", e));
        if s.json {
            json_line(
                &mut &mut *out,
                "summary",
                json!({"dry_run": true, "kind": kind, "target": what, "hosts": names}),
            )
            .map_err(io)?;
        } else {
            writeln!(
                out,
                "hosts in this order (the first is the canary): {}; a failure on any host rolls back every host already updated (dry run: nothing changed)",
                names.join(", ")
            )
            .map_err(io)?;
        }
        return Ok(code);
    }

    let lock_path = s.config.paths.lock_dir.join("rolling-deploy.lock");
    let _lock = lock::acquire(
        &lock_path,
        s.lock_wait,
        &format!(
            "daon-rolling-deploy {kind} {what} on hosts {} by {}",
            names.join(", "),
            crate::deploy::who()
        ),
    )?;
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        let _ = signal_hook::flag::register(sig, stop.clone());
    }

    let mut parts: Vec<Part> = Vec::new();
    // Each host's run reports on its own; the notification gets them all.
    let mut per_host: Vec<serde_json::Value> = Vec::new();
    let mut updated: Vec<(usize, HostResult)> = Vec::new();
    let mut failed: Option<Part> = None;
    let mut interrupted = false;
    for (i, (h, hs)) in s.hosts.iter().zip(&per).enumerate() {
        if stop.load(Ordering::SeqCst) {
            interrupted = true;
            break;
        }
        say(
            s,
            &mut *out,
            "host",
            format!(
                "host {}/{}: {}{}",
                i + 1,
                names.len(),
                h.name,
                if i == 0 && names.len() > 1 {
                    " (canary)"
                } else {
                    ""
                }
            ),
            json!({"host": h.name, "step": "start", "index": i, "canary": i == 0}),
        );
        let mut hr = Report::default();
        let r = Run::for_host(hs, &mut *out, &h.name, stop.clone(), &run_id)
            .and_then(|run| run.execute_host(kind, target.clone(), build.clone(), &mut hr));
        hr.set("host", h.name.clone());
        per_host.push(serde_json::Value::Object(hr.fields));
        match r {
            Ok(r) => {
                let part = Part {
                    host: h.name.clone(),
                    code: r.code,
                    outcome: r.outcome.clone(),
                    error: r.error.clone(),
                };
                parts.push(part.clone());
                if r.code == 0 {
                    updated.push((i, r));
                } else if r.code == EXIT_INTERRUPTED {
                    interrupted = true;
                    break;
                } else {
                    failed = Some(part);
                    break;
                }
            }
            Err(f) => {
                let part = Part {
                    host: h.name.clone(),
                    code: f.code.code(),
                    outcome: "failed".into(),
                    error: f.message.clone(),
                };
                say(
                    s,
                    &mut *out,
                    "error",
                    format!("[{}] {}", h.name, f.message),
                    json!({"host": h.name, "code": f.code.code()}),
                );
                parts.push(part.clone());
                failed = Some(part);
                break;
            }
        }
    }

    // One host failed: every host already updated goes back to its own
    // rollback point, last updated first, with the same rolling procedure.
    let mut rolled_back: Vec<String> = Vec::new();
    let mut rollback_failed: Vec<(String, String)> = Vec::new();
    if let Some(f) = &failed {
        let cause = format!("host {} failed: {}", f.host, f.error);
        for (i, r) in updated.iter().rev() {
            let h = &s.hosts[*i];
            if !r.changed {
                say(
                    s,
                    &mut *out,
                    "host",
                    format!(
                        "[{}] was already on {} before this run: nothing to roll back",
                        h.name, r.image
                    ),
                    json!({"host": h.name, "step": "rollback", "skipped": true}),
                );
                continue;
            }
            say(
                s,
                &mut *out,
                "host",
                format!(
                    "[{}] rolling back to {} because {cause}",
                    h.name, r.rollback_image
                ),
                json!({"host": h.name, "step": "rollback", "to": r.rollback_image}),
            );
            let mut hs = per[*i].clone();
            // Nothing may stop putting a host back: no pre-deploy hook, and a
            // stop flag no signal sets.
            hs.pre_deploy = None;
            let res = Run::for_host(
                &hs,
                &mut *out,
                &h.name,
                Arc::new(AtomicBool::new(false)),
                &run_id,
            )
            .map(|run| run.caused_by(&cause))
            .and_then(|run| {
                let mut hr = Report::default();
                let x = run.execute_host("rollback", Some(r.rollback_image.clone()), None, &mut hr);
                hr.set("host", h.name.clone());
                per_host.push(serde_json::Value::Object(hr.fields));
                x
            });
            match res {
                Ok(x) if x.code == 0 => rolled_back.push(h.name.clone()),
                Ok(x) => rollback_failed.push((h.name.clone(), x.error)),
                Err(e) => rollback_failed.push((h.name.clone(), e.message)),
            }
        }
    }

    let outcome = match (&failed, interrupted) {
        (None, false) => "ok",
        (None, true) => "interrupted",
        (Some(f), _) if rollback_failed.is_empty() && f.code != ExitCode::Internal.code() => {
            "rolled-back"
        }
        _ => "failed",
    };
    let code = match (&failed, interrupted) {
        (None, false) => 0,
        (None, true) => EXIT_INTERRUPTED,
        (Some(_), _) if !rollback_failed.is_empty() => ExitCode::Internal.code(),
        (Some(f), _) => f.code.max(1),
    };
    let untouched: Vec<&String> = names
        .iter()
        .filter(|n| !parts.iter().any(|p| &p.host == *n))
        .collect();
    let secs = format!("{:.1}s", t0.elapsed().as_secs_f64());
    let mut line = format!(
        "{kind} of {what} on {} hosts ({}): {outcome} in {secs}",
        names.len(),
        names.join(", ")
    );
    if let Some(f) = &failed {
        line.push_str(&format!("; FAILED on host {}: {}", f.host, f.error));
        if !rolled_back.is_empty() {
            line.push_str(&format!("; rolled back hosts: {}", rolled_back.join(", ")));
        }
        for (h, e) in &rollback_failed {
            line.push_str(&format!("; ROLLBACK OF HOST {h} FAILED: {e}"));
        }
    }
    if !untouched.is_empty() {
        line.push_str(&format!(
            "; not touched: {}",
            untouched
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    report.subject = line.clone();
    report.set("kind", kind);
    report.set("target", what.clone());
    report.set("hosts", names.join(", "));
    report.set("outcome", outcome.to_string());
    report.set("run_id", run_id.clone());
    report.set(
        "duration_s",
        (t0.elapsed().as_secs_f64() * 10.0).round() / 10.0,
    );
    if let Some(f) = &failed {
        report.set("failed_host", f.host.clone());
        report.set("rolled_back_hosts", rolled_back.clone());
    }
    if !untouched.is_empty() {
        report.set(
            "untouched_hosts",
            untouched.iter().map(|h| h.to_string()).collect::<Vec<_>>(),
        );
    }
    // Per host, in run order (the deploys, then the rollbacks): the history
    // record, and the failing container's logs where one failed.
    report.set("runs", per_host);
    let io = |e: std::io::Error| Failure::from(Error::io("writing", "standard output", e));
    if s.json {
        json_line(
            &mut &mut *out,
            "summary",
            json!({
                "kind": kind,
                "target": what,
                "outcome": outcome,
                "run_id": run_id,
                "duration_s": (t0.elapsed().as_secs_f64() * 10.0).round() / 10.0,
                "hosts": parts.iter().map(|p| json!({"host": p.host, "outcome": p.outcome, "code": p.code, "error": p.error})).collect::<Vec<_>>(),
                "failed_host": failed.as_ref().map(|f| f.host.clone()),
                "rolled_back_hosts": rolled_back,
                "rollback_failed_hosts": rollback_failed.iter().map(|(h, _)| h.clone()).collect::<Vec<_>>(),
                "untouched_hosts": untouched,
            }),
        )
        .map_err(io)?;
    } else {
        writeln!(out, "{line}").map_err(io)?;
    }
    if let Some(f) = &failed {
        eprintln!(
            "daon-rolling-deploy: host {} failed{}",
            f.host,
            if rollback_failed.is_empty() {
                if rolled_back.is_empty() {
                    String::new()
                } else {
                    format!("; hosts {} were rolled back", rolled_back.join(", "))
                }
            } else {
                "; some hosts could NOT be rolled back: see `daon-rolling-deploy status --host ...`"
                    .to_string()
            }
        );
    }
    Ok(code)
}

#[cfg(test)]
mod tests {
    use super::*;
    use daon_common::config::DeployHostConfig;

    fn config() -> Config {
        let mut c = Config::default();
        c.deploy.caddy_admin_url = "http://127.0.0.1:2019".into();
        c.deploy.health_url = "https://api.example/health".into();
        c.chain.rpc_url = "http://127.0.0.1:26657".into();
        c.deploy.hosts.insert(
            "dc2".into(),
            DeployHostConfig {
                docker: "ssh://deploy@dc2.example".into(),
                caddy_admin_url: "http://10.0.2.2:2019".into(),
                health_url: String::new(),
                rpc_url: "http://10.0.2.2:26657".into(),
            },
        );
        c.deploy
            .hosts
            .insert("local".into(), DeployHostConfig::default());
        c
    }

    fn v(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn names_endpoints_and_contexts_resolve_in_order() {
        let c = config();
        let h = resolve(&v(&["local", "dc2", "unix:///run/x.sock", "prod-eu"]), &c).unwrap();
        assert_eq!(
            h.iter().map(|h| h.name.as_str()).collect::<Vec<_>>(),
            ["local", "dc2", "unix:///run/x.sock", "prod-eu"]
        );
        // A named host: its own URLs, the defaults where it sets none.
        assert_eq!(h[1].docker, "ssh://deploy@dc2.example");
        assert_eq!(h[1].caddy_admin_url, "http://10.0.2.2:2019");
        assert_eq!(h[1].health_url, "https://api.example/health");
        assert_eq!(h[1].rpc_url, "http://10.0.2.2:26657");
        // Raw endpoint and context: the default URLs.
        assert_eq!(h[2].docker, "unix:///run/x.sock");
        assert_eq!(h[2].caddy_admin_url, "http://127.0.0.1:2019");
        assert_eq!(h[3].docker, "prod-eu");
        assert_eq!(
            h[0].docker, "",
            "an empty docker key: [docker] as configured"
        );
        assert!(resolve(&[], &c).unwrap().is_empty());
    }

    #[test]
    fn bad_and_repeated_hosts_are_usage_errors() {
        let c = config();
        for (args, want) in [
            (&["dc2", "dc2"][..], "given twice"),
            (&["dc2", "ssh://deploy@dc2.example"][..], "same Docker host"),
            (&["ftp://x"][..], "Docker endpoints are"),
            (&["ssh://"][..], "no address"),
            (&["not a host"][..], "deploy.hosts: dc2, local"),
            (&[""][..], "neither"),
        ] {
            let e = resolve(&v(args), &c).unwrap_err();
            assert!(e.contains(want), "{args:?}: {e}");
        }
    }

    #[test]
    fn a_host_gets_its_daemon_and_urls_and_no_other_host() {
        let c = config();
        let hosts = resolve(&v(&["dc2", "prod-eu", "local"]), &c).unwrap();
        let s = Settings {
            config: c.clone(),
            source: daon_common::config::Source::BuiltIn,
            service: "api".into(),
            containers: v(&["daon-api-1"]),
            json: false,
            dry_run: false,
            lock_wait: std::time::Duration::ZERO,
            pre_deploy: None,
            post_deploy: None,
            action: crate::Action::Status,
            hosts: hosts.clone(),
        };
        let a = settings_for(&s, &hosts[0]);
        assert!(a.hosts.is_empty());
        assert_eq!(a.config.docker.host, "ssh://deploy@dc2.example");
        assert_eq!(a.config.docker.context, "");
        assert_eq!(a.config.deploy.caddy_admin_url, "http://10.0.2.2:2019");
        assert_eq!(a.config.chain.rpc_url, "http://10.0.2.2:26657");
        let b = settings_for(&s, &hosts[1]);
        assert_eq!(b.config.docker.context, "prod-eu");
        assert_eq!(b.config.docker.host, "");
        assert!(
            loopback_urls(&c, &hosts[0]).is_empty(),
            "named: its own URLs"
        );
        let raw = resolve(&v(&["ssh://deploy@dc9", "unix:///run/x.sock"]), &c).unwrap();
        assert_eq!(
            loopback_urls(&c, &raw[0]),
            ["http://127.0.0.1:2019", "http://127.0.0.1:26657"]
        );
        assert!(loopback_urls(&c, &raw[1]).is_empty(), "a local socket");
        let l = settings_for(&s, &hosts[2]);
        assert_eq!(l.config.docker, c.docker);
        assert_eq!(l.config.deploy.caddy_admin_url, "http://127.0.0.1:2019");
    }
}
