//! End-to-end tests of daon-restore against the real local stack: database
//! and config round trips on the live stack (holding the mutation lock),
//! chain round trips and hostile archives on a scratch volume, refusal of
//! corrupt sets with the live data unchanged, and the drill.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

use assert_cmd::Command;
use daon_backup::codec::{Encoder, HashWriter};
use daon_backup::set::{self, Artifact, Kind, Manifest};
use daon_common::config::Compression;
use daon_testkit as kit;
use sha2::{Digest, Sha256};
use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

fn backup_cmd(cfg: &Path, tmp: &Path) -> Command {
    let mut c = kit::tool("daon-backup", Some(cfg), tmp);
    c.timeout(Duration::from_secs(300));
    c
}

fn restore(cfg: Option<&Path>, tmp: &Path) -> Command {
    kit::tool("daon-restore", cfg, tmp)
}

fn text(o: &Output) -> String {
    kit::output_text(o)
}

fn set_path(o: &Output) -> PathBuf {
    PathBuf::from(String::from_utf8_lossy(&o.stdout).trim())
}

/// A hash of a directory tree: paths, types, modes, contents, link targets.
fn tree_hash(root: &Path) -> String {
    let mut lines = Vec::new();
    fn walk(root: &Path, dir: &Path, lines: &mut Vec<String>) {
        let mut ents: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        ents.sort();
        for p in ents {
            let m = std::fs::symlink_metadata(&p).unwrap();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            let mode = m.permissions().mode() & 0o7777;
            if m.file_type().is_symlink() {
                lines.push(format!(
                    "L {rel} -> {}",
                    std::fs::read_link(&p).unwrap().display()
                ));
            } else if m.is_dir() {
                lines.push(format!("D {rel} {mode:o}"));
                walk(root, &p, lines);
            } else {
                let h = Sha256::digest(std::fs::read(&p).unwrap());
                lines.push(format!("F {rel} {mode:o} {}", daon_backup::codec::hex(&h)));
            }
        }
    }
    walk(root, root, &mut lines);
    lines.join("\n")
}

/// A scratch chain volume and a container using it, removed on drop.
struct Scratch {
    volume: String,
    container: String,
    mountpoint: PathBuf,
}

impl Scratch {
    fn new(tag: &str) -> Scratch {
        let volume = format!("daon-restore-test-{tag}-{}", std::process::id());
        let container = format!("daon-restore-test-{tag}-{}", std::process::id());
        assert!(kit::docker(&["volume", "create", &volume]).status.success());
        let o = kit::docker(&["volume", "inspect", "--format", "{{.Mountpoint}}", &volume]);
        let mountpoint = PathBuf::from(String::from_utf8_lossy(&o.stdout).trim());
        let o = kit::docker(&[
            "run",
            "-d",
            "--name",
            &container,
            "--network",
            "none",
            "-v",
            &format!("{volume}:/data"),
            "daon-stack-base:local",
            "sleep",
            "infinity",
        ]);
        assert!(o.status.success(), "{}", text(&o));
        Scratch {
            volume,
            container,
            mountpoint,
        }
    }

    /// Points a command at the scratch volume and container.
    fn env(&self, c: &mut Command) {
        c.env("DAON_VOLUMES_CHAIN", &self.volume)
            .env("DAON_SERVICES_BLOCKCHAIN_CONTAINERS", &self.container)
            .env("DAON_CHAIN_CONTAINER", &self.container);
    }

