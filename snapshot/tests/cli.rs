//! End-to-end tests of daon-snapshot: the binary against the fake Hetzner
//! Cloud API (tests/fake-hcloud, one per test on an ephemeral loopback port)
//! with every fault the issue names, and conformance runs of the official
//! `hcloud` CLI against the same fake, compared with what daon-snapshot says.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

use assert_cmd::Command;
use fake_hcloud::Fake;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

/// 64 characters like a real token, and distinctive enough to grep for.
const TOKEN: &str = "tokSECRETq7Wm2Xc9Lp4Vb8Nz3Kd6Hf1Jg5Rt0Ys7Ue2Io9Pa4Sd8Fg3Hj6Kl1Zx";
const DAY: f64 = 86400.0;

struct T {
    fake: Fake,
    dir: tempfile::TempDir,
    sid: u64,
}

fn setup() -> T {
    let fake = Fake::start(TOKEN).unwrap();
    fake.admin("action_duration", json!({"ms": 600}));
    let sid = fake.add_server("web-1");
    T {
        fake,
        dir: tempfile::tempdir().unwrap(),
        sid,
    }
}

/// The binary with a clean environment pointed at this test's fake.
fn snap(t: &T) -> Command {
    let mut c = Command::cargo_bin("daon-snapshot").unwrap();
    for (k, _) in std::env::vars() {
        if k.starts_with("DAON_") || k.starts_with("HCLOUD_") || k == "XDG_CONFIG_HOME" {
            c.env_remove(k);
        }
    }
    let d = t.dir.path();
    c.env("HOME", d)
        .env("NO_COLOR", "1")
        .env("HCLOUD_ENDPOINT", t.fake.endpoint())
        .env("HCLOUD_TOKEN", TOKEN)
        .env("HCLOUD_CONFIG", d.join("no-cli.toml"))
        .env("DAON_HETZNER_SERVER", "web-1")
        .env("DAON_PATHS_LOCK_DIR", d.join("lock"))
        .env("DAON_HETZNER_RETRY_BASE", "50ms")
        .env("DAON_HETZNER_RETRY_CAP", "200ms")
        .env("DAON_HETZNER_POLL_INTERVAL", "100ms")
        .env("DAON_HETZNER_POLL_MAX", "200ms")
        .env("DAON_HETZNER_TIMEOUT", "5s")
        .env("DAON_HETZNER_LOCKED_WAIT", "20s")
        .current_dir(d)
        .timeout(Duration::from_secs(120));
    c
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

fn json_lines(o: &Output) -> Vec<Value> {
    stdout(o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
        .collect()
}

fn records<'a>(lines: &'a [Value], kind: &str) -> Vec<&'a Value> {
    lines.iter().filter(|v| v["type"] == kind).collect()
}

fn posts(t: &T, what: &str) -> usize {
    t.fake
        .requests()
        .iter()
        .filter(|r| r["method"] == "POST" && r["path"].as_str().unwrap().ends_with(what))
        .count()
}

/// Our snapshots of the test server, as the fake holds them.
fn our_snapshots(t: &T) -> Vec<Value> {
    t.fake
        .images()
        .into_iter()
        .filter(|i| i["type"] == "snapshot" && i["created_from"]["id"] == t.sid)
        .collect()
}

// ------------------------------------------------------------------ basics

#[test]
fn help_documents_examples_policy_and_exit_codes() {
    let t = setup();
    let o = snap(&t).arg("--help").output().unwrap();
    assert!(o.status.success());
    let s = stdout(&o);
    for want in [
        "Examples:",
        "Exit codes",
        "create",
        "prune",
        "check",
        "--max-age",
        "HCLOUD_TOKEN",
        "HCLOUD_ENDPOINT",
        "75",
        "77",
        "never the newest",
    ] {
        assert!(s.contains(want), "--help lacks {want:?}:\n{s}");
    }
    let o = snap(&t).output().unwrap();
    assert_eq!(code(&o), 2, "no subcommand is a usage error");
    let o = snap(&t)
        .args(["prune", "--keep-last", "0"])
        .output()
        .unwrap();
    assert_eq!(code(&o), 2, "{}", stderr(&o));
}

#[test]
fn create_waits_and_reports_id_size_and_duration() {
    let t = setup();
    let o = snap(&t)
        .args(["create", "--json", "--label", "reason=test"])
        .output()
        .unwrap();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let lines = json_lines(&o);
    let rec = records(&lines, "snapshot")[0];
    assert_eq!(rec["status"], "available");
    assert!(rec["duration_seconds"].as_f64().unwrap() >= 0.5, "{rec}");
    assert_eq!(rec["image_size_gb"], 1.25);
    assert_eq!(records(&lines, "summary")[0]["ok"], true);
    let snaps = our_snapshots(&t);
    assert_eq!(snaps.len(), 1);
    assert_eq!(snaps[0]["id"], rec["id"]);
    assert_eq!(snaps[0]["status"], "available");
    assert_eq!(snaps[0]["labels"]["daon-ops/managed"], "true");
    assert_eq!(snaps[0]["labels"]["reason"], "test");
    // Human form names id, size and time.
    let o = snap(&t).args(["create"]).output().unwrap();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let s = stdout(&o);
    assert!(
        s.starts_with("created snapshot ") && s.contains("GB") && s.contains("s\n"),
        "{s}"
    );
    assert_eq!(our_snapshots(&t).len(), 2);
}

