//! The one error type of this crate: Docker's exact message, the stage that reports it, and a kind.

use carrel_core::{ErrorKind, HasKind};
use std::fmt;

/// Where in Docker's pipeline a failure is reported (the `error_stage` of the conformance vectors).
///
/// The stage matters to users: a `DaemonStart` failure means `docker create` succeeds and only
/// `start`/`run` fail, so carrel reports it from [`crate::MountPlan::check_start`], not from the
/// planner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    /// The docker CLI rejects the flag before sending anything.
    Cli,
    /// The daemon rejects the create request.
    DaemonCreate,
    /// The volume driver rejects the creation of a volume the container needs (at create time).
    VolumeDriver,
    /// The container is created, but building or applying its mounts fails at start.
    DaemonStart,
}

impl Stage {
    /// The stage's name as the conformance vectors spell it (`cli`, `daemon-create`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Cli => "cli",
            Stage::DaemonCreate => "daemon-create",
            Stage::VolumeDriver => "volume-driver",
            Stage::DaemonStart => "daemon-start",
        }
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A rejected mount flag, request or plan.
///
/// `Display` is Docker's message without the prefixes its CLI adds when printing (`docker: `,
/// `Error response from daemon: `); for `--mount` flag errors [`MountError::cli_text`] gives the
/// full `invalid argument "<value>" for "--mount" flag: <message>` line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct MountError {
    stage: Stage,
    kind: ErrorKind,
    message: String,
    flag: Option<(String, String)>,
}

impl MountError {
    /// An error with an explicit stage and kind.
    pub fn new(stage: Stage, kind: ErrorKind, message: impl Into<String>) -> MountError {
        MountError {
            stage,
            kind,
            message: message.into(),
            flag: None,
        }
    }

    /// An invalid-argument error reported by the CLI.
    pub fn cli(message: impl Into<String>) -> MountError {
        MountError::new(Stage::Cli, ErrorKind::InvalidArgument, message)
    }

    /// An invalid-argument error reported by the daemon at create time.
    pub fn create(message: impl Into<String>) -> MountError {
        MountError::new(Stage::DaemonCreate, ErrorKind::InvalidArgument, message)
    }

    /// An invalid-argument error reported by a volume driver when the container's volume is made.
    pub fn volume_driver(message: impl Into<String>) -> MountError {
        MountError::new(Stage::VolumeDriver, ErrorKind::InvalidArgument, message)
    }

    /// An invalid-argument error reported when the container starts.
    pub fn start(message: impl Into<String>) -> MountError {
        MountError::new(Stage::DaemonStart, ErrorKind::InvalidArgument, message)
    }

    /// Remember the flag and value a CLI error came from (for [`MountError::cli_text`]).
    pub(crate) fn with_flag(mut self, flag: &str, value: &str) -> MountError {
        self.flag = Some((flag.to_string(), value.to_string()));
        self
    }

    /// Prefix the message (`invalid volume specification: '<raw>': ` + message).
    pub(crate) fn prefixed(mut self, prefix: &str) -> MountError {
        self.message = format!("{prefix}{}", self.message);
        self
    }

    /// The stage that reports this error.
    pub fn stage(&self) -> Stage {
        self.stage
    }

    /// Docker's message, exactly.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The text the docker CLI prints for this error (without its `docker: ` program prefix):
    /// flag parse errors read `invalid argument "<value>" for "--mount" flag: <message>`, every
    /// other error is the bare message.
    pub fn cli_text(&self) -> String {
        match &self.flag {
            Some((flag, value)) => format!(
                "invalid argument {} for {} flag: {}",
                crate::gostr::quote(value),
                crate::gostr::quote(flag),
                self.message
            ),
            None => self.message.clone(),
        }
    }
}

impl HasKind for MountError {
    fn kind(&self) -> ErrorKind {
        self.kind
    }
}
