//! One TOML file describes the stack; its built-in default is the DAON stack of
//! the runbooks, so every tool does something sensible with no flags.
//! Precedence: flags > `DAON_*` environment > config file > built-in default.
//!
//! Every leaf key can be overridden from the environment: `chain.rpc_url` is
//! `DAON_CHAIN_RPC_URL`, `services.api.containers` is
//! `DAON_SERVICES_API_CONTAINERS` (lists are comma-separated). Relative paths in
//! a file are relative to that file's directory. Secrets never live here: the
//! config names the file or variable that holds them.

use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Where a config came from, for `--print-config` and error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// No file was found; the built-in default is in use.
    BuiltIn,
    /// Loaded from this file.
    File(PathBuf),
}

impl Source {
    /// `built-in default` or the file's path.
    pub fn describe(&self) -> String {
        match self {
            Source::BuiltIn => "built-in default".into(),
            Source::File(p) => p.display().to_string(),
        }
    }
}

/// The whole stack description.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The Compose project.
    pub compose: ComposeConfig,
    /// How to reach Docker.
    pub docker: DockerConfig,
    /// Services by role, each with its container names.
    pub services: BTreeMap<String, ServiceConfig>,
    /// The chain node.
    pub chain: ChainConfig,
    /// The PostgreSQL database.
    pub postgres: PostgresConfig,
    /// Named Docker volumes holding data.
    pub volumes: VolumesConfig,
    /// Directories on the host.
    pub paths: PathsConfig,
    /// Health-check thresholds and extra checks.
    pub health: HealthConfig,
    /// Backup sets (daon-backup, daon-restore).
    pub backup: BackupConfig,
    /// Where notifications go (email, webhook, dead-man pings).
    pub notify: crate::notify::NotifyConfig,
    /// When the health check alerts (with `--alert`).
    pub alerts: AlertsConfig,
    /// Rolling deploys of the API instances (daon-rolling-deploy).
    pub deploy: DeployConfig,
    /// This server in Hetzner Cloud and the API client's patience (daon-snapshot).
    pub hetzner: crate::hcloud::HetznerConfig,
    /// Kernel-update reboots (daon-reboot-guard).
    pub reboot: RebootConfig,
    /// The pre-launch security audit (`daon-health-check --suite pre-launch`).
    pub audit: AuditConfig,
    /// The launch-day chain reset (daon-wipe-reset).
    pub wipe: WipeConfig,
}

/// `[wipe]`: what daon-wipe-reset generates and how long it waits.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct WipeConfig {
    /// `.env` secrets generated anew (256 bits each from the OS generator).
    pub secret_names: Vec<String>,
    /// Waiting for the new chain and a healthy stack.
    #[serde(with = "duration")]
    pub health_deadline: Duration,
    /// How long the pre-wipe backup is the promised rollback.
    #[serde(with = "duration")]
    pub rollback_window: Duration,
    /// Files copied out of the chain's data directory after init (validator key material).
    pub key_files: Vec<String>,
}

impl Default for WipeConfig {
    fn default() -> Self {
        WipeConfig {
            secret_names: [
                "JWT_SECRET",
                "ENCRYPTION_KEY",
                "API_KEY_SECRET",
                "POSTGRES_PASSWORD",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
            health_deadline: Duration::from_secs(300),
            rollback_window: Duration::from_secs(3600),
            key_files: vec![
                "config/priv_validator_key.json".into(),
                "config/node_key.json".into(),
            ],
        }
    }
}

/// `[audit]`: what the pre-launch audit expects of a production server.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AuditConfig {
    /// Public API URL whose TLS certificate is checked.
    pub public_url: String,
    /// `.env` keys that are secrets (any key ending in _SECRET, _KEY,
    /// _PASSWORD or _TOKEN counts too).
    pub secret_keys: Vec<String>,
    /// Minimum length of a secret.
    pub min_secret_length: usize,
    /// User that must own `.env`; empty: not checked.
    pub deploy_user: String,
    /// Directories whose files must not contain any secret value.
    pub log_dirs: Vec<PathBuf>,
    /// Ports the firewall may allow.
    pub allowed_ports: Vec<u16>,
    /// Read this recorded `ufw status` output instead of running `ufw status`.
    pub ufw_status_file: PathBuf,
    /// A verified backup set must be at most this old.
    #[serde(with = "duration")]
    pub max_backup_age: Duration,
    /// Certificate days left below this: WARN.
    pub cert_warn_days: i64,
    /// Certificate days left below this: FAIL.
    pub cert_crit_days: i64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        AuditConfig {
            public_url: "https://api.daon.network/health".into(),
            secret_keys: [
                "JWT_SECRET",
                "ENCRYPTION_KEY",
                "API_KEY_SECRET",
                "POSTGRES_PASSWORD",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect(),
            min_secret_length: 32,
            deploy_user: String::new(),
            log_dirs: vec!["/var/log/daon".into()],
            allowed_ports: vec![22, 80, 443],
            ufw_status_file: PathBuf::new(),
            max_backup_age: Duration::from_secs(24 * 3600),
            cert_warn_days: 30,
            cert_crit_days: 7,
        }
    }
}

/// `[reboot]`: when and how daon-reboot-guard may reboot this server.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RebootConfig {
    /// The file whose existence means a reboot is needed (Debian/Ubuntu).
    pub required_file: PathBuf,
    /// Maintenance windows; a reboot happens only inside one.
    #[serde(with = "crate::window::serde_list")]
    pub windows: Vec<crate::window::Window>,
    /// A snapshot/backup or a verified local backup set must be this fresh.
    #[serde(with = "duration")]
    pub max_backup_age: Duration,
    /// Reboots allowed in 24 hours (the reboot-loop guard).
    pub max_reboots_per_day: u32,
    /// Time for in-flight requests to finish after maintenance mode is on.
    #[serde(with = "duration")]
    pub drain: Duration,
    /// Timeout for stopping the Compose stack.
    #[serde(with = "duration")]
    pub stop_timeout: Duration,
    /// The command that reboots (tests substitute their own).
    pub command: Vec<String>,
    /// POST switches maintenance mode on, DELETE switches it off; empty: none.
    pub maintenance_url: String,
    /// `verify` waits this long for the stack to become healthy after boot.
    #[serde(with = "duration")]
    pub verify_deadline: Duration,
    /// The snapshot tool asked about Hetzner snapshots/backups.
    pub snapshot_command: Vec<String>,
}

