//! daon-restore: puts a daon-backup set back into the stack without making
//! things worse — the set is verified against its manifest before anything is
//! touched, hostile archive entries are rejected by name, the database is
//! restored in one transaction, the chain data is extracted beside the volume
//! and swapped in (the old data kept until the stack is healthy, put back if
//! not) — and `drill` restores into a throwaway PostgreSQL to prove a set works.

pub mod drill;
pub mod restore;

use clap::{CommandFactory, Parser, Subcommand};
use daon_backup::set::{self, Kind, Manifest, SetInfo, SetKind};
use daon_common::config::{self, Config, Loaded, Source};
use daon_common::notify::{self, Report};
use daon_common::{Error, ExitCode};
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

const AFTER_HELP: &str = "\
Examples:
  daon-restore --dry-run                      # verify the newest set and print the plan; change nothing
  daon-restore latest --yes                   # restore everything from the newest set
  daon-restore 20261201T020000Z --only db --yes
  daon-restore drill                          # monthly drill: throwaway PostgreSQL, row counts, chain extract
  daon-restore /old/backups/20261101-020000 --allow-unverified --only db --yes   # runbook layout

Before touching anything the set is verified (sizes, SHA-256, every archive read to its end, row
counts); any mismatch or hostile archive entry (absolute path, `..`, a link leading outside, a
device file) refuses the restore and names it. Then: config files are replaced atomically (.env
mode 0600); the API containers are stopped while the database is restored by psql with
ON_ERROR_STOP in a single transaction (a failure leaves the old data); the chain data is
extracted into <volume>/_data.daon-restore-staging and swapped in while the node is stopped, the
old data kept as _data.daon-restore-old-<time> until the health check passes, and put back if it
does not. Exit 0 only if the stack is healthy afterwards.";

/// Command line of daon-restore.
#[derive(Debug, Parser)]
#[command(
    name = "daon-restore",
    version,
    about = "Restore a daon-backup set into the DAON stack, or drill a restore into a throwaway database",
    after_help = "See --help for examples, what happens in which order, and exit codes."
)]
pub struct Cli {
    /// Set name, folder, or `latest`
    #[arg(default_value = "latest")]
    pub set: String,

    /// Config file (see --help for the search path)
    #[arg(short, long, value_name = "PATH", env = "DAON_CONFIG", global = true)]
    pub config: Option<PathBuf>,

    /// Backup directory (default: paths.backup_dir)
    #[arg(long, value_name = "DIR", global = true)]
    pub dest: Option<PathBuf>,

    /// Print JSON Lines (records with a `type`, then a `summary`)
    #[arg(long, global = true)]
    pub json: bool,

    /// Print only errors
    #[arg(short, long, global = true)]
    pub quiet: bool,

    /// Wait this long for a running backup or restore (default: backup.lock_wait)
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, global = true)]
    pub lock_wait: Option<Duration>,

    /// Only these parts: db, chain, config (comma-separated)
    #[arg(long, value_name = "LIST", value_delimiter = ',', global = true)]
    pub only: Vec<String>,

    /// Verify and print the plan; change nothing
    #[arg(long)]
    pub dry_run: bool,

    /// Do not ask for confirmation (needed when stdin is not a terminal)
    #[arg(short, long)]
    pub yes: bool,

    /// Accept a set without a manifest (the runbooks' layout): it cannot be verified
    #[arg(long)]
    pub allow_unverified: bool,

    /// How long the stack may take to become healthy after the restore
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, default_value = "2m")]
    pub health_timeout: Duration,

    /// Print the effective configuration (secrets redacted) and exit
    #[arg(long, global = true)]
    pub print_config: bool,

    #[command(subcommand)]
    pub command: Option<Sub>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Sub {
    /// Restore the set into a throwaway PostgreSQL and a temporary directory, compare with the manifest; never touches the stack
    Drill {
        /// Set name, folder, or `latest`
        #[arg(default_value = "latest")]
        set: String,
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

/// Errors that stop daon-restore; each knows its exit code.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    /// From the shared library.
    #[error(transparent)]
    Common(#[from] Error),
    /// Bad command line.
    #[error("{0}")]
    Usage(String),
    /// The set does not verify or holds hostile entries: nothing was touched (exit 1).
    #[error("refusing to restore {set}; nothing was changed:\n  {}", .problems.join("\n  "))]
    Refused {
        /// Set name.
        set: String,
        /// What is wrong.
        problems: Vec<String>,
    },
    /// No such set (exit 1).
    #[error("{0}")]
    NotFound(String),
    /// A step failed (exit 74), with what state things are in.
    #[error("{0}")]
    Failed(String),
    /// The stack is not healthy after the restore (exit 1).
    #[error("{0}")]
    Unhealthy(String),
    /// The drill found a difference (exit 1).
    #[error("drill failed:\n  {}", .0.join("\n  "))]
    Drill(Vec<String>),
}

impl RestoreError {
    /// The exit code.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            RestoreError::Common(e) => e.exit_code(),
            RestoreError::Usage(_) => ExitCode::Usage,
            RestoreError::Refused { .. }
            | RestoreError::NotFound(_)
            | RestoreError::Unhealthy(_)
            | RestoreError::Drill(_) => ExitCode::Negative,
            RestoreError::Failed(_) => ExitCode::Io,
        }
    }
}

/// What to do.
#[derive(Debug, Clone)]
pub enum Action {
    /// Restore.
    Restore,
    /// Drill.
    Drill,
    /// Print config.
    PrintConfig,
}

