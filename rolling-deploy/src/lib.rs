//! daon-rolling-deploy: replaces the API instances one at a time behind Caddy
//! with zero failed requests — drain through Caddy's admin API, recreate,
//! wait for Docker health exactly `healthy` (respecting the container's start
//! period), watch it, put it back — and rolls every replaced instance back to
//! the recorded image when anything fails. Lock, journal, history, hooks.

pub mod caddy;
pub mod deploy;
pub mod hosts;
pub mod state;

use clap::{Args, CommandFactory, Parser, Subcommand};
use daon_common::config::{self, Config, Loaded, Source};
use daon_common::exit::EXIT_CODES_HELP;
use daon_common::notify::{self, Report};
use daon_common::{Error, ExitCode};
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

const AFTER_HELP: &str = "\
Examples:
  daon-rolling-deploy --image daon-api:1.4.2                # deploy an image CI built
  daon-rolling-deploy --image daon-api:$(git rev-parse --short HEAD) --build ./api-server
  daon-rolling-deploy --image daon-api:1.4.2 --dry-run      # print the plan, change nothing
  daon-rolling-deploy --image daon-api:1.4.2 --json | jq -c 'select(.type==\"summary\")'
  daon-rolling-deploy rollback                              # back to the previous version, same rolling procedure
  daon-rolling-deploy rollback 1.4.0                        # or to any kept version
  daon-rolling-deploy history                               # every deploy and rollback, outcome and timings
  daon-rolling-deploy status                                # instances, lock holder, an unfinished run

Procedure, per instance of the service (one at a time, the others keep serving): drain it
through Caddy's admin API (no new requests; wait until its in-flight ones are done), recreate
it with `compose up -d --no-deps --force-recreate` and the image tag in the compose variable
deploy.image_env, wait for Docker health exactly `healthy` (at least deploy.health_timeout,
longer if the container's start period needs it), put it back into Caddy, watch it for
--monitor. Any failure rolls every replaced instance back to the recorded image (tagged
<repo>:previous), each verified healthy, and exits 1 with the failing container's last log
lines. At the end the API is checked through the load balancer (deploy.health_url) and the
chain status (chain.rpc_url). State: <paths.state_dir>/rolling-deploy.history.jsonl and a
journal while a run is in progress; lock: <paths.lock_dir>/rolling-deploy.lock.
Hooks run with sh -c and DAON_DEPLOY_{KIND,IMAGE,VERSION,PREVIOUS,SERVICE,OUTCOME,HOST} set (HOST: the --host name, empty without).
SIGINT/SIGTERM: the instance being replaced is finished and put back, then the run stops
(exit 130); the next run reports it and carries on.";

/// Command-line flags.
#[derive(Debug, Parser)]
#[command(
    name = "daon-rolling-deploy",
    version,
    about = "Zero-downtime rolling deploy of the DAON API behind Caddy, with automatic rollback",
    after_help = "See --help for examples, the procedure and exit codes."
)]
pub struct Cli {
    /// Config file (see --help for the search path)
    #[arg(short, long, value_name = "PATH", env = "DAON_CONFIG", global = true)]
    pub config: Option<PathBuf>,

    /// Service role to deploy (a key of `services` in the config)
    #[arg(long, value_name = "ROLE", global = true)]
    pub service: Option<String>,

    /// A Docker host to deploy to; repeat for several, deployed in order (the first is the canary)
    #[arg(
        long = "host",
        value_name = "HOST",
        global = true,
        long_help = "A Docker host to deploy to (or roll back, or show in status/history); repeat for several. \
HOST is a [deploy.hosts.NAME] name from the config (its `docker` context or endpoint and its own \
caddy_admin_url, health_url, rpc_url), else a Docker endpoint (ssh://USER@HOST, unix:///PATH, \
tcp://HOST:PORT) or context name, used with the [deploy] and [chain] URLs. Hosts are deployed one \
after the other in the order given, each with the whole rolling procedure; the first is the canary. \
When a host fails (its own instances are rolled back as usual), every host already updated is \
rolled back to its own rollback point, last first, with the same procedure, and the run exits \
non-zero naming the failing host; later hosts are not touched. Each host has its own journal; \
history records carry `host` (and one run_id per multi-host run); --json records carry `host`. \
Without --host: the one configured Docker host (docker.context / docker.host / DOCKER_HOST).\n\
Example: daon-rolling-deploy --image daon-api:1.4.2 --host dc1 --host dc2 --host ssh://deploy@dc3.example"
    )]
    pub hosts: Vec<String>,

    /// Print JSON Lines (a `type` field; a closing `summary`)
    #[arg(long, global = true)]
    pub json: bool,

    /// Print the effective configuration (secrets redacted) and exit
    #[arg(long, global = true)]
    pub print_config: bool,

    /// What to do (default: deploy, with the flags below)
    #[command(subcommand)]
    pub cmd: Option<Sub>,

    #[command(flatten)]
    pub deploy: DeployArgs,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Sub {
    /// Deploy an image (the default)
    Deploy(DeployArgs),
    /// Roll back to the previous version (or VERSION), with the same rolling procedure
    Rollback(RollbackArgs),
    /// Show every deploy and rollback with outcome and timings
    History {
        /// Only the last N runs
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
    },
    /// Show the instances, the lock holder and any unfinished run
    Status,
}

