//! daon-common: the thin shared library under every daon-ops tool — config,
//! Docker/Compose, the process runner, HTTP, TLS, exit codes, output manners,
//! locks and atomic files — so each tool is only its own logic.

pub mod atomic;
pub mod cli;
pub mod config;
pub mod docker;
pub mod error;
pub mod exit;
pub mod hcloud;
pub mod http;
pub mod lock;
pub mod notify;
pub mod output;
pub mod process;
pub mod tls;
pub mod window;

pub use config::Config;
pub use error::{Error, Result};
pub use exit::ExitCode;
