//! Notifications every tool can send: email (SMTP via lettre), a webhook that
//! Slack- and Discord-style receivers accept, and healthchecks.io-style pings
//! (a dead-man's switch for cron jobs). Delivery never changes a tool's exit
//! code: failures are reported on stderr, retried briefly, and an undelivered
//! message is kept on disk and re-sent by the next run.

use crate::atomic;
use crate::config::duration;
use crate::error::{Error, Result};
use crate::http::{self, AgentOptions};
use lettre::message::{header::ContentType, Mailbox};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{SmtpTransport, Transport};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// `[notify]`: where messages go. Secrets are not here: the SMTP password
/// comes from `DAON_SMTP_PASSWORD` or `smtp_password_file` (mode 0600).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct NotifyConfig {
    /// Recipients; empty disables email.
    pub email_to: Vec<String>,
    /// Sender; empty means `daon-ops@<hostname>`.
    pub email_from: String,
    /// SMTP server.
    pub smtp_host: String,
    /// SMTP port (587 STARTTLS, 465 TLS, 25 none).
    pub smtp_port: u16,
    /// `starttls`, `tls` or `none`.
    pub smtp_security: SmtpSecurity,
    /// PEM file with the CA that signed the SMTP server's certificate (an
    /// internal relay); empty: the public web roots.
    pub smtp_ca_file: PathBuf,
    /// SMTP user; empty for no authentication.
    pub smtp_user: String,
    /// File holding the SMTP password (must not be group/world-readable).
    pub smtp_password_file: PathBuf,
    /// Webhook URL (it often embeds a token: redacted in --print-config).
    pub webhook_url: String,
    /// healthchecks.io-style ping URL (`https://hc-ping.com/<uuid>`); redacted.
    pub ping_url: String,
    /// Timeout for one delivery attempt.
    #[serde(with = "duration")]
    pub timeout: Duration,
    /// Extra attempts after a failed delivery.
    pub retries: u32,
    /// Also notify when a tool run succeeds (deploys, backups...), not only
    /// when it fails.
    pub on_success: bool,
}

/// SMTP transport security.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SmtpSecurity {
    /// Plain connection upgraded with STARTTLS (required).
    Starttls,
    /// TLS from the start (SMTPS).
    Tls,
    /// No encryption (loopback relays only).
    None,
}

impl Default for NotifyConfig {
    fn default() -> Self {
        NotifyConfig {
            email_to: Vec::new(),
            email_from: String::new(),
            smtp_host: String::new(),
            smtp_port: 587,
            smtp_security: SmtpSecurity::Starttls,
            smtp_ca_file: PathBuf::new(),
            smtp_user: String::new(),
            smtp_password_file: PathBuf::new(),
            webhook_url: String::new(),
            ping_url: String::new(),
            timeout: Duration::from_secs(10),
            retries: 2,
            on_success: true,
        }
    }
}

/// One notification.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Message {
    /// Tool that sends it (`daon-health-check`).
    pub tool: String,
    /// Event kind (`alert`, `resolved`, `reminder`, `flapping`, `success`, `failure`).
    pub event: String,
    /// Subject line.
    pub subject: String,
    /// Plain-text body: what failed, since when, what to run next.
    pub body: String,
    /// Structured fields for webhook consumers.
    pub fields: serde_json::Value,
}

/// A delivery channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    /// SMTP.
    Email,
    /// HTTP POST.
    Webhook,
}

#[derive(Debug, Serialize, Deserialize)]
struct Pending {
    message: Message,
    channels: Vec<Channel>,
}

/// Sends messages on the configured channels and keeps undelivered ones.
pub struct Notifier {
    cfg: NotifyConfig,
    pending_dir: PathBuf,
    password: Option<String>,
}

/// What a send achieved.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Channels that took the message.
    pub delivered: Vec<Channel>,
    /// Channel failures (already reported on stderr).
    pub failed: Vec<(Channel, String)>,
}

