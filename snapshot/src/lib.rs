//! daon-snapshot: Hetzner Cloud snapshots and backups of this server as
//! commands with exit codes — take one and wait for it, list them, prune by a
//! policy, and `check --max-age` as the gate the runbooks' "type
//! SNAPSHOT_TAKEN" prompt becomes.

use clap::{CommandFactory, Parser, Subcommand};
use daon_common::config::{self, Config, Loaded, Source};
use daon_common::hcloud::{self, ApiError, Client, HetznerConfig, Image, Kind, TokenSource};
use daon_common::output::json_line;
use daon_common::ExitCode;
use serde_json::json;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const AFTER_HELP: &str = "\
Examples:
  daon-snapshot create                        # snapshot this server, wait, print id, size, time
  daon-snapshot create --description 'before migration 42' --label reason=migration
  daon-snapshot list                          # this server's snapshots and backups, newest first
  daon-snapshot prune --keep-last 7 --keep-within 14d --dry-run
  daon-snapshot check --max-age 24h || exit 1 # gate: a fresh available snapshot or backup exists
  daon-snapshot enable-backups                # Hetzner's daily backups (+20% of the server price)
  daon-snapshot status --json                 # backup window, running actions, newest images
  0 3 * * * daon-snapshot create --quiet && daon-snapshot prune --keep-last 7

The server is hetzner.server (default: the runbooks' ubuntu-4gb-nbg1-16-daon) or --server.
Our images carry hetzner.label (default daon-ops/managed=true); prune only ever deletes
`available` snapshots of this server with that label, never the newest, never a
delete-protected one. The policy ranks them newest first: the first --keep-last are kept,
and every one younger than --keep-within; the rest are deleted.

API token (never printed): --token-file PATH (mode 0600) if given, else HCLOUD_TOKEN, else the
active context of the official CLI (~/.config/hcloud/cli.toml, HCLOUD_CONFIG, HCLOUD_CONTEXT),
else hetzner.token_file. API base URL: HCLOUD_ENDPOINT, else hetzner.endpoint.
-v (or HCLOUD_DEBUG=1) logs each API request (method, URL, status; never headers) to stderr.

Retries: 5xx and network errors up to hetzner.max_tries with jittered exponential backoff
(never for the snapshot POST itself: after a 5xx it looks for the snapshot by label before
posting again); 423 locked within hetzner.locked_wait; 429 waited out until RateLimit-Reset
within hetzner.rate_limit_wait.";

const EXIT_HELP: &str = "\
Exit codes:
   0  ok (check: a fresh snapshot or backup exists)
   1  negative answer: check found none fresh enough; the server or image does not exist;
      the snapshot action ended in error (the API's message is printed)
   2  usage error
  69  the Hetzner Cloud API is unreachable or failing (5xx after retries)
  70  internal error
  74  I/O error
  75  temporary: lock held, server locked by another action, rate limited: retry later
  76  unexpected reply from the API, or it rejected our input (422, with the fields)
  77  authentication refused (401/403), or a token file others can read
  78  bad configuration (no token, bad hetzner.* value)";

/// Command-line flags.
#[derive(Debug, Parser)]
#[command(
    name = "daon-snapshot",
    version,
    about = "Hetzner Cloud snapshots and backups of this server: create, list, prune, check freshness",
    after_help = "See --help for examples, the prune policy and exit codes."
)]
pub struct Cli {
    /// Config file (see --help for the search path)
    #[arg(short, long, value_name = "PATH", env = "DAON_CONFIG", global = true)]
    pub config: Option<PathBuf>,

    /// The server: name or numeric id (default: hetzner.server)
    #[arg(long, value_name = "NAME|ID", global = true)]
    pub server: Option<String>,

    /// Read the API token from this file (must be mode 0600)
    #[arg(long, value_name = "PATH", global = true)]
    pub token_file: Option<PathBuf>,

    /// JSON Lines on stdout: one record per item, then a `summary`
    #[arg(long, global = true)]
    pub json: bool,

    /// Print nothing on success (errors still go to stderr)
    #[arg(short, long, global = true)]
    pub quiet: bool,

    /// Log each API request (method, URL, status, time; never the token) to stderr
    #[arg(short, long, global = true, env = "HCLOUD_DEBUG", value_parser = clap::builder::FalseyValueParser::new())]
    pub verbose: bool,

    /// Print the effective configuration (secrets redacted) and exit
    #[arg(long, global = true)]
    pub print_config: bool,