/// Flags of a run that changes instances.
#[derive(Debug, Args, Clone, Default, PartialEq)]
pub struct RunArgs {
    /// Watch each new instance this long after it turned healthy (default: deploy.monitor)
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub monitor: Option<Duration>,

    /// Wait this long for another deploy to finish instead of exiting 75 at once
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub lock_wait: Option<Duration>,

    /// Least time to wait for an instance to become healthy (default: deploy.health_timeout)
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub health_timeout: Option<Duration>,

    /// Print the plan and change nothing
    #[arg(long)]
    pub dry_run: bool,

    /// Run before anything changes (sh -c); a failure aborts the run
    #[arg(long, value_name = "CMD")]
    pub pre_deploy: Option<String>,

    /// Run at the end, whatever the outcome (sh -c; DAON_DEPLOY_OUTCOME says which)
    #[arg(long, value_name = "CMD")]
    pub post_deploy: Option<String>,
}

/// Flags of `deploy`.
#[derive(Debug, Args, Clone, Default, PartialEq)]
pub struct DeployArgs {
    /// Image to deploy, REPO:TAG (e.g. daon-api:1.4.2); the tag goes into deploy.image_env
    #[arg(long, value_name = "REPO:TAG")]
    pub image: Option<String>,

    /// Build the image from this directory first (`docker build -t IMAGE PATH`)
    #[arg(long, value_name = "PATH")]
    pub build: Option<PathBuf>,

    #[command(flatten)]
    pub run: RunArgs,
}

/// Flags of `rollback`.
#[derive(Debug, Args, Clone)]
pub struct RollbackArgs {
    /// Version (tag) to go back to; default: the rollback point of the running version
    pub version: Option<String>,

    #[command(flatten)]
    pub run: RunArgs,
}

/// The clap command, for man pages and completions.
pub fn command() -> clap::Command {
    daon_common::cli::with_subcommand_help(Cli::command().after_long_help(format!(
        "{AFTER_HELP}\n\n{}\n\n{EXIT_CODES_HELP}\n  (1 here: the deploy failed and was rolled back; 70: a rollback failed too, some instance may\n   still run the new version: see `daon-rolling-deploy status`; 130: interrupted)",
        config::SEARCH_PATH_HELP
    )))
}

/// What to do.
#[derive(Debug, Clone)]
pub enum Action {
    /// Deploy `image`, building it first from `build` if given.
    Deploy {
        /// REPO:TAG.
        image: String,
        /// Build context.
        build: Option<PathBuf>,
    },
    /// Roll back to this version, or to the recorded rollback point.
    Rollback(Option<String>),
    /// Print history.
    History(Option<usize>),
    /// Print status.
    Status,
    /// Print config.
    PrintConfig,
}

/// A run, once flags, environment and file are merged.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Effective config (deploy.* already overridden by flags).
    pub config: Config,
    /// Where it came from.
    pub source: Source,
    /// Service role.
    pub service: String,
    /// Containers of that role, in order.
    pub containers: Vec<String>,
    /// JSON Lines output.
    pub json: bool,
    /// Only print the plan.
    pub dry_run: bool,
    /// Lock wait.
    pub lock_wait: Duration,
    /// Hooks.
    pub pre_deploy: Option<String>,
    /// Hooks.
    pub post_deploy: Option<String>,
    /// What to do.
    pub action: Action,
    /// `--host` values resolved, in order; empty: the one configured Docker host.
    pub hosts: Vec<hosts::Host>,
}

/// Why a run stopped, with its exit code.
#[derive(Debug)]
pub struct Failure {
    /// Exit code.
    pub code: ExitCode,
    /// Message (what happened, what to do next).
    pub message: String,
    /// The underlying error, for the broken-pipe check.
    pub source: Option<Error>,
}