impl Default for RebootConfig {
    fn default() -> Self {
        RebootConfig {
            required_file: "/var/run/reboot-required".into(),
            windows: vec!["Sun 03:00-04:00 UTC"
                .parse()
                .unwrap_or_else(|_| unreachable_window())],
            max_backup_age: Duration::from_secs(24 * 3600),
            max_reboots_per_day: 2,
            drain: Duration::from_secs(30),
            stop_timeout: Duration::from_secs(120),
            command: vec!["systemctl".into(), "reboot".into()],
            maintenance_url: String::new(),
            verify_deadline: Duration::from_secs(600),
            snapshot_command: vec!["daon-snapshot".into()],
        }
    }
}

// The default window is a constant that parses; this only satisfies the type.
fn unreachable_window() -> crate::window::Window {
    crate::window::Window::never()
}

/// Alerting policy of `daon-health-check --alert`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AlertsConfig {
    /// Consecutive failed runs before a check alerts.
    pub failure_threshold: u32,
    /// Consecutive good runs before an alerting check is RESOLVED.
    pub success_threshold: u32,
    /// While still failing, remind at most this often.
    #[serde(with = "duration")]
    pub reminder_interval: Duration,
    /// Runs looked at for flapping.
    pub flap_window: u32,
    /// OK/failed changes within `flap_window` runs that make a check flapping.
    pub flap_changes: u32,
    /// Windows when alerts are muted, e.g. `"Sun 03:00-04:00 Europe/Berlin"`.
    #[serde(with = "crate::window::serde_list")]
    pub maintenance: Vec<crate::window::Window>,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig {
            failure_threshold: 2,
            success_threshold: 1,
            reminder_interval: Duration::from_secs(3600),
            flap_window: 10,
            flap_changes: 4,
            maintenance: Vec::new(),
        }
    }
}

/// The Compose project the stack runs as.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ComposeConfig {
    /// Directory holding the compose files (the runbooks' `/opt/daon-source`).
    pub project_dir: PathBuf,
    /// Compose files, relative to `project_dir`.
    pub files: Vec<PathBuf>,
    /// The `.env` file, relative to `project_dir`.
    pub env_file: PathBuf,
    /// Compose project name; empty means Compose's default (the directory name).
    pub project_name: String,
    /// `auto` (v2 `docker compose`, else v1 `docker-compose`), `v2` or `v1`.
    pub command: ComposeCommand,
}

/// Which Compose implementation to use.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ComposeCommand {
    /// Prefer v2, fall back to v1.
    Auto,
    /// `docker compose`.
    V2,
    /// `docker-compose`.
    V1,
}

/// How to reach the Docker daemon. `DOCKER_HOST` in the environment is honoured
/// as the docker CLI does.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DockerConfig {
    /// `docker --context NAME`; empty for the CLI's current context.
    pub context: String,
    /// `docker --host URL`: a daemon endpoint (`unix:///path`, `tcp://host:2376`,
    /// `ssh://user@host`); empty: `DOCKER_HOST` or the context. At most one of
    /// `context` and `host`.
    pub host: String,
    /// Timeout for one short Docker call (inspect, version).
    #[serde(with = "duration")]
    pub timeout: Duration,
}

/// One service role (api, postgres...) and the containers that run it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ServiceConfig {
    /// Container names; by DAON convention also the Compose service names.
    pub containers: Vec<String>,
    /// If false, a missing container is a warning, not critical.
    pub required: bool,
}

/// The chain node and what it should report.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ChainConfig {
    /// CometBFT RPC base URL.
    pub rpc_url: String,
    /// Expected chain id; empty means "the CHAIN_ID of the compose .env", and
    /// no check if that is absent too.
    pub chain_id: String,
    /// Container running the node (for `daond status`).
    pub container: String,
    /// Status command run inside the container.
    pub status_command: Vec<String>,
    /// `rpc`, `exec` (status command) or `auto` (RPC, else the command).
    pub source: ChainSource,
    /// Timeout for one status query.
    #[serde(with = "duration")]
    pub timeout: Duration,
    /// The newest block may be at most this old.
    #[serde(with = "duration")]
    pub max_block_age: Duration,
    /// The height may stay unchanged across runs at most this long.
    #[serde(with = "duration")]
    pub stall_after: Duration,
    /// Minimum number of peers (0 for a single-node chain).
    pub min_peers: u64,
}

/// Where chain status comes from.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ChainSource {
    /// The RPC first, the status command if the RPC cannot be reached.
    Auto,
    /// Only the RPC.
    Rpc,
    /// Only the status command inside the container.
    Exec,
}

/// The database.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct PostgresConfig {
    /// Container running PostgreSQL.
    pub container: String,
    /// Database user.
    pub user: String,
    /// Database name.
    pub database: String,
}

/// Named Docker volumes that hold state.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct VolumesConfig {
    /// The chain's data volume (mounted at `chain_path` in the node).
    pub chain: String,
    /// Path of the chain data inside the node container.
    pub chain_path: String,
    /// PostgreSQL's data volume.
    pub postgres: String,
}

/// Host directories.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct PathsConfig {
    /// Where backup sets are written.
    pub backup_dir: PathBuf,
    /// Where secrets live (mode 700).
    pub secrets_dir: PathBuf,
    /// Where tools keep state between runs (health-check history...).
    pub state_dir: PathBuf,
    /// Where lock files live.
    pub lock_dir: PathBuf,
}