    fn populate(&self) {
        let d = &self.mountpoint;
        std::fs::create_dir_all(d.join("data/state/deep")).unwrap();
        std::fs::create_dir_all(d.join("config")).unwrap();
        std::fs::write(d.join("config/genesis.json"), br#"{"chain_id":"scratch"}"#).unwrap();
        let mut big = Vec::new();
        for i in 0..300_000u32 {
            big.extend_from_slice(format!("{i} {}\n", i.wrapping_mul(2654435761)).as_bytes());
        }
        std::fs::write(d.join("data/blocks.db"), &big).unwrap();
        std::fs::write(d.join("data/state/deep/priv_validator_key.json"), b"secret").unwrap();
        std::fs::set_permissions(
            d.join("data/state/deep/priv_validator_key.json"),
            std::fs::Permissions::from_mode(0o600),
        )
        .unwrap();
        std::os::unix::fs::symlink(
            "state/deep/priv_validator_key.json",
            d.join("data/key-link"),
        )
        .unwrap();
        std::fs::write(d.join("data/empty"), b"").unwrap();
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = kit::docker(&["rm", "-f", &self.container]);
        let _ = kit::docker(&["volume", "rm", "-f", &self.volume]);
        // Leftovers beside the volume's _data (staging, old) go with the volume dir.
    }
}

/// Writes a set by hand whose chain archive is `tar_bytes` (hashes correct,
/// so only the content checks can refuse it).
fn handmade_set(dir: &Path, name: &str, tar_bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::create_dir_all(&p).unwrap();
    let f = std::fs::File::create(p.join("chain.tar.zst")).unwrap();
    let mut e = Encoder::new(HashWriter::new(f), Compression::Zstd, 3, 1).unwrap();
    e.write_all(tar_bytes).unwrap();
    let (_, sha, size) = e.finish().unwrap().finish();
    let m = Manifest {
        format: set::FORMAT.into(),
        format_version: set::FORMAT_VERSION,
        tool_version: "test".into(),
        name: name.into(),
        tag: None,
        created: chrono::Utc::now(),
        finished: chrono::Utc::now(),
        host: "h".into(),
        compose_project: "p".into(),
        chain_id: String::new(),
        chain_height: None,
        images: Default::default(),
        artifacts: vec![Artifact {
            kind: Kind::Chain,
            file: "chain.tar.zst".into(),
            source: "test".into(),
            size,
            sha256: sha,
            compression: Compression::Zstd,
            uncompressed_size: tar_bytes.len() as u64,
            entries: None,
            files: None,
            file_bytes: None,
            tables: None,
            duration_ms: 0,
        }],
    };
    std::fs::write(p.join(set::MANIFEST), serde_json::to_vec(&m).unwrap()).unwrap();
    p
}

fn raw_tar(entries: &[(&str, u8, &str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, ty, link, data) in entries {
        let mut h = [0u8; 512];
        h[..name.len()].copy_from_slice(name.as_bytes());
        h[100..107].copy_from_slice(b"0000644");
        h[108..115].copy_from_slice(b"0000000");
        h[116..123].copy_from_slice(b"0000000");
        h[124..135].copy_from_slice(format!("{:011o}", data.len()).as_bytes());
        h[136..147].copy_from_slice(b"00000000000");
        h[156] = *ty;
        h[157..157 + link.len()].copy_from_slice(link.as_bytes());
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|&b| b as u32).sum();
        h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
        out.extend_from_slice(&h);
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.resize(out.len() + 1024, 0);
    out
}

// ---------------------------------------------------------------- no Docker

#[test]
fn help_documents_the_order_of_steps_and_exit_codes() {
    let t = tempfile::tempdir().unwrap();
    let o = restore(None, t.path()).arg("--help").output().unwrap();
    assert!(o.status.success());
    let s = String::from_utf8_lossy(&o.stdout);
    for want in [
        "Examples:",
        "Exit codes",
        "ON_ERROR_STOP",
        "drill",
        "--allow-unverified",
        "0600",
    ] {
        assert!(s.contains(want), "--help lacks {want:?}:\n{s}");
    }
}

#[test]
fn runbook_layout_is_refused_without_allow_unverified() {
    let t = tempfile::tempdir().unwrap();
    let d = t.path().join("backups/20261130-020000");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("database.sql.gz"), b"x").unwrap();
    let o = restore(None, t.path())
        .args(["latest", "--yes"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o)); // latest = newest *complete* set: none
    let o = restore(None, t.path())
        .args(["20261130-020000", "--yes"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains("cannot be verified") && e.contains("--allow-unverified"),
        "{e}"
    );
}

// ---------------------------------------------------------------- the stack

#[test]
fn database_and_config_round_trip_on_the_live_stack() {
    let Some(stack) = kit::stack("restore db+config round trip") else {
        return;
    };
    let _m = kit::mutate();
    let t = tempfile::tempdir().unwrap();
    let table = format!("daon_restore_test_{}", std::process::id());
    kit::psql(&format!(
        "DROP TABLE IF EXISTS {table}; CREATE TABLE {table} (id int primary key, v text); INSERT INTO {table} SELECT g, md5(g::text) FROM generate_series(1, 300) g;"
    ));
    let digest = |t: &str| {
        kit::psql(&format!(
            "SELECT count(*) || ':' || md5(string_agg(v, ',' ORDER BY id)) FROM {t}"
        ))
    };
    let before = digest(&table);
    let o = backup_cmd(&stack.config, t.path())
        .args(["--only", "db,config"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));

    // Delete and change rows; loosen .env's mode.
    kit::psql(&format!(
        "DELETE FROM {table} WHERE id > 100; UPDATE {table} SET v = 'changed' WHERE id = 1;"
    ));
    assert_ne!(digest(&table), before);
    let env = kit::repo_root().join("tests/stack/.env");
    let env_bytes = std::fs::read(&env).unwrap();
    std::fs::set_permissions(&env, std::fs::Permissions::from_mode(0o644)).unwrap();

    // A dry run changes nothing; without --yes and without a terminal, nothing either.
    let mon = kit::Monitoring::start(t.path());
    let o = restore(Some(&stack.config), t.path())
        .envs(mon.env())
        .args(["--dry-run", "--only", "db,config"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("would: database"),
        "{}",
        text(&o)
    );
    let o = restore(Some(&stack.config), t.path())
        .envs(mon.env())
        .args(["--only", "db"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert_ne!(digest(&table), before);

    let o = restore(Some(&stack.config), t.path())
        .envs(mon.env())
        .args(["latest", "--only", "db,config", "--yes"])
        .output()
        .unwrap();
    let after = digest(&table);
    let mode = std::fs::metadata(&env).unwrap().permissions().mode() & 0o777;
    kit::psql(&format!("DROP TABLE {table}"));
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(after, before, "rows are back");
    assert_eq!(mode, 0o600);
    assert_eq!(std::fs::read(&env).unwrap(), env_bytes);
    for c in ["daon-api-1", "daon-api-2", "daon-api-3"] {
        assert_eq!(kit::health(c), "healthy", "{c} was restarted");
    }

    // Monitoring: the dry run pings only; the refused run and the restore notify.
    assert_eq!(
        mon.events(),
        [
            "ping start",
            "ping 0",
            "ping start",
            "ping 2",
            "hook failure",
            "ping start",
            "ping 0",
            "hook success"
        ]
    );
    let hooks = mon.hooks();
    let name = set::list(&t.path().join("backups")).unwrap()[0]
        .name
        .clone();
    assert!(
        hooks[0]["text"].as_str().unwrap().contains("--yes"),
        "the refusal says what to do: {}",
        hooks[0]
    );
    let ok = &hooks[1];
    assert_eq!(ok["fields"]["set"], name.as_str(), "{ok}");
    assert_eq!(
        ok["fields"]["restoring"],
        serde_json::json!(["config", "db"]),
        "{ok}"
    );
    assert!(ok["fields"]["duration_ms"].as_u64().is_some(), "{ok}");
    assert!(
        ok["text"].as_str().unwrap().contains(&format!(
            "daon-restore OK: restore of {name} complete, stack healthy"
        )),
        "{ok}"
    );
    let mails = mon.wait_mails(2);
    assert_eq!(mails.len(), 2, "{mails:#?}");
    assert!(mails[1].contains(&format!("set: {name}")), "{}", mails[1]);
    let pw = String::from_utf8_lossy(&env_bytes)
        .lines()
        .find_map(|l| l.strip_prefix("POSTGRES_PASSWORD=").map(str::to_string))
        .unwrap();
    mon.assert_never_seen(&pw, "the PostgreSQL password");
}

#[test]
fn a_corrupt_set_is_refused_naming_the_artifact_and_the_live_data_is_unchanged() {
    let Some(stack) = kit::stack("restore refuses corrupt") else {
        return;
    };
    let _l = kit::lock();
    let t = tempfile::tempdir().unwrap();
    let table = format!("daon_restore_corrupt_{}", std::process::id());
    kit::psql(&format!("DROP TABLE IF EXISTS {table}; CREATE TABLE {table} (id int); INSERT INTO {table} SELECT generate_series(1, 50);"));
    let o = backup_cmd(&stack.config, t.path())
        .args(["--only", "db"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    kit::psql(&format!("DELETE FROM {table} WHERE id > 10"));
    let p = set_path(&o).join("database.sql.zst");
    let mut b = std::fs::read(&p).unwrap();
    let i = b.len() / 2;
    b[i] ^= 0x40;
    std::fs::write(&p, b).unwrap();
    let mon = kit::Monitoring::start(t.path());
    let o = restore(Some(&stack.config), t.path())
        .envs(mon.env())
        .args(["--only", "db", "--yes"])
        .output()
        .unwrap();
    let rows = kit::psql(&format!("SELECT count(*) FROM {table}"));
    kit::psql(&format!("DROP TABLE {table}"));
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains("database.sql.zst") && e.contains("nothing was changed"),
        "{e}"
    );
    assert_eq!(rows, "10", "live data untouched");
    assert_eq!(mon.events(), ["ping start", "ping 1", "hook failure"]);
    let bad = &mon.hooks()[0];
    assert_eq!(bad["fields"]["exit_code"], 1, "{bad}");
    let said = bad["text"].as_str().unwrap();
    assert!(
        said.contains("daon-restore FAILED: restore of ")
            && said.contains("database.sql.zst")
            && said.contains("nothing was changed"),
        "{said}"
    );
    assert!(mon.end_pings()[0].1.contains("nothing was changed"));
    let mails = mon.wait_mails(1);
    assert!(mails[0].contains("daon-restore FAILED"), "{mails:#?}");
}

#[test]
fn chain_data_round_trips_byte_identical_through_a_staged_swap() {
    let Some(stack) = kit::stack("restore chain round trip") else {
        return;
    };
    let _l = kit::lock();
    let t = tempfile::tempdir().unwrap();
    let s = Scratch::new("chain");
    s.populate();
    let original = tree_hash(&s.mountpoint);
    let mut b = backup_cmd(&stack.config, t.path());
    s.env(&mut b);
    let o = b.args(["--only", "chain"]).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));

    // Damage the live data.
    std::fs::remove_file(s.mountpoint.join("data/blocks.db")).unwrap();
    std::fs::write(s.mountpoint.join("config/genesis.json"), b"garbage").unwrap();
    std::fs::write(s.mountpoint.join("junk"), b"junk").unwrap();
    assert_ne!(tree_hash(&s.mountpoint), original);

    let mut r = restore(Some(&stack.config), t.path());
    s.env(&mut r);
    let o = r.args(["--only", "chain", "--yes"]).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        tree_hash(&s.mountpoint),
        original,
        "byte-identical after restore"
    );
    let parent = s.mountpoint.parent().unwrap();
    let names: Vec<String> = std::fs::read_dir(parent)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        vec!["_data".to_string()],
        "staging and old data removed once healthy"
    );
    let o = kit::docker(&["inspect", "-f", "{{.State.Running}}", &s.container]);
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "true");
    let o = kit::docker(&["exec", &s.container, "cat", "/data/config/genesis.json"]);
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        r#"{"chain_id":"scratch"}"#,
        "the container sees the restored data"
    );
}

