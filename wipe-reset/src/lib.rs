//! daon-wipe-reset: the launch-day move from the test chain to mainnet, with
//! nothing left to luck. In order, stopping at the first failure with
//! nothing destroyed: plan, confirmation (typed, or matching flags without a
//! TTY), a verified pre-wipe backup set, new secrets (never overwriting),
//! `compose down -v` of this project only, `up -d`, the new chain's key
//! material saved, and verification — ending with the exact rollback command.

use chrono::Utc;
use clap::{CommandFactory, Parser};
use daon_common::config::{self, Config};
use daon_common::docker::{Compose, Docker};
use daon_common::exit::EXIT_CODES_HELP;
use daon_common::http::{self, AgentOptions};
use daon_common::process::Cmd;
use daon_common::{atomic, lock, ExitCode};
use std::io::{BufRead, IsTerminal, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The phrase an operator must type.
pub const PHRASE: &str = "WIPE-PRODUCTION";

const AFTER_HELP: &str = "\
Examples:
  daon-wipe-reset --new-chain-id daon-mainnet-1 --dry-run     # every check, the plan; nothing changes
  daon-wipe-reset --new-chain-id daon-mainnet-1               # on a terminal: type WIPE-PRODUCTION, then the current chain id
  daon-wipe-reset --new-chain-id daon-mainnet-1 --confirm WIPE-PRODUCTION --current-chain-id daon-test-1   # without a TTY

Steps, stopping at the first failure with nothing destroyed: the plan and what will be lost;
confirmation; a pre-wipe backup set (tag pre-wipe: database, chain volume, .env) verified against
its manifest; new secrets (256 bits each) in <secrets dir>/secrets-<new id>.env (mode 600, never
overwritten) and .env updated atomically; `compose down -v` for this project only, then `up -d`;
the new chain's key files saved next to the secrets (mode 600); verification (.env and the chain
say the new id, every check passes). Rollback within [wipe] rollback_window: daon-restore <set>.";

/// Command line.
#[derive(Debug, Parser)]
#[command(
    name = "daon-wipe-reset",
    version,
    about = "Wipe the test chain and start a new one (launch day), with a verified pre-wipe backup and a rollback path",
    after_help = "See --help for the steps, examples and exit codes."
)]
pub struct Cli {
    /// Config file
    #[arg(short, long, value_name = "PATH", env = "DAON_CONFIG")]
    pub config: Option<PathBuf>,
    /// The chain id to start (e.g. daon-mainnet-1)
    #[arg(long, value_name = "ID", required_unless_present = "print_config")]
    pub new_chain_id: Option<String>,
    /// Without a TTY: the confirmation phrase, WIPE-PRODUCTION
    #[arg(long, value_name = "PHRASE")]
    pub confirm: Option<String>,
    /// Without a TTY: the chain id being wiped (must match the chain and .env)
    #[arg(long, value_name = "ID")]
    pub current_chain_id: Option<String>,
    /// Run every check and print the plan; change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Print the new secret values (default: only where they are)
    #[arg(long)]
    pub show_secrets: bool,
    /// Print JSON Lines: a `step` record per line of the report, then a `summary`
    #[arg(long)]
    pub json: bool,
    /// Print the effective configuration and exit
    #[arg(long)]
    pub print_config: bool,
}

/// The clap command (man pages, completions).
pub fn command() -> clap::Command {
    Cli::command().after_long_help(format!(
        "{AFTER_HELP}\n\n{EXIT_CODES_HELP}\n\n{}",
        config::SEARCH_PATH_HELP
    ))
}

/// Why the run stopped.
#[derive(Debug)]
pub struct Stop {
    /// Exit code.
    pub code: ExitCode,
    /// What went wrong and what to do.
    pub message: String,
}

fn stop(code: ExitCode, message: impl Into<String>) -> Stop {
    Stop {
        code,
        message: message.into(),
    }
}

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl From<daon_common::Error> for Stop {
    fn from(e: daon_common::Error) -> Self {
        stop(e.exit_code(), e.to_string())
    }
}

/// A plain chain id: letters, digits, `-`, `_`, `.`.
pub fn valid_chain_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 50
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

