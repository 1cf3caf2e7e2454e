//! daon-health-check: one-shot, cron-friendly health check of the DAON stack.
//! Checks run concurrently, each with its own timeout; results go out as a
//! table, JSON Lines, a Nagios plugin line or a Prometheus textfile, and the
//! exit code keeps the Nagios meaning (0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN).

pub mod alerts;
pub mod audit;
pub mod check;
pub mod checks {
    //! The individual checks.
    pub mod chain;
    pub mod containers;
    pub mod disk;
    pub mod http;
}
pub mod report;
pub mod state;

use check::{CheckResult, Job, Status};
use clap::{CommandFactory, Parser};
use daon_common::config::{self, Config, Loaded, Source};
use daon_common::docker::Docker;
use daon_common::{atomic, Error};
use state::State;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const AFTER_HELP: &str = "\
Examples:
  daon-health-check                          # table on a terminal, plain text in cron
  daon-health-check --check containers,chain # only these checks
  daon-health-check --json | jq -c 'select(.status != \"ok\")'
  daon-health-check --nagios                 # Nagios/Icinga plugin line with perfdata
  daon-health-check --suite pre-launch       # security audit before mainnet (PASS/WARN/FAIL)
  daon-health-check --prometheus-textfile /var/lib/node_exporter/textfile/daon.prom
  */5 * * * * daon-health-check --quiet --alert   # mails/webhooks per [notify] and [alerts]

Checks: http:<name> (status, latency, JSON value, TLS days left), chain (RPC or `daond status`:
synced, chain id, block age, height moving between runs, peers), containers (running, Docker
health exactly `healthy`, restart count rising between runs), disk (space and inodes per mount).
The pre-launch suite audits: secrets in .env (no placeholder, >= 32 chars, none reused; names
only, never values), .env mode 600 (and owner), secrets dir 700, the public TLS certificate,
`ufw status` (active, only 22/80/443), secret values leaked into log files, NODE_ENV=production,
CHAIN_ID equal to the chain's network, all containers healthy, a verified backup < 24 h old.
State between runs is kept in <paths.state_dir>/health-check.json.
With --alert, a check alerts after [alerts] failure_threshold failed runs (default 2), reminds
at most every reminder_interval (1h), sends RESOLVED when it recovers, reports flapping once,
and stays quiet in [alerts] maintenance windows; one message per run, by email and/or webhook
([notify]); undelivered messages are re-sent by the next run. [notify] ping_url gets a
healthchecks.io-style start ping and an end ping with the exit code (dead-man's switch).

Exit codes (Nagios plugin convention):
   0  OK
   1  WARNING
   2  CRITICAL (includes Docker or an endpoint being unreachable)
   3  UNKNOWN (bad command line, a check that could not run)
  74  I/O error writing --prometheus-textfile
  78  bad configuration";

/// Command-line flags (parsed as close to the command line as possible).
#[derive(Debug, Parser)]
#[command(
    name = "daon-health-check",
    version,
    about = "Check the DAON stack: API endpoints, chain node, containers, disk",
    after_long_help = AFTER_HELP,
    after_help = "See --help for examples, checks and exit codes."
)]
pub struct Cli {
    /// Config file (see --help for the search path)
    #[arg(short, long, value_name = "PATH", env = "DAON_CONFIG")]
    pub config: Option<PathBuf>,

    /// Run only these checks (names from --list; `http` selects every http:* check)
    #[arg(long = "check", value_name = "NAME", value_delimiter = ',')]
    pub checks: Vec<String>,

    /// List the configured checks and exit
    #[arg(long)]
    pub list: bool,

    /// Print JSON Lines: one `check` record per check, then a `summary`
    #[arg(long, conflicts_with = "nagios")]
    pub json: bool,

    /// Print a Nagios/Icinga plugin status line with perfdata
    #[arg(long)]
    pub nagios: bool,

    /// Also write the results to this node_exporter textfile (atomically)
    #[arg(long, value_name = "PATH")]
    pub prometheus_textfile: Option<PathBuf>,