impl Notifier {
    /// A notifier; undelivered messages are kept under `state_dir/notify-pending`.
    pub fn new(cfg: &NotifyConfig, state_dir: &Path) -> Result<Notifier> {
        let password = match std::env::var("DAON_SMTP_PASSWORD") {
            Ok(p) if !p.is_empty() => Some(p),
            _ if !cfg.smtp_password_file.as_os_str().is_empty() => {
                Some(read_secret_file(&cfg.smtp_password_file)?)
            }
            _ => None,
        };
        Ok(Notifier {
            cfg: cfg.clone(),
            pending_dir: state_dir.join("notify-pending"),
            password,
        })
    }

    /// True when at least one message channel is configured.
    pub fn enabled(&self) -> bool {
        !self.channels().is_empty()
    }

    fn channels(&self) -> Vec<Channel> {
        let mut c = Vec::new();
        if !self.cfg.email_to.is_empty() && !self.cfg.smtp_host.is_empty() {
            c.push(Channel::Email);
        }
        if !self.cfg.webhook_url.is_empty() {
            c.push(Channel::Webhook);
        }
        c
    }

    /// Re-sends messages a previous run could not deliver; returns how many
    /// went out on at least one channel (a channel that still fails keeps its
    /// copy for the next run).
    pub fn flush_pending(&self) -> usize {
        let Ok(entries) = std::fs::read_dir(&self.pending_dir) else {
            return 0;
        };
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        files.sort();
        let mut sent = 0;
        for f in files {
            let Ok(p) = std::fs::read(&f)
                .map_err(|_| ())
                .and_then(|b| serde_json::from_slice::<Pending>(&b).map_err(|_| ()))
            else {
                continue;
            };
            let out = self.deliver(&p.message, &p.channels);
            if !out.delivered.is_empty() {
                sent += 1;
            }
            if out.failed.is_empty() {
                let _ = std::fs::remove_file(&f);
            } else {
                let still = Pending {
                    message: p.message,
                    channels: out.failed.iter().map(|(c, _)| *c).collect(),
                };
                if let Ok(b) = serde_json::to_vec(&still) {
                    let _ = atomic::write(&f, &b, 0o600);
                }
            }
        }
        sent
    }

    /// Sends `msg` on every configured channel. Failures are printed on
    /// stderr and the message is kept for the next run.
    pub fn send(&self, msg: &Message) -> Outcome {
        let out = self.deliver(msg, &self.channels());
        if !out.failed.is_empty() {
            let p = Pending {
                message: msg.clone(),
                channels: out.failed.iter().map(|(c, _)| *c).collect(),
            };
            let name = format!(
                "{}-{}.json",
                chrono::Utc::now().format("%Y%m%dT%H%M%S%.9fZ"),
                std::process::id()
            );
            let path = self.pending_dir.join(name);
            match serde_json::to_vec(&p) {
                Ok(b) => {
                    if let Err(e) = atomic::write(&path, &b, 0o600) {
                        eprintln!(
                            "{}: warning: could not keep the undelivered message: {e}",
                            msg.tool
                        );
                    } else {
                        eprintln!(
                            "{}: the message will be re-sent by the next run ({})",
                            msg.tool,
                            path.display()
                        );
                    }
                }
                Err(e) => eprintln!("{}: warning: {e}", msg.tool),
            }
        }
        out
    }

    fn deliver(&self, msg: &Message, channels: &[Channel]) -> Outcome {
        let mut out = Outcome::default();
        for &ch in channels {
            let mut last = String::new();
            let mut ok = false;
            for attempt in 0..=self.cfg.retries {
                if attempt > 0 {
                    std::thread::sleep(Duration::from_millis(500 * u64::from(attempt)));
                }
                let r = match ch {
                    Channel::Email => self.email(msg),
                    Channel::Webhook => self.webhook(msg),
                };
                match r {
                    Ok(()) => {
                        ok = true;
                        break;
                    }
                    Err(e) => last = self.scrub(&e.to_string()),
                }
            }
            if ok {
                out.delivered.push(ch);
            } else {
                eprintln!(
                    "{}: warning: {ch:?} notification not delivered: {last}",
                    msg.tool
                );
                out.failed.push((ch, last));
            }
        }
        out
    }

