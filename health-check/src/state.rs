//! What the health check remembers between cron runs (a small JSON file,
//! replaced atomically): the chain height and since when it has not moved,
//! and each container's restart count, so "stalled" and "crash loop" can be
//! told from one look.

use chrono::{DateTime, Utc};
use daon_common::{atomic, Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// The state file's content.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct State {
    /// Format version.
    #[serde(default)]
    pub version: u32,
    /// Last chain observation.
    #[serde(default)]
    pub chain: Option<ChainState>,
    /// Restart count per container at the last run.
    #[serde(default)]
    pub restarts: BTreeMap<String, u64>,
    /// Alert state per check (`--alert`).
    #[serde(default)]
    pub alerts: BTreeMap<String, crate::alerts::AlertState>,
}

/// The chain as last seen.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ChainState {
    /// Chain id it was seen on (a reset chain starts over).
    pub network: String,
    /// Height.
    pub height: u64,
    /// When this height was first seen.
    pub since: DateTime<Utc>,
}

impl State {
    /// Reads the file; a missing file is an empty state, and an unreadable or
    /// corrupt one is reported and replaced (health must not depend on it).
    pub fn load(path: &Path) -> (State, Option<String>) {
        match std::fs::read(path) {
            Ok(bytes) => match serde_json::from_slice(&bytes) {
                Ok(s) => (s, None),
                Err(e) => (
                    State::default(),
                    Some(format!(
                        "ignoring corrupt state file {}: {e}",
                        path.display()
                    )),
                ),
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (State::default(), None),
            Err(e) => (
                State::default(),
                Some(format!("cannot read state file {}: {e}", path.display())),
            ),
        }
    }

    /// Writes the file atomically (mode 0644).
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut s = self.clone();
        s.version = 1;
        let json = serde_json::to_vec_pretty(&s)
            .map_err(|e| Error::Internal(format!("serializing state: {e}")))?;
        atomic::write(path, &json, 0o644)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_corrupt_file_is_ignored_with_a_note() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.json");
        let (s, note) = State::load(&p);
        assert_eq!(s, State::default());
        assert!(note.is_none());
        let mut s = State::default();
        s.restarts.insert("daon-api-1".into(), 2);
        s.save(&p).unwrap();
        let (back, _) = State::load(&p);
        assert_eq!(back.restarts["daon-api-1"], 2);
        std::fs::write(&p, b"{not json").unwrap();
        let (s, note) = State::load(&p);
        assert_eq!(s, State::default());
        assert!(note.unwrap().contains("corrupt"));
    }
}
