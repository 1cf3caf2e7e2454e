//! The pre-launch security audit (`--suite pre-launch`), the runbook's
//! `pre-launch-check.sh` done properly: secrets in `.env` (no placeholders,
//! long enough, all different — named, never printed), file modes and owner,
//! the public TLS certificate, the firewall (parsed `ufw status`), secrets
//! leaked into logs, and production settings (NODE_ENV, chain id, containers,
//! a fresh verified backup). PASS/WARN/FAIL map to OK/WARNING/CRITICAL.

use crate::check::{CheckResult, Item, Status};
use daon_common::config::{self, Config};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Values that are never secrets.
const PLACEHOLDERS: [&str; 12] = [
    "changeme",
    "change-me",
    "change_me",
    "test-secret",
    "password",
    "secret",
    "example",
    "default",
    "admin",
    "123456",
    "xxx",
    "your-secret-here",
];

fn item(name: &str, status: Status, message: impl Into<String>) -> Item {
    Item {
        name: name.into(),
        status,
        message: message.into(),
    }
}

/// The `.env` pairs, or a FAIL result saying why they could not be read.
pub fn env_pairs(cfg: &Config) -> Result<Vec<(String, String)>, String> {
    let p = cfg.env_file_path();
    config::read_env_file(&p).map_err(|e| format!("cannot read {}: {e}", p.display()))
}

/// True for keys that hold secrets.
pub fn is_secret_key(cfg: &Config, key: &str) -> bool {
    cfg.audit.secret_keys.iter().any(|k| k == key)
        || ["_SECRET", "_KEY", "_PASSWORD", "_TOKEN"]
            .iter()
            .any(|s| key.ends_with(s))
}

/// Secrets: no placeholders, long enough, no two equal. Names only.
pub fn secrets(cfg: &Config) -> CheckResult {
    let pairs = match env_pairs(cfg) {
        Ok(p) => p,
        Err(e) => return CheckResult::single("audit:secrets", Status::Critical, e),
    };
    let map: BTreeMap<&str, &str> = pairs
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let mut items = Vec::new();
    for k in &cfg.audit.secret_keys {
        if !map.contains_key(k.as_str()) {
            items.push(item(
                k,
                Status::Critical,
                format!("{k} is missing from .env"),
            ));
        }
    }
    let mut seen: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (k, v) in &map {
        if !is_secret_key(cfg, k) {
            continue;
        }
        let lower = v.to_ascii_lowercase();
        if v.is_empty() {
            items.push(item(k, Status::Critical, format!("{k} is empty")));
        } else if PLACEHOLDERS
            .iter()
            .any(|p| lower == *p || lower.contains("changeme"))
        {
            items.push(item(
                k,
                Status::Critical,
                format!("{k} has a default/placeholder value"),
            ));
        } else if v.chars().count() < cfg.audit.min_secret_length {
            items.push(item(
                k,
                Status::Critical,
                format!(
                    "{k} is shorter than {} characters",
                    cfg.audit.min_secret_length
                ),
            ));
        } else {
            items.push(item(k, Status::Ok, format!("{k} looks strong")));
        }
        seen.entry(v).or_default().push(k);
    }
    for keys in seen.values().filter(|k| k.len() > 1) {
        items.push(item(
            &keys.join("="),
            Status::Critical,
            format!("{} have the same value", keys.join(" and ")),
        ));
    }
    let n = items.len();
    CheckResult::from_items(
        "audit:secrets",
        items,
        format!("{n} secrets: none default, short or reused"),
    )
}

fn user_name(uid: u32) -> Option<String> {
    let text = std::fs::read_to_string("/etc/passwd").ok()?;
    text.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() > 2 && f[2] == uid.to_string()).then(|| f[0].to_string())
    })
}

