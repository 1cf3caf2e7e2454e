//! One configured HTTP agent with explicit timeouts, and a GET that treats a
//! non-2xx status as data (the caller decides) while transport failures map to
//! "unreachable" (exit 69).

use crate::error::{Error, Result};
use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Most we read of a body: health endpoints are small; a huge one is a bug.
pub const MAX_BODY: u64 = 1024 * 1024;

/// Options for building an agent.
#[derive(Debug, Clone, Copy)]
pub struct AgentOptions {
    /// Whole-request deadline (connect, send, answer).
    pub timeout: Duration,
    /// TCP connect deadline.
    pub connect_timeout: Duration,
    /// Skip TLS certificate verification.
    pub insecure: bool,
}

impl Default for AgentOptions {
    fn default() -> Self {
        AgentOptions {
            timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
            insecure: false,
        }
    }
}

/// Builds the agent. Every request made with it is bounded by `timeout`.
pub fn agent(opts: AgentOptions) -> Result<ureq::Agent> {
    let mut b = ureq::AgentBuilder::new()
        .timeout(opts.timeout)
        .timeout_connect(opts.connect_timeout.min(opts.timeout))
        .user_agent(concat!("daon-ops/", env!("CARGO_PKG_VERSION")))
        .redirects(3);
    if opts.insecure {
        b = b.tls_config(Arc::new(crate::tls::insecure_client_config()?));
    }
    Ok(b.build())
}

/// An HTTP answer.
#[derive(Debug, Clone)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Body as text (lossy UTF-8, at most [`MAX_BODY`]).
    pub body: String,
    /// Time until the body was read.
    pub elapsed: Duration,
}

/// GETs `url`. Any status is returned; only transport failures are errors.
pub fn get(agent: &ureq::Agent, url: &str) -> Result<Response> {
    let start = Instant::now();
    let resp = match agent.get(url).call() {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(ureq::Error::Transport(t)) => {
            return Err(Error::HttpUnreachable {
                url: url.to_string(),
                detail: describe_transport(&t, start.elapsed()),
            })
        }
    };
    let status = resp.status();
    let mut buf = Vec::new();
    resp.into_reader()
        .take(MAX_BODY)
        .read_to_end(&mut buf)
        .map_err(|e| Error::HttpUnreachable {
            url: url.to_string(),
            detail: format!("reading the body: {e}"),
        })?;
    Ok(Response {
        status,
        body: String::from_utf8_lossy(&buf).into_owned(),
        elapsed: start.elapsed(),
    })
}

/// POSTs an empty body (admin switches, hooks). Same rules as [`get`].
pub fn post(agent: &ureq::Agent, url: &str) -> Result<Response> {
    let start = Instant::now();
    let resp = match agent.post(url).send_bytes(&[]) {
        Ok(r) => r,
        Err(ureq::Error::Status(_, r)) => r,
        Err(ureq::Error::Transport(t)) => {
            return Err(Error::HttpUnreachable {
                url: url.to_string(),
                detail: describe_transport(&t, start.elapsed()),
            })
        }
    };
    let status = resp.status();
    let body = resp.into_string().unwrap_or_default();
    Ok(Response {
        status,
        body,
        elapsed: start.elapsed(),
    })
}

fn describe_transport(t: &ureq::Transport, elapsed: Duration) -> String {
    // ureq's Display repeats the URL, which our message already carries.
    let mut text = t.kind().to_string();
    if let Some(m) = t.message() {
        text = format!("{text}: {m}");
    }
    if let Some(src) = std::error::Error::source(t) {
        text = format!("{text}: {src}");
    }
    let lower = text.to_ascii_lowercase();
    if lower.contains("timed out") || lower.contains("timeout") || lower.contains("would block") {
        format!(
            "no answer within {} ({text})",
            humantime::format_duration(Duration::from_millis(elapsed.as_millis() as u64))
        )
    } else {
        text
    }
}

/// GETs `url` and parses the body as JSON; a non-2xx status or a body that is
/// not JSON is a protocol error (76).
pub fn get_json(agent: &ureq::Agent, url: &str) -> Result<serde_json::Value> {
    let r = get(agent, url)?;
    if !(200..300).contains(&r.status) {
        return Err(Error::HttpProtocol {
            url: url.to_string(),
            detail: format!(
                "HTTP {}: {}",
                r.status,
                r.body.chars().take(200).collect::<String>()
            ),
        });
    }
    serde_json::from_str(&r.body).map_err(|e| Error::HttpProtocol {
        url: url.to_string(),
        detail: format!("body is not JSON ({e})"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::TcpListener;

    fn one_shot_server(reply: &'static str) -> String {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            if let Ok((mut s, _)) = l.accept() {
                let mut buf = [0u8; 1024];
                let _ = std::io::Read::read(&mut s, &mut buf);
                let _ = s.write_all(reply.as_bytes());
            }
        });
        format!("http://{addr}/")
    }

    #[test]
    fn non_2xx_is_data_not_error() {
        let url = one_shot_server("HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\nConnection: close\r\n\r\ndown");
        let r = get(&agent(AgentOptions::default()).unwrap(), &url).unwrap();
        assert_eq!(r.status, 503);
        assert_eq!(r.body, "down");
    }

    #[test]
    fn silent_server_times_out_within_the_deadline() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/", l.local_addr().unwrap());
        let start = Instant::now();
        let err = get(
            &agent(AgentOptions {
                timeout: Duration::from_millis(500),
                ..AgentOptions::default()
            })
            .unwrap(),
            &url,
        )
        .unwrap_err();
        assert!(
            start.elapsed() < Duration::from_secs(3),
            "{:?}",
            start.elapsed()
        );
        assert_eq!(err.exit_code(), crate::ExitCode::Unavailable);
        drop(l);
    }

    #[test]
    fn refused_connection_is_unreachable() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/", l.local_addr().unwrap());
        drop(l);
        let err = get(&agent(AgentOptions::default()).unwrap(), &url).unwrap_err();
        assert_eq!(err.exit_code(), crate::ExitCode::Unavailable);
    }
}