#[test]
fn hostile_archives_are_refused_by_name_and_nothing_is_written() {
    let Some(stack) = kit::stack("restore hostile") else {
        return;
    };
    let t = tempfile::tempdir().unwrap();
    let s = Scratch::new("hostile");
    s.populate();
    let original = tree_hash(&s.mountpoint);
    let dir = t.path().join("backups");
    let parent = s.mountpoint.parent().unwrap().to_path_buf();
    for (i, (entries, name)) in [
        (
            vec![
                ("data/ok", b'0', "", &b"fine"[..]),
                ("../escape", b'0', "", &b"x"[..]),
            ],
            "../escape",
        ),
        (
            vec![("/tmp/daon-restore-abs-escape", b'0', "", &b"x"[..])],
            "/tmp/daon-restore-abs-escape",
        ),
        (
            vec![
                ("evil", b'2', "/etc", &b""[..]),
                ("evil/passwd-daon", b'0', "", &b"x"[..]),
            ],
            "evil",
        ),
        (vec![("data/up", b'2', "../../..", &b""[..])], "data/up"),
        (vec![("dev", b'3', "", &b""[..])], "device"),
    ]
    .into_iter()
    .enumerate()
    {
        let set = format!("2026010{}T000000Z", i + 1);
        handmade_set(&dir, &set, &raw_tar(&entries));
        let mut r = restore(Some(&stack.config), t.path());
        s.env(&mut r);
        let o = r
            .args([set.as_str(), "--only", "chain", "--yes"])
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(1), "{name}: {}", text(&o));
        let e = String::from_utf8_lossy(&o.stderr);
        assert!(
            e.contains(name) && e.contains("nothing was changed"),
            "{name}: {e}"
        );
        assert_eq!(
            tree_hash(&s.mountpoint),
            original,
            "{name}: live volume unchanged"
        );
        assert!(
            !parent.join("escape").exists() && !Path::new("/tmp/daon-restore-abs-escape").exists()
        );
        let names: Vec<_> = std::fs::read_dir(&parent)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "{name}: no staging dir left: {names:?}");
        // verify refuses the same set.
        let o = kit::tool("daon-backup", Some(&stack.config), t.path())
            .args(["verify", &set])
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(1), "{name}: {}", text(&o));
    }
}

