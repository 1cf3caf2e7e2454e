//! A small Hetzner Cloud API client: the token from where the official CLI
//! keeps it (never printed), the API's error envelope turned into our exit
//! codes, bounded retries (5xx and network errors with jittered exponential
//! backoff, `locked` within a time budget, 429 waited out until
//! `RateLimit-Reset`), pagination, and action polling with the official CLI's
//! backoff and a progress line on a terminal.
//!
//! The base URL is `HCLOUD_ENDPOINT` (the official CLI's variable) or
//! `hetzner.endpoint`, so the tests point it at `tests/fake-hcloud`.

use crate::config::{duration, opt_duration};
use crate::exit::ExitCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The public API.
pub const DEFAULT_ENDPOINT: &str = "https://api.hetzner.cloud/v1";

/// Largest page the API serves.
pub const MAX_PER_PAGE: u32 = 50;

/// `[hetzner]`: this server in Hetzner Cloud, our label, and how patient the
/// client is. The token is never here (see [`resolve_token`]).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct HetznerConfig {
    /// Name or numeric id of "this server" in Hetzner Cloud.
    pub server: String,
    /// API base URL; `HCLOUD_ENDPOINT` overrides it.
    pub endpoint: String,
    /// The label (`key=value`) our images carry; prune and the duplicate
    /// check after a failed POST only ever look at images with it.
    pub label: String,
    /// A file holding the token (mode 0600), used when neither
    /// `HCLOUD_TOKEN` nor an hcloud CLI context gives one. Empty: none.
    pub token_file: PathBuf,
    /// Deadline of one API request.
    #[serde(with = "duration")]
    pub timeout: Duration,
    /// TCP connect deadline.
    #[serde(with = "duration")]
    pub connect_timeout: Duration,
    /// Tries of one request on 5xx, 409 or a network error (with backoff).
    pub max_tries: u32,
    /// First retry delay; doubles each time (with jitter), up to `retry_cap`.
    #[serde(with = "duration")]
    pub retry_base: Duration,
    /// Longest delay between two tries.
    #[serde(with = "duration")]
    pub retry_cap: Duration,
    /// Longest total wait for a rate limit (429) to reset before giving up (75).
    #[serde(with = "duration")]
    pub rate_limit_wait: Duration,
    /// Longest total wait for a `locked` server (another action running) before giving up (75).
    #[serde(with = "duration")]
    pub locked_wait: Duration,
    /// First action poll interval (ten polls), then ×1.5 up to `poll_max`.
    #[serde(with = "duration")]
    pub poll_interval: Duration,
    /// Longest action poll interval.
    #[serde(with = "duration")]
    pub poll_max: Duration,
    /// Longest wait for an action (a snapshot) to finish.
    #[serde(with = "duration")]
    pub action_timeout: Duration,
    /// Prune: keep this many newest snapshots.
    pub keep_last: u32,
    /// Prune: also keep every snapshot younger than this (`none`: no such rule).
    #[serde(with = "opt_duration")]
    pub keep_within: Option<Duration>,
}

impl Default for HetznerConfig {
    fn default() -> Self {
        HetznerConfig {
            // The runbooks' production server.
            server: "ubuntu-4gb-nbg1-16-daon".into(),
            endpoint: DEFAULT_ENDPOINT.into(),
            label: "daon-ops/managed=true".into(),
            token_file: PathBuf::new(),
            timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            max_tries: 5,
            retry_base: Duration::from_secs(1),
            retry_cap: Duration::from_secs(60),
            rate_limit_wait: Duration::from_secs(120),
            locked_wait: Duration::from_secs(120),
            poll_interval: Duration::from_millis(500),
            poll_max: Duration::from_millis(2500),
            action_timeout: Duration::from_secs(3600),
            keep_last: 7,
            keep_within: None,
        }
    }
}

impl HetznerConfig {
    /// The label as a (key, value) pair; `Err` says what is wrong.
    pub fn label_pair(&self) -> Result<(String, String), ApiError> {
        parse_label(&self.label)
            .map_err(|m| ApiError::new(Kind::Config, format!("bad value for hetzner.label: {m}")))
    }
}

/// Parses `key=value` (a Hetzner label); the key may carry a DNS prefix.
pub fn parse_label(s: &str) -> Result<(String, String), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not key=value"))?;
    let ok_chars = |x: &str| {
        x.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
    };
    let name = k.rsplit('/').next().unwrap_or(k);
    if k.is_empty()
        || name.is_empty()
        || name.len() > 63
        || !ok_chars(name)
        || v.len() > 63
        || !ok_chars(v)
    {
        return Err(format!(
            "{s:?} is not a valid label (key: [prefix/]name of at most 63 of A-Z a-z 0-9 - _ .; value the same or empty)"
        ));
    }
    if k.starts_with("hetzner.cloud/") {
        return Err(format!("{s:?}: the hetzner.cloud/ prefix is reserved"));
    }
    Ok((k.to_string(), v.to_string()))
}

// ------------------------------------------------------------------ errors

/// What went wrong, which decides the exit code and whether to retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// No token, a bad config value (78).
    Config,
    /// 401/403, or a token file others can read (77).
    Auth,
    /// 404 (1).
    NotFound,
    /// 422: the API rejected our input (76).
    Invalid,
    /// 423 `locked` for longer than `locked_wait` (75).
    Locked,
    /// 423 `protected` (1).
    Protected,
    /// 429 for longer than `rate_limit_wait` (75).
    RateLimited,
    /// 409 `conflict` after every try (75).
    Conflict,
    /// 5xx after every try (69).
    Server,
    /// No answer: refused, timed out (69).
    Network,
    /// An answer we cannot read (76).
    Protocol,
    /// An action ended in `error` (1).
    ActionFailed,
    /// An action still running at `action_timeout` (75).
    StillRunning,
    /// A local file (the token file) could not be read (74).
    Io,
}