    /// Which checks: `default` (API, chain, containers, disk) or `pre-launch`
    /// (the security audit before going to mainnet)
    #[arg(long, value_name = "SUITE", default_value = "default", value_parser = ["default", "pre-launch"])]
    pub suite: String,

    /// Print nothing when everything is OK (for cron mail)
    #[arg(short, long)]
    pub quiet: bool,

    /// Send alerts ([notify] channels) per the [alerts] policy: after N failed runs,
    /// reminders, RESOLVED, flapping, muted in maintenance windows
    #[arg(long)]
    pub alert: bool,

    /// Per-check timeout, overriding the config (e.g. 3s)
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub timeout: Option<Duration>,

    /// Expected chain id (default: chain.chain_id, else CHAIN_ID from the compose .env)
    #[arg(long, value_name = "ID")]
    pub chain_id: Option<String>,

    /// Disk usage warning threshold in percent
    #[arg(long, value_name = "PERCENT")]
    pub disk_warn: Option<f64>,

    /// Disk usage critical threshold in percent
    #[arg(long, value_name = "PERCENT")]
    pub disk_crit: Option<f64>,

    /// Docker context to use (default: the CLI's current context or DOCKER_HOST)
    #[arg(long, value_name = "NAME")]
    pub context: Option<String>,

    /// State file (default: <paths.state_dir>/health-check.json)
    #[arg(long, value_name = "PATH")]
    pub state_file: Option<PathBuf>,

    /// Do not read or write the state file (no stall or crash-loop detection)
    #[arg(long)]
    pub no_state: bool,

    /// Print the effective configuration (secrets redacted) and exit
    #[arg(long)]
    pub print_config: bool,
}

/// The clap command, for man pages and completions.
pub fn command() -> clap::Command {
    Cli::command().after_long_help(format!("{AFTER_HELP}\n\n{}", config::SEARCH_PATH_HELP))
}

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Table.
    Human,
    /// JSON Lines.
    Json,
    /// Nagios plugin.
    Nagios,
}

/// What a run does, once flags, environment and file are merged.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Effective stack config.
    pub config: Config,
    /// Where it came from.
    pub source: Source,
    /// Selected check names (empty = all).
    pub only: Vec<String>,
    /// Output format.
    pub format: Format,
    /// Quiet when OK.
    pub quiet: bool,
    /// Textfile to write.
    pub textfile: Option<PathBuf>,
    /// Expected chain id (empty: unchecked).
    pub chain_id: String,
    /// State file, or none.
    pub state_file: Option<PathBuf>,
    /// Only list checks.
    pub list: bool,
    /// Only print config.
    pub print_config: bool,
    /// Evaluate and send alerts.
    pub alert: bool,
    /// The pre-launch audit instead of the routine checks.
    pub pre_launch: bool,
}

/// Errors that stop the tool before or after checking.
#[derive(Debug)]
pub enum RunError {
    /// From the shared library.
    Common(Error),
    /// Bad command line (exit 3, UNKNOWN).
    Usage(String),
}

impl std::fmt::Display for RunError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RunError::Common(e) => write!(f, "{e}"),
            RunError::Usage(m) => write!(f, "{m}"),
        }
    }
}

impl std::error::Error for RunError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            RunError::Common(e) => Some(e),
            RunError::Usage(_) => None,
        }
    }
}

impl From<Error> for RunError {
    fn from(e: Error) -> Self {
        RunError::Common(e)
    }
}

impl RunError {
    /// Exit code: config 78, I/O 74, usage and anything else 3 (UNKNOWN).
    pub fn exit_code(&self) -> u8 {
        match self {
            RunError::Common(Error::Config(_)) => 78,
            RunError::Common(Error::Io { .. }) => 74,
            _ => 3,
        }
    }
}

