//! The four ways results leave the tool: a table for people, JSON Lines for
//! programs, one Nagios/Icinga plugin line with perfdata, and a Prometheus
//! node_exporter textfile.

use crate::check::{CheckResult, Perf, Status};
use daon_common::output::{self, Color};
use std::io::{self, Write};
use std::time::Duration;

/// Worst status over all results (OK when there are none).
pub fn overall(results: &[CheckResult]) -> Status {
    results.iter().fold(Status::Ok, |s, r| s.worst(r.status))
}

fn counts(results: &[CheckResult]) -> [usize; 4] {
    let mut c = [0; 4];
    for r in results {
        c[r.status.code() as usize] += 1;
    }
    c
}

fn color_of(s: Status) -> Color {
    match s {
        Status::Ok => Color::Green,
        Status::Warning => Color::Yellow,
        Status::Critical => Color::Red,
        Status::Unknown => Color::Magenta,
    }
}

fn ms(d: Duration) -> String {
    let ms = d.as_millis();
    if ms >= 10_000 {
        format!("{:.1}s", d.as_secs_f64())
    } else {
        format!("{ms}ms")
    }
}

/// The human table, then a closing line.
pub fn table(out: &mut impl Write, results: &[CheckResult], color: bool) -> io::Result<()> {
    let width = results
        .iter()
        .map(|r| r.name.len())
        .max()
        .unwrap_or(5)
        .max(5);
    writeln!(
        out,
        "{:<width$}  {:<8}  {:>7}  DETAILS",
        "CHECK", "STATUS", "TIME"
    )?;
    // The audit speaks PASS/WARN/FAIL, as the runbook's checklist does.
    let audit = results.iter().any(|r| r.name.starts_with("audit:"));
    let say = |st: Status| -> &'static str {
        match (audit, st) {
            (true, Status::Ok) => "PASS",
            (true, Status::Warning) => "WARN",
            (true, Status::Critical) => "FAIL",
            _ => st.word(),
        }
    };
    for r in results {
        let word = format!("{:<8}", say(r.status));
        writeln!(
            out,
            "{:<width$}  {}  {:>7}  {}",
            r.name,
            output::paint(&word, color_of(r.status), color),
            ms(r.duration),
            r.summary
        )?;
    }
    let c = counts(results);
    let all = overall(results);
    writeln!(
        out,
        "HEALTH {}: {} critical, {} warning, {} unknown, {} ok",
        output::paint(all.word(), color_of(all), color),
        c[2],
        c[1],
        c[3],
        c[0]
    )
}

/// JSON Lines: one `check` record per result, then a `summary`.
pub fn json(
    out: &mut impl Write,
    results: &[CheckResult],
    elapsed: Duration,
    extra: Option<serde_json::Value>,
) -> io::Result<()> {
    for r in results {
        let mut v = serde_json::to_value(r).map_err(io::Error::other)?;
        if let serde_json::Value::Object(m) = &mut v {
            m.insert("code".into(), r.status.code().into());
        }
        output::json_line(out, "check", v)?;
    }
    let c = counts(results);
    let all = overall(results);
    let mut summary = serde_json::json!({
            "status": all,
            "code": all.code(),
            "checks": results.len(),
            "ok": c[0], "warning": c[1], "critical": c[2], "unknown": c[3],
            "duration_ms": elapsed.as_millis() as u64,
            "host": daon_common::lock::hostname(),
            "time": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
    });
    if let (Some(obj), Some(serde_json::Value::Object(more))) = (summary.as_object_mut(), extra) {
        obj.extend(more);
    }
    output::json_line(out, "summary", summary)
}

