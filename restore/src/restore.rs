//! The restore itself, in an order that keeps the live stack safe: verify,
//! plan, stage everything that can be staged (config files, the chain data
//! beside its volume), and only then stop services, swap, restore the
//! database in one transaction, restart, and wait for the health check —
//! putting the old chain data back if the stack does not become healthy.

use crate::{RestoreError, Settings};
use clap::Parser;
use daon_backup::archive;
use daon_backup::codec;
use daon_backup::set::{Artifact, Kind, Manifest, SetInfo};
use daon_backup::verify;
use daon_common::config::{Config, Loaded, Source};
use daon_common::docker::Docker;
use daon_common::notify::Report;
use daon_common::{atomic, ExitCode};
use serde_json::json;
use std::fs;
use std::io::{IsTerminal, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Starts stopped containers again on drop (also when a step failed).
pub struct Stopped<'a> {
    docker: &'a Docker,
    names: Vec<String>,
}

impl<'a> Stopped<'a> {
    /// Stops `names` (in order), remembering each for the restart.
    pub fn stop(
        docker: &'a Docker,
        names: &[String],
        say: &dyn Fn(&str),
    ) -> Result<Stopped<'a>, RestoreError> {
        let mut g = Stopped {
            docker,
            names: Vec::new(),
        };
        for n in names {
            say(&format!("stopping {n}"));
            docker
                .cmd()
                .timeout(Duration::from_secs(120))
                .args(["stop", n])
                .run()
                .map_err(|e| {
                    RestoreError::Failed(format!("stopping {n}: {}", docker.classify(e)))
                })?;
            g.names.push(n.clone());
        }
        Ok(g)
    }

    /// Starts them now.
    pub fn start(mut self) -> Result<(), RestoreError> {
        let names = std::mem::take(&mut self.names);
        let mut errs = Vec::new();
        for n in &names {
            if let Err(e) = self
                .docker
                .cmd()
                .timeout(Duration::from_secs(120))
                .args(["start", n])
                .run()
            {
                errs.push(format!("starting {n}: {}", self.docker.classify(e)));
            }
        }
        if errs.is_empty() {
            Ok(())
        } else {
            Err(RestoreError::Failed(errs.join("; ")))
        }
    }
}

impl Drop for Stopped<'_> {
    fn drop(&mut self) {
        for n in &self.names {
            let _ = self
                .docker
                .cmd()
                .timeout(Duration::from_secs(120))
                .args(["start", n])
                .run();
        }
    }
}

