//! End-to-end tests of daon-reboot-guard on the real local stack: each gate
//! failing alone stops the reboot and is named; with all gates passing the
//! substituted reboot command runs once, after the stack stopped; `verify`
//! brings the stack back (or names the check that stays unhealthy).

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

use assert_cmd::Command;
use chrono::{Datelike, Utc};
use daon_testkit as kit;
use std::path::{Path, PathBuf};
use std::time::Duration;

const ALWAYS: &str = "daily 00:00-12:00 UTC,daily 12:00-00:00 UTC";

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn new() -> Env {
        let e = Env {
            dir: tempfile::tempdir().unwrap(),
        };
        std::fs::create_dir_all(e.p("backups")).unwrap();
        std::fs::create_dir_all(e.p("locks")).unwrap();
        e
    }
    fn p(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
    fn need_reboot(&self) {
        std::fs::write(
            self.p("reboot-required"),
            "*** System restart required ***\n",
        )
        .unwrap();
        std::fs::write(
            self.p("reboot-required.pkgs"),
            "linux-image-6.1.0-99-amd64\n",
        )
        .unwrap();
    }
    fn reboots(&self) -> Vec<String> {
        std::fs::read_to_string(self.p("rebooted.log"))
            .map(|t| t.lines().map(String::from).collect())
            .unwrap_or_default()
    }
    /// The tool, pointed at the stack (or no config) with everything else in the temp dir.
    fn cmd(&self, stack: Option<&Path>) -> Command {
        let mut c = Command::cargo_bin("daon-reboot-guard").unwrap();
        for (k, _) in std::env::vars() {
            if k.starts_with("DAON_") || k.starts_with("HCLOUD") {
                c.env_remove(k);
            }
        }
        if let Some(s) = stack {
            c.env("DAON_CONFIG", s);
        }
        // The substituted reboot command records whether the API still ran.
        let log = self.p("rebooted.log");
        c.env("DAON_PATHS_STATE_DIR", self.p("state"))
            .env("DAON_PATHS_LOCK_DIR", self.p("locks"))
            .env("DAON_PATHS_BACKUP_DIR", self.p("backups"))
            .env("DAON_REBOOT_REQUIRED_FILE", self.p("reboot-required"))
            .env("DAON_REBOOT_WINDOWS", ALWAYS)
            .env("DAON_REBOOT_DRAIN", "0s")
            .env("DAON_REBOOT_STOP_TIMEOUT", "10s")
            .env("DAON_REBOOT_VERIFY_DEADLINE", "60s")
            .env("DAON_REBOOT_SNAPSHOT_COMMAND", "daon-no-snapshot-tool-here")
            .env(
                "DAON_REBOOT_COMMAND",
                format!(
                    "sh,-c,docker inspect -f 'api-running={{{{.State.Running}}}}' daon-api-1 >> {}",
                    log.display()
                ),
            )
            .timeout(Duration::from_secs(180));
        c
    }
    /// A real, verified local backup set made by daon-backup (config only: fast).
    fn fresh_backup(&self, stack: &Path) {
        let out = std::process::Command::new(kit::workspace_bin("daon-backup"))
            .args(["--only", "config", "--quiet", "--dest"])
            .arg(self.p("backups"))
            .env("DAON_CONFIG", stack)
            .env("DAON_PATHS_LOCK_DIR", self.p("backup-locks"))
            .env("DAON_PATHS_STATE_DIR", self.p("backup-state"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "daon-backup failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn no_reboot_needed_exits_0_and_says_so() {
    let e = Env::new();
    let o = e.cmd(None).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("no reboot needed"), "{}", text(&o));
    // From cron: silent when there is nothing to say.
    let o = e.cmd(None).arg("--quiet").output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(text(&o), "", "--quiet printed something");
    // The dead-man's switch sees the run start and end with its exit code;
    // a run with nothing to do sends no message.
    let mon = kit::Monitoring::start(e.dir.path());
    let o = e.cmd(None).envs(mon.env()).output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(mon.events(), ["ping start", "ping 0"]);
    assert!(
        mon.end_pings()[0].1.contains("no reboot needed"),
        "{:?}",
        mon.end_pings()
    );
    let o = e
        .cmd(None)
        .envs(mon.env())
        .env("DAON_REBOOT_WINDOWS", "not a window")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(78), "{}", text(&o));
}

#[test]
fn help_shows_examples_gates_and_exit_codes() {
    let e = Env::new();
    let o = e.cmd(None).arg("--help").output().unwrap();
    assert_eq!(o.status.code(), Some(0));
    let h = String::from_utf8_lossy(&o.stdout);
    for want in [
        "Examples:",
        "Gates",
        "Exit codes:",
        "75  temporary failure",
        "--quiet",
    ] {
        assert!(h.contains(want), "--help lacks {want:?}:\n{h}");
    }
    let o = e.cmd(None).args(["verify", "--help"]).output().unwrap();
    assert!(
        String::from_utf8_lossy(&o.stdout).contains("Exit codes:"),
        "verify --help lacks the exit codes"
    );
}

#[test]
fn outside_the_window_exits_0_and_names_the_next_one() {
    let e = Env::new();
    e.need_reboot();
    let in3 = (Utc::now() + chrono::Duration::days(3)).weekday();
    let o = e
        .cmd(None)
        .env("DAON_REBOOT_WINDOWS", format!("{in3} 03:00-04:00 UTC"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let t = text(&o);
    assert!(
        t.contains("linux-image-6.1.0-99-amd64")
            && t.contains("outside the maintenance window")
            && t.contains("opens"),
        "{t}"
    );
    assert!(e.reboots().is_empty());
}

#[test]
fn bad_window_is_a_config_error() {
    let e = Env::new();
    let o = e
        .cmd(None)
        .env("DAON_REBOOT_WINDOWS", "Sundays at three")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(78), "{}", text(&o));
    assert!(text(&o).contains("DAON_REBOOT_WINDOWS"), "{}", text(&o));
}

#[test]
fn stack_each_failing_gate_stops_the_reboot_and_is_named() {
    let Some(stack) = kit::stack("reboot_gates") else {
        return;
    };
    let _m = kit::mutate();
    let e = Env::new();
    e.need_reboot();

    // backup: nothing fresh anywhere (and --quiet still tells why).
    let o = e.cmd(Some(&stack.config)).arg("--quiet").output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("gate backup       FAIL") && text(&o).contains("gate(s) backup failed"),
        "{}",
        text(&o)
    );

    e.fresh_backup(&stack.config);
    // Now everything passes: a dry run says so and changes nothing.
    let o = e
        .cmd(Some(&stack.config))
        .arg("--dry-run")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("dry run: would reboot"), "{}", text(&o));
    assert_eq!(kit::health("daon-api-1"), "healthy");

    // locks: a deploy in progress.
    let held = daon_common::lock::acquire(
        &e.p("locks/deploy.lock"),
        Duration::ZERO,
        "daon-rolling-deploy daon-api:v9",
    )
    .unwrap();
    let o = e.cmd(Some(&stack.config)).output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("gate locks        FAIL") && text(&o).contains("daon-api:v9"),
        "{}",
        text(&o)
    );
    drop(held);

    // reboot-loop: two reboots already today.
    let now = Utc::now().to_rfc3339();
    std::fs::create_dir_all(e.p("state/reboot-guard")).unwrap();
    std::fs::write(
        e.p("state/reboot-guard/history.jsonl"),
        format!("{{\"event\":\"reboot\",\"time\":\"{now}\",\"detail\":\"x\"}}\n{{\"event\":\"reboot\",\"time\":\"{now}\",\"detail\":\"y\"}}\n"),
    )
    .unwrap();
    let o = e.cmd(Some(&stack.config)).output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("gate reboot-loop  FAIL"), "{}", text(&o));
    std::fs::remove_file(e.p("state/reboot-guard/history.jsonl")).unwrap();

    // health: an API instance down.
    kit::docker(&["stop", "-t", "2", "daon-api-2"]);
    let o = e.cmd(Some(&stack.config)).output().unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        text(&o).contains("gate health       FAIL") && text(&o).contains("daon-api-2"),
        "{}",
        text(&o)
    );

    assert!(e.reboots().is_empty(), "rebooted although a gate failed");
}

