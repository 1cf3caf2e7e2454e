//! The gates a reboot must pass, each reported by name: a fresh backup
//! (Hetzner snapshot/backup, or a verified local set), a healthy stack, no
//! deploy/backup/restore lock held, and the reboot-loop guard.

use chrono::{DateTime, Utc};
use daon_common::process::Cmd;
use daon_common::Config;
use daon_health_check::check::Status;
use serde::Serialize;
use std::fs::{File, TryLockError};
use std::path::Path;
use std::time::Duration;

/// One gate's verdict.
#[derive(Debug, Clone, Serialize)]
pub struct Gate {
    /// Gate name (`backup`, `health`, `locks`, `reboot-loop`).
    pub name: &'static str,
    /// Passed?
    pub pass: bool,
    /// Why.
    pub reason: String,
}

/// The snapshot gate: `<snapshot_command> check --max-age <age>` exits 0
/// when a Hetzner snapshot or backup of this server is fresh enough.
fn hetzner(cfg: &Config, max_age: Duration) -> Result<String, String> {
    let Some((prog, args)) = cfg.reboot.snapshot_command.split_first() else {
        return Err("no snapshot_command configured".into());
    };
    let age = humantime::format_duration(max_age).to_string();
    let cmd = Cmd::new(prog)
        .args(args)
        .envs(daon_common::notify::NESTED_RUN_ENV)
        .args(["check", "--max-age", &age])
        .timeout(Duration::from_secs(120));
    match cmd.run_unchecked() {
        Ok(o) if o.success() => Ok(first_line(
            &o.stdout_str(),
            "a Hetzner snapshot or backup is fresh enough",
        )),
        Ok(o) => {
            let why = first_line(&o.stderr_str(), "");
            let why = if why.is_empty() {
                first_line(&o.stdout_str(), "")
            } else {
                why
            };
            Err(format!(
                "`{}` exited {}: {why}",
                cmd.cmdline(),
                o.code.unwrap_or(-1)
            ))
        }
        Err(e) => Err(e.to_string()),
    }
}

fn first_line(s: &str, default: &str) -> String {
    s.lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or(default)
        .trim()
        .to_string()
}

/// The local gate: the newest complete backup set is young enough and verifies.
fn local(cfg: &Config, max_age: Duration, now: DateTime<Utc>) -> Result<String, String> {
    daon_backup::fresh::newest_verified(&cfg.paths.backup_dir, max_age, now)
        .map(|ok| format!("local {ok}"))
}

/// Backup gate: Hetzner first, then the local sets.
pub fn backup(cfg: &Config, max_age: Duration, now: DateTime<Utc>) -> Gate {
    match hetzner(cfg, max_age) {
        Ok(why) => Gate { name: "backup", pass: true, reason: why },
        Err(h) => match local(cfg, max_age, now) {
            Ok(why) => Gate { name: "backup", pass: true, reason: why },
            Err(l) => Gate {
                name: "backup",
                pass: false,
                reason: format!(
                    "no backup younger than {}: Hetzner: {h}; local: {l}. Take one: `daon-snapshot create` or `daon-backup`",
                    humantime::format_duration(max_age)
                ),
            },
        },
    }
}

/// Health gate: every check OK (WARNING is allowed), unless overridden.
pub fn health(cfg: &Config, even_if_unhealthy: bool) -> Gate {
    let results = daon_health_check::check_stack(cfg);
    let bad: Vec<String> = results
        .iter()
        .filter(|r| matches!(r.status, Status::Critical | Status::Unknown))
        .map(|r| format!("{}: {}", r.name, r.summary))
        .collect();
    match (bad.is_empty(), even_if_unhealthy) {
        (true, _) => Gate { name: "health", pass: true, reason: format!("{} checks passed", results.len()) },
        (false, true) => Gate {
            name: "health",
            pass: true,
            reason: format!("unhealthy but --even-if-unhealthy: {}", bad.join("; ")),
        },
        (false, false) => Gate {
            name: "health",
            pass: false,
            reason: format!(
                "the stack is unhealthy (a reboot would add a second problem; --even-if-unhealthy to override): {}",
                bad.join("; ")
            ),
        },
    }
}

/// Locks gate: no other daon-ops tool (deploy, backup, restore...) holds a
/// lock in `lock_dir`. Each lock file is probed with a non-blocking flock.
pub fn locks(lock_dir: &Path, own: &Path) -> Gate {
    let mut held = Vec::new();
    if let Ok(rd) = std::fs::read_dir(lock_dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p == own || p.extension().is_none_or(|x| x != "lock") {
                continue;
            }
            let Ok(f) = File::options().read(true).write(true).open(&p) else {
                continue;
            };
            match f.try_lock() {
                Ok(()) => {
                    let _ = f.unlock();
                }
                Err(TryLockError::WouldBlock) => held.push(format!(
                    "{} ({})",
                    p.display(),
                    daon_common::lock::holder(&p).unwrap_or_else(|| "holder unknown".into())
                )),
                Err(TryLockError::Error(_)) => {}
            }
        }
    }
    if held.is_empty() {
        Gate {
            name: "locks",
            pass: true,
            reason: format!("no tool holds a lock in {}", lock_dir.display()),
        }
    } else {
        Gate {
            name: "locks",
            pass: false,
            reason: format!("another tool is working: {}", held.join("; ")),
        }
    }
}

/// Reboot-loop guard: fewer than `max` reboots in the last 24 hours.
pub fn reboot_loop(history: &[crate::HistoryEntry], max: u32, now: DateTime<Utc>) -> Gate {
    let recent = history
        .iter()
        .filter(|h| h.event == "reboot" && now - h.time < chrono::Duration::hours(24))
        .count() as u32;
    if recent >= max {
        Gate {
            name: "reboot-loop",
            pass: false,
            reason: format!(
                "{recent} reboots in the last 24 h (limit {max}): refusing a reboot loop; look at why the last boot did not settle"
            ),
        }
    } else {
        Gate {
            name: "reboot-loop",
            pass: true,
            reason: format!("{recent} reboot(s) in the last 24 h (limit {max})"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::HistoryEntry;

    fn entry(hours_ago: i64) -> HistoryEntry {
        HistoryEntry {
            event: "reboot".into(),
            time: Utc::now() - chrono::Duration::hours(hours_ago),
            detail: String::new(),
        }
    }

    #[test]
    fn third_reboot_in_a_day_is_refused() {
        let now = Utc::now();
        assert!(reboot_loop(&[entry(30), entry(2)], 2, now).pass);
        let g = reboot_loop(&[entry(5), entry(2)], 2, now);
        assert!(!g.pass && g.reason.contains("2 reboots"), "{g:?}");
    }

    #[test]
    fn a_held_lock_fails_the_locks_gate_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let own = dir.path().join("reboot-guard.lock");
        assert!(locks(dir.path(), &own).pass);
        let g = daon_common::lock::acquire(
            &dir.path().join("deploy.lock"),
            Duration::ZERO,
            "daon-rolling-deploy v2",
        )
        .unwrap();
        let gate = locks(dir.path(), &own);
        assert!(
            !gate.pass
                && gate.reason.contains("deploy.lock")
                && gate.reason.contains("daon-rolling-deploy v2"),
            "{gate:?}"
        );
        drop(g);
        assert!(locks(dir.path(), &own).pass);
    }
}