/// `.env` text with `updates` applied: existing `KEY=` lines replaced in
/// place (comments and order kept), missing keys appended.
pub fn update_env(text: &str, updates: &[(String, String)]) -> String {
    let mut done = vec![false; updates.len()];
    let mut out = String::new();
    for line in text.lines() {
        let trimmed = line.trim_start();
        let bare = trimmed.strip_prefix("export ").unwrap_or(trimmed);
        let key = bare.split('=').next().unwrap_or("").trim();
        match updates
            .iter()
            .position(|(k, _)| k == key && bare.contains('='))
        {
            Some(i) => {
                out.push_str(&format!("{}={}\n", updates[i].0, updates[i].1));
                done[i] = true;
            }
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    for (i, (k, v)) in updates.iter().enumerate() {
        if !done[i] {
            out.push_str(&format!("{k}={v}\n"));
        }
    }
    out
}

fn random_secret() -> Result<String, Stop> {
    let mut b = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .map_err(|e| stop(ExitCode::Internal, format!("reading /dev/urandom: {e}")))?;
    Ok(b.iter().map(|x| format!("{x:02x}")).collect())
}

/// The chain id the node reports.
fn chain_network(cfg: &Config) -> Result<(String, u64), Stop> {
    let agent = http::agent(AgentOptions {
        timeout: cfg.chain.timeout,
        ..AgentOptions::default()
    })?;
    let url = format!("{}/status", cfg.chain.rpc_url.trim_end_matches('/'));
    let r = http::get(&agent, &url)?;
    let s = daon_health_check::checks::chain::parse_status(&r.body)
        .map_err(|e| stop(ExitCode::Protocol, format!("{url}: {e}")))?;
    Ok((s.network, s.height))
}

fn tool(name: &str) -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join(name)))
        .filter(|p| p.exists())
        .unwrap_or_else(|| PathBuf::from(name))
}

fn ask(prompt: &str) -> Result<String, Stop> {
    eprint!("{prompt}");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| stop(ExitCode::Io, format!("reading the confirmation: {e}")))?;
    Ok(line.trim().to_string())
}

fn project_volumes(cfg: &Config, docker: &Docker) -> Vec<String> {
    let name = if cfg.compose.project_name.is_empty() {
        cfg.compose
            .project_dir
            .file_name()
            .map(|n| n.to_string_lossy().to_lowercase())
            .unwrap_or_default()
    } else {
        cfg.compose.project_name.clone()
    };
    docker
        .cmd()
        .args([
            "volume",
            "ls",
            "-q",
            "--filter",
            &format!("label=com.docker.compose.project={name}"),
        ])
        .run()
        .map(|o| o.stdout_str().lines().map(String::from).collect())
        .unwrap_or_default()
}

