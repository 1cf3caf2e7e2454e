//! The backup-set format shared by daon-backup and daon-restore: a folder
//! `<backup_dir>/<UTC timestamp>[-<tag>]/` with the artifacts and a
//! `manifest.json` written last. A folder is a complete set only if its
//! manifest parses: sets are built under a dot-name (`.partial-…`) and renamed
//! into place after everything is fsynced, so a killed run never looks
//! complete. The runbooks' own layout (no manifest) is recognised too, as
//! unverifiable.

use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use daon_common::config::Compression;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Name of the manifest file inside a set.
pub const MANIFEST: &str = "manifest.json";
/// `format` value of our manifests.
pub const FORMAT: &str = "daon-backup-set";
/// Current manifest format version.
pub const FORMAT_VERSION: u32 = 1;
/// Prefix of sets being written (ignored by list/verify/restore/prune).
pub const PARTIAL_PREFIX: &str = ".partial-";
/// Lock file name (in `paths.lock_dir`) shared by backup and restore.
pub const LOCK_FILE: &str = "daon-backup.lock";

/// What an artifact holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A plain-SQL `pg_dump`.
    Database,
    /// A tar of the chain data directory.
    Chain,
    /// A tar of the compose files and `.env`.
    Config,
}

impl Kind {
    /// All kinds, in restore order.
    pub const ALL: [Kind; 3] = [Kind::Config, Kind::Database, Kind::Chain];

    /// The name used on the command line (`db`, `chain`, `config`).
    pub fn flag(self) -> &'static str {
        match self {
            Kind::Database => "db",
            Kind::Chain => "chain",
            Kind::Config => "config",
        }
    }

    /// Parses a `--only` word.
    pub fn parse(s: &str) -> Option<Kind> {
        match s {
            "db" | "database" | "postgres" => Some(Kind::Database),
            "chain" | "blockchain" => Some(Kind::Chain),
            "config" => Some(Kind::Config),
            _ => None,
        }
    }

    /// True for tar archives.
    pub fn is_tar(self) -> bool {
        self != Kind::Database
    }
}

/// One file of a set, as the manifest records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Artifact {
    /// What it holds.
    pub kind: Kind,
    /// File name inside the set.
    pub file: String,
    /// Where the data came from (command or path).
    pub source: String,
    /// Size of the file in bytes.
    pub size: u64,
    /// SHA-256 of the file, hex.
    pub sha256: String,
    /// `zstd` or `gzip`.
    pub compression: Compression,
    /// Bytes before compression.
    pub uncompressed_size: u64,
    /// Tar archives: number of entries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entries: Option<u64>,
    /// Tar archives: number of regular files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub files: Option<u64>,
    /// Tar archives: bytes of regular-file content.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_bytes: Option<u64>,
    /// Database: rows per table (`schema.table`), counted in the dump itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tables: Option<BTreeMap<String, u64>>,
    /// How long it took, milliseconds.
    pub duration_ms: u64,
}

/// The manifest of a set.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Always [`FORMAT`].
    pub format: String,
    /// [`FORMAT_VERSION`] when written.
    pub format_version: u32,
    /// Version of daon-backup that wrote it.
    pub tool_version: String,
    /// The set's folder name.
    pub name: String,
    /// Optional tag (`pre-wipe`...); tagged sets are never pruned by default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// When the backup started.
    pub created: DateTime<Utc>,
    /// When it finished.
    pub finished: DateTime<Utc>,
    /// Host it ran on.
    pub host: String,
    /// Compose project (name or directory).
    pub compose_project: String,
    /// Chain id at backup time (empty if unknown).
    pub chain_id: String,
    /// Chain height at backup time, if the node answered.
    #[serde(default)]
    pub chain_height: Option<u64>,
    /// Image ids of the services' containers.
    #[serde(default)]
    pub images: BTreeMap<String, String>,
    /// The artifacts.
    pub artifacts: Vec<Artifact>,
}