/// File modes: `.env` 0600 (and owned by the deploy user), secrets dir 0700.
pub fn files(cfg: &Config) -> CheckResult {
    let mut items = Vec::new();
    let env = cfg.env_file_path();
    match std::fs::metadata(&env) {
        Err(e) => items.push(item(
            ".env",
            Status::Critical,
            format!("{}: {e}", env.display()),
        )),
        Ok(m) => {
            let mode = m.mode() & 0o777;
            if mode & 0o077 != 0 {
                items.push(item(
                    ".env",
                    Status::Critical,
                    format!(
                        "{} is mode {mode:o}, must be 600: chmod 600 {}",
                        env.display(),
                        env.display()
                    ),
                ));
            } else {
                items.push(item(
                    ".env",
                    Status::Ok,
                    format!("{} is mode {mode:o}", env.display()),
                ));
            }
            if !cfg.audit.deploy_user.is_empty() {
                let owner = user_name(m.uid()).unwrap_or_else(|| m.uid().to_string());
                if owner != cfg.audit.deploy_user {
                    items.push(item(
                        ".env owner",
                        Status::Critical,
                        format!(
                            "{} is owned by {owner}, not {}",
                            env.display(),
                            cfg.audit.deploy_user
                        ),
                    ));
                }
            }
        }
    }
    let dir = &cfg.paths.secrets_dir;
    match std::fs::metadata(dir) {
        Err(_) => items.push(item(
            "secrets dir",
            Status::Warning,
            format!("{} does not exist yet", dir.display()),
        )),
        Ok(m) => {
            let mode = m.mode() & 0o777;
            let st = if mode & 0o077 != 0 {
                Status::Critical
            } else {
                Status::Ok
            };
            items.push(item(
                "secrets dir",
                st,
                format!(
                    "{} is mode {mode:o}{}",
                    dir.display(),
                    if st == Status::Ok {
                        ""
                    } else {
                        ", must be 700"
                    }
                ),
            ));
        }
    }
    CheckResult::from_items(
        "audit:files",
        items,
        ".env 600, secrets directory 700".into(),
    )
}

/// TLS certificate of the public API host.
pub fn tls(cfg: &Config) -> CheckResult {
    let http = config::HttpCheckConfig {
        name: "public".into(),
        url: cfg.audit.public_url.clone(),
        insecure: true,
        cert_warn_days: cfg.audit.cert_warn_days,
        cert_crit_days: cfg.audit.cert_crit_days,
        warn_latency: None,
        expect_status: (100..600).collect(),
        ..config::HttpCheckConfig::default()
    };
    if !http.url.starts_with("https://") {
        return CheckResult::single(
            "audit:tls",
            Status::Critical,
            format!("{} is not an https:// URL", http.url),
        );
    }
    let r = crate::checks::http::run(&http);
    let cert: Vec<Item> = r
        .items
        .into_iter()
        .filter(|i| i.name == "certificate")
        .collect();
    if cert.is_empty() {
        return CheckResult::single(
            "audit:tls",
            Status::Critical,
            format!("{}: {}", http.url, r.summary),
        );
    }
    let msg = cert[0].message.clone();
    CheckResult::from_items("audit:tls", cert, msg).with_perf(r.perfdata)
}

/// Parses `ufw status` output: active?, and the ports allowed in.
pub fn parse_ufw(text: &str) -> (bool, Vec<String>) {
    let active = text
        .lines()
        .any(|l| l.trim().eq_ignore_ascii_case("status: active"));
    let mut ports = Vec::new();
    for l in text.lines() {
        let cols: Vec<&str> = l.split_whitespace().collect();
        // "22/tcp  ALLOW  Anywhere", "80,443/tcp (v6)  ALLOW IN  Anywhere (v6)", "OpenSSH ALLOW Anywhere"
        let Some(pos) = cols.iter().position(|c| *c == "ALLOW") else {
            continue;
        };
        let target = cols[..pos]
            .iter()
            .filter(|c| **c != "(v6)")
            .copied()
            .collect::<Vec<_>>()
            .join(" ");
        if !target.is_empty() && !ports.contains(&target) {
            ports.push(target);
        }
    }
    (active, ports)
}