/// Health-check settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct HealthConfig {
    /// Timeout for a check that sets none of its own.
    #[serde(with = "duration")]
    pub timeout: Duration,
    /// HTTP endpoints to check.
    pub http: Vec<HttpCheckConfig>,
    /// Mount points whose usage is checked.
    pub disk_paths: Vec<PathBuf>,
    /// Disk usage warning threshold, percent.
    pub disk_warn_percent: f64,
    /// Disk usage critical threshold, percent.
    pub disk_crit_percent: f64,
    /// Inode usage warning threshold, percent.
    pub inode_warn_percent: f64,
    /// Inode usage critical threshold, percent.
    pub inode_crit_percent: f64,
}

/// Backup sets: how they are made, kept and drilled (daon-backup, daon-restore).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct BackupConfig {
    /// `zstd` (multi-threaded, the default) or `gzip` (`.tar.gz`, for old tools).
    pub compression: Compression,
    /// zstd level (1 fastest .. 19); 3 is zstd's own default.
    pub zstd_level: i32,
    /// Compression threads; 0 means one per core.
    pub threads: u32,
    /// Where the chain data is read from: `auto` (the volume's host path when
    /// readable, else a helper container), `host`, `exec` (tar inside the node
    /// container) or `helper` (tar in a throwaway container with the volume).
    pub chain_source: ChainDataSource,
    /// Image of the helper container (needs `tar`).
    pub helper_image: String,
    /// More files for the config archive, relative to `compose.project_dir`
    /// (the compose files and the `.env` are always included).
    pub config_files: Vec<PathBuf>,
    /// Services stopped while their data is archived, restarted afterwards.
    pub stop: Vec<String>,
    /// How long a run waits for another backup or restore to finish.
    #[serde(with = "duration")]
    pub lock_wait: Duration,
    /// Prune: keep this many newest sets.
    pub keep_last: u32,
    /// Prune: keep the newest set of each of this many days.
    pub keep_daily: u32,
    /// Prune: keep the newest set of each of this many ISO weeks.
    pub keep_weekly: u32,
    /// Prune: keep the newest set of each of this many months.
    pub keep_monthly: u32,
    /// PostgreSQL image for `daon-restore drill` (same major version as the server).
    pub drill_image: String,
    /// Entry point for the drill container; empty: the image's own.
    pub drill_entrypoint: Vec<String>,
}

/// Compression of backup artifacts.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    /// Zstandard (`.zst`), multi-threaded.
    Zstd,
    /// gzip (`.gz`).
    Gzip,
}

/// Where the chain data volume is read from (and restored to).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ChainDataSource {
    /// The volume's host path when readable, else a helper container.
    Auto,
    /// The volume's host path (`docker volume inspect` Mountpoint).
    Host,
    /// `tar` inside the chain node's container.
    Exec,
    /// `tar` in a throwaway container that mounts the volume.
    Helper,
}

impl Default for BackupConfig {
    fn default() -> Self {
        BackupConfig {
            compression: Compression::Zstd,
            zstd_level: 3,
            threads: 0,
            chain_source: ChainDataSource::Auto,
            helper_image: "alpine".into(),
            config_files: Vec::new(),
            stop: Vec::new(),
            lock_wait: Duration::ZERO,
            keep_last: 1,
            keep_daily: 7,
            keep_weekly: 4,
            keep_monthly: 6,
            drill_image: "postgres:15".into(),
            drill_entrypoint: Vec::new(),
        }
    }
}

/// One HTTP endpoint check.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct HttpCheckConfig {
    /// Check name (`http:<name>`).
    pub name: String,
    /// URL to GET.
    pub url: String,
    /// Accepted status codes.
    pub expect_status: Vec<u16>,
    /// Whole-request timeout (connect + answer).
    #[serde(with = "duration")]
    pub timeout: Duration,
    /// Slower than this is a WARNING.
    #[serde(with = "opt_duration")]
    pub warn_latency: Option<Duration>,
    /// Slower than this is CRITICAL.
    #[serde(with = "opt_duration")]
    pub crit_latency: Option<Duration>,
    /// JSON Pointer (RFC 6901) into the body, e.g. `/status`.
    pub json_pointer: String,
    /// Value expected at `json_pointer` (compared as text).
    pub json_equals: String,
    /// For https: certificate days left below this is a WARNING.
    pub cert_warn_days: i64,
    /// For https: certificate days left below this is CRITICAL.
    pub cert_crit_days: i64,
    /// Do not verify the TLS certificate chain (still checks its expiry).
    pub insecure: bool,
}

impl Default for Config {
    fn default() -> Self {
        let svc = |names: &[&str]| ServiceConfig {
            containers: names.iter().map(|s| s.to_string()).collect(),
            required: true,
        };
        let mut services = BTreeMap::new();
        services.insert(
            "api".into(),
            svc(&["daon-api-1", "daon-api-2", "daon-api-3"]),
        );
        services.insert("postgres".into(), svc(&["daon-postgres"]));
        services.insert("redis".into(), svc(&["daon-redis"]));
        services.insert("blockchain".into(), svc(&["daon-blockchain"]));
        services.insert("caddy".into(), svc(&["daon-caddy"]));
        Config {
            compose: ComposeConfig::default(),
            docker: DockerConfig::default(),
            services,
            chain: ChainConfig::default(),
            postgres: PostgresConfig::default(),
            volumes: VolumesConfig::default(),
            paths: PathsConfig::default(),
            health: HealthConfig::default(),
            backup: BackupConfig::default(),
            notify: crate::notify::NotifyConfig::default(),
            alerts: AlertsConfig::default(),
            deploy: DeployConfig::default(),
            hetzner: crate::hcloud::HetznerConfig::default(),
            reboot: RebootConfig::default(),
            audit: AuditConfig::default(),
            wipe: WipeConfig::default(),
        }
    }
}

impl Default for ComposeConfig {
    fn default() -> Self {
        ComposeConfig {
            project_dir: "/opt/daon-source".into(),
            files: vec!["docker-compose.yml".into()],
            env_file: ".env".into(),
            project_name: String::new(),
            command: ComposeCommand::Auto,
        }
    }
}