impl Manifest {
    /// The artifact of a kind, if the set has one.
    pub fn artifact(&self, kind: Kind) -> Option<&Artifact> {
        self.artifacts.iter().find(|a| a.kind == kind)
    }
    /// Total size of the artifacts.
    pub fn size(&self) -> u64 {
        self.artifacts.iter().map(|a| a.size).sum()
    }
}

/// What a folder in the backup directory is.
#[derive(Debug, Clone)]
pub enum SetKind {
    /// A set with a readable manifest.
    Complete(Box<Manifest>),
    /// The runbooks' layout (`database.sql.gz`, `blockchain.tar.gz`...): no
    /// manifest, so it cannot be verified.
    Runbook(Vec<String>),
    /// A `manifest.json` that does not parse.
    Broken(String),
}

/// One folder of the backup directory.
#[derive(Debug, Clone)]
pub struct SetInfo {
    /// Folder name.
    pub name: String,
    /// Full path.
    pub path: PathBuf,
    /// When it was made (manifest, else folder name, else mtime).
    pub created: DateTime<Utc>,
    /// What it is.
    pub kind: SetKind,
}

impl SetInfo {
    /// The manifest, for complete sets.
    pub fn manifest(&self) -> Option<&Manifest> {
        match &self.kind {
            SetKind::Complete(m) => Some(m),
            _ => None,
        }
    }
    /// The tag, for complete sets that have one (or runbook `pre-migration-…`).
    pub fn tag(&self) -> Option<&str> {
        match &self.kind {
            SetKind::Complete(m) => m.tag.as_deref(),
            _ => None,
        }
    }
}

/// Runbook artifact names (no manifest).
pub const RUNBOOK_FILES: [&str; 5] = [
    "database.sql.gz",
    "blockchain.tar.gz",
    "blockchain-data.tar.gz",
    "config.tar.gz",
    "env-backup",
];

/// Reads a manifest file.
pub fn read_manifest(dir: &Path) -> Result<Manifest, String> {
    let p = dir.join(MANIFEST);
    let text = std::fs::read(&p).map_err(|e| format!("cannot read {}: {e}", p.display()))?;
    let m: Manifest = serde_json::from_slice(&text)
        .map_err(|e| format!("{} is not a valid manifest: {e}", p.display()))?;
    if m.format != FORMAT {
        return Err(format!(
            "{}: format {:?} is not {FORMAT:?}",
            p.display(),
            m.format
        ));
    }
    if m.format_version > FORMAT_VERSION {
        return Err(format!(
            "{}: format version {} is newer than this tool understands ({FORMAT_VERSION}); upgrade daon-ops",
            p.display(),
            m.format_version
        ));
    }
    Ok(m)
}

fn time_from_name(name: &str) -> Option<DateTime<Utc>> {
    let parse = |len: usize, fmt: &str| {
        name.get(..len)
            .and_then(|s| NaiveDateTime::parse_from_str(s, fmt).ok())
    };
    parse(16, "%Y%m%dT%H%M%SZ")
        .or_else(|| parse(15, "%Y%m%d-%H%M%S"))
        .map(|t| Utc.from_utc_datetime(&t))
}

/// Lists the backup directory: complete sets, runbook sets and broken ones,
/// oldest first. Dot-folders (partial sets being written or left by a killed
/// run) and folders with nothing we know are not listed. A missing directory
/// is an empty list.
pub fn list(dir: &Path) -> std::io::Result<Vec<SetInfo>> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for ent in rd {
        let ent = ent?;
        let name = ent.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || !ent.file_type()?.is_dir() {
            continue;
        }
        let path = ent.path();
        let mtime = ent
            .metadata()
            .and_then(|m| m.modified())
            .map(DateTime::<Utc>::from)
            .unwrap_or_default();
        let kind = if path.join(MANIFEST).exists() {
            match read_manifest(&path) {
                Ok(m) => SetKind::Complete(Box::new(m)),
                Err(e) => SetKind::Broken(e),
            }
        } else {
            let files: Vec<String> = RUNBOOK_FILES
                .iter()
                .filter(|f| path.join(f).exists())
                .map(|f| f.to_string())
                .collect();
            if files.is_empty() {
                continue;
            }
            SetKind::Runbook(files)
        };
        let created = match &kind {
            SetKind::Complete(m) => m.created,
            _ => time_from_name(&name).unwrap_or(mtime),
        };
        out.push(SetInfo {
            name,
            path,
            created,
            kind,
        });
    }
    out.sort_by(|a, b| a.created.cmp(&b.created).then(a.name.cmp(&b.name)));
    Ok(out)
}

