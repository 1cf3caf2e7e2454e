//! Chain check: the node answers, is not catching up, is on the expected
//! chain, its newest block is recent, its height moved since the previous
//! run, and it has enough peers. Status comes from the CometBFT RPC or from
//! `daond status` inside the container (older SDKs print that on stderr with
//! PascalCase `NodeInfo`/`SyncInfo`; both forms are accepted).

use crate::check::{CheckResult, Item, Perf, Status};
use crate::state::{ChainState, State};
use chrono::{DateTime, Utc};
use daon_common::config::{ChainConfig, ChainSource};
use daon_common::docker::Docker;
use daon_common::http::{self, AgentOptions};
use daon_common::Error;
use serde_json::Value;
use std::sync::{Arc, Mutex};

/// The fields we judge, from either source.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeStatus {
    /// Chain id (`node_info.network`).
    pub network: String,
    /// Latest block height.
    pub height: u64,
    /// Latest block time.
    pub block_time: DateTime<Utc>,
    /// Still syncing.
    pub catching_up: bool,
}

/// Parses a status document: the RPC envelope (`{"result": {...}}`), the bare
/// result, or `daond status` output in snake_case or PascalCase.
pub fn parse_status(text: &str) -> Result<NodeStatus, String> {
    let v: Value = serde_json::from_str(text.trim())
        .map_err(|e| format!("status is not JSON ({e}): {}", snippet(text)))?;
    let root = v.get("result").unwrap_or(&v);
    let pick = |a: &str, b: &str| root.get(a).or_else(|| root.get(b));
    let node = pick("node_info", "NodeInfo").ok_or("status has no node_info")?;
    let sync = pick("sync_info", "SyncInfo").ok_or("status has no sync_info")?;
    let network = node
        .get("network")
        .and_then(Value::as_str)
        .ok_or("node_info has no network")?
        .to_string();
    let height = num(sync.get("latest_block_height"))
        .ok_or("sync_info.latest_block_height is missing or not a number")?;
    let time_s = sync
        .get("latest_block_time")
        .and_then(Value::as_str)
        .ok_or("sync_info.latest_block_time is missing")?;
    let block_time = DateTime::parse_from_rfc3339(time_s)
        .map_err(|e| format!("latest_block_time {time_s:?} is not RFC 3339: {e}"))?
        .with_timezone(&Utc);
    let catching_up = sync
        .get("catching_up")
        .and_then(Value::as_bool)
        .ok_or("sync_info.catching_up is missing")?;
    Ok(NodeStatus {
        network,
        height,
        block_time,
        catching_up,
    })
}

/// A number that CometBFT may encode as a string (`"1262196"`).
fn num(v: Option<&Value>) -> Option<u64> {
    match v? {
        Value::String(s) => s.trim().parse().ok(),
        Value::Number(n) => n.as_u64(),
        _ => None,
    }
}

fn snippet(t: &str) -> String {
    t.trim().chars().take(120).collect()
}

/// Where the status came from.
enum Got {
    Rpc(NodeStatus),
    Exec(NodeStatus, String),
}

fn via_rpc(cfg: &ChainConfig, agent: &ureq::Agent) -> Result<NodeStatus, Error> {
    let url = format!("{}/status", cfg.rpc_url.trim_end_matches('/'));
    let r = http::get(agent, &url)?;
    if r.status != 200 {
        return Err(Error::HttpProtocol {
            url,
            detail: format!("HTTP {}", r.status),
        });
    }
    parse_status(&r.body).map_err(|detail| Error::HttpProtocol { url, detail })
}

fn via_exec(cfg: &ChainConfig, docker: &Docker) -> Result<NodeStatus, String> {
    let cmd = docker
        .exec(&cfg.container, &cfg.status_command)
        .timeout(cfg.timeout);
    let out = cmd.run().map_err(|e| docker.classify(e).to_string())?;
    // Older SDKs print status on stderr.
    let text = if out.stdout.iter().any(|b| !b.is_ascii_whitespace()) {
        out.stdout_str()
    } else {
        out.stderr_str()
    };
    parse_status(&text).map_err(|e| {
        format!(
            "`{}` in {}: {e}",
            cfg.status_command.join(" "),
            cfg.container
        )
    })
}