impl Default for DockerConfig {
    fn default() -> Self {
        DockerConfig {
            context: String::new(),
            host: String::new(),
            timeout: Duration::from_secs(20),
        }
    }
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig {
            containers: Vec::new(),
            required: true,
        }
    }
}

impl Default for ChainConfig {
    fn default() -> Self {
        ChainConfig {
            rpc_url: "http://localhost:26657".into(),
            chain_id: String::new(),
            container: "daon-blockchain".into(),
            status_command: vec!["daond".into(), "status".into()],
            source: ChainSource::Auto,
            timeout: Duration::from_secs(5),
            max_block_age: Duration::from_secs(60),
            stall_after: Duration::from_secs(120),
            min_peers: 0,
        }
    }
}

impl Default for PostgresConfig {
    fn default() -> Self {
        PostgresConfig {
            container: "daon-postgres".into(),
            user: "daon".into(),
            database: "daon".into(),
        }
    }
}

impl Default for VolumesConfig {
    fn default() -> Self {
        VolumesConfig {
            chain: "daon_daon-blockchain-data".into(),
            chain_path: "/daon/.daon".into(),
            postgres: "daon_daon-postgres-data".into(),
        }
    }
}

impl Default for PathsConfig {
    fn default() -> Self {
        PathsConfig {
            backup_dir: "/opt/daon-backups".into(),
            secrets_dir: "/opt/daon/secrets".into(),
            state_dir: "/var/lib/daon-ops".into(),
            lock_dir: "/run/lock/daon-ops".into(),
        }
    }
}

/// How daon-rolling-deploy replaces the instances of a service.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DeployConfig {
    /// Service role (a key of `services`) whose containers are replaced.
    pub service: String,
    /// Compose variable holding the image tag in the compose file
    /// (`image: daon-api:${DAON_API_TAG:-latest}`); set for each `compose up`.
    pub image_env: String,
    /// Caddy admin API used to drain an instance before it is replaced;
    /// empty: no draining (Caddy's own health checks must cope).
    pub caddy_admin_url: String,
    /// Port the instances listen on (Caddy dials `<container>:<port>`).
    pub upstream_port: u16,
    /// The application through the load balancer, checked after a deploy.
    pub health_url: String,
    /// Also check the chain status after a deploy.
    pub verify_chain: bool,
    /// Watch each new instance this long after it turned healthy.
    #[serde(with = "duration")]
    pub monitor: Duration,
    /// Least time to wait for an instance to become healthy; extended to the
    /// container's own start period plus its retries when that is longer.
    #[serde(with = "duration")]
    pub health_timeout: Duration,
    /// Most time to wait for in-flight requests of a drained instance.
    #[serde(with = "duration")]
    pub drain_timeout: Duration,
    /// Image versions kept for rollback; older ones are removed (0: keep all).
    pub keep_images: usize,
    /// Named hosts (datacenters) for `daon-rolling-deploy --host NAME`.
    pub hosts: BTreeMap<String, DeployHostConfig>,
}

/// `[deploy.hosts.NAME]`: one Docker host of a multi-datacenter deploy. Empty
/// URLs fall back to `deploy.caddy_admin_url`, `deploy.health_url` and
/// `chain.rpc_url`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DeployHostConfig {
    /// A Docker context name, or an endpoint (`ssh://user@host`,
    /// `unix:///path`, `tcp://host:2376`); empty: `[docker]` as configured.
    pub docker: String,
    /// This host's Caddy admin API.
    pub caddy_admin_url: String,
    /// This host's API through its load balancer, checked after the deploy.
    pub health_url: String,
    /// This host's chain node RPC.
    pub rpc_url: String,
}

/// True when `target` names a Docker daemon endpoint (`scheme://...`) rather
/// than a context.
pub fn is_docker_endpoint(target: &str) -> bool {
    target.contains("://")
}

/// Checks a Docker endpoint URL: a scheme the docker CLI knows and something after it.
pub fn check_docker_endpoint(url: &str) -> std::result::Result<(), String> {
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(format!("{url:?} is not an endpoint (SCHEME://...)"));
    };
    if !["unix", "tcp", "ssh", "npipe", "fd"].contains(&scheme) {
        return Err(format!(
            "{url:?}: Docker endpoints are unix://, tcp://, ssh://, npipe:// or fd://"
        ));
    }
    if rest.is_empty() || rest.chars().any(char::is_whitespace) {
        return Err(format!("{url:?} has no address after {scheme}://"));
    }
    Ok(())
}

impl Default for DeployConfig {
    fn default() -> Self {
        DeployConfig {
            service: "api".into(),
            image_env: "DAON_API_TAG".into(),
            caddy_admin_url: "http://127.0.0.1:2019".into(),
            upstream_port: 3000,
            health_url: "https://api.daon.network/health".into(),
            verify_chain: true,
            monitor: Duration::from_secs(10),
            health_timeout: Duration::from_secs(60),
            drain_timeout: Duration::from_secs(30),
            keep_images: 5,
            hosts: BTreeMap::new(),
        }
    }
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            timeout: Duration::from_secs(10),
            http: vec![HttpCheckConfig {
                name: "api".into(),
                url: "http://localhost:3000/health".into(),
                ..HttpCheckConfig::default()
            }],
            disk_paths: vec!["/".into()],
            disk_warn_percent: 80.0,
            disk_crit_percent: 90.0,
            inode_warn_percent: 80.0,
            inode_crit_percent: 90.0,
        }
    }
}

impl Default for HttpCheckConfig {
    fn default() -> Self {
        HttpCheckConfig {
            name: String::new(),
            url: String::new(),
            expect_status: vec![200],
            timeout: Duration::from_secs(5),
            warn_latency: Some(Duration::from_secs(1)),
            crit_latency: None,
            json_pointer: String::new(),
            json_equals: String::new(),
            cert_warn_days: 30,
            cert_crit_days: 7,
            insecure: false,
        }
    }
}