impl Settings {
    /// Merges flags over the loaded config (flags > env > file > default).
    pub fn from_cli(cli: Cli, loaded: Loaded) -> Result<Settings, RunError> {
        let Loaded {
            mut config, source, ..
        } = loaded;
        if let Some(t) = cli.timeout {
            if t.is_zero() {
                return Err(RunError::Usage("--timeout must be more than zero".into()));
            }
            config.health.timeout = t;
            config.chain.timeout = t;
            config.docker.timeout = t;
            for h in &mut config.health.http {
                h.timeout = t;
            }
        }
        if let Some(w) = cli.disk_warn {
            config.health.disk_warn_percent = w;
        }
        if let Some(c) = cli.disk_crit {
            config.health.disk_crit_percent = c;
        }
        if let Some(ctx) = cli.context {
            config.docker.context = ctx;
        }
        config.validate(&source).map_err(|e| match e {
            Error::Config(m) => RunError::Usage(format!("{m} (from the command line)")),
            other => RunError::Common(other),
        })?;
        let chain_id = match cli.chain_id {
            Some(id) => id,
            None if !config.chain.chain_id.is_empty() => config.chain.chain_id.clone(),
            None => config::read_env_file(&config.env_file_path())
                .ok()
                .and_then(|pairs| {
                    pairs
                        .into_iter()
                        .find(|(k, _)| k == "CHAIN_ID")
                        .map(|(_, v)| v)
                })
                .unwrap_or_default(),
        };
        if cli.alert && cli.no_state {
            return Err(RunError::Usage(
                "--alert needs the state file to remember alerts between runs; drop --no-state"
                    .into(),
            ));
        }
        let state_file = if cli.no_state {
            None
        } else {
            Some(
                cli.state_file
                    .unwrap_or_else(|| config.paths.state_dir.join("health-check.json")),
            )
        };
        let format = if cli.json {
            Format::Json
        } else if cli.nagios {
            Format::Nagios
        } else {
            Format::Human
        };
        Ok(Settings {
            config,
            source,
            only: cli.checks,
            format,
            quiet: cli.quiet,
            textfile: cli.prometheus_textfile,
            chain_id,
            state_file,
            list: cli.list,
            print_config: cli.print_config,
            alert: cli.alert,
            pre_launch: cli.suite == "pre-launch",
        })
    }
}

/// A configured check: its name, what it looks at, and its deadline.
pub struct Planned {
    /// Name.
    pub name: String,
    /// What it checks, for --list.
    pub target: String,
    /// Deadline.
    pub timeout: Duration,
}

const GRACE: Duration = Duration::from_millis(500);

/// The checks this configuration defines, in run order.
pub fn plan(s: &Settings) -> Vec<Planned> {
    let c = &s.config;
    let mut out = Vec::new();
    if s.pre_launch {
        let t = c.health.timeout + GRACE;
        let mut add = |name: &str, target: String, timeout: Duration| {
            out.push(Planned {
                name: name.into(),
                target,
                timeout,
            })
        };
        let env = c.env_file_path().display().to_string();
        add("audit:secrets", env.clone(), t);
        add(
            "audit:files",
            format!("{env}, {}", c.paths.secrets_dir.display()),
            t,
        );
        add("audit:tls", c.audit.public_url.clone(), t * 2);
        add("audit:firewall", "ufw status".into(), t);
        add(
            "audit:logs",
            c.audit
                .log_dirs
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
            c.health.timeout * 6,
        );
        add("audit:node-env", env.clone(), t);
        add(
            "audit:chain-id",
            format!("{env} vs {}", c.chain.rpc_url),
            c.chain.timeout * 3 + GRACE,
        );
        add(
            "containers",
            c.all_containers()
                .into_iter()
                .map(|(_, n, _)| n)
                .collect::<Vec<_>>()
                .join(", "),
            c.docker.timeout + GRACE,
        );
        add(
            "audit:backup",
            c.paths.backup_dir.display().to_string(),
            c.health.timeout * 30,
        );
        return out;
    }
    for h in &c.health.http {
        let cert = if h.url.starts_with("https://") { 2 } else { 1 };
        out.push(Planned {
            name: format!("http:{}", h.name),
            target: h.url.clone(),
            timeout: h.timeout * cert + GRACE,
        });
    }
    if !c.chain.rpc_url.is_empty() || c.chain.source != config::ChainSource::Rpc {
        out.push(Planned {
            name: "chain".into(),
            target: format!(
                "{} / docker exec {} {}",
                c.chain.rpc_url,
                c.chain.container,
                c.chain.status_command.join(" ")
            ),
            timeout: c.chain.timeout * 3 + GRACE,
        });
    }
    if !c.services.values().all(|s| s.containers.is_empty()) {
        let names: Vec<String> = c.all_containers().into_iter().map(|(_, n, _)| n).collect();
        out.push(Planned {
            name: "containers".into(),
            target: names.join(", "),
            timeout: c.docker.timeout + GRACE,
        });
    }
    if !c.health.disk_paths.is_empty() {
        out.push(Planned {
            name: "disk".into(),
            target: c
                .health
                .disk_paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
            timeout: c.health.timeout + GRACE,
        });
    }
    out
}