    /// Removes the SMTP password from any text that might echo it.
    fn scrub(&self, text: &str) -> String {
        match &self.password {
            Some(p) if !p.is_empty() => text.replace(p.as_str(), "<redacted>"),
            _ => text.to_string(),
        }
    }

    fn email(&self, msg: &Message) -> Result<()> {
        let c = &self.cfg;
        let from = if c.email_from.is_empty() {
            format!("daon-ops@{}", crate::lock::hostname())
        } else {
            c.email_from.clone()
        };
        let parse = |a: &str| {
            a.parse::<Mailbox>()
                .map_err(|e| Error::Config(format!("bad email address {a:?} in [notify]: {e}")))
        };
        let mut b = lettre::Message::builder()
            .from(parse(&from)?)
            .subject(&msg.subject)
            .header(ContentType::TEXT_PLAIN);
        for to in &c.email_to {
            b = b.to(parse(to)?);
        }
        let email = b
            .body(msg.body.clone())
            .map_err(|e| Error::Internal(format!("building the email: {e}")))?;
        let unreachable = |detail: String| Error::HttpUnreachable {
            url: format!("smtp://{}:{}", c.smtp_host, c.smtp_port),
            detail: if detail.contains("certificate") && c.smtp_ca_file.as_os_str().is_empty() {
                format!(
                    "{detail} (a relay with an internal CA: set notify.smtp_ca_file to its PEM)"
                )
            } else {
                detail
            },
        };
        let builder = match (c.smtp_security, self.tls_parameters()?) {
            (SmtpSecurity::None, _) => SmtpTransport::builder_dangerous(&c.smtp_host),
            (SmtpSecurity::Tls, Some(p)) => {
                SmtpTransport::builder_dangerous(&c.smtp_host).tls(Tls::Wrapper(p))
            }
            (SmtpSecurity::Starttls, Some(p)) => {
                SmtpTransport::builder_dangerous(&c.smtp_host).tls(Tls::Required(p))
            }
            (SmtpSecurity::Tls, None) => {
                SmtpTransport::relay(&c.smtp_host).map_err(|e| unreachable(e.to_string()))?
            }
            (SmtpSecurity::Starttls, None) => SmtpTransport::starttls_relay(&c.smtp_host)
                .map_err(|e| unreachable(e.to_string()))?,
        };
        let mut builder = builder.port(c.smtp_port).timeout(Some(c.timeout));
        if !c.smtp_user.is_empty() {
            builder = builder.credentials(Credentials::new(
                c.smtp_user.clone(),
                self.password.clone().unwrap_or_default(),
            ));
        }
        builder
            .build()
            .send(&email)
            .map(|_| ())
            .map_err(|e| unreachable(e.to_string()))
    }

    /// TLS trusting `smtp_ca_file` (None: lettre's default, the web roots).
    fn tls_parameters(&self) -> Result<Option<TlsParameters>> {
        let c = &self.cfg;
        if c.smtp_ca_file.as_os_str().is_empty() || c.smtp_security == SmtpSecurity::None {
            return Ok(None);
        }
        let pem = std::fs::read(&c.smtp_ca_file)
            .map_err(|e| Error::io("reading notify.smtp_ca_file", &c.smtp_ca_file, e))?;
        let bad = |e: lettre::transport::smtp::Error| {
            Error::Config(format!(
                "notify.smtp_ca_file {}: {e} (it must hold a PEM certificate)",
                c.smtp_ca_file.display()
            ))
        };
        let cert = Certificate::from_pem(&pem).map_err(bad)?;
        TlsParameters::builder(c.smtp_host.clone())
            .add_root_certificate(cert)
            .build()
            .map(Some)
            .map_err(bad)
    }