    /// What to do
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands.
#[derive(Debug, Clone, Subcommand, PartialEq)]
pub enum Command {
    /// Take a snapshot of the server and wait until it is available
    Create {
        /// Description (default: "daon-snapshot of SERVER at TIME")
        #[arg(long, value_name = "TEXT")]
        description: Option<String>,
        /// Extra label (repeatable); hetzner.label is always added
        #[arg(long = "label", value_name = "KEY=VALUE")]
        labels: Vec<String>,
        /// Start it and exit without waiting
        #[arg(long)]
        no_wait: bool,
        /// Wait this long for another create/prune run to finish (default: fail at once with 75)
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
        lock_wait: Option<Duration>,
    },
    /// List the server's snapshots and backups, newest first
    List,
    /// Delete our old snapshots, keeping what the policy says
    Prune {
        /// Keep this many newest (at least 1; default: hetzner.keep_last)
        #[arg(long, value_name = "N")]
        keep_last: Option<u32>,
        /// Also keep every snapshot younger than this (e.g. 30d; default: hetzner.keep_within)
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
        keep_within: Option<Duration>,
        /// Only say what would be deleted
        #[arg(long)]
        dry_run: bool,
        /// Wait this long for another create/prune run to finish
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
        lock_wait: Option<Duration>,
    },
    /// Exit 0 if an available snapshot or backup is younger than --max-age, else 1
    Check {
        /// The limit (e.g. 24h)
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
        max_age: Duration,
    },
    /// Enable Hetzner's automatic daily backups of the server
    EnableBackups,
    /// The server's backup window, running actions, newest snapshot and backup
    Status,
}

/// The clap command, for man pages and completions.
pub fn command() -> clap::Command {
    daon_common::cli::with_subcommand_help(Cli::command().after_long_help(format!(
        "{AFTER_HELP}\n\n{EXIT_HELP}\n\n{}",
        config::SEARCH_PATH_HELP
    )))
}

/// What a run does, once flags, environment and file are merged.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Effective config.
    pub config: Config,
    /// Where it came from.
    pub source: Source,
    /// The server (name or id).
    pub server: String,
    /// `--token-file`.
    pub token_file: Option<PathBuf>,
    /// JSON Lines output.
    pub json: bool,
    /// Nothing on success.
    pub quiet: bool,
    /// Log requests.
    pub verbose: bool,
    /// Only print the config.
    pub print_config: bool,
    /// The subcommand (none only with --print-config).
    pub command: Option<Command>,
}

/// Why a run stopped.
#[derive(Debug)]
pub enum RunError {
    /// The API or getting ready to call it.
    Api(ApiError),
    /// The shared library (config, lock, I/O).
    Common(daon_common::Error),
    /// Bad command line (2).
    Usage(String),
}

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RunError::Api(e) => write!(f, "{e}"),
            RunError::Common(e) => write!(f, "{e}"),
            RunError::Usage(m) => write!(f, "{m}"),
        }
    }
}

impl std::error::Error for RunError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RunError::Api(e) => Some(e),
            RunError::Common(e) => Some(e),
            RunError::Usage(_) => None,
        }
    }
}

impl From<ApiError> for RunError {
    fn from(e: ApiError) -> Self {
        RunError::Api(e)
    }
}

impl From<daon_common::Error> for RunError {
    fn from(e: daon_common::Error) -> Self {
        RunError::Common(e)
    }
}

impl RunError {
    /// The exit code.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            RunError::Api(e) => e.exit_code(),
            RunError::Common(e) => e.exit_code(),
            RunError::Usage(_) => ExitCode::Usage,
        }
    }
}

fn io(e: std::io::Error) -> RunError {
    RunError::Common(daon_common::Error::io("writing", "standard output", e))
}

impl Settings {
    /// Merges flags over the loaded config (flags > env > file > default).
    pub fn from_cli(cli: Cli, loaded: Loaded) -> Result<Settings, RunError> {
        let Loaded { config, source, .. } = loaded;
        if cli.command.is_none() && !cli.print_config {
            return Err(RunError::Usage(
                "a subcommand is needed: create, list, prune, check, enable-backups or status (see --help)".into(),
            ));
        }
        config.hetzner.label_pair()?;
        let server = cli.server.unwrap_or_else(|| config.hetzner.server.clone());
        if server.trim().is_empty() && !cli.print_config {
            return Err(RunError::Api(ApiError::new(
                Kind::Config,
                "no server: set hetzner.server (DAON_HETZNER_SERVER) or give --server",
            )));
        }
        if let Some(Command::Prune {
            keep_last: Some(0), ..
        }) = &cli.command
        {
            return Err(RunError::Usage(
                "--keep-last must be at least 1: prune never deletes the newest snapshot".into(),
            ));
        }
        if let Some(Command::Create { labels, .. }) = &cli.command {
            for l in labels {
                hcloud::parse_label(l).map_err(|m| RunError::Usage(format!("--label {m}")))?;
            }
        }
        Ok(Settings {
            config,
            source,
            server,
            token_file: cli.token_file,
            json: cli.json,
            quiet: cli.quiet,
            verbose: cli.verbose,
            print_config: cli.print_config,
            command: cli.command,
        })
    }

