//! Docker and Compose through their CLIs, read in structured form only
//! (`docker inspect` JSON, `compose ps -q`): never grep human output, where
//! "healthy" is a substring of "unhealthy". Works with Compose v2
//! (`docker compose`) and v1 (`docker-compose`), honours `DOCKER_HOST`, and
//! targets a context (`--context NAME`) or an endpoint (`--host URL`: another
//! daemon over ssh://, tcp:// or a unix socket) when configured.

use crate::config::{ComposeCommand, Config};
use crate::error::{Error, Result};
use crate::process::{Cmd, ProcessError, ProcessReader};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

/// Docker's health status of a container, compared exactly.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Health {
    /// The container defines no health check.
    None,
    /// Health check still in its start period.
    Starting,
    /// Passing.
    Healthy,
    /// Failing.
    Unhealthy,
    /// A value this version does not know.
    Other(String),
}

impl Health {
    /// Parses Docker's `.State.Health.Status` exactly.
    pub fn parse(s: &str) -> Health {
        match s {
            "" | "none" => Health::None,
            "starting" => Health::Starting,
            "healthy" => Health::Healthy,
            "unhealthy" => Health::Unhealthy,
            other => Health::Other(other.to_string()),
        }
    }

    /// The word Docker uses.
    pub fn as_str(&self) -> &str {
        match self {
            Health::None => "none",
            Health::Starting => "starting",
            Health::Healthy => "healthy",
            Health::Unhealthy => "unhealthy",
            Health::Other(s) => s,
        }
    }
}

/// What `docker inspect` says about one container.
#[derive(Debug, Clone, Serialize)]
pub struct ContainerStatus {
    /// Container name (without the leading `/`).
    pub name: String,
    /// Full container id.
    pub id: String,
    /// `running`, `exited`, `restarting`, `paused`, `created`, `dead`.
    pub state: String,
    /// Docker health.
    pub health: Health,
    /// Last lines of the health check's output, if any.
    pub health_log: String,
    /// How often Docker restarted it.
    pub restart_count: u64,
    /// Image id (`sha256:...`).
    pub image_id: String,
    /// Image reference it was created from (`daon-api:1.2.3`).
    pub image: String,
    /// Exit code of the last run.
    pub exit_code: i64,
    /// Compose service label, if any.
    pub compose_service: String,
    /// Compose project label, if any.
    pub compose_project: String,
}

