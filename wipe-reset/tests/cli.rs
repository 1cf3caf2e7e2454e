//! End-to-end tests of daon-wipe-reset on the real local stack: every abort
//! path changes nothing (volumes, .env, chain), and the full transition to
//! daon-mainnet-1 ends healthy and is undone by `daon-restore` of the
//! pre-wipe set.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

use assert_cmd::Command;
use daon_testkit as kit;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

struct Env {
    dir: tempfile::TempDir,
    stack: PathBuf,
    env_file: PathBuf,
}

impl Env {
    fn new(stack: &kit::Stack) -> Env {
        Env {
            dir: tempfile::tempdir().unwrap(),
            stack: stack.config.clone(),
            env_file: kit::repo_root().join("tests/stack/.env"),
        }
    }
    fn p(&self, s: &str) -> PathBuf {
        self.dir.path().join(s)
    }
    fn cmd(&self) -> Command {
        kit::workspace_bin("daon-backup");
        kit::workspace_bin("daon-restore");
        let mut c = Command::cargo_bin("daon-wipe-reset").unwrap();
        for (k, _) in std::env::vars() {
            if k.starts_with("DAON_") {
                c.env_remove(k);
            }
        }
        c.env("DAON_CONFIG", &self.stack)
            .env("DAON_PATHS_BACKUP_DIR", self.p("backups"))
            .env("DAON_PATHS_SECRETS_DIR", self.p("secrets"))
            .env("DAON_PATHS_LOCK_DIR", self.p("locks"))
            .env("DAON_PATHS_STATE_DIR", self.p("state"))
            .env("DAON_WIPE_HEALTH_DEADLINE", "3m")
            .timeout(Duration::from_secs(900));
        c
    }
    /// The wipe to daon-mainnet-1 with these answers (not run yet).
    fn wipe(&self, confirm: &str, current: &str) -> Command {
        let mut c = self.cmd();
        c.args([
            "--new-chain-id",
            "daon-mainnet-1",
            "--confirm",
            confirm,
            "--current-chain-id",
            current,
        ]);
        c
    }
    fn go(&self, confirm: &str, current: &str) -> std::process::Output {
        self.wipe(confirm, current).output().unwrap()
    }
}

fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn network() -> String {
    let o = kit::docker(&[
        "exec",
        "daon-blockchain",
        "/daon-fixture",
        "http",
        "GET",
        "http://127.0.0.1:26657/status",
    ]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap_or_default();
    v["result"]["node_info"]["network"]
        .as_str()
        .unwrap_or("")
        .to_string()
}

fn volumes() -> Vec<String> {
    let o = kit::docker(&[
        "volume",
        "ls",
        "-q",
        "--filter",
        "label=com.docker.compose.project=daon-stack",
    ]);
    let mut v: Vec<String> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(String::from)
        .collect();
    v.sort();
    v
}

fn sets(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn help_shows_the_steps_examples_and_exit_codes() {
    let o = Command::cargo_bin("daon-wipe-reset")
        .unwrap()
        .arg("--help")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0));
    let h = String::from_utf8_lossy(&o.stdout);
    for want in ["Examples:", "Exit codes:", "--dry-run", "daon-restore"] {
        assert!(h.contains(want), "--help lacks {want:?}:\n{h}");
    }
}

