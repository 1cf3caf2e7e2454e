//! The one place that runs external programs (docker, compose, pg_dump, tar...):
//! it tells "could not start" from "exited non-zero" from "killed by a signal"
//! from "took too long", drains stderr on its own thread (duct) so a chatty child
//! never deadlocks us, and puts a timeout on every call.

use crate::exit::ExitCode;
use std::ffi::{OsStr, OsString};
use std::io::{self, Read};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::time::Duration;

/// Default timeout for short commands (`docker inspect`, `compose version`).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// How an external program failed.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// The program could not be started at all (not installed, not executable).
    #[error("could not start `{program}`: {source}{}", spawn_hint(.source))]
    Spawn {
        program: String,
        #[source]
        source: io::Error,
    },
    /// The program ran and exited with a non-zero status.
    #[error("`{cmdline}` exited with status {code}{}", stderr_tail(.stderr))]
    Exit {
        cmdline: String,
        code: i32,
        stderr: String,
    },
    /// The program was killed by a signal.
    #[error("`{cmdline}` was killed by signal {signal}{}", stderr_tail(.stderr))]
    Signal {
        cmdline: String,
        signal: i32,
        stderr: String,
    },
    /// The program did not finish in time and was killed.
    #[error("`{cmdline}` did not finish within {}; it was killed", humantime::format_duration(*.timeout))]
    Timeout { cmdline: String, timeout: Duration },
    /// Waiting for the program failed (rare: the OS refused).
    #[error("waiting for `{cmdline}`: {source}")]
    Wait {
        cmdline: String,
        #[source]
        source: io::Error,
    },
}

fn spawn_hint(e: &io::Error) -> &'static str {
    match e.kind() {
        io::ErrorKind::NotFound => " (is it installed and on PATH?)",
        io::ErrorKind::PermissionDenied => " (is it executable?)",
        _ => "",
    }
}

fn stderr_tail(stderr: &str) -> String {
    let lines: Vec<&str> = stderr.trim_end().lines().collect();
    if lines.is_empty() {
        return String::new();
    }
    let tail = &lines[lines.len().saturating_sub(8)..];
    format!(": {}", tail.join("\n  "))
}

impl ProcessError {
    /// Default exit code; callers that know better (a failed `pg_dump` is an
    /// I/O failure of the backup, say) map it themselves.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            ProcessError::Spawn { source, .. } if source.kind() == io::ErrorKind::NotFound => {
                ExitCode::Unavailable
            }
            ProcessError::Spawn { source, .. }
                if source.kind() == io::ErrorKind::PermissionDenied =>
            {
                ExitCode::NoPerm
            }
            ProcessError::Spawn { .. } | ProcessError::Wait { .. } => ExitCode::Internal,
            ProcessError::Exit { .. } | ProcessError::Signal { .. } => ExitCode::Internal,
            ProcessError::Timeout { .. } => ExitCode::TempFail,
        }
    }

    /// The child's captured stderr, if it ran.
    pub fn stderr(&self) -> &str {
        match self {
            ProcessError::Exit { stderr, .. } | ProcessError::Signal { stderr, .. } => stderr,
            _ => "",
        }
    }
}

/// What a finished program produced.
#[derive(Debug, Clone)]
pub struct Output {
    /// Exit code, `None` when killed by a signal.
    pub code: Option<i32>,
    /// Signal number when killed by one.
    pub signal: Option<i32>,
    /// Captured standard output.
    pub stdout: Vec<u8>,
    /// Captured standard error.
    pub stderr: Vec<u8>,
}

