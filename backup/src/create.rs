//! Making one backup set: the database dump, the chain data archive and the
//! config archive are produced in parallel, each streamed from its source
//! through a compressor and a hasher to its file, under a `.partial-` folder
//! that is renamed into place only after every artifact is complete, fsynced
//! and hashed. Any failure — a non-zero `pg_dump`, empty output, a signal —
//! removes the partial folder; a SIGKILL leaves it to the next run to clean.

use crate::archive::{self, TarStats};
use crate::codec::{self, CountWriter, Encoder, HashWriter};
use crate::set::{self, Artifact, Kind, Manifest};
use crate::sql::{DumpScanner, Tee};
use crate::BackupError;
use chrono::Utc;
use daon_common::config::{ChainDataSource, Compression, Config};
use daon_common::docker::Docker;
use daon_common::process::{Cmd, ProcessError};
use daon_common::{atomic, Error};
use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// What to back up and how.
#[derive(Debug, Clone)]
pub struct Options {
    /// Artifacts to make.
    pub only: Vec<Kind>,
    /// Tag appended to the set name.
    pub tag: Option<String>,
    /// Backup directory.
    pub dest: PathBuf,
    /// Compression.
    pub compression: Compression,
    /// zstd level.
    pub level: i32,
    /// Compression threads (0: per core).
    pub threads: u32,
    /// Containers stopped while the chain data is archived.
    pub stop: Vec<String>,
    /// Where the chain data is read from.
    pub chain_source: ChainDataSource,
}

/// A committed set.
#[derive(Debug, Clone)]
pub struct Created {
    /// Its folder.
    pub path: PathBuf,
    /// Its manifest.
    pub manifest: Manifest,
    /// Wall time.
    pub duration: Duration,
    /// Leftover partial sets removed before starting.
    pub cleaned: Vec<String>,
    /// Notes (skipped files, missing metadata).
    pub notes: Vec<String>,
}

type Sink = CountWriter<Encoder<HashWriter<BufWriter<File>>>>;

/// Removes the partial folder unless committed.
struct Partial {
    path: PathBuf,
    committed: bool,
}

impl Drop for Partial {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// Starts stopped containers again on drop — even when the archive failed.
struct Stopped<'a> {
    docker: &'a Docker,
    names: Vec<String>,
}

impl Drop for Stopped<'_> {
    fn drop(&mut self) {
        for n in &self.names {
            if let Err(e) = self
                .docker
                .cmd()
                .timeout(Duration::from_secs(120))
                .args(["start", n])
                .run()
            {
                eprintln!("daon-backup: warning: could not start {n} again: {e}");
            }
        }
    }
}

fn produce(
    dir: &Path,
    kind: Kind,
    file: String,
    source: String,
    o: &Options,
    body: impl FnOnce(&mut Sink) -> Result<Extra, String>,
) -> Result<Artifact, String> {
    let start = Instant::now();
    let path = dir.join(&file);
    let f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .map_err(|e| format!("{file}: creating {}: {e}", path.display()))?;
    let enc = Encoder::new(
        HashWriter::new(BufWriter::with_capacity(codec::BUF, f)),
        o.compression,
        o.level,
        o.threads,
    )
    .map_err(|e| format!("{file}: starting the compressor: {e}"))?;
    let mut sink = CountWriter {
        inner: enc,
        bytes: 0,
    };
    let extra = body(&mut sink).map_err(|e| format!("{file}: {e}"))?;
    let uncompressed = sink.bytes;
    let (buf, sha256, size) = sink
        .inner
        .finish()
        .map_err(|e| format!("{file}: finishing the compressor: {e}"))?
        .finish();
    let f = buf
        .into_inner()
        .map_err(|e| format!("{file}: writing: {}", e.error()))?;
    f.sync_all().map_err(|e| format!("{file}: fsync: {e}"))?;
    Ok(Artifact {
        kind,
        file,
        source,
        size,
        sha256,
        compression: o.compression,
        uncompressed_size: uncompressed,
        entries: extra.tar.as_ref().map(|t| t.entries),
        files: extra.tar.as_ref().map(|t| t.files),
        file_bytes: extra.tar.as_ref().map(|t| t.file_bytes),
        tables: extra.tables,
        duration_ms: start.elapsed().as_millis() as u64,
    })
}

#[derive(Default)]
struct Extra {
    tar: Option<TarStats>,
    tables: Option<BTreeMap<String, u64>>,
    notes: Vec<String>,
}

fn io_msg(e: &io::Error) -> String {
    match e.get_ref().and_then(|i| i.downcast_ref::<ProcessError>()) {
        Some(p) => p.to_string(),
        None => e.to_string(),
    }
}