    fn webhook(&self, msg: &Message) -> Result<()> {
        let agent = http::agent(AgentOptions {
            timeout: self.cfg.timeout,
            ..AgentOptions::default()
        })?;
        let text = format!("{}\n\n{}", msg.subject, msg.body);
        let payload = serde_json::json!({
            "text": text,       // Slack, Mattermost, Rocket.Chat
            "content": text,    // Discord
            "tool": msg.tool,
            "event": msg.event,
            "subject": msg.subject,
            "host": crate::lock::hostname(),
            "fields": msg.fields,
        });
        let url = &self.cfg.webhook_url;
        let redacted = redact_url(url);
        match agent.post(url).send_json(payload) {
            Ok(_) => Ok(()),
            Err(ureq::Error::Status(code, _)) => Err(Error::HttpProtocol {
                url: redacted,
                detail: format!("HTTP {code}"),
            }),
            Err(ureq::Error::Transport(t)) => Err(Error::HttpUnreachable {
                url: redacted,
                detail: t.kind().to_string(),
            }),
        }
    }
}

/// One run of a tool, as monitoring sees it: a dead-man ping at the start
/// and at the end (with the exit code), and a success or failure message
/// on the configured channels. Nothing here changes the tool's exit code.
pub struct Run {
    tool: String,
    cfg: NotifyConfig,
    state_dir: PathBuf,
    ping: Option<Ping>,
}

impl Run {
    /// Sends the start ping (when `ping_url` is set).
    pub fn start(cfg: &NotifyConfig, state_dir: &Path, tool: &str) -> Run {
        Run {
            tool: tool.to_string(),
            cfg: cfg.clone(),
            state_dir: state_dir.to_path_buf(),
            ping: Ping::start(cfg, tool),
        }
    }

    /// Ends the run: the end ping with `code` and `tail`, and — when `notify`
    /// is true and a channel is configured — a message: `failure` for a
    /// non-zero code, `success` (unless `on_success = false`) otherwise.
    pub fn finish(
        self,
        code: u8,
        notify: bool,
        subject: &str,
        body: &str,
        fields: serde_json::Value,
    ) {
        if let Some(p) = &self.ping {
            p.end(code, body, &self.tool);
        }
        if !notify || (code == 0 && !self.cfg.on_success) {
            return;
        }
        let Ok(n) = Notifier::new(&self.cfg, &self.state_dir) else {
            return;
        };
        n.flush_pending();
        if !n.enabled() {
            return;
        }
        let (event, word) = if code == 0 {
            ("success", "OK")
        } else {
            ("failure", "FAILED")
        };
        let mut f = fields;
        if let Some(o) = f.as_object_mut() {
            o.insert("exit_code".into(), code.into());
            o.insert("host".into(), crate::lock::hostname().into());
        }
        n.send(&Message {
            tool: self.tool.clone(),
            event: event.into(),
            subject: format!(
                "[DAON {}] {} {word}: {subject}",
                crate::lock::hostname(),
                self.tool
            ),
            body: body.to_string(),
            fields: f,
        });
    }
}

/// Environment for a daon tool that another daon tool runs as one step of
/// its own run (the pre-wipe backup, the reboot guard's snapshot check):
/// the step must not ping the dead-man URL or send messages of its own —
/// the outer run reports the result.
pub const NESTED_RUN_ENV: [(&str, &str); 3] = [
    ("DAON_NOTIFY_PING_URL", ""),
    ("DAON_NOTIFY_WEBHOOK_URL", ""),
    ("DAON_NOTIFY_EMAIL_TO", ""),
];

/// What a run tells its success or failure notification, filled in by the
/// tool as it learns it (the set it wrote, the version it deployed...).
#[derive(Debug, Default, Clone)]
pub struct Report {
    /// Replaces the subject given to [`monitored`] when not empty
    /// (`set 20261202T070000Z: 1.2 GB in 3.4 s`).
    pub subject: String,
    /// Structured fields: in the webhook payload and, one per line, in the
    /// email body.
    pub fields: serde_json::Map<String, serde_json::Value>,
    /// Values the run printed that must not leave the machine (new secrets
    /// shown with --show-secrets): replaced by `<redacted>` in the message
    /// and the end ping.
    secrets: Vec<String>,
}

impl Report {
    /// Sets one field.
    pub fn set(&mut self, key: &str, value: impl Into<serde_json::Value>) {
        self.fields.insert(key.to_string(), value.into());
    }

    /// Registers a secret value the run may print (see [`Report::scrub`]).
    pub fn secret(&mut self, value: &str) {
        if !value.is_empty() {
            self.secrets.push(value.to_string());
        }
    }

