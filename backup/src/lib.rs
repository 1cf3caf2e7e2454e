//! daon-backup: one verified, atomically committed backup set of the whole
//! DAON stack — the PostgreSQL dump, the chain data volume and the compose
//! config — streamed through multi-threaded zstd (or gzip) with a checksummed
//! manifest; plus `list`, `verify` and `prune`. The set format lives in
//! [`set`] and [`verify`] so daon-restore reads exactly what this writes.

pub mod archive;
pub mod codec;
pub mod create;
pub mod fresh;
pub mod prune;
pub mod push;
pub mod set;
pub mod sql;
pub mod verify;

use clap::{CommandFactory, Parser, Subcommand};
use daon_common::config::{self, ChainDataSource, Compression, Config, Loaded, Source};
use daon_common::notify::{self, Report};
use daon_common::{lock, output, Error, ExitCode};
use serde_json::json;
use set::{Kind, SetKind};
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

const AFTER_HELP: &str = "\
Examples:
  daon-backup                                  # database + chain data + config into <paths.backup_dir>/<UTC time>/
  daon-backup --tag pre-migration --only db    # just the database, kept by prune
  daon-backup --stop daon-blockchain           # stop the chain node while its data is archived
  daon-backup --compression gzip               # .tar.gz / .sql.gz for tools without zstd
  daon-backup --prune                          # then apply the retention policy (only if the backup worked)
  daon-backup list --json
  daon-backup verify latest                    # re-hash, decompress and list every artifact
  daon-backup prune --keep-daily 7 --keep-weekly 4 --keep-monthly 6 --dry-run
  30 2 * * * daon-backup --quiet --prune || mail -s 'DAON backup failed' ops@example.org

A set is a folder <UTC time>[-<tag>]/ holding database.sql.zst, chain.tar.zst, config.tar.zst and
manifest.json (sizes, SHA-256, row counts per table, chain id and height, image ids). It is written
under .partial-<name> and renamed into place only when complete; `list`, `verify`, daon-restore and
`prune` never take a partial folder for a set. By hand, in an emergency:
  zstd -dc database.sql.zst | docker exec -i daon-postgres psql -U daon -d daon -v ON_ERROR_STOP=1 --single-transaction
  tar --zstd -xf chain.tar.zst -C /path/to/empty/chain/dir";

/// Command line of daon-backup.
#[derive(Debug, Parser)]
#[command(
    name = "daon-backup",
    version,
    about = "Back up the DAON stack (database, chain data, config) into a verified, atomically committed set",
    after_help = "See --help for examples, the set layout and exit codes."
)]
pub struct Cli {
    /// Config file (see --help for the search path)
    #[arg(short, long, value_name = "PATH", env = "DAON_CONFIG", global = true)]
    pub config: Option<PathBuf>,

    /// Print JSON Lines (records with a `type`, then a `summary`)
    #[arg(long, global = true)]
    pub json: bool,

    /// Print only errors (for cron)
    #[arg(short, long, global = true)]
    pub quiet: bool,

