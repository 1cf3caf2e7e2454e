//! One error type for the shared library: each variant knows its exit code and
//! its message says what went wrong and what to do next.

use crate::exit::ExitCode;
use crate::process::ProcessError;
use std::path::PathBuf;

/// Errors from daon-common. Tools wrap or convert these into their own enums.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration (file, environment or flags) is invalid.
    #[error("{0}")]
    Config(String),

    /// The command line is wrong.
    #[error("{0}")]
    Usage(String),

    /// The Docker daemon cannot be reached.
    #[error("cannot reach the Docker daemon{context}: {detail}\n  hint: is Docker running (`systemctl status docker`)? Check DOCKER_HOST / --context.")]
    DockerUnreachable { context: String, detail: String },

    /// Talking to Docker was refused.
    #[error("permission denied talking to Docker: {0}\n  hint: run as root or as a member of the `docker` group")]
    DockerPermission(String),

    /// A container or other object does not exist.
    #[error("{0}")]
    NotFound(String),

    /// An external program failed.
    #[error(transparent)]
    Process(#[from] ProcessError),

    /// A local file operation failed.
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// An HTTP peer could not be reached.
    #[error("cannot reach {url}: {detail}")]
    HttpUnreachable { url: String, detail: String },

    /// An HTTP peer answered something unexpected.
    #[error("unexpected reply from {url}: {detail}")]
    HttpProtocol { url: String, detail: String },

    /// An HTTP peer refused our credentials.
    #[error("{url} refused access (HTTP {status}): check the token or credentials")]
    HttpAuth { url: String, status: u16 },

    /// Another run holds the lock.
    #[error("{path} is locked by another run ({holder}); retry later or wait with --lock-wait")]
    LockHeld { path: PathBuf, holder: String },

    /// A bug: a state the code did not expect.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// Builds an [`Error::Io`] for `path`.
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            action,
            path: path.into(),
            source,
        }
    }

    /// The exit code a tool should end with when this error stops it.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Error::Config(_) => ExitCode::Config,
            Error::Usage(_) => ExitCode::Usage,
            Error::DockerUnreachable { .. } | Error::HttpUnreachable { .. } => {
                ExitCode::Unavailable
            }
            Error::DockerPermission(_) | Error::HttpAuth { .. } => ExitCode::NoPerm,
            Error::NotFound(_) => ExitCode::Negative,
            Error::Process(p) => p.exit_code(),
            Error::Io { .. } => ExitCode::Io,
            Error::HttpProtocol { .. } => ExitCode::Protocol,
            Error::LockHeld { .. } => ExitCode::TempFail,
            Error::Internal(_) => ExitCode::Internal,
        }
    }
}

/// Result alias for daon-common.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// True if `err` (or anything in its source chain) is a broken pipe: the
/// reader went away (`| head`), which is not an error for a Unix tool.
pub fn is_broken_pipe(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::BrokenPipe {
                return true;
            }
        }
        cur = e.source();
    }
    false
}
