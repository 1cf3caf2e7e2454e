//! Verifying a set against its manifest, in one pass per artifact: the file is
//! re-hashed while it is decompressed and read to the end (every tar entry
//! checked for hostile names, the dump's rows counted), and everything is
//! compared with what the manifest recorded. Used by `daon-backup verify`,
//! by `daon-restore` before it touches anything, and by the drill.

use crate::archive;
use crate::codec::{self, HashReader};
use crate::set::{Artifact, Kind, Manifest};
use crate::sql::DumpScanner;
use std::io::{BufReader, Read};
use std::path::Path;
use std::time::Instant;

/// The result of verifying one artifact.
#[derive(Debug, Clone)]
pub struct Checked {
    /// Artifact file name.
    pub file: String,
    /// Its kind.
    pub kind: Kind,
    /// Empty when it matched; otherwise what did not, each naming the file.
    pub problems: Vec<String>,
    /// Seconds taken.
    pub seconds: f64,
}

impl Checked {
    /// True when nothing was wrong.
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// Verifies one artifact of the set in `dir`.
pub fn artifact(dir: &Path, a: &Artifact) -> Checked {
    let start = Instant::now();
    let mut problems = Vec::new();
    check(dir, a, &mut problems);
    Checked {
        file: a.file.clone(),
        kind: a.kind,
        problems,
        seconds: start.elapsed().as_secs_f64(),
    }
}

fn check(dir: &Path, a: &Artifact, problems: &mut Vec<String>) {
    let name = &a.file;
    if name.contains('/') || name.starts_with('.') {
        problems.push(format!("{name}: artifact name is not a plain file name"));
        return;
    }
    let path = dir.join(name);
    let f = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) => {
            problems.push(format!("{name}: cannot open {}: {e}", path.display()));
            return;
        }
    };
    let size = f.metadata().map(|m| m.len()).unwrap_or(0);
    if size != a.size {
        problems.push(format!(
            "{name}: size is {size} bytes, the manifest says {}",
            a.size
        ));
    }
    let mut hr = HashReader::new(BufReader::with_capacity(codec::BUF, f));
    let content: Result<(), String> = (|| {
        let dec = codec::decoder(&mut hr, a.compression)
            .map_err(|e| format!("{name}: cannot decompress: {e}"))?;
        let mut counted = codec::CountReader {
            inner: dec,
            bytes: 0,
        };
        let mut mismatches = Vec::new();
        match a.kind {
            Kind::Database => {
                let mut s = DumpScanner::default();
                codec::copy(&mut counted, &mut s)
                    .map_err(|e| format!("{name}: cannot decompress: {e}"))?;
                if !s.complete {
                    mismatches.push(format!(
                        "{name}: the dump is truncated (no {:?} line)",
                        crate::sql::DUMP_COMPLETE
                    ));
                }
                if let Some(want) = &a.tables {
                    if &s.tables != want {
                        for (t, n) in want {
                            let got = s.tables.get(t).copied().unwrap_or(0);
                            if got != *n {
                                mismatches.push(format!(
                                    "{name}: table {t} has {got} rows in the dump, the manifest says {n}"
                                ));
                            }
                        }
                    }
                }
            }
            Kind::Chain | Kind::Config => {
                let st = archive::scan(&mut counted).map_err(|e| format!("{name}: {e}"))?;
                // Read the tar's end padding too, so the size matches.
                std::io::copy(&mut counted, &mut std::io::sink())
                    .map_err(|e| format!("{name}: cannot decompress: {e}"))?;
                for (what, got, want) in [
                    ("entries", st.entries, a.entries),
                    ("files", st.files, a.files),
                    ("bytes of file content", st.file_bytes, a.file_bytes),
                ] {
                    if let Some(want) = want {
                        if got != want {
                            mismatches.push(format!(
                                "{name}: {got} {what} in the archive, the manifest says {want}"
                            ));
                        }
                    }
                }
            }
        }
        if counted.bytes != a.uncompressed_size {
            mismatches.push(format!(
                "{name}: {} bytes uncompressed, the manifest says {}",
                counted.bytes, a.uncompressed_size
            ));
        }
        if mismatches.is_empty() {
            Ok(())
        } else {
            Err(mismatches.join("\n"))
        }
    })();
    let hashed = hr.finish();
    match hashed {
        Ok((sha, _)) if sha != a.sha256 => {
            problems.push(format!(
                "{name}: SHA-256 mismatch (file {}…, manifest {}…): the artifact is corrupt or was changed",
                &sha[..12],
                a.sha256.get(..12).unwrap_or(&a.sha256)
            ));
            // Content errors follow from the corruption; one message is enough.
            return;
        }
        Ok(_) => {}
        Err(e) => problems.push(format!("{name}: read error: {e}")),
    }
    if let Err(e) = content {
        problems.extend(e.lines().map(String::from));
    }
}

/// Verifies every artifact of the set (those of `only` kinds, if given),
/// in parallel.
pub fn set(dir: &Path, m: &Manifest, only: &[Kind]) -> Vec<Checked> {
    let arts: Vec<&Artifact> = m
        .artifacts
        .iter()
        .filter(|a| only.is_empty() || only.contains(&a.kind))
        .collect();
    std::thread::scope(|s| {
        let handles: Vec<_> = arts
            .iter()
            .map(|a| s.spawn(move || artifact(dir, a)))
            .collect();
        handles
            .into_iter()
            .zip(&arts)
            .map(|(h, a)| {
                h.join().unwrap_or_else(|_| Checked {
                    file: a.file.clone(),
                    kind: a.kind,
                    problems: vec![format!("{}: verification crashed", a.file)],
                    seconds: 0.0,
                })
            })
            .collect()
    })
}

/// Reads a whole artifact through `f` after decompression (for restore and
/// drill, which re-read what they verified).
pub fn open(dir: &Path, a: &Artifact) -> std::io::Result<Box<dyn Read>> {
    let f = std::fs::File::open(dir.join(&a.file))?;
    codec::decoder(BufReader::with_capacity(codec::BUF, f), a.compression)
}
