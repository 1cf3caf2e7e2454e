//! End-to-end tests of daon-backup: the binary against the real local stack
//! (PostgreSQL, the chain volume, the compose files) and against failures
//! made on purpose — a pg_dump that fails, SIGKILL mid-archive, a flipped
//! byte, a held lock — plus prune on a generated history.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

use assert_cmd::Command;
use daon_backup::set::{self, Manifest};
use daon_testkit as kit;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

/// The binary with a clean environment, pointed at `cfg` with its state in `tmp`.
fn bk(cfg: Option<&Path>, tmp: &Path) -> Command {
    let mut c = kit::tool("daon-backup", cfg, tmp);
    c.timeout(Duration::from_secs(300));
    c
}

fn text(o: &Output) -> String {
    kit::output_text(o)
}

fn complete_sets(dir: &Path) -> Vec<String> {
    set::list(dir)
        .unwrap()
        .into_iter()
        .filter(|s| s.manifest().is_some())
        .map(|s| s.name)
        .collect()
}

fn manifest(set_dir: &Path) -> Manifest {
    set::read_manifest(set_dir).unwrap()
}

fn sh(cmd: &str) -> Output {
    std::process::Command::new("sh")
        .args(["-c", cmd])
        .output()
        .unwrap()
}

/// A scratch Docker volume, removed on drop.
struct Volume(String);

impl Volume {
    fn new(tag: &str) -> (Volume, PathBuf) {
        let name = format!("daon-backup-test-{tag}-{}", std::process::id());
        let o = kit::docker(&["volume", "create", &name]);
        assert!(o.status.success(), "{}", text(&o));
        let o = kit::docker(&["volume", "inspect", "--format", "{{.Mountpoint}}", &name]);
        let p = PathBuf::from(String::from_utf8_lossy(&o.stdout).trim());
        (Volume(name), p)
    }
}

impl Drop for Volume {
    fn drop(&mut self) {
        let _ = kit::docker(&["volume", "rm", "-f", &self.0]);
    }
}

/// Semi-compressible data, deterministic.
fn fill(path: &Path, bytes: usize, seed: u64) {
    let mut x = seed | 1;
    let mut v = Vec::with_capacity(bytes);
    while v.len() < bytes {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(format!("{:016x} block {} ", x, x % 97).as_bytes());
    }
    v.truncate(bytes);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, v).unwrap();
}

// ---------------------------------------------------------------- no Docker

#[test]
fn help_documents_examples_layout_and_exit_codes() {
    let t = tempfile::tempdir().unwrap();
    let o = bk(None, t.path()).arg("--help").output().unwrap();
    assert!(o.status.success());
    let s = String::from_utf8_lossy(&o.stdout);
    for want in [
        "Examples:",
        "Exit codes",
        "75",
        "manifest.json",
        "tar --zstd -xf",
        "prune",
        "DAON_CONFIG",
    ] {
        assert!(s.contains(want), "--help lacks {want:?}:\n{s}");
    }
}