    /// `text` with every registered secret replaced by `<redacted>`.
    pub fn scrub(&self, text: &str) -> String {
        self.secrets
            .iter()
            .fold(text.to_string(), |t, s| t.replace(s.as_str(), "<redacted>"))
    }
}

/// Output a monitored run prints: written through to `inner` as it comes
/// (nothing is held back from a pipe), with the last [`Tee::TAIL`] bytes kept
/// for the end ping and the notification body.
pub struct Tee<W: std::io::Write> {
    inner: W,
    tail: Vec<u8>,
}

impl<W: std::io::Write> Tee<W> {
    /// Bytes of output kept.
    pub const TAIL: usize = 16 * 1024;

    /// Wraps `inner`.
    pub fn new(inner: W) -> Tee<W> {
        Tee {
            inner,
            tail: Vec::new(),
        }
    }

    /// The kept end of the output, cut at a line start when it was trimmed.
    pub fn tail(&self) -> String {
        let cut = self.tail.len().saturating_sub(Self::TAIL);
        let kept = &self.tail[cut..];
        if cut == 0 {
            return String::from_utf8_lossy(kept).into_owned();
        }
        let from = kept.iter().position(|&b| b == b'\n').map_or(0, |i| i + 1);
        String::from_utf8_lossy(&kept[from..]).into_owned()
    }
}

impl<W: std::io::Write> std::io::Write for Tee<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.tail.extend_from_slice(&buf[..n]);
        if self.tail.len() > 2 * Self::TAIL {
            let cut = self.tail.len() - Self::TAIL;
            self.tail.drain(..cut);
        }
        Ok(n)
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Runs `body` as one monitored tool run: the start ping, then `body` with
/// standard output (teed) and a [`Report`] to fill, then the end ping with
/// the exit code `code_of` gives and, when `notify` is true, a success or
/// failure message whose subject is the report's (or `subject`), and whose
/// body holds the output's end, the error and the report's fields. Nothing
/// here changes what `body` returns.
pub fn monitored<T, E: std::fmt::Display>(
    cfg: &NotifyConfig,
    state_dir: &Path,
    tool: &str,
    notify: bool,
    subject: &str,
    body: impl FnOnce(&mut Tee<std::io::Stdout>, &mut Report) -> Result<T, E>,
    code_of: impl Fn(&Result<T, E>) -> u8,
) -> Result<T, E> {
    let run = Run::start(cfg, state_dir, tool);
    // Not a held StdoutLock: a worker thread that prints must not wait for
    // the whole run.
    let mut out = Tee::new(std::io::stdout());
    let mut report = Report::default();
    let started = chrono::Utc::now();
    let result = body(&mut out, &mut report);
    let _ = std::io::Write::flush(&mut out);
    let code = code_of(&result);
    let error = result.as_ref().err().map(|e| e.to_string());
    report.fields.entry("started").or_insert_with(|| {
        started
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            .into()
    });
    let subject = if report.subject.is_empty() {
        subject.to_string()
    } else {
        report.subject.clone()
    };
    let text = report.scrub(&compose_body(&out.tail(), error.as_deref(), code, &report));
    drop(out);
    let fields = serde_json::from_str(
        &report.scrub(&serde_json::Value::Object(report.fields.clone()).to_string()),
    )
    .unwrap_or_default();
    run.finish(code, notify, &report.scrub(&subject), &text, fields);
    result
}

/// ` (I/O error)`: what the shared exit-code table says of `code`.
fn exit_meaning(code: u8) -> String {
    crate::exit::EXIT_CODES_HELP
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{code:>4}  ")))
        .map(|m| format!(" ({m})"))
        .unwrap_or_default()
}