/// The config file search path, first match wins.
pub const SEARCH_PATH_HELP: &str = "\
Config file: --config PATH, else $DAON_CONFIG, else ./daon.toml, else /etc/daon/daon.toml,
else the built-in default (the DAON stack of the runbooks). Any key can be overridden
from the environment: chain.rpc_url is DAON_CHAIN_RPC_URL (lists comma-separated).
Precedence: flags > DAON_* environment > config file > built-in default.";

/// A loaded configuration and where it came from.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The effective configuration (before tool flags).
    pub config: Config,
    /// The file it came from.
    pub source: Source,
    /// `DAON_*` variables that changed a key.
    pub env_overrides: Vec<String>,
}

impl Config {
    /// Finds and loads the config file (see [`SEARCH_PATH_HELP`]), then applies
    /// `DAON_*` overrides from the process environment.
    pub fn load(explicit: Option<&Path>) -> Result<Loaded> {
        let env: Vec<(String, String)> = std::env::vars().collect();
        let search = [
            PathBuf::from("daon.toml"),
            PathBuf::from("/etc/daon/daon.toml"),
        ];
        Self::load_with(explicit, &env, &search)
    }

    /// [`Config::load`] with the environment and the search path given.
    pub fn load_with(
        explicit: Option<&Path>,
        env: &[(String, String)],
        search: &[PathBuf],
    ) -> Result<Loaded> {
        let from_env = env
            .iter()
            .find(|(k, v)| k == "DAON_CONFIG" && !v.is_empty())
            .map(|(_, v)| PathBuf::from(v));
        let (path, must_exist) = match (explicit, from_env) {
            (Some(p), _) => (Some(p.to_path_buf()), true),
            (None, Some(p)) => (Some(p), true),
            (None, None) => match search.iter().find(|p| p.exists()) {
                Some(p) => (Some(p.clone()), true),
                None => (None, false),
            },
        };
        let (mut config, source) = match path {
            Some(p) => {
                let text = match std::fs::read_to_string(&p) {
                    Ok(t) => t,
                    Err(e) if must_exist => {
                        return Err(Error::Config(format!(
                            "cannot read config file {}: {e}\n  hint: fix the path given by --config or DAON_CONFIG, or unset it to use the built-in default",
                            p.display()
                        )))
                    }
                    Err(e) => return Err(Error::io("reading", p, e)),
                };
                let mut c = Self::parse(&text, &p)?;
                let base = p
                    .canonicalize()
                    .ok()
                    .and_then(|abs| abs.parent().map(Path::to_path_buf))
                    .unwrap_or_else(|| PathBuf::from("."));
                c.resolve_relative(&base);
                (c, Source::File(p))
            }
            None => (Config::default(), Source::BuiltIn),
        };
        let env_overrides = config.apply_env(env)?;
        config.validate(&source)?;
        Ok(Loaded {
            config,
            source,
            env_overrides,
        })
    }

    /// Parses TOML text; errors name the key and the file.
    pub fn parse(text: &str, path: &Path) -> Result<Config> {
        toml::from_str::<Config>(text).map_err(|e| {
            Error::Config(format!(
                "invalid config file {}: {}\n  hint: see `--print-config` for the keys and their defaults",
                path.display(),
                e.to_string().trim_end()
            ))
        })
    }