fn dump_db(config: &Config, docker: &Docker, sink: &mut Sink) -> Result<Extra, String> {
    let pg = &config.postgres;
    let argv: Vec<String> = [
        "pg_dump",
        "-U",
        &pg.user,
        "--clean",
        "--if-exists",
        &pg.database,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut reader = docker
        .exec_reader(&pg.container, &argv)
        .map_err(|e| e.to_string())?;
    let mut scanner = DumpScanner::default();
    codec::copy(&mut reader, &mut Tee(&mut scanner, &mut *sink))
        .map_err(|e| format!("pg_dump failed: {}", io_msg(&e)))?;
    if scanner.bytes == 0 {
        return Err("pg_dump wrote nothing (0 bytes); refusing to record an empty dump".into());
    }
    if !scanner.complete {
        return Err(format!(
            "pg_dump output ends without {:?}: the dump is incomplete",
            crate::sql::DUMP_COMPLETE
        ));
    }
    Ok(Extra {
        tables: Some(scanner.tables),
        ..Extra::default()
    })
}

/// The volume's host path, when this process can read it.
pub fn volume_host_path(docker: &Docker, volume: &str) -> Result<PathBuf, String> {
    let out = docker
        .cmd()
        .args(["volume", "inspect", "--format", "{{.Mountpoint}}", volume])
        .run()
        .map_err(|e| format!("docker volume inspect {volume}: {}", docker.classify(e)))?;
    let p = PathBuf::from(out.stdout_str().trim());
    fs::read_dir(&p).map_err(|e| format!("volume {volume}: cannot read {}: {e}", p.display()))?;
    Ok(p)
}

/// GNU tar's "file changed as we read it" on live data is exit 1 with only
/// such warnings: the archive itself is valid.
fn tolerable_tar_exit(e: &io::Error) -> Option<String> {
    let p = e.get_ref()?.downcast_ref::<ProcessError>()?;
    if let ProcessError::Exit {
        code: 1, stderr, ..
    } = p
    {
        let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
        if !lines.is_empty()
            && lines.iter().all(|l| {
                l.contains("file changed as we read it")
                    || l.contains("File removed before we read it")
                    || l.contains("socket ignored")
            })
        {
            return Some(lines.join("; "));
        }
    }
    None
}

/// Resolves where the chain data comes from: (description, how).
pub enum ChainFrom {
    /// Read the directory on the host.
    Host(PathBuf),
    /// Stream `tar` from this command.
    Stream(Cmd),
}

/// Decides how the chain data is read.
pub fn chain_from(
    config: &Config,
    docker: &Docker,
    how: ChainDataSource,
) -> Result<ChainFrom, String> {
    let vol = &config.volumes.chain;
    let helper = || {
        ChainFrom::Stream(
            docker
                .cmd()
                .args(["run", "--rm", "--network", "none", "-v"])
                .arg(format!("{vol}:/data:ro"))
                .arg(&config.backup.helper_image)
                .args(["tar", "-C", "/data", "-cf", "-", "."]),
        )
    };
    Ok(match how {
        ChainDataSource::Host => ChainFrom::Host(volume_host_path(docker, vol)?),
        ChainDataSource::Helper => helper(),
        ChainDataSource::Exec => {
            ChainFrom::Stream(docker.cmd().args(["exec", &config.chain.container]).args([
                "tar",
                "-C",
                &config.volumes.chain_path,
                "-cf",
                "-",
                ".",
            ]))
        }
        ChainDataSource::Auto => match volume_host_path(docker, vol) {
            Ok(p) => ChainFrom::Host(p),
            Err(_) => helper(),
        },
    })
}

fn archive_chain(from: &ChainFrom, sink: &mut Sink) -> Result<Extra, String> {
    let mut notes = Vec::new();
    let st = match from {
        ChainFrom::Host(p) => {
            let (_, st) = archive::tar_dir(p, &mut *sink).map_err(|e| e.to_string())?;
            st
        }
        ChainFrom::Stream(cmd) => {
            let mut r = cmd.reader().map_err(|e| e.to_string())?;
            let (_, st, end) = archive::retar(&mut r, &mut *sink)
                .map_err(|e| format!("{}: {}", cmd.cmdline(), io_msg(&e)))?;
            if let Some(e) = end {
                match tolerable_tar_exit(&e) {
                    Some(w) => notes.push(format!("chain: tar warned (archive is valid): {w}")),
                    None => return Err(format!("{}: {}", cmd.cmdline(), io_msg(&e))),
                }
            }
            st
        }
    };
    if st.entries == 0 {
        return Err(
            "the chain data directory is empty; refusing to record an empty archive".into(),
        );
    }
    notes.extend(st.skipped.iter().map(|s| format!("chain: skipped {s}")));
    Ok(Extra {
        tar: Some(st),
        notes,
        ..Extra::default()
    })
}

/// The files of the config archive, relative to the project directory.
pub fn config_files(config: &Config) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = config.compose.files.clone();
    v.push(config.compose.env_file.clone());
    v.extend(config.backup.config_files.iter().cloned());
    v.dedup();
    v
}