/// An error from the API or from getting ready to call it. Never contains
/// the token.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// Category.
    pub kind: Kind,
    /// The API's error code (`locked`, `invalid_input`...), if it sent one.
    pub code: String,
    /// HTTP status, if there was an answer.
    pub status: Option<u16>,
    /// What happened and what to do.
    pub message: String,
}

impl ApiError {
    /// An error without an API code.
    pub fn new(kind: Kind, message: impl Into<String>) -> Self {
        ApiError {
            kind,
            code: String::new(),
            status: None,
            message: message.into(),
        }
    }

    /// The exit code a tool ends with.
    pub fn exit_code(&self) -> ExitCode {
        match self.kind {
            Kind::Config => ExitCode::Config,
            Kind::Auth => ExitCode::NoPerm,
            Kind::NotFound | Kind::Protected | Kind::ActionFailed => ExitCode::Negative,
            Kind::Invalid | Kind::Protocol => ExitCode::Protocol,
            Kind::Locked | Kind::RateLimited | Kind::Conflict | Kind::StillRunning => {
                ExitCode::TempFail
            }
            Kind::Server | Kind::Network => ExitCode::Unavailable,
            Kind::Io => ExitCode::Io,
        }
    }

    /// True for a 5xx or a network error: the request may or may not have
    /// been carried out.
    pub fn outcome_unknown(&self) -> bool {
        matches!(self.kind, Kind::Server | Kind::Network)
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ApiError {}

// ------------------------------------------------------------------- token

/// An API token. Its `Debug` is redacted and it has no `Display`, so it
/// cannot end up in a message by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(<redacted>)")
    }
}

impl Token {
    /// Wraps a token (trimmed).
    pub fn new(t: &str) -> Token {
        Token(t.trim().to_string())
    }
}

/// Where the token came from (for `--print-config` and `status`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// `--token-file PATH`.
    Flag(PathBuf),
    /// `HCLOUD_TOKEN`.
    Env,
    /// A context of the official CLI's config file.
    CliContext {
        /// Context name.
        name: String,
        /// The CLI's config file.
        file: PathBuf,
    },
    /// `hetzner.token_file`.
    ConfigFile(PathBuf),
}

impl fmt::Display for TokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TokenSource::Flag(p) => write!(f, "--token-file {}", p.display()),
            TokenSource::Env => f.write_str("HCLOUD_TOKEN"),
            TokenSource::CliContext { name, file } => {
                write!(f, "hcloud context {name:?} in {}", file.display())
            }
            TokenSource::ConfigFile(p) => write!(f, "hetzner.token_file {}", p.display()),
        }
    }
}

/// The official CLI's config file: `HCLOUD_CONFIG`, else
/// `$XDG_CONFIG_HOME/hcloud/cli.toml`, else `~/.config/hcloud/cli.toml`.
pub fn cli_config_path(env: &dyn Fn(&str) -> Option<String>) -> Option<PathBuf> {
    if let Some(p) = env("HCLOUD_CONFIG").filter(|s| !s.is_empty()) {
        return Some(PathBuf::from(p));
    }
    if let Some(x) = env("XDG_CONFIG_HOME").filter(|s| !s.is_empty()) {
        return Some(PathBuf::from(x).join("hcloud/cli.toml"));
    }
    env("HOME")
        .filter(|s| !s.is_empty())
        .map(|h| PathBuf::from(h).join(".config/hcloud/cli.toml"))
}

/// Reads a token file, refusing one that group or others can read.
pub fn read_token_file(path: &Path) -> Result<Token, ApiError> {
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(path).map_err(|e| {
        ApiError::new(
            Kind::Io,
            format!("cannot read token file {}: {e}", path.display()),
        )
    })?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(ApiError::new(
            Kind::Auth,
            format!(
                "refusing token file {}: group or others may read it (mode {mode:04o})\n  hint: chmod 600 {}",
                path.display(),
                path.display()
            ),
        ));
    }
    let text = std::fs::read_to_string(path).map_err(|e| {
        ApiError::new(
            Kind::Io,
            format!("cannot read token file {}: {e}", path.display()),
        )
    })?;
    if text.trim().is_empty() {
        return Err(ApiError::new(
            Kind::Config,
            format!("token file {} is empty", path.display()),
        ));
    }
    Ok(Token::new(&text))
}

fn token_from_cli_config(
    path: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<(Token, String)>, ApiError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(ApiError::new(
                Kind::Io,
                format!("cannot read the hcloud CLI config {}: {e}", path.display()),
            ))
        }
    };
    let v: toml::Value = toml::from_str(&text).map_err(|e| {
        // toml's message may quote the line, which may hold a token: say only where.
        let at = e
            .span()
            .map(|s| format!(" (at byte {})", s.start))
            .unwrap_or_default();
        ApiError::new(
            Kind::Config,
            format!(
                "the hcloud CLI config {} is not valid TOML{at}",
                path.display()
            ),
        )
    })?;
    let from_env = env("HCLOUD_CONTEXT").filter(|s| !s.is_empty());
    let name = match from_env.clone().or_else(|| {
        v.get("active_context")
            .and_then(|a| a.as_str())
            .map(String::from)
    }) {
        Some(n) if !n.is_empty() => n,
        _ => return Ok(None),
    };
    let ctx = v.get("contexts").and_then(|c| c.as_array()).and_then(|a| {
        a.iter()
            .find(|c| c.get("name").and_then(|n| n.as_str()) == Some(name.as_str()))
    });
    match ctx.and_then(|c| c.get("token")).and_then(|t| t.as_str()) {
        Some(t) if !t.trim().is_empty() => Ok(Some((Token::new(t), name))),
        _ if from_env.is_some() => Err(ApiError::new(
            Kind::Config,
            format!(
                "HCLOUD_CONTEXT names context {name:?}, which {} does not have (with a token)",
                path.display()
            ),
        )),
        _ => Ok(None),
    }
}

