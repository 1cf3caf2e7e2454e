//! End-to-end tests of daon-health-check: the binary against bad input, a
//! silent server, an unreachable Docker, and the real local stack
//! (scripts/stack up) broken on purpose in each way the issue names.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests fail loudly

use assert_cmd::Command;
use daon_testkit as kit;
use serde_json::Value;
use std::io::Write;
use std::net::TcpListener;
use std::path::Path;
use std::time::{Duration, Instant};

/// The binary with a clean environment: no DAON_* from the caller's shell.
fn hc() -> Command {
    let mut c = Command::cargo_bin("daon-health-check").unwrap();
    for (k, _) in std::env::vars() {
        if k.starts_with("DAON_") || k == "DOCKER_HOST" || k == "NO_COLOR" {
            c.env_remove(k);
        }
    }
    c.timeout(Duration::from_secs(120));
    c
}

fn write_config(dir: &Path, text: &str) -> std::path::PathBuf {
    let p = dir.join("daon.toml");
    std::fs::File::create(&p)
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    p
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn json_lines(o: &std::process::Output) -> Vec<Value> {
    stdout(o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON: {l:?}: {e}")))
        .collect()
}

fn check<'a>(lines: &'a [Value], name: &str) -> &'a Value {
    lines
        .iter()
        .find(|v| v["type"] == "check" && v["name"] == name)
        .unwrap_or_else(|| panic!("no check {name} in {lines:?}"))
}

// ---------------------------------------------------------------- no Docker

#[test]
fn help_documents_examples_and_exit_codes() {
    let o = hc().arg("--help").output().unwrap();
    assert!(o.status.success());
    let s = stdout(&o);
    for want in [
        "Examples:",
        "Exit codes",
        "WARNING",
        "CRITICAL",
        "UNKNOWN",
        "78",
        "DAON_CONFIG",
        "--prometheus-textfile",
    ] {
        assert!(s.contains(want), "--help lacks {want:?}:\n{s}");
    }
}

#[test]
fn unknown_config_key_exits_78_naming_key_and_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = write_config(dir.path(), "[chain]\nrpc_urll = \"http://x\"\n");
    let o = hc().arg("--config").arg(&p).output().unwrap();
    assert_eq!(o.status.code(), Some(78), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains("rpc_urll") && e.contains(&p.display().to_string()),
        "{e}"
    );
    assert!(o.stdout.is_empty());
}

#[test]
fn bad_config_value_exits_78_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let p = write_config(
        dir.path(),
        "[health]\ndisk_warn_percent = 95.0\ndisk_crit_percent = 90.0\n",
    );
    let o = hc().arg("--config").arg(&p).output().unwrap();
    assert_eq!(o.status.code(), Some(78));
    assert!(
        stderr(&o).contains("health.disk_warn_percent"),
        "{}",
        stderr(&o)
    );

    let p = write_config(dir.path(), "[docker]\ntimeout = \"forever\"\n");
    let o = hc().arg("--config").arg(&p).output().unwrap();
    assert_eq!(o.status.code(), Some(78));
    assert!(stderr(&o).contains("forever"), "{}", stderr(&o));

    let o = hc()
        .env("DAON_CONFIG", dir.path().join("missing.toml"))
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(78));
    assert!(stderr(&o).contains("missing.toml"), "{}", stderr(&o));

    let o = hc()
        .arg("--config")
        .arg(&p)
        .env("DAON_CHAIN_MIN_PEERS", "lots")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(78));
}

#[test]
fn unknown_check_name_is_unknown_3_listing_the_valid_ones() {
    let o = hc()
        .args(["--check", "dsik", "--no-state"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(3));
    let e = stderr(&o);
    assert!(
        e.contains("dsik") && e.contains("containers") && e.contains("http:api"),
        "{e}"
    );
}

#[test]
fn list_shows_configured_checks() {
    let o = hc().arg("--list").output().unwrap();
    assert!(o.status.success());
    let s = stdout(&o);
    for want in ["http:api", "chain", "containers", "disk", "daon-api-2"] {
        assert!(s.contains(want), "{s}");
    }
}

#[test]
fn print_config_shows_the_built_in_default_and_env_overrides() {
    let o = hc()
        .arg("--print-config")
        .env("DAON_CHAIN_RPC_URL", "http://10.0.0.1:26657")
        .current_dir(std::env::temp_dir())
        .output()
        .unwrap();
    assert!(o.status.success());
    let s = stdout(&o);
    assert!(
        s.contains("/opt/daon-source") && s.contains("daon-postgres"),
        "{s}"
    );
    assert!(s.contains("http://10.0.0.1:26657"), "{s}");
    let v: toml::Value =
        toml::from_str(&s).unwrap_or_else(|e| panic!("print-config is not TOML: {e}\n{s}"));
    assert_eq!(v["postgres"]["user"].as_str(), Some("daon"));
}

#[test]
fn disk_threshold_below_usage_is_warning_1() {
    let o = hc()
        .args([
            "--check",
            "disk",
            "--no-state",
            "--disk-warn",
            "0.1",
            "--disk-crit",
            "99.9",
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("WARNING"));
}

#[test]
fn a_server_that_never_answers_fails_within_its_timeout() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/health", listener.local_addr().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let p = write_config(
        dir.path(),
        &format!("[[health.http]]\nname = \"silent\"\nurl = \"{url}\"\ntimeout = \"1s\"\n"),
    );
    let start = Instant::now();
    let o = hc()
        .args(["--check", "http", "--no-state", "--json", "--config"])
        .arg(&p)
        .output()
        .unwrap();
    let took = start.elapsed();
    assert_eq!(o.status.code(), Some(2), "{}", stdout(&o));
    assert!(took < Duration::from_secs(5), "took {took:?}");
    let lines = json_lines(&o);
    let c = check(&lines, "http:silent");
    assert_eq!(c["status"], "critical");
    assert!(
        c["summary"].as_str().unwrap().contains("no answer within"),
        "{c}"
    );
    drop(listener);
}