    fn resolve_relative(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() && !p.as_os_str().is_empty() {
                *p = base.join(&*p);
            }
        };
        fix(&mut self.compose.project_dir);
        fix(&mut self.paths.backup_dir);
        fix(&mut self.paths.secrets_dir);
        fix(&mut self.paths.state_dir);
        fix(&mut self.paths.lock_dir);
        fix(&mut self.hetzner.token_file);
        fix(&mut self.notify.smtp_password_file);
        fix(&mut self.notify.smtp_ca_file);
    }

    /// Applies `DAON_<KEY_PATH>` variables; returns the names that applied.
    fn apply_env(&mut self, env: &[(String, String)]) -> Result<Vec<String>> {
        let mut applied = Vec::new();
        let mut value = toml::Value::try_from(&*self)
            .map_err(|e| Error::Internal(format!("config to TOML: {e}")))?;
        let mut leaves = Vec::new();
        collect_leaves(&value, &mut Vec::new(), &mut leaves);
        let mut sorted: Vec<&(String, String)> = env.iter().collect();
        sorted.sort();
        for (name, raw) in sorted {
            let Some(key) = name.strip_prefix("DAON_") else {
                continue;
            };
            let Some(path) = leaves
                .iter()
                .find(|p| p.join("_").to_uppercase() == key)
                .cloned()
            else {
                continue;
            };
            let slot = leaf_mut(&mut value, &path)
                .ok_or_else(|| Error::Internal(format!("lost config key {}", path.join("."))))?;
            *slot = env_value(slot, raw);
            let candidate: Config = value.clone().try_into().map_err(|e: toml::de::Error| {
                Error::Config(format!(
                    "invalid value in environment variable {name} (config key {}): {}",
                    path.join("."),
                    e.message()
                ))
            })?;
            *self = candidate;
            applied.push(name.clone());
        }
        Ok(applied)
    }

    /// Checks values that parse but make no sense; names the key.
    pub fn validate(&self, source: &Source) -> Result<()> {
        let whence = match source {
            Source::BuiltIn => "the built-in default".to_string(),
            Source::File(p) => p.display().to_string(),
        };
        let bad = |key: &str, why: String| {
            Err(Error::Config(format!(
                "bad value for {key} in {whence}: {why}"
            )))
        };
        let h = &self.health;
        for (key, v) in [
            ("health.disk_warn_percent", h.disk_warn_percent),
            ("health.disk_crit_percent", h.disk_crit_percent),
            ("health.inode_warn_percent", h.inode_warn_percent),
            ("health.inode_crit_percent", h.inode_crit_percent),
        ] {
            if !(0.0..=100.0).contains(&v) {
                return bad(key, format!("{v} is not a percentage between 0 and 100"));
            }
        }
        if h.disk_warn_percent > h.disk_crit_percent {
            return bad(
                "health.disk_warn_percent",
                format!(
                    "warning threshold {} is above the critical one {}",
                    h.disk_warn_percent, h.disk_crit_percent
                ),
            );
        }
        if h.inode_warn_percent > h.inode_crit_percent {
            return bad(
                "health.inode_warn_percent",
                "warning threshold is above the critical one".into(),
            );
        }
        let mut names = std::collections::BTreeSet::new();
        for (i, c) in h.http.iter().enumerate() {
            let key = format!("health.http[{i}]");
            if c.name.is_empty() {
                return bad(
                    &format!("{key}.name"),
                    "every HTTP check needs a name".into(),
                );
            }
            if !names.insert(&c.name) {
                return bad(
                    &format!("{key}.name"),
                    format!("duplicate check name {:?}", c.name),
                );
            }
            if !(c.url.starts_with("http://") || c.url.starts_with("https://")) {
                return bad(
                    &format!("{key}.url"),
                    format!("{:?} is not an http:// or https:// URL", c.url),
                );
            }
            if c.cert_warn_days < c.cert_crit_days {
                return bad(
                    &format!("{key}.cert_warn_days"),
                    "must be at least cert_crit_days".into(),
                );
            }
            if c.timeout.is_zero() {
                return bad(&format!("{key}.timeout"), "must be more than zero".into());
            }
        }
        let is_url = |u: &str| u.starts_with("http://") || u.starts_with("https://");
        if !self.chain.rpc_url.is_empty() && !is_url(&self.chain.rpc_url) {
            return bad(
                "chain.rpc_url",
                format!("{:?} is not an http:// or https:// URL", self.chain.rpc_url),
            );
        }
        let a = &self.alerts;
        if a.failure_threshold == 0 || a.success_threshold == 0 {
            return bad(
                "alerts.failure_threshold",
                "thresholds must be at least 1".into(),
            );
        }
        if a.flap_changes < 2 || a.flap_window < a.flap_changes {
            return bad(
                "alerts.flap_changes",
                "must be at least 2 and at most alerts.flap_window".into(),
            );
        }
        if !self.docker.context.is_empty() && !self.docker.host.is_empty() {
            return bad(
                "docker.host",
                "set docker.context or docker.host, not both".into(),
            );
        }
        if !self.docker.host.is_empty() {
            if let Err(why) = check_docker_endpoint(&self.docker.host) {
                return bad("docker.host", why);
            }
        }
        for (name, h) in &self.deploy.hosts {
            let key = |k: &str| format!("deploy.hosts.{name}.{k}");
            if name.is_empty() || name.contains("://") {
                return bad(
                    &format!("deploy.hosts.{name:?}"),
                    "a host name must not be empty or look like an endpoint".into(),
                );
            }
            if is_docker_endpoint(&h.docker) {
                if let Err(why) = check_docker_endpoint(&h.docker) {
                    return bad(&key("docker"), why);
                }
            }
            for (k, u) in [
                ("caddy_admin_url", &h.caddy_admin_url),
                ("health_url", &h.health_url),
                ("rpc_url", &h.rpc_url),
            ] {
                if !u.is_empty() && !is_url(u) {
                    return bad(&key(k), format!("{u:?} is not an http:// or https:// URL"));
                }
            }
        }
        if self.chain.status_command.is_empty() && self.chain.source != ChainSource::Rpc {
            return bad("chain.status_command", "must not be empty".into());
        }
        for (role, s) in &self.services {
            if s.containers.iter().any(|c| c.is_empty()) {
                return bad(
                    &format!("services.{role}.containers"),
                    "container names must not be empty".into(),
                );
            }
        }
        Ok(())
    }

    /// The compose `.env` file, resolved against the project directory.
    pub fn env_file_path(&self) -> PathBuf {
        self.compose.project_dir.join(&self.compose.env_file)
    }

    /// Every configured container name, in role order.
    pub fn all_containers(&self) -> Vec<(String, String, bool)> {
        let mut out = Vec::new();
        for (role, s) in &self.services {
            for c in &s.containers {
                out.push((role.clone(), c.clone(), s.required));
            }
        }
        out
    }

    /// What `--print-config` prints: a header naming where the config came
    /// from, then [`Config::to_toml_redacted`].
    pub fn effective_toml(&self, source: &Source) -> Result<String> {
        Ok(format!(
            "# effective configuration (from {}; secrets redacted)\n{}",
            source.describe(),
            self.to_toml_redacted()?
        ))
    }

    /// The effective config as TOML, with secret-looking values redacted.
    pub fn to_toml_redacted(&self) -> Result<String> {
        let mut v = toml::Value::try_from(self)
            .map_err(|e| Error::Internal(format!("config to TOML: {e}")))?;
        redact(&mut v);
        toml::to_string_pretty(&v).map_err(|e| Error::Internal(format!("config to TOML: {e}")))
    }
}

fn collect_leaves(v: &toml::Value, path: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
    match v {
        toml::Value::Table(t) => {
            for (k, child) in t {
                path.push(k.clone());
                collect_leaves(child, path, out);
                path.pop();
            }
        }
        // Arrays of tables (health.http) are not addressable from one variable.
        toml::Value::Array(a) if a.iter().any(|x| x.is_table()) => {}
        _ => out.push(path.clone()),
    }
}

fn leaf_mut<'a>(v: &'a mut toml::Value, path: &[String]) -> Option<&'a mut toml::Value> {
    let mut cur = v;
    for k in path {
        cur = cur.as_table_mut()?.get_mut(k)?;
    }
    Some(cur)
}