fn selected(plan: Vec<Planned>, only: &[String]) -> Result<Vec<Planned>, RunError> {
    if only.is_empty() {
        return Ok(plan);
    }
    for want in only {
        if !plan
            .iter()
            .any(|p| &p.name == want || p.name.split(':').next() == Some(want.as_str()))
        {
            let names: Vec<&str> = plan.iter().map(|p| p.name.as_str()).collect();
            return Err(RunError::Usage(format!(
                "no check named {want:?}; configured checks: {}",
                names.join(", ")
            )));
        }
    }
    Ok(plan
        .into_iter()
        .filter(|p| {
            only.iter()
                .any(|w| &p.name == w || p.name.split(':').next() == Some(w.as_str()))
        })
        .collect())
}

/// Runs the tool; returns the exit code. Output goes to `out`, messages to stderr.
pub fn run(s: &Settings, out: &mut impl Write) -> Result<u8, RunError> {
    let io = |e: std::io::Error| RunError::Common(Error::io("writing", "standard output", e));
    if s.print_config {
        write!(out, "{}", s.config.effective_toml(&s.source)?).map_err(io)?;
        return Ok(0);
    }
    let plan = selected(plan(s), &s.only)?;
    if s.list {
        for p in &plan {
            if s.format == Format::Json {
                daon_common::output::json_line(
                    out,
                    "check",
                    serde_json::json!({"name": p.name, "target": p.target, "timeout_ms": p.timeout.as_millis() as u64}),
                )
                .map_err(io)?;
            } else {
                writeln!(out, "{:<14} {}", p.name, p.target).map_err(io)?;
            }
        }
        return Ok(0);
    }

    let start = Instant::now();
    // One run at a time per state file: overlapping cron runs must not lose
    // each other's alert state.
    let _state_lock = match &s.state_file {
        Some(p) => Some(daon_common::lock::acquire(
            &p.with_extension("lock"),
            Duration::from_secs(60),
            "daon-health-check",
        )?),
        None => None,
    };
    let ping = daon_common::notify::Ping::start(&s.config.notify, "daon-health-check");
    let (st, note) = match &s.state_file {
        Some(p) => State::load(p),
        None => (State::default(), None),
    };
    if let Some(n) = note {
        eprintln!("daon-health-check: warning: {n}");
    }
    let state = Arc::new(Mutex::new(st));
    let docker = Docker::new(&s.config);
    let jobs: Vec<Job> = plan
        .iter()
        .filter_map(|p| job_for(p, s, &docker, &state))
        .collect();
    let results: Vec<CheckResult> = check::run_all(jobs);
    let elapsed = start.elapsed();
    let all = report::overall(&results);

    let alert_report = if s.alert {
        let mut guard = state
            .lock()
            .map_err(|_| Error::Internal("state lock poisoned".into()))?;
        Some(send_alerts(s, &results, &mut guard.alerts))
    } else {
        None
    };

    if let Some(p) = &s.state_file {
        let snapshot = state.lock().map(|g| g.clone()).unwrap_or_default();
        if let Err(e) = snapshot.save(p) {
            eprintln!("daon-health-check: warning: state not saved, so stalls, crash loops and alert state are lost: {e}");
        }
    }
    if let Some(tf) = &s.textfile {
        atomic::write(tf, report::prometheus(&results, elapsed).as_bytes(), 0o644)?;
    }
    let mut buf = Vec::new();
    let alert_line = alert_report.as_ref().map(|a| a.line.clone());
    match s.format {
        Format::Json => report::json(
            &mut buf,
            &results,
            elapsed,
            alert_report
                .as_ref()
                .map(|a| serde_json::json!({ "alerts": a.json })),
        )
        .map_err(io)?,
        Format::Nagios => {
            report::nagios(&mut buf, &results).map_err(io)?;
            if let Some(l) = &alert_line {
                writeln!(buf, "{l}").map_err(io)?;
            }
        }
        Format::Human => {
            if !(s.quiet && all == Status::Ok) {
                report::table(&mut buf, &results, daon_common::output::color_enabled())
                    .map_err(io)?;
                if let Some(l) = &alert_line {
                    writeln!(buf, "{l}").map_err(io)?;
                }
            }
        }
    }
    if let Some(p) = ping {
        let text = String::from_utf8_lossy(&buf);
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(20)..].join("\n");
        p.end(all.code(), &tail, "daon-health-check");
    }
    out.write_all(&buf).map_err(io)?;
    out.flush().map_err(io)?;
    Ok(all.code())
}