#[test]
fn docker_unreachable_is_critical_with_a_message() {
    let o = hc()
        .args(["--check", "containers", "--no-state"])
        .env("DOCKER_HOST", "unix:///nonexistent/docker.sock")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stdout(&o));
    let s = stdout(&o);
    assert!(
        s.contains("cannot reach the Docker daemon") && s.contains("/nonexistent/docker.sock"),
        "{s}"
    );
}

#[test]
fn quiet_prints_nothing_when_ok_and_everything_when_not() {
    let o = hc()
        .args([
            "--check",
            "disk",
            "--no-state",
            "--quiet",
            "--disk-warn",
            "99",
            "--disk-crit",
            "100",
        ])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0));
    assert!(o.stdout.is_empty());
}

// ---------------------------------------------------------------- real stack

/// The binary pointed at the local stack, with its own state directory.
fn stack_hc(stack: &kit::Stack, state: &Path) -> Command {
    let mut c = hc();
    c.env("DAON_CONFIG", &stack.config)
        .env("DAON_PATHS_STATE_DIR", state);
    c
}

#[test]
fn stack_healthy_every_check_ok_in_all_output_formats() {
    let Some(stack) = kit::stack("stack_healthy") else {
        return;
    };
    let _l = kit::lock();
    let state = tempfile::tempdir().unwrap();
    let o = stack_hc(&stack, state.path())
        .arg("--json")
        .output()
        .unwrap();
    let lines = json_lines(&o);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    for name in ["http:api", "chain", "containers", "disk"] {
        assert_eq!(
            check(&lines, name)["status"],
            "ok",
            "{name}: {}",
            check(&lines, name)
        );
    }
    let summary = lines.last().unwrap();
    assert_eq!(summary["type"], "summary");
    assert_eq!(summary["code"], 0);
    assert!(check(&lines, "chain")["summary"]
        .as_str()
        .unwrap()
        .contains("daon-devnet-1"));

    // Nagios: one status line with perfdata.
    let o = stack_hc(&stack, state.path())
        .arg("--nagios")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0));
    let first = stdout(&o).lines().next().unwrap().to_string();
    assert!(first.starts_with("HEALTH OK - "), "{first}");
    let perf = first.split(" | ").nth(1).unwrap();
    assert!(
        perf.contains("'chain_height'=") && perf.contains("'http:api_time'="),
        "{perf}"
    );

    // Prometheus textfile: valid for promtool.
    let prom = state.path().join("daon.prom");
    let o = stack_hc(&stack, state.path())
        .arg("--prometheus-textfile")
        .arg(&prom)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0));
    let text = std::fs::read_to_string(&prom).unwrap();
    assert!(text.contains("daon_health_status 0"), "{text}");
    promtool_check(&prom);
}

fn promtool_check(path: &Path) {
    let r = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(path).unwrap())
        .output();
    match r {
        Ok(o) => assert!(
            o.status.success(),
            "promtool check metrics failed:\n{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
        Err(e) if kit::in_ci() => {
            panic!("promtool is required in CI (Debian package prometheus): {e}")
        }
        Err(e) => eprintln!("SKIPPED promtool validation: {e}"),
    }
}

#[test]
fn stack_stopped_api_instance_is_critical_naming_it() {
    let Some(stack) = kit::stack("stopped_api") else {
        return;
    };
    let _m = kit::mutate();
    let out = kit::docker(&["stop", "-t", "2", "daon-api-2"]);
    assert!(out.status.success());
    let state = tempfile::tempdir().unwrap();
    let o = stack_hc(&stack, state.path())
        .arg("--json")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stdout(&o));
    let lines = json_lines(&o);
    let c = check(&lines, "containers");
    assert_eq!(c["status"], "critical");
    let s = c["summary"].as_str().unwrap();
    assert!(s.contains("daon-api-2 is exited"), "{s}");
    assert!(
        !s.contains("daon-api-1") && !s.contains("daon-api-3"),
        "{s}"
    );
    // Caddy routes around the stopped instance: the API itself stays OK.
    assert_eq!(
        check(&lines, "http:api")["status"],
        "ok",
        "{}",
        check(&lines, "http:api")
    );
}