/// The whole procedure. Lines for the operator go to `out`.
pub fn run(
    cli: &Cli,
    cfg: &Config,
    out: &mut impl Write,
    report: &mut daon_common::notify::Report,
) -> Result<(), Stop> {
    let json = cli.json;
    let mut say = |s: String| {
        let _ = if json {
            daon_common::output::json_line(out, "step", serde_json::json!({ "message": s }))
        } else {
            writeln!(out, "{s}")
        };
    };
    let new_id = cli.new_chain_id.clone().unwrap_or_default();
    if !valid_chain_id(&new_id) {
        return Err(stop(
            ExitCode::Usage,
            format!("--new-chain-id {new_id:?} is not a chain id (letters, digits, - _ .)"),
        ));
    }
    // Where things are now.
    let env_path = cfg.env_file_path();
    let env_text = std::fs::read_to_string(&env_path).map_err(|e| {
        stop(
            ExitCode::Io,
            format!("cannot read {}: {e}", env_path.display()),
        )
    })?;
    let env_id = config::parse_env_file(&env_text)
        .into_iter()
        .find(|(k, _)| k == "CHAIN_ID")
        .map(|(_, v)| v)
        .unwrap_or_default();
    let (chain_id, height) = chain_network(cfg)?;
    if env_id != chain_id {
        return Err(stop(ExitCode::Negative, format!("the chain says {chain_id:?} but {} says CHAIN_ID={env_id:?}: fix that first; nothing was changed", env_path.display())));
    }
    if new_id == chain_id {
        return Err(stop(
            ExitCode::Usage,
            format!("the chain already is {new_id:?}"),
        ));
    }
    let secrets_file = cfg.paths.secrets_dir.join(format!("secrets-{new_id}.env"));
    if secrets_file.exists() {
        return Err(stop(ExitCode::Negative, format!("{} already exists: it is never overwritten. Move it into your vault and away, then run again; nothing was changed", secrets_file.display())));
    }
    let docker = Docker::new(cfg);
    let compose = Compose::detect(cfg, &docker)?;
    let volumes = project_volumes(cfg, &docker);

    // One wipe at a time; a dry run during a wipe would plan from a half-changed stack.
    let _lock = lock::acquire(
        &cfg.paths.lock_dir.join("wipe-reset.lock"),
        Duration::ZERO,
        &format!("daon-wipe-reset {chain_id} -> {new_id}"),
    )?;

    // 1. The plan.
    say(format!(
        "PLAN: wipe chain {chain_id} (height {height}) and start {new_id}"
    ));
    say(format!(
        "  1. pre-wipe backup set (tag pre-wipe: database, chain volume, .env) into {}, verified",
        cfg.paths.backup_dir.display()
    ));
    say(format!(
        "  2. new secrets {} -> {} (mode 600); .env gets CHAIN_ID={new_id} and them",
        cfg.wipe.secret_names.join(", "),
        secrets_file.display()
    ));
    say(format!("  3. `compose down -v` of this project, then `up -d`: LOST (kept only in the backup): the database, the chain data, volumes {}", if volumes.is_empty() { "(none found)".into() } else { volumes.join(", ") }));
    say("  4. save the new chain's key files next to the secrets; verify .env, the chain and every health check".into());
    say(format!(
        "  rollback for {}: daon-restore <pre-wipe set>",
        humantime::format_duration(cfg.wipe.rollback_window)
    ));

    // 2. Confirmation (a dry run without the two answers checks everything else).
    if cli.dry_run && cli.confirm.is_none() && cli.current_chain_id.is_none() {
        say("DRY RUN: every check passed (the confirmation was not asked: give --confirm and --current-chain-id to check them too); nothing was changed".into());
        return Ok(());
    }
    let interactive =
        cli.confirm.is_none() && cli.current_chain_id.is_none() && std::io::stdin().is_terminal();
    let (phrase, typed_id) = if interactive {
        (
            ask(&format!("Type {PHRASE} to continue: "))?,
            ask("Type the current chain id: ")?,
        )
    } else {
        (
            cli.confirm.clone().unwrap_or_default(),
            cli.current_chain_id.clone().unwrap_or_default(),
        )
    };
    if phrase != PHRASE {
        return Err(stop(
            ExitCode::Negative,
            format!(
                "aborted: the confirmation was not {PHRASE}{}; nothing was changed",
                if interactive {
                    ""
                } else {
                    " (without a TTY give --confirm WIPE-PRODUCTION --current-chain-id ID)"
                }
            ),
        ));
    }
    if typed_id != chain_id {
        return Err(stop(ExitCode::Negative, format!("aborted: {typed_id:?} is not the current chain id ({chain_id}); nothing was changed")));
    }
    if cli.dry_run {
        say("DRY RUN: every check passed; nothing was changed".into());
        return Ok(());
    }
    // 3. The pre-wipe backup, verified.
    say("backing up (tag pre-wipe)...".into());
    let backup = Cmd::new(tool("daon-backup"))
        .envs(daon_common::notify::NESTED_RUN_ENV)
        .args(["--tag", "pre-wipe", "--json"])
        .timeout(Duration::from_secs(6 * 3600));
    let o = backup.run_unchecked().map_err(|e| {
        stop(
            ExitCode::Unavailable,
            format!("could not run daon-backup: {e}; nothing was wiped"),
        )
    })?;
    if !o.success() {
        return Err(stop(
            ExitCode::Io,
            format!(
                "the pre-wipe backup failed; nothing was wiped:\n{}",
                o.stderr_str().trim()
            ),
        ));
    }
    let summary: serde_json::Value = o
        .stdout_str()
        .lines()
        .last()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_default();
    let set = summary["set"].as_str().unwrap_or_default().to_string();
    if set.is_empty() {
        return Err(stop(
            ExitCode::Protocol,
            "daon-backup did not name its set; nothing was wiped",
        ));
    }
    report.set("pre_wipe_set", set.clone());
    report.set("rollback", format!("daon-restore {set} --yes"));
    let v = Cmd::new(tool("daon-backup"))
        .envs(daon_common::notify::NESTED_RUN_ENV)
        .args(["verify", &set])
        .timeout(Duration::from_secs(6 * 3600))
        .run_unchecked()
        .map_err(|e| stop(ExitCode::Unavailable, e.to_string()))?;
    if !v.success() {
        return Err(stop(
            ExitCode::Io,
            format!(
                "the pre-wipe set {set} does not verify; nothing was wiped:\n{}{}",
                v.stdout_str(),
                v.stderr_str()
            ),
        ));
    }
    say(format!("pre-wipe set {set}: verified"));

    // 4. New secrets, then .env.
    let dir = &cfg.paths.secrets_dir;
    std::fs::create_dir_all(dir)
        .and_then(|_| std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)))
        .map_err(|e| {
            stop(
                ExitCode::Io,
                format!("secrets directory {}: {e}", dir.display()),
            )
        })?;
    let mut updates = vec![("CHAIN_ID".to_string(), new_id.clone())];
    for name in &cfg.wipe.secret_names {
        let value = random_secret()?;
        // --show-secrets prints them; the notification never carries them.
        report.secret(&value);
        updates.push((name.clone(), value));
    }
    let mut body = format!(
        "# Secrets of {new_id}, generated by daon-wipe-reset on {} UTC. Copy into your vault.\n",
        Utc::now().format("%Y-%m-%d %H:%M")
    );
    for (k, v) in &updates[1..] {
        body.push_str(&format!("{k}={v}\n"));
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode_600()
        .open(&secrets_file)
        .map_err(|e| {
            stop(
                ExitCode::Io,
                format!("{}: {e}; nothing was wiped", secrets_file.display()),
            )
        })?;
    f.write_all(body.as_bytes())
        .and_then(|_| f.sync_all())
        .map_err(|e| stop(ExitCode::Io, format!("{}: {e}", secrets_file.display())))?;
    atomic::write(&env_path, update_env(&env_text, &updates).as_bytes(), 0o600)?;
    say(format!(
        "new secrets in {} (mode 600); .env updated",
        secrets_file.display()
    ));

    // 5. Wipe this project and start again.
    say("compose down -v (this project only), then up -d".into());
    compose
        .cmd()
        .args(["down", "-v", "--remove-orphans"])
        .timeout(Duration::from_secs(600))
        .run()
        .map_err(|e| {
            stop(
                ExitCode::Internal,
                format!("compose down -v failed: {e}\nrollback: daon-restore {set} --yes"),
            )
        })?;
    compose
        .cmd()
        .args(["up", "-d"])
        .timeout(Duration::from_secs(600))
        .run()
        .map_err(|e| {
            stop(
                ExitCode::Internal,
                format!("compose up -d failed: {e}\nrollback: daon-restore {set} --yes"),
            )
        })?;

    // 6. Verify: the new chain, the stack's health.
    let start = Instant::now();
    let mut last = String::new();
    // From now on the expected chain is the new one, whatever the config pinned.
    let mut after = cfg.clone();
    after.chain.chain_id = new_id.clone();
    loop {
        let chain_ok = matches!(chain_network(cfg), Ok((ref n, _)) if *n == new_id);
        let bad: Vec<String> = daon_health_check::check_stack(&after)
            .into_iter()
            .filter(|r| r.status != daon_health_check::check::Status::Ok)
            .map(|r| format!("{}: {}", r.name, r.summary))
            .collect();
        if chain_ok && bad.is_empty() {
            break;
        }
        last = if chain_ok {
            bad.join("; ")
        } else {
            format!("the chain does not report {new_id} yet; {}", bad.join("; "))
        };
        if start.elapsed() > cfg.wipe.health_deadline {
            return Err(stop(ExitCode::Negative, format!("the new stack is not healthy after {}: {last}\nrollback: daon-restore {set} --yes", humantime::format_duration(cfg.wipe.health_deadline))));
        }
        std::thread::sleep(Duration::from_secs(2));
    }
    let _ = last;
    // Key material the new chain generated.
    let mut saved = Vec::new();
    for rel in &cfg.wipe.key_files {
        let base = Path::new(rel)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let dest = dir.join(format!("{new_id}-{base}"));
        let src = format!(
            "{}:{}/{rel}",
            cfg.chain.container,
            cfg.volumes.chain_path.trim_end_matches('/')
        );
        if docker.cmd().args(["cp", &src]).arg(&dest).run().is_ok() {
            let _ = std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(0o600));
            saved.push(dest.display().to_string());
        }
    }
    let env_now = config::read_env_file(&env_path)?
        .into_iter()
        .find(|(k, _)| k == "CHAIN_ID")
        .map(|(_, v)| v)
        .unwrap_or_default();
    if env_now != new_id {
        return Err(stop(
            ExitCode::Internal,
            format!(
                ".env says CHAIN_ID={env_now}, not {new_id}\nrollback: daon-restore {set} --yes"
            ),
        ));
    }
    let deadline =
        Utc::now() + chrono::Duration::from_std(cfg.wipe.rollback_window).unwrap_or_default();
    report.set("secrets_file", secrets_file.display().to_string());
    report.set("key_files", saved.clone());
    report.set("rollback_until", deadline.to_rfc3339());
    say(format!(
        "DONE: the chain is {new_id}, .env agrees, every check passes"
    ));
    say(format!(
        "  secrets: {} (mode 600) — copy it to your vault now",
        secrets_file.display()
    ));
    if saved.is_empty() {
        say("  no key files found in the chain's data directory ([wipe] key_files)".into());
    } else {
        say(format!(
            "  validator key material: {} (mode 600) — copy to your vault now",
            saved.join(", ")
        ));
    }
    if cli.show_secrets {
        say(body);
    }
    say(format!(
        "  rollback until {}: daon-restore {set} --yes",
        deadline.format("%Y-%m-%d %H:%M UTC")
    ));
    Ok(())
}