    fn hz(&self) -> &HetznerConfig {
        &self.config.hetzner
    }
}

fn env(k: &str) -> Option<String> {
    std::env::var(k).ok()
}

fn connect(s: &Settings) -> Result<(Client, TokenSource), RunError> {
    let (token, source) = hcloud::resolve_token(s.token_file.as_deref(), s.hz(), &env)?;
    let client = Client::new(s.hz(), hcloud::endpoint(s.hz(), &env), token, s.verbose)?;
    Ok((client, source))
}

/// Short human age: `12s`, `5m 2s`, `2h 3m`, `3d 4h`.
pub fn human_age(d: chrono::Duration) -> String {
    let s = d.num_seconds().max(0);
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m {}s", s / 60, s % 60),
        3600..=86399 => format!("{}h {}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d {}h", s / 86400, (s % 86400) / 3600),
    }
}

fn age(img: &Image) -> chrono::Duration {
    chrono::Utc::now() - img.created
}

fn size(img: &Image) -> String {
    img.image_size
        .map(|g| format!("{g:.2} GB"))
        .unwrap_or_else(|| "-".into())
}

fn image_json(img: &Image, label: &(String, String)) -> serde_json::Value {
    json!({
        "id": img.id,
        "kind": img.kind,
        "status": img.status,
        "created": img.created.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        "age_seconds": age(img).num_seconds(),
        "image_size_gb": img.image_size,
        "description": img.description,
        "labels": img.labels,
        "managed": img.labels.get(&label.0) == Some(&label.1),
        "protected": img.protection.delete,
        "created_from": img.created_from.as_ref().map(|c| c.id),
        "bound_to": img.bound_to,
    })
}

/// This server's snapshots (`created_from`) and backups (`bound_to`), newest
/// first; with `selector`, only snapshots carrying that label.
fn server_images(
    c: &Client,
    server_id: u64,
    selector: Option<&str>,
) -> Result<Vec<Image>, ApiError> {
    let mut q = vec![("type", "snapshot".to_string())];
    if let Some(sel) = selector {
        q.push(("label_selector", sel.to_string()));
    }
    let mut out: Vec<Image> = c
        .images(&q)?
        .into_iter()
        .filter(|i| i.of_server(server_id))
        .collect();
    if selector.is_none() {
        out.extend(c.images(&[
            ("type", "backup".to_string()),
            ("bound_to", server_id.to_string()),
        ])?);
    }
    out.sort_by(|a, b| b.created.cmp(&a.created).then(b.id.cmp(&a.id)));
    Ok(out)
}

/// Runs the tool; returns the exit code. Data goes to `out`, messages to stderr.
pub fn run(s: &Settings, out: &mut impl Write) -> Result<ExitCode, RunError> {
    if s.print_config {
        return print_config(s, out);
    }
    let Some(cmd) = &s.command else {
        return Err(RunError::Usage("no subcommand".into()));
    };
    let (c, _) = connect(s)?;
    match cmd {
        Command::Create {
            description,
            labels,
            no_wait,
            lock_wait,
        } => {
            let _lock = take_lock(s, *lock_wait, "create")?;
            create(s, &c, description.as_deref(), labels, *no_wait, out)
        }
        Command::List => list(s, &c, out),
        Command::Prune {
            keep_last,
            keep_within,
            dry_run,
            lock_wait,
        } => {
            let _lock = take_lock(s, *lock_wait, "prune")?;
            let keep_last = keep_last.unwrap_or(s.hz().keep_last).max(1);
            prune(
                s,
                &c,
                keep_last,
                keep_within.or(s.hz().keep_within),
                *dry_run,
                out,
            )
        }
        Command::Check { max_age } => check(s, &c, *max_age, out),
        Command::EnableBackups => enable_backups(s, &c, out),
        Command::Status => status(s, &c, out),
    }
}

fn take_lock(
    s: &Settings,
    wait: Option<Duration>,
    what: &str,
) -> Result<daon_common::lock::LockGuard, RunError> {
    let path = s.config.paths.lock_dir.join("daon-snapshot.lock");
    Ok(daon_common::lock::acquire(
        &path,
        wait.unwrap_or(Duration::ZERO),
        &format!("daon-snapshot {what} --server {}", s.server),
    )?)
}