/// Waits until the restarted containers run and (if they have a Docker
/// health check) are exactly `healthy`, then runs the stack health check
/// (the daon-health-check library, no state) until it passes or `timeout`
/// ends; returns the last report when it fails.
pub fn wait_healthy(
    config: &Config,
    restarted: &[String],
    timeout: Duration,
) -> Result<(), String> {
    use daon_common::docker::Health;
    let deadline = Instant::now() + timeout;
    let docker = Docker::new(config);
    loop {
        let pending: Vec<String> = match docker.inspect(restarted) {
            Ok(i) => i
                .found
                .iter()
                .filter(|c| !c.is_running() || !matches!(c.health, Health::Healthy | Health::None))
                .map(|c| format!("{} is {} ({})", c.name, c.state, c.health.as_str()))
                .chain(i.missing.iter().map(|m| format!("{m} is missing")))
                .collect(),
            Err(e) => vec![e.to_string()],
        };
        if pending.is_empty() {
            break;
        }
        if Instant::now() >= deadline {
            return Err(pending.join("\n"));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    loop {
        let cli = daon_health_check::Cli::try_parse_from(["daon-health-check", "--no-state"])
            .map_err(|e| e.to_string())?;
        // The check is part of this run: it must not ping or notify on its own.
        let mut quiet = config.clone();
        quiet.notify = daon_common::notify::NotifyConfig::default();
        let loaded = Loaded {
            config: quiet,
            source: Source::BuiltIn,
            env_overrides: Vec::new(),
        };
        let settings =
            daon_health_check::Settings::from_cli(cli, loaded).map_err(|e| e.to_string())?;
        let mut buf = Vec::new();
        let code = daon_health_check::run(&settings, &mut buf).map_err(|e| e.to_string())?;
        // 0 OK, 1 WARNING: healthy enough; 2 CRITICAL, 3 UNKNOWN: not.
        if code <= 1 {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(String::from_utf8_lossy(&buf).into_owned());
        }
        std::thread::sleep(Duration::from_secs(2));
    }
}

/// The chain volume's directory and where staging and the old data go.
pub struct ChainPaths {
    /// The live data directory (`.../_data`).
    pub live: PathBuf,
    /// Extraction target beside it.
    pub staging: PathBuf,
    /// Where the old data is kept until the stack is healthy.
    pub old: PathBuf,
}

/// Works out the chain volume's paths on the host.
pub fn chain_paths(config: &Config, docker: &Docker) -> Result<ChainPaths, RestoreError> {
    let live = daon_backup::create::volume_host_path(docker, &config.volumes.chain).map_err(|e| {
        RestoreError::Failed(format!(
            "{e}\n  hint: restoring the chain data needs the volume's host path (run as root on the Docker host)"
        ))
    })?;
    let name = live
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "_data".into());
    let stamp = chrono::Utc::now().format("%Y%m%dT%H%M%SZ");
    Ok(ChainPaths {
        staging: live.with_file_name(format!("{name}.daon-restore-staging")),
        old: live.with_file_name(format!("{name}.daon-restore-old-{stamp}")),
        live,
    })
}

fn confirm(s: &Settings, set: &str) -> Result<(), RestoreError> {
    if s.yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        return Err(RestoreError::Usage(
            "restoring changes live data: pass --yes (or --dry-run to see the plan)".into(),
        ));
    }
    eprint!("daon-restore: restore {set} into the live stack? Type 'yes' to go on: ");
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .map_err(|e| RestoreError::Usage(format!("reading the answer: {e}")))?;
    if line.trim() == "yes" {
        Ok(())
    } else {
        Err(RestoreError::Usage(
            "not confirmed; nothing was changed".into(),
        ))
    }
}

/// Feeds a dump into `psql` inside `container`: ON_ERROR_STOP, one
/// transaction, killed (never given EOF) if reading the dump fails.
pub fn psql_restore(
    docker: &Docker,
    container: &str,
    user: &str,
    database: &str,
    set_dir: &Path,
    a: &Artifact,
    prelude: &str,
) -> Result<(), String> {
    let cmd = docker.cmd().args([
        "exec",
        "-i",
        container,
        "psql",
        "-X",
        "-q",
        "-v",
        "ON_ERROR_STOP=1",
        "--single-transaction",
        "-U",
        user,
        "-d",
        database,
    ]);
    let (out, feed_err) = cmd
        .run_feeding(|w| {
            w.write_all(prelude.as_bytes())?;
            let mut r = verify::open(set_dir, a)?;
            codec::copy(&mut r, &mut &mut *w).map(|_| ())
        })
        .map_err(|e| docker.classify(e).to_string())?;
    if let Some(e) = feed_err {
        return Err(format!(
            "reading {} failed ({e}); psql was stopped before committing, the database is unchanged",
            a.file
        ));
    }
    cmd.check(&out)
        .map_err(|e| format!("{e}\n  the transaction was rolled back: the database is unchanged"))
}