impl Output {
    /// True when the program exited with status 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
    /// Standard output as (lossy) UTF-8.
    pub fn stdout_str(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }
    /// Standard error as (lossy) UTF-8.
    pub fn stderr_str(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

/// A command to run: program, arguments, environment, stdin and a timeout.
#[derive(Debug, Clone)]
pub struct Cmd {
    program: OsString,
    args: Vec<OsString>,
    env: Vec<(OsString, OsString)>,
    dir: Option<PathBuf>,
    stdin: Option<Vec<u8>>,
    timeout: Duration,
}

impl Cmd {
    /// A new command with [`DEFAULT_TIMEOUT`].
    pub fn new(program: impl AsRef<OsStr>) -> Self {
        Cmd {
            program: program.as_ref().to_owned(),
            args: Vec::new(),
            env: Vec::new(),
            dir: None,
            stdin: None,
            timeout: DEFAULT_TIMEOUT,
        }
    }
    /// Appends one argument.
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.args.push(arg.as_ref().to_owned());
        self
    }
    /// Appends several arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }
    /// Sets an environment variable for the child.
    pub fn env(mut self, key: impl AsRef<OsStr>, val: impl AsRef<OsStr>) -> Self {
        self.env
            .push((key.as_ref().to_owned(), val.as_ref().to_owned()));
        self
    }

    /// Sets each `(key, value)` of `vars`.
    pub fn envs<K: AsRef<OsStr>, V: AsRef<OsStr>>(
        mut self,
        vars: impl IntoIterator<Item = (K, V)>,
    ) -> Self {
        for (k, v) in vars {
            self = self.env(k, v);
        }
        self
    }

    /// Sets the working directory.
    pub fn dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dir = Some(dir.into());
        self
    }
    /// Feeds these bytes on stdin (otherwise stdin is /dev/null).
    pub fn stdin_bytes(mut self, bytes: impl Into<Vec<u8>>) -> Self {
        self.stdin = Some(bytes.into());
        self
    }
    /// Sets the timeout after which the child is killed.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The command line as a person would type it (for messages).
    pub fn cmdline(&self) -> String {
        let mut s = self.program.to_string_lossy().into_owned();
        for a in &self.args {
            s.push(' ');
            let a = a.to_string_lossy();
            if a.is_empty() || a.contains(char::is_whitespace) {
                s.push_str(&format!("'{a}'"));
            } else {
                s.push_str(&a);
            }
        }
        s
    }

    fn expression(&self) -> duct::Expression {
        let mut e = duct::cmd(&self.program, &self.args).unchecked();
        for (k, v) in &self.env {
            e = e.env(k, v);
        }
        if let Some(d) = &self.dir {
            e = e.dir(d);
        }
        match &self.stdin {
            Some(b) => e.stdin_bytes(b.clone()),
            None => e.stdin_null(),
        }
    }

    fn spawn_error(&self, source: io::Error) -> ProcessError {
        ProcessError::Spawn {
            program: self.program.to_string_lossy().into_owned(),
            source,
        }
    }

    /// Runs to completion (or timeout) and returns the output whatever the
    /// exit status; only failure to start, to wait, or the timeout are errors.
    pub fn run_unchecked(&self) -> Result<Output, ProcessError> {
        let handle = self
            .expression()
            .stdout_capture()
            .stderr_capture()
            .start()
            .map_err(|e| self.spawn_error(e))?;
        match handle.wait_timeout(self.timeout) {
            Ok(Some(out)) => Ok(Output {
                code: out.status.code(),
                signal: out.status.signal(),
                stdout: out.stdout.clone(),
                stderr: out.stderr.clone(),
            }),
            Ok(None) => {
                // Best effort: the child may have exited in between.
                let _ = handle.kill();
                Err(ProcessError::Timeout {
                    cmdline: self.cmdline(),
                    timeout: self.timeout,
                })
            }
            Err(source) => {
                // duct reports a spawn failure of the first process lazily.
                if source.kind() == io::ErrorKind::NotFound {
                    Err(self.spawn_error(source))
                } else {
                    Err(ProcessError::Wait {
                        cmdline: self.cmdline(),
                        source,
                    })
                }
            }
        }
    }

    /// Runs and requires exit status 0.
    pub fn run(&self) -> Result<Output, ProcessError> {
        let out = self.run_unchecked()?;
        self.check(&out)?;
        Ok(out)
    }

    /// Turns a non-zero exit or a signal into the matching error.
    pub fn check(&self, out: &Output) -> Result<(), ProcessError> {
        match (out.code, out.signal) {
            (Some(0), _) => Ok(()),
            (Some(code), _) => Err(ProcessError::Exit {
                cmdline: self.cmdline(),
                code,
                stderr: out.stderr_str(),
            }),
            (None, Some(signal)) => Err(ProcessError::Signal {
                cmdline: self.cmdline(),
                signal,
                stderr: out.stderr_str(),
            }),
            (None, None) => Err(ProcessError::Exit {
                cmdline: self.cmdline(),
                code: -1,
                stderr: out.stderr_str(),
            }),
        }
    }