fn print_config(s: &Settings, out: &mut impl Write) -> Result<ExitCode, RunError> {
    let whence = s.source.describe();
    let token = match hcloud::resolve_token(s.token_file.as_deref(), s.hz(), &env) {
        Ok((_, src)) => format!("from {src}"),
        Err(e) => format!("none usable ({})", e.message.lines().next().unwrap_or("")),
    };
    write!(
        out,
        "# effective configuration (from {whence}; secrets redacted)\n# hetzner API endpoint in use: {}\n# hetzner API token: {token}\n# server: {}\n{}",
        hcloud::endpoint(s.hz(), &env),
        s.server,
        s.config.to_toml_redacted()?
    )
    .map_err(io)?;
    Ok(ExitCode::Ok)
}

fn summary(out: &mut impl Write, fields: serde_json::Value) -> Result<(), RunError> {
    json_line(out, "summary", fields).map_err(io)
}

/// Looks for the snapshot a POST that answered 5xx or timed out may have
/// made anyway: ours (label), of this server, same description, recent.
fn find_made_anyway(
    c: &Client,
    server_id: u64,
    selector: &str,
    description: &str,
    since: chrono::DateTime<chrono::Utc>,
) -> Result<Option<Image>, ApiError> {
    Ok(server_images(c, server_id, Some(selector))?
        .into_iter()
        .filter(|i| i.kind == "snapshot")
        .find(|i| {
            i.description.as_deref() == Some(description)
                && i.created >= since - chrono::Duration::minutes(2)
        }))
}

fn create(
    s: &Settings,
    c: &Client,
    description: Option<&str>,
    extra: &[String],
    no_wait: bool,
    out: &mut impl Write,
) -> Result<ExitCode, RunError> {
    let start = Instant::now();
    let server = c.server(&s.server)?;
    let (lk, lv) = s.hz().label_pair()?;
    let mut labels = BTreeMap::new();
    labels.insert(lk, lv);
    for l in extra {
        let (k, v) = hcloud::parse_label(l).map_err(RunError::Usage)?;
        labels.insert(k, v);
    }
    let now = chrono::Utc::now();
    let description = description.map(String::from).unwrap_or_else(|| {
        format!(
            "daon-snapshot of {} at {}",
            server.name,
            now.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        )
    });
    let selector = s.hz().label.clone();
    let what = format!("server {}", server.name);
    let mut tries = 0;
    let (image, action) = loop {
        tries += 1;
        match c.create_image(server.id, "snapshot", &description, &labels) {
            Ok((img, a)) => break (img, Some(a)),
            Err(e) if e.outcome_unknown() => {
                eprintln!(
                    "daon-snapshot: warning: the snapshot request got no clear answer ({}); checking whether the snapshot was made anyway before asking again",
                    e.message.lines().next().unwrap_or("")
                );
                // The API may still be working on the lost request: a request
                // that went unanswered for `timeout` may take about as long
                // again. Look, with growing pauses, before asking again.
                let mut found = None;
                let looking = Instant::now();
                for look in 1.. {
                    std::thread::sleep(hcloud::backoff(look, s.hz().retry_base, s.hz().retry_cap));
                    found = find_made_anyway(c, server.id, &selector, &description, now)?;
                    if found.is_some() || (look >= 4 && looking.elapsed() >= s.hz().timeout) {
                        break;
                    }
                }
                if let Some(img) = found {
                    eprintln!(
                        "daon-snapshot: the snapshot was made anyway: image {}; not asking again",
                        img.id
                    );
                    break (img, None);
                }
                if tries >= s.hz().max_tries {
                    return Err(e.into());
                }
            }
            Err(e) => return Err(e.into()),
        }
    };
    if no_wait {
        if s.json {
            json_line(
                out,
                "snapshot",
                json!({"id": image.id, "server": {"id": server.id, "name": server.name},
                       "status": image.status, "action": action.as_ref().map(|a| a.id),
                       "description": description, "labels": labels}),
            )
            .map_err(io)?;
            summary(out, json!({"ok": true, "exit_code": 0, "waited": false}))?;
        } else if !s.quiet {
            writeln!(
                out,
                "started snapshot {} of server {} ({}){}; not waiting",
                image.id,
                server.name,
                server.id,
                action
                    .as_ref()
                    .map(|a| format!(", action {}", a.id))
                    .unwrap_or_default()
            )
            .map_err(io)?;
        }
        return Ok(ExitCode::Ok);
    }
    // Without the action (the POST's answer was lost), follow the server's
    // running create_image action for this image, else the image itself.
    let action = match action {
        Some(a) => Some(a),
        None => c
            .running_actions(server.id)?
            .into_iter()
            .find(|a| a.command == "create_image" && a.resource("image") == Some(image.id)),
    };
    if let Some(a) = &action {
        c.wait_action(a, &what)?;
    } else {
        let mut n = 0;
        let t = Instant::now();
        while c.image(image.id)?.status == "creating" {
            if t.elapsed() > s.hz().action_timeout {
                return Err(ApiError::new(
                    Kind::StillRunning,
                    format!(
                        "snapshot {} still creating after hetzner.action_timeout",
                        image.id
                    ),
                )
                .into());
            }
            std::thread::sleep(hcloud::poll_delay(n, s.hz().poll_interval, s.hz().poll_max));
            n += 1;
        }
    }
    let done = match c.image(image.id) {
        Ok(i) => i,
        Err(e) if e.kind == Kind::NotFound => {
            return Err(ApiError::new(
                Kind::ActionFailed,
                format!(
                    "snapshot {} of server {} vanished before it became available",
                    image.id, server.name
                ),
            )
            .into())
        }
        Err(e) => return Err(e.into()),
    };
    let secs = start.elapsed().as_secs_f64();
    if s.json {
        let mut rec = image_json(&done, &s.hz().label_pair()?);
        rec["server"] = json!({"id": server.id, "name": server.name});
        rec["action"] = json!(action.as_ref().map(|a| a.id));
        rec["duration_seconds"] = json!((secs * 10.0).round() / 10.0);
        json_line(out, "snapshot", rec).map_err(io)?;
        summary(out, json!({"ok": true, "exit_code": 0, "waited": true}))?;
    } else if !s.quiet {
        writeln!(
            out,
            "created snapshot {} of server {} ({}): {}, {}, in {:.1}s",
            done.id,
            server.name,
            server.id,
            done.status,
            size(&done),
            secs
        )
        .map_err(io)?;
    }
    Ok(ExitCode::Ok)
}