impl Failure {
    /// A failure with this code and message.
    pub fn new(code: ExitCode, message: impl Into<String>) -> Failure {
        Failure {
            code,
            message: message.into(),
            source: None,
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<Error> for Failure {
    fn from(e: Error) -> Self {
        Failure {
            code: e.exit_code(),
            message: e.to_string(),
            source: Some(e),
        }
    }
}

impl Settings {
    /// Merges flags over the loaded config (flags > env > file > default).
    pub fn from_cli(cli: Cli, loaded: Loaded) -> Result<Settings, Failure> {
        let Loaded {
            mut config, source, ..
        } = loaded;
        // Deploy flags before a subcommand would be silently ignored: refuse
        // them (global options such as --config and --json are fine anywhere).
        if cli.cmd.is_some() && cli.deploy != DeployArgs::default() {
            return Err(Failure::new(
                ExitCode::Usage,
                "deploy options (--image, --monitor, --dry-run...) go after the subcommand: `daon-rolling-deploy rollback --monitor 5s`, or without one for a deploy",
            ));
        }
        let (action, run) = match cli.cmd {
            _ if cli.print_config => (Action::PrintConfig, RunArgs::default()),
            Some(Sub::Deploy(d)) => deploy_action(d)?,
            None => deploy_action(cli.deploy)?,
            Some(Sub::Rollback(r)) => (Action::Rollback(r.version), r.run),
            Some(Sub::History { limit }) => (Action::History(limit), RunArgs::default()),
            Some(Sub::Status) => (Action::Status, RunArgs::default()),
        };
        if let Some(m) = run.monitor {
            config.deploy.monitor = m;
        }
        if let Some(t) = run.health_timeout {
            config.deploy.health_timeout = t;
        }
        if let Some(s) = cli.service {
            config.deploy.service = s;
        }
        let hosts =
            hosts::resolve(&cli.hosts, &config).map_err(|m| Failure::new(ExitCode::Usage, m))?;
        let service = config.deploy.service.clone();
        let containers = config
            .services
            .get(&service)
            .map(|s| s.containers.clone())
            .unwrap_or_default();
        if containers.is_empty() && !matches!(action, Action::PrintConfig | Action::History(_)) {
            return Err(Failure::new(
                ExitCode::Config,
                format!(
                    "service role {service:?} has no containers in the config (services.{service}.containers); roles: {}",
                    config.services.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            ));
        }
        Ok(Settings {
            config,
            source,
            service,
            containers,
            json: cli.json,
            dry_run: run.dry_run,
            lock_wait: run.lock_wait.unwrap_or(Duration::ZERO),
            pre_deploy: run.pre_deploy,
            post_deploy: run.post_deploy,
            action,
            hosts,
        })
    }
}

fn deploy_action(d: DeployArgs) -> Result<(Action, RunArgs), Failure> {
    let Some(image) = d.image else {
        return Err(Failure::new(
            ExitCode::Usage,
            "nothing to do: give --image REPO:TAG (or a subcommand: rollback, history, status; see --help)",
        ));
    };
    deploy::split_image(&image).map_err(|m| Failure::new(ExitCode::Usage, m))?;
    Ok((
        Action::Deploy {
            image,
            build: d.build,
        },
        d.run,
    ))
}

/// Runs the tool; returns the exit code. Data goes to `out`, messages to stderr.
pub fn run(s: &Settings, out: &mut dyn Write) -> Result<u8, Failure> {
    run_reported(s, out, &mut Report::default())
}

/// Whether this run sends a success/failure notification (a deploy or a
/// rollback that is not a dry run).
pub fn notifies(s: &Settings) -> bool {
    !s.dry_run && matches!(s.action, Action::Deploy { .. } | Action::Rollback(_))
}

/// The notification subject before the run knows more.
fn subject(a: &Action) -> String {
    match a {
        Action::Deploy { image, .. } => format!("deploy of {image}"),
        Action::Rollback(Some(v)) => format!("rollback to {v}"),
        Action::Rollback(None) => "rollback to the previous version".into(),
        Action::History(_) => "history".into(),
        Action::Status => "status".into(),
        Action::PrintConfig => "print-config".into(),
    }
}

/// [`run`], also filling `report` for the run's notification (version,
/// previous, duration, outcome, per-instance timings).
pub fn run_reported(s: &Settings, out: &mut dyn Write, report: &mut Report) -> Result<u8, Failure> {
    let io = |e: std::io::Error| Failure::from(Error::io("writing", "standard output", e));
    match &s.action {
        Action::PrintConfig => {
            write!(out, "{}", s.config.effective_toml(&s.source)?).map_err(io)?;
            Ok(0)
        }
        Action::History(limit) => deploy::history(s, *limit, out),
        Action::Status => deploy::status(s, out),
        Action::Deploy { image, build } => {
            deploy::Run::new(s, out)?.execute("deploy", Some(image.clone()), build.clone(), report)
        }
        Action::Rollback(version) => {
            deploy::Run::new(s, out)?.execute("rollback", version.clone(), None, report)
        }
    }
}

/// Parse, load, run: what `main` calls. Returns the process exit code.
pub fn main_with(args: impl IntoIterator<Item = std::ffi::OsString>) -> u8 {
    let cli: Cli = match daon_common::cli::parse(command(), args, ExitCode::Usage.code()) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let result = Config::load(cli.config.as_deref())
        .map_err(Failure::from)
        .and_then(|loaded| Settings::from_cli(cli, loaded))
        .and_then(|s| {
            if matches!(s.action, Action::PrintConfig) {
                return run(&s, &mut std::io::stdout().lock());
            }
            notify::monitored(
                &s.config.notify,
                &s.config.paths.state_dir,
                "daon-rolling-deploy",
                notifies(&s),
                &subject(&s.action),
                |out, report| run_reported(&s, out, report),
                |r| match r {
                    Ok(c) => *c,
                    Err(f) => f.code.code(),
                },
            )
        });
    match result {
        Ok(code) => code,
        Err(f)
            if f.source
                .as_ref()
                .is_some_and(|e| daon_common::error::is_broken_pipe(e)) =>
        {
            0
        }
        Err(f) => {
            eprintln!("daon-rolling-deploy: error: {}", f.message);
            f.code.code()
        }
    }
}