#[test]
fn stack_every_abort_path_changes_nothing() {
    let Some(stack) = kit::stack("wipe_aborts") else {
        return;
    };
    let _l = kit::lock();
    let e = Env::new(&stack);
    let env_before = std::fs::read(&e.env_file).unwrap();
    let vols_before = volumes();
    let unchanged = |what: &str| {
        assert_eq!(
            std::fs::read(&e.env_file).unwrap(),
            env_before,
            "{what}: .env changed"
        );
        assert_eq!(volumes(), vols_before, "{what}: volumes changed");
        assert_eq!(network(), "daon-devnet-1", "{what}: the chain changed");
        assert_eq!(sets(&e.p("backups")), 0, "{what}: a backup set was left");
    };

    let o = e.go("wipe-production", "daon-devnet-1");
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("aborted") && text(&o).contains("nothing was changed"),
        "{}",
        text(&o)
    );
    assert!(
        text(&o).contains("PLAN: wipe chain daon-devnet-1"),
        "{}",
        text(&o)
    );
    unchanged("wrong phrase");

    let o = e.go("WIPE-PRODUCTION", "daon-test-7");
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("is not the current chain id (daon-devnet-1)"),
        "{}",
        text(&o)
    );
    unchanged("wrong chain id");

    let o = e
        .wipe("WIPE-PRODUCTION", "daon-devnet-1")
        .arg("--dry-run")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("DRY RUN"), "{}", text(&o));
    unchanged("dry run");
    // The README's plain dry run (no answers, no TTY): the plan, nothing asked, nothing changed.
    let o = e
        .cmd()
        .args(["--new-chain-id", "daon-mainnet-1", "--dry-run"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        text(&o).contains("PLAN: wipe chain daon-devnet-1")
            && text(&o).contains("the confirmation was not asked"),
        "{}",
        text(&o)
    );
    unchanged("dry run without answers");
    let o = e
        .cmd()
        .args(["--new-chain-id", "daon-mainnet-1", "--dry-run", "--json"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(lines.len() > 3, "{lines:?}");
    assert!(lines[..lines.len() - 1].iter().all(|l| l["type"] == "step"));
    let last = lines.last().unwrap();
    assert_eq!(last["type"], "summary");
    assert_eq!(last["ok"], true);
    assert_eq!(last["dry_run"], true);
    assert_eq!(last["new_chain_id"], "daon-mainnet-1");
    // A wipe in progress (its lock held): even a dry run waits its turn, 75.
    std::fs::create_dir_all(e.p("locks")).unwrap();
    let held = std::fs::File::create(e.p("locks/wipe-reset.lock")).unwrap();
    held.lock().unwrap();
    let o = e
        .cmd()
        .args(["--new-chain-id", "daon-mainnet-1", "--dry-run"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(75), "{}", text(&o));
    drop(held);
    unchanged("dry run during a wipe");
    // With wrong answers a dry run still refuses.
    let o = e
        .cmd()
        .args([
            "--new-chain-id",
            "daon-mainnet-1",
            "--dry-run",
            "--confirm",
            "yes",
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));

    std::fs::create_dir_all(e.p("secrets")).unwrap();
    std::fs::write(
        e.p("secrets/secrets-daon-mainnet-1.env"),
        "JWT_SECRET=keep-me\n",
    )
    .unwrap();
    let o = e.go("WIPE-PRODUCTION", "daon-devnet-1");
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("never overwritten"), "{}", text(&o));
    assert_eq!(
        std::fs::read_to_string(e.p("secrets/secrets-daon-mainnet-1.env")).unwrap(),
        "JWT_SECRET=keep-me\n"
    );
    std::fs::remove_file(e.p("secrets/secrets-daon-mainnet-1.env")).unwrap();
    unchanged("existing secrets file");

    // A failing pre-wipe backup (pg_dump as a user that does not exist).
    let mon = kit::Monitoring::start(e.dir.path());
    let o = e
        .wipe("WIPE-PRODUCTION", "daon-devnet-1")
        .envs(mon.env())
        .env("DAON_POSTGRES_USER", "nobody_here")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(74), "{}", text(&o));
    assert!(
        text(&o).contains("the pre-wipe backup failed; nothing was wiped"),
        "{}",
        text(&o)
    );
    unchanged("failing backup");
    // One run, one report: the nested daon-backup neither pings nor notifies.
    assert_eq!(mon.events(), ["ping start", "ping 74", "hook failure"]);
    let bad = &mon.hooks()[0];
    assert_eq!(bad["fields"]["new_chain_id"], "daon-mainnet-1", "{bad}");
    assert!(
        bad["text"]
            .as_str()
            .unwrap()
            .contains("daon-wipe-reset FAILED: chain reset -> daon-mainnet-1")
            && bad["text"]
                .as_str()
                .unwrap()
                .contains("the pre-wipe backup failed; nothing was wiped"),
        "{bad}"
    );
    let mails = mon.wait_mails(1);
    assert_eq!(mails.len(), 1, "{mails:#?}");
}

/// If the full-transition test dies half-way, put the dev stack back on its
/// test chain: the original .env and fresh volumes.
struct StackGuard {
    env_file: PathBuf,
    original: Vec<u8>,
    done: bool,
}

impl Drop for StackGuard {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        eprintln!("wipe test failed half-way: rebuilding the dev stack on its test chain");
        let _ = std::fs::write(&self.env_file, &self.original);
        let _ = std::fs::set_permissions(&self.env_file, std::fs::Permissions::from_mode(0o600));
        let stack = kit::repo_root().join("scripts/stack");
        let _ = std::process::Command::new("bash")
            .arg(&stack)
            .args(["down", "--volumes"])
            .status();
        let _ = std::process::Command::new("bash")
            .arg(&stack)
            .arg("up")
            .status();
    }
}