    /// Starts the program and streams its stdout: data is never buffered
    /// whole in memory (for `pg_dump` or `tar` inside a container). Its stderr
    /// is captured; a non-zero exit or a signal surfaces as an error from the
    /// final `read` (at EOF), so a failed dump can never look like a short one.
    /// The timeout does not apply: streams run as long as they need.
    pub fn reader(&self) -> Result<ProcessReader, ProcessError> {
        let inner = self
            .expression()
            .stderr_capture()
            .reader()
            .map_err(|e| self.spawn_error(e))?;
        Ok(ProcessReader {
            inner,
            cmd: self.clone(),
            done: false,
        })
    }
}

impl Cmd {
    /// Runs the program with `feed` streaming its stdin (through a pipe, never
    /// held whole in memory: a dump into `psql`), capturing stdout and stderr.
    /// If `feed` fails, the child is killed *before* its stdin is closed, so it
    /// never mistakes a half-fed stream for a complete one (psql would commit
    /// it). Returns the output whatever the exit status, and the feed's error.
    /// The timeout does not apply.
    pub fn run_feeding(
        &self,
        feed: impl FnOnce(&mut dyn io::Write) -> io::Result<()>,
    ) -> Result<(Output, Option<io::Error>), ProcessError> {
        use std::process::{Command, Stdio};
        let mut c = Command::new(&self.program);
        c.args(&self.args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in &self.env {
            c.env(k, v);
        }
        if let Some(d) = &self.dir {
            c.current_dir(d);
        }
        let mut child = c.spawn().map_err(|e| self.spawn_error(e))?;
        let drain = |r: Option<Box<dyn Read + Send>>| {
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                if let Some(mut r) = r {
                    let _ = r.read_to_end(&mut buf);
                }
                buf
            })
        };
        let out_t = drain(
            child
                .stdout
                .take()
                .map(|r| Box::new(r) as Box<dyn Read + Send>),
        );
        let err_t = drain(
            child
                .stderr
                .take()
                .map(|r| Box::new(r) as Box<dyn Read + Send>),
        );
        let mut feed_err = None;
        if let Some(mut stdin) = child.stdin.take() {
            match feed(&mut stdin) {
                Ok(()) => {}
                // The child stopped reading: its exit status tells why.
                Err(e) if e.kind() == io::ErrorKind::BrokenPipe => {}
                Err(e) => {
                    let _ = child.kill();
                    feed_err = Some(e);
                }
            }
            drop(stdin);
        }
        let status = child.wait().map_err(|source| ProcessError::Wait {
            cmdline: self.cmdline(),
            source,
        })?;
        Ok((
            Output {
                code: status.code(),
                signal: status.signal(),
                stdout: out_t.join().unwrap_or_default(),
                stderr: err_t.join().unwrap_or_default(),
            },
            feed_err,
        ))
    }
}

/// Streaming stdout of a running program; see [`Cmd::reader`]. Dropping it
/// early kills the child.
pub struct ProcessReader {
    inner: duct::ReaderHandle,
    cmd: Cmd,
    done: bool,
}

impl ProcessReader {
    /// PIDs of the running child, for signalling.
    pub fn pids(&self) -> Vec<u32> {
        self.inner.pids()
    }
}

