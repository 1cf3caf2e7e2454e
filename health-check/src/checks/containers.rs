//! Containers check: every configured container exists and runs, none is
//! `unhealthy` (compared exactly — the runbook's grep took "unhealthy" for
//! "healthy"), and a restart count that rose since the last run is a crash
//! loop worth a warning.

use crate::check::{CheckResult, Item, Perf, Status};
use crate::state::State;
use daon_common::docker::{Docker, Health};
use daon_common::Config;
use std::sync::{Arc, Mutex};

/// Runs the containers check and records restart counts in `state`.
pub fn run(cfg: &Config, docker: &Docker, state: &Arc<Mutex<State>>) -> CheckResult {
    let wanted = cfg.all_containers();
    let names: Vec<String> = wanted.iter().map(|(_, c, _)| c.clone()).collect();
    let inspected = match docker.inspect(&names) {
        Ok(i) => i,
        Err(e) => {
            return CheckResult::single("containers", Status::Critical, e.to_string());
        }
    };
    let previous = state.lock().map(|s| s.restarts.clone()).unwrap_or_default();
    let mut items = Vec::new();
    let mut restarts = std::collections::BTreeMap::new();
    let (mut running, mut unhealthy) = (0u32, 0u32);
    for (role, name, required) in &wanted {
        let Some(c) = inspected.found.iter().find(|c| &c.name == name) else {
            items.push(Item {
                name: name.clone(),
                status: if *required {
                    Status::Critical
                } else {
                    Status::Warning
                },
                message: format!("{name} ({role}) does not exist"),
            });
            continue;
        };
        restarts.insert(name.clone(), c.restart_count);
        let mut status = Status::Ok;
        let mut message = format!("{name} running, {}", c.health.as_str());
        if c.is_running() {
            running += 1;
            match &c.health {
                Health::Unhealthy => {
                    unhealthy += 1;
                    status = Status::Critical;
                    message = format!("{name} is unhealthy{}", log_suffix(&c.health_log));
                }
                Health::Starting => {
                    status = Status::Warning;
                    message = format!("{name} health check is still starting");
                }
                Health::Other(s) => {
                    status = Status::Unknown;
                    message = format!("{name} has unknown health status {s:?}");
                }
                Health::Healthy | Health::None => {}
            }
        } else {
            status = if *required {
                Status::Critical
            } else {
                Status::Warning
            };
            message = format!("{name} is {} (exit code {})", c.state, c.exit_code);
        }
        if let Some(prev) = previous.get(name) {
            if c.restart_count > *prev {
                status = status.worst(Status::Warning);
                message.push_str(&format!(
                    "; restarted {} time(s) since the last run (crash loop?)",
                    c.restart_count - prev
                ));
            }
        }
        items.push(Item {
            name: name.clone(),
            status,
            message,
        });
    }
    if let Ok(mut s) = state.lock() {
        s.restarts = restarts;
    }
    let total = wanted.len();
    CheckResult::from_items(
        "containers",
        items,
        format!("all {total} containers running, none unhealthy"),
    )
    .with_perf(vec![
        Perf::new("containers_running", running as f64, "").bounds(Some(0.0), Some(total as f64)),
        Perf::new("containers_unhealthy", unhealthy as f64, "").thresholds(None, Some(0.0)),
    ])
}

fn log_suffix(log: &str) -> String {
    let line = log.lines().last().unwrap_or("").trim();
    if line.is_empty() {
        String::new()
    } else {
        format!(
            " (health check said: {})",
            line.chars().take(160).collect::<String>()
        )
    }
}