fn list(s: &Settings, c: &Client, out: &mut impl Write) -> Result<ExitCode, RunError> {
    let server = c.server(&s.server)?;
    let imgs = server_images(c, server.id, None)?;
    let label = s.hz().label_pair()?;
    if s.json {
        for i in &imgs {
            json_line(out, "image", image_json(i, &label)).map_err(io)?;
        }
        summary(
            out,
            json!({"ok": true, "exit_code": 0, "server": {"id": server.id, "name": server.name},
                   "snapshots": imgs.iter().filter(|i| i.kind == "snapshot").count(),
                   "backups": imgs.iter().filter(|i| i.kind == "backup").count()}),
        )?;
        return Ok(ExitCode::Ok);
    }
    if s.quiet {
        return Ok(ExitCode::Ok);
    }
    writeln!(
        out,
        "{:<12} {:<9} {:<10} {:<21} {:>8} {:>9} {:<4} {:<28} DESCRIPTION",
        "ID", "TYPE", "STATUS", "CREATED", "AGE", "SIZE", "PROT", "LABELS"
    )
    .map_err(io)?;
    for i in &imgs {
        let labels: Vec<String> = i.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        writeln!(
            out,
            "{:<12} {:<9} {:<10} {:<21} {:>8} {:>9} {:<4} {:<28} {}",
            i.id,
            i.kind,
            i.status,
            i.created.format("%Y-%m-%d %H:%M:%SZ"),
            human_age(age(i)),
            size(i),
            if i.protection.delete { "yes" } else { "no" },
            if labels.is_empty() {
                "-".into()
            } else {
                labels.join(",")
            },
            i.description.as_deref().unwrap_or("")
        )
        .map_err(io)?;
    }
    if imgs.is_empty() {
        eprintln!(
            "daon-snapshot: server {} ({}) has no snapshots or backups",
            server.name, server.id
        );
    }
    Ok(ExitCode::Ok)
}

/// One image's fate under the prune policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The image id.
    pub id: u64,
    /// Delete it?
    pub delete: bool,
    /// Why.
    pub reason: String,
}