impl Read for ProcessReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.done {
            return Ok(0);
        }
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.done = true;
            let out = match self.inner.try_wait()? {
                Some(out) => Output {
                    code: out.status.code(),
                    signal: out.status.signal(),
                    stdout: Vec::new(),
                    stderr: out.stderr.clone(),
                },
                None => return Err(io::Error::other("child still running after EOF")),
            };
            self.cmd.check(&out).map_err(io::Error::other)?;
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn success_captures_stdout_and_stderr() {
        let out = Cmd::new("sh")
            .args(["-c", "echo out; echo err >&2"])
            .run()
            .unwrap();
        assert_eq!(out.stdout_str(), "out\n");
        assert_eq!(out.stderr_str(), "err\n");
    }

    #[test]
    fn missing_program_is_a_spawn_error_with_exit_69() {
        let err = Cmd::new("daon-no-such-program-xyz").run().unwrap_err();
        assert!(matches!(err, ProcessError::Spawn { .. }), "{err:?}");
        assert_eq!(err.exit_code(), ExitCode::Unavailable);
        assert!(err.to_string().contains("is it installed"));
    }

    #[test]
    fn non_zero_exit_keeps_stderr_in_the_message() {
        let err = Cmd::new("sh")
            .args(["-c", "echo 'pg_dump: connection refused' >&2; exit 3"])
            .run()
            .unwrap_err();
        match &err {
            ProcessError::Exit { code, stderr, .. } => {
                assert_eq!(*code, 3);
                assert!(stderr.contains("connection refused"));
            }
            other => panic!("expected Exit, got {other:?}"),
        }
        assert!(err.to_string().contains("connection refused"));
    }

    #[test]
    fn death_by_signal_is_reported_as_such() {
        let err = Cmd::new("sh")
            .args(["-c", "kill -TERM $$"])
            .run()
            .unwrap_err();
        assert!(
            matches!(err, ProcessError::Signal { signal: 15, .. }),
            "{err:?}"
        );
    }

    #[test]
    fn timeout_kills_the_child() {
        let start = std::time::Instant::now();
        let err = Cmd::new("sleep")
            .arg("30")
            .timeout(Duration::from_millis(300))
            .run()
            .unwrap_err();
        assert!(matches!(err, ProcessError::Timeout { .. }), "{err:?}");
        assert!(start.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn a_child_flooding_stderr_does_not_deadlock() {
        // 1 MiB on stderr is far more than a pipe buffer holds.
        let out = Cmd::new("sh")
            .args(["-c", "head -c 1048576 /dev/zero >&2; echo done"])
            .timeout(Duration::from_secs(20))
            .run()
            .unwrap();
        assert_eq!(out.stderr.len(), 1_048_576);
        assert_eq!(out.stdout_str(), "done\n");
    }

    #[test]
    fn stdin_bytes_reach_the_child() {
        let out = Cmd::new("cat").stdin_bytes("hello").run().unwrap();
        assert_eq!(out.stdout_str(), "hello");
    }

    #[test]
    fn run_feeding_streams_stdin_and_kills_the_child_when_the_feed_fails() {
        let (out, err) = Cmd::new("wc")
            .arg("-c")
            .run_feeding(|w| {
                for _ in 0..100 {
                    w.write_all(&[b'x'; 65536])?;
                }
                Ok(())
            })
            .unwrap();
        assert!(err.is_none());
        assert_eq!(out.stdout_str().trim(), "6553600");
        // A failing feed: the child is killed, not handed EOF.
        let (out, err) = Cmd::new("sh")
            .args(["-c", "cat >/dev/null; echo finished"])
            .run_feeding(|w| {
                w.write_all(b"partial")?;
                Err(io::Error::other("decompression failed"))
            })
            .unwrap();
        assert!(err.is_some());
        assert_eq!(out.signal, Some(9));
        assert!(!out.stdout_str().contains("finished"));
        // The child quits early: no deadlock, its status tells.
        let (out, _) = Cmd::new("sh")
            .args(["-c", "exit 3"])
            .run_feeding(|w| {
                for _ in 0..1000 {
                    w.write_all(&[0u8; 65536])?;
                }
                Ok(())
            })
            .unwrap();
        assert_eq!(out.code, Some(3));
    }

    #[test]
    fn reader_streams_and_reports_a_failed_exit_at_eof() {
        let mut ok = String::new();
        Cmd::new("sh")
            .args(["-c", "seq 1 3"])
            .reader()
            .unwrap()
            .read_to_string(&mut ok)
            .unwrap();
        assert_eq!(ok, "1\n2\n3\n");

        let mut buf = Vec::new();
        let err = Cmd::new("sh")
            .args(["-c", "echo partial; echo 'disk full' >&2; exit 1"])
            .reader()
            .unwrap()
            .read_to_end(&mut buf)
            .unwrap_err();
        assert!(err.to_string().contains("disk full"), "{err}");
    }
}
