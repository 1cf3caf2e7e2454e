//! The exit codes every daon-ops tool shares, so scripts and cron wrappers can
//! tell "the answer is no" from "try again later" from "fix your config".

use std::fmt;

/// A process exit status with a documented meaning (sysexits-style).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum ExitCode {
    /// Everything worked.
    Ok = 0,
    /// A negative answer: unhealthy, not allowed, not found.
    Negative = 1,
    /// The command line was wrong.
    Usage = 2,
    /// A dependency (Docker, an API, a peer) could not be reached.
    Unavailable = 69,
    /// A bug or an impossible state inside the tool.
    Internal = 70,
    /// Reading or writing a local file failed.
    Io = 74,
    /// Temporary: a lock is held or a rate limit hit; retry later.
    TempFail = 75,
    /// A peer answered something we did not expect.
    Protocol = 76,
    /// Permission or authentication was refused.
    NoPerm = 77,
    /// The configuration is invalid.
    Config = 78,
}

impl ExitCode {
    /// The numeric status handed to the operating system.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The more serious of two codes, for tools that keep going after a
    /// per-item failure and must report the worst one at the end.
    /// `Ok` loses to everything; otherwise the first non-`Ok` code wins.
    pub fn merge(self, other: ExitCode) -> ExitCode {
        if self == ExitCode::Ok {
            other
        } else {
            self
        }
    }
}

impl fmt::Display for ExitCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code())
    }
}

impl From<ExitCode> for std::process::ExitCode {
    fn from(code: ExitCode) -> Self {
        std::process::ExitCode::from(code.code())
    }
}

/// The exit-code table for `--help` (`after_long_help`) and man pages.
pub const EXIT_CODES_HELP: &str = "\
Exit codes:
   0  ok
   1  negative answer (unhealthy, not allowed, not found)
   2  usage error
  69  a dependency is unreachable (Docker, an API)
  70  internal error
  74  I/O error
  75  temporary failure (lock held, rate limited): retry later
  76  unexpected reply from a peer
  77  permission or authentication refused
  78  bad configuration";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_match_the_documented_table() {
        for (code, n) in [
            (ExitCode::Ok, 0),
            (ExitCode::Negative, 1),
            (ExitCode::Usage, 2),
            (ExitCode::Unavailable, 69),
            (ExitCode::Internal, 70),
            (ExitCode::Io, 74),
            (ExitCode::TempFail, 75),
            (ExitCode::Protocol, 76),
            (ExitCode::NoPerm, 77),
            (ExitCode::Config, 78),
        ] {
            assert_eq!(code.code(), n);
            assert!(
                EXIT_CODES_HELP.contains(&format!("{n:>4}  ")),
                "{n} undocumented"
            );
        }
    }

    #[test]
    fn merge_keeps_the_first_failure() {
        assert_eq!(ExitCode::Ok.merge(ExitCode::Io), ExitCode::Io);
        assert_eq!(ExitCode::Negative.merge(ExitCode::Io), ExitCode::Negative);
        assert_eq!(ExitCode::Ok.merge(ExitCode::Ok), ExitCode::Ok);
    }
}