#[test]
fn progress_is_drawn_on_a_terminal_only() {
    let t = setup();
    t.fake.admin("action_duration", json!({"ms": 1500}));
    // Quiet in cron: no terminal, no progress, nothing on stderr.
    let o = snap(&t).arg("create").output().unwrap();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(stderr(&o), "", "messages without a terminal");
    // On a terminal (script(1) gives it a pty): percent and elapsed time.
    let bin = assert_cmd::cargo::cargo_bin("daon-snapshot");
    let out = std::process::Command::new("script")
        .args(["-qec", &format!("{} create", bin.display()), "/dev/null"])
        .envs([
            ("HCLOUD_ENDPOINT", t.fake.endpoint()),
            ("HCLOUD_TOKEN", TOKEN.to_string()),
            (
                "HCLOUD_CONFIG",
                t.dir.path().join("no").display().to_string(),
            ),
            ("DAON_HETZNER_SERVER", "web-1".to_string()),
            (
                "DAON_PATHS_LOCK_DIR",
                t.dir.path().join("lock").display().to_string(),
            ),
            ("DAON_HETZNER_POLL_INTERVAL", "100ms".to_string()),
        ])
        .env_remove("NO_COLOR")
        .env_remove("DAON_CONFIG")
        .output()
        .unwrap();
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{s}");
    assert!(s.contains("Waiting for create_image (server web-1)"), "{s}");
    assert!(s.contains('%') && s.contains("done"), "{s}");
    assert!(s.contains("created snapshot"), "{s}");
}

#[test]
fn create_no_wait_returns_while_creating() {
    let t = setup();
    t.fake.admin("action_duration", json!({"ms": 5000}));
    let o = snap(&t)
        .args(["create", "--no-wait", "--json"])
        .output()
        .unwrap();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let lines = json_lines(&o);
    assert_eq!(records(&lines, "snapshot")[0]["status"], "creating");
    assert_eq!(our_snapshots(&t)[0]["status"], "creating");
}

#[test]
fn an_action_ending_in_error_exits_1_with_the_apis_message() {
    let t = setup();
    t.fake.admin(
        "action_error",
        json!({"code": "image_create_failed", "message": "the disk of server web-1 could not be read"}),
    );
    let o = snap(&t).arg("create").output().unwrap();
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(
        stderr(&o).contains("the disk of server web-1 could not be read"),
        "{}",
        stderr(&o)
    );
    assert!(stderr(&o).contains("image_create_failed"));
    assert!(our_snapshots(&t).iter().all(|i| i["status"] != "available"));
}

#[test]
fn a_locked_server_is_retried_until_free() {
    let t = setup();
    t.fake.admin("lock", json!({"server": t.sid, "ms": 1500}));
    let start = Instant::now();
    let o = snap(&t).arg("create").output().unwrap();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(start.elapsed() >= Duration::from_millis(1400));
    assert!(posts(&t, "create_image") >= 2, "the 423 was retried");
    assert_eq!(our_snapshots(&t).len(), 1);
}

#[test]
fn a_server_locked_beyond_the_budget_exits_75() {
    let t = setup();
    t.fake.admin("lock", json!({"server": t.sid, "ms": 30000}));
    let o = snap(&t)
        .env("DAON_HETZNER_LOCKED_WAIT", "1s")
        .arg("create")
        .output()
        .unwrap();
    assert_eq!(code(&o), 75, "{}", stderr(&o));
    assert!(stderr(&o).contains("locked"), "{}", stderr(&o));
    assert!(our_snapshots(&t).is_empty());
}

#[test]
fn a_429_with_reset_a_few_seconds_ahead_is_waited_out() {
    let t = setup();
    t.fake.admin("rate_limit", json!({"reset_in_secs": 3}));
    let start = Instant::now();
    let o = snap(&t).args(["create", "--json"]).output().unwrap();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(
        start.elapsed() >= Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    assert_eq!(our_snapshots(&t).len(), 1);
    // Beyond the budget: 75, and the message says when to retry.
    t.fake.admin("rate_limit", json!({"reset_in_secs": 30}));
    let o = snap(&t)
        .env("DAON_HETZNER_RATE_LIMIT_WAIT", "2s")
        .arg("list")
        .output()
        .unwrap();
    assert_eq!(code(&o), 75, "{}", stderr(&o));
    assert!(stderr(&o).contains("rate_limit_exceeded"), "{}", stderr(&o));
}

#[test]
fn a_503_on_the_post_that_created_the_image_anyway_does_not_make_two() {
    let t = setup();
    t.fake.admin(
        "fail",
        json!({"method": "POST", "path": "/create_image", "status": 503, "apply": true}),
    );
    let o = snap(&t).args(["create", "--json"]).output().unwrap();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stderr(&o).contains("made anyway"), "{}", stderr(&o));
    assert_eq!(posts(&t, "create_image"), 1, "posted again");
    let snaps = our_snapshots(&t);
    assert_eq!(snaps.len(), 1, "{snaps:?}");
    assert_eq!(snaps[0]["status"], "available", "waited for it");
    assert_eq!(
        records(&json_lines(&o), "snapshot")[0]["id"],
        snaps[0]["id"]
    );
}

#[test]
fn a_503_that_made_nothing_is_posted_again_once() {
    let t = setup();
    t.fake.admin(
        "fail",
        json!({"method": "POST", "path": "/create_image", "status": 503}),
    );
    let o = snap(&t).arg("create").output().unwrap();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(posts(&t, "create_image"), 2);
    assert_eq!(our_snapshots(&t).len(), 1);
}