impl ContainerStatus {
    /// True when the container is running.
    pub fn is_running(&self) -> bool {
        self.state == "running"
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct InspectJson {
    id: String,
    name: String,
    image: String,
    restart_count: u64,
    state: InspectState,
    config: InspectConfig,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct InspectState {
    status: String,
    exit_code: i64,
    health: Option<InspectHealth>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct InspectHealth {
    status: String,
    #[serde(default)]
    log: Option<Vec<InspectHealthLog>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct InspectHealthLog {
    #[serde(default)]
    output: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct InspectConfig {
    image: String,
    #[serde(default)]
    labels: Option<std::collections::BTreeMap<String, String>>,
}

/// Parses `docker inspect` JSON (an array of containers).
pub fn parse_inspect(json: &[u8]) -> Result<Vec<ContainerStatus>> {
    let raw: Vec<InspectJson> = serde_json::from_slice(json)
        .map_err(|e| Error::Internal(format!("unexpected `docker inspect` output: {e}")))?;
    Ok(raw
        .into_iter()
        .map(|c| {
            let labels = c.config.labels.unwrap_or_default();
            let (health, health_log) = match c.state.health {
                Some(h) => (
                    Health::parse(&h.status),
                    h.log
                        .and_then(|l| l.last().map(|e| e.output.trim().to_string()))
                        .unwrap_or_default(),
                ),
                None => (Health::None, String::new()),
            };
            ContainerStatus {
                name: c.name.trim_start_matches('/').to_string(),
                id: c.id,
                state: c.state.status,
                health,
                health_log,
                restart_count: c.restart_count,
                image_id: c.image,
                image: c.config.image,
                exit_code: c.state.exit_code,
                compose_service: labels
                    .get("com.docker.compose.service")
                    .cloned()
                    .unwrap_or_default(),
                compose_project: labels
                    .get("com.docker.compose.project")
                    .cloned()
                    .unwrap_or_default(),
            }
        })
        .collect())
}

/// The docker CLI, bound to a context or an endpoint.
#[derive(Debug, Clone)]
pub struct Docker {
    context: String,
    host: String,
    timeout: Duration,
}

/// Result of inspecting named containers: found ones and missing names.
#[derive(Debug, Clone)]
pub struct Inspected {
    /// Containers that exist.
    pub found: Vec<ContainerStatus>,
    /// Names Docker does not know.
    pub missing: Vec<String>,
}

impl Docker {
    /// A client for the configured endpoint (`docker.host`) or context
    /// (`docker.context`); both empty: `DOCKER_HOST` or the CLI's current context.
    pub fn new(config: &Config) -> Docker {
        Docker {
            context: config.docker.context.clone(),
            host: config.docker.host.clone(),
            timeout: config.docker.timeout,
        }
    }

    /// A client for `target`: an endpoint (`ssh://user@host`, `unix:///path`,
    /// `tcp://...`) or a context name; empty: as [`Docker::new`].
    pub fn for_target(config: &Config, target: &str) -> Docker {
        let mut d = Docker::new(config);
        if crate::config::is_docker_endpoint(target) {
            d.host = target.to_string();
            d.context.clear();
        } else if !target.is_empty() {
            d.context = target.to_string();
            d.host.clear();
        }
        d
    }

    /// The endpoint or context this client targets ("" for the default).
    pub fn target(&self) -> &str {
        if self.host.is_empty() {
            &self.context
        } else {
            &self.host
        }
    }

    /// The global flags that select the daemon (`--host URL` or `--context NAME`),
    /// understood by `docker` and `docker-compose` v1 alike.
    pub fn target_args(&self) -> Vec<String> {
        if !self.host.is_empty() {
            vec!["--host".into(), self.host.clone()]
        } else if !self.context.is_empty() {
            vec!["--context".into(), self.context.clone()]
        } else {
            Vec::new()
        }
    }

    /// A `docker` command with the endpoint or context applied.
    pub fn cmd(&self) -> Cmd {
        Cmd::new("docker")
            .timeout(self.timeout)
            .args(self.target_args())
    }

    fn where_(&self) -> String {
        match (
            self.host.is_empty(),
            self.context.is_empty(),
            std::env::var("DOCKER_HOST"),
        ) {
            (false, _, _) => format!(" at {}", self.host),
            (true, false, _) => format!(" (context {})", self.context),
            (true, true, Ok(h)) if !h.is_empty() => format!(" at {h}"),
            _ => String::new(),
        }
    }

    /// Maps the CLI's complaints to our errors: daemon down (69), permission (77).
    pub fn classify(&self, err: ProcessError) -> Error {
        let text = match &err {
            ProcessError::Spawn { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                return Error::DockerUnreachable {
                    context: self.where_(),
                    detail: "the `docker` CLI is not installed (not on PATH)".into(),
                }
            }
            ProcessError::Timeout { .. } => {
                return Error::DockerUnreachable {
                    context: self.where_(),
                    detail: err.to_string(),
                }
            }
            other => other.stderr().to_string(),
        };
        if let Some(e) = self.classify_stderr(&text) {
            return e;
        }
        Error::Process(err)
    }

    fn classify_stderr(&self, stderr: &str) -> Option<Error> {
        let lower = stderr.to_ascii_lowercase();
        if lower.contains("permission denied") && lower.contains("docker") {
            return Some(Error::DockerPermission(stderr.trim().to_string()));
        }
        let unreachable = [
            "cannot connect to the docker daemon",
            "error during connect",
            "is the docker daemon running",
            "connection refused",
            "no such host",
            "context not found",
            "failed to connect to the docker api",
        ];
        if unreachable.iter().any(|u| lower.contains(u)) {
            return Some(Error::DockerUnreachable {
                context: self.where_(),
                detail: stderr.trim().lines().last().unwrap_or("").to_string(),
            });
        }
        None
    }

    /// Checks the daemon answers; returns its version.
    pub fn ping(&self) -> Result<String> {
        let cmd = self
            .cmd()
            .args(["version", "--format", "{{.Server.Version}}"]);
        let out = cmd.run().map_err(|e| self.classify(e))?;
        Ok(out.stdout_str().trim().to_string())
    }

    /// Inspects containers by name or id. Names Docker does not know are
    /// returned in `missing`; an unreachable daemon is an error.
    pub fn inspect(&self, names: &[String]) -> Result<Inspected> {
        if names.is_empty() {
            return Ok(Inspected {
                found: Vec::new(),
                missing: Vec::new(),
            });
        }
        let cmd = self
            .cmd()
            .args(["inspect", "--type", "container", "--format", "{{json .}}"])
            .args(names);
        let out = cmd.run_unchecked().map_err(|e| self.classify(e))?;
        let stderr = out.stderr_str();
        if !out.success() {
            if let Some(e) = self.classify_stderr(&stderr) {
                return Err(e);
            }
        }
        // One JSON object per line with --format '{{json .}}'.
        let mut found = Vec::new();
        for line in out.stdout_str().lines().filter(|l| !l.trim().is_empty()) {
            let mut v = parse_inspect(format!("[{line}]").as_bytes())?;
            found.append(&mut v);
        }
        let missing: Vec<String> = names
            .iter()
            .filter(|n| {
                !found
                    .iter()
                    .any(|c| &c.name == *n || c.id.starts_with(n.as_str()))
            })
            .cloned()
            .collect();
        if !out.success() && !missing.is_empty() && !stderr.to_ascii_lowercase().contains("no such")
        {
            // Failed for some other reason than missing containers.
            cmd.check(&out).map_err(|e| self.classify(e))?;
        }
        Ok(Inspected { found, missing })
    }

    /// `docker exec` into a container, capturing output (short commands).
    pub fn exec(&self, container: &str, argv: &[String]) -> Cmd {
        self.cmd().args(["exec", container]).args(argv)
    }

    /// `docker exec -i`, streaming the command's stdout without buffering it
    /// (for `pg_dump` or `tar` inside a container). A non-zero exit of the
    /// command is an error at the end of the stream.
    pub fn exec_reader(&self, container: &str, argv: &[String]) -> Result<ProcessReader> {
        self.cmd()
            .args(["exec", "-i", container])
            .args(argv)
            .reader()
            .map_err(|e| self.classify(e))
    }
}

/// Which Compose implementation is in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Flavor {
    /// `docker compose` (Go, plugin).
    V2,
    /// `docker-compose` (Python, 1.x).
    V1,
}

/// A Compose project: files, env file, project name, and the CLI to drive it.
#[derive(Debug, Clone)]
pub struct Compose {
    /// v1 or v2.
    pub flavor: Flavor,
    /// Its version string.
    pub version: String,
    docker: Docker,
    project_dir: PathBuf,
    files: Vec<PathBuf>,
    env_file: PathBuf,
    project_name: String,
}

impl Compose {
    /// Finds a Compose implementation as configured (`auto` prefers v2).
    pub fn detect(config: &Config, docker: &Docker) -> Result<Compose> {
        let try_v2 = || {
            docker
                .cmd()
                .args(["compose", "version", "--short"])
                .run()
                .ok()
                .map(|o| (Flavor::V2, o.stdout_str().trim().to_string()))
        };
        let try_v1 = || {
            Cmd::new("docker-compose")
                .args(["version", "--short"])
                .run()
                .ok()
                .map(|o| (Flavor::V1, o.stdout_str().trim().to_string()))
        };
        let found = match config.compose.command {
            ComposeCommand::V2 => try_v2(),
            ComposeCommand::V1 => try_v1(),
            ComposeCommand::Auto => try_v2().or_else(try_v1),
        };
        let (flavor, version) = found.ok_or_else(|| Error::DockerUnreachable {
            context: String::new(),
            detail: format!(
                "no Compose found (compose.command = {:?}): install the Compose v2 plugin (`docker compose`) or docker-compose v1",
                config.compose.command
            ),
        })?;
        Ok(Compose {
            flavor,
            version,
            docker: docker.clone(),
            project_dir: config.compose.project_dir.clone(),
            files: config
                .compose
                .files
                .iter()
                .map(|f| config.compose.project_dir.join(f))
                .collect(),
            env_file: config.env_file_path(),
            project_name: config.compose.project_name.clone(),
        })
    }

    /// A compose command with project directory, files, env file and name set.
    pub fn cmd(&self) -> Cmd {
        let mut c = match self.flavor {
            Flavor::V2 => self.docker.cmd().arg("compose"),
            // v1 takes the same --host/--context as the docker CLI.
            Flavor::V1 => Cmd::new("docker-compose")
                .timeout(self.docker.timeout)
                .args(self.docker.target_args()),
        };
        c = c.arg("--project-directory").arg(&self.project_dir);
        for f in &self.files {
            c = c.arg("-f").arg(f);
        }
        if self.env_file.exists() {
            c = c.arg("--env-file").arg(&self.env_file);
        }
        if !self.project_name.is_empty() {
            c = c.arg("-p").arg(&self.project_name);
        }
        c
    }

    /// All containers of the project (running or not), via `ps -a -q` and
    /// `docker inspect`: the same structured answer from v1 and v2.
    pub fn containers(&self) -> Result<Vec<ContainerStatus>> {
        let out = self
            .cmd()
            .args(["ps", "-a", "-q"])
            .run()
            .map_err(|e| self.docker.classify(e))?;
        let ids: Vec<String> = out
            .stdout_str()
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect();
        Ok(self.docker.inspect(&ids)?.found)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_is_compared_exactly() {
        assert_eq!(Health::parse("healthy"), Health::Healthy);
        assert_eq!(Health::parse("unhealthy"), Health::Unhealthy);
        assert_ne!(Health::parse("unhealthy"), Health::Healthy);
        assert_eq!(Health::parse(""), Health::None);
        assert_eq!(Health::parse("weird"), Health::Other("weird".into()));
    }

    #[test]
    fn parses_real_inspect_shape() {
        let json = br#"[{"Id":"abc123","Name":"/daon-api-2","Image":"sha256:feed","RestartCount":4,
            "State":{"Status":"running","ExitCode":0,"Health":{"Status":"unhealthy","Log":[{"Output":"old"},{"Output":"HTTP 503\n"}]}},
            "Config":{"Image":"daon-api:1.2.3","Labels":{"com.docker.compose.service":"daon-api-2","com.docker.compose.project":"daon"}}}]"#;
        let c = &parse_inspect(json).unwrap()[0];
        assert_eq!(c.name, "daon-api-2");
        assert_eq!(c.health, Health::Unhealthy);
        assert_eq!(c.health_log, "HTTP 503");
        assert_eq!(c.restart_count, 4);
        assert_eq!(c.image, "daon-api:1.2.3");
        assert_eq!(c.image_id, "sha256:feed");
        assert_eq!(c.compose_service, "daon-api-2");
        assert!(c.is_running());
    }

    #[test]
    fn daemon_down_messages_are_classified() {
        let d = Docker::new(&Config::default());
        let e = d
            .classify_stderr("Cannot connect to the Docker daemon at unix:///x.sock. Is the docker daemon running?")
            .unwrap();
        assert_eq!(e.exit_code(), crate::ExitCode::Unavailable);
        let e = d
            .classify_stderr(
                "permission denied while trying to connect to the Docker daemon socket",
            )
            .unwrap();
        assert_eq!(e.exit_code(), crate::ExitCode::NoPerm);
        assert!(d.classify_stderr("Error: No such object: x").is_none());
    }

    #[test]
    fn targets_an_endpoint_or_a_context() {
        let mut c = Config::default();
        assert!(Docker::new(&c).target_args().is_empty());
        c.docker.context = "prod".into();
        assert_eq!(Docker::new(&c).target_args(), ["--context", "prod"]);
        let d = Docker::for_target(&c, "ssh://deploy@dc2");
        assert_eq!(d.target_args(), ["--host", "ssh://deploy@dc2"]);
        assert_eq!(d.target(), "ssh://deploy@dc2");
        assert!(d.where_().contains("ssh://deploy@dc2"));
        let d = Docker::for_target(&c, "dc2");
        assert_eq!(d.target_args(), ["--context", "dc2"]);
        assert_eq!(Docker::for_target(&c, "").target(), "prod");
        c.docker.context.clear();
        c.docker.host = "unix:///run/x.sock".into();
        assert_eq!(
            Docker::new(&c).target_args(),
            ["--host", "unix:///run/x.sock"]
        );
    }
}
