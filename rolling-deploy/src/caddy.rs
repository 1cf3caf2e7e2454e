//! Draining an instance through Caddy's admin API, so it gets no new request
//! and its in-flight ones finish before it is replaced.
//!
//! The mechanism (tried under load on the test stack): load a copy of the
//! running config in which every `reverse_proxy` handler lists the instance no
//! more, plus a private server (`127.0.0.1:0`, a route that never matches)
//! whose handler still names it. That reference keeps the instance's upstream
//! entry alive in Caddy's global pool, so `GET /reverse_proxy/upstreams` goes
//! on counting the requests that the old config is still serving; when it
//! reads 0 the instance is drained. Restoring is loading the original config.

use daon_common::http::{self, AgentOptions};
use daon_common::Error;
use serde_json::Value;
use std::time::{Duration, Instant};

/// Name of the private server that keeps a drained upstream counted.
pub const HOLD_SERVER: &str = "daon_ops_drain_hold";

/// Caddy's admin API.
pub struct Caddy {
    admin: String,
    agent: ureq::Agent,
}

/// Result of a drain.
#[derive(Debug, Clone)]
pub struct Drained {
    /// Requests still in flight when the drain began.
    pub in_flight_at_start: u64,
    /// Time until none was left.
    pub took: Duration,
    /// False when the drain timeout ran out with requests still in flight.
    pub complete: bool,
}

impl Caddy {
    /// A client for the admin API at `admin` (e.g. `http://127.0.0.1:2019`).
    pub fn new(admin: &str) -> Result<Caddy, Error> {
        Ok(Caddy {
            admin: admin.trim_end_matches('/').to_string(),
            agent: http::agent(AgentOptions {
                timeout: Duration::from_secs(10),
                connect_timeout: Duration::from_secs(3),
                insecure: false,
            })?,
        })
    }

    /// The running config.
    ///
    /// Caddy sends it chunked with an `ETag` trailer, which ureq's chunk
    /// decoder rejects after the last chunk: the body read up to that point is
    /// complete, and is accepted when it parses as JSON.
    pub fn config(&self) -> Result<Value, Error> {
        use std::io::Read;
        let url = format!("{}/config/", self.admin);
        let resp = match self.agent.get(&url).call() {
            Ok(r) => r,
            Err(ureq::Error::Status(code, _)) => {
                return Err(Error::HttpProtocol {
                    url,
                    detail: format!("HTTP {code}"),
                })
            }
            Err(ureq::Error::Transport(t)) => {
                return Err(Error::HttpUnreachable {
                    url,
                    detail: t.to_string(),
                })
            }
        };
        let mut buf = Vec::new();
        let read = resp
            .into_reader()
            .take(http::MAX_BODY)
            .read_to_end(&mut buf);
        serde_json::from_slice(&buf).map_err(|e| Error::HttpProtocol {
            url,
            detail: match read {
                Err(r) => format!("reading the body: {r}"),
                Ok(_) => format!("body is not JSON ({e})"),
            },
        })
    }

    /// Replaces the running config (Caddy reloads gracefully).
    pub fn load(&self, cfg: &Value) -> Result<(), Error> {
        let url = format!("{}/load", self.admin);
        match self
            .agent
            .post(&url)
            .set("Content-Type", "application/json")
            .send_string(&cfg.to_string())
        {
            Ok(_) => Ok(()),
            Err(ureq::Error::Status(code, r)) => Err(Error::HttpProtocol {
                url,
                detail: format!(
                    "HTTP {code}: {}",
                    r.into_string()
                        .unwrap_or_default()
                        .chars()
                        .take(300)
                        .collect::<String>()
                ),
            }),
            Err(ureq::Error::Transport(t)) => Err(Error::HttpUnreachable {
                url,
                detail: t.to_string(),
            }),
        }
    }