/// The prune policy over `imgs` (this server's available snapshots with our
/// label): ranked newest first, keep the first `keep_last` and those younger
/// than `keep_within`; of the rest, delete all but the delete-protected.
pub fn plan_prune(
    imgs: &[Image],
    keep_last: u32,
    keep_within: Option<Duration>,
    now: chrono::DateTime<chrono::Utc>,
) -> Vec<Decision> {
    let mut sorted: Vec<&Image> = imgs.iter().collect();
    sorted.sort_by(|a, b| b.created.cmp(&a.created).then(b.id.cmp(&a.id)));
    let keep_last = keep_last.max(1) as usize;
    sorted
        .iter()
        .enumerate()
        .map(|(rank, i)| {
            let age = (now - i.created).to_std().unwrap_or(Duration::ZERO);
            let (delete, reason) = if rank == 0 {
                (false, "the newest".to_string())
            } else if rank < keep_last {
                (false, format!("one of the newest {keep_last}"))
            } else if keep_within.is_some_and(|w| age < w) {
                (
                    false,
                    format!(
                        "younger than {}",
                        humantime::format_duration(keep_within.unwrap_or_default())
                    ),
                )
            } else if i.protection.delete {
                (false, "delete-protected".to_string())
            } else {
                let mut r = format!("beyond the newest {keep_last}");
                if let Some(w) = keep_within {
                    r.push_str(&format!(
                        " and older than {}",
                        humantime::format_duration(w)
                    ));
                }
                (true, r)
            };
            Decision {
                id: i.id,
                delete,
                reason,
            }
        })
        .collect()
}

fn prune(
    s: &Settings,
    c: &Client,
    keep_last: u32,
    keep_within: Option<Duration>,
    dry_run: bool,
    out: &mut impl Write,
) -> Result<ExitCode, RunError> {
    let server = c.server(&s.server)?;
    let label = s.hz().label_pair()?;
    let ours: Vec<Image> = server_images(c, server.id, Some(&s.hz().label))?
        .into_iter()
        .filter(|i| i.kind == "snapshot" && i.labels.get(&label.0) == Some(&label.1))
        .collect();
    let skipped = ours.iter().filter(|i| i.status != "available").count();
    let available: Vec<Image> = ours
        .into_iter()
        .filter(|i| i.status == "available")
        .collect();
    let plan = plan_prune(&available, keep_last, keep_within, chrono::Utc::now());
    let mut code = ExitCode::Ok;
    let (mut deleted, mut kept, mut failed) = (0, 0, 0);
    for d in &plan {
        let img = available.iter().find(|i| i.id == d.id);
        let when = img
            .map(|i| {
                format!(
                    "{}, {} old",
                    i.created.format("%Y-%m-%d %H:%M"),
                    human_age(age(i))
                )
            })
            .unwrap_or_default();
        let (verb, err) = if !d.delete {
            kept += 1;
            ("keep", None)
        } else if dry_run {
            deleted += 1;
            ("would delete", None)
        } else {
            match c.delete_image(d.id) {
                Ok(()) => {
                    deleted += 1;
                    ("deleted", None)
                }
                Err(e) => {
                    failed += 1;
                    code = code.merge(e.exit_code());
                    ("failed to delete", Some(e.message))
                }
            }
        };
        if s.json {
            json_line(
                out,
                "image",
                json!({"id": d.id, "action": verb.replace(' ', "_"), "reason": d.reason,
                       "error": err, "created": img.map(|i| i.created.to_rfc3339())}),
            )
            .map_err(io)?;
        } else if !(s.quiet && verb == "keep") {
            writeln!(out, "{verb:<16} snapshot {} ({when}): {}", d.id, d.reason).map_err(io)?;
        }
        if let Some(e) = err {
            eprintln!("daon-snapshot: could not delete snapshot {}: {e}", d.id);
        }
    }
    if s.json {
        summary(
            out,
            json!({"ok": failed == 0, "exit_code": code.code(), "dry_run": dry_run,
                   "kept": kept, "deleted": if dry_run { 0 } else { deleted },
                   "would_delete": if dry_run { deleted } else { 0 },
                   "failed": failed, "not_yet_available": skipped}),
        )?;
    } else if !s.quiet {
        writeln!(
            out,
            "{} {deleted}, kept {kept} of server {}'s snapshots labelled {}{}{}",
            if dry_run { "would delete" } else { "deleted" },
            server.name,
            s.hz().label,
            if failed > 0 {
                format!(", {failed} failed")
            } else {
                String::new()
            },
            if skipped > 0 {
                format!(" ({skipped} not yet available, left alone)")
            } else {
                String::new()
            },
        )
        .map_err(io)?;
    }
    Ok(code)
}