#[test]
fn stack_full_transition_to_mainnet_then_rollback_with_daon_restore() {
    let Some(stack) = kit::stack("wipe_full") else {
        return;
    };
    let _m = kit::mutate();
    let e = Env::new(&stack);
    let original = std::fs::read(&e.env_file).unwrap();
    let mut guard = StackGuard {
        env_file: e.env_file.clone(),
        original: original.clone(),
        done: false,
    };
    kit::psql_lenient("DROP TABLE IF EXISTS wipe_test; CREATE TABLE wipe_test (id int); INSERT INTO wipe_test SELECT generate_series(1, 42);");

    // --show-secrets: the operator sees the new values; no message or ping carries them.
    let mon = kit::Monitoring::start(e.dir.path());
    let o = e
        .wipe("WIPE-PRODUCTION", "daon-devnet-1")
        .envs(mon.env())
        .arg("--show-secrets")
        .output()
        .unwrap();
    let out = text(&o);
    assert_eq!(o.status.code(), Some(0), "{out}");
    assert_eq!(network(), "daon-mainnet-1");
    assert_eq!(mon.events(), ["ping start", "ping 0", "hook success"]);
    let ok = &mon.hooks()[0];
    assert!(
        ok["text"]
            .as_str()
            .unwrap()
            .contains("daon-wipe-reset OK: chain reset -> daon-mainnet-1"),
        "{ok}"
    );
    assert!(
        ok["text"].as_str().unwrap().contains("daon-restore "),
        "{ok}"
    );
    assert!(
        ok["text"].as_str().unwrap().contains("=<redacted>"),
        "the shown secrets are redacted in the message: {ok}"
    );
    let f = &ok["fields"];
    let pre_wipe = f["pre_wipe_set"].as_str().unwrap().to_string();
    assert!(pre_wipe.ends_with("-pre-wipe"), "{f}");
    assert_eq!(f["rollback"], format!("daon-restore {pre_wipe} --yes"));
    assert_eq!(
        f["secrets_file"],
        e.p("secrets/secrets-daon-mainnet-1.env")
            .display()
            .to_string()
    );
    assert_eq!(f["key_files"].as_array().unwrap().len(), 1, "{f}");
    assert!(f["rollback_until"].as_str().is_some(), "{f}");
    let env_now = std::fs::read_to_string(&e.env_file).unwrap();
    assert!(env_now.contains("CHAIN_ID=daon-mainnet-1\n"), "{env_now}");
    assert_eq!(
        std::fs::metadata(&e.env_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let secrets = std::fs::read_to_string(e.p("secrets/secrets-daon-mainnet-1.env")).unwrap();
    assert_eq!(
        std::fs::metadata(e.p("secrets/secrets-daon-mainnet-1.env"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    assert_eq!(
        std::fs::metadata(e.p("secrets"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o700
    );
    for line in secrets.lines().filter(|l| !l.starts_with('#')) {
        let (k, v) = line.split_once('=').unwrap();
        assert_eq!(v.len(), 64, "{k} is not 256 bits");
        assert!(env_now.contains(line), ".env lacks the new {k}");
        assert!(
            String::from_utf8_lossy(&o.stdout).contains(v),
            "--show-secrets did not print {k}"
        );
        assert!(
            !String::from_utf8_lossy(&o.stderr).contains(v),
            "{k} on stderr"
        );
        mon.assert_never_seen(v, k);
    }
    let key = e.p("secrets/daon-mainnet-1-priv_validator_key.json");
    assert!(key.exists(), "validator key not saved: {out}");
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        kit::psql_lenient("SELECT to_regclass('wipe_test') IS NULL"),
        "t",
        "the old database survived the wipe"
    );
    let set = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("rollback until "))
        .and_then(|l| l.split("daon-restore ").nth(1))
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap()
        .to_string();
    assert!(set.ends_with("-pre-wipe"), "{set}");

    // Roll back with the pre-wipe set: the test chain, its rows and .env return.
    let r = std::process::Command::new(kit::workspace_bin("daon-restore"))
        .args([&set, "--yes"])
        .env("DAON_CONFIG", &e.stack)
        .env("DAON_PATHS_BACKUP_DIR", e.p("backups"))
        .env("DAON_PATHS_LOCK_DIR", e.p("locks"))
        .env("DAON_PATHS_STATE_DIR", e.p("state"))
        .output()
        .unwrap();
    assert!(r.status.success(), "daon-restore: {}", text(&r));
    kit::wait_health("daon-blockchain", "healthy", Duration::from_secs(120));
    assert_eq!(network(), "daon-devnet-1");
    assert_eq!(
        std::fs::read(&e.env_file).unwrap(),
        original,
        ".env not restored"
    );
    assert_eq!(kit::psql_lenient("SELECT count(*) FROM wipe_test"), "42");
    kit::psql_lenient("DROP TABLE wipe_test");
    guard.done = true;
}