trait Mode600 {
    fn mode_600(&mut self) -> &mut Self;
}

impl Mode600 for std::fs::OpenOptions {
    fn mode_600(&mut self) -> &mut Self {
        std::os::unix::fs::OpenOptionsExt::mode(self, 0o600)
    }
}

/// Parse, load, run; returns the exit code.
pub fn main_with(args: impl IntoIterator<Item = std::ffi::OsString>) -> u8 {
    let cli: Cli = match daon_common::cli::parse(command(), args, ExitCode::Usage.code()) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let (cfg, source) = match Config::load(cli.config.as_deref()) {
        Ok(l) => (l.config, l.source),
        Err(e) => {
            eprintln!("daon-wipe-reset: error: {e}");
            return e.exit_code().code();
        }
    };
    if cli.print_config {
        return match cfg.effective_toml(&source) {
            Ok(t) => {
                print!("{t}");
                0
            }
            Err(e) => {
                eprintln!("daon-wipe-reset: error: {e}");
                e.exit_code().code()
            }
        };
    }
    let new_id = cli.new_chain_id.clone().unwrap_or_default();
    let r = daon_common::notify::monitored(
        &cfg.notify,
        &cfg.paths.state_dir,
        "daon-wipe-reset",
        !cli.dry_run,
        &format!("chain reset -> {new_id}"),
        |out, report| {
            report.set("new_chain_id", new_id.clone());
            let r = run(&cli, &cfg, out, report);
            if cli.json {
                let mut summary = report.fields.clone();
                summary.insert("ok".into(), r.is_ok().into());
                summary.insert("dry_run".into(), cli.dry_run.into());
                summary.insert(
                    "exit_code".into(),
                    r.as_ref().err().map_or(0, |s| s.code.code()).into(),
                );
                if let Err(s) = &r {
                    summary.insert("error".into(), s.message.clone().into());
                }
                let _ = daon_common::output::json_line(out, "summary", summary.into());
            }
            r
        },
        |r| match r {
            Ok(()) => 0,
            Err(s) => s.code.code(),
        },
    );
    match r {
        Ok(()) => 0,
        Err(s) => {
            eprintln!("daon-wipe-reset: {}", s.message);
            s.code.code()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_update_replaces_in_place_and_appends() {
        let text = "# comment\nCHAIN_ID=daon-test-1\nexport JWT_SECRET=old\nOTHER=x\n";
        let out = update_env(
            text,
            &[
                ("CHAIN_ID".into(), "daon-mainnet-1".into()),
                ("JWT_SECRET".into(), "new".into()),
                ("NEW_ONE".into(), "v".into()),
            ],
        );
        assert_eq!(
            out,
            "# comment\nCHAIN_ID=daon-mainnet-1\nJWT_SECRET=new\nOTHER=x\nNEW_ONE=v\n"
        );
    }

    #[test]
    fn chain_ids() {
        assert!(valid_chain_id("daon-mainnet-1"));
        assert!(!valid_chain_id(""));
        assert!(!valid_chain_id("daon mainnet"));
        assert!(!valid_chain_id("a;rm -rf /"));
    }

    #[test]
    fn secrets_are_256_bit_and_distinct() {
        let (a, b) = (random_secret().unwrap(), random_secret().unwrap());
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
    }
}
