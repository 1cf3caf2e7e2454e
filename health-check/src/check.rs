//! The check model: a status with Nagios meaning, a one-line summary, items
//! (one per container or mount) and perfdata, plus the runner that executes
//! checks concurrently and never lets one that hangs hold the run past its
//! own timeout.

use serde::Serialize;
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A check's outcome, with the Nagios plugin exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// 0
    Ok,
    /// 1
    Warning,
    /// 2
    Critical,
    /// 3
    Unknown,
}

impl Status {
    /// Nagios exit code.
    pub fn code(self) -> u8 {
        match self {
            Status::Ok => 0,
            Status::Warning => 1,
            Status::Critical => 2,
            Status::Unknown => 3,
        }
    }

    /// Upper-case word used in Nagios output and the table.
    pub fn word(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::Warning => "WARNING",
            Status::Critical => "CRITICAL",
            Status::Unknown => "UNKNOWN",
        }
    }

    fn rank(self) -> u8 {
        match self {
            Status::Ok => 0,
            Status::Unknown => 1,
            Status::Warning => 2,
            Status::Critical => 3,
        }
    }

    /// The worse of two: CRITICAL > WARNING > UNKNOWN > OK.
    pub fn worst(self, other: Status) -> Status {
        if other.rank() > self.rank() {
            other
        } else {
            self
        }
    }
}

/// One perfdata value (`'label'=value[uom];warn;crit;min;max`).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Perf {
    /// Label, unique within the run.
    pub label: String,
    /// Value.
    pub value: f64,
    /// Unit: "", "s", "%", "B" or "c".
    pub uom: &'static str,
    /// Warning threshold.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warn: Option<f64>,
    /// Critical threshold.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub crit: Option<f64>,
    /// Minimum possible value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// Maximum possible value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// True when the thresholds are minimums (alert when the value is
    /// *below* them, Nagios range `N:`), as for peers or certificate days.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub alert_below: bool,
}

impl Perf {
    /// A value with only a unit.
    pub fn new(label: impl Into<String>, value: f64, uom: &'static str) -> Perf {
        Perf {
            label: label.into(),
            value,
            uom,
            warn: None,
            crit: None,
            min: None,
            max: None,
            alert_below: false,
        }
    }
    /// Adds thresholds.
    pub fn thresholds(mut self, warn: Option<f64>, crit: Option<f64>) -> Perf {
        self.warn = warn;
        self.crit = crit;
        self
    }
    /// Adds thresholds that are minimums (alert below them).
    pub fn minimums(mut self, warn: Option<f64>, crit: Option<f64>) -> Perf {
        self.warn = warn;
        self.crit = crit;
        self.alert_below = true;
        self
    }
    /// Adds bounds.
    pub fn bounds(mut self, min: Option<f64>, max: Option<f64>) -> Perf {
        self.min = min;
        self.max = max;
        self
    }
}

/// One finding inside a check (a container, a mount, a chain property).
#[derive(Debug, Clone, Serialize)]
pub struct Item {
    /// What it is about (`daon-api-2`, `/`).
    pub name: String,
    /// Its status.
    pub status: Status,
    /// What was seen.
    pub message: String,
}

/// The result of one check.
#[derive(Debug, Clone, Serialize)]
pub struct CheckResult {
    /// Check name (`http:api`, `chain`, `containers`, `disk`).
    pub name: String,
    /// Worst status of its items.
    pub status: Status,
    /// One line for people.
    pub summary: String,
    /// Details.
    pub items: Vec<Item>,
    /// Perfdata.
    pub perfdata: Vec<Perf>,
    /// Wall time the check took.
    #[serde(serialize_with = "ser_ms", rename = "duration_ms")]
    pub duration: Duration,
}

fn ser_ms<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_millis() as u64)
}

impl CheckResult {
    /// Builds a result from items: the status is the worst item's, and the
    /// summary lists the non-OK items (or `ok_summary` when all are OK).
    pub fn from_items(name: &str, items: Vec<Item>, ok_summary: String) -> CheckResult {
        let status = items.iter().fold(Status::Ok, |s, i| s.worst(i.status));
        let bad: Vec<String> = items
            .iter()
            .filter(|i| i.status != Status::Ok)
            .map(|i| i.message.clone())
            .collect();
        let summary = if bad.is_empty() {
            ok_summary
        } else {
            bad.join("; ")
        };
        CheckResult {
            name: name.to_string(),
            status,
            summary,
            items,
            perfdata: Vec::new(),
            duration: Duration::ZERO,
        }
    }

    /// A single-item result.
    pub fn single(name: &str, status: Status, message: impl Into<String>) -> CheckResult {
        let message = message.into();
        CheckResult::from_items(
            name,
            vec![Item {
                name: name.to_string(),
                status,
                message: message.clone(),
            }],
            message,
        )
    }