#[test]
fn bad_only_and_tag_are_usage_errors() {
    let t = tempfile::tempdir().unwrap();
    let o = bk(None, t.path())
        .args(["--only", "db,nope"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("nope"));
    let o = bk(None, t.path()).args(["--tag", "../x"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
}

#[test]
fn prune_keeps_exactly_what_the_policy_says_never_newest_or_tagged() {
    let t = tempfile::tempdir().unwrap();
    let dir = t.path().join("backups");
    std::fs::create_dir_all(&dir).unwrap();
    // Two sets a day for 12 days, a tagged one among the oldest, a runbook folder.
    let t0: chrono::DateTime<chrono::Utc> = "2026-11-01T02:00:00Z".parse().unwrap();
    let make = |when: chrono::DateTime<chrono::Utc>, tag: Option<&str>| {
        let mut name = when.format("%Y%m%dT%H%M%SZ").to_string();
        if let Some(t) = tag {
            name = format!("{name}-{t}");
        }
        let m = Manifest {
            format: set::FORMAT.into(),
            format_version: set::FORMAT_VERSION,
            tool_version: "test".into(),
            name: name.clone(),
            tag: tag.map(String::from),
            created: when,
            finished: when,
            host: "h".into(),
            compose_project: "p".into(),
            chain_id: String::new(),
            chain_height: None,
            images: Default::default(),
            artifacts: Vec::new(),
        };
        std::fs::create_dir(dir.join(&name)).unwrap();
        std::fs::write(
            dir.join(&name).join(set::MANIFEST),
            serde_json::to_vec(&m).unwrap(),
        )
        .unwrap();
        name
    };
    let mut all = Vec::new();
    for d in 0..12 {
        for h in [0, 10] {
            all.push(make(
                t0 + chrono::Duration::days(d) + chrono::Duration::hours(h),
                None,
            ));
        }
    }
    let tagged = make(t0 + chrono::Duration::hours(1), Some("pre-wipe"));
    std::fs::create_dir(dir.join("20261020-020000")).unwrap();
    std::fs::write(dir.join("20261020-020000/database.sql.gz"), b"x").unwrap();

    let args = [
        "prune",
        "--keep-last",
        "1",
        "--keep-daily",
        "3",
        "--keep-weekly",
        "0",
        "--keep-monthly",
        "0",
    ];
    let o = bk(None, t.path())
        .args(args)
        .arg("--dry-run")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(complete_sets(&dir).len(), 25, "dry run deleted something");
    assert!(String::from_utf8_lossy(&o.stdout).contains("would delete"));

    let o = bk(None, t.path()).args(args).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let mut left = complete_sets(&dir);
    left.sort();
    let mut want = vec![
        tagged.clone(),
        all[18 + 1].clone(), // day 9, 12:00
        all[20 + 1].clone(), // day 10, 12:00
        all[22 + 1].clone(), // day 11, 12:00 (newest)
    ];
    want.sort();
    assert_eq!(left, want);
    assert!(
        dir.join("20261020-020000").exists(),
        "runbook folder left alone"
    );

    // Even a zero policy keeps the newest; --include-tagged lets the tag go.
    let o = bk(None, t.path())
        .args([
            "prune",
            "--keep-last",
            "0",
            "--keep-daily",
            "0",
            "--keep-weekly",
            "0",
            "--keep-monthly",
            "0",
            "--include-tagged",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(complete_sets(&dir), vec![all[23].clone()]);
    // Global flags go before or after the subcommand.
    let o = bk(None, t.path())
        .args(["--json", "list"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("\"type\":\"summary\""));
}

// ---------------------------------------------------------------- the stack

#[test]
fn backup_of_the_stack_is_complete_verifiable_and_extracts_with_stock_tools() {
    let Some(stack) = kit::stack("backup round trip") else {
        return;
    };
    let _l = kit::lock();
    let t = tempfile::tempdir().unwrap();
    let table = format!("daon_backup_test_{}", std::process::id());
    kit::psql(&format!(
        "DROP TABLE IF EXISTS {table}; CREATE TABLE {table} (id int primary key, v text); INSERT INTO {table} SELECT g, 'row ' || g FROM generate_series(1, 1234) g;"
    ));
    let o = bk(Some(&stack.config), t.path())
        .arg("--json")
        .output()
        .unwrap();
    kit::psql(&format!("DROP TABLE {table}"));
    assert!(o.status.success(), "{}", text(&o));
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let summary = lines.last().unwrap();
    assert_eq!(summary["type"], "summary");
    let path = PathBuf::from(summary["path"].as_str().unwrap());
    let m = manifest(&path);
    assert_eq!(m.artifacts.len(), 3);
    assert_eq!(m.chain_id, "daon-devnet-1");
    assert!(m.chain_height.unwrap() > 0);
    assert!(m.images.contains_key("daon-postgres"));
    let db = m.artifact(set::Kind::Database).unwrap();
    assert_eq!(
        db.tables.as_ref().unwrap()[&format!("public.{table}")],
        1234
    );
    // The set folder and the config archive (it holds .env) are private.
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o700
    );

    // list and verify agree.
    let o = bk(Some(&stack.config), t.path())
        .args(["list", "--json"])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("\"complete\""),
        "{}",
        text(&o)
    );
    let o = bk(Some(&stack.config), t.path())
        .args(["verify", "latest"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));

    // Stock tools: tar --zstd -xf, zstd -d.
    let x = t.path().join("x");
    std::fs::create_dir(&x).unwrap();
    let o = sh(&format!(
        "tar --zstd -xf {}/chain.tar.zst -C {}",
        path.display(),
        x.display()
    ));
    assert!(o.status.success(), "{}", text(&o));
    let chain = m.artifact(set::Kind::Chain).unwrap();
    let o = sh(&format!(
        "find {} -type f | wc -l; find {} -type f -printf '%s\\n' | paste -sd+ | bc",
        x.display(),
        x.display()
    ));
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    let nums: Vec<u64> = out.split_whitespace().map(|s| s.parse().unwrap()).collect();
    assert_eq!(nums, vec![chain.files.unwrap(), chain.file_bytes.unwrap()]);
    assert!(x.join("data/blocks.log").exists());
    // Our own safe extractor gives the same tree.
    let y = t.path().join("y");
    let o = bk(Some(&stack.config), t.path())
        .args(["extract", "latest", "--to"])
        .arg(&y)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let o = sh(&format!("diff -r {} {}", x.display(), y.display()));
    assert!(o.status.success(), "{}", text(&o));
    let o = sh(&format!(
        "zstd -dc {}/database.sql.zst | grep -c '^[0-9]*\trow '",
        path.display()
    ));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        "1234",
        "{}",
        text(&o)
    );
    let cx = t.path().join("cx");
    std::fs::create_dir(&cx).unwrap();
    let o = sh(&format!(
        "tar --zstd -xf {}/config.tar.zst -C {}",
        path.display(),
        cx.display()
    ));
    assert!(o.status.success(), "{}", text(&o));
    let env = kit::repo_root().join("tests/stack/.env");
    assert_eq!(
        std::fs::read(cx.join(".env")).unwrap(),
        std::fs::read(env).unwrap()
    );
}

#[test]
fn gzip_and_helper_container_source_make_tar_gz_readable_by_tar_xzf() {
    let Some(stack) = kit::stack("backup gzip helper") else {
        return;
    };
    let t = tempfile::tempdir().unwrap();
    let o = bk(Some(&stack.config), t.path())
        .args([
            "--compression",
            "gzip",
            "--chain-source",
            "helper",
            "--only",
            "chain,config",
            "--tag",
            "gz",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let path = PathBuf::from(String::from_utf8_lossy(&o.stdout).trim());
    assert!(path.to_string_lossy().ends_with("-gz"));
    let m = manifest(&path);
    assert_eq!(m.tag.as_deref(), Some("gz"));
    let chain = m.artifact(set::Kind::Chain).unwrap();
    assert!(chain.source.contains("docker run"), "{}", chain.source);
    let o = sh(&format!("tar tzf {}/chain.tar.gz", path.display()));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("data/blocks.log"),
        "{}",
        text(&o)
    );
    let o = bk(Some(&stack.config), t.path())
        .args(["verify", &m.name])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn a_failing_pg_dump_fails_the_backup_commits_nothing_and_keeps_older_sets() {
    let Some(stack) = kit::stack("backup pg_dump fails") else {
        return;
    };
    let t = tempfile::tempdir().unwrap();
    let o = bk(Some(&stack.config), t.path())
        .args(["--only", "db,config"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let dir = t.path().join("backups");
    let before = complete_sets(&dir);
    assert_eq!(before.len(), 1);
    let old_manifest = std::fs::read(dir.join(&before[0]).join(set::MANIFEST)).unwrap();

    let o = bk(Some(&stack.config), t.path())
        .env("DAON_POSTGRES_USER", "no_such_role")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(74), "{}", text(&o));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("no_such_role") && err.contains("does not exist"),
        "pg_dump's stderr is in the message: {err}"
    );
    assert!(err.contains("no set was committed"), "{err}");
    assert_eq!(complete_sets(&dir), before);
    let names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 1, "no partial folder left: {names:?}");
    assert_eq!(
        std::fs::read(dir.join(&before[0]).join(set::MANIFEST)).unwrap(),
        old_manifest
    );
}

#[test]
fn sigkill_mid_archive_leaves_no_complete_set_and_the_next_run_cleans_up() {
    let Some(stack) = kit::stack("backup sigkill") else {
        return;
    };
    let t = tempfile::tempdir().unwrap();
    let (vol, mp) = Volume::new("kill");
    for i in 0..4 {
        fill(&mp.join(format!("data/part{i}")), 40 << 20, i + 1);
    }
    let bin = assert_cmd::cargo::cargo_bin("daon-backup");
    let mut child = std::process::Command::new(bin)
        .env("DAON_CONFIG", &stack.config)
        .env("DAON_VOLUMES_CHAIN", &vol.0)
        .env("DAON_PATHS_BACKUP_DIR", t.path().join("backups"))
        .env("DAON_PATHS_LOCK_DIR", t.path().join("lock"))
        .args(["--only", "chain", "--compression", "gzip"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let dir = t.path().join("backups");
    let start = Instant::now();
    let partial = loop {
        let p = std::fs::read_dir(&dir).ok().and_then(|rd| {
            rd.flatten().map(|e| e.path()).find(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with(".partial-")
            })
        });
        if let Some(p) = p {
            let f = p.join("chain.tar.gz");
            if std::fs::metadata(&f)
                .map(|m| m.len() > 64 * 1024)
                .unwrap_or(false)
            {
                break p;
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "archive never started"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "backup finished before it could be killed"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(partial.exists());
    assert!(
        complete_sets(&dir).is_empty(),
        "a killed run must not look complete"
    );
    let o = bk(Some(&stack.config), t.path())
        .arg("list")
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&o.stdout).trim().is_empty(),
        "{}",
        text(&o)
    );
    let o = bk(Some(&stack.config), t.path())
        .args(["verify", "latest"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));

    // The next run succeeds and removes the leftover.
    let o = bk(Some(&stack.config), t.path())
        .args(["--only", "config"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("interrupted run"),
        "{}",
        text(&o)
    );
    assert!(!partial.exists());
    assert_eq!(complete_sets(&dir).len(), 1);
}

#[test]
fn a_flipped_byte_in_any_artifact_makes_verify_fail_naming_it() {
    let Some(stack) = kit::stack("backup verify corruption") else {
        return;
    };
    let t = tempfile::tempdir().unwrap();
    let o = bk(Some(&stack.config), t.path()).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let path = PathBuf::from(String::from_utf8_lossy(&o.stdout).trim());
    for f in ["database.sql.zst", "chain.tar.zst", "config.tar.zst"] {
        let p = path.join(f);
        let orig = std::fs::read(&p).unwrap();
        let mut bad = orig.clone();
        let i = bad.len() / 2;
        bad[i] ^= 0x01;
        std::fs::write(&p, &bad).unwrap();
        let o = bk(Some(&stack.config), t.path())
            .args(["verify", "latest"])
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(1), "{f}: {}", text(&o));
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains(f) && err.contains("SHA-256 mismatch"),
            "{f}: {err}"
        );
        std::fs::write(&p, &orig).unwrap();
    }
    let o = bk(Some(&stack.config), t.path())
        .args(["verify", "latest"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn a_held_lock_makes_a_second_backup_exit_75() {
    let Some(stack) = kit::stack("backup lock") else {
        return;
    };
    let t = tempfile::tempdir().unwrap();
    let _held = daon_common::lock::acquire(
        &t.path().join("lock").join(set::LOCK_FILE),
        Duration::ZERO,
        "daon-restore (test)",
    )
    .unwrap();
    let start = Instant::now();
    let o = bk(Some(&stack.config), t.path())
        .args(["--lock-wait", "1s"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(75), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("daon-restore (test)"),
        "{}",
        text(&o)
    );
    assert!(start.elapsed() < Duration::from_secs(20));
    assert!(complete_sets(&t.path().join("backups")).is_empty());
}

#[test]
fn stop_restarts_the_service_even_when_the_archive_fails() {
    let Some(stack) = kit::stack("backup --stop") else {
        return;
    };
    let _m = kit::mutate();
    let t = tempfile::tempdir().unwrap();
    // Works: the chain is stopped during its archive and running afterwards.
    let o = bk(Some(&stack.config), t.path())
        .args(["--only", "chain", "--stop", "daon-blockchain"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("stopping daon-blockchain"));
    kit::wait_health("daon-blockchain", "healthy", Duration::from_secs(60));
    // Fails (tar inside a stopped container): still restarted.
    let o = bk(Some(&stack.config), t.path())
        .args([
            "--only",
            "chain",
            "--stop",
            "daon-blockchain",
            "--chain-source",
            "exec",
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(74), "{}", text(&o));
    kit::wait_health("daon-blockchain", "healthy", Duration::from_secs(60));
    assert_eq!(complete_sets(&t.path().join("backups")).len(), 1);
}

#[test]
fn push_copies_a_verified_set_with_rclone_manifest_last_and_age_encrypts() {
    let Some(stack) = kit::stack("backup push") else {
        return;
    };
    if sh("command -v rclone && command -v age").status.code() != Some(0) {
        assert!(
            !kit::in_ci(),
            "rclone and age are installed by scripts/lib/prereqs.sh"
        );
        eprintln!("SKIPPED push: rclone or age missing");
        return;
    }
    let t = tempfile::tempdir().unwrap();
    let o = bk(Some(&stack.config), t.path())
        .args(["--only", "db,config"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let path = PathBuf::from(String::from_utf8_lossy(&o.stdout).trim());
    let name = path.file_name().unwrap().to_string_lossy().to_string();
    let remote = t.path().join("offsite");

    let o = bk(Some(&stack.config), t.path())
        .args(["push", "latest", "--to"])
        .arg(&remote)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    for f in ["database.sql.zst", "config.tar.zst", set::MANIFEST] {
        assert_eq!(
            std::fs::read(remote.join(&name).join(f)).unwrap(),
            std::fs::read(path.join(f)).unwrap(),
            "{f}"
        );
    }

    // Encrypted: the .env secret is not readable off-site; the key brings it back.
    let key = t.path().join("key.txt");
    assert!(sh(&format!("age-keygen -o {} 2>/dev/null", key.display()))
        .status
        .success());
    let o = sh(&format!("age-keygen -y {}", key.display()));
    let recipient = String::from_utf8_lossy(&o.stdout).trim().to_string();
    let enc = t.path().join("offsite-enc");
    let o = bk(Some(&stack.config), t.path())
        .args(["push", &name, "--encrypt-to", &recipient, "--to"])
        .arg(&enc)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let age_file = enc.join(&name).join("config.tar.zst.age");
    let o = sh(&format!(
        "age -d -i {} {} | cmp - {}",
        key.display(),
        age_file.display(),
        path.join("config.tar.zst").display()
    ));
    assert!(o.status.success(), "decrypts to the artifact: {}", text(&o));
    let env = std::fs::read_to_string(kit::repo_root().join("tests/stack/.env")).unwrap();
    let secret = env
        .lines()
        .find_map(|l| l.strip_prefix("POSTGRES_PASSWORD="))
        .unwrap();
    let o = sh(&format!(
        "zstd -dc < {} 2>/dev/null | grep -c {secret}",
        age_file.display()
    ));
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "0");
    assert!(enc.join(&name).join(set::MANIFEST).exists());
    assert!(!enc.join(&name).join("config.tar.zst").exists());
}

#[test]
fn backup_notifies_success_and_failure_with_set_size_duration_and_pings_the_dead_man_switch() {
    let Some(stack) = kit::stack("backup notifications") else {
        return;
    };
    let t = tempfile::tempdir().unwrap();
    let mon = kit::Monitoring::start(t.path());
    let dir = t.path().join("backups");

    let o = bk(Some(&stack.config), t.path())
        .envs(mon.env())
        .args(["--only", "db,config", "--tag", "notified"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let name = complete_sets(&dir).pop().unwrap();
    let m = manifest(&dir.join(&name));

    let o = bk(Some(&stack.config), t.path())
        .envs(mon.env())
        .env("DAON_POSTGRES_USER", "no_such_role")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(74), "{}", text(&o));
    // Read-only commands ping but send no message; dry runs neither message.
    let o = bk(Some(&stack.config), t.path())
        .envs(mon.env())
        .arg("list")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains(&name),
        "list still prints to stdout through the tee: {}",
        text(&o)
    );

    assert_eq!(
        mon.events(),
        [
            "ping start",
            "ping 0",
            "hook success",
            "ping start",
            "ping 74",
            "hook failure",
            "ping start",
            "ping 0"
        ]
    );
    let hooks = mon.hooks();
    let ok = &hooks[0];
    assert_eq!(ok["tool"], "daon-backup");
    assert_eq!(ok["fields"]["set"], name.as_str(), "{ok}");
    assert_eq!(ok["fields"]["size"], m.size(), "{ok}");
    assert!(ok["fields"]["duration_ms"].as_u64().is_some(), "{ok}");
    assert_eq!(ok["fields"]["exit_code"], 0);
    let text0 = ok["text"].as_str().unwrap();
    assert!(
        text0.contains(&format!("daon-backup OK: set {name}: ")),
        "{text0}"
    );
    let bad = &hooks[1];
    assert_eq!(bad["fields"]["exit_code"], 74, "{bad}");
    let text1 = bad["text"].as_str().unwrap();
    assert!(
        text1.contains("daon-backup FAILED: backup of db, chain, config")
            && text1.contains("no set was committed")
            && text1.contains("no_such_role")
            && text1.contains("exit code 74 (I/O error)"),
        "the failure says what failed and that nothing was replaced: {text1}"
    );
    let ends = mon.end_pings();
    assert_eq!(ends[0].0, "0");
    assert!(
        ends[0].1.contains(&name),
        "end ping carries the output: {ends:?}"
    );
    assert!(ends[1].1.contains("no set was committed"), "{ends:?}");

    let mails = mon.wait_mails(2);
    assert_eq!(mails.len(), 2, "one mail per notifying run: {mails:#?}");
    assert!(
        mails[0].contains(&format!("daon-backup OK: set {name}"))
            && mails[0].contains(&format!("set: {name}"))
            && mails[0].contains(&format!("size: {}", m.size()))
            && mails[0].contains("duration_ms: "),
        "{}",
        mails[0]
    );
    assert!(mails[1].contains("daon-backup FAILED"), "{}", mails[1]);

    let env = std::fs::read_to_string(kit::repo_root().join("tests/stack/.env")).unwrap();
    let pw = env
        .lines()
        .find_map(|l| l.strip_prefix("POSTGRES_PASSWORD="))
        .unwrap();
    mon.assert_never_seen(pw, "the PostgreSQL password");
    mon.assert_never_seen(kit::Monitoring::HOOK_TOKEN, "the webhook token");
    mon.assert_never_seen(kit::Monitoring::PING_UUID, "the ping URL");

    // A receiver that is down changes neither the exit code nor the output;
    // the message waits on disk for the next run.
    let dead = format!("http://127.0.0.1:{}/hook/gone", kit::free_port());
    let o = bk(Some(&stack.config), t.path())
        .env("DAON_NOTIFY_WEBHOOK_URL", &dead)
        .env("DAON_NOTIFY_RETRIES", "0")
        .env("DAON_NOTIFY_TIMEOUT", "2s")
        .args(["--only", "config"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains(&dir.display().to_string()),
        "the set path is still printed: {}",
        text(&o)
    );
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("notification not delivered") && !err.contains("/hook/gone"),
        "the failure is reported, the URL's path is not: {err}"
    );
    let pending = std::fs::read_dir(t.path().join("state/notify-pending"))
        .unwrap()
        .count();
    assert_eq!(
        pending, 1,
        "the undelivered message is kept for the next run"
    );
}