/// Runs the chain check. `expected` is the chain id to insist on (config, or
/// the compose `.env`'s CHAIN_ID); empty means not checked.
pub fn run(
    cfg: &ChainConfig,
    expected: &str,
    docker: &Docker,
    state: &Arc<Mutex<State>>,
) -> CheckResult {
    let agent = match http::agent(AgentOptions {
        timeout: cfg.timeout,
        connect_timeout: cfg.timeout,
        insecure: false,
    }) {
        Ok(a) => a,
        Err(e) => return CheckResult::single("chain", Status::Unknown, e.to_string()),
    };
    let mut items = Vec::new();
    let got = match cfg.source {
        ChainSource::Rpc => via_rpc(cfg, &agent)
            .map(Got::Rpc)
            .map_err(|e| e.to_string()),
        ChainSource::Exec => via_exec(cfg, docker).map(|s| Got::Exec(s, String::new())),
        ChainSource::Auto => match via_rpc(cfg, &agent) {
            Ok(s) => Ok(Got::Rpc(s)),
            Err(rpc_err) => match via_exec(cfg, docker) {
                Ok(s) => Ok(Got::Exec(s, rpc_err.to_string())),
                Err(exec_err) => Err(format!("{rpc_err}; and {exec_err}")),
            },
        },
    };
    let (status, via_rpc_ok) = match got {
        Err(e) => {
            return CheckResult::single(
                "chain",
                Status::Critical,
                format!("chain status unavailable: {e}"),
            )
        }
        Ok(Got::Rpc(s)) => (s, true),
        Ok(Got::Exec(s, rpc_err)) => {
            if !rpc_err.is_empty() {
                items.push(Item {
                    name: "rpc".into(),
                    status: Status::Warning,
                    message: format!(
                        "RPC unreachable, status read with `{}`: {rpc_err}",
                        cfg.status_command.join(" ")
                    ),
                });
            }
            (s, false)
        }
    };
    let now = Utc::now();
    let mut perf = vec![Perf::new("chain_height", status.height as f64, "c")];

    // Chain id.
    if !expected.is_empty() && status.network != expected {
        items.push(Item {
            name: "network".into(),
            status: Status::Critical,
            message: format!(
                "node is on chain {:?}, expected {expected:?}",
                status.network
            ),
        });
    }
    // Syncing.
    if status.catching_up {
        items.push(Item {
            name: "catching_up".into(),
            status: Status::Warning,
            message: format!("node is catching up (syncing) at height {}", status.height),
        });
    }
    // Block age.
    let age = (now - status.block_time).num_milliseconds().max(0) as f64 / 1000.0;
    let max_age = cfg.max_block_age.as_secs_f64();
    perf.push(
        Perf::new("chain_block_age", (age * 10.0).round() / 10.0, "s")
            .thresholds(None, Some(max_age)),
    );
    if age > max_age {
        items.push(Item {
            name: "block_age".into(),
            status: Status::Critical,
            message: format!(
                "newest block {} is {:.0} s old (limit {})",
                status.height,
                age,
                humantime::format_duration(cfg.max_block_age)
            ),
        });
    }
    // Progress since the previous run.
    if let Ok(mut st) = state.lock() {
        let prev = st.chain.clone().filter(|p| p.network == status.network);
        let since = match prev {
            Some(p) if p.height == status.height => {
                let stuck = now - p.since;
                if stuck.to_std().unwrap_or_default() >= cfg.stall_after {
                    items.push(Item {
                        name: "progress".into(),
                        status: Status::Critical,
                        message: format!(
                            "height stuck at {} since {} ({} s): the chain is stalled",
                            status.height,
                            p.since.format("%Y-%m-%d %H:%M:%S UTC"),
                            stuck.num_seconds()
                        ),
                    });
                }
                p.since
            }
            Some(p) if p.height > status.height => {
                items.push(Item {
                    name: "progress".into(),
                    status: Status::Warning,
                    message: format!(
                        "height went back from {} to {} (chain reset or restore?)",
                        p.height, status.height
                    ),
                });
                now
            }
            _ => now,
        };
        st.chain = Some(ChainState {
            network: status.network.clone(),
            height: status.height,
            since,
        });
    }
    // Peers (RPC only).
    if via_rpc_ok {
        let url = format!("{}/net_info", cfg.rpc_url.trim_end_matches('/'));
        match http::get_json(&agent, &url) {
            Ok(v) => {
                let peers = num(v.get("result").unwrap_or(&v).get("n_peers"));
                match peers {
                    Some(n) => {
                        perf.push(
                            Perf::new("chain_peers", n as f64, "")
                                .thresholds(None, Some(cfg.min_peers as f64)),
                        );
                        if n < cfg.min_peers {
                            items.push(Item {
                                name: "peers".into(),
                                status: Status::Critical,
                                message: format!("{n} peers, at least {} required", cfg.min_peers),
                            });
                        }
                    }
                    None if cfg.min_peers > 0 => items.push(Item {
                        name: "peers".into(),
                        status: Status::Warning,
                        message: "net_info has no n_peers".into(),
                    }),
                    None => {}
                }
            }
            Err(e) if cfg.min_peers > 0 => items.push(Item {
                name: "peers".into(),
                status: Status::Warning,
                message: format!("peer count unknown: {e}"),
            }),
            Err(_) => {}
        }
    } else if cfg.min_peers > 0 {
        items.push(Item {
            name: "peers".into(),
            status: Status::Warning,
            message: "peer count unknown without the RPC".into(),
        });
    }
    let ok = format!(
        "{} height {}, newest block {:.1} s old{}",
        status.network,
        status.height,
        age,
        if expected.is_empty() {
            " (chain id not checked)"
        } else {
            ""
        }
    );
    CheckResult::from_items("chain", items, ok).with_perf(perf)
}