fn port_numbers(target: &str) -> Vec<Option<u16>> {
    let spec = target.split('/').next().unwrap_or("");
    match spec {
        "OpenSSH" => vec![Some(22)],
        "WWW" | "Nginx HTTP" => vec![Some(80)],
        "WWW Secure" | "Nginx HTTPS" => vec![Some(443)],
        "WWW Full" | "Nginx Full" => vec![Some(80), Some(443)],
        _ => spec
            .split(',')
            .map(|p| {
                if p.contains(':') {
                    None
                } else {
                    p.trim().parse().ok()
                }
            })
            .collect(),
    }
}

/// Firewall: active, and only the allowed ports open.
pub fn firewall(cfg: &Config) -> CheckResult {
    let text = if cfg.audit.ufw_status_file.as_os_str().is_empty() {
        match daon_common::process::Cmd::new("ufw").arg("status").run() {
            Ok(o) => o.stdout_str(),
            Err(e) => {
                return CheckResult::single(
                    "audit:firewall",
                    Status::Critical,
                    format!("cannot read the firewall state: {e}"),
                )
            }
        }
    } else {
        match std::fs::read_to_string(&cfg.audit.ufw_status_file) {
            Ok(t) => t,
            Err(e) => {
                return CheckResult::single(
                    "audit:firewall",
                    Status::Critical,
                    format!("{}: {e}", cfg.audit.ufw_status_file.display()),
                )
            }
        }
    };
    let (active, targets) = parse_ufw(&text);
    if !active {
        return CheckResult::single(
            "audit:firewall",
            Status::Critical,
            "the firewall is inactive: `ufw enable` after allowing 22, 80, 443",
        );
    }
    let mut items = Vec::new();
    for t in &targets {
        let nums = port_numbers(t);
        let ok = !nums.is_empty()
            && nums
                .iter()
                .all(|n| n.is_some_and(|n| cfg.audit.allowed_ports.contains(&n)));
        items.push(item(
            t,
            if ok { Status::Ok } else { Status::Critical },
            if ok {
                format!("{t} allowed")
            } else {
                format!(
                    "{t} is open but only {:?} should be",
                    cfg.audit.allowed_ports
                )
            },
        ));
    }
    CheckResult::from_items(
        "audit:firewall",
        items,
        format!("active; open: {}", targets.join(", ")),
    )
}

