//! What a deploy leaves on disk: a journal while it runs (so the next run can
//! tell what a killed one left behind: which instances it had replaced, which
//! one was drained, the Caddy config to put back) and one JSON Lines record
//! per finished run in the history file. With several hosts (`--host`) each
//! host has its own journal file and every history record names its host.

use daon_common::{atomic, Error};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Timings and outcome of one instance in a run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct InstanceRecord {
    /// Container (and Compose service) name.
    pub container: String,
    /// Image it ran before.
    pub from: String,
    /// Image it was moved to.
    pub to: String,
    /// `replaced`, `skipped` (already on the target), `failed`, `rolled-back`.
    pub outcome: String,
    /// Waiting for in-flight requests, ms.
    pub drain_ms: u64,
    /// Requests in flight when the drain began.
    pub in_flight: u64,
    /// `compose up --force-recreate`, ms.
    pub recreate_ms: u64,
    /// From the recreate until Docker said `healthy`, ms.
    pub healthy_ms: u64,
    /// Watch window, ms.
    pub monitor_ms: u64,
}

/// The journal of a run in progress (`rolling-deploy.journal.json`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Journal {
    /// `deploy` or `rollback`.
    pub kind: String,
    /// Process id of the run.
    pub pid: u32,
    /// `user@host`.
    pub who: String,
    /// RFC 3339.
    pub started: String,
    /// Target image (`daon-api:1.2.3`).
    pub image: String,
    /// The rollback point (`daon-api:1.2.2`).
    pub previous: String,
    /// Image id of the rollback point.
    pub previous_id: String,
    /// What it was doing last (`drain daon-api-2`, `recreate daon-api-2`...).
    pub phase: String,
    /// Instances moved to the target so far.
    pub updated: Vec<String>,
    /// Instance currently out of the load balancer, if any.
    pub drained: Option<String>,
    /// Caddy's config before the run (restored after each instance).
    pub caddy_config: Option<Value>,
    /// Set when the run stopped on SIGINT/SIGTERM after making every instance serve.
    pub interrupted: bool,
    /// The `--host` this run is on; empty: the one Docker host of a run without `--host`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub host: String,
}

/// A file-name-safe, collision-free form of a host key: the safe characters
/// (at most 40) and a hash of the whole key.
pub fn host_slug(host: &str) -> String {
    // FNV-1a, 64 bits: stable across builds and platforms.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in host.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let safe: String = host
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(40)
        .collect();
    format!("{safe}-{:08x}", h as u32)
}

impl Journal {
    /// Path of the journal in `state_dir` for `host` ("" without `--host`).
    pub fn path(state_dir: &Path, host: &str) -> PathBuf {
        if host.is_empty() {
            state_dir.join("rolling-deploy.journal.json")
        } else {
            state_dir.join(format!("rolling-deploy.journal.{}.json", host_slug(host)))
        }
    }

    /// Reads a journal an earlier run on `host` left, if any.
    pub fn load(state_dir: &Path, host: &str) -> Option<Journal> {
        let text = std::fs::read_to_string(Self::path(state_dir, host)).ok()?;
        serde_json::from_str::<Journal>(&text)
            .ok()
            .filter(|j| j.host == host)
    }

    /// Writes it atomically (to the file of its host).
    pub fn save(&self, state_dir: &Path) -> Result<(), Error> {
        std::fs::create_dir_all(state_dir)
            .map_err(|e| Error::io("creating state directory", state_dir, e))?;
        let bytes = serde_json::to_vec_pretty(self)
            .map_err(|e| Error::Internal(format!("journal to JSON: {e}")))?;
        atomic::write(&Self::path(state_dir, &self.host), &bytes, 0o600)
    }

    /// Removes the journal of `host` (the run finished, whatever the outcome).
    pub fn remove(state_dir: &Path, host: &str) -> Result<(), Error> {
        let p = Self::path(state_dir, host);
        match std::fs::remove_file(&p) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io("removing", p, e)),
        }
    }

    /// One paragraph for people: what the earlier run left.
    pub fn describe(&self) -> String {
        let how = if self.interrupted {
            "was interrupted (SIGINT/SIGTERM) after putting every instance back in service"
        } else {
            "did not finish (killed or crashed)"
        };
        format!(
            "the previous {} of {}{} (pid {}, by {}, started {}) {how}; last step: {}; instances already on {}: {}; drained: {}",
            self.kind,
            self.image,
            if self.host.is_empty() {
                String::new()
            } else {
                format!(" on host {}", self.host)
            },
            self.pid,
            self.who,
            self.started,
            if self.phase.is_empty() { "none" } else { &self.phase },
            self.image,
            if self.updated.is_empty() {
                "none".to_string()
            } else {
                self.updated.join(", ")
            },
            self.drained.as_deref().unwrap_or("none"),
        )
    }
}