#[test]
fn stack_all_gates_pass_reboot_runs_once_after_stop_and_verify_brings_it_back() {
    let Some(stack) = kit::stack("reboot_and_verify") else {
        return;
    };
    let _m = kit::mutate();
    let e = Env::new();
    e.need_reboot();
    e.fresh_backup(&stack.config);
    let rec = kit::Recorder::start();
    let url = rec.url.clone();
    let with_hooks = |c: &mut Command| {
        c.env("DAON_REBOOT_MAINTENANCE_URL", format!("{url}/maintenance"))
            .env("DAON_NOTIFY_WEBHOOK_URL", format!("{url}/hook"));
    };

    let mut c = e.cmd(Some(&stack.config));
    with_hooks(&mut c);
    let o = c.output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert_eq!(
        e.reboots(),
        ["api-running=false"],
        "the reboot ran once, with the stack stopped"
    );
    assert!(e.p("state/reboot-guard/marker.json").exists());
    for c in kit::ALL_CONTAINERS {
        assert_ne!(
            kit::health(c),
            "healthy",
            "{c} still running after the guard stopped the stack"
        );
    }

    // "After boot": verify starts the stack and waits for health.
    let mut c = e.cmd(Some(&stack.config));
    with_hooks(&mut c);
    let o = c.arg("verify").output().unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let seen = rec.seen();
    let lines: Vec<&str> = seen.iter().map(|(l, _)| l.as_str()).collect();
    assert_eq!(
        lines,
        [
            "POST /maintenance",
            "POST /hook",
            "DELETE /maintenance",
            "POST /hook"
        ],
        "maintenance on, reboot notice, maintenance off, back-healthy notice"
    );
    assert!(
        seen[1].1.contains("rebooting for updates")
            && seen[1].1.contains("linux-image-6.1.0-99-amd64"),
        "{}",
        seen[1].1
    );
    assert!(
        seen[3].1.contains("back after reboot, healthy"),
        "{}",
        seen[3].1
    );
    // Before and after: the kernel each time, when the stack stopped, how long it was down.
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let before: serde_json::Value = serde_json::from_str(&seen[1].1).unwrap();
    let after: serde_json::Value = serde_json::from_str(&seen[3].1).unwrap();
    assert_eq!(before["fields"]["kernel_before"], kernel.trim(), "{before}");
    assert_eq!(after["fields"]["kernel_before"], kernel.trim(), "{after}");
    assert_eq!(after["fields"]["kernel_after"], kernel.trim(), "{after}");
    assert!(
        after["fields"]["down_seconds"].as_i64().unwrap() >= 0,
        "{after}"
    );
    assert_eq!(
        after["fields"]["stopped_at"], before["fields"]["stopped_at"],
        "{after}"
    );
    assert!(text(&o).contains("healthy again"), "{}", text(&o));
    assert!(!e.p("state/reboot-guard/marker.json").exists());
    for c in kit::ALL_CONTAINERS {
        assert_eq!(kit::health(c), "healthy", "{c}");
    }
    // Without a marker, verify does nothing.
    let o = e.cmd(Some(&stack.config)).arg("verify").output().unwrap();
    assert_eq!(o.status.code(), Some(0));
    assert!(text(&o).contains("nothing to verify"));
    let history = std::fs::read_to_string(e.p("state/reboot-guard/history.jsonl")).unwrap();
    assert!(
        history.contains("\"reboot\"") && history.contains("\"verified\""),
        "{history}"
    );
}