/// Logs: no secret value appears in any file of the log directories.
pub fn logs(cfg: &Config) -> CheckResult {
    let secrets: Vec<(String, String)> = match env_pairs(cfg) {
        Ok(p) => p
            .into_iter()
            .filter(|(k, v)| is_secret_key(cfg, k) && v.len() >= 8)
            .collect(),
        Err(e) => return CheckResult::single("audit:logs", Status::Critical, e),
    };
    let mut items = Vec::new();
    let mut scanned = 0u64;
    for dir in &cfg.audit.log_dirs {
        if !dir.exists() {
            continue;
        }
        let mut stack = vec![dir.clone()];
        while let Some(d) = stack.pop() {
            let Ok(rd) = std::fs::read_dir(&d) else {
                continue;
            };
            for e in rd.flatten() {
                let p = e.path();
                match e.file_type() {
                    Ok(t) if t.is_dir() => stack.push(p),
                    Ok(t) if t.is_file() => {
                        scanned += 1;
                        for name in leaked_in(&p, &secrets) {
                            items.push(item(
                                &p.display().to_string(),
                                Status::Critical,
                                format!(
                                    "{} contains the value of {name}: rotate it and clean the log",
                                    p.display()
                                ),
                            ));
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    CheckResult::from_items(
        "audit:logs",
        items,
        format!("no secret in {scanned} log file(s)"),
    )
}

fn leaked_in(p: &Path, secrets: &[(String, String)]) -> Vec<String> {
    let Ok(f) = std::fs::File::open(p) else {
        return Vec::new();
    };
    let mut found: Vec<String> = Vec::new();
    let mut r = BufReader::new(f);
    let mut line = Vec::new();
    while r.read_until(b'\n', &mut line).unwrap_or(0) > 0 {
        let text = String::from_utf8_lossy(&line);
        for (k, v) in secrets {
            if !found.contains(k) && text.contains(v.as_str()) {
                found.push(k.clone());
            }
        }
        line.clear();
    }
    found
}

/// NODE_ENV=production.
pub fn node_env(cfg: &Config) -> CheckResult {
    match env_pairs(cfg) {
        Err(e) => CheckResult::single("audit:node-env", Status::Critical, e),
        Ok(p) => match p
            .iter()
            .find(|(k, _)| k == "NODE_ENV")
            .map(|(_, v)| v.as_str())
        {
            Some("production") => {
                CheckResult::single("audit:node-env", Status::Ok, "NODE_ENV=production")
            }
            other => CheckResult::single(
                "audit:node-env",
                Status::Critical,
                format!(
                    "NODE_ENV is {:?}, must be production",
                    other.unwrap_or("unset")
                ),
            ),
        },
    }
}

/// CHAIN_ID in `.env` equals the chain's `network`.
pub fn chain_id(cfg: &Config) -> CheckResult {
    let id = match env_pairs(cfg) {
        Err(e) => return CheckResult::single("audit:chain-id", Status::Critical, e),
        Ok(p) => p.into_iter().find(|(k, _)| k == "CHAIN_ID").map(|(_, v)| v),
    };
    let Some(id) = id.filter(|v| !v.is_empty()) else {
        return CheckResult::single(
            "audit:chain-id",
            Status::Critical,
            "CHAIN_ID is not set in .env",
        );
    };
    let state = std::sync::Arc::new(std::sync::Mutex::new(crate::state::State::default()));
    let docker = daon_common::docker::Docker::new(cfg);
    let r = crate::checks::chain::run(&cfg.chain, &id, &docker, &state);
    let mismatch = r.items.iter().find(|i| i.name == "network");
    match (r.status, mismatch) {
        (_, Some(m)) => CheckResult::single(
            "audit:chain-id",
            Status::Critical,
            format!("CHAIN_ID={id} in .env but {}", m.message),
        ),
        (Status::Critical, None) if r.summary.contains("unavailable") => {
            CheckResult::single("audit:chain-id", Status::Critical, r.summary)
        }
        _ => CheckResult::single(
            "audit:chain-id",
            Status::Ok,
            format!("CHAIN_ID={id} matches the chain"),
        ),
    }
}

/// A verified backup set younger than `max_backup_age`.
pub fn backup(cfg: &Config) -> CheckResult {
    match daon_backup::fresh::newest_verified(
        &cfg.paths.backup_dir,
        cfg.audit.max_backup_age,
        chrono::Utc::now(),
    ) {
        Ok(ok) => CheckResult::single("audit:backup", Status::Ok, ok),
        Err(e) => CheckResult::single(
            "audit:backup",
            Status::Critical,
            format!("{e}: run `daon-backup` before launch"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const UFW: &str = "Status: active\n\nTo                         Action      From\n--                         ------      ----\n22/tcp                     ALLOW       Anywhere\n80,443/tcp                 ALLOW       Anywhere\n3306                       ALLOW       10.0.0.0/8\n22/tcp (v6)                ALLOW       Anywhere (v6)\n";

    #[test]
    fn ufw_output_is_parsed() {
        let (active, t) = parse_ufw(UFW);
        assert!(active);
        assert_eq!(t, ["22/tcp", "80,443/tcp", "3306"]);
        assert!(!parse_ufw("Status: inactive\n").0);
        assert_eq!(port_numbers("80,443/tcp"), [Some(80), Some(443)]);
        assert_eq!(port_numbers("6000:6007/tcp"), [None]);
        assert_eq!(port_numbers("OpenSSH"), [Some(22)]);
    }
}