fn num(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        let s = format!("{v:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// One perfdata token: `'label'=value[uom];warn;crit;min;max`.
pub fn perf_token(p: &Perf) -> String {
    let label = p.label.replace('\'', "\"").replace('=', "_");
    // Nagios ranges: "N" alerts above N, "N:" alerts below N.
    let below = if p.alert_below { ":" } else { "" };
    let opt = |v: Option<f64>| v.map(num).unwrap_or_default();
    let thr = |v: Option<f64>| v.map(|v| format!("{}{below}", num(v))).unwrap_or_default();
    let mut s = format!(
        "'{label}'={}{};{};{};{};{}",
        num(p.value),
        p.uom,
        thr(p.warn),
        thr(p.crit),
        opt(p.min),
        opt(p.max)
    );
    while s.ends_with(';') {
        s.pop();
    }
    s
}

/// Nagios plugin output: a status line `HEALTH <STATE> - <summary> | perf`,
/// then one long-output line per check.
pub fn nagios(out: &mut impl Write, results: &[CheckResult]) -> io::Result<()> {
    let all = overall(results);
    let bad: Vec<String> = results
        .iter()
        .filter(|r| r.status != Status::Ok)
        .map(|r| format!("{}: {}", r.name, r.summary))
        .collect();
    let summary = if bad.is_empty() {
        format!("{} checks OK", results.len())
    } else {
        bad.join("; ")
    };
    // '|' separates perfdata: keep it out of the text.
    let summary = summary.replace('|', "/").replace('\n', " ");
    let perf: Vec<String> = results
        .iter()
        .flat_map(|r| r.perfdata.iter().map(perf_token))
        .collect();
    writeln!(
        out,
        "HEALTH {} - {} | {}",
        all.word(),
        summary,
        perf.join(" ")
    )?;
    for r in results {
        writeln!(
            out,
            "[{}] {}: {}",
            r.status.word(),
            r.name,
            r.summary.replace('|', "/")
        )?;
    }
    Ok(())
}

fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// node_exporter textfile-collector content (no timestamps; staleness comes
/// from the file's mtime).
pub fn prometheus(results: &[CheckResult], elapsed: Duration) -> String {
    let mut s = String::new();
    let mut metric = |name: &str, help: &str, rows: Vec<(String, f64)>| {
        s.push_str(&format!("# HELP {name} {help}\n# TYPE {name} gauge\n"));
        for (labels, v) in rows {
            s.push_str(&format!("{name}{labels} {v}\n"));
        }
    };
    let all = overall(results);
    metric(
        "daon_health_status",
        "Overall health: 0 ok, 1 warning, 2 critical, 3 unknown.",
        vec![(String::new(), all.code() as f64)],
    );
    metric(
        "daon_health_check_status",
        "Status of one check: 0 ok, 1 warning, 2 critical, 3 unknown.",
        results
            .iter()
            .map(|r| {
                (
                    format!("{{check=\"{}\"}}", escape_label(&r.name)),
                    r.status.code() as f64,
                )
            })
            .collect(),
    );
    metric(
        "daon_health_check_duration_seconds",
        "Wall time of one check.",
        results
            .iter()
            .map(|r| {
                (
                    format!("{{check=\"{}\"}}", escape_label(&r.name)),
                    r.duration.as_secs_f64(),
                )
            })
            .collect(),
    );
    metric(
        "daon_health_check_value",
        "Perfdata values reported by the checks (unit in the uom label).",
        results
            .iter()
            .flat_map(|r| {
                r.perfdata.iter().map(move |p| {
                    (
                        format!(
                            "{{check=\"{}\",metric=\"{}\",uom=\"{}\"}}",
                            escape_label(&r.name),
                            escape_label(&p.label),
                            p.uom
                        ),
                        p.value,
                    )
                })
            })
            .collect(),
    );
    metric(
        "daon_health_run_duration_seconds",
        "Wall time of the whole run.",
        vec![(String::new(), elapsed.as_secs_f64())],
    );
    metric(
        "daon_health_last_run_timestamp_seconds",
        "Unix time the run finished.",
        vec![(String::new(), chrono::Utc::now().timestamp() as f64)],
    );
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::CheckResult;

    fn sample() -> Vec<CheckResult> {
        vec![
            CheckResult::single("disk", Status::Ok, "/ 13% used").with_perf(vec![Perf::new(
                "/", 13.2, "%",
            )
            .thresholds(Some(80.0), Some(90.0))
            .bounds(Some(0.0), Some(100.0))]),
            CheckResult::single(
                "containers",
                Status::Critical,
                "daon-api-2 is exited (exit code 137) | x",
            ),
        ]
    }

    #[test]
    fn nagios_line_has_state_summary_and_perfdata() {
        let mut buf = Vec::new();
        nagios(&mut buf, &sample()).unwrap();
        let s = String::from_utf8(buf).unwrap();
        let first = s.lines().next().unwrap();
        assert_eq!(
            first,
            "HEALTH CRITICAL - containers: daon-api-2 is exited (exit code 137) / x | '/'=13.2%;80;90;0;100"
        );
    }

    #[test]
    fn minimum_thresholds_use_the_nagios_lower_bound_range() {
        let p = Perf::new("cert_days", 12.5, "").minimums(Some(30.0), Some(7.0));
        assert_eq!(perf_token(&p), "'cert_days'=12.5;30:;7:");
    }

    #[test]
    fn perf_token_trims_empty_trailing_fields() {
        assert_eq!(
            perf_token(&Perf::new("chain_height", 42.0, "c")),
            "'chain_height'=42c"
        );
    }

    #[test]
    fn json_lines_parse_and_end_with_summary() {
        let mut buf = Vec::new();
        json(&mut buf, &sample(), Duration::from_millis(5), None).unwrap();
        let lines: Vec<serde_json::Value> = String::from_utf8(buf)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[1]["type"], "check");
        assert_eq!(lines[1]["status"], "critical");
        assert_eq!(lines[1]["code"], 2);
        assert_eq!(lines[2]["type"], "summary");
        assert_eq!(lines[2]["code"], 2);
    }

    #[test]
    fn prometheus_escapes_labels() {
        let r = vec![CheckResult::single("http:a\"b", Status::Ok, "x")];
        let s = prometheus(&r, Duration::ZERO);
        assert!(s.contains("check=\"http:a\\\"b\""), "{s}");
        assert!(s.contains("# TYPE daon_health_status gauge"));
    }
}