fn check(
    s: &Settings,
    c: &Client,
    max_age: Duration,
    out: &mut impl Write,
) -> Result<ExitCode, RunError> {
    let server = c.server(&s.server)?;
    let imgs = server_images(c, server.id, None)?;
    let newest = imgs.iter().find(|i| i.status == "available");
    let limit = humantime::format_duration(max_age).to_string();
    let fresh = newest.is_some_and(|i| age(i).to_std().unwrap_or(Duration::ZERO) < max_age);
    let code = if fresh {
        ExitCode::Ok
    } else {
        ExitCode::Negative
    };
    let text = match newest {
        Some(i) => format!(
            "{}: the newest available {} of server {}, {}, is {} old (created {}; limit {limit})",
            if fresh { "fresh" } else { "stale" },
            i.kind,
            server.name,
            i.id,
            human_age(age(i)),
            i.created.format("%Y-%m-%d %H:%M:%SZ")
        ),
        None => format!(
            "stale: server {} has no available snapshot or backup (limit {limit})",
            server.name
        ),
    };
    if s.json {
        json_line(
            out,
            "check",
            json!({"fresh": fresh, "max_age_seconds": max_age.as_secs(),
                   "newest": newest.map(|i| json!({"id": i.id, "kind": i.kind, "age_seconds": age(i).num_seconds(),
                                                   "created": i.created.to_rfc3339()})),
                   "server": {"id": server.id, "name": server.name}, "message": text}),
        )
        .map_err(io)?;
        summary(out, json!({"ok": fresh, "exit_code": code.code()}))?;
    } else if !(s.quiet && fresh) {
        writeln!(out, "{text}").map_err(io)?;
    }
    Ok(code)
}

fn enable_backups(s: &Settings, c: &Client, out: &mut impl Write) -> Result<ExitCode, RunError> {
    let server = c.server(&s.server)?;
    let (already, window) = match &server.backup_window {
        Some(w) => (true, Some(w.clone())),
        None => {
            let a = c.enable_backup(server.id)?;
            c.wait_action(&a, &format!("server {}", server.name))?;
            (false, c.server(&server.id.to_string())?.backup_window)
        }
    };
    if s.json {
        json_line(
            out,
            "backups",
            json!({"server": {"id": server.id, "name": server.name}, "enabled": true,
                   "already_enabled": already, "backup_window": window}),
        )
        .map_err(io)?;
        summary(out, json!({"ok": true, "exit_code": 0}))?;
    } else if !s.quiet {
        writeln!(
            out,
            "backups {} for server {} (window {} UTC)",
            if already {
                "already enabled"
            } else {
                "enabled"
            },
            server.name,
            window.as_deref().unwrap_or("unknown")
        )
        .map_err(io)?;
    }
    Ok(ExitCode::Ok)
}

fn status(s: &Settings, c: &Client, out: &mut impl Write) -> Result<ExitCode, RunError> {
    let server = c.server(&s.server)?;
    let running = c.running_actions(server.id)?;
    let imgs = server_images(c, server.id, None)?;
    let newest = |kind: &str| {
        imgs.iter()
            .find(|i| i.kind == kind && i.status == "available")
    };
    let count = |kind: &str| imgs.iter().filter(|i| i.kind == kind).count();
    if s.json {
        let brief = |i: Option<&Image>| {
            i.map(|i| json!({"id": i.id, "age_seconds": age(i).num_seconds(), "created": i.created.to_rfc3339()}))
        };
        json_line(
            out,
            "status",
            json!({
                "server": {"id": server.id, "name": server.name, "status": server.status, "locked": server.locked},
                "backups_enabled": server.backup_window.is_some(),
                "backup_window": server.backup_window,
                "running_actions": running.iter().map(|a| json!({"id": a.id, "command": a.command, "progress": a.progress, "started": a.started.to_rfc3339()})).collect::<Vec<_>>(),
                "snapshots": count("snapshot"), "backups": count("backup"),
                "newest_snapshot": brief(newest("snapshot")), "newest_backup": brief(newest("backup")),
                "endpoint": c.endpoint(),
            }),
        )
        .map_err(io)?;
        summary(out, json!({"ok": true, "exit_code": 0}))?;
        return Ok(ExitCode::Ok);
    }
    if s.quiet {
        return Ok(ExitCode::Ok);
    }
    let describe = |i: Option<&Image>| {
        i.map(|i| format!("newest {} ({} old)", i.id, human_age(age(i))))
            .unwrap_or_else(|| "none available".into())
    };
    let mut lines = vec![
        (
            "server",
            format!("{} (id {}), {}", server.name, server.id, server.status),
        ),
        (
            "locked",
            if server.locked {
                "yes (an action is running)".into()
            } else {
                "no".into()
            },
        ),
        (
            "backups",
            match &server.backup_window {
                Some(w) => format!(
                    "enabled, window {w} UTC; {} kept, {}",
                    count("backup"),
                    describe(newest("backup"))
                ),
                None => "disabled (daon-snapshot enable-backups)".into(),
            },
        ),
        (
            "snapshots",
            format!("{}, {}", count("snapshot"), describe(newest("snapshot"))),
        ),
    ];
    if running.is_empty() {
        lines.push(("actions", "none running".into()));
    }
    for a in &running {
        lines.push((
            "action",
            format!(
                "{} {:.0}% (id {}, started {} ago)",
                a.command,
                a.progress,
                a.id,
                human_age(chrono::Utc::now() - a.started)
            ),
        ));
    }
    lines.push(("endpoint", c.endpoint().to_string()));
    for (k, v) in lines {
        writeln!(out, "{k:<10} {v}").map_err(io)?;
    }
    Ok(ExitCode::Ok)
}