/// Converts an environment string to the TOML type the key already has, so
/// `DAON_CHAIN_MIN_PEERS=3` is an integer and `...=three` a clear type error.
fn env_value(current: &toml::Value, raw: &str) -> toml::Value {
    match current {
        toml::Value::Integer(_) => raw
            .trim()
            .parse::<i64>()
            .map(toml::Value::Integer)
            .unwrap_or_else(|_| toml::Value::String(raw.into())),
        toml::Value::Float(_) => raw
            .trim()
            .parse::<f64>()
            .map(toml::Value::Float)
            .unwrap_or_else(|_| toml::Value::String(raw.into())),
        toml::Value::Boolean(_) => match raw.trim() {
            "true" | "1" | "yes" => toml::Value::Boolean(true),
            "false" | "0" | "no" => toml::Value::Boolean(false),
            _ => toml::Value::String(raw.into()),
        },
        toml::Value::Array(_) => toml::Value::Array(
            raw.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| toml::Value::String(s.into()))
                .collect(),
        ),
        _ => toml::Value::String(raw.into()),
    }
}

fn redact(v: &mut toml::Value) {
    if let toml::Value::Table(t) = v {
        for (k, child) in t.iter_mut() {
            let k = k.to_ascii_lowercase();
            let secretish = [
                "password",
                "token",
                "secret",
                "api_key",
                "webhook_url",
                "ping_url",
            ]
            .iter()
            .any(|s| k.contains(s))
                && !(k.ends_with("_file") || k.ends_with("_env") || k.ends_with("_dir"));
            if secretish && child.as_str().is_some_and(|v| !v.is_empty()) {
                *child = toml::Value::String("<redacted>".into());
            } else {
                redact(child);
            }
        }
    }
}

/// Reads a Compose `.env` file: `KEY=VALUE` lines, `#` comments, optional
/// `export `, single or double quotes. Returns pairs in file order.
pub fn read_env_file(path: &Path) -> Result<Vec<(String, String)>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io("reading", path, e))?;
    Ok(parse_env_file(&text))
}

/// Parses the text of a `.env` file (see [`read_env_file`]).
pub fn parse_env_file(text: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let v = v.trim();
        let v = if v.len() >= 2
            && ((v.starts_with('"') && v.ends_with('"'))
                || (v.starts_with('\'') && v.ends_with('\'')))
        {
            v[1..v.len() - 1].to_string()
        } else {
            // Unquoted: a ` #` starts a comment.
            v.split(" #").next().unwrap_or("").trim().to_string()
        };
        out.push((k.trim().to_string(), v));
    }
    out
}

/// Serde for `Duration` as human text (`"5s"`, `"2m 30s"`, `"500ms"`).
pub mod duration {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    /// Serializes as human text.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    /// Parses human text such as `5s` or `1m 30s`.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        humantime::parse_duration(&s).map_err(|e| {
            serde::de::Error::custom(format!(
                "{s:?} is not a duration ({e}); write it like \"5s\", \"500ms\" or \"2m\""
            ))
        })
    }
}