fn archive_config(config: &Config, sink: &mut Sink) -> Result<Extra, String> {
    let files = config_files(config);
    let (_, st) = archive::tar_files(&config.compose.project_dir, &files, &mut *sink)
        .map_err(|e| e.to_string())?;
    Ok(Extra {
        tar: Some(st),
        ..Extra::default()
    })
}

/// The compose project's name as Compose would use it.
pub fn compose_project(config: &Config) -> String {
    if !config.compose.project_name.is_empty() {
        return config.compose.project_name.clone();
    }
    config
        .compose
        .project_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Chain id: configured, else CHAIN_ID from the compose `.env`.
pub fn chain_id(config: &Config) -> String {
    if !config.chain.chain_id.is_empty() {
        return config.chain.chain_id.clone();
    }
    daon_common::config::read_env_file(&config.env_file_path())
        .ok()
        .and_then(|p| p.into_iter().find(|(k, _)| k == "CHAIN_ID").map(|(_, v)| v))
        .unwrap_or_default()
}

fn chain_height(config: &Config) -> Option<u64> {
    if config.chain.rpc_url.is_empty() {
        return None;
    }
    let agent = daon_common::http::agent(daon_common::http::AgentOptions {
        timeout: config.chain.timeout,
        ..Default::default()
    })
    .ok()?;
    let url = format!("{}/status", config.chain.rpc_url.trim_end_matches('/'));
    let v = daon_common::http::get_json(&agent, &url).ok()?;
    let sync = v.get("result").unwrap_or(&v).get("sync_info")?;
    sync.get("latest_block_height")?.as_str()?.parse().ok()
}

/// Removes `.partial-*` leftovers of killed runs (call with the lock held).
pub fn clean_partials(dest: &Path) -> Vec<String> {
    let mut cleaned = Vec::new();
    if let Ok(rd) = fs::read_dir(dest) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(set::PARTIAL_PREFIX) && fs::remove_dir_all(e.path()).is_ok() {
                cleaned.push(name);
            }
        }
    }
    cleaned
}