#[test]
fn stack_unhealthy_api_instance_is_critical_naming_it() {
    let Some(stack) = kit::stack("unhealthy_api") else {
        return;
    };
    let _m = kit::mutate();
    kit::fixture_ctl("daon-api-3", "http://127.0.0.1:3000/admin/health/unhealthy");
    kit::wait_health("daon-api-3", "unhealthy", Duration::from_secs(30));
    let state = tempfile::tempdir().unwrap();
    let o = stack_hc(&stack, state.path())
        .args(["--check", "containers"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stdout(&o));
    let s = stdout(&o);
    assert!(s.contains("daon-api-3 is unhealthy"), "{s}");
    // "healthy" must never match "unhealthy": the others are not reported.
    assert!(
        !s.contains("daon-api-1 is") && !s.contains("daon-api-2 is"),
        "{s}"
    );
}

#[test]
fn stack_stalled_chain_is_critical_on_the_next_run() {
    let Some(stack) = kit::stack("stalled_chain") else {
        return;
    };
    let _m = kit::mutate();
    let state = tempfile::tempdir().unwrap();
    let run = || {
        stack_hc(&stack, state.path())
            .args(["--check", "chain", "--json"])
            .env("DAON_CHAIN_STALL_AFTER", "2s")
            .output()
            .unwrap()
    };
    let first = run();
    assert_eq!(first.status.code(), Some(0), "{}", stdout(&first));
    kit::fixture_ctl("daon-blockchain", "http://127.0.0.1:26657/admin/stall");
    let stalled_at = run();
    assert_eq!(stalled_at.status.code(), Some(0), "{}", stdout(&stalled_at));
    std::thread::sleep(Duration::from_millis(2500));
    let next = run();
    assert_eq!(next.status.code(), Some(2), "{}", stdout(&next));
    let lines = json_lines(&next);
    let s = check(&lines, "chain")["summary"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(s.contains("stalled"), "{s}");
}

#[test]
fn stack_wrong_chain_id_is_critical() {
    let Some(stack) = kit::stack("wrong_chain_id") else {
        return;
    };
    let _m = kit::mutate();
    kit::fixture_ctl(
        "daon-blockchain",
        "http://127.0.0.1:26657/admin/chain-id/daon-evil-9",
    );
    let state = tempfile::tempdir().unwrap();
    let o = stack_hc(&stack, state.path())
        .args(["--check", "chain"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", stdout(&o));
    let s = stdout(&o);
    assert!(
        s.contains("daon-evil-9") && s.contains("daon-devnet-1"),
        "{s}"
    );
}

#[test]
fn stack_chain_status_via_daond_in_the_container() {
    let Some(stack) = kit::stack("daond_status") else {
        return;
    };
    let _l = kit::lock();
    let state = tempfile::tempdir().unwrap();
    // Only the status command: the RPC URL points nowhere.
    let o = stack_hc(&stack, state.path())
        .args(["--check", "chain", "--json"])
        .env("DAON_CHAIN_SOURCE", "exec")
        .env("DAON_CHAIN_RPC_URL", "http://127.0.0.1:9")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    // auto: RPC down, status from daond, reported as a warning.
    let o = stack_hc(&stack, state.path())
        .args(["--check", "chain", "--json"])
        .env("DAON_CHAIN_RPC_URL", "http://127.0.0.1:9")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    let lines = json_lines(&o);
    assert!(check(&lines, "chain")["summary"]
        .as_str()
        .unwrap()
        .contains("RPC unreachable"));
}

#[test]
fn stack_https_certificate_days_are_checked() {
    let Some(stack) = kit::stack("https_cert") else {
        return;
    };
    let _l = kit::lock();
    let state = tempfile::tempdir().unwrap();
    let dir = tempfile::tempdir().unwrap();
    // Caddy's internal CA issues short-lived certificates (hours): below 7 days.
    let p = write_config(
        dir.path(),
        "[[health.http]]\nname = \"tls\"\nurl = \"https://localhost:18443/health\"\ninsecure = true\ncert_warn_days = 30\ncert_crit_days = 7\n",
    );
    let o = hc()
        .args(["--check", "http", "--json", "--no-state", "--config"])
        .arg(&p)
        .output()
        .unwrap();
    let _ = (&stack, &state);
    assert_eq!(o.status.code(), Some(2), "{}", stdout(&o));
    let lines = json_lines(&o);
    let c = check(&lines, "http:tls");
    assert!(
        c["summary"]
            .as_str()
            .unwrap()
            .contains("certificate of localhost expires in"),
        "{c}"
    );
    let perf = c["perfdata"].as_array().unwrap();
    assert!(
        perf.iter().any(|p| p["label"] == "http:tls_cert_days"),
        "{c}"
    );
}

#[test]
fn stack_crash_loop_is_reported_when_the_restart_count_rises() {
    let Some(stack) = kit::stack("crash_loop") else {
        return;
    };
    let _m = kit::mutate();
    let state = tempfile::tempdir().unwrap();
    let run = || {
        stack_hc(&stack, state.path())
            .args(["--check", "containers", "--json"])
            .output()
            .unwrap()
    };
    let first = run();
    assert_eq!(first.status.code(), Some(0), "{}", stdout(&first));
    // A real crash: kill the container's main process from the host, so the
    // restart policy (not a person) brings it back and RestartCount rises.
    let count = || -> u64 {
        let o = kit::docker(&["inspect", "-f", "{{.RestartCount}}", "daon-api-1"]);
        String::from_utf8_lossy(&o.stdout).trim().parse().unwrap()
    };
    let before = count();
    let pid =
        String::from_utf8(kit::docker(&["inspect", "-f", "{{.State.Pid}}", "daon-api-1"]).stdout)
            .unwrap();
    let killed = std::process::Command::new("kill")
        .args(["-KILL", pid.trim()])
        .status()
        .unwrap();
    assert!(killed.success(), "could not kill pid {pid}");
    let start = Instant::now();
    loop {
        let n = count();
        if n > before && kit::health("daon-api-1") == "healthy" {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "daon-api-1 was not restarted (count {n}, before {before})"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
    let next = run();
    assert_eq!(next.status.code(), Some(1), "{}", stdout(&next));
    let lines = json_lines(&next);
    let s = check(&lines, "containers")["summary"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(s.contains("daon-api-1") && s.contains("crash loop"), "{s}");
    // The run after that has nothing new to report.
    assert_eq!(run().status.code(), Some(0));
}

// ---------------------------------------------------------------- alerts

mod receivers {
    //! Real loopback receivers: an HTTP server whose status the test flips
    //! (the "service"), which also records every request (webhook, pings),
    //! and a real SMTP server (aiosmtpd) writing to a maildir.

    use std::path::Path;

    pub use daon_testkit::Recorder as Http;

    pub fn http() -> Http {
        Http::start()
    }

    pub use daon_testkit::{free_port, Smtp};

    /// aiosmtpd on `port`, writing to `dir`/maildir.
    pub fn smtp(port: u16, dir: &Path) -> Smtp {
        Smtp::on(port, dir)
    }
}

fn alert_config(dir: &Path, service: &str, extra: &str) -> std::path::PathBuf {
    write_config(
        dir,
        &format!(
            "[[health.http]]\nname = \"svc\"\nurl = \"{service}/health\"\ntimeout = \"2s\"\n\n{extra}\n"
        ),
    )
}

fn alert_run(cfg: &Path, state: &Path) -> std::process::Output {
    hc().args(["--check", "http", "--alert", "--config"])
        .arg(cfg)
        .env("DAON_PATHS_STATE_DIR", state)
        .output()
        .unwrap()
}

#[test]
fn alerts_twelve_cron_runs_down_for_3_to_8_send_one_alert_reminders_and_one_resolved() {
    use std::sync::atomic::Ordering;
    let dir = tempfile::tempdir().unwrap();
    let svc = receivers::http();
    let smtp = receivers::smtp(receivers::free_port(), dir.path());
    let cfg = alert_config(
        dir.path(),
        &svc.url,
        &format!(
            "[alerts]\nfailure_threshold = 2\nreminder_interval = \"2s\"\n\n[notify]\nemail_to = [\"ops@example.org\", \"oncall@example.org\"]\nemail_from = \"daon@example.org\"\nsmtp_host = \"127.0.0.1\"\nsmtp_port = {}\nsmtp_security = \"none\"\n",
            smtp.port
        ),
    );
    let state = dir.path().join("state");
    for run in 1..=12 {
        let down = (3..=8).contains(&run);
        svc.status
            .store(if down { 503 } else { 200 }, Ordering::SeqCst);
        let o = alert_run(&cfg, &state);
        assert_eq!(
            o.status.code(),
            Some(if down { 2 } else { 0 }),
            "run {run}: {}{}",
            stdout(&o),
            stderr(&o)
        );
        std::thread::sleep(Duration::from_millis(1200));
    }
    let subjects = smtp.subjects();
    // Alert at run 4 (2nd failure); reminders at runs 6 and 8 (every >= 2 s,
    // runs ~1.3 s apart); RESOLVED at run 9.
    let kinds: Vec<&str> = subjects
        .iter()
        .map(|s| {
            ["ALERT", "REMINDER", "RESOLVED", "FLAPPING"]
                .into_iter()
                .find(|k| s.contains(&format!("] {k}:")))
                .unwrap_or("?")
        })
        .collect();
    assert_eq!(
        kinds,
        ["ALERT", "REMINDER", "REMINDER", "RESOLVED"],
        "{subjects:#?}"
    );
    let bodies = smtp.bodies();
    assert!(
        bodies.contains("failing since") && bodies.contains("next: curl"),
        "{bodies}"
    );
    assert!(
        bodies.contains("To: ops@example.org, oncall@example.org"),
        "{bodies}"
    );
}

#[test]
fn alerts_a_flapping_check_sends_one_notice() {
    use std::sync::atomic::Ordering;
    let dir = tempfile::tempdir().unwrap();
    let svc = receivers::http();
    let smtp = receivers::smtp(receivers::free_port(), dir.path());
    let cfg = alert_config(
        dir.path(),
        &svc.url,
        &format!("[notify]\nemail_to = [\"ops@example.org\"]\nsmtp_host = \"127.0.0.1\"\nsmtp_port = {}\nsmtp_security = \"none\"\n", smtp.port),
    );
    let state = dir.path().join("state");
    for run in 0..12 {
        svc.status
            .store(if run % 2 == 1 { 503 } else { 200 }, Ordering::SeqCst);
        alert_run(&cfg, &state);
    }
    let subjects = smtp.subjects();
    assert_eq!(subjects.len(), 1, "{subjects:#?}");
    assert!(
        subjects[0].contains("FLAPPING") && subjects[0].contains("http:svc"),
        "{subjects:#?}"
    );
}

#[test]
fn alerts_over_starttls_and_implicit_tls_trust_the_configured_ca_and_nothing_else() {
    use std::sync::atomic::Ordering;
    for mode in ["starttls", "tls"] {
        let dir = tempfile::tempdir().unwrap();
        let svc = receivers::http();
        svc.status.store(503, Ordering::SeqCst);
        let (smtp, ca) = receivers::Smtp::with_tls(dir.path(), mode);
        let notify = |ca_line: &str| {
            format!(
                "[alerts]\nfailure_threshold = 1\n\n[notify]\nemail_to = [\"ops@example.org\"]\nemail_from = \"daon@example.org\"\nsmtp_host = \"127.0.0.1\"\nsmtp_port = {}\nsmtp_security = \"{mode}\"\n{ca_line}retries = 0\ntimeout = \"5s\"\n",
                smtp.port
            )
        };
        // Trusting the relay's CA: delivered over TLS.
        let cfg = alert_config(
            dir.path(),
            &svc.url,
            &notify(&format!("smtp_ca_file = \"{}\"\n", ca.display())),
        );
        let o = alert_run(&cfg, &dir.path().join("state1"));
        assert_eq!(o.status.code(), Some(2), "{mode}: {}", stderr(&o));
        assert!(
            stdout(&o).contains("sent by email"),
            "{mode}: {}\n{}",
            stdout(&o),
            stderr(&o)
        );
        assert_eq!(smtp.subjects().len(), 1, "{mode}: the TLS server got it");
        // Without it the certificate is not trusted: nothing is sent in clear, the alert waits.
        let sub = dir.path().join("untrusted");
        std::fs::create_dir_all(&sub).unwrap();
        let cfg = alert_config(&sub, &svc.url, &notify(""));
        let o = alert_run(&cfg, &dir.path().join("state2"));
        assert_eq!(
            o.status.code(),
            Some(2),
            "{mode}: the exit code is the check's"
        );
        assert!(
            stderr(&o).contains("not delivered")
                && stderr(&o).contains("notify.smtp_ca_file")
                && stdout(&o).contains("NOT delivered"),
            "{mode}: {}",
            stderr(&o)
        );
        assert_eq!(
            smtp.subjects().len(),
            1,
            "{mode}: an untrusted server got mail"
        );
    }
}

#[test]
fn alerts_smtp_auth_with_the_password_from_a_0600_file_and_it_is_never_printed() {
    use std::os::unix::fs::PermissionsExt;
    use std::sync::atomic::Ordering;
    const PW: &str = "smtp-Pa55-w0rd-9f3e";
    let dir = tempfile::tempdir().unwrap();
    let svc = receivers::http();
    svc.status.store(503, Ordering::SeqCst);
    let smtp = receivers::Smtp::with_auth(dir.path(), "daon-alerts", PW);
    let pw_file = dir.path().join("smtp-password");
    std::fs::write(&pw_file, format!("{PW}\n")).unwrap();
    std::fs::set_permissions(&pw_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let cfg = alert_config(
        dir.path(),
        &svc.url,
        &format!(
            "[alerts]\nfailure_threshold = 1\n\n[notify]\nemail_to = [\"ops@example.org\"]\nemail_from = \"daon@example.org\"\nsmtp_host = \"127.0.0.1\"\nsmtp_port = {}\nsmtp_security = \"none\"\nsmtp_user = \"daon-alerts\"\nsmtp_password_file = \"{}\"\nretries = 0\n",
            smtp.port,
            pw_file.display()
        ),
    );
    let mut seen = String::new();
    let mut keep = |o: &std::process::Output| {
        seen.push_str(&stdout(o));
        seen.push_str(&stderr(o));
    };
    // The right password (from the file): the server takes the alert.
    let o = alert_run(&cfg, &dir.path().join("state1"));
    keep(&o);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stdout(&o).contains("sent by email"), "{}", stdout(&o));
    assert_eq!(
        smtp.subjects().len(),
        1,
        "the authenticated server got the alert"
    );

    // A wrong password (DAON_SMTP_PASSWORD beats the file): refused, reported, kept.
    let o = hc()
        .args(["--check", "http", "--alert", "--config"])
        .arg(&cfg)
        .env("DAON_PATHS_STATE_DIR", dir.path().join("state2"))
        .env("DAON_SMTP_PASSWORD", "wrong-Pa55-1234")
        .output()
        .unwrap();
    keep(&o);
    assert_eq!(o.status.code(), Some(2), "the exit code is the check's");
    assert!(
        stderr(&o).contains("535") && stderr(&o).contains("not delivered"),
        "{}",
        stderr(&o)
    );
    let pending = std::fs::read_dir(dir.path().join("state2/notify-pending"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
        .collect::<String>();
    assert!(!pending.is_empty(), "the alert is kept for the next run");
    assert!(
        !pending.contains("wrong-Pa55") && !pending.contains(PW),
        "{pending}"
    );

    // A password file others can read is refused, naming the fix.
    std::fs::set_permissions(&pw_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let o = alert_run(&cfg, &dir.path().join("state3"));
    keep(&o);
    assert_eq!(o.status.code(), Some(2), "the exit code is the check's");
    assert!(stderr(&o).contains("chmod 600"), "{}", stderr(&o));
    assert_eq!(
        smtp.subjects().len(),
        1,
        "nothing sent with a readable password file"
    );

    let o = hc()
        .args(["--print-config", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    keep(&o);
    for secret in [PW, "wrong-Pa55-1234"] {
        assert!(
            !seen.contains(secret),
            "an SMTP password was printed:\n{seen}"
        );
        assert!(
            !smtp.bodies().contains(secret),
            "an SMTP password is in a mail"
        );
    }
}

#[test]
fn alerts_smtp_down_changes_nothing_and_the_next_run_delivers() {
    use std::sync::atomic::Ordering;
    let dir = tempfile::tempdir().unwrap();
    let svc = receivers::http();
    svc.status.store(503, Ordering::SeqCst);
    let port = receivers::free_port();
    let dead_hook = format!(
        "http://127.0.0.1:{}/hook/TOKEN-abc123",
        receivers::free_port()
    );
    let cfg = alert_config(
        dir.path(),
        &svc.url,
        &format!("[notify]\nemail_to = [\"ops@example.org\"]\nsmtp_host = \"127.0.0.1\"\nsmtp_port = {port}\nsmtp_security = \"none\"\nwebhook_url = \"{dead_hook}\"\nretries = 0\ntimeout = \"2s\"\n"),
    );
    let state = dir.path().join("state");
    let quiet = hc()
        .args(["--check", "http", "--no-state", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let first = alert_run(&cfg, &state);
    assert_eq!(first.status.code(), quiet.status.code());
    let second = alert_run(&cfg, &state); // 2nd failure: alert due, SMTP down
    assert_eq!(second.status.code(), Some(2), "{}", stdout(&second));
    assert!(stdout(&second).contains("http:svc") && stdout(&second).contains("CRITICAL"));
    assert!(
        stdout(&second).contains("NOT delivered"),
        "{}",
        stdout(&second)
    );
    let err = stderr(&second);
    assert!(err.contains("Email notification not delivered"), "{err}");
    for out in [stdout(&second), err.clone(), stdout(&first), stderr(&first)] {
        assert!(!out.contains("TOKEN-abc123"), "webhook token leaked: {out}");
    }
    // The SMTP server comes back: the next run delivers the kept alert.
    let smtp = receivers::smtp(port, dir.path());
    let third = alert_run(&cfg, &state);
    assert_eq!(third.status.code(), Some(2));
    assert!(
        stdout(&third).contains("re-sent 1 pending"),
        "{}",
        stdout(&third)
    );
    let subjects = smtp.subjects();
    assert_eq!(subjects.len(), 1, "{subjects:#?}");
    assert!(subjects[0].contains("ALERT"), "{subjects:#?}");
}

#[test]
fn alerts_webhook_and_dead_man_pings_arrive() {
    use std::sync::atomic::Ordering;
    let dir = tempfile::tempdir().unwrap();
    let svc = receivers::http();
    svc.status.store(503, Ordering::SeqCst);
    let recv = receivers::http();
    let cfg = alert_config(
        dir.path(),
        &svc.url,
        &format!(
            "[alerts]\nfailure_threshold = 1\n\n[notify]\nwebhook_url = \"{0}/hook/T0K3N\"\nping_url = \"{0}/ping/5d1b3c1e\"\n",
            recv.url
        ),
    );
    let o = alert_run(&cfg, &dir.path().join("state"));
    assert_eq!(o.status.code(), Some(2));
    let reqs = recv.requests.lock().unwrap().clone();
    let paths: Vec<&str> = reqs.iter().map(|(l, _)| l.as_str()).collect();
    assert_eq!(paths.len(), 3, "{paths:?}");
    assert!(
        paths[0].starts_with("POST /ping/5d1b3c1e/start?rid="),
        "{paths:?}"
    );
    let rid = paths[0].split("rid=").nth(1).unwrap();
    assert_eq!(paths[1], "POST /hook/T0K3N");
    assert_eq!(paths[2], format!("POST /ping/5d1b3c1e/2?rid={rid}"));
    let hook: Value = serde_json::from_str(&reqs[1].1).unwrap();
    assert!(hook["text"].as_str().unwrap().contains("ALERT"), "{hook}");
    assert_eq!(hook["event"], "alert");
    assert_eq!(hook["fields"]["events"][0]["check"], "http:svc");
    assert!(
        reqs[2].1.contains("HEALTH CRITICAL"),
        "ping body: {}",
        reqs[2].1
    );
}

#[test]
fn alerts_are_muted_in_a_maintenance_window_and_the_output_says_so() {
    use std::sync::atomic::Ordering;
    let dir = tempfile::tempdir().unwrap();
    let svc = receivers::http();
    svc.status.store(503, Ordering::SeqCst);
    let recv = receivers::http();
    let cfg = alert_config(
        dir.path(),
        &svc.url,
        &format!(
            "[alerts]\nfailure_threshold = 1\nmaintenance = [\"daily 00:00-12:00 UTC\", \"daily 12:00-00:00 UTC\"]\n\n[notify]\nwebhook_url = \"{}/hook\"\n",
            recv.url
        ),
    );
    let o = alert_run(&cfg, &dir.path().join("state"));
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stdout(&o).contains("ALERTS: muted by maintenance window"),
        "{}",
        stdout(&o)
    );
    assert!(recv.requests.lock().unwrap().is_empty());
}

// ---------------------------------------------------------------- pre-launch audit

struct TlsServer(std::process::Child, u16);

impl Drop for TlsServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A real TLS endpoint (`openssl s_server -www`) whose certificate expires in `days`.
fn tls_server(dir: &Path, days: u32) -> TlsServer {
    let (cert, key) = (
        dir.join(format!("cert{days}.pem")),
        dir.join(format!("key{days}.pem")),
    );
    let st = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=localhost",
            "-days",
            &days.to_string(),
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    let port = receivers::free_port();
    let mut child = std::process::Command::new("openssl")
        .args([
            "s_server",
            "-quiet",
            "-www",
            "-accept",
            &format!("127.0.0.1:{port}"),
            "-cert",
        ])
        .arg(&cert)
        .arg("-key")
        .arg(&key)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return TlsServer(child, port);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("openssl s_server did not start");
}

const UFW_CLEAN: &str = "Status: active\n\nTo                         Action      From\n--                         ------      ----\n22/tcp                     ALLOW       Anywhere\n80,443/tcp                 ALLOW       Anywhere\n22/tcp (v6)                ALLOW       Anywhere (v6)\n";

fn secret(n: u8) -> String {
    format!("s{n}-{}", "k3Yq9vT2mX7pL4wR8nB5cZ1dF6hJ0aE".repeat(2))
}

fn write_env(proj: &Path, jwt: &str, enc: &str, node_env: &str) {
    use std::os::unix::fs::PermissionsExt;
    let p = proj.join(".env");
    std::fs::write(
        &p,
        format!(
            "CHAIN_ID=daon-devnet-1\nNODE_ENV={node_env}\nJWT_SECRET={jwt}\nENCRYPTION_KEY={enc}\nAPI_KEY_SECRET={}\nPOSTGRES_PASSWORD={}\n",
            secret(3),
            secret(4)
        ),
    )
    .unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
}

#[test]
fn stack_pre_launch_audit_passes_clean_and_flags_each_seeded_problem() {
    use std::os::unix::fs::PermissionsExt;
    let Some(stack) = kit::stack("pre_launch_audit") else {
        return;
    };
    let _l = kit::lock();
    let dir = tempfile::tempdir().unwrap();
    let proj = dir.path().join("proj");
    for d in ["proj", "proj/secrets", "proj/logs", "proj/backups"] {
        std::fs::create_dir_all(dir.path().join(d)).unwrap();
    }
    std::fs::set_permissions(proj.join("secrets"), std::fs::Permissions::from_mode(0o700)).unwrap();
    write_env(&proj, &secret(1), &secret(2), "production");
    std::fs::write(
        proj.join("logs/api.log"),
        "GET /health 200\nuser login ok\n",
    )
    .unwrap();
    std::fs::write(proj.join("ufw.txt"), UFW_CLEAN).unwrap();
    let good_tls = tls_server(dir.path(), 90);
    // A real, verified backup set (config only: quick), made by daon-backup.
    let b = std::process::Command::new(kit::workspace_bin("daon-backup"))
        .args(["--only", "config", "--quiet", "--dest"])
        .arg(proj.join("backups"))
        .env("DAON_CONFIG", &stack.config)
        .env("DAON_PATHS_LOCK_DIR", dir.path().join("locks"))
        .output()
        .unwrap();
    assert!(
        b.status.success(),
        "daon-backup: {}",
        String::from_utf8_lossy(&b.stderr)
    );

    let audit = |tls_port: u16| {
        let o = hc()
            .args(["--suite", "pre-launch", "--json"])
            .env("DAON_CONFIG", &stack.config)
            .env("DAON_COMPOSE_PROJECT_DIR", &proj)
            .env("DAON_PATHS_SECRETS_DIR", proj.join("secrets"))
            .env("DAON_PATHS_BACKUP_DIR", proj.join("backups"))
            .env("DAON_AUDIT_LOG_DIRS", proj.join("logs"))
            .env("DAON_AUDIT_UFW_STATUS_FILE", proj.join("ufw.txt"))
            .env(
                "DAON_AUDIT_PUBLIC_URL",
                format!("https://localhost:{tls_port}/"),
            )
            .output()
            .unwrap();
        for n in 1..=4 {
            assert!(
                !stdout(&o).contains(&secret(n)) && !stderr(&o).contains(&secret(n)),
                "a secret value leaked"
            );
        }
        assert!(
            !stdout(&o).contains("changeme-please-rotate") && !stdout(&o).contains("short-one-123"),
            "a secret value leaked"
        );
        o
    };
    let failing = |o: &std::process::Output| -> Vec<(String, String)> {
        json_lines(o)
            .into_iter()
            .filter(|v| v["type"] == "check" && v["status"] != "ok")
            .map(|v| {
                (
                    v["name"].as_str().unwrap().to_string(),
                    v["summary"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };

    // Clean: everything passes.
    let o = audit(good_tls.1);
    assert_eq!(failing(&o), vec![], "{}", stdout(&o));
    assert_eq!(o.status.code(), Some(0));
    let lines = json_lines(&o);
    for name in [
        "audit:secrets",
        "audit:files",
        "audit:tls",
        "audit:firewall",
        "audit:logs",
        "audit:node-env",
        "audit:chain-id",
        "containers",
        "audit:backup",
    ] {
        check(&lines, name);
    }

    // Each seeded problem on its own.
    let one = |o: &std::process::Output, name: &str, needle: &str| {
        let f = failing(o);
        assert_eq!(f.len(), 1, "expected only {name} to fail: {f:?}");
        assert_eq!(f[0].0, name, "{f:?}");
        assert!(
            f[0].1.contains(needle),
            "{name}: {:?} lacks {needle:?}",
            f[0].1
        );
        assert_eq!(o.status.code(), Some(2));
    };
    write_env(&proj, "changeme-please-rotate", &secret(2), "production");
    one(
        &audit(good_tls.1),
        "audit:secrets",
        "JWT_SECRET has a default/placeholder value",
    );
    write_env(&proj, &secret(1), "short-one-123", "production");
    one(
        &audit(good_tls.1),
        "audit:secrets",
        "ENCRYPTION_KEY is shorter than 32",
    );
    write_env(&proj, &secret(1), &secret(1), "production");
    one(
        &audit(good_tls.1),
        "audit:secrets",
        "ENCRYPTION_KEY and JWT_SECRET have the same value",
    );
    write_env(&proj, &secret(1), &secret(2), "production");

    std::fs::set_permissions(proj.join(".env"), std::fs::Permissions::from_mode(0o644)).unwrap();
    one(&audit(good_tls.1), "audit:files", "must be 600");
    std::fs::set_permissions(proj.join(".env"), std::fs::Permissions::from_mode(0o600)).unwrap();

    let expiring = tls_server(dir.path(), 3);
    one(&audit(expiring.1), "audit:tls", "expires in");
    drop(expiring);

    std::fs::write(
        proj.join("ufw.txt"),
        format!("{UFW_CLEAN}3306/tcp                   ALLOW       Anywhere\n"),
    )
    .unwrap();
    one(&audit(good_tls.1), "audit:firewall", "3306/tcp is open");
    std::fs::write(proj.join("ufw.txt"), "Status: inactive\n").unwrap();
    one(&audit(good_tls.1), "audit:firewall", "inactive");
    std::fs::write(proj.join("ufw.txt"), UFW_CLEAN).unwrap();

    std::fs::write(
        proj.join("logs/api.log"),
        format!("GET /health 200\nDEBUG config jwt={}\n", secret(1)),
    )
    .unwrap();
    one(
        &audit(good_tls.1),
        "audit:logs",
        "contains the value of JWT_SECRET",
    );
    std::fs::write(proj.join("logs/api.log"), "ok\n").unwrap();

    write_env(&proj, &secret(1), &secret(2), "development");
    one(&audit(good_tls.1), "audit:node-env", "must be production");

    // The human table speaks PASS/WARN/FAIL.
    let o = hc()
        .args(["--suite", "pre-launch", "--check", "audit:node-env"])
        .env("DAON_CONFIG", &stack.config)
        .env("DAON_COMPOSE_PROJECT_DIR", &proj)
        .output()
        .unwrap();
    assert!(stdout(&o).contains("FAIL"), "{}", stdout(&o));
}