/// A run, once flags, environment and file are merged.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Effective config.
    pub config: Config,
    /// Where it came from.
    pub source: Source,
    /// Which set.
    pub set: String,
    /// Parts to restore.
    pub only: Vec<Kind>,
    /// Only verify and plan.
    pub dry_run: bool,
    /// No confirmation.
    pub yes: bool,
    /// Accept sets without a manifest.
    pub allow_unverified: bool,
    /// Health wait.
    pub health_timeout: Duration,
    /// JSON output.
    pub json: bool,
    /// Quiet.
    pub quiet: bool,
    /// Lock wait.
    pub lock_wait: Duration,
    /// What to do.
    pub action: Action,
}

impl Settings {
    /// Merges flags over the loaded config.
    pub fn from_cli(cli: Cli, loaded: Loaded) -> Result<Settings, RestoreError> {
        let Loaded {
            mut config, source, ..
        } = loaded;
        if let Some(d) = cli.dest {
            config.paths.backup_dir = d;
        }
        let only = daon_backup::parse_only(&cli.only).map_err(RestoreError::Usage)?;
        let (action, set) = match (cli.print_config, cli.command) {
            (true, _) => (Action::PrintConfig, cli.set),
            (false, Some(Sub::Drill { set })) => (Action::Drill, set),
            (false, None) => (Action::Restore, cli.set),
        };
        Ok(Settings {
            lock_wait: cli.lock_wait.unwrap_or(config.backup.lock_wait),
            config,
            source,
            set,
            only,
            dry_run: cli.dry_run,
            yes: cli.yes,
            allow_unverified: cli.allow_unverified,
            health_timeout: cli.health_timeout,
            json: cli.json,
            quiet: cli.quiet,
            action,
        })
    }

    /// Prints a progress message on stderr unless quiet.
    pub fn say(&self, m: &str) {
        if !self.quiet && !self.json {
            eprintln!("daon-restore: {m}");
        }
    }
}

/// Finds the set and verifies the parts asked for: the manifest-less runbook
/// layout only with `--allow-unverified`; any mismatch refuses.
pub fn resolve_and_verify(s: &Settings) -> Result<(SetInfo, Option<Manifest>), RestoreError> {
    let st = set::resolve(&s.config.paths.backup_dir, &s.set).map_err(RestoreError::NotFound)?;
    match &st.kind {
        SetKind::Broken(why) => Err(RestoreError::Refused {
            set: st.name.clone(),
            problems: vec![why.clone()],
        }),
        SetKind::Runbook(files) => {
            if !s.allow_unverified {
                return Err(RestoreError::Refused {
                    set: st.name.clone(),
                    problems: vec![format!(
                        "{} is in the runbook layout ({}) and has no manifest: it cannot be verified; pass --allow-unverified to use it anyway",
                        st.name,
                        files.join(", ")
                    )],
                });
            }
            s.say(&format!(
                "WARNING: {} has no manifest and cannot be verified (--allow-unverified)",
                st.name
            ));
            Ok((st.clone(), None))
        }
        SetKind::Complete(m) => {
            for k in &s.only {
                if m.artifact(*k).is_none() && s.only.len() < 3 {
                    return Err(RestoreError::Usage(format!(
                        "set {} has no {} artifact",
                        st.name,
                        k.flag()
                    )));
                }
            }
            s.say(&format!("verifying {} before touching anything", st.name));
            let checks = daon_backup::verify::set(&st.path, m, &s.only);
            let problems: Vec<String> = checks.into_iter().flat_map(|c| c.problems).collect();
            if !problems.is_empty() {
                return Err(RestoreError::Refused {
                    set: st.name.clone(),
                    problems,
                });
            }
            Ok((st.clone(), Some((**m).clone())))
        }
    }
}

/// Runs the tool.
pub fn run(s: &Settings, out: &mut impl Write) -> Result<ExitCode, RestoreError> {
    run_reported(s, out, &mut Report::default())
}

/// Whether this run sends a success/failure notification (a restore or a
/// drill; not a dry run).
pub fn notifies(s: &Settings) -> bool {
    !s.dry_run && !matches!(s.action, Action::PrintConfig)
}

/// [`run`], also filling `report` for the run's notification.
pub fn run_reported(
    s: &Settings,
    out: &mut impl Write,
    report: &mut Report,
) -> Result<ExitCode, RestoreError> {
    let io = |e: std::io::Error| RestoreError::Common(Error::io("writing", "standard output", e));
    match s.action {
        Action::PrintConfig => {
            write!(out, "{}", s.config.effective_toml(&s.source)?).map_err(io)?;
            Ok(ExitCode::Ok)
        }
        Action::Restore => restore::run(s, out, report),
        Action::Drill => drill::run(s, out, report),
    }
}

/// Parse, load, run: what `main` calls.
pub fn main_with(args: impl IntoIterator<Item = std::ffi::OsString>) -> ExitCode {
    let cli: Cli = match daon_common::cli::parse(command(), args, ExitCode::Usage.code()) {
        Ok(c) => c,
        Err(0) => return ExitCode::Ok,
        Err(_) => return ExitCode::Usage,
    };
    daon_backup::install_signal_handlers();
    let result = Config::load(cli.config.as_deref())
        .map_err(RestoreError::from)
        .and_then(|loaded| Settings::from_cli(cli, loaded))
        .and_then(|s| {
            if matches!(s.action, Action::PrintConfig) {
                return run(&s, &mut std::io::stdout().lock());
            }
            let what = match s.action {
                Action::Drill => "restore drill",
                _ => "restore",
            };
            notify::monitored(
                &s.config.notify,
                &s.config.paths.state_dir,
                "daon-restore",
                notifies(&s),
                &format!("{what} of {}", s.set),
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
            eprintln!("daon-restore: error: {e}");
            e.exit_code()
        }
    }
}