#[test]
fn stack_verify_names_the_check_that_stays_unhealthy_within_its_deadline() {
    let Some(stack) = kit::stack("verify_unhealthy") else {
        return;
    };
    let _m = kit::mutate();
    let e = Env::new();
    std::fs::create_dir_all(e.p("state/reboot-guard")).unwrap();
    std::fs::write(
        e.p("state/reboot-guard/marker.json"),
        format!(
            "{{\"time\":\"{}\",\"reason\":\"test\",\"maintenance_url\":\"\",\"host\":\"t\"}}",
            Utc::now().to_rfc3339()
        ),
    )
    .unwrap();
    kit::fixture_ctl("daon-api-2", "http://127.0.0.1:3000/admin/health/unhealthy");
    kit::wait_health("daon-api-2", "unhealthy", Duration::from_secs(30));
    let start = std::time::Instant::now();
    let o = e
        .cmd(Some(&stack.config))
        .arg("verify")
        .env("DAON_REBOOT_VERIFY_DEADLINE", "8s")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(
        start.elapsed() < Duration::from_secs(60),
        "{:?}",
        start.elapsed()
    );
    let t = text(&o);
    assert!(
        t.contains("NOT healthy") && t.contains("daon-api-2 is unhealthy"),
        "{t}"
    );
}