#[test]
fn drill_passes_on_a_good_set_and_fails_on_a_truncated_dump() {
    let Some(stack) = kit::stack("restore drill") else {
        return;
    };
    let t = tempfile::tempdir().unwrap();
    let table = format!("daon_drill_test_{}", std::process::id());
    {
        let _l = kit::lock();
        kit::psql(&format!("DROP TABLE IF EXISTS {table}; CREATE TABLE {table} (id int, v text); INSERT INTO {table} SELECT g, repeat('x', g % 50) FROM generate_series(1, 2000) g;"));
        let o = backup_cmd(&stack.config, t.path()).output().unwrap();
        kit::psql(&format!("DROP TABLE {table}"));
        assert!(o.status.success(), "{}", text(&o));
    }
    let o = restore(Some(&stack.config), t.path())
        .args(["drill", "latest"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("database ok") && out.contains("2000 rows")
            || out.contains("rows, counts match"),
        "{out}"
    );
    assert!(out.contains("chain    ok"), "{out}");
    let o = kit::docker(&[
        "ps",
        "-a",
        "--filter",
        "name=daon-restore-drill",
        "--format",
        "{{.Names}}",
    ]);
    assert!(
        String::from_utf8_lossy(&o.stdout).trim().is_empty(),
        "drill container removed"
    );

    // Truncate the dump (and fix its hash and size, as a dump cut short at
    // backup time would look): the drill fails and says why.
    let sets = set::list(&t.path().join("backups")).unwrap();
    let sp = sets.last().unwrap().path.clone();
    let mut m = set::read_manifest(&sp).unwrap();
    let mut sql = Vec::new();
    zstd_decode(&sp.join("database.sql.zst"), &mut sql);
    sql.truncate(sql.len() * 2 / 3);
    let f = std::fs::File::create(sp.join("database.sql.zst")).unwrap();
    let mut e = Encoder::new(HashWriter::new(f), Compression::Zstd, 3, 1).unwrap();
    e.write_all(&sql).unwrap();
    let (_, sha, size) = e.finish().unwrap().finish();
    let a = m
        .artifacts
        .iter_mut()
        .find(|a| a.kind == Kind::Database)
        .unwrap();
    a.sha256 = sha;
    a.size = size;
    a.uncompressed_size = sql.len() as u64;
    std::fs::write(sp.join(set::MANIFEST), serde_json::to_vec(&m).unwrap()).unwrap();
    let o = restore(Some(&stack.config), t.path())
        .args(["drill"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains("database.sql.zst") && e.contains("truncated"),
        "{e}"
    );
}

fn zstd_decode(p: &Path, out: &mut Vec<u8>) {
    let f = std::fs::File::open(p).unwrap();
    daon_backup::codec::decoder(f, Compression::Zstd)
        .unwrap()
        .read_to_end(out)
        .unwrap();
}

#[test]
fn an_unhealthy_stack_after_the_swap_gets_the_old_chain_data_back() {
    let Some(stack) = kit::stack("restore unhealthy rollback") else {
        return;
    };
    let t = tempfile::tempdir().unwrap();
    let s = Scratch::new("rollback");
    s.populate();
    let mut b = backup_cmd(&stack.config, t.path());
    s.env(&mut b);
    let o = b.args(["--only", "chain"]).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    std::fs::write(
        s.mountpoint.join("config/genesis.json"),
        b"changed after the backup",
    )
    .unwrap();
    let before = tree_hash(&s.mountpoint);

    // The same stack, but its HTTP check can never pass.
    let stack_dir = kit::repo_root().join("tests/stack");
    let cfg_text = std::fs::read_to_string(&stack.config)
        .unwrap()
        .replace(
            "project_dir = \".\"",
            &format!("project_dir = {:?}", stack_dir.display().to_string()),
        )
        .replace("http://127.0.0.1:18080/health", "http://127.0.0.1:9/health");
    let cfg = t.path().join("daon.toml");
    std::fs::write(&cfg, cfg_text).unwrap();
    let mut r = restore(Some(&cfg), t.path());
    s.env(&mut r);
    let o = r
        .args(["--only", "chain", "--yes", "--health-timeout", "3s"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains("not healthy") && e.contains("old chain data was put back"),
        "{e}"
    );
    assert_eq!(
        tree_hash(&s.mountpoint),
        before,
        "the pre-restore data is live again"
    );
    let failed = s.mountpoint.with_file_name("_data.daon-restore-failed");
    assert_eq!(
        std::fs::read(failed.join("config/genesis.json")).unwrap(),
        br#"{"chain_id":"scratch"}"#,
        "the restored copy is kept aside"
    );
    std::fs::remove_dir_all(&failed).unwrap();
    let o = kit::docker(&["inspect", "-f", "{{.State.Running}}", &s.container]);
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "true");
}

#[test]
fn the_runbook_layout_restores_only_with_allow_unverified() {
    let Some(stack) = kit::stack("restore runbook layout") else {
        return;
    };
    let t = tempfile::tempdir().unwrap();
    // A PostgreSQL of our own, so the runbook dump's whole-schema restore touches nothing shared.
    let pg = format!("daon-restore-test-pg-{}", std::process::id());
    let o = kit::docker(&[
        "run",
        "-d",
        "--name",
        &pg,
        "--network",
        "none",
        "-e",
        "POSTGRES_USER=daon",
        "-e",
        "POSTGRES_DB=daon",
        "-e",
        "POSTGRES_PASSWORD=x",
        "--entrypoint",
        "/usr/local/bin/daon-postgres-entrypoint",
        "daon-stack-base:local",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    struct Rm(String);
    impl Drop for Rm {
        fn drop(&mut self) {
            let _ = kit::docker(&["rm", "-f", "-v", &self.0]);
        }
    }
    let _rm = Rm(pg.clone());
    let sql = |q: &str| {
        let o = kit::docker(&[
            "exec",
            "-e",
            "PGPASSWORD=x",
            &pg,
            "psql",
            "-X",
            "-h",
            "127.0.0.1",
            "-U",
            "daon",
            "-d",
            "daon",
            "-v",
            "ON_ERROR_STOP=1",
            "-At",
            "-c",
            q,
        ]);
        (
            o.status.success(),
            String::from_utf8_lossy(&o.stdout).trim().to_string(),
        )
    };
    let start = std::time::Instant::now();
    while !sql("select 1").0 {
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "scratch PostgreSQL did not start"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    assert!(sql("CREATE TABLE rb (id int); INSERT INTO rb SELECT generate_series(1, 40);").0);

    // The runbook's own commands.
    let set = t.path().join("backups/20261130-020000");
    std::fs::create_dir_all(&set).unwrap();
    let o = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "docker exec {pg} pg_dump -U daon daon | gzip > {}/database.sql.gz",
            set.display()
        ))
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    std::fs::write(
        set.join("env-backup"),
        "CHAIN_ID=daon-devnet-1\nPOSTGRES_PASSWORD=old\n",
    )
    .unwrap();
    assert!(sql("DELETE FROM rb WHERE id > 5; CREATE TABLE junk (x int);").0);

    let project = t.path().join("project");
    std::fs::create_dir_all(&project).unwrap();
    std::fs::write(
        project.join(".env"),
        "CHAIN_ID=daon-devnet-1\nPOSTGRES_PASSWORD=new\n",
    )
    .unwrap();
    let point = |c: &mut Command| {
        c.env("DAON_POSTGRES_CONTAINER", &pg)
            .env("DAON_SERVICES_API_CONTAINERS", "")
            .env("DAON_COMPOSE_PROJECT_DIR", &project);
    };
    let mut r = restore(Some(&stack.config), t.path());
    point(&mut r);
    let o = r
        .args(["20261130-020000", "--only", "db,config", "--yes"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert_eq!(
        sql("SELECT count(*) FROM rb").1,
        "5",
        "refused: nothing changed"
    );

    let mut r = restore(Some(&stack.config), t.path());
    point(&mut r);
    let o = r
        .args([
            "20261130-020000",
            "--only",
            "db,config",
            "--yes",
            "--allow-unverified",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("cannot be verified"),
        "{}",
        text(&o)
    );
    assert_eq!(sql("SELECT count(*) FROM rb").1, "40");
    assert_eq!(
        sql("SELECT count(*) FROM pg_tables WHERE tablename = 'junk'").1,
        "0"
    );
    let env = project.join(".env");
    assert_eq!(
        std::fs::read_to_string(&env).unwrap(),
        "CHAIN_ID=daon-devnet-1\nPOSTGRES_PASSWORD=old\n"
    );
    assert_eq!(
        std::fs::metadata(&env).unwrap().permissions().mode() & 0o777,
        0o600
    );
}