    /// Attaches perfdata.
    pub fn with_perf(mut self, perf: Vec<Perf>) -> CheckResult {
        self.perfdata = perf;
        self
    }
}

/// A check ready to run: its name, its deadline, and the work.
pub struct Job {
    /// Check name.
    pub name: String,
    /// Deadline for the whole check.
    pub timeout: Duration,
    /// The work; returns the result.
    pub run: Box<dyn FnOnce() -> CheckResult + Send>,
}

/// Runs all jobs at once, each on its own thread. A job still running at its
/// deadline is reported CRITICAL and abandoned (its thread dies with the
/// process). Results come back in the jobs' order.
pub fn run_all(jobs: Vec<Job>) -> Vec<CheckResult> {
    let start = Instant::now();
    let (tx, rx) = mpsc::channel::<(usize, CheckResult)>();
    let mut meta = Vec::new();
    for (i, job) in jobs.into_iter().enumerate() {
        meta.push((job.name.clone(), job.timeout));
        let thread_tx = tx.clone();
        let work = job.run;
        let spawned = std::thread::Builder::new()
            .name(format!("check-{}", job.name))
            .spawn(move || {
                let t = Instant::now();
                let mut r = work();
                r.duration = t.elapsed();
                let _ = thread_tx.send((i, r));
            });
        if let Err(e) = spawned {
            let _ = tx.send((
                i,
                CheckResult::single(&job.name, Status::Unknown, format!("could not start: {e}")),
            ));
        }
    }
    drop(tx);
    let mut results: Vec<Option<CheckResult>> = vec![None; meta.len()];
    loop {
        let pending: Vec<usize> = (0..meta.len()).filter(|&i| results[i].is_none()).collect();
        if pending.is_empty() {
            break;
        }
        let now = start.elapsed();
        // Expire every job past its deadline.
        for &i in &pending {
            if now >= meta[i].1 {
                let (name, timeout) = &meta[i];
                let mut r = CheckResult::single(
                    name,
                    Status::Critical,
                    format!(
                        "{name} did not finish within {} (timed out)",
                        humantime::format_duration(*timeout)
                    ),
                );
                r.duration = now;
                results[i] = Some(r);
            }
        }
        let Some(next_deadline) = (0..meta.len())
            .filter(|&i| results[i].is_none())
            .map(|i| meta[i].1)
            .min()
        else {
            break;
        };
        match rx.recv_timeout(next_deadline.saturating_sub(start.elapsed())) {
            Ok((i, r)) => {
                if results[i].is_none() {
                    results[i] = Some(r);
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    results
        .into_iter()
        .zip(meta)
        .map(|(r, (name, _))| {
            r.unwrap_or_else(|| CheckResult::single(&name, Status::Unknown, "the check vanished"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(name: &str, sleep_ms: u64, timeout_ms: u64, status: Status) -> Job {
        let n = name.to_string();
        Job {
            name: name.into(),
            timeout: Duration::from_millis(timeout_ms),
            run: Box::new(move || {
                std::thread::sleep(Duration::from_millis(sleep_ms));
                CheckResult::single(&n, status, "done")
            }),
        }
    }

    #[test]
    fn worst_orders_critical_warning_unknown_ok() {
        assert_eq!(Status::Ok.worst(Status::Warning), Status::Warning);
        assert_eq!(Status::Critical.worst(Status::Warning), Status::Critical);
        assert_eq!(Status::Unknown.worst(Status::Warning), Status::Warning);
        assert_eq!(Status::Ok.worst(Status::Unknown), Status::Unknown);
    }

    #[test]
    fn a_hanging_check_is_critical_at_its_deadline_and_others_still_report() {
        let start = Instant::now();
        let r = run_all(vec![
            job("slow", 30_000, 300, Status::Ok),
            job("fast", 10, 5_000, Status::Ok),
            job("warn", 50, 5_000, Status::Warning),
        ]);
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "{:?}",
            start.elapsed()
        );
        assert_eq!(r[0].name, "slow");
        assert_eq!(r[0].status, Status::Critical);
        assert!(r[0].summary.contains("timed out"));
        assert_eq!(r[1].status, Status::Ok);
        assert_eq!(r[2].status, Status::Warning);
    }

    #[test]
    fn summary_lists_only_the_bad_items() {
        let r = CheckResult::from_items(
            "containers",
            vec![
                Item {
                    name: "a".into(),
                    status: Status::Ok,
                    message: "a ok".into(),
                },
                Item {
                    name: "b".into(),
                    status: Status::Critical,
                    message: "b is exited".into(),
                },
            ],
            "all fine".into(),
        );
        assert_eq!(r.status, Status::Critical);
        assert_eq!(r.summary, "b is exited");
    }
}