    /// Wait this long for another backup or restore to finish (default: backup.lock_wait)
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, global = true)]
    pub lock_wait: Option<Duration>,

    /// Backup directory (default: paths.backup_dir)
    #[arg(long, value_name = "DIR", global = true)]
    pub dest: Option<PathBuf>,

    /// Print the effective configuration (secrets redacted) and exit
    #[arg(long, global = true)]
    pub print_config: bool,

    /// Only these artifacts: db, chain, config (comma-separated)
    #[arg(long, value_name = "LIST", value_delimiter = ',')]
    pub only: Vec<String>,

    /// Tag appended to the set name (letters, digits, . _ -); tagged sets are not pruned
    #[arg(long, value_name = "NAME")]
    pub tag: Option<String>,

    /// zstd (default, multi-threaded) or gzip
    #[arg(long, value_name = "ALGO", value_parser = ["zstd", "gzip"])]
    pub compression: Option<String>,

    /// zstd level (default: backup.zstd_level)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(i32).range(1..=19))]
    pub level: Option<i32>,

    /// Compression threads (0: one per core)
    #[arg(long, value_name = "N")]
    pub threads: Option<u32>,

    /// Stop this container while the chain data is archived, start it afterwards (repeatable)
    #[arg(long, value_name = "SERVICE")]
    pub stop: Vec<String>,

    /// Where the chain data is read from: auto, host, exec, helper
    #[arg(long, value_name = "HOW", value_parser = ["auto", "host", "exec", "helper"])]
    pub chain_source: Option<String>,

    /// After a successful backup, apply the retention policy (backup.keep_*)
    #[arg(long)]
    pub prune: bool,

    /// Say what would be backed up, and do nothing
    #[arg(long)]
    pub dry_run: bool,

    #[command(subcommand)]
    pub command: Option<Sub>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Sub {
    /// List the sets in the backup directory (complete, runbook layout, broken)
    List,
    /// Re-hash every artifact against the manifest, decompress and list it; exit 1 on any mismatch
    Verify {
        /// Set name, folder, or `latest`
        #[arg(default_value = "latest")]
        set: String,
    },
    /// Extract a tar artifact (chain or config) of a set into an empty directory, safely
    /// (hostile entries refused), after verifying it
    Extract {
        /// Set name, folder, or `latest`
        #[arg(default_value = "latest")]
        set: String,
        /// Which artifact: chain or config
        #[arg(long, value_name = "KIND", default_value = "chain", value_parser = ["chain", "config"])]
        kind: String,
        /// Target directory (created if missing; must be empty)
        #[arg(long, value_name = "DIR")]
        to: PathBuf,
        /// Skip verifying the set first (it is still checked entry by entry)
        #[arg(long)]
        no_verify: bool,
    },
    /// Copy a verified set off-site with rclone (any rclone remote, or a path); the manifest goes
    /// last, so a half-pushed set has none. --encrypt-to encrypts each artifact with age
    Push {
        /// Set name, folder, or `latest`
        #[arg(default_value = "latest")]
        set: String,
        /// rclone destination (`remote:bucket/daon`, or a local path); the set goes into <REMOTE>/<set name>/
        #[arg(long, value_name = "REMOTE")]
        to: String,
        /// Encrypt every artifact to this age recipient (`age1...`, or an ssh public key); repeatable
        #[arg(long, value_name = "RECIPIENT")]
        encrypt_to: Vec<String>,
    },
    /// Delete sets the retention policy does not keep (never the newest verified, never tagged ones)
    Prune {
        /// Keep the newest N sets
        #[arg(long, value_name = "N")]
        keep_last: Option<u32>,
        /// Keep the newest set of each of the last N days that have one
        #[arg(long, value_name = "N")]
        keep_daily: Option<u32>,
        /// Keep the newest set of each of the last N ISO weeks that have one
        #[arg(long, value_name = "N")]
        keep_weekly: Option<u32>,
        /// Keep the newest set of each of the last N months that have one
        #[arg(long, value_name = "N")]
        keep_monthly: Option<u32>,
        /// Apply the policy to tagged sets too
        #[arg(long)]
        include_tagged: bool,
        /// Say what would be deleted, and delete nothing
        #[arg(long)]
        dry_run: bool,
    },
}

/// The clap command, for man pages and completions.
pub fn command() -> clap::Command {
    daon_common::cli::with_subcommand_help(Cli::command().after_long_help(format!(
        "{AFTER_HELP}\n\n{}\n\n{}",
        daon_common::exit::EXIT_CODES_HELP,
        config::SEARCH_PATH_HELP
    )))
}

/// Errors that stop daon-backup; each knows its exit code.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    /// From the shared library (config 78, Docker 69, lock 75, I/O 74...).
    #[error(transparent)]
    Common(#[from] Error),
    /// Bad command line.
    #[error("{0}")]
    Usage(String),
    /// An artifact could not be produced; nothing was committed.
    #[error("backup failed; no set was committed (older sets are untouched):\n  {}", .0.join("\n  "))]
    Failed(Vec<String>),
    /// A set does not verify (exit 1).
    #[error("verification failed:\n  {}", .0.join("\n  "))]
    Mismatch(Vec<String>),
    /// No such set (exit 1).
    #[error("{0}")]
    NotFound(String),
}

impl BackupError {
    /// The exit code for this error.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            BackupError::Common(e) => e.exit_code(),
            BackupError::Usage(_) => ExitCode::Usage,
            BackupError::Failed(_) => ExitCode::Io,
            BackupError::Mismatch(_) | BackupError::NotFound(_) => ExitCode::Negative,
        }
    }
}