#[test]
fn a_post_that_times_out_but_was_carried_out_does_not_make_two() {
    let t = setup();
    t.fake.admin(
        "delay",
        json!({"path": "/create_image", "ms": 1500, "times": 1}),
    );
    let o = snap(&t)
        .env("DAON_HETZNER_TIMEOUT", "1s")
        .arg("create")
        .output()
        .unwrap();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stderr(&o).contains("no clear answer"), "{}", stderr(&o));
    assert_eq!(our_snapshots(&t).len(), 1, "{:?}", our_snapshots(&t));
    assert_eq!(posts(&t, "create_image"), 1);
}

#[test]
fn server_errors_on_reads_are_retried_and_persistent_ones_exit_69() {
    let t = setup();
    t.fake.admin(
        "fail",
        json!({"path": "/images", "status": 502, "times": 3}),
    );
    let o = snap(&t).arg("list").output().unwrap();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    t.fake.admin(
        "fail",
        json!({"path": "/servers", "status": 500, "times": 50}),
    );
    let o = snap(&t)
        .args(["check", "--max-age", "1d"])
        .output()
        .unwrap();
    assert_eq!(code(&o), 69, "{}", stderr(&o));
    assert!(stderr(&o).contains("after 5 tries"), "{}", stderr(&o));
}