/// Runs a restore.
pub fn run(
    s: &Settings,
    out: &mut impl Write,
    report: &mut Report,
) -> Result<ExitCode, RestoreError> {
    let say = |m: &str| s.say(m);
    let _lock = daon_backup::take_lock(&s.config, s.lock_wait, "daon-restore")?;
    let (st, manifest) = crate::resolve_and_verify(s)?;
    report.subject = format!("restore of {}", st.name);
    report.set("set", st.name.clone());
    let c = &s.config;
    let (m, runbook) = match manifest {
        Some(m) => (m, false),
        None => (runbook_manifest(c, &st, &s.only)?, true),
    };
    let docker = Docker::new(c);
    let kinds: Vec<Kind> = Kind::ALL
        .into_iter()
        .filter(|k| {
            s.only.contains(k)
                && (m.artifact(*k).is_some()
                    || (runbook && *k == Kind::Config && st.path.join("env-backup").is_file()))
        })
        .collect();
    let api: Vec<String> = c
        .services
        .get("api")
        .map(|x| x.containers.clone())
        .unwrap_or_default();
    let chain_containers: Vec<String> = c
        .services
        .get("blockchain")
        .map(|x| x.containers.clone())
        .unwrap_or_else(|| vec![c.chain.container.clone()]);
    let chain = if kinds.contains(&Kind::Chain) {
        Some(chain_paths(c, &docker)?)
    } else {
        None
    };

    report.set(
        "restoring",
        kinds.iter().map(|k| k.flag()).collect::<Vec<_>>(),
    );
    report.set("set_created", m.created.to_rfc3339());
    if let Some(h) = m.chain_height {
        report.set("chain_height", h);
    }

    // The plan.
    let mut plan = vec![format!(
        "set {} (created {}, chain height {}) verified",
        st.name,
        m.created.format("%Y-%m-%d %H:%M:%S UTC"),
        m.chain_height.map_or("unknown".into(), |h| h.to_string())
    )];
    for k in &kinds {
        plan.push(match k {
            Kind::Config => format!(
                "config: replace {} in {} atomically (.env mode 0600)",
                daon_backup::create::config_files(c)
                    .iter()
                    .map(|p| p.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                c.compose.project_dir.display()
            ),
            Kind::Database => format!(
                "database: stop {}; psql -v ON_ERROR_STOP=1 --single-transaction into {}/{} in {}; start them",
                if api.is_empty() { "nothing".into() } else { api.join(", ") },
                c.postgres.user,
                c.postgres.database,
                c.postgres.container
            ),
            Kind::Chain => {
                let p = chain.as_ref().map(|p| (p.staging.display().to_string(), p.live.display().to_string(), p.old.display().to_string())).unwrap_or_default();
                format!(
                    "chain: extract into {}; stop {}; move {} to {} and the staging dir into place; start; keep the old data until healthy",
                    p.0,
                    chain_containers.join(", "),
                    p.1,
                    p.2
                )
            }
        });
    }
    plan.push(format!(
        "health check (up to {})",
        humantime::format_duration(s.health_timeout)
    ));
    for p in &plan {
        if s.json {
            daon_common::output::json_line(out, "plan", json!({"step": p})).map_err(|e| {
                RestoreError::Common(daon_common::Error::io("writing", "standard output", e))
            })?;
        } else {
            writeln!(out, "{}{p}", if s.dry_run { "would: " } else { "" }).map_err(|e| {
                RestoreError::Common(daon_common::Error::io("writing", "standard output", e))
            })?;
        }
    }
    if s.dry_run {
        return Ok(ExitCode::Ok);
    }
    confirm(s, &st.name)?;
    let started = Instant::now();

    // Stage: nothing live is touched yet.
    let staged_config = if kinds.contains(&Kind::Config) {
        let mut files = match m.artifact(Kind::Config) {
            Some(a) => stage_config(c, &st, a, runbook)?,
            None => Vec::new(),
        };
        if runbook && st.path.join("env-backup").is_file() {
            let bytes = fs::read(st.path.join("env-backup"))
                .map_err(|e| daon_common::Error::io("reading", st.path.join("env-backup"), e))?;
            files.retain(|(rel, _, _)| *rel != c.compose.env_file);
            files.push((c.compose.env_file.clone(), bytes, 0o600));
        }
        Some(files)
    } else {
        None
    };
    if let Some(p) = &chain {
        let prefix = if runbook {
            runbook_prefix(&st, m.artifact(Kind::Chain), &c.volumes.chain_path)
        } else {
            PathBuf::new()
        };
        stage_chain(p, &st, &m, &prefix, &say)?;
    }

    // Act.
    if let Some(files) = staged_config {
        for (rel, bytes, mode) in files {
            let dst = c.compose.project_dir.join(&rel);
            let mode = if rel == c.compose.env_file {
                0o600
            } else {
                mode
            };
            atomic::write(&dst, &bytes, mode)?;
            say(&format!("restored {} (mode {:o})", dst.display(), mode));
        }
    }
    if kinds.contains(&Kind::Database) {
        let a = m
            .artifact(Kind::Database)
            .ok_or_else(|| RestoreError::Failed("no database artifact".into()))?;
        let stopped = Stopped::stop(&docker, &api, &say)?;
        say(&format!("restoring the database from {}", a.file));
        psql_restore(
            &docker,
            &c.postgres.container,
            &c.postgres.user,
            &c.postgres.database,
            &st.path,
            a,
            if runbook { RUNBOOK_PRELUDE } else { "" },
        )
        .map_err(|e| RestoreError::Failed(format!("database restore failed: {e}")))?;
        stopped.start()?;
        say("database restored");
    }
    let mut swapped = false;
    if let Some(p) = &chain {
        let stopped = Stopped::stop(&docker, &chain_containers, &say)?;
        fs::rename(&p.live, &p.old).map_err(|e| {
            RestoreError::Failed(format!(
                "moving {} aside: {e}; nothing was swapped",
                p.live.display()
            ))
        })?;
        if let Err(e) = fs::rename(&p.staging, &p.live) {
            let _ = fs::rename(&p.old, &p.live);
            return Err(RestoreError::Failed(format!(
                "moving the restored data into place: {e}; the old data was put back"
            )));
        }
        let _ = atomic::sync_dir(p.live.parent().unwrap_or(Path::new("/")));
        swapped = true;
        stopped.start()?;
        say(&format!(
            "chain data swapped in; old data kept at {}",
            p.old.display()
        ));
    }

    say("waiting for the stack to be healthy");
    let mut restarted: Vec<String> = Vec::new();
    if kinds.contains(&Kind::Database) {
        restarted.extend(api.iter().cloned());
    }
    if swapped {
        restarted.extend(chain_containers.iter().cloned());
    }
    match wait_healthy(c, &restarted, s.health_timeout) {
        Ok(()) => {
            if let Some(p) = chain.as_ref().filter(|_| swapped) {
                if let Err(e) = fs::remove_dir_all(&p.old) {
                    say(&format!(
                        "warning: could not remove the old chain data {}: {e}",
                        p.old.display()
                    ));
                }
            }
            if s.json {
                daon_common::output::json_line(
                    out,
                    "summary",
                    json!({"status": "ok", "set": st.name, "restored": kinds.iter().map(|k| k.flag()).collect::<Vec<_>>(), "duration_ms": started.elapsed().as_millis() as u64}),
                )
                .map_err(|e| RestoreError::Common(daon_common::Error::io("writing", "standard output", e)))?;
            }
            say(&format!(
                "restore of {} complete and the stack is healthy ({:.1} s)",
                st.name,
                started.elapsed().as_secs_f64()
            ));
            report.subject = format!(
                "restore of {} complete, stack healthy ({:.1} s)",
                st.name,
                started.elapsed().as_secs_f64()
            );
            report.set("duration_ms", started.elapsed().as_millis() as u64);
            Ok(ExitCode::Ok)
        }
        Err(report) => {
            let mut msg = format!(
                "the stack is not healthy {} after the restore:\n{report}",
                humantime::format_duration(s.health_timeout)
            );
            if let Some(p) = chain.as_ref().filter(|_| swapped) {
                let failed = p.live.with_file_name(format!(
                    "{}.daon-restore-failed",
                    p.live
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default()
                ));
                let _ = fs::remove_dir_all(&failed);
                let stopped = Stopped::stop(&docker, &chain_containers, &say)?;
                let back = fs::rename(&p.live, &failed).and_then(|_| fs::rename(&p.old, &p.live));
                stopped.start()?;
                msg.push_str(&match back {
                    Ok(()) => format!(
                        "\nthe old chain data was put back; the restored one is in {}",
                        failed.display()
                    ),
                    Err(e) => format!(
                        "\nputting the old chain data back failed ({e}); it is in {}",
                        p.old.display()
                    ),
                });
            }
            Err(RestoreError::Unhealthy(msg))
        }
    }
}

/// Extracts the config archive in memory-sized pieces into a temporary
/// directory, and returns its regular files (relative path, bytes, mode).
fn stage_config(
    c: &Config,
    st: &SetInfo,
    a: &Artifact,
    runbook: bool,
) -> Result<Vec<(PathBuf, Vec<u8>, u32)>, RestoreError> {
    let parent = c.compose.project_dir.clone();
    let tmp = tempfile::Builder::new()
        .prefix(".daon-restore-config-")
        .tempdir_in(&parent)
        .map_err(|e| daon_common::Error::io("creating a staging directory in", &parent, e))?;
    let prefix = if runbook {
        // `tar czf config.tar.gz /opt/daon-source/.env ...` stores opt/daon-source/...
        verify::open(&st.path, a)
            .ok()
            .and_then(|r| archive::common_prefix(r).ok())
            .unwrap_or_default()
    } else {
        PathBuf::new()
    };
    let r = verify::open(&st.path, a)
        .map_err(|e| daon_common::Error::io("reading", st.path.join(&a.file), e))?;
    archive::extract_under(r, tmp.path(), false, &prefix).map_err(|e| RestoreError::Refused {
        set: st.name.clone(),
        problems: vec![format!("{}: {e}", a.file)],
    })?;
    let mut files = Vec::new();
    collect_files(tmp.path(), tmp.path(), &mut files)?;
    Ok(files)
}

/// Runbook dumps have no `DROP` statements: start from an empty schema, in
/// the same transaction as the dump (a failure rolls the drop back too).
pub const RUNBOOK_PRELUDE: &str = "DROP SCHEMA IF EXISTS public CASCADE;\nCREATE SCHEMA public;\n";

/// The runbooks' chain archive (`tar czf - /daon/.daon`) stores `daon/.daon/...`.
fn runbook_prefix(st: &SetInfo, a: Option<&Artifact>, chain_path: &str) -> PathBuf {
    let want = PathBuf::from(chain_path.trim_start_matches('/'));
    let common = a
        .and_then(|a| verify::open(&st.path, a).ok())
        .and_then(|r| archive::common_prefix(r).ok())
        .unwrap_or_default();
    if common.starts_with(&want) {
        want
    } else {
        PathBuf::new()
    }
}

/// A stand-in manifest for a runbook-layout folder (no hashes, no counts),
/// after reading every archive to its end: hostile entries and a dump
/// without pg_dump's closing line refuse it before anything is touched.
fn runbook_manifest(c: &Config, st: &SetInfo, only: &[Kind]) -> Result<Manifest, RestoreError> {
    let mut artifacts = Vec::new();
    let mut problems = Vec::new();
    let has = |f: &str| st.path.join(f).is_file();
    let pick = |k: Kind| -> Option<&'static str> {
        match k {
            Kind::Database => ["database.sql.gz"].into_iter().find(|f| has(f)),
            Kind::Chain => ["blockchain.tar.gz", "blockchain-data.tar.gz"]
                .into_iter()
                .find(|f| has(f)),
            Kind::Config => ["config.tar.gz"].into_iter().find(|f| has(f)),
        }
    };
    for k in Kind::ALL.into_iter().filter(|k| only.contains(k)) {
        let Some(file) = pick(k) else { continue };
        let a = Artifact {
            kind: k,
            file: file.into(),
            source: "runbook".into(),
            size: 0,
            sha256: String::new(),
            compression: daon_common::config::Compression::Gzip,
            uncompressed_size: 0,
            entries: None,
            files: None,
            file_bytes: None,
            tables: None,
            duration_ms: 0,
        };
        let checked = verify::open(&st.path, &a)
            .map_err(|e| e.to_string())
            .and_then(|mut r| {
                if k == Kind::Database {
                    let mut scan = daon_backup::sql::DumpScanner::default();
                    codec::copy(&mut r, &mut scan).map_err(|e| e.to_string())?;
                    if !scan.complete {
                        return Err("the dump is truncated (no closing line from pg_dump)".into());
                    }
                    Ok(())
                } else {
                    archive::scan(r).map(|_| ())
                }
            });
        if let Err(e) = checked {
            problems.push(format!("{file}: {e}"));
        }
        artifacts.push(a);
    }
    if !problems.is_empty() {
        return Err(RestoreError::Refused {
            set: st.name.clone(),
            problems,
        });
    }
    if artifacts.is_empty() && !(only.contains(&Kind::Config) && has("env-backup")) {
        return Err(RestoreError::NotFound(format!(
            "{} holds none of the parts asked for",
            st.name
        )));
    }
    Ok(Manifest {
        format: daon_backup::set::FORMAT.into(),
        format_version: daon_backup::set::FORMAT_VERSION,
        tool_version: String::new(),
        name: st.name.clone(),
        tag: None,
        created: st.created,
        finished: st.created,
        host: String::new(),
        compose_project: daon_backup::create::compose_project(c),
        chain_id: String::new(),
        chain_height: None,
        images: Default::default(),
        artifacts,
    })
}