/// What to do.
#[derive(Debug, Clone)]
pub enum Action {
    /// Make a set (then maybe prune).
    Create {
        /// Options.
        opts: create::Options,
        /// Prune after success.
        prune: bool,
        /// Only print the plan.
        dry_run: bool,
    },
    /// List sets.
    List,
    /// Verify a set.
    Verify(String),
    /// Push a set off-site.
    Push {
        /// Set.
        set: String,
        /// rclone destination.
        to: String,
        /// age recipients.
        encrypt_to: Vec<String>,
    },
    /// Extract an artifact.
    Extract {
        /// Set.
        set: String,
        /// Artifact kind.
        kind: Kind,
        /// Target directory.
        to: PathBuf,
        /// Skip verification.
        no_verify: bool,
    },
    /// Prune.
    Prune {
        /// Policy.
        policy: prune::Policy,
        /// Delete nothing.
        dry_run: bool,
    },
    /// Print the config.
    PrintConfig,
}

/// A run, once flags, environment and file are merged.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Effective config.
    pub config: Config,
    /// Where it came from.
    pub source: Source,
    /// Backup directory.
    pub dest: PathBuf,
    /// JSON Lines output.
    pub json: bool,
    /// Only errors.
    pub quiet: bool,
    /// Lock wait.
    pub lock_wait: Duration,
    /// What to do.
    pub action: Action,
}

/// Parses `--only` words.
pub fn parse_only(words: &[String]) -> Result<Vec<Kind>, String> {
    let mut out = Vec::new();
    for w in words {
        let k = Kind::parse(w.trim())
            .ok_or_else(|| format!("--only: unknown artifact {w:?} (use db, chain, config)"))?;
        if !out.contains(&k) {
            out.push(k);
        }
    }
    if out.is_empty() {
        out = vec![Kind::Database, Kind::Chain, Kind::Config];
    }
    Ok(out)
}

impl Settings {
    /// Merges flags over the loaded config.
    pub fn from_cli(cli: Cli, loaded: Loaded) -> Result<Settings, BackupError> {
        let Loaded {
            mut config, source, ..
        } = loaded;
        let b = config.backup.clone();
        let dest = cli.dest.unwrap_or_else(|| config.paths.backup_dir.clone());
        config.paths.backup_dir = dest.clone();
        let policy =
            |last: Option<u32>, d: Option<u32>, w: Option<u32>, m: Option<u32>, t| prune::Policy {
                keep_last: last.unwrap_or(b.keep_last),
                keep_daily: d.unwrap_or(b.keep_daily),
                keep_weekly: w.unwrap_or(b.keep_weekly),
                keep_monthly: m.unwrap_or(b.keep_monthly),
                include_tagged: t,
            };
        let action = if cli.print_config {
            Action::PrintConfig
        } else {
            match cli.command {
                Some(Sub::List) => Action::List,
                Some(Sub::Verify { set }) => Action::Verify(set),
                Some(Sub::Push {
                    set,
                    to,
                    encrypt_to,
                }) => Action::Push {
                    set,
                    to,
                    encrypt_to,
                },
                Some(Sub::Extract {
                    set,
                    kind,
                    to,
                    no_verify,
                }) => Action::Extract {
                    set,
                    kind: Kind::parse(&kind).unwrap_or(Kind::Chain),
                    to,
                    no_verify,
                },
                Some(Sub::Prune {
                    keep_last,
                    keep_daily,
                    keep_weekly,
                    keep_monthly,
                    include_tagged,
                    dry_run,
                }) => Action::Prune {
                    policy: policy(
                        keep_last,
                        keep_daily,
                        keep_weekly,
                        keep_monthly,
                        include_tagged,
                    ),
                    dry_run,
                },
                None => {
                    if let Some(t) = &cli.tag {
                        if !set::valid_tag(t) {
                            return Err(BackupError::Usage(format!(
                                "--tag {t:?}: use letters, digits, '.', '_' and '-' (at most 64)"
                            )));
                        }
                    }
                    let compression = match cli.compression.as_deref() {
                        Some("gzip") => Compression::Gzip,
                        Some(_) => Compression::Zstd,
                        None => b.compression,
                    };
                    let chain_source = match cli.chain_source.as_deref() {
                        Some("host") => ChainDataSource::Host,
                        Some("exec") => ChainDataSource::Exec,
                        Some("helper") => ChainDataSource::Helper,
                        Some(_) => ChainDataSource::Auto,
                        None => b.chain_source,
                    };
                    let mut stop = b.stop.clone();
                    stop.extend(cli.stop);
                    Action::Create {
                        opts: create::Options {
                            only: parse_only(&cli.only).map_err(BackupError::Usage)?,
                            tag: cli.tag,
                            dest: dest.clone(),
                            compression,
                            level: cli.level.unwrap_or(b.zstd_level),
                            threads: cli.threads.unwrap_or(b.threads),
                            stop,
                            chain_source,
                        },
                        prune: cli.prune,
                        dry_run: cli.dry_run,
                    }
                }
            }
        };
        Ok(Settings {
            dest,
            json: cli.json,
            quiet: cli.quiet,
            lock_wait: cli.lock_wait.unwrap_or(b.lock_wait),
            config,
            source,
            action,
        })
    }
}