/// [`run`] with monitoring: dead-man pings around every run, and a success or
/// failure notification ([notify]) for the commands that change something.
fn run_monitored(s: &Settings) -> Result<ExitCode, RunError> {
    let what = match &s.command {
        Some(Command::Create { .. }) => Some("create"),
        Some(Command::Prune { dry_run: false, .. }) => Some("prune"),
        Some(Command::EnableBackups) => Some("enable-backups"),
        _ => None,
    };
    if s.print_config {
        return run(s, &mut std::io::stdout().lock());
    }
    let subject = format!("{} for {}", what.unwrap_or("run"), s.server);
    daon_common::notify::monitored(
        &s.config.notify,
        &s.config.paths.state_dir,
        "daon-snapshot",
        what.is_some(),
        &subject,
        |out, report| {
            report.set("command", what);
            report.set("server", s.server.clone());
            run(s, out)
        },
        |r| match r {
            Ok(c) => c.code(),
            Err(e) => e.exit_code().code(),
        },
    )
}

/// Parse, load, run: what `main` calls. Returns the process exit code.
pub fn main_with(args: impl IntoIterator<Item = std::ffi::OsString>) -> u8 {
    let cli: Cli = match daon_common::cli::parse(command(), args, ExitCode::Usage.code()) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let json = cli.json;
    let result = Config::load(cli.config.as_deref())
        .map_err(RunError::from)
        .and_then(|loaded| Settings::from_cli(cli, loaded))
        .and_then(|s| run_monitored(&s));
    match result {
        Ok(code) => code.code(),
        Err(e) if daon_common::error::is_broken_pipe(&e) => 0,
        Err(e) => {
            eprintln!("daon-snapshot: error: {e}");
            if json {
                let _ = json_line(
                    &mut std::io::stdout().lock(),
                    "summary",
                    json!({"ok": false, "exit_code": e.exit_code().code(), "error": e.to_string()}),
                );
            }
            e.exit_code().code()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn img(id: u64, days: i64, protected: bool) -> Image {
        Image {
            id,
            kind: "snapshot".into(),
            status: "available".into(),
            description: None,
            image_size: Some(1.0),
            disk_size: Some(40.0),
            created: chrono::Utc.with_ymd_and_hms(2026, 1, 31, 0, 0, 0).unwrap()
                - chrono::Duration::days(days),
            created_from: None,
            bound_to: None,
            protection: hcloud::Protection { delete: protected },
            labels: BTreeMap::new(),
        }
    }

    #[test]
    fn policy_keeps_newest_n_and_young_ones_and_protected() {
        let now = chrono::Utc.with_ymd_and_hms(2026, 1, 31, 0, 0, 0).unwrap();
        // ids sorted by id do not match age: the policy must sort by created.
        let imgs = vec![
            img(5, 1, false),
            img(1, 2, false),
            img(9, 3, false),
            img(2, 10, true),
            img(3, 20, false),
            img(4, 30, false),
        ];
        let d = plan_prune(&imgs, 2, Some(Duration::from_secs(4 * 86400)), now);
        let deleted: Vec<u64> = d.iter().filter(|x| x.delete).map(|x| x.id).collect();
        assert_eq!(deleted, vec![3, 4]);
        assert_eq!(d[0].id, 5);
        assert!(d
            .iter()
            .any(|x| x.id == 2 && x.reason == "delete-protected"));
        assert!(d
            .iter()
            .any(|x| x.id == 9 && x.reason.starts_with("younger")));
        let d = plan_prune(&imgs, 0, None, now);
        assert!(!d[0].delete, "never the newest");
        assert_eq!(d.iter().filter(|x| x.delete).count(), 4);
    }

    #[test]
    fn ages_read_well() {
        assert_eq!(human_age(chrono::Duration::seconds(5)), "5s");
        assert_eq!(human_age(chrono::Duration::seconds(302)), "5m 2s");
        assert_eq!(human_age(chrono::Duration::seconds(7380)), "2h 3m");
        assert_eq!(human_age(chrono::Duration::seconds(90000)), "1d 1h");
    }
}