#[test]
fn pagination_over_more_than_50_images_is_followed() {
    let t = setup();
    for i in 0..120 {
        t.fake
            .add_image(json!({"type": "snapshot", "created_from": t.sid,
            "age_secs": 1000 + i, "labels": {"daon-ops/managed": "true"}}));
    }
    let o = snap(&t).args(["list", "--json"]).output().unwrap();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let lines = json_lines(&o);
    assert_eq!(records(&lines, "image").len(), 120);
    let ids: BTreeSet<u64> = records(&lines, "image")
        .iter()
        .map(|v| v["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids.len(), 120);
    let pages: Vec<String> = t
        .fake
        .requests()
        .iter()
        .filter(|r| r["path"] == "/v1/images" && r["query"].as_str().unwrap().contains("snapshot"))
        .map(|r| r["query"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(pages.len(), 3, "{pages:?}");
    // Newest first.
    let ages: Vec<i64> = records(&lines, "image")
        .iter()
        .map(|v| v["age_seconds"].as_i64().unwrap())
        .collect();
    assert!(ages.windows(2).all(|w| w[0] <= w[1]), "{ages:?}");
}

#[test]
fn list_shows_snapshots_and_backups_of_this_server_only() {
    let t = setup();
    let other = t.fake.add_server("db-1");
    let a = t
        .fake
        .add_image(json!({"type": "snapshot", "created_from": t.sid, "age_secs": 100}));
    let b = t
        .fake
        .add_image(json!({"type": "backup", "created_from": t.sid, "age_secs": 50}));
    let c = t
        .fake
        .add_image(json!({"type": "snapshot", "created_from": other}));
    // A snapshot whose server is gone: created_from null. Not ours, no crash.
    let d = t.fake.add_image(json!({"type": "snapshot"}));
    let o = snap(&t).args(["list", "--json"]).output().unwrap();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let ids: Vec<u64> = records(&json_lines(&o), "image")
        .iter()
        .map(|v| v["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, vec![b, a]);
    assert!(!ids.contains(&c) && !ids.contains(&d));
    let o = snap(&t).arg("list").output().unwrap();
    let s = stdout(&o);
    assert!(s.contains("backup") && s.contains(&a.to_string()), "{s}");
}

// ------------------------------------------------------------------- prune

#[test]
fn prune_keeps_exactly_what_the_policy_says() {
    let t = setup();
    let other = t.fake.add_server("db-1");
    let lab = json!({"daon-ops/managed": "true"});
    // Ten labelled, available snapshots 1..10 days old (ids deliberately not in age order).
    let mut by_age = Vec::new();
    for d in [3, 1, 7, 2, 10, 5, 4, 9, 6, 8] {
        let id = t
            .fake
            .add_image(json!({"type": "snapshot", "created_from": t.sid,
            "age_secs": d as f64 * DAY, "labels": lab}));
        by_age.push((d, id));
    }
    by_age.sort();
    let protected = t
        .fake
        .add_image(json!({"type": "snapshot", "created_from": t.sid,
        "age_secs": 20.0 * DAY, "labels": lab, "protected": true}));
    let unlabelled = t
        .fake
        .add_image(json!({"type": "snapshot", "created_from": t.sid,
        "age_secs": 30.0 * DAY}));
    let foreign_label = t
        .fake
        .add_image(json!({"type": "snapshot", "created_from": t.sid,
        "age_secs": 30.0 * DAY, "labels": {"daon-ops/managed": "false"}}));
    let creating = t
        .fake
        .add_image(json!({"type": "snapshot", "created_from": t.sid,
        "age_secs": 40.0 * DAY, "labels": lab, "status": "creating"}));
    let other_server = t
        .fake
        .add_image(json!({"type": "snapshot", "created_from": other,
        "age_secs": 30.0 * DAY, "labels": lab}));
    let backup = t
        .fake
        .add_image(json!({"type": "backup", "created_from": t.sid,
        "age_secs": 30.0 * DAY, "labels": lab}));
    // keep-last 3 keeps days 1-3; keep-within 4.5d keeps day 4; days 5..10 go.
    let expect: BTreeSet<u64> = by_age
        .iter()
        .filter(|(d, _)| *d >= 5)
        .map(|(_, id)| *id)
        .collect();
    let before: BTreeSet<u64> = t
        .fake
        .images()
        .iter()
        .map(|i| i["id"].as_u64().unwrap())
        .collect();

    let o = snap(&t)
        .args([
            "prune",
            "--keep-last",
            "3",
            "--keep-within",
            "4d 12h",
            "--dry-run",
            "--json",
        ])
        .output()
        .unwrap();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let lines = json_lines(&o);
    let would: BTreeSet<u64> = records(&lines, "image")
        .iter()
        .filter(|v| v["action"] == "would_delete")
        .map(|v| v["id"].as_u64().unwrap())
        .collect();
    assert_eq!(would, expect);
    let after_dry: BTreeSet<u64> = t
        .fake
        .images()
        .iter()
        .map(|i| i["id"].as_u64().unwrap())
        .collect();
    assert_eq!(after_dry, before, "--dry-run deleted something");
    assert_eq!(
        t.fake
            .requests()
            .iter()
            .filter(|r| r["method"] == "DELETE")
            .count(),
        0
    );

    let o = snap(&t)
        .args(["prune", "--keep-last", "3", "--keep-within", "4d 12h"])
        .output()
        .unwrap();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let s = stdout(&o);
    assert!(s.contains("beyond the newest 3"), "{s}");
    assert!(s.contains("delete-protected"), "{s}");
    let after: BTreeSet<u64> = t
        .fake
        .images()
        .iter()
        .map(|i| i["id"].as_u64().unwrap())
        .collect();
    let gone: BTreeSet<u64> = before.difference(&after).copied().collect();
    assert_eq!(gone, expect);
    for keep in [
        protected,
        unlabelled,
        foreign_label,
        creating,
        other_server,
        backup,
        by_age[0].1,
    ] {
        assert!(after.contains(&keep), "{keep} was deleted");
    }
    // Again: nothing more to do.
    let o = snap(&t)
        .args([
            "prune",
            "--keep-last",
            "3",
            "--keep-within",
            "4d 12h",
            "--json",
        ])
        .output()
        .unwrap();
    let lines = json_lines(&o);
    assert_eq!(records(&lines, "summary")[0]["deleted"], 0);
}

#[test]
fn prune_never_deletes_the_newest_even_with_keep_last_1() {
    let t = setup();
    let lab = json!({"daon-ops/managed": "true"});
    let newest = t
        .fake
        .add_image(json!({"type": "snapshot", "created_from": t.sid,
        "age_secs": 40.0 * DAY, "labels": lab}));
    let old = t
        .fake
        .add_image(json!({"type": "snapshot", "created_from": t.sid,
        "age_secs": 50.0 * DAY, "labels": lab}));
    let o = snap(&t)
        .args(["prune", "--keep-last", "1"])
        .output()
        .unwrap();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let ids: Vec<u64> = our_snapshots(&t)
        .iter()
        .map(|i| i["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, vec![newest]);
    assert!(
        stdout(&o).contains(&format!("deleted          snapshot {old}")),
        "{}",
        stdout(&o)
    );
}

#[test]
fn a_failed_delete_is_reported_and_the_rest_go_on() {
    let t = setup();
    let lab = json!({"daon-ops/managed": "true"});
    for d in 1..=4 {
        t.fake
            .add_image(json!({"type": "snapshot", "created_from": t.sid,
            "age_secs": d as f64 * DAY, "labels": lab}));
    }
    t.fake.admin(
        "fail",
        json!({"method": "DELETE", "path": "/images/", "status": 403,
        "code": "forbidden", "message": "insufficient permissions", "times": 1}),
    );
    let o = snap(&t)
        .args(["prune", "--keep-last", "1"])
        .output()
        .unwrap();
    assert_eq!(code(&o), 77, "{}", stderr(&o));
    assert!(stderr(&o).contains("insufficient permissions"));
    assert_eq!(our_snapshots(&t).len(), 2, "one failed, the other went");
}

#[test]
fn create_and_prune_take_the_lock() {
    let t = setup();
    let _held = daon_common::lock::acquire(
        &t.dir.path().join("lock/daon-snapshot.lock"),
        Duration::ZERO,
        "a test",
    )
    .unwrap();
    for args in [vec!["create"], vec!["prune", "--keep-last", "2"]] {
        let o = snap(&t).args(&args).output().unwrap();
        assert_eq!(code(&o), 75, "{args:?}: {}", stderr(&o));
        assert!(stderr(&o).contains("a test"), "{}", stderr(&o));
    }
    assert_eq!(posts(&t, "create_image"), 0);
    // Reads do not need it.
    let o = snap(&t).arg("list").output().unwrap();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
}

// ------------------------------------------------------------------- check

#[test]
fn check_max_age_at_the_boundary() {
    let t = setup();
    t.fake
        .add_image(json!({"type": "snapshot", "created_from": t.sid, "age_secs": 3600.0 - 60.0}));
    let o = snap(&t)
        .args(["check", "--max-age", "1h"])
        .output()
        .unwrap();
    assert_eq!(code(&o), 0, "{}", stdout(&o));
    assert!(stdout(&o).starts_with("fresh"), "{}", stdout(&o));
    let o = snap(&t)
        .args(["check", "--max-age", "58m"])
        .output()
        .unwrap();
    assert_eq!(code(&o), 1, "{}", stdout(&o));
    assert!(
        stdout(&o).contains(" is 59m ") && stdout(&o).contains("limit 58m"),
        "{}",
        stdout(&o)
    );
    let o = snap(&t)
        .args(["check", "--max-age", "0s"])
        .output()
        .unwrap();
    assert_eq!(code(&o), 1);

    let old = t.fake.add_server("old-1");
    t.fake
        .add_image(json!({"type": "snapshot", "created_from": old, "age_secs": 3600.0 + 60.0}));
    let o = snap(&t)
        .args(["check", "--server", "old-1", "--max-age", "1h", "--json"])
        .output()
        .unwrap();
    assert_eq!(code(&o), 1, "{}", stdout(&o));
    let lines = json_lines(&o);
    let c = records(&lines, "check")[0];
    assert_eq!(c["fresh"], false);
    assert!(c["newest"]["age_seconds"].as_i64().unwrap() >= 3660);
    let o = snap(&t)
        .args(["check", "--server", &old.to_string(), "--max-age", "1h 3m"])
        .output()
        .unwrap();
    assert_eq!(code(&o), 0, "by id: {}", stdout(&o));
}

#[test]
fn check_ignores_images_still_creating_and_counts_backups() {
    let t = setup();
    t.fake.add_image(
        json!({"type": "snapshot", "created_from": t.sid, "age_secs": 10, "status": "creating"}),
    );
    t.fake
        .add_image(json!({"type": "snapshot", "created_from": t.sid, "age_secs": 2.0 * DAY}));
    let o = snap(&t)
        .args(["check", "--max-age", "24h"])
        .output()
        .unwrap();
    assert_eq!(code(&o), 1, "a creating image counted: {}", stdout(&o));
    assert!(
        stdout(&o).contains("1d 23h") || stdout(&o).contains("2d 0h"),
        "{}",
        stdout(&o)
    );

    let b = t.fake.add_server("with-backup");
    t.fake
        .add_image(json!({"type": "backup", "created_from": b, "age_secs": 300}));
    let o = snap(&t)
        .args(["check", "--server", "with-backup", "--max-age", "24h"])
        .output()
        .unwrap();
    assert_eq!(code(&o), 0, "{}", stdout(&o));
    assert!(stdout(&o).contains("backup"), "{}", stdout(&o));

    t.fake.add_server("empty-1");
    let o = snap(&t)
        .args(["check", "--server", "empty-1", "--max-age", "24h"])
        .output()
        .unwrap();
    assert_eq!(code(&o), 1);
    assert!(
        stdout(&o).contains("no available snapshot or backup"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn check_says_69_when_the_api_is_down_and_77_when_the_token_is_refused() {
    let t = setup();
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}/v1", l.local_addr().unwrap());
    drop(l);
    let o = snap(&t)
        .env("HCLOUD_ENDPOINT", &dead)
        .args(["check", "--max-age", "24h"])
        .output()
        .unwrap();
    assert_eq!(code(&o), 69, "{}", stderr(&o));
    let o = snap(&t)
        .env("HCLOUD_TOKEN", "not-the-token")
        .args(["check", "--max-age", "24h"])
        .output()
        .unwrap();
    assert_eq!(code(&o), 77, "{}", stderr(&o));
    assert!(stderr(&o).contains("unauthorized"), "{}", stderr(&o));
    let o = snap(&t)
        .args(["check", "--server", "nope", "--max-age", "24h"])
        .output()
        .unwrap();
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert!(stderr(&o).contains("no server named"), "{}", stderr(&o));
}

// --------------------------------------------------------- backups, status

#[test]
fn enable_backups_then_status_shows_the_window() {
    let t = setup();
    let o = snap(&t).args(["status", "--json"]).output().unwrap();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let st = records(&json_lines(&o), "status")[0].clone();
    assert_eq!(st["backups_enabled"], false);
    let o = snap(&t).arg("enable-backups").output().unwrap();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stdout(&o).contains("backups enabled"), "{}", stdout(&o));
    let o = snap(&t).args(["status", "--json"]).output().unwrap();
    let st = records(&json_lines(&o), "status")[0].clone();
    assert_eq!(st["backups_enabled"], true);
    assert_eq!(st["backup_window"], "22-02");
    let o = snap(&t).arg("enable-backups").output().unwrap();
    assert!(stdout(&o).contains("already enabled"), "{}", stdout(&o));
    assert_eq!(posts(&t, "enable_backup"), 1);
    // A running action shows in status.
    t.fake.admin("lock", json!({"server": t.sid, "ms": 5000}));
    let o = snap(&t).arg("status").output().unwrap();
    let s = stdout(&o);
    assert!(
        s.contains("change_protection") && s.contains("locked     yes"),
        "{s}"
    );
}

// ------------------------------------------------------------------- token

fn write_cli_config(dir: &Path, token: &str) -> std::path::PathBuf {
    // The format `hcloud context create` writes (checked against hcloud 1.30).
    let p = dir.join("cli.toml");
    std::fs::write(
        &p,
        format!(
            "active_context = \"prod\"\n\n[[contexts]]\n  name = \"prod\"\n  token = \"{token}\"\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
    p
}

#[test]
fn token_from_the_cli_context_and_from_a_0600_file_but_not_a_0644_one() {
    let t = setup();
    let cli = write_cli_config(t.dir.path(), TOKEN);
    let o = snap(&t)
        .env_remove("HCLOUD_TOKEN")
        .env("HCLOUD_CONFIG", &cli)
        .args(["status"])
        .output()
        .unwrap();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let tf = t.dir.path().join("token");
    std::fs::write(&tf, format!("{TOKEN}\n")).unwrap();
    std::fs::set_permissions(&tf, std::fs::Permissions::from_mode(0o600)).unwrap();
    let o = snap(&t)
        .env_remove("HCLOUD_TOKEN")
        .arg("--token-file")
        .arg(&tf)
        .arg("list")
        .output()
        .unwrap();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    std::fs::set_permissions(&tf, std::fs::Permissions::from_mode(0o644)).unwrap();
    let o = snap(&t)
        .env_remove("HCLOUD_TOKEN")
        .arg("--token-file")
        .arg(&tf)
        .arg("list")
        .output()
        .unwrap();
    assert_eq!(code(&o), 77, "{}", stderr(&o));
    assert!(stderr(&o).contains("chmod 600"), "{}", stderr(&o));
    let o = snap(&t)
        .env_remove("HCLOUD_TOKEN")
        .arg("list")
        .output()
        .unwrap();
    assert_eq!(code(&o), 78, "no token at all: {}", stderr(&o));
}

#[test]
fn the_token_never_appears_in_any_output() {
    let t = setup();
    t.fake.add_image(
        json!({"type": "snapshot", "created_from": t.sid, "labels": {"daon-ops/managed": "true"}}),
    );
    let cli = write_cli_config(t.dir.path(), TOKEN);
    let tf = t.dir.path().join("token");
    std::fs::write(&tf, TOKEN).unwrap();
    std::fs::set_permissions(&tf, std::fs::Permissions::from_mode(0o600)).unwrap();
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}/v1", l.local_addr().unwrap());
    drop(l);
    let wrong = Fake::start("another-token").unwrap();
    wrong.add_server("web-1");

    let mut outputs = Vec::new();
    let mut run = |c: &mut Command| {
        let o = c.output().unwrap();
        outputs.push(format!("{}{}", stdout(&o), stderr(&o)));
    };
    run(snap(&t).args(["create", "-v"]));
    run(snap(&t).args(["create", "--json", "--verbose"]));
    run(snap(&t).args(["list", "-v"]));
    run(snap(&t).args(["list", "--json"]).env("HCLOUD_DEBUG", "1"));
    run(snap(&t).args(["prune", "--keep-last", "1", "--dry-run", "-v"]));
    run(snap(&t).args(["check", "--max-age", "1h", "-v", "--json"]));
    run(snap(&t).args(["status", "-v"]));
    run(snap(&t).args(["enable-backups", "-v"]));
    run(snap(&t).arg("--print-config"));
    run(snap(&t).args(["--print-config", "--token-file"]).arg(&tf));
    run(snap(&t)
        .arg("--print-config")
        .env_remove("HCLOUD_TOKEN")
        .env("HCLOUD_CONFIG", &cli));
    run(snap(&t)
        .args(["list", "-v"])
        .env_remove("HCLOUD_TOKEN")
        .env("HCLOUD_CONFIG", &cli));
    run(snap(&t)
        .args(["list", "-v", "--token-file"])
        .arg(&tf)
        .env_remove("HCLOUD_TOKEN"));
    run(snap(&t)
        .args(["list", "-v", "--json"])
        .env("HCLOUD_ENDPOINT", &dead));
    run(snap(&t)
        .args(["create", "-v", "--json"])
        .env("HCLOUD_ENDPOINT", wrong.endpoint()));
    run(snap(&t).args(["check", "--max-age", "1h", "-v", "--server", "missing"]));
    t.fake.admin(
        "fail",
        json!({"path": "/", "status": 422, "code": "invalid_input", "message": "bad", "times": 1}),
    );
    run(snap(&t).args(["list", "-v"]));
    std::fs::set_permissions(&tf, std::fs::Permissions::from_mode(0o644)).unwrap();
    run(snap(&t)
        .args(["list", "-v", "--token-file"])
        .arg(&tf)
        .env_remove("HCLOUD_TOKEN"));
    std::fs::write(&cli, format!("[[contexts]]\n token = \"{TOKEN}\" broken\n")).unwrap();
    run(snap(&t)
        .args(["list", "-v"])
        .env_remove("HCLOUD_TOKEN")
        .env("HCLOUD_CONFIG", &cli));

    assert_eq!(outputs.len(), 19);
    for (i, o) in outputs.iter().enumerate() {
        assert!(!o.contains(TOKEN), "output {i} leaks the token:\n{o}");
        assert!(
            !o.contains(&TOKEN[..20]),
            "output {i} leaks part of the token:\n{o}"
        );
    }
    // The verbose runs did log requests (so the check above means something).
    assert!(
        outputs[2].contains("GET http://127.0.0.1"),
        "{}",
        outputs[2]
    );
    assert!(
        outputs[3].contains("GET http://127.0.0.1"),
        "HCLOUD_DEBUG: {}",
        outputs[3]
    );
    assert!(outputs[8].contains("from HCLOUD_TOKEN"), "{}", outputs[8]);
}

// ------------------------------------------- the official CLI as the judge

/// The official `hcloud` CLI pointed at this test's fake, or `None` (with a
/// visible SKIPPED line) when it is not installed — never in CI.
fn hcloud(t: &T) -> Option<Command> {
    let found = std::process::Command::new("hcloud")
        .arg("version")
        .output()
        .is_ok();
    if !found {
        if std::env::var("CI").is_ok_and(|v| v == "true" || v == "1") {
            panic!("the official hcloud CLI is required in CI (CI=true): apt-get install hcloud-cli (scripts/test installs it)");
        }
        eprintln!("SKIPPED hcloud conformance: the hcloud CLI is not installed (apt-get install hcloud-cli)");
        return None;
    }
    let mut c = Command::new("hcloud");
    for (k, _) in std::env::vars() {
        if k.starts_with("HCLOUD_") {
            c.env_remove(k);
        }
    }
    c.env("HOME", t.dir.path())
        .env("HCLOUD_ENDPOINT", t.fake.endpoint())
        .env("HCLOUD_TOKEN", TOKEN)
        .env("HCLOUD_CONFIG", t.dir.path().join("no-cli.toml"))
        .timeout(Duration::from_secs(60));
    Some(c)
}

fn ok(o: Output, what: &str) -> String {
    assert!(
        o.status.success(),
        "{what} failed ({:?}):\n{}\n{}",
        o.status,
        stdout(&o),
        stderr(&o)
    );
    stdout(&o)
}

/// Runs `hcloud context create NAME` (interactive: script(1) gives it a
/// terminal) writing to a fresh HCLOUD_CONFIG; returns that file.
fn hcloud_context_create(t: &T, name: &str) -> std::path::PathBuf {
    use std::io::Write;
    use std::process::Stdio;
    let cli = t.dir.path().join("hcloud-cli.toml");
    let mut child = std::process::Command::new("script")
        .args([
            "-qec",
            &format!("hcloud context create {name}"),
            "/dev/null",
        ])
        .env("HCLOUD_CONFIG", &cli)
        .env_remove("HCLOUD_TOKEN")
        .env("HOME", t.dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    std::thread::sleep(Duration::from_millis(800));
    writeln!(stdin, "{TOKEN}").unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    while !std::fs::read_to_string(&cli).is_ok_and(|s| s.contains(TOKEN)) {
        assert!(
            Instant::now() < deadline,
            "hcloud context create wrote no config"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(stdin);
    let deadline = Instant::now() + Duration::from_secs(5);
    while child.try_wait().unwrap().is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    cli
}

fn snapshot_ids(t: &T) -> BTreeSet<u64> {
    let o = snap(t).args(["list", "--json"]).output().unwrap();
    records(&json_lines(&o), "image")
        .iter()
        .filter(|v| v["kind"] == "snapshot")
        .map(|v| v["id"].as_u64().unwrap())
        .collect()
}

#[test]
fn the_official_cli_agrees_with_the_fake_and_with_daon_snapshot() {
    let t = setup();
    let Some(_) = hcloud(&t) else { return };
    let hc = |args: &[&str]| hcloud(&t).unwrap().args(args).output().unwrap();

    let s = ok(hc(&["server", "list"]), "hcloud server list");
    assert!(s.contains("web-1") && s.contains(&t.sid.to_string()), "{s}");
    let s = ok(
        hc(&["server", "describe", "web-1"]),
        "hcloud server describe",
    );
    assert!(
        s.contains(&format!("ID:\t\t{}", t.sid)) && s.contains("Backup Window"),
        "{s}"
    );

    // daon-snapshot creates; hcloud sees the same image, label and description.
    let o = snap(&t)
        .args(["create", "--json", "--description", "conformance"])
        .output()
        .unwrap();
    let ours = records(&json_lines(&o), "snapshot")[0]["id"]
        .as_u64()
        .unwrap();
    let list: Value = serde_json::from_str(&ok(
        hc(&["image", "list", "-t", "snapshot", "-o", "json"]),
        "hcloud image list",
    ))
    .unwrap();
    let img = list
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == ours)
        .unwrap_or_else(|| panic!("hcloud does not list {ours}: {list}"));
    assert_eq!(img["status"], "available");
    assert_eq!(img["description"], "conformance");
    assert_eq!(img["labels"]["daon-ops/managed"], "true");
    assert_eq!(img["created_from"]["id"], t.sid);

    // hcloud creates; daon-snapshot sees it.
    ok(
        hc(&[
            "server",
            "create-image",
            "--type",
            "snapshot",
            "--description",
            "by hcloud",
            "--label",
            "daon-ops/managed=true",
            "web-1",
        ]),
        "hcloud server create-image",
    );
    let list: Value = serde_json::from_str(&ok(
        hc(&["image", "list", "-t", "snapshot", "-o", "json"]),
        "hcloud image list",
    ))
    .unwrap();
    let theirs: BTreeSet<u64> = list
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["created_from"]["id"] == t.sid)
        .map(|i| i["id"].as_u64().unwrap())
        .collect();
    assert_eq!(theirs.len(), 2);
    assert_eq!(
        snapshot_ids(&t),
        theirs,
        "hcloud and daon-snapshot disagree"
    );
    let by_hcloud = *theirs.iter().find(|i| **i != ours).unwrap();

    // hcloud deletes; daon-snapshot no longer lists it; check still sees the other.
    ok(
        hc(&["image", "delete", &ours.to_string()]),
        "hcloud image delete",
    );
    assert_eq!(snapshot_ids(&t), BTreeSet::from([by_hcloud]));
    let o = snap(&t)
        .args(["check", "--max-age", "1h"])
        .output()
        .unwrap();
    assert_eq!(code(&o), 0, "{}", stdout(&o));

    // More than a page, half of it ours: hcloud's label selector and pagination
    // agree with daon-snapshot's idea of "managed".
    for i in 0..70 {
        let labels = if i % 2 == 0 {
            json!({"daon-ops/managed": "true"})
        } else {
            json!({})
        };
        t.fake.add_image(json!({"type": "snapshot", "created_from": t.sid, "age_secs": 100 + i, "labels": labels}));
    }
    let list: Value = serde_json::from_str(&ok(
        hc(&[
            "image",
            "list",
            "-t",
            "snapshot",
            "-l",
            "daon-ops/managed=true",
            "-o",
            "json",
        ]),
        "hcloud image list -l",
    ))
    .unwrap();
    let theirs: BTreeSet<u64> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_u64().unwrap())
        .collect();
    assert_eq!(theirs.len(), 36);
    let o = snap(&t).args(["list", "--json"]).output().unwrap();
    let managed: BTreeSet<u64> = records(&json_lines(&o), "image")
        .iter()
        .filter(|v| v["managed"] == true)
        .map(|v| v["id"].as_u64().unwrap())
        .collect();
    assert_eq!(managed, theirs);

    // The CLI config file that hcloud itself writes gives both tools the token.
    let cli = hcloud_context_create(&t, "prod");
    let text = std::fs::read_to_string(&cli).unwrap();
    assert!(text.contains("active_context = \"prod\""), "{text}");
    let o = hcloud(&t)
        .unwrap()
        .env_remove("HCLOUD_TOKEN")
        .env("HCLOUD_CONFIG", &cli)
        .args(["server", "list", "-o", "noheader", "-o", "columns=id"])
        .output()
        .unwrap();
    assert_eq!(ok(o, "hcloud with a context").trim(), t.sid.to_string());
    let o = snap(&t)
        .env_remove("HCLOUD_TOKEN")
        .env("HCLOUD_CONFIG", &cli)
        .args(["status", "--json"])
        .output()
        .unwrap();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(records(&json_lines(&o), "status")[0]["server"]["id"], t.sid);
}

#[test]
fn the_official_cli_sees_the_same_failures() {
    let t = setup();
    let Some(_) = hcloud(&t) else { return };
    let hc = |args: &[&str]| hcloud(&t).unwrap().args(args).output().unwrap();
    // An action ending in error: both fail with the API's message.
    t.fake.admin(
        "action_error",
        json!({"code": "image_create_failed", "message": "snapshot storage is full"}),
    );
    let o = hc(&["server", "create-image", "--type", "snapshot", "web-1"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("snapshot storage is full"),
        "{}",
        stderr(&o)
    );
    t.fake.admin(
        "action_error",
        json!({"code": "image_create_failed", "message": "snapshot storage is full"}),
    );
    let o = snap(&t).arg("create").output().unwrap();
    assert_eq!(code(&o), 1);
    assert!(
        stderr(&o).contains("snapshot storage is full"),
        "{}",
        stderr(&o)
    );
    // A refused token: both fail.
    let o = hcloud(&t)
        .unwrap()
        .env("HCLOUD_TOKEN", "nope")
        .args(["server", "list"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("unable to authenticate"),
        "{}",
        stderr(&o)
    );
    // A protected image: hcloud cannot delete it and daon-snapshot prune skips it.
    let p = t.fake.add_image(
        json!({"type": "snapshot", "created_from": t.sid, "age_secs": 9.0 * DAY,
        "protected": true, "labels": {"daon-ops/managed": "true"}}),
    );
    t.fake.add_image(
        json!({"type": "snapshot", "created_from": t.sid, "age_secs": 1.0 * DAY,
        "labels": {"daon-ops/managed": "true"}}),
    );
    let o = hc(&["image", "delete", &p.to_string()]);
    assert!(!o.status.success(), "hcloud deleted a protected image");
    let o = snap(&t)
        .args(["prune", "--keep-last", "1"])
        .output()
        .unwrap();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(snapshot_ids(&t).contains(&p));
}

#[test]
fn create_notifies_success_and_failure_and_pings_the_dead_man_switch() {
    let t = setup();
    let rec = daon_testkit::Recorder::start();
    let with_monitoring = |c: &mut Command| {
        c.env(
            "DAON_NOTIFY_WEBHOOK_URL",
            format!("{}/hook/secret-hook-token", rec.url),
        )
        .env("DAON_NOTIFY_PING_URL", format!("{}/ping/abc", rec.url))
        .env("DAON_PATHS_STATE_DIR", t.dir.path().join("state"));
    };
    let mut c = snap(&t);
    with_monitoring(&mut c);
    let o = c.arg("create").output().unwrap();
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    t.fake.admin(
        "action_error",
        json!({"code": "image_create_failed", "message": "disk unreadable"}),
    );
    let mut c = snap(&t);
    with_monitoring(&mut c);
    let o = c.arg("create").output().unwrap();
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    // A read-only command and a dry run ping but do not notify; --print-config does neither.
    let mut c = snap(&t);
    with_monitoring(&mut c);
    assert_eq!(code(&c.arg("list").output().unwrap()), 0);
    let mut c = snap(&t);
    with_monitoring(&mut c);
    assert_eq!(code(&c.args(["prune", "--dry-run"]).output().unwrap()), 0);
    let mut c = snap(&t);
    with_monitoring(&mut c);
    assert_eq!(code(&c.arg("--print-config").output().unwrap()), 0);

    let seen = rec.seen();
    let lines: Vec<&str> = seen
        .iter()
        .map(|(l, _)| l.split('?').next().unwrap())
        .collect();
    assert_eq!(
        lines,
        [
            "POST /ping/abc/start",
            "POST /ping/abc/0",
            "POST /hook/secret-hook-token",
            "POST /ping/abc/start",
            "POST /ping/abc/1",
            "POST /hook/secret-hook-token",
            "POST /ping/abc/start",
            "POST /ping/abc/0",
            "POST /ping/abc/start",
            "POST /ping/abc/0",
        ],
        "{seen:#?}"
    );
    let ok: Value = serde_json::from_str(&seen[2].1).unwrap();
    assert_eq!(ok["event"], "success");
    assert!(
        ok["text"]
            .as_str()
            .unwrap()
            .contains("daon-snapshot OK: create for web-1"),
        "{ok}"
    );
    assert!(
        ok["text"].as_str().unwrap().contains("created snapshot"),
        "{ok}"
    );
    let bad: Value = serde_json::from_str(&seen[5].1).unwrap();
    assert_eq!(bad["event"], "failure");
    assert_eq!(bad["fields"]["exit_code"], 1);
    assert!(
        bad["text"].as_str().unwrap().contains("disk unreadable"),
        "{bad}"
    );
    for (_, body) in &seen {
        assert!(
            !body.contains(TOKEN),
            "the API token leaked into a notification"
        );
    }
}