/// Makes one set. Call with the backup lock held.
pub fn create(
    config: &Config,
    o: &Options,
    say: &(dyn Fn(&str) + Sync),
) -> Result<Created, BackupError> {
    let start = Instant::now();
    let created = Utc::now();
    fs::create_dir_all(&o.dest).map_err(|e| Error::io("creating backup directory", &o.dest, e))?;
    let cleaned = clean_partials(&o.dest);
    for c in &cleaned {
        say(&format!("removed {c}, left by an interrupted run"));
    }
    let stamp = created.format("%Y%m%dT%H%M%SZ").to_string();
    let mut name = String::new();
    for n in 0.. {
        let base = if n == 0 {
            stamp.clone()
        } else {
            format!("{stamp}.{n}")
        };
        name = match &o.tag {
            Some(t) => format!("{base}-{t}"),
            None => base,
        };
        if !o.dest.join(&name).exists() {
            break;
        }
    }
    let partial_path = o.dest.join(format!(
        "{}{name}-{}",
        set::PARTIAL_PREFIX,
        std::process::id()
    ));
    fs::DirBuilder::new()
        .mode(0o700)
        .create(&partial_path)
        .map_err(|e| Error::io("creating", &partial_path, e))?;
    let mut partial = Partial {
        path: partial_path.clone(),
        committed: false,
    };

    let docker = Docker::new(config);
    let ext = codec::extension(o.compression);
    let dir = partial_path.as_path();
    let mut notes = Vec::new();

    // Stack metadata (best effort: a backup is still worth having without it).
    let chain_height = if o.only.contains(&Kind::Chain) || o.only.is_empty() {
        chain_height(config)
    } else {
        None
    };
    let names: Vec<String> = config
        .all_containers()
        .into_iter()
        .map(|(_, n, _)| n)
        .collect();
    let images: BTreeMap<String, String> = match docker.inspect(&names) {
        Ok(i) => i.found.into_iter().map(|c| (c.name, c.image_id)).collect(),
        Err(e) => {
            notes.push(format!("image ids not recorded: {e}"));
            BTreeMap::new()
        }
    };

    let chain_src = if o.only.contains(&Kind::Chain) {
        Some(
            chain_from(config, &docker, o.chain_source)
                .map_err(|e| BackupError::Failed(vec![format!("chain: {e}")]))?,
        )
    } else {
        None
    };

    let results: Vec<Result<(Artifact, Vec<String>), String>> = std::thread::scope(|s| {
        let mut handles = Vec::new();
        for kind in &o.only {
            let kind = *kind;
            let docker = &docker;
            let chain_src = &chain_src;
            handles.push(s.spawn(move || -> Result<(Artifact, Vec<String>), String> {
                let mut notes = Vec::new();
                let a = match kind {
                    Kind::Database => {
                        let src = format!(
                            "docker exec {} pg_dump -U {} --clean --if-exists {}",
                            config.postgres.container,
                            config.postgres.user,
                            config.postgres.database
                        );
                        produce(dir, kind, format!("database.sql.{ext}"), src, o, |sink| {
                            dump_db(config, docker, sink)
                        })?
                    }
                    Kind::Chain => {
                        let from = chain_src.as_ref().ok_or("chain source not resolved")?;
                        let src = match from {
                            ChainFrom::Host(p) => {
                                format!("{} ({})", p.display(), config.volumes.chain)
                            }
                            ChainFrom::Stream(c) => c.cmdline(),
                        };
                        let mut stopped = Stopped {
                            docker,
                            names: Vec::new(),
                        };
                        for n in &o.stop {
                            say(&format!("stopping {n} while the chain data is archived"));
                            docker
                                .cmd()
                                .timeout(Duration::from_secs(120))
                                .args(["stop", n])
                                .run()
                                .map_err(|e| format!("stopping {n}: {}", docker.classify(e)))?;
                            stopped.names.push(n.clone());
                        }
                        let mut extra_notes = Vec::new();
                        let a = produce(dir, kind, format!("chain.tar.{ext}"), src, o, |sink| {
                            let x = archive_chain(from, sink)?;
                            extra_notes = x.notes.clone();
                            Ok(x)
                        });
                        drop(stopped);
                        notes.extend(extra_notes);
                        a?
                    }
                    Kind::Config => produce(
                        dir,
                        kind,
                        format!("config.tar.{ext}"),
                        config.compose.project_dir.display().to_string(),
                        o,
                        |sink| archive_config(config, sink),
                    )?,
                };
                say(&format!(
                    "{}: {} in {:.1} s",
                    a.file,
                    human_bytes(a.size),
                    a.duration_ms as f64 / 1000.0
                ));
                Ok((a, notes))
            }));
        }
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err("an artifact thread crashed".into()))
            })
            .collect()
    });

    let mut artifacts = Vec::new();
    let mut failures = Vec::new();
    for r in results {
        match r {
            Ok((a, n)) => {
                artifacts.push(a);
                notes.extend(n);
            }
            Err(e) => failures.push(e),
        }
    }
    if codec::INTERRUPTED.load(std::sync::atomic::Ordering::Relaxed) {
        failures.push("interrupted by a signal".into());
    }
    if !failures.is_empty() {
        return Err(BackupError::Failed(failures));
    }
    artifacts.sort_by_key(|a| a.kind);
    let manifest = Manifest {
        format: set::FORMAT.into(),
        format_version: set::FORMAT_VERSION,
        tool_version: env!("CARGO_PKG_VERSION").into(),
        name: name.clone(),
        tag: o.tag.clone(),
        created,
        finished: Utc::now(),
        host: daon_common::lock::hostname(),
        compose_project: compose_project(config),
        chain_id: chain_id(config),
        chain_height,
        images,
        artifacts,
    };
    let json = serde_json::to_vec_pretty(&manifest)
        .map_err(|e| Error::Internal(format!("manifest to JSON: {e}")))?;
    atomic::write(&dir.join(set::MANIFEST), &json, 0o600)?;
    atomic::sync_dir(dir)?;
    let final_path = o.dest.join(&name);
    fs::rename(dir, &final_path)
        .map_err(|e| Error::io("renaming the set into place", &final_path, e))?;
    partial.committed = true;
    atomic::sync_dir(&o.dest)?;
    Ok(Created {
        path: final_path,
        manifest,
        duration: start.elapsed(),
        cleaned,
        notes,
    })
}

/// `1.2 MB`-style sizes (decimal units, like `du --si`).
pub fn human_bytes(n: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1000.0 && i < units.len() - 1 {
        v /= 1000.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", units[i])
    }
}