/// Finds the token: `--token-file` if given, else `HCLOUD_TOKEN`, else the
/// active context (or `HCLOUD_CONTEXT`) of the official CLI's config, else
/// `hetzner.token_file`. Token files must be mode 0600 (or stricter).
pub fn resolve_token(
    flag: Option<&Path>,
    cfg: &HetznerConfig,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(Token, TokenSource), ApiError> {
    if let Some(p) = flag {
        return Ok((read_token_file(p)?, TokenSource::Flag(p.to_path_buf())));
    }
    if let Some(t) = env("HCLOUD_TOKEN").filter(|t| !t.trim().is_empty()) {
        return Ok((Token::new(&t), TokenSource::Env));
    }
    if let Some(path) = cli_config_path(env) {
        if let Some((t, name)) = token_from_cli_config(&path, env)? {
            return Ok((t, TokenSource::CliContext { name, file: path }));
        }
    }
    if !cfg.token_file.as_os_str().is_empty() {
        return Ok((
            read_token_file(&cfg.token_file)?,
            TokenSource::ConfigFile(cfg.token_file.clone()),
        ));
    }
    Err(ApiError::new(
        Kind::Config,
        "no Hetzner Cloud API token\n  hint: set HCLOUD_TOKEN, create a context with `hcloud context create`, or give --token-file PATH (mode 0600)",
    ))
}

// ------------------------------------------------------------------ models

/// `created_from` of an image.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CreatedFrom {
    /// Server id.
    pub id: u64,
    /// Server name then.
    #[serde(default)]
    pub name: String,
}

/// Delete protection.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Protection {
    /// Cannot be deleted.
    #[serde(default)]
    pub delete: bool,
}

/// An image (we care about snapshots and backups).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Image {
    /// Id.
    pub id: u64,
    /// `snapshot`, `backup`, `system`, `app`.
    #[serde(rename = "type")]
    pub kind: String,
    /// `available`, `creating`, `unavailable`.
    pub status: String,
    /// Free text.
    #[serde(default)]
    pub description: Option<String>,
    /// Size in GB, once known.
    #[serde(default)]
    pub image_size: Option<f64>,
    /// Disk size in GB.
    #[serde(default)]
    pub disk_size: Option<f64>,
    /// When it was made.
    pub created: DateTime<Utc>,
    /// The server it was made from (may be null).
    #[serde(default)]
    pub created_from: Option<CreatedFrom>,
    /// Backups: the server they belong to.
    #[serde(default)]
    pub bound_to: Option<u64>,
    /// Protection.
    #[serde(default)]
    pub protection: Protection,
    /// Labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

impl Image {
    /// True if the image was made from (or belongs to) this server.
    pub fn of_server(&self, server_id: u64) -> bool {
        self.bound_to == Some(server_id)
            || self
                .created_from
                .as_ref()
                .is_some_and(|c| c.id == server_id)
    }
}

/// A server.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Server {
    /// Id.
    pub id: u64,
    /// Name.
    pub name: String,
    /// running, off, ...
    pub status: String,
    /// Backup window (`22-02`); none: backups disabled.
    #[serde(default)]
    pub backup_window: Option<String>,
    /// An action is running on it.
    #[serde(default)]
    pub locked: bool,
    /// Labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Disk size in GB.
    #[serde(default)]
    pub primary_disk_size: Option<f64>,
}

/// The error of a failed action.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ActionError {
    /// Code.
    pub code: String,
    /// Message.
    pub message: String,
}

/// A resource an action works on.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Resource {
    /// Id.
    pub id: u64,
    /// `server`, `image`...
    #[serde(rename = "type")]
    pub kind: String,
}

/// An asynchronous action (create_image, enable_backup...).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Action {
    /// Id (64-bit).
    pub id: u64,
    /// What it does.
    pub command: String,
    /// `running`, `success`, `error`.
    pub status: String,
    /// 0–100.
    #[serde(default)]
    pub progress: f64,
    /// Start.
    pub started: DateTime<Utc>,
    /// End, once finished.
    #[serde(default)]
    pub finished: Option<DateTime<Utc>>,
    /// Why it failed.
    #[serde(default)]
    pub error: Option<ActionError>,
    /// What it works on.
    #[serde(default)]
    pub resources: Vec<Resource>,
}

impl Action {
    /// The id of the resource of this type, if any.
    pub fn resource(&self, kind: &str) -> Option<u64> {
        self.resources.iter().find(|r| r.kind == kind).map(|r| r.id)
    }
}

// ------------------------------------------------------------------ client

/// Delay before poll number `n` (0-based): `base` for ten polls, then ×1.5
/// each time up to `cap` — the official CLI's schedule, so a 10-minute
/// snapshot costs ~250 polls instead of 1200.
pub fn poll_delay(n: u32, base: Duration, cap: Duration) -> Duration {
    if n < 10 {
        return base.min(cap);
    }
    let f = 1.5f64.powi((n - 9).min(64) as i32);
    Duration::from_secs_f64((base.as_secs_f64() * f).min(cap.as_secs_f64()))
}

/// Retry delay after failed try `n` (1-based): `base`·2^(n-1), capped, with
/// jitter (50–100 %) so many clients do not retry in step.
pub fn backoff(n: u32, base: Duration, cap: Duration) -> Duration {
    let exp = base.as_secs_f64() * 2f64.powi(n.saturating_sub(1).min(30) as i32);
    let d = exp.min(cap.as_secs_f64());
    Duration::from_secs_f64(d * (0.5 + 0.5 * random_unit()))
}

fn random_unit() -> f64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    (h.finish() >> 11) as f64 / (1u64 << 53) as f64
}

/// Whether a request may be sent again after a 5xx or a network error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// GET, DELETE: safe to repeat.
    Idempotent,
    /// POST of an action: repeating may do it twice. Only 423, 429 and 409
    /// (which promise nothing was done) are retried.
    Once,
}