/// Finds a set by `latest` (newest complete set), folder name, or path.
pub fn resolve(dir: &Path, which: &str) -> Result<SetInfo, String> {
    let sets = list(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    if which == "latest" {
        return sets
            .into_iter()
            .rev()
            .find(|s| matches!(s.kind, SetKind::Complete(_)))
            .ok_or_else(|| {
                format!(
                    "no complete backup set in {} (run daon-backup first, or name a set)",
                    dir.display()
                )
            });
    }
    if let Some(s) = sets.iter().find(|s| s.name == which) {
        return Ok(s.clone());
    }
    let p = Path::new(which);
    if p.is_dir() {
        let parent = p.parent().unwrap_or(Path::new("."));
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if let Some(s) = list(parent)
            .map_err(|e| format!("cannot read {}: {e}", parent.display()))?
            .into_iter()
            .find(|s| s.name == name)
        {
            return Ok(s);
        }
        return Err(format!(
            "{which} is neither a backup set (no {MANIFEST}) nor in the runbook layout"
        ));
    }
    let names: Vec<&str> = sets.iter().rev().take(5).map(|s| s.name.as_str()).collect();
    Err(format!(
        "no backup set {which:?} in {} (newest: {})",
        dir.display(),
        if names.is_empty() {
            "none".to_string()
        } else {
            names.join(", ")
        }
    ))
}

/// Validates a tag: letters, digits, `.`, `_`, `-`.
pub fn valid_tag(tag: &str) -> bool {
    !tag.is_empty()
        && tag.len() <= 64
        && tag
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn manifest(name: &str, created: &str) -> Manifest {
        Manifest {
            format: FORMAT.into(),
            format_version: FORMAT_VERSION,
            tool_version: "0".into(),
            name: name.into(),
            tag: None,
            created: created.parse().unwrap(),
            finished: created.parse().unwrap(),
            host: "h".into(),
            compose_project: "p".into(),
            chain_id: String::new(),
            chain_height: None,
            images: BTreeMap::new(),
            artifacts: Vec::new(),
        }
    }

    #[test]
    fn lists_complete_runbook_and_broken_sets_but_never_partial_ones() {
        let d = tempfile::tempdir().unwrap();
        let mk = |n: &str| {
            std::fs::create_dir(d.path().join(n)).unwrap();
            d.path().join(n)
        };
        let a = mk("20261201T100000Z");
        std::fs::write(
            a.join(MANIFEST),
            serde_json::to_vec(&manifest("20261201T100000Z", "2026-12-01T10:00:00Z")).unwrap(),
        )
        .unwrap();
        let p = mk(".partial-20261201T110000Z-1");
        std::fs::write(p.join("database.sql.zst"), b"x").unwrap();
        let r = mk("20261130-020000");
        std::fs::write(r.join("database.sql.gz"), b"x").unwrap();
        let b = mk("20261201T120000Z");
        std::fs::write(b.join(MANIFEST), b"{trunc").unwrap();
        mk("empty");
        let sets = list(d.path()).unwrap();
        let names: Vec<_> = sets.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            ["20261130-020000", "20261201T100000Z", "20261201T120000Z"]
        );
        assert!(matches!(sets[0].kind, SetKind::Runbook(_)));
        assert!(matches!(sets[1].kind, SetKind::Complete(_)));
        assert!(matches!(sets[2].kind, SetKind::Broken(_)));
        assert_eq!(
            resolve(d.path(), "latest").unwrap().name,
            "20261201T100000Z"
        );
        assert!(resolve(d.path(), "nope").is_err());
    }

    #[test]
    fn tags_are_restricted() {
        assert!(valid_tag("pre-wipe"));
        assert!(!valid_tag("../x"));
        assert!(!valid_tag(""));
    }
}
