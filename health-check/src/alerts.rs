//! Alert state across cron runs (`--alert`): a check alerts after
//! `failure_threshold` failed runs, reminds at most every `reminder_interval`,
//! sends RESOLVED after `success_threshold` good runs, reports flapping once
//! instead of on every flip, and is muted in maintenance windows. All new
//! events of a run go out as one message.

use crate::check::{CheckResult, Status};
use chrono::{DateTime, Utc};
use daon_common::config::AlertsConfig;
use daon_common::notify::Message;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Per-check memory between runs.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct AlertState {
    /// When the current failure streak began.
    pub failing_since: Option<DateTime<Utc>>,
    /// Failed runs in a row.
    pub consecutive_failures: u32,
    /// Good runs in a row.
    pub consecutive_successes: u32,
    /// An alert was sent and not yet resolved.
    pub alerting: bool,
    /// Last alert or reminder.
    pub last_notified: Option<DateTime<Utc>>,
    /// Recent runs, oldest first: true = failed.
    pub history: Vec<bool>,
    /// A flapping notice was sent and the check still flaps.
    pub flapping: bool,
}

/// What happened to a check in this run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Newly failing past the threshold.
    Alert,
    /// Still failing, reminder due.
    Reminder,
    /// OK again after an alert.
    Resolved,
    /// Changing state too often.
    Flapping,
}

/// One alert event.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// Check name.
    pub check: String,
    /// Event kind.
    pub kind: Kind,
    /// Current status.
    pub status: Status,
    /// Current summary.
    pub summary: String,
    /// Start of the failure streak.
    pub since: Option<DateTime<Utc>>,
}

/// Updates `states` with this run's results and returns the events to send.
/// When `muted`, no new alert, reminder or flapping notice is produced (and
/// none is marked as sent, so it goes out after the window); RESOLVED still is.
pub fn evaluate(
    results: &[CheckResult],
    states: &mut BTreeMap<String, AlertState>,
    cfg: &AlertsConfig,
    now: DateTime<Utc>,
    muted: bool,
) -> Vec<Event> {
    let mut events = Vec::new();
    for r in results {
        let failed = r.status != Status::Ok;
        let a = states.entry(r.name.clone()).or_default();
        a.history.push(failed);
        let keep = cfg.flap_window as usize;
        if a.history.len() > keep {
            a.history.drain(..a.history.len() - keep);
        }
        if failed {
            a.consecutive_failures += 1;
            a.consecutive_successes = 0;
            a.failing_since.get_or_insert(now);
        } else {
            a.consecutive_successes += 1;
            a.consecutive_failures = 0;
        }
        let event = |kind| Event {
            check: r.name.clone(),
            kind,
            status: r.status,
            summary: r.summary.clone(),
            since: a.failing_since,
        };
        let changes = a.history.windows(2).filter(|w| w[0] != w[1]).count() as u32;
        if changes >= cfg.flap_changes {
            if !a.flapping && !muted {
                a.flapping = true;
                events.push(event(Kind::Flapping));
            }
            continue;
        }
        a.flapping = false;
        if failed {
            let due = a
                .last_notified
                .is_none_or(|t| (now - t).to_std().unwrap_or_default() >= cfg.reminder_interval);
            if !a.alerting && a.consecutive_failures >= cfg.failure_threshold && !muted {
                a.alerting = true;
                a.last_notified = Some(now);
                events.push(event(Kind::Alert));
            } else if a.alerting && due && !muted {
                a.last_notified = Some(now);
                events.push(event(Kind::Reminder));
            }
        } else if a.consecutive_successes >= cfg.success_threshold {
            if a.alerting {
                events.push(event(Kind::Resolved));
                a.alerting = false;
                a.last_notified = None;
            }
            a.failing_since = None;
        }
    }
    events
}

fn next_step(check: &str) -> &'static str {
    match check.split(':').next().unwrap_or("") {
        "containers" => "docker ps -a; docker logs --tail 50 <container>; daon-health-check --check containers",
        "chain" => "docker logs --tail 50 daon-blockchain; docker exec daon-blockchain daond status; daon-health-check --check chain",
        "http" => "curl -sv <url>; docker ps; daon-health-check --check http",
        "disk" => "df -h; du -xh / 2>/dev/null | sort -h | tail -20; docker system df",
        _ => "daon-health-check",
    }
}

fn when(t: Option<DateTime<Utc>>) -> String {
    t.map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| "unknown".into())
}

fn ago(since: Option<DateTime<Utc>>, now: DateTime<Utc>) -> String {
    let Some(s) = since else { return String::new() };
    let secs = (now - s).num_seconds().max(0) as u64;
    humantime::format_duration(std::time::Duration::from_secs(secs)).to_string()
}