#[cfg(test)]
mod tests {
    use super::*;

    const RPC: &str = r#"{"jsonrpc":"2.0","id":-1,"result":{"node_info":{"network":"daon-mainnet-1"},
        "sync_info":{"latest_block_height":"1262196","latest_block_time":"2026-12-01T13:24:38.123456789Z","catching_up":false}}}"#;

    #[test]
    fn parses_the_rpc_envelope_with_string_height_and_nanoseconds() {
        let s = parse_status(RPC).unwrap();
        assert_eq!(s.network, "daon-mainnet-1");
        assert_eq!(s.height, 1_262_196);
        assert!(!s.catching_up);
        assert_eq!(s.block_time.timestamp_subsec_nanos(), 123_456_789);
    }

    #[test]
    fn parses_daond_status_in_both_sdk_forms() {
        let modern = r#"{"node_info":{"network":"daon-test-1"},"sync_info":{"latest_block_height":"5","latest_block_time":"2026-01-01T00:00:00Z","catching_up":true},"validator_info":{}}"#;
        let legacy = r#"{"NodeInfo":{"network":"daon-test-1"},"SyncInfo":{"latest_block_height":"5","latest_block_time":"2026-01-01T00:00:00Z","catching_up":true},"ValidatorInfo":{}}"#;
        let a = parse_status(modern).unwrap();
        let b = parse_status(legacy).unwrap();
        assert_eq!(a, b);
        assert!(a.catching_up);
    }

    #[test]
    fn malformed_status_says_what_is_missing() {
        assert!(parse_status("Error: connection refused")
            .unwrap_err()
            .contains("not JSON"));
        let e = parse_status(r#"{"result":{"node_info":{"network":"x"},"sync_info":{"latest_block_height":"abc","latest_block_time":"2026-01-01T00:00:00Z","catching_up":false}}}"#).unwrap_err();
        assert!(e.contains("latest_block_height"), "{e}");
    }
}
