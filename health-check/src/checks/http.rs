//! HTTP endpoint check: status code, latency limits, an optional JSON value,
//! and for https the certificate's days left.

use crate::check::{CheckResult, Item, Perf, Status};
use daon_common::config::HttpCheckConfig;
use daon_common::http::{self, AgentOptions};

/// Runs one HTTP check.
pub fn run(cfg: &HttpCheckConfig) -> CheckResult {
    let name = format!("http:{}", cfg.name);
    let agent = match http::agent(AgentOptions {
        timeout: cfg.timeout,
        connect_timeout: cfg.timeout,
        insecure: cfg.insecure,
    }) {
        Ok(a) => a,
        Err(e) => return CheckResult::single(&name, Status::Unknown, e.to_string()),
    };
    let mut items = Vec::new();
    let mut perf = Vec::new();
    let secs = |d: Option<std::time::Duration>| d.map(|d| d.as_secs_f64());
    match http::get(&agent, &cfg.url) {
        Err(e) => items.push(Item {
            name: cfg.url.clone(),
            status: Status::Critical,
            message: e.to_string(),
        }),
        Ok(resp) => {
            let ms = resp.elapsed.as_millis();
            perf.push(
                Perf::new(format!("{name}_time"), resp.elapsed.as_secs_f64(), "s")
                    .thresholds(secs(cfg.warn_latency), secs(cfg.crit_latency))
                    .bounds(Some(0.0), None),
            );
            if cfg.expect_status.contains(&resp.status) {
                items.push(Item {
                    name: "status".into(),
                    status: Status::Ok,
                    message: format!("HTTP {} in {ms} ms", resp.status),
                });
            } else {
                let snippet: String = resp.body.trim().chars().take(120).collect();
                items.push(Item {
                    name: "status".into(),
                    status: Status::Critical,
                    message: format!(
                        "{} answered HTTP {} (expected {}){}",
                        cfg.url,
                        resp.status,
                        list(&cfg.expect_status),
                        if snippet.is_empty() {
                            String::new()
                        } else {
                            format!(": {snippet}")
                        }
                    ),
                });
            }
            let latency = if cfg.crit_latency.is_some_and(|c| resp.elapsed > c) {
                Status::Critical
            } else if cfg.warn_latency.is_some_and(|w| resp.elapsed > w) {
                Status::Warning
            } else {
                Status::Ok
            };
            if latency != Status::Ok {
                items.push(Item {
                    name: "latency".into(),
                    status: latency,
                    message: format!(
                        "{} took {ms} ms (limit {})",
                        cfg.url,
                        limit_text(cfg, latency)
                    ),
                });
            }
            if !cfg.json_pointer.is_empty() {
                items.push(json_item(cfg, &resp.body));
            }
        }
    }
    if let Some(host_port) = https_host_port(&cfg.url) {
        items.push(cert_item(cfg, &host_port, &name, &mut perf));
    }
    let ok = items
        .iter()
        .map(|i| i.message.clone())
        .collect::<Vec<_>>()
        .join(", ");
    CheckResult::from_items(&name, items, ok).with_perf(perf)
}

fn list(codes: &[u16]) -> String {
    codes
        .iter()
        .map(u16::to_string)
        .collect::<Vec<_>>()
        .join(" or ")
}

fn limit_text(cfg: &HttpCheckConfig, s: Status) -> String {
    let d = if s == Status::Critical {
        cfg.crit_latency
    } else {
        cfg.warn_latency
    };
    d.map(|d| humantime::format_duration(d).to_string())
        .unwrap_or_default()
}

fn json_item(cfg: &HttpCheckConfig, body: &str) -> Item {
    let (status, message) = match serde_json::from_str::<serde_json::Value>(body) {
        Err(e) => (
            Status::Critical,
            format!("{} body is not JSON ({e})", cfg.url),
        ),
        Ok(v) => match v.pointer(&cfg.json_pointer) {
            None => (
                Status::Critical,
                format!("{} body has no {}", cfg.url, cfg.json_pointer),
            ),
            Some(found) => {
                let text = match found {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                if cfg.json_equals.is_empty() || text == cfg.json_equals {
                    (Status::Ok, format!("{} = {text}", cfg.json_pointer))
                } else {
                    (
                        Status::Critical,
                        format!(
                            "{} {} is {text:?}, expected {:?}",
                            cfg.url, cfg.json_pointer, cfg.json_equals
                        ),
                    )
                }
            }
        },
    };
    Item {
        name: "json".into(),
        status,
        message,
    }
}

/// `https://host[:port]/...` → (host, port).
fn https_host_port(url: &str) -> Option<(String, u16)> {
    let rest = url.strip_prefix("https://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit('@').next()?;
    if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6.split_once(']')?;
        let port = after
            .strip_prefix(':')
            .and_then(|p| p.parse().ok())
            .unwrap_or(443);
        return Some((host.to_string(), port));
    }
    match authority.rsplit_once(':') {
        Some((h, p)) => Some((h.to_string(), p.parse().ok()?)),
        None => Some((authority.to_string(), 443)),
    }
}

fn cert_item(
    cfg: &HttpCheckConfig,
    (host, port): &(String, u16),
    name: &str,
    perf: &mut Vec<Perf>,
) -> Item {
    match daon_common::tls::certificate_not_after(host, *port, cfg.timeout) {
        Err(e) => Item {
            name: "certificate".into(),
            status: Status::Critical,
            message: format!("cannot read the certificate of {host}:{port}: {e}"),
        },
        Ok(not_after) => {
            let left = not_after - chrono::Utc::now();
            let days = left.num_seconds() as f64 / 86_400.0;
            perf.push(
                Perf::new(
                    format!("{name}_cert_days"),
                    (days * 10.0).round() / 10.0,
                    "",
                )
                .thresholds(
                    Some(cfg.cert_warn_days as f64),
                    Some(cfg.cert_crit_days as f64),
                ),
            );
            let status = if days < cfg.cert_crit_days as f64 {
                Status::Critical
            } else if days < cfg.cert_warn_days as f64 {
                Status::Warning
            } else {
                Status::Ok
            };
            let when = not_after.format("%Y-%m-%d %H:%M UTC");
            let message = if days < 0.0 {
                format!("certificate of {host} expired on {when}")
            } else {
                format!("certificate of {host} expires in {days:.1} days ({when})")
            };
            Item {
                name: "certificate".into(),
                status,
                message,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_authority_parsing() {
        assert_eq!(https_host_port("http://x/"), None);
        assert_eq!(
            https_host_port("https://api.daon.network/health"),
            Some(("api.daon.network".into(), 443))
        );
        assert_eq!(
            https_host_port("https://localhost:18443/h?x=1"),
            Some(("localhost".into(), 18443))
        );
        assert_eq!(
            https_host_port("https://[::1]:8443/"),
            Some(("::1".into(), 8443))
        );
    }

    #[test]
    fn json_condition() {
        let cfg = HttpCheckConfig {
            name: "api".into(),
            url: "http://x/health".into(),
            json_pointer: "/status".into(),
            json_equals: "ok".into(),
            ..HttpCheckConfig::default()
        };
        assert_eq!(json_item(&cfg, r#"{"status":"ok"}"#).status, Status::Ok);
        let bad = json_item(&cfg, r#"{"status":"degraded"}"#);
        assert_eq!(bad.status, Status::Critical);
        assert!(bad.message.contains("degraded"));
        assert_eq!(json_item(&cfg, "<html>").status, Status::Critical);
        assert_eq!(json_item(&cfg, "{}").status, Status::Critical);
    }
}