/// What `--alert` did, for the output.
struct AlertReport {
    line: String,
    json: serde_json::Value,
}

fn send_alerts(
    s: &Settings,
    results: &[CheckResult],
    states: &mut std::collections::BTreeMap<String, alerts::AlertState>,
) -> AlertReport {
    let now = chrono::Utc::now();
    let state_dir = s
        .state_file
        .as_ref()
        .and_then(|p| p.parent().map(PathBuf::from))
        .unwrap_or_else(|| s.config.paths.state_dir.clone());
    let muted_by = s.config.alerts.maintenance.iter().find(|w| w.contains(now));
    let events = alerts::evaluate(results, states, &s.config.alerts, now, muted_by.is_some());
    let notifier = match daon_common::notify::Notifier::new(&s.config.notify, &state_dir) {
        Ok(n) => Some(n),
        Err(e) => {
            eprintln!("daon-health-check: warning: notifications disabled: {e}");
            None
        }
    };
    let resent = notifier.as_ref().map(|n| n.flush_pending()).unwrap_or(0);
    let mut sent = Vec::new();
    let mut failed = Vec::new();
    if !events.is_empty() {
        match &notifier {
            Some(n) if n.enabled() => {
                let msg = alerts::message(&events, &daon_common::lock::hostname(), now);
                let o = n.send(&msg);
                sent = o.delivered.iter().map(|c| format!("{c:?}").to_lowercase()).collect();
                failed = o.failed.iter().map(|(c, _)| format!("{c:?}").to_lowercase()).collect();
            }
            Some(_) => eprintln!(
                "daon-health-check: warning: {} alert event(s) but no channel is configured ([notify] email_to + smtp_host, or webhook_url)",
                events.len()
            ),
            None => {}
        }
    }
    let mut line = match muted_by {
        Some(w) => format!(
            "ALERTS: muted by maintenance window \"{w}\"{}",
            w.closes(now)
                .map(|t| format!(" until {}", t.format("%Y-%m-%d %H:%M UTC")))
                .unwrap_or_default()
        ),
        None if events.is_empty() => "ALERTS: nothing new to send".to_string(),
        None => {
            let kinds: Vec<String> = events
                .iter()
                .map(|e| format!("{:?} {}", e.kind, e.check).to_lowercase())
                .collect();
            let mut l = format!("ALERTS: {}", kinds.join(", "));
            if !sent.is_empty() {
                l.push_str(&format!("; sent by {}", sent.join(", ")));
            }
            if !failed.is_empty() {
                l.push_str(&format!(
                    "; NOT delivered by {} (kept for the next run)",
                    failed.join(", ")
                ));
            }
            l
        }
    };
    if resent > 0 {
        line.push_str(&format!("; re-sent {resent} pending message(s)"));
    }
    AlertReport {
        line,
        json: serde_json::json!({
            "muted": muted_by.map(|w| w.to_string()),
            "events": events,
            "sent": sent,
            "failed": failed,
            "resent": resent,
        }),
    }
}