/// One message for all of a run's events.
pub fn message(events: &[Event], host: &str, now: DateTime<Utc>) -> Message {
    let count = |k: Kind| events.iter().filter(|e| e.kind == k).count();
    let (new, rem, res, flap) = (
        count(Kind::Alert),
        count(Kind::Reminder),
        count(Kind::Resolved),
        count(Kind::Flapping),
    );
    let mut parts = Vec::new();
    if new > 0 {
        parts.push(format!("{new} new problem(s)"));
    }
    if rem > 0 {
        parts.push(format!("{rem} still failing"));
    }
    if res > 0 {
        parts.push(format!("{res} resolved"));
    }
    if flap > 0 {
        parts.push(format!("{flap} flapping"));
    }
    let lead = if new > 0 {
        "ALERT"
    } else if rem > 0 {
        "REMINDER"
    } else if flap > 0 {
        "FLAPPING"
    } else {
        "RESOLVED"
    };
    let first = events
        .iter()
        .find(|e| e.kind != Kind::Resolved)
        .or(events.first())
        .map(|e| {
            format!(
                " — {}: {}",
                e.check,
                e.summary.chars().take(80).collect::<String>()
            )
        })
        .unwrap_or_default();
    let subject = format!("[DAON {host}] {lead}: {}{first}", parts.join(", "));
    let mut body = format!(
        "daon-health-check on {host} at {}\n",
        now.format("%Y-%m-%d %H:%M:%S UTC")
    );
    let section = |body: &mut String, title: &str, kind: Kind| {
        let list: Vec<&Event> = events.iter().filter(|e| e.kind == kind).collect();
        if list.is_empty() {
            return;
        }
        body.push_str(&format!("\n{title}\n"));
        for e in list {
            match kind {
                Kind::Resolved => body.push_str(&format!(
                    "  {}: OK again after {} (failing since {})\n",
                    e.check,
                    ago(e.since, now),
                    when(e.since)
                )),
                Kind::Flapping => body.push_str(&format!(
                    "  {}: changes state too often ({} now: {}); alerts for it pause until it settles\n",
                    e.check,
                    e.status.word(),
                    e.summary
                )),
                _ => body.push_str(&format!(
                    "  {} {}: {}\n    failing since {} ({})\n    next: {}\n",
                    e.status.word(),
                    e.check,
                    e.summary,
                    when(e.since),
                    ago(e.since, now),
                    next_step(&e.check)
                )),
            }
        }
    };
    section(&mut body, "NEW PROBLEMS", Kind::Alert);
    section(&mut body, "STILL FAILING (reminder)", Kind::Reminder);
    section(&mut body, "FLAPPING", Kind::Flapping);
    section(&mut body, "RESOLVED", Kind::Resolved);
    let event = match lead {
        "ALERT" => "alert",
        "REMINDER" => "reminder",
        "FLAPPING" => "flapping",
        _ => "resolved",
    };
    Message {
        tool: "daon-health-check".into(),
        event: event.into(),
        subject,
        body,
        fields: serde_json::json!({ "host": host, "events": events }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Duration;

    fn run(
        states: &mut BTreeMap<String, AlertState>,
        cfg: &AlertsConfig,
        t: DateTime<Utc>,
        ok: bool,
    ) -> Vec<Kind> {
        let r = CheckResult::single(
            "containers",
            if ok { Status::Ok } else { Status::Critical },
            "x",
        );
        evaluate(&[r], states, cfg, t, false)
            .into_iter()
            .map(|e| e.kind)
            .collect()
    }

    #[test]
    fn twelve_runs_down_for_3_to_8_alert_once_remind_and_resolve_once() {
        let cfg = AlertsConfig {
            reminder_interval: std::time::Duration::from_secs(600),
            ..AlertsConfig::default()
        };
        let mut st = BTreeMap::new();
        let t0 = Utc::now();
        let mut all = Vec::new();
        for i in 1..=12 {
            // Cron every 5 minutes.
            let t = t0 + Duration::minutes(5 * i);
            let down = (3..=8).contains(&i);
            for k in run(&mut st, &cfg, t, !down) {
                all.push((i, k));
            }
        }
        // Alert at run 4 (threshold 2), reminders every 10 min (runs 6, 8),
        // resolved at run 9.
        assert_eq!(
            all,
            vec![
                (4, Kind::Alert),
                (6, Kind::Reminder),
                (8, Kind::Reminder),
                (9, Kind::Resolved)
            ]
        );
    }

    #[test]
    fn flapping_is_reported_once() {
        let cfg = AlertsConfig::default();
        let mut st = BTreeMap::new();
        let t0 = Utc::now();
        let mut kinds = Vec::new();
        for i in 0..12 {
            kinds.extend(run(
                &mut st,
                &cfg,
                t0 + Duration::minutes(5 * i),
                i % 2 == 0,
            ));
        }
        assert_eq!(kinds, vec![Kind::Flapping]);
    }

    #[test]
    fn muted_runs_send_nothing_new_but_alert_after_the_window() {
        let cfg = AlertsConfig::default();
        let mut st = BTreeMap::new();
        let t0 = Utc::now();
        let r = CheckResult::single("disk", Status::Warning, "full");
        assert!(evaluate(std::slice::from_ref(&r), &mut st, &cfg, t0, true).is_empty());
        assert!(evaluate(std::slice::from_ref(&r), &mut st, &cfg, t0, true).is_empty());
        let e = evaluate(&[r], &mut st, &cfg, t0, false);
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].kind, Kind::Alert);
    }

    #[test]
    fn message_says_what_since_when_and_what_next() {
        let now = Utc::now();
        let e = Event {
            check: "containers".into(),
            kind: Kind::Alert,
            status: Status::Critical,
            summary: "daon-api-2 is exited".into(),
            since: Some(now - Duration::minutes(10)),
        };
        let m = message(&[e], "vm", now);
        assert!(
            m.subject.contains("ALERT") && m.subject.contains("daon-api-2 is exited"),
            "{}",
            m.subject
        );
        assert!(
            m.body.contains("failing since") && m.body.contains("10m"),
            "{}",
            m.body
        );
        assert!(m.body.contains("docker logs"), "{}", m.body);
        assert_eq!(m.event, "alert");
    }
}