fn collect_files(
    root: &Path,
    dir: &Path,
    out: &mut Vec<(PathBuf, Vec<u8>, u32)>,
) -> Result<(), RestoreError> {
    let rd = fs::read_dir(dir).map_err(|e| daon_common::Error::io("reading", dir, e))?;
    for e in rd.flatten() {
        let p = e.path();
        let meta =
            fs::symlink_metadata(&p).map_err(|e| daon_common::Error::io("reading", &p, e))?;
        if meta.is_dir() {
            collect_files(root, &p, out)?;
        } else if meta.is_file() {
            let bytes = fs::read(&p).map_err(|e| daon_common::Error::io("reading", &p, e))?;
            let rel = p.strip_prefix(root).unwrap_or(&p).to_path_buf();
            out.push((rel, bytes, meta.permissions().mode() & 0o7777));
        }
    }
    Ok(())
}

fn stage_chain(
    p: &ChainPaths,
    st: &SetInfo,
    m: &Manifest,
    prefix: &Path,
    say: &dyn Fn(&str),
) -> Result<(), RestoreError> {
    let a = m
        .artifact(Kind::Chain)
        .ok_or_else(|| RestoreError::Failed("no chain artifact".into()))?;
    if p.staging.exists() {
        fs::remove_dir_all(&p.staging).map_err(|e| {
            daon_common::Error::io("removing an old staging directory", &p.staging, e)
        })?;
    }
    fs::create_dir(&p.staging).map_err(|e| daon_common::Error::io("creating", &p.staging, e))?;
    say(&format!(
        "extracting {} into {}",
        a.file,
        p.staging.display()
    ));
    let r = verify::open(&st.path, a)
        .map_err(|e| daon_common::Error::io("reading", st.path.join(&a.file), e))?;
    let result = archive::extract_under(r, &p.staging, archive::is_root(), prefix);
    let stats = match result {
        Ok(x) => x,
        Err(e) => {
            let _ = fs::remove_dir_all(&p.staging);
            return Err(RestoreError::Refused {
                set: st.name.clone(),
                problems: vec![format!("{}: {e}", a.file)],
            });
        }
    };
    if a.files.is_some() && (Some(stats.files) != a.files || Some(stats.file_bytes) != a.file_bytes)
    {
        let _ = fs::remove_dir_all(&p.staging);
        return Err(RestoreError::Refused {
            set: st.name.clone(),
            problems: vec![format!(
                "{}: extracted {} files / {} bytes, the manifest says {:?} / {:?}",
                a.file, stats.files, stats.file_bytes, a.files, a.file_bytes
            )],
        });
    }
    // The volume root keeps its owner and mode.
    if let Ok(meta) = fs::metadata(&p.live) {
        let _ = std::os::unix::fs::chown(&p.staging, Some(meta.uid()), Some(meta.gid()));
        let _ = fs::set_permissions(&p.staging, fs::Permissions::from_mode(meta.mode() & 0o7777));
    }
    let _ = atomic::sync_dir(&p.staging);
    Ok(())
}