/// The client.
pub struct Client {
    agent: ureq::Agent,
    endpoint: String,
    token: Token,
    cfg: HetznerConfig,
    verbose: bool,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("endpoint", &self.endpoint)
            .field("token", &self.token)
            .finish()
    }
}

/// The endpoint to use: `HCLOUD_ENDPOINT`, else `hetzner.endpoint`.
pub fn endpoint(cfg: &HetznerConfig, env: &dyn Fn(&str) -> Option<String>) -> String {
    env("HCLOUD_ENDPOINT")
        .filter(|e| !e.is_empty())
        .unwrap_or_else(|| cfg.endpoint.clone())
        .trim_end_matches('/')
        .to_string()
}

fn describe_transport(e: &ureq::Transport) -> String {
    let mut text = e.kind().to_string();
    if let Some(m) = e.message() {
        text = format!("{text}: {m}");
    }
    if let Some(src) = std::error::Error::source(e) {
        text = format!("{text}: {src}");
    }
    text
}

struct Reply {
    status: u16,
    body: String,
    reset: Option<i64>,
}

impl Client {
    /// A client for `endpoint` with `token`; `verbose` logs each request
    /// (method, URL, status, time — never headers) to stderr.
    pub fn new(
        cfg: &HetznerConfig,
        endpoint: String,
        token: Token,
        verbose: bool,
    ) -> Result<Client, ApiError> {
        if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
            return Err(ApiError::new(
                Kind::Config,
                format!("the Hetzner Cloud endpoint {endpoint:?} is not an http(s):// URL (HCLOUD_ENDPOINT or hetzner.endpoint)"),
            ));
        }
        let agent = crate::http::agent(crate::http::AgentOptions {
            timeout: cfg.timeout,
            connect_timeout: cfg.connect_timeout,
            insecure: false,
        })
        .map_err(|e| ApiError::new(Kind::Config, e.to_string()))?;
        Ok(Client {
            agent,
            endpoint,
            token,
            cfg: cfg.clone(),
            verbose,
        })
    }

    /// The base URL in use.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    fn log(&self, msg: &str) {
        if self.verbose {
            eprintln!("hcloud: {msg}");
        }
    }

    fn send_once(
        &self,
        method: &str,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
    ) -> Result<Reply, ApiError> {
        let url = format!("{}{path}", self.endpoint);
        let mut req = self
            .agent
            .request(method, &url)
            .set("Authorization", &format!("Bearer {}", self.token.0));
        for (k, v) in query {
            req = req.query(k, v);
        }
        let shown = req.url().to_string();
        let start = Instant::now();
        let result = match body {
            Some(b) => req.send_json(b),
            None => req.call(),
        };
        let resp = match result {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(ureq::Error::Transport(t)) => {
                let detail = describe_transport(&t);
                self.log(&format!(
                    "{method} {shown} -> {detail} ({} ms)",
                    start.elapsed().as_millis()
                ));
                return Err(ApiError::new(
                    Kind::Network,
                    format!(
                        "cannot reach the Hetzner Cloud API at {}: {detail}",
                        self.endpoint
                    ),
                ));
            }
        };
        let status = resp.status();
        let reset = resp
            .header("RateLimit-Reset")
            .and_then(|v| v.trim().parse::<i64>().ok());
        let body = resp.into_string().map_err(|e| {
            ApiError::new(
                Kind::Network,
                format!("reading the answer of {method} {path}: {e}"),
            )
        })?;
        self.log(&format!(
            "{method} {shown} -> {status} ({} ms)",
            start.elapsed().as_millis()
        ));
        Ok(Reply {
            status,
            body,
            reset,
        })
    }

    fn envelope_error(&self, method: &str, path: &str, r: &Reply) -> ApiError {
        let v: Value = serde_json::from_str(&r.body).unwrap_or(Value::Null);
        let code = v["error"]["code"].as_str().unwrap_or("").to_string();
        let msg = v["error"]["message"]
            .as_str()
            .map(String::from)
            .unwrap_or_else(|| r.body.chars().take(200).collect());
        let mut fields = Vec::new();
        if let Some(fs) = v["error"]["details"]["fields"].as_array() {
            for f in fs {
                let name = f["name"].as_str().unwrap_or("?");
                let msgs: Vec<&str> = f["messages"]
                    .as_array()
                    .map(|m| m.iter().filter_map(Value::as_str).collect())
                    .unwrap_or_default();
                fields.push(format!("{name}: {}", msgs.join("; ")));
            }
        }
        let kind = match (r.status, code.as_str()) {
            (_, "locked") => Kind::Locked,
            (_, "protected") => Kind::Protected,
            (_, "rate_limit_exceeded") | (429, _) => Kind::RateLimited,
            (_, "conflict") | (409, _) => Kind::Conflict,
            (401 | 403, _) => Kind::Auth,
            (404, _) => Kind::NotFound,
            (422, _) => Kind::Invalid,
            (500..=599, _) => Kind::Server,
            _ => Kind::Protocol,
        };
        let mut message = format!(
            "Hetzner Cloud API: {msg} ({}, HTTP {}) on {method} {path}",
            if code.is_empty() { "no code" } else { &code },
            r.status
        );
        if !fields.is_empty() {
            message.push_str(&format!("\n  fields: {}", fields.join(", ")));
        }
        match kind {
            Kind::Auth => message.push_str(
                "\n  hint: check the token (HCLOUD_TOKEN, the hcloud context, --token-file) and that it is a read/write token of the right project",
            ),
            Kind::Locked => message.push_str(
                "\n  hint: another action runs on the server; retry later (see `daon-snapshot status`)",
            ),
            _ => {}
        }
        ApiError {
            kind,
            code,
            status: Some(r.status),
            message,
        }
    }

    fn pause(&self, d: Duration, why: &str) {
        if self.verbose || (d >= Duration::from_secs(2) && crate::output::stderr_is_tty()) {
            eprintln!("hcloud: {why}; retrying in {:.1}s", d.as_secs_f64());
        }
        std::thread::sleep(d);
    }

    /// One API call with the retry rules of the module doc. Returns the JSON
    /// body (`Null` for 204).
    pub fn call(
        &self,
        method: &str,
        path: &str,
        query: &[(&str, String)],
        body: Option<&Value>,
        retry: Retry,
    ) -> Result<Value, ApiError> {
        let started = Instant::now();
        let mut tries = 0u32;
        let mut locked_tries = 0u32;
        let mut rate_waited = Duration::ZERO;
        loop {
            tries += 1;
            let err = match self.send_once(method, path, query, body) {
                Ok(r) if (200..300).contains(&r.status) => {
                    if r.body.trim().is_empty() {
                        return Ok(Value::Null);
                    }
                    return serde_json::from_str(&r.body).map_err(|e| {
                        ApiError::new(
                            Kind::Protocol,
                            format!("Hetzner Cloud API: the answer to {method} {path} is not JSON ({e})"),
                        )
                    });
                }
                Ok(r) => {
                    let e = self.envelope_error(method, path, &r);
                    if e.kind == Kind::RateLimited {
                        let now = Utc::now().timestamp_millis();
                        let wait = r
                            .reset
                            .map(|at| Duration::from_millis((at * 1000 - now).max(0) as u64 + 250))
                            .unwrap_or_else(|| {
                                backoff(tries, self.cfg.retry_base, self.cfg.retry_cap)
                            });
                        if rate_waited + wait <= self.cfg.rate_limit_wait {
                            rate_waited += wait;
                            tries -= 1;
                            self.pause(
                                wait,
                                "rate limit reached (429), waiting for RateLimit-Reset",
                            );
                            continue;
                        }
                        return Err(ApiError {
                            message: format!(
                                "{}\n  hint: the rate limit resets in {}s, beyond hetzner.rate_limit_wait ({}); retry later",
                                e.message,
                                wait.as_secs(),
                                humantime::format_duration(self.cfg.rate_limit_wait)
                            ),
                            ..e
                        });
                    }
                    if e.kind == Kind::Locked {
                        locked_tries += 1;
                        let wait = backoff(
                            locked_tries,
                            self.cfg.retry_base,
                            self.cfg.retry_cap.min(Duration::from_secs(15)),
                        );
                        if started.elapsed() + wait <= self.cfg.locked_wait {
                            tries -= 1;
                            self.pause(wait, "the server is locked by another action (423)");
                            continue;
                        }
                        return Err(ApiError {
                            message: format!(
                                "{} (still locked after {:.0}s, hetzner.locked_wait)",
                                e.message,
                                started.elapsed().as_secs_f64()
                            ),
                            ..e
                        });
                    }
                    e
                }
                Err(e) => e,
            };
            let retryable = match err.kind {
                Kind::Conflict => true,
                Kind::Server | Kind::Network => retry == Retry::Idempotent,
                _ => false,
            };
            if retryable && tries < self.cfg.max_tries {
                let wait = backoff(tries, self.cfg.retry_base, self.cfg.retry_cap);
                self.pause(
                    wait,
                    &format!("try {tries} failed: {}", first_line(&err.message)),
                );
                continue;
            }
            if retryable || err.outcome_unknown() {
                return Err(ApiError {
                    message: format!("{} (after {tries} tries)", err.message),
                    ..err
                });
            }
            return Err(err);
        }
    }

    /// GET with retries.
    pub fn get(&self, path: &str, query: &[(&str, String)]) -> Result<Value, ApiError> {
        self.call("GET", path, query, None, Retry::Idempotent)
    }

    /// Every item of a paginated list (`key` is the list's field), following
    /// `meta.pagination.next_page` with the largest pages the API allows.
    pub fn get_all(
        &self,
        path: &str,
        query: &[(&str, String)],
        key: &str,
    ) -> Result<Vec<Value>, ApiError> {
        let mut out = Vec::new();
        let mut page: u64 = 1;
        loop {
            let mut q: Vec<(&str, String)> = query.to_vec();
            q.push(("page", page.to_string()));
            q.push(("per_page", MAX_PER_PAGE.to_string()));
            let v = self.get(path, &q)?;
            let items = v[key].as_array().ok_or_else(|| {
                ApiError::new(
                    Kind::Protocol,
                    format!("Hetzner Cloud API: GET {path} answered without a {key:?} list"),
                )
            })?;
            out.extend(items.iter().cloned());
            match v["meta"]["pagination"]["next_page"].as_u64() {
                Some(next) if next > page && page < 10_000 => page = next,
                _ => return Ok(out),
            }
        }
    }

    fn parse<T: serde::de::DeserializeOwned>(v: Value, what: &str) -> Result<T, ApiError> {
        serde_json::from_value(v).map_err(|e| {
            ApiError::new(
                Kind::Protocol,
                format!("Hetzner Cloud API: cannot read the {what}: {e}"),
            )
        })
    }

    /// The server with this name, or this numeric id.
    pub fn server(&self, name_or_id: &str) -> Result<Server, ApiError> {
        if let Ok(id) = name_or_id.parse::<u64>() {
            let v = self.get(&format!("/servers/{id}"), &[]);
            return match v {
                Ok(v) => Self::parse(v["server"].clone(), "server"),
                Err(e) if e.kind == Kind::NotFound => Err(ApiError::new(
                    Kind::NotFound,
                    format!("no server with id {id} in this Hetzner Cloud project"),
                )),
                Err(e) => Err(e),
            };
        }
        let v = self.get("/servers", &[("name", name_or_id.to_string())])?;
        match v["servers"].as_array().and_then(|a| a.first()) {
            Some(s) => Self::parse(s.clone(), "server"),
            None => Err(ApiError::new(
                Kind::NotFound,
                format!("no server named {name_or_id:?} in this Hetzner Cloud project\n  hint: set hetzner.server (DAON_HETZNER_SERVER) or --server to a name or id from `hcloud server list`"),
            )),
        }
    }

    /// Images matching `query` (e.g. `type=snapshot`, `label_selector=...`), all pages.
    pub fn images(&self, query: &[(&str, String)]) -> Result<Vec<Image>, ApiError> {
        self.get_all("/images", query, "images")?
            .into_iter()
            .map(|v| Self::parse(v, "image"))
            .collect()
    }

    /// One image.
    pub fn image(&self, id: u64) -> Result<Image, ApiError> {
        let v = self.get(&format!("/images/{id}"), &[])?;
        Self::parse(v["image"].clone(), "image")
    }

    /// Deletes an image; one that is already gone counts as deleted.
    pub fn delete_image(&self, id: u64) -> Result<(), ApiError> {
        let path = format!("/images/{id}");
        match self.call("DELETE", &path, &[], None, Retry::Idempotent) {
            Ok(_) => Ok(()),
            // Gone already (a retry after a lost answer, or someone else): done.
            Err(e) if e.kind == Kind::NotFound => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// One action.
    pub fn action(&self, id: u64) -> Result<Action, ApiError> {
        let v = self.get(&format!("/actions/{id}"), &[])?;
        Self::parse(v["action"].clone(), "action")
    }

    /// The server's running actions.
    pub fn running_actions(&self, server_id: u64) -> Result<Vec<Action>, ApiError> {
        self.get_all(
            &format!("/servers/{server_id}/actions"),
            &[("status", "running".into())],
            "actions",
        )?
        .into_iter()
        .map(|v| Self::parse(v, "action"))
        .filter(|a: &Result<Action, ApiError>| a.as_ref().map_or(true, |a| a.status == "running"))
        .collect()
    }

    /// POSTs `create_image` once (never repeated after a 5xx or timeout:
    /// the caller must look for the image first).
    pub fn create_image(
        &self,
        server_id: u64,
        kind: &str,
        description: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<(Image, Action), ApiError> {
        let body = serde_json::json!({"type": kind, "description": description, "labels": labels});
        let v = self.call(
            "POST",
            &format!("/servers/{server_id}/actions/create_image"),
            &[],
            Some(&body),
            Retry::Once,
        )?;
        Ok((
            Self::parse(v["image"].clone(), "image")?,
            Self::parse(v["action"].clone(), "action")?,
        ))
    }

    /// POSTs `enable_backup` (safe to repeat: enabling twice is harmless).
    pub fn enable_backup(&self, server_id: u64) -> Result<Action, ApiError> {
        let v = self.call(
            "POST",
            &format!("/servers/{server_id}/actions/enable_backup"),
            &[],
            None,
            Retry::Idempotent,
        )?;
        Self::parse(v["action"].clone(), "action")
    }

    /// Polls the action until it finishes (CLI schedule, see [`poll_delay`]),
    /// drawing `Waiting for <command> (<what>) 45% 12s` on a terminal.
    /// An action ending in `error` is [`Kind::ActionFailed`] with the API's message.
    pub fn wait_action(&self, first: &Action, what: &str) -> Result<Action, ApiError> {
        let start = Instant::now();
        let draw = crate::output::stderr_is_tty()
            && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
        let mut a = first.clone();
        let mut n = 0u32;
        while a.status == "running" {
            if draw {
                let mut err = std::io::stderr().lock();
                let _ = write!(
                    err,
                    "\r\x1b[2KWaiting for {} ({what}) {:>3.0}% {}s",
                    a.command,
                    a.progress,
                    start.elapsed().as_secs()
                );
                let _ = err.flush();
            }
            if start.elapsed() >= self.cfg.action_timeout {
                if draw {
                    eprintln!();
                }
                return Err(ApiError::new(
                    Kind::StillRunning,
                    format!(
                        "action {} ({}) still running after {} (hetzner.action_timeout); it may still finish: check with `daon-snapshot status`",
                        a.id,
                        a.command,
                        humantime::format_duration(Duration::from_secs(start.elapsed().as_secs()))
                    ),
                ));
            }
            std::thread::sleep(poll_delay(n, self.cfg.poll_interval, self.cfg.poll_max));
            n += 1;
            a = self.action(a.id)?;
        }
        if draw {
            eprintln!(
                "\r\x1b[2KWaiting for {} ({what}) ... {} ({}s)",
                a.command,
                if a.status == "success" {
                    "done"
                } else {
                    "failed"
                },
                start.elapsed().as_secs()
            );
        }
        match a.status.as_str() {
            "success" => Ok(a),
            _ => {
                let (code, msg) = a
                    .error
                    .as_ref()
                    .map(|e| (e.code.clone(), e.message.clone()))
                    .unwrap_or_else(|| (String::new(), format!("status {}", a.status)));
                Err(ApiError {
                    kind: Kind::ActionFailed,
                    code: code.clone(),
                    status: None,
                    message: format!(
                        "Hetzner Cloud action {} ({}) failed: {msg} ({code})",
                        a.id, a.command
                    ),
                })
            }
        }
    }
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let v: Vec<(String, String)> = pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        move |k: &str| v.iter().find(|(a, _)| a == k).map(|(_, b)| b.clone())
    }

    fn fast() -> HetznerConfig {
        HetznerConfig {
            retry_base: Duration::from_millis(20),
            retry_cap: Duration::from_millis(100),
            poll_interval: Duration::from_millis(50),
            poll_max: Duration::from_millis(100),
            locked_wait: Duration::from_secs(5),
            timeout: Duration::from_secs(2),
            ..HetznerConfig::default()
        }
    }

    fn client(f: &fake_hcloud::Fake, cfg: &HetznerConfig) -> Client {
        Client::new(cfg, f.endpoint(), Token::new("secret-token-123"), false).unwrap()
    }

    #[test]
    fn poll_schedule_is_the_clis() {
        let (b, c) = (Duration::from_millis(500), Duration::from_millis(2500));
        for n in 0..10 {
            assert_eq!(poll_delay(n, b, c), b);
        }
        assert_eq!(poll_delay(10, b, c), Duration::from_millis(750));
        assert_eq!(poll_delay(11, b, c), Duration::from_millis(1125));
        assert_eq!(poll_delay(20, b, c), c);
        assert_eq!(poll_delay(u32::MAX, b, c), c);
    }

    #[test]
    fn backoff_grows_is_jittered_and_capped() {
        let (b, c) = (Duration::from_secs(1), Duration::from_secs(60));
        for n in 1..8 {
            let d = backoff(n, b, c).as_secs_f64();
            let full = (2f64.powi(n as i32 - 1)).min(60.0);
            assert!(d >= full * 0.5 - 1e-9 && d <= full + 1e-9, "{n}: {d}");
        }
        assert!(backoff(100, b, c) <= c);
    }

    #[test]
    fn token_debug_is_redacted() {
        let t = Token::new("abc123");
        assert!(!format!("{t:?}").contains("abc123"));
    }

    #[test]
    fn token_order_env_then_cli_context_then_file() {
        let dir = tempfile::tempdir().unwrap();
        let cli = dir.path().join("cli.toml");
        std::fs::write(
            &cli,
            "active_context = \"prod\"\n\n[[contexts]]\n  name = \"prod\"\n  token = \"ctx-prod\"\n\n[[contexts]]\n  name = \"test\"\n  token = \"ctx-test\"\n",
        )
        .unwrap();
        let tf = dir.path().join("tok");
        std::fs::write(&tf, "file-token\n").unwrap();
        std::fs::set_permissions(&tf, std::fs::Permissions::from_mode(0o600)).unwrap();
        let cfg = HetznerConfig {
            token_file: tf.clone(),
            ..HetznerConfig::default()
        };
        let clip = cli.to_str().unwrap();
        let (t, s) = resolve_token(
            None,
            &cfg,
            &env_of(&[("HCLOUD_TOKEN", "env-tok"), ("HCLOUD_CONFIG", clip)]),
        )
        .unwrap();
        assert_eq!((t, s), (Token::new("env-tok"), TokenSource::Env));
        let (t, _) = resolve_token(None, &cfg, &env_of(&[("HCLOUD_CONFIG", clip)])).unwrap();
        assert_eq!(t, Token::new("ctx-prod"));
        let (t, s) = resolve_token(
            None,
            &cfg,
            &env_of(&[("HCLOUD_CONFIG", clip), ("HCLOUD_CONTEXT", "test")]),
        )
        .unwrap();
        assert_eq!(t, Token::new("ctx-test"));
        assert!(s.to_string().contains("test"));
        let e = resolve_token(
            None,
            &cfg,
            &env_of(&[("HCLOUD_CONFIG", clip), ("HCLOUD_CONTEXT", "nope")]),
        )
        .unwrap_err();
        assert_eq!(e.exit_code(), ExitCode::Config);
        let (t, s) = resolve_token(None, &cfg, &env_of(&[("HOME", "/nonexistent")])).unwrap();
        assert_eq!(t, Token::new("file-token"));
        assert_eq!(s, TokenSource::ConfigFile(tf.clone()));
        let (t, _) = resolve_token(Some(&tf), &cfg, &env_of(&[("HCLOUD_TOKEN", "x")])).unwrap();
        assert_eq!(t, Token::new("file-token"));
        let e = resolve_token(None, &HetznerConfig::default(), &env_of(&[])).unwrap_err();
        assert_eq!(e.exit_code(), ExitCode::Config);
    }

    #[test]
    fn a_token_file_others_can_read_is_refused_with_77() {
        let dir = tempfile::tempdir().unwrap();
        let tf = dir.path().join("tok");
        std::fs::write(&tf, "very-secret").unwrap();
        std::fs::set_permissions(&tf, std::fs::Permissions::from_mode(0o640)).unwrap();
        let e = read_token_file(&tf).unwrap_err();
        assert_eq!(e.exit_code(), ExitCode::NoPerm);
        assert!(e.message.contains("chmod 600"), "{e}");
        assert!(!e.message.contains("very-secret"));
    }

    #[test]
    fn a_broken_cli_config_does_not_leak_its_token() {
        let dir = tempfile::tempdir().unwrap();
        let cli = dir.path().join("cli.toml");
        std::fs::write(&cli, "[[contexts]]\ntoken = \"leaky-token\" oops\n").unwrap();
        let e = resolve_token(
            None,
            &HetznerConfig::default(),
            &env_of(&[("HCLOUD_CONFIG", cli.to_str().unwrap())]),
        )
        .unwrap_err();
        assert_eq!(e.exit_code(), ExitCode::Config);
        assert!(!e.message.contains("leaky-token"), "{e}");
    }

    #[test]
    fn images_parse_with_z_or_offset_fractions_and_null_created_from() {
        for created in [
            "2026-01-02T03:04:05Z",
            "2026-01-02T03:04:05+00:00",
            "2026-01-02T03:04:05.123456789Z",
            "2026-01-02T04:04:05.5+01:00",
        ] {
            let v = serde_json::json!({"id": 4_000_000_000u64, "type": "snapshot", "status": "available",
                "description": null, "image_size": null, "disk_size": 40, "created": created,
                "created_from": null, "bound_to": null, "protection": {"delete": true},
                "labels": {}, "os_flavor": "ubuntu", "deprecated": null});
            let i: Image = serde_json::from_value(v).unwrap();
            assert_eq!(i.created.timestamp(), 1767323045, "{created}");
            assert!(!i.of_server(1));
            assert!(i.protection.delete);
        }
        let a: Action = serde_json::from_value(serde_json::json!({"id": 1_700_000_000_123u64,
            "command": "create_image", "status": "error", "progress": 42, "started": "2026-01-02T03:04:05Z",
            "finished": "2026-01-02T03:05:05Z", "error": {"code": "x", "message": "y"},
            "resources": [{"id": 7, "type": "image"}]}))
        .unwrap();
        assert_eq!(a.resource("image"), Some(7));
        assert_eq!(a.id, 1_700_000_000_123);
    }

    #[test]
    fn labels_are_checked() {
        assert_eq!(
            parse_label("daon-ops/managed=true").unwrap(),
            ("daon-ops/managed".to_string(), "true".to_string())
        );
        assert!(parse_label("novalue").is_err());
        assert!(parse_label("a=b c").is_err());
        assert!(parse_label("hetzner.cloud/x=1").is_err());
    }

    #[test]
    fn pagination_is_followed_past_fifty() {
        let f = fake_hcloud::Fake::start("secret-token-123").unwrap();
        let sid = f.add_server("s");
        for _ in 0..123 {
            f.add_image(serde_json::json!({"type": "snapshot", "created_from": sid}));
        }
        let c = client(&f, &fast());
        let imgs = c.images(&[("type", "snapshot".into())]).unwrap();
        assert_eq!(imgs.len(), 123);
        let pages = f
            .requests()
            .iter()
            .filter(|r| r["path"] == "/v1/images")
            .count();
        assert_eq!(pages, 3);
    }

    #[test]
    fn status_codes_map_to_exit_codes() {
        let f = fake_hcloud::Fake::start("secret-token-123").unwrap();
        f.add_server("s");
        let bad = Client::new(&fast(), f.endpoint(), Token::new("wrong"), false).unwrap();
        let e = bad.server("s").unwrap_err();
        assert_eq!(e.exit_code(), ExitCode::NoPerm, "{e}");
        let c = client(&f, &fast());
        assert_eq!(
            c.server("nope").unwrap_err().exit_code(),
            ExitCode::Negative
        );
        assert_eq!(c.server("999").unwrap_err().exit_code(), ExitCode::Negative);
        let e = c
            .call(
                "POST",
                &format!(
                    "/servers/{}/actions/create_image",
                    c.server("s").unwrap().id
                ),
                &[],
                Some(&serde_json::json!({"labels": []})),
                Retry::Once,
            )
            .unwrap_err();
        assert_eq!(e.exit_code(), ExitCode::Protocol);
        assert!(e.message.contains("labels:"), "{e}");
    }

    #[test]
    fn server_errors_are_retried_then_69() {
        let f = fake_hcloud::Fake::start("secret-token-123").unwrap();
        f.add_server("s");
        let c = client(&f, &fast());
        f.admin(
            "fail",
            serde_json::json!({"path": "/servers", "status": 503, "times": 4}),
        );
        assert_eq!(c.server("s").unwrap().name, "s");
        f.admin(
            "fail",
            serde_json::json!({"path": "/servers", "status": 502, "times": 5}),
        );
        let e = c.server("s").unwrap_err();
        assert_eq!(e.exit_code(), ExitCode::Unavailable);
        assert!(e.message.contains("after 5 tries"), "{e}");
    }

    #[test]
    fn a_slow_answer_times_out_and_is_retried() {
        let f = fake_hcloud::Fake::start("secret-token-123").unwrap();
        f.add_server("s");
        let cfg = HetznerConfig {
            timeout: Duration::from_millis(300),
            ..fast()
        };
        let c = client(&f, &cfg);
        f.admin(
            "delay",
            serde_json::json!({"path": "/servers", "ms": 1000, "times": 1}),
        );
        assert_eq!(c.server("s").unwrap().name, "s");
        f.admin(
            "delay",
            serde_json::json!({"path": "/servers", "ms": 1000, "times": 5}),
        );
        assert_eq!(
            c.server("s").unwrap_err().exit_code(),
            ExitCode::Unavailable
        );
    }

    #[test]
    fn nobody_listening_is_69() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/v1", l.local_addr().unwrap());
        drop(l);
        let c = Client::new(&fast(), url, Token::new("t"), false).unwrap();
        assert_eq!(
            c.server("s").unwrap_err().exit_code(),
            ExitCode::Unavailable
        );
    }

    #[test]
    fn rate_limit_is_waited_out_within_the_budget_else_75() {
        let f = fake_hcloud::Fake::start("secret-token-123").unwrap();
        f.add_server("s");
        let c = client(&f, &fast());
        f.admin("rate_limit", serde_json::json!({"reset_in_secs": 2}));
        let t = Instant::now();
        assert_eq!(c.server("s").unwrap().name, "s");
        assert!(
            t.elapsed() >= Duration::from_millis(1000),
            "{:?}",
            t.elapsed()
        );
        let short = HetznerConfig {
            rate_limit_wait: Duration::from_millis(500),
            ..fast()
        };
        f.admin("rate_limit", serde_json::json!({"reset_in_secs": 5}));
        let e = client(&f, &short).server("s").unwrap_err();
        assert_eq!(e.exit_code(), ExitCode::TempFail, "{e}");
    }

    #[test]
    fn an_action_is_polled_until_done_and_an_error_carries_the_message() {
        let f = fake_hcloud::Fake::start("secret-token-123").unwrap();
        let sid = f.add_server("s");
        f.admin("action_duration", serde_json::json!({"ms": 300}));
        let c = client(&f, &fast());
        let (img, a) = c
            .create_image(sid, "snapshot", "d", &BTreeMap::new())
            .unwrap();
        assert_eq!(img.status, "creating");
        let done = c.wait_action(&a, "server s").unwrap();
        assert_eq!(done.status, "success");
        assert_eq!(c.image(img.id).unwrap().status, "available");
        f.admin(
            "action_error",
            serde_json::json!({"code": "image_create_failed", "message": "disk read error"}),
        );
        let (_, a) = c
            .create_image(sid, "snapshot", "d", &BTreeMap::new())
            .unwrap();
        let e = c.wait_action(&a, "server s").unwrap_err();
        assert_eq!(e.kind, Kind::ActionFailed);
        assert!(e.message.contains("disk read error"), "{e}");
    }
}