    /// In-flight requests per upstream address.
    pub fn upstreams(&self) -> Result<Vec<(String, u64)>, Error> {
        let v = http::get_json(
            &self.agent,
            &format!("{}/reverse_proxy/upstreams", self.admin),
        )?;
        Ok(v.as_array()
            .map(|a| {
                a.iter()
                    .map(|u| {
                        (
                            u["address"].as_str().unwrap_or_default().to_string(),
                            u["num_requests"].as_u64().unwrap_or(0),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Stops new requests to `addr` and waits (up to `timeout`) until the
    /// ones in flight have finished. `base` is the config to drain from.
    pub fn drain(&self, base: &Value, addr: &str, timeout: Duration) -> Result<Drained, Error> {
        let start = Instant::now();
        let drained = without_upstream(base, addr);
        self.load(&drained)?;
        let mut first = None;
        loop {
            let n = self
                .upstreams()?
                .into_iter()
                .find(|(a, _)| a == addr)
                .map(|(_, n)| n)
                .unwrap_or(0);
            first.get_or_insert(n);
            if n == 0 || start.elapsed() >= timeout {
                return Ok(Drained {
                    in_flight_at_start: first.unwrap_or(0),
                    took: start.elapsed(),
                    complete: n == 0,
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Every `reverse_proxy` handler's dial addresses in `cfg`.
pub fn upstream_dials(cfg: &Value) -> Vec<String> {
    let mut out = Vec::new();
    walk(cfg, &mut |o| {
        if o.get("handler").and_then(Value::as_str) == Some("reverse_proxy") {
            for u in o
                .get("upstreams")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(d) = u.get("dial").and_then(Value::as_str) {
                    out.push(d.to_string());
                }
            }
        }
    });
    out
}

fn walk(v: &Value, f: &mut impl FnMut(&serde_json::Map<String, Value>)) {
    match v {
        Value::Object(o) => {
            f(o);
            for c in o.values() {
                walk(c, f);
            }
        }
        Value::Array(a) => a.iter().for_each(|c| walk(c, f)),
        _ => {}
    }
}

fn strip(v: &mut Value, addr: &str) {
    match v {
        Value::Object(o) => {
            if o.get("handler").and_then(Value::as_str) == Some("reverse_proxy") {
                if let Some(Value::Array(ups)) = o.get_mut("upstreams") {
                    ups.retain(|u| u.get("dial").and_then(Value::as_str) != Some(addr));
                }
            }
            for c in o.values_mut() {
                strip(c, addr);
            }
        }
        Value::Array(a) => a.iter_mut().for_each(|c| strip(c, addr)),
        _ => {}
    }
}

/// True when `cfg` carries our hold server (a drain that was not undone).
pub fn has_hold_server(cfg: &Value) -> bool {
    cfg.pointer(&format!("/apps/http/servers/{HOLD_SERVER}"))
        .is_some()
}

/// `base` with `addr` removed from every `reverse_proxy` and kept counted by
/// the private hold server.
pub fn without_upstream(base: &Value, addr: &str) -> Value {
    let mut cfg = base.clone();
    strip(&mut cfg, addr);
    if let Some(servers) = cfg
        .pointer_mut("/apps/http/servers")
        .and_then(Value::as_object_mut)
    {
        servers.insert(
            HOLD_SERVER.to_string(),
            serde_json::json!({
                "listen": ["127.0.0.1:0"],
                "automatic_https": {"disable": true},
                "routes": [{
                    "match": [{"path": ["/daon-ops-drain-hold-never-matches"]}],
                    "handle": [{"handler": "reverse_proxy", "upstreams": [{"dial": addr}]}]
                }]
            }),
        );
    }
    cfg
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Value {
        serde_json::json!({"apps": {"http": {"servers": {
            "srv0": {"routes": [{"handle": [{"handler": "subroute", "routes": [{"handle": [
                {"handler": "reverse_proxy", "upstreams": [{"dial": "a:3000"}, {"dial": "b:3000"}]}]}]}]}]},
            "srv1": {"routes": [{"handle": [
                {"handler": "reverse_proxy", "upstreams": [{"dial": "a:3000"}, {"dial": "b:3000"}]}]}]}
        }}}})
    }

    #[test]
    fn drained_config_routes_to_the_others_only_and_holds_the_drained_one() {
        let base = sample();
        assert_eq!(upstream_dials(&base).len(), 4);
        let d = without_upstream(&base, "a:3000");
        assert!(has_hold_server(&d));
        assert!(!has_hold_server(&base));
        let dials = upstream_dials(&d);
        // b twice (srv0, srv1), a only in the hold server.
        assert_eq!(dials.iter().filter(|x| *x == "b:3000").count(), 2);
        assert_eq!(dials.iter().filter(|x| *x == "a:3000").count(), 1);
        let routed = upstream_dials(&d["apps"]["http"]["servers"]["srv1"]);
        assert_eq!(routed, vec!["b:3000".to_string()]);
    }
}