fn job_for(p: &Planned, s: &Settings, docker: &Docker, state: &Arc<Mutex<State>>) -> Option<Job> {
    let c = s.config.clone();
    let run: Box<dyn FnOnce() -> CheckResult + Send> = match p.name.as_str() {
        "chain" => {
            let (docker, state, expected) = (docker.clone(), state.clone(), s.chain_id.clone());
            Box::new(move || checks::chain::run(&c.chain, &expected, &docker, &state))
        }
        "containers" => {
            let (docker, state) = (docker.clone(), state.clone());
            Box::new(move || checks::containers::run(&c, &docker, &state))
        }
        "disk" => Box::new(move || checks::disk::run(&c.health)),
        "audit:secrets" => Box::new(move || audit::secrets(&c)),
        "audit:files" => Box::new(move || audit::files(&c)),
        "audit:tls" => Box::new(move || audit::tls(&c)),
        "audit:firewall" => Box::new(move || audit::firewall(&c)),
        "audit:logs" => Box::new(move || audit::logs(&c)),
        "audit:node-env" => Box::new(move || audit::node_env(&c)),
        "audit:chain-id" => Box::new(move || audit::chain_id(&c)),
        "audit:backup" => Box::new(move || audit::backup(&c)),
        name => {
            let h = c
                .health
                .http
                .iter()
                .find(|h| format!("http:{}", h.name) == name)?
                .clone();
            Box::new(move || checks::http::run(&h))
        }
    };
    Some(Job {
        name: p.name.clone(),
        timeout: p.timeout,
        run,
    })
}

/// Runs every configured check once, without state or output: for other
/// tools that gate on the stack's health (reboot guard, deploy, restore).
pub fn check_stack(config: &Config) -> Vec<CheckResult> {
    let chain_id = if !config.chain.chain_id.is_empty() {
        config.chain.chain_id.clone()
    } else {
        config::read_env_file(&config.env_file_path())
            .ok()
            .and_then(|p| p.into_iter().find(|(k, _)| k == "CHAIN_ID").map(|(_, v)| v))
            .unwrap_or_default()
    };
    let s = Settings {
        config: config.clone(),
        source: Source::BuiltIn,
        only: Vec::new(),
        format: Format::Human,
        quiet: true,
        textfile: None,
        chain_id,
        state_file: None,
        list: false,
        print_config: false,
        alert: false,
        pre_launch: false,
    };
    let state = Arc::new(Mutex::new(State::default()));
    let docker = Docker::new(config);
    let jobs = plan(&s)
        .iter()
        .filter_map(|p| job_for(p, &s, &docker, &state))
        .collect();
    check::run_all(jobs)
}

/// Parse, load, run: what `main` calls. Returns the process exit code.
pub fn main_with(args: impl IntoIterator<Item = std::ffi::OsString>) -> u8 {
    // A usage error is UNKNOWN (3) to Nagios.
    let cli: Cli = match daon_common::cli::parse(command(), args, 3) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let result = Config::load(cli.config.as_deref())
        .map_err(RunError::from)
        .and_then(|loaded| Settings::from_cli(cli, loaded))
        .and_then(|s| run(&s, &mut std::io::stdout().lock()));
    match result {
        Ok(code) => code,
        Err(e) if daon_common::error::is_broken_pipe(&e) => 0,
        Err(e) => {
            eprintln!("daon-health-check: error: {e}");
            e.exit_code()
        }
    }
}