/// One finished run, as appended to the history.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// `deploy` or `rollback`.
    pub kind: String,
    /// Tag deployed (`1.2.3`).
    pub version: String,
    /// Image deployed.
    pub image: String,
    /// Rollback point.
    pub previous: String,
    /// `user@host`.
    pub who: String,
    /// RFC 3339.
    pub start: String,
    /// RFC 3339.
    pub end: String,
    /// Seconds.
    pub duration_s: f64,
    /// `ok`, `rolled-back`, `failed` (rollback incomplete), `interrupted`.
    pub outcome: String,
    /// Why it failed, if it did.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub error: String,
    /// Per-instance timings.
    pub instances: Vec<InstanceRecord>,
    /// Instances moved back to the rollback point.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rolled_back: Vec<InstanceRecord>,
    /// The `--host` it ran on; empty: a run without `--host`.
    #[serde(default)]
    pub host: String,
    /// Shared by the per-host records of one multi-host run.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub run_id: String,
    /// Why this run happened, when another did not ask for it (a rollback
    /// because a later host of the same multi-host run failed).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cause: String,
}

/// Path of the history file.
pub fn history_path(state_dir: &Path) -> PathBuf {
    state_dir.join("rolling-deploy.history.jsonl")
}

/// Appends one record (one line, fsynced).
pub fn append_history(state_dir: &Path, e: &HistoryEntry) -> Result<(), Error> {
    std::fs::create_dir_all(state_dir)
        .map_err(|e| Error::io("creating state directory", state_dir, e))?;
    let p = history_path(state_dir);
    let mut line =
        serde_json::to_vec(e).map_err(|e| Error::Internal(format!("history to JSON: {e}")))?;
    line.push(b'\n');
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&p)
        .map_err(|e| Error::io("opening history", &p, e))?;
    f.write_all(&line)
        .and_then(|_| f.sync_data())
        .map_err(|e| Error::io("appending to history", &p, e))
}

/// Every record, oldest first; unreadable lines are skipped.
pub fn read_history(state_dir: &Path) -> Result<Vec<HistoryEntry>, Error> {
    let p = history_path(state_dir);
    match std::fs::read_to_string(&p) {
        Ok(t) => Ok(t
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(Error::io("reading history", p, e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_round_trips_and_history_appends() {
        let d = tempfile::tempdir().unwrap();
        assert!(Journal::load(d.path(), "").is_none());
        let j = Journal {
            kind: "deploy".into(),
            image: "daon-api:v2".into(),
            updated: vec!["daon-api-1".into()],
            drained: Some("daon-api-2".into()),
            ..Journal::default()
        };
        j.save(d.path()).unwrap();
        let back = Journal::load(d.path(), "").unwrap();
        assert_eq!(back.updated, vec!["daon-api-1"]);
        assert!(back.describe().contains("drained: daon-api-2"));
        Journal::remove(d.path(), "").unwrap();
        assert!(Journal::load(d.path(), "").is_none());
        for v in ["v1", "v2"] {
            append_history(
                d.path(),
                &HistoryEntry {
                    version: v.into(),
                    ..HistoryEntry::default()
                },
            )
            .unwrap();
        }
        let h = read_history(d.path()).unwrap();
        assert_eq!(h.len(), 2);
        assert_eq!(h[1].version, "v2");
        assert_eq!(h[1].host, "", "records without a host read back as such");
    }

    #[test]
    fn each_host_has_its_own_journal() {
        let d = tempfile::tempdir().unwrap();
        for (host, image) in [("", "a:1"), ("dc2", "a:2"), ("ssh://deploy@dc3", "a:3")] {
            Journal {
                image: image.into(),
                host: host.into(),
                ..Journal::default()
            }
            .save(d.path())
            .unwrap();
        }
        assert!(Journal::path(d.path(), "").ends_with("rolling-deploy.journal.json"));
        assert_ne!(
            Journal::path(d.path(), "dc2"),
            Journal::path(d.path(), "dc_2")
        );
        assert_ne!(host_slug("a/b"), host_slug("a:b"));
        assert!(!host_slug("ssh://deploy@dc3").contains('/'));
        assert_eq!(Journal::load(d.path(), "").unwrap().image, "a:1");
        assert_eq!(Journal::load(d.path(), "dc2").unwrap().image, "a:2");
        let j = Journal::load(d.path(), "ssh://deploy@dc3").unwrap();
        assert!(
            j.describe().contains("on host ssh://deploy@dc3"),
            "{}",
            j.describe()
        );
        assert!(Journal::load(d.path(), "dc4").is_none());
        Journal::remove(d.path(), "dc2").unwrap();
        assert!(Journal::load(d.path(), "dc2").is_none());
        assert!(Journal::load(d.path(), "").is_some());
    }
}