/// The plain-text body of a run's notification: what it printed last, the
/// error (which says what to do next), then the report's fields.
fn compose_body(tail: &str, error: Option<&str>, code: u8, report: &Report) -> String {
    let mut b = String::new();
    let tail = tail.trim_end();
    if !tail.is_empty() {
        b.push_str(tail);
        b.push('\n');
    }
    if let Some(e) = error {
        if !b.is_empty() {
            b.push('\n');
        }
        b.push_str("error: ");
        b.push_str(e);
        b.push('\n');
    }
    if code != 0 {
        b.push_str(&format!("\nexit code {code}{}\n", exit_meaning(code)));
    }
    if !report.fields.is_empty() {
        b.push_str("\nDetails:\n");
        for (k, v) in &report.fields {
            let v = match v {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            b.push_str(&format!("  {k}: {v}\n"));
        }
    }
    b
}

/// A healthchecks.io-style run: `start` pings `<url>/start?rid=<id>`, `end`
/// pings `<url>/<exit code>?rid=<id>` with the output's last lines as body.
pub struct Ping {
    url: String,
    rid: String,
    timeout: Duration,
}

impl Ping {
    /// Starts a run (sends the start ping) when `cfg.ping_url` is set.
    pub fn start(cfg: &NotifyConfig, tool: &str) -> Option<Ping> {
        if cfg.ping_url.is_empty() {
            return None;
        }
        let p = Ping {
            url: cfg.ping_url.trim_end_matches('/').to_string(),
            rid: uuid_v4(),
            timeout: cfg.timeout,
        };
        p.send(&format!("{}/start?rid={}", p.url, p.rid), "", tool);
        Some(p)
    }

    /// Ends the run with its exit code and the tail of its output.
    pub fn end(&self, code: u8, output_tail: &str, tool: &str) {
        self.send(
            &format!("{}/{code}?rid={}", self.url, self.rid),
            output_tail,
            tool,
        );
    }

    fn send(&self, url: &str, body: &str, tool: &str) {
        let Ok(agent) = http::agent(AgentOptions {
            timeout: self.timeout,
            ..AgentOptions::default()
        }) else {
            return;
        };
        let mut last = String::new();
        for attempt in 0..3u64 {
            if attempt > 0 {
                std::thread::sleep(Duration::from_millis(300 * attempt));
            }
            match agent.post(url).send_string(body) {
                Ok(_) => return,
                Err(ureq::Error::Status(code, _)) => last = format!("HTTP {code}"),
                Err(ureq::Error::Transport(t)) => last = t.kind().to_string(),
            }
        }
        eprintln!(
            "{tool}: warning: ping to {} failed: {last}",
            redact_url(url)
        );
    }
}

/// `scheme://host/…` with the path hidden: ping and webhook URLs carry their
/// secret in the path.
pub fn redact_url(url: &str) -> String {
    match url.find("://").map(|i| i + 3) {
        Some(i) => {
            let host_end = url[i..].find('/').map(|j| i + j).unwrap_or(url.len());
            let host = &url[i..host_end];
            let host = host.rsplit('@').next().unwrap_or(host);
            format!("{}{host}/…", &url[..i])
        }
        None => "<url>".into(),
    }
}

fn uuid_v4() -> String {
    let mut b = [0u8; 16];
    if std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
        .is_err()
    {
        let n = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default()
            ^ u128::from(std::process::id());
        b = n.to_le_bytes();
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// Reads a secret from a file that only its owner may read.
pub fn read_secret_file(path: &Path) -> Result<String> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).map_err(|e| Error::io("reading secret file", path, e))?;
    if meta.mode() & 0o077 != 0 {
        return Err(Error::Config(format!(
            "{} is readable by group or others (mode {:o}); run `chmod 600 {}`",
            path.display(),
            meta.mode() & 0o777,
            path.display()
        )));
    }
    let s = std::fs::read_to_string(path).map_err(|e| Error::io("reading secret file", path, e))?;
    Ok(s.trim_end_matches(['\n', '\r']).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Write};
    use std::net::TcpListener;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn tee_passes_everything_through_and_keeps_the_end() {
        let mut t = Tee::new(Vec::new());
        for i in 0..5000 {
            writeln!(t, "line {i}").unwrap();
        }
        let tail = t.tail();
        assert!(tail.len() <= Tee::<Vec<u8>>::TAIL, "{}", tail.len());
        assert!(
            tail.starts_with("line "),
            "cut at a line start: {:?}",
            &tail[..20]
        );
        assert!(tail.ends_with("line 4999\n"));
        assert_eq!(
            t.inner.len(),
            (0..5000)
                .map(|i| format!("line {i}\n").len())
                .sum::<usize>()
        );
        let mut short = Tee::new(Vec::new());
        write!(short, "one\ntwo").unwrap();
        assert_eq!(short.tail(), "one\ntwo");
    }

    #[test]
    fn body_has_output_error_and_fields() {
        let mut r = Report::default();
        r.set("set", "20261202T070000Z");
        r.set("size", 1234);
        let b = compose_body("/backups/x\n", Some("pg_dump failed; run X"), 74, &r);
        assert_eq!(
            b,
            "/backups/x\n\nerror: pg_dump failed; run X\n\nexit code 74 (I/O error)\n\nDetails:\n  set: 20261202T070000Z\n  size: 1234\n"
        );
        assert_eq!(compose_body("", None, 0, &Report::default()), "");
        let mut r = Report::default();
        r.secret("s3cr3t");
        r.secret("");
        assert_eq!(r.scrub("JWT_SECRET=s3cr3t x"), "JWT_SECRET=<redacted> x");
        assert_eq!(exit_meaning(130), "");
    }

    #[test]
    fn uuid_is_v4_shaped() {
        let u = uuid_v4();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert_ne!(u, uuid_v4());
    }

    #[test]
    fn urls_are_redacted_past_the_host() {
        assert_eq!(
            redact_url("https://hooks.slack.com/services/T0/B0/secret"),
            "https://hooks.slack.com/…"
        );
        assert_eq!(
            redact_url("https://u:p@hc-ping.com/uuid/start"),
            "https://hc-ping.com/…"
        );
    }

    #[test]
    fn secret_file_must_be_private() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("pw");
        std::fs::write(&p, "hunter2\n").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let e = read_secret_file(&p).unwrap_err();
        assert!(e.to_string().contains("chmod 600") && !e.to_string().contains("hunter2"));
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(read_secret_file(&p).unwrap(), "hunter2");
    }

    fn msg() -> Message {
        Message {
            tool: "daon-test".into(),
            event: "alert".into(),
            subject: "[DAON] test".into(),
            body: "body".into(),
            fields: serde_json::json!({"k": 1}),
        }
    }

    #[test]
    fn webhook_failure_is_kept_and_resent_by_flush() {
        let state = tempfile::tempdir().unwrap();
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        drop(l); // nothing listens: delivery fails
        let cfg = NotifyConfig {
            webhook_url: format!("http://{addr}/hook/secret-token"),
            retries: 0,
            timeout: Duration::from_secs(2),
            ..NotifyConfig::default()
        };
        let n = Notifier::new(&cfg, state.path()).unwrap();
        let out = n.send(&msg());
        assert_eq!(out.failed.len(), 1);
        assert!(
            !out.failed[0].1.contains("secret-token"),
            "{:?}",
            out.failed
        );
        assert_eq!(
            std::fs::read_dir(state.path().join("notify-pending"))
                .unwrap()
                .count(),
            1
        );

        // Now a receiver listens on the same address: the next run delivers.
        let l = TcpListener::bind(addr).unwrap();
        let t = std::thread::spawn(move || {
            let (s, _) = l.accept().unwrap();
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut len = 0usize;
            loop {
                let mut line = String::new();
                r.read_line(&mut line).unwrap();
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap();
                }
                if line == "\r\n" {
                    break;
                }
            }
            let mut body = vec![0u8; len];
            std::io::Read::read_exact(&mut r, &mut body).unwrap();
            (&s).write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                .unwrap();
            String::from_utf8(body).unwrap()
        });
        assert_eq!(n.flush_pending(), 1);
        let body: serde_json::Value = serde_json::from_str(&t.join().unwrap()).unwrap();
        assert_eq!(body["text"], "[DAON] test\n\nbody");
        assert_eq!(body["content"], body["text"]);
        assert_eq!(body["fields"]["k"], 1);
        assert_eq!(
            std::fs::read_dir(state.path().join("notify-pending"))
                .unwrap()
                .count(),
            0
        );
    }
}
