//! carrel-mountspec: Docker's mount syntax, parsed and validated exactly as Docker does it.
//!
//! Two layers, like Docker:
//!
//! 1. **CLI** ([`CliFlags`]): `-v`, `--mount`, `--tmpfs`, `--volumes-from`, `--volume-driver`,
//!    `--read-only` and `--rm` become the pieces of an Engine API create request
//!    ([`MountRequest`]: `HostConfig.Binds`, `HostConfig.Mounts` as [`ApiMount`]s,
//!    `HostConfig.Tmpfs`, `Config.Volumes`, …), with the docker CLI's errors.
//! 2. **Daemon** ([`plan_mounts`]): a request (from the CLI or straight from the API) is
//!    validated and normalized into a [`MountPlan`] of typed [`MountSpec`]s, with the daemon's
//!    errors, precedence and duplicate rules. `--volumes-from` entries are expanded by the engine
//!    with [`MountPlan::resolve_volumes_from`]; failures Docker reports only at start come from
//!    [`MountPlan::check_start`].
//!
//! Pure logic: the only host fact, whether a `--mount type=bind` source exists, comes through
//! the [`HostPaths`] trait. Every error is a [`MountError`] carrying Docker's exact message and
//! the [`Stage`] that reports it.
//!
//! ```
//! use carrel_mountspec::{CliFlags, FixedHost, MountSpec, PlanContext, plan_mounts};
//!
//! let mut flags = CliFlags::new("/home/user/proj");
//! flags.volume("./content:/content:ro");
//! flags.mount("type=volume,src=logs,dst=/var/log/app,volume-subpath=app").unwrap();
//! flags.tmpfs("/run:size=64m");
//! let request = flags.finish().unwrap();
//! assert_eq!(request.binds, ["/home/user/proj/content:/content:ro"]);
//!
//! let host = FixedHost::new(["/home/user/proj/content"]);
//! let ctx = PlanContext { daemon_root: "/var/lib/carrel".into(), host: &host };
//! let plan = plan_mounts(&request, &["/data".to_string()], &ctx).unwrap();
//! plan.check_start().unwrap();
//! let kinds: Vec<_> = plan.mounts.iter().map(|m| (m.type_name(), m.target())).collect();
//! assert_eq!(
//!     kinds,
//!     [("bind", "/content"), ("volume", "/var/log/app"), ("tmpfs", "/run"), ("volume", "/data")]
//! );
//! let MountSpec::Tmpfs(run) = &plan.mounts[2] else { unreachable!() };
//! assert_eq!(run.options, ["noexec", "nosuid", "nodev", "rprivate", "size=64m"]);
//! ```

#![warn(missing_docs)]

pub mod api;
pub mod cli;
pub mod csv;
mod error;
pub mod gostr;
pub mod host;
pub mod plan;
pub mod spec;
pub mod tmpfs;
pub mod volume;

pub use api::{
    ApiMount, BindOptions, DriverConfig, Empty, ImageOptions, MountRequest, TmpfsOptions,
    VolumeOptions,
};
pub use cli::{CliFlags, parse_mount_flag, parse_volume_spec};
pub use error::{MountError, Stage};
pub use host::{FixedHost, HostPaths, RealHost};
pub use plan::{MountPlan, PlanContext, check_proc_destination, plan_mounts};
pub use spec::{
    ANONYMOUS_VOLUME_LABEL, BindRecursive, BindSpec, ImageSpec, MountSpec, Origin, Propagation,
    SelinuxRelabel, TmpfsSpec, VolumeSpec, VolumesFromSpec,
};
pub use tmpfs::{MountFlag, TmpfsMountArgs};
pub use volume::{
    check_local_volume_create, is_valid_local_volume_name, validate_local_driver_options,
    validate_local_volume_name,
};

/// Go-compatible path helpers Docker's normalization relies on.
pub mod path {
    pub use crate::gostr::{abs, clean, is_abs, is_local};
}