fn io_out(e: std::io::Error) -> BackupError {
    BackupError::Common(Error::io("writing", "standard output", e))
}

/// Takes the lock shared by daon-backup and daon-restore.
pub fn take_lock(config: &Config, wait: Duration, what: &str) -> Result<lock::LockGuard, Error> {
    lock::acquire(&config.paths.lock_dir.join(set::LOCK_FILE), wait, what)
}

/// Runs the tool. Data goes to `out`, messages to stderr.
pub fn run(s: &Settings, out: &mut impl Write) -> Result<ExitCode, BackupError> {
    run_reported(s, out, &mut Report::default())
}

/// Whether this run sends a success/failure notification: the runs that
/// write or delete sets (not list, verify, extract, dry runs).
pub fn notifies(a: &Action) -> bool {
    matches!(
        a,
        Action::Create { dry_run: false, .. }
            | Action::Prune { dry_run: false, .. }
            | Action::Push { .. }
    )
}

/// The subject of this run's notification before anything is known.
fn subject(a: &Action) -> String {
    match a {
        Action::Create { opts, .. } => format!(
            "backup{} of {}",
            opts.tag
                .as_ref()
                .map(|t| format!(" --tag {t}"))
                .unwrap_or_default(),
            opts.only
                .iter()
                .map(|k| k.flag())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Action::Prune { .. } => "prune".into(),
        Action::Push { set, .. } => format!("push of {set}"),
        Action::List => "list".into(),
        Action::Verify(set) => format!("verify {set}"),
        Action::Extract { set, .. } => format!("extract from {set}"),
        Action::PrintConfig => "print-config".into(),
    }
}

/// [`run`], also filling `report` for the run's notification (set name,
/// size, duration).
pub fn run_reported(
    s: &Settings,
    out: &mut impl Write,
    report: &mut Report,
) -> Result<ExitCode, BackupError> {
    let quiet = s.quiet || s.json;
    let say = move |m: &str| {
        if !quiet {
            eprintln!("daon-backup: {m}");
        }
    };
    match &s.action {
        Action::PrintConfig => {
            write!(out, "{}", s.config.effective_toml(&s.source)?).map_err(io_out)?;
            Ok(ExitCode::Ok)
        }
        Action::List => list(s, out),
        Action::Verify(which) => verify_cmd(s, which, out),
        Action::Push {
            set,
            to,
            encrypt_to,
        } => {
            let _lock = take_lock(&s.config, s.lock_wait, "daon-backup push")?;
            report.set("set", set.clone());
            report.set("encrypted", !encrypt_to.is_empty());
            push::push(s, set, to, encrypt_to, out)
        }
        Action::Extract {
            set,
            kind,
            to,
            no_verify,
        } => extract_cmd(s, set, *kind, to, *no_verify, out),
        Action::Prune { policy, dry_run } => {
            let _lock = take_lock(&s.config, s.lock_wait, "daon-backup prune")?;
            prune_cmd(s, policy, *dry_run, out, report)
        }
        Action::Create {
            opts,
            prune,
            dry_run,
        } => {
            if *dry_run {
                let kinds: Vec<&str> = opts.only.iter().map(|k| k.flag()).collect();
                writeln!(
                    out,
                    "would back up {} into {}/<UTC time>{} with {}{}",
                    kinds.join(", "),
                    opts.dest.display(),
                    opts.tag
                        .as_ref()
                        .map(|t| format!("-{t}"))
                        .unwrap_or_default(),
                    codec::name(opts.compression),
                    if opts.stop.is_empty() {
                        String::new()
                    } else {
                        format!(
                            ", stopping {} during the chain archive",
                            opts.stop.join(", ")
                        )
                    }
                )
                .map_err(io_out)?;
                return Ok(ExitCode::Ok);
            }
            let what = format!(
                "daon-backup{}",
                opts.tag
                    .as_ref()
                    .map(|t| format!(" --tag {t}"))
                    .unwrap_or_default()
            );
            let _lock = take_lock(&s.config, s.lock_wait, &what)?;
            let c = create::create(&s.config, opts, &say)?;
            for n in &c.notes {
                say(&format!("note: {n}"));
            }
            let secs = c.duration.as_secs_f64();
            let raw: u64 = c
                .manifest
                .artifacts
                .iter()
                .map(|a| a.uncompressed_size)
                .sum();
            report.subject = format!(
                "set {}: {} in {secs:.1} s",
                c.manifest.name,
                create::human_bytes(c.manifest.size())
            );
            report.set("set", c.manifest.name.clone());
            report.set("path", c.path.display().to_string());
            report.set("size", c.manifest.size());
            report.set("size_human", create::human_bytes(c.manifest.size()));
            report.set("uncompressed_size", raw);
            report.set("duration_ms", c.duration.as_millis() as u64);
            report.set(
                "artifacts",
                c.manifest
                    .artifacts
                    .iter()
                    .map(|a| a.file.clone())
                    .collect::<Vec<_>>(),
            );
            if s.json {
                for a in &c.manifest.artifacts {
                    output::json_line(out, "artifact", serde_json::to_value(a).unwrap_or_default())
                        .map_err(io_out)?;
                }
                output::json_line(
                    out,
                    "summary",
                    json!({
                        "status": "ok",
                        "set": c.manifest.name,
                        "path": c.path,
                        "size": c.manifest.size(),
                        "uncompressed_size": raw,
                        "duration_ms": c.duration.as_millis() as u64,
                        "throughput_mb_s": raw as f64 / 1e6 / secs.max(1e-9),
                        "cleaned_partials": c.cleaned,
                        "notes": c.notes,
                    }),
                )
                .map_err(io_out)?;
            } else {
                writeln!(out, "{}", c.path.display()).map_err(io_out)?;
                say(&format!(
                    "set {} complete: {} ({} before compression) in {:.1} s, {:.0} MB/s",
                    c.manifest.name,
                    create::human_bytes(c.manifest.size()),
                    create::human_bytes(raw),
                    secs,
                    raw as f64 / 1e6 / secs.max(1e-9)
                ));
            }
            if *prune {
                let b = &s.config.backup;
                let policy = prune::Policy {
                    keep_last: b.keep_last,
                    keep_daily: b.keep_daily,
                    keep_weekly: b.keep_weekly,
                    keep_monthly: b.keep_monthly,
                    include_tagged: false,
                };
                return prune_cmd(s, &policy, false, &mut std::io::sink(), report);
            }
            Ok(ExitCode::Ok)
        }
    }
}

fn list(s: &Settings, out: &mut impl Write) -> Result<ExitCode, BackupError> {
    let sets = set::list(&s.dest).map_err(|e| Error::io("reading", &s.dest, e))?;
    for st in &sets {
        let (status, size, arts, tag) = match &st.kind {
            SetKind::Complete(m) => (
                "complete",
                m.size(),
                m.artifacts
                    .iter()
                    .map(|a| a.kind.flag())
                    .collect::<Vec<_>>()
                    .join(","),
                m.tag.clone().unwrap_or_default(),
            ),
            SetKind::Runbook(f) => ("runbook-unverifiable", 0, f.join(","), String::new()),
            SetKind::Broken(_) => ("broken", 0, String::new(), String::new()),
        };
        if s.json {
            let mut v = json!({
                "name": st.name, "path": st.path, "status": status,
                "created": st.created.to_rfc3339(), "size": size, "artifacts": arts, "tag": tag,
            });
            if let SetKind::Broken(why) = &st.kind {
                v["error"] = json!(why);
            }
            if let Some(m) = st.manifest() {
                v["chain_height"] = json!(m.chain_height);
            }
            output::json_line(out, "set", v).map_err(io_out)?;
        } else {
            writeln!(
                out,
                "{:<32} {:<21} {:>9}  {:<18} {}",
                st.name,
                status,
                if size > 0 {
                    create::human_bytes(size)
                } else {
                    "-".into()
                },
                arts,
                tag
            )
            .map_err(io_out)?;
        }
    }
    if s.json {
        let complete = sets.iter().filter(|x| x.manifest().is_some()).count();
        output::json_line(
            out,
            "summary",
            json!({"sets": sets.len(), "complete": complete}),
        )
        .map_err(io_out)?;
    }
    Ok(ExitCode::Ok)
}

fn verify_cmd(s: &Settings, which: &str, out: &mut impl Write) -> Result<ExitCode, BackupError> {
    let st = set::resolve(&s.dest, which).map_err(BackupError::NotFound)?;
    let m = match &st.kind {
        SetKind::Complete(m) => m,
        SetKind::Runbook(f) => {
            return Err(BackupError::Mismatch(vec![format!(
                "{} is in the runbook layout ({}) without a manifest: it cannot be verified",
                st.name,
                f.join(", ")
            )]))
        }
        SetKind::Broken(why) => return Err(BackupError::Mismatch(vec![why.clone()])),
    };
    let results = verify::set(&st.path, m, &[]);
    let mut problems = Vec::new();
    for r in &results {
        if s.json {
            output::json_line(
                out,
                "artifact",
                json!({"file": r.file, "kind": r.kind, "ok": r.ok(), "problems": r.problems, "seconds": r.seconds}),
            )
            .map_err(io_out)?;
        } else if !s.quiet {
            writeln!(
                out,
                "{:<20} {}",
                r.file,
                if r.ok() {
                    "ok".to_string()
                } else {
                    r.problems.join("; ")
                }
            )
            .map_err(io_out)?;
        }
        problems.extend(r.problems.iter().cloned());
    }
    if s.json {
        output::json_line(
            out,
            "summary",
            json!({"set": st.name, "ok": problems.is_empty(), "problems": problems}),
        )
        .map_err(io_out)?;
    }
    if problems.is_empty() {
        Ok(ExitCode::Ok)
    } else {
        Err(BackupError::Mismatch(
            problems
                .into_iter()
                .map(|p| format!("{}/{p}", st.name))
                .collect(),
        ))
    }
}

fn extract_cmd(
    s: &Settings,
    which: &str,
    kind: Kind,
    to: &std::path::Path,
    no_verify: bool,
    out: &mut impl Write,
) -> Result<ExitCode, BackupError> {
    let st = set::resolve(&s.dest, which).map_err(BackupError::NotFound)?;
    let m = st
        .manifest()
        .ok_or_else(|| BackupError::NotFound(format!("{} has no manifest", st.name)))?;
    let a = m.artifact(kind).ok_or_else(|| {
        BackupError::NotFound(format!("{} has no {} artifact", st.name, kind.flag()))
    })?;
    if !no_verify {
        let c = verify::artifact(&st.path, a);
        if !c.ok() {
            return Err(BackupError::Mismatch(c.problems));
        }
    }
    std::fs::create_dir_all(to).map_err(|e| Error::io("creating", to, e))?;
    if std::fs::read_dir(to)
        .map_err(|e| Error::io("reading", to, e))?
        .next()
        .is_some()
    {
        return Err(BackupError::Usage(format!("{} is not empty", to.display())));
    }
    let start = std::time::Instant::now();
    let r =
        verify::open(&st.path, a).map_err(|e| Error::io("reading", st.path.join(&a.file), e))?;
    let x = archive::extract(r, to, archive::is_root())
        .map_err(|e| BackupError::Mismatch(vec![format!("{}: {e}", a.file)]))?;
    let secs = start.elapsed().as_secs_f64();
    if s.json {
        output::json_line(
            out,
            "summary",
            json!({"set": st.name, "file": a.file, "to": to, "files": x.files, "bytes": x.file_bytes, "seconds": secs}),
        )
        .map_err(io_out)?;
    } else {
        writeln!(
            out,
            "{}: {} files, {} extracted into {} in {secs:.1} s",
            a.file,
            x.files,
            create::human_bytes(x.file_bytes),
            to.display()
        )
        .map_err(io_out)?;
    }
    Ok(ExitCode::Ok)
}

fn prune_cmd(
    s: &Settings,
    policy: &prune::Policy,
    dry_run: bool,
    out: &mut impl Write,
    report: &mut Report,
) -> Result<ExitCode, BackupError> {
    let sets = set::list(&s.dest).map_err(|e| Error::io("reading", &s.dest, e))?;
    // The newest set that verifies is never deleted; look for it only when
    // the policy would delete something.
    let first = prune::decide(&sets, policy, None);
    let newest_verified = if first.iter().any(|d| !d.keep) {
        sets.iter()
            .rev()
            .filter_map(|x| x.manifest().map(|m| (x, m)))
            .find(|(x, m)| verify::set(&x.path, m, &[]).iter().all(|r| r.ok()))
            .map(|(x, _)| x.name.clone())
    } else {
        None
    };
    let decisions = prune::decide(&sets, policy, newest_verified.as_deref());
    let mut code = ExitCode::Ok;
    let mut deleted = 0;
    for d in &decisions {
        if !d.keep && !dry_run {
            let p = s.dest.join(&d.name);
            if let Err(e) = std::fs::remove_dir_all(&p) {
                eprintln!("daon-backup: error: deleting {}: {e}", p.display());
                code = code.merge(ExitCode::Io);
                continue;
            }
            deleted += 1;
        }
        if s.json {
            output::json_line(
                out,
                "set",
                json!({"name": d.name, "keep": d.keep, "reasons": d.reasons, "dry_run": dry_run}),
            )
            .map_err(io_out)?;
        } else {
            let verb = match (d.keep, dry_run) {
                (true, _) => "keep",
                (false, true) => "would delete",
                (false, false) => "deleted",
            };
            writeln!(out, "{verb:<13} {:<32} {}", d.name, d.reasons.join(", ")).map_err(io_out)?;
        }
    }
    report.set("pruned", deleted);
    report.set("kept", decisions.iter().filter(|d| d.keep).count());
    if s.json {
        output::json_line(
            out,
            "summary",
            json!({"kept": decisions.iter().filter(|d| d.keep).count(), "deleted": deleted, "dry_run": dry_run}),
        )
        .map_err(io_out)?;
    }
    Ok(code)
}

/// Installs SIGINT/SIGTERM handlers that make long copies stop cleanly (so
/// partial sets are removed and stopped services restarted).
pub fn install_signal_handlers() {
    use std::sync::Arc;
    static FLAG: std::sync::OnceLock<Arc<std::sync::atomic::AtomicBool>> =
        std::sync::OnceLock::new();
    let flag = FLAG.get_or_init(|| Arc::new(std::sync::atomic::AtomicBool::new(false)));
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        let _ = signal_hook::flag::register(sig, flag.clone());
    }
    let flag = flag.clone();
    std::thread::spawn(move || loop {
        if flag.load(std::sync::atomic::Ordering::Relaxed) {
            codec::INTERRUPTED.store(true, std::sync::atomic::Ordering::Relaxed);
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    });
}

/// Parse, load, run: what `main` calls.
pub fn main_with(args: impl IntoIterator<Item = std::ffi::OsString>) -> ExitCode {
    let cli: Cli = match daon_common::cli::parse(command(), args, ExitCode::Usage.code()) {
        Ok(c) => c,
        Err(0) => return ExitCode::Ok,
        Err(_) => return ExitCode::Usage,
    };
    install_signal_handlers();
    let result = Config::load(cli.config.as_deref())
        .map_err(BackupError::from)
        .and_then(|loaded| Settings::from_cli(cli, loaded))
        .and_then(|s| {
            if matches!(s.action, Action::PrintConfig) {
                return run(&s, &mut std::io::stdout().lock());
            }
            notify::monitored(
                &s.config.notify,
                &s.config.paths.state_dir,
                "daon-backup",
                notifies(&s.action),
                &subject(&s.action),
                |out, report| run_reported(&s, out, report),
                |r| match r {
                    Ok(c) => c.code(),
                    Err(e) => e.exit_code().code(),
                },
            )
        });
    match result {
        Ok(code) => code,
        Err(e) if daon_common::error::is_broken_pipe(&e) => ExitCode::Ok,
        Err(e) => {
            eprintln!("daon-backup: error: {e}");
            e.exit_code()
        }
    }
}