/// Serde for `Option<Duration>`; an empty string or `"none"` means no limit.
pub mod opt_duration {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    /// Serializes `None` as `"none"`.
    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&humantime::format_duration(*d).to_string()),
            None => s.serialize_str("none"),
        }
    }

    /// Parses human text, or `none`.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let s = String::deserialize(d)?;
        if s.is_empty() || s == "none" {
            return Ok(None);
        }
        humantime::parse_duration(&s).map(Some).map_err(|e| {
            serde::de::Error::custom(format!(
                "{s:?} is not a duration ({e}); write it like \"5s\" or \"none\""
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn load_text(text: &str, env: &[(&str, &str)]) -> Result<Loaded> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("daon.toml");
        std::fs::File::create(&p)
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::load_with(Some(&p), &env, &[])
    }

    #[test]
    fn built_in_default_is_the_runbook_stack() {
        let c = Config::default();
        assert_eq!(c.compose.project_dir, PathBuf::from("/opt/daon-source"));
        assert_eq!(
            c.services["api"].containers,
            ["daon-api-1", "daon-api-2", "daon-api-3"]
        );
        assert_eq!(c.postgres.container, "daon-postgres");
        assert_eq!(c.postgres.user, "daon");
        assert_eq!(c.postgres.database, "daon");
        assert_eq!(c.chain.container, "daon-blockchain");
        assert_eq!(c.chain.status_command, ["daond", "status"]);
        assert!(c.chain.rpc_url.ends_with(":26657"));
        assert_eq!(c.paths.backup_dir, PathBuf::from("/opt/daon-backups"));
        assert_eq!(c.paths.secrets_dir, PathBuf::from("/opt/daon/secrets"));
        c.validate(&Source::BuiltIn).unwrap();
    }

    #[test]
    fn no_file_anywhere_gives_the_built_in_default() {
        let l = Config::load_with(None, &[], &[PathBuf::from("/nonexistent/daon.toml")]).unwrap();
        assert_eq!(l.source, Source::BuiltIn);
        assert_eq!(l.config, Config::default());
    }

    #[test]
    fn a_partial_file_keeps_the_other_defaults_and_resolves_relative_paths() {
        let l = load_text(
            "[chain]\nrpc_url = \"http://127.0.0.1:36657\"\n[paths]\nstate_dir = \"state\"\n",
            &[],
        )
        .unwrap();
        assert_eq!(l.config.chain.rpc_url, "http://127.0.0.1:36657");
        assert_eq!(l.config.chain.container, "daon-blockchain");
        assert!(l.config.paths.state_dir.is_absolute());
        assert!(l.config.paths.state_dir.ends_with("state"));
        assert_eq!(
            l.config.paths.backup_dir,
            PathBuf::from("/opt/daon-backups")
        );
    }

    #[test]
    fn unknown_key_is_an_error_naming_key_and_file() {
        let err = load_text("[chain]\nrpc_ulr = \"x\"\n", &[]).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("rpc_ulr"), "{msg}");
        assert!(msg.contains("daon.toml"), "{msg}");
        assert_eq!(err.exit_code(), crate::ExitCode::Config);
    }

    #[test]
    fn bad_value_is_an_error_naming_the_key() {
        let err = load_text("[chain]\ntimeout = \"soon\"\n", &[]).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("timeout") && msg.contains("soon"), "{msg}");
        let err = load_text("[health]\ndisk_warn_percent = 95.0\n", &[]).unwrap_err();
        assert!(
            err.to_string().contains("health.disk_warn_percent"),
            "{err}"
        );
        let err = load_text("[health]\ndisk_crit_percent = 150.0\n", &[]).unwrap_err();
        assert!(
            err.to_string().contains("health.disk_crit_percent"),
            "{err}"
        );
    }

    #[test]
    fn env_overrides_file_and_is_typed() {
        let l = load_text(
            "[chain]\nmin_peers = 1\n",
            &[
                ("DAON_CHAIN_MIN_PEERS", "3"),
                ("DAON_SERVICES_API_CONTAINERS", "a, b"),
                ("DAON_CHAIN_TIMEOUT", "2s"),
                ("DAON_UNRELATED_THING", "x"),
            ],
        )
        .unwrap();
        assert_eq!(l.config.chain.min_peers, 3);
        assert_eq!(l.config.services["api"].containers, ["a", "b"]);
        assert_eq!(l.config.chain.timeout, Duration::from_secs(2));
        assert_eq!(l.env_overrides.len(), 3);
    }

    #[test]
    fn bad_env_value_names_the_variable() {
        let err = load_text("", &[("DAON_CHAIN_MIN_PEERS", "three")]).unwrap_err();
        assert!(err.to_string().contains("DAON_CHAIN_MIN_PEERS"), "{err}");
        assert_eq!(err.exit_code(), crate::ExitCode::Config);
    }

    #[test]
    fn missing_explicit_file_is_a_config_error() {
        let err = Config::load_with(Some(Path::new("/nonexistent/x.toml")), &[], &[]).unwrap_err();
        assert_eq!(err.exit_code(), crate::ExitCode::Config);
        assert!(err.to_string().contains("/nonexistent/x.toml"));
    }

    #[test]
    fn print_config_round_trips_and_redacts() {
        let c = Config::default();
        let text = c.to_toml_redacted().unwrap();
        let back: Config = toml::from_str(&text).unwrap();
        assert_eq!(back, c);
        let mut v: toml::Value =
            toml::from_str("[x]\npassword = \"hunter2\"\npassword_file = \"/p\"\n").unwrap();
        redact(&mut v);
        let s = v.to_string();
        assert!(!s.contains("hunter2") && s.contains("/p"), "{s}");
    }

    #[test]
    fn deploy_hosts_and_docker_host_parse_and_are_checked() {
        let l = load_text(
            "[deploy.hosts.dc1]\n[deploy.hosts.dc2]\ndocker = \"ssh://deploy@dc2.example\"\ncaddy_admin_url = \"http://10.0.0.2:2019\"\nhealth_url = \"https://dc2.example/health\"\nrpc_url = \"http://10.0.0.2:26657\"\n[deploy.hosts.dc3]\ndocker = \"dc3-context\"\n",
            &[("DAON_DEPLOY_HOSTS_DC3_DOCKER", "unix:///run/dc3.sock")],
        )
        .unwrap();
        let h = &l.config.deploy.hosts;
        assert_eq!(h.len(), 3);
        assert_eq!(h["dc1"], DeployHostConfig::default());
        assert_eq!(h["dc2"].docker, "ssh://deploy@dc2.example");
        assert_eq!(h["dc2"].rpc_url, "http://10.0.0.2:26657");
        assert_eq!(
            h["dc3"].docker, "unix:///run/dc3.sock",
            "env overrides a host key"
        );
        for (text, key) in [
            ("[deploy.hosts.x]\ndockr = \"a\"\n", "dockr"),
            (
                "[deploy.hosts.x]\ndocker = \"http://a\"\n",
                "deploy.hosts.x.docker",
            ),
            (
                "[deploy.hosts.x]\nhealth_url = \"a:80\"\n",
                "deploy.hosts.x.health_url",
            ),
            ("[docker]\nhost = \"unix://\"\n", "docker.host"),
            (
                "[docker]\nhost = \"unix:///s\"\ncontext = \"c\"\n",
                "docker.host",
            ),
        ] {
            let err = load_text(text, &[]).unwrap_err();
            assert!(err.to_string().contains(key), "{text}: {err}");
            assert_eq!(err.exit_code(), crate::ExitCode::Config);
        }
        assert!(is_docker_endpoint("ssh://a") && !is_docker_endpoint("default"));
        assert!(check_docker_endpoint("tcp://10.0.0.1:2376").is_ok());
        assert!(check_docker_endpoint("ftp://x").is_err());
    }

    #[test]
    fn env_file_parsing() {
        let pairs = parse_env_file(
            "# comment\nCHAIN_ID=daon-test-1\nexport A=\"quoted # not a comment\"\nB='single'\nC=plain # comment\n\nbroken line\n",
        );
        assert_eq!(
            pairs,
            vec![
                ("CHAIN_ID".to_string(), "daon-test-1".to_string()),
                ("A".to_string(), "quoted # not a comment".to_string()),
                ("B".to_string(), "single".to_string()),
                ("C".to_string(), "plain".to_string()),
            ]
        );
    }
}

#[cfg(test)]
mod example_tests {
    use super::*;

    /// The example shipped as /etc/daon/daon.toml (etc/daon.toml) must stay
    /// complete and true: it parses, and it says exactly the built-in default.
    #[test]
    fn shipped_example_config_is_the_built_in_default() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../etc/daon.toml");
        let text = std::fs::read_to_string(&p).unwrap();
        let parsed = Config::parse(&text, &p).unwrap();
        assert_eq!(
            parsed,
            Config::default(),
            "etc/daon.toml drifted from Config::default()"
        );
        let every_section = toml::to_string(&Config::default()).unwrap();
        for line in every_section.lines().filter(|l| l.starts_with('[')) {
            assert!(
                text.contains(line),
                "etc/daon.toml lacks the section {line}"
            );
        }
    }
}
