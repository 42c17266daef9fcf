//! From a [`RunPlan`] (everything resolved: user ids, paths, mounts) to an OCI runtime [`Spec`]
//! with Docker's defaults. Pure data: nothing here touches the host except the two helpers that
//! read or prepare the container root ([`resolve_user`], [`prepare_workdir`]), and they reach
//! it only through a [`Root`] handle, because image content is untrusted.
//!
//! The planner (the container store) builds a `RunPlan` at start, writes it to the container
//! directory, and the monitor reads it back, mounts the root and renders the spec with
//! [`oci_spec`].

use std::collections::HashSet;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use carrel_core::fs::Root;
use oci_spec::runtime::{
    Capability, LinuxBuilder, LinuxCapabilitiesBuilder, LinuxDeviceCgroupBuilder, LinuxDeviceType,
    LinuxNamespaceBuilder, LinuxNamespaceType, LinuxResourcesBuilder, Mount, MountBuilder,
    PosixRlimitBuilder, PosixRlimitType, ProcessBuilder, RootBuilder, Spec, SpecBuilder,
    UserBuilder,
};
use rustix::fs::{Mode, OFlags};
use serde::{Deserialize, Serialize};

use super::runtime::{RunError, Runtime};

/// The OCI runtime spec version carrel writes.
pub const OCI_VERSION: &str = "1.0.2-dev";

/// Docker's default `PATH` when the image sets none.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// The cgroup parent of every container (`/carrel/<id>`).
pub const CGROUP_PARENT: &str = "/carrel";

/// Docker's `RLIMIT_NOFILE` for containers (soft and hard), as dockerd's unit gives them.
pub const DEFAULT_NOFILE: u64 = 1_048_576;

/// Docker's default stop timeout in seconds.
pub const DEFAULT_STOP_TIMEOUT: u64 = 10;

/// Docker's `RLIMIT_NOFILE` ([`DEFAULT_NOFILE`]) capped at this process's hard limit: raising it
/// needs `CAP_SYS_RESOURCE`, which carrel may lack (a runtime then fails to set it).
pub fn default_nofile() -> u64 {
    rustix::process::getrlimit(rustix::process::Resource::Nofile)
        .maximum
        .map_or(DEFAULT_NOFILE, |m| m.min(DEFAULT_NOFILE))
}

/// Docker's default capability set for unprivileged containers.
pub const DEFAULT_CAPABILITIES: [Capability; 14] = [
    Capability::Chown,
    Capability::DacOverride,
    Capability::Fsetid,
    Capability::Fowner,
    Capability::Mknod,
    Capability::NetRaw,
    Capability::Setgid,
    Capability::Setuid,
    Capability::Setfcap,
    Capability::Setpcap,
    Capability::NetBindService,
    Capability::SysChroot,
    Capability::Kill,
    Capability::AuditWrite,
];

/// Docker's masked paths (`/dev/null` bind or an empty read-only tmpfs over them).
pub const DEFAULT_MASKED_PATHS: [&str; 12] = [
    "/proc/asound",
    "/proc/acpi",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Docker's read-only paths.
pub const DEFAULT_READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Network mode of a container. carrel has no container networking: a container either gets an
/// empty network namespace (loopback only, Docker's `none`) or shares the host's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    /// A new network namespace with only `lo`.
    #[default]
    None,
    /// The host's network namespace.
    Host,
}

impl NetworkMode {
    /// Parse `HostConfig.NetworkMode` (`""`, `default`, `none`, `bridge`→ none is refused).
    pub fn parse(mode: &str) -> Result<NetworkMode, RunError> {
        match mode {
            "" | "default" | "none" => Ok(NetworkMode::None),
            "host" => Ok(NetworkMode::Host),
            other => Err(RunError::InvalidArgument(format!(
                "network mode {other:?} is not supported: carrel has no container networking (use none or host)"
            ))),
        }
    }
}

/// A user resolved against the image's `/etc/passwd` and `/etc/group`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResolvedUser {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Supplementary groups (membership in `/etc/group`, then `--group-add`).
    pub additional_gids: Vec<u32>,
    /// Home directory from `/etc/passwd` (`/` when unknown), for `HOME`.
    pub home: String,
}

/// Everything the monitor needs to run one container, resolved up front by the store. Written as
/// `plan.json` into the container directory.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RunPlan {
    /// Full container id (64 hex).
    pub id: String,
    /// The container directory: bundle (`config.json`), logs, sockets, monitor lock.
    pub bundle: PathBuf,
    /// Where the root filesystem is (mounted there by the monitor from [`RunPlan::rootfs_mounts`]).
    pub rootfs: PathBuf,
    /// The storage driver's mounts for the root, stacked in order on [`RunPlan::rootfs`]. Empty:
    /// the root is a plain directory that needs no mount.
    #[serde(default)]
    pub rootfs_mounts: Vec<carrel_mount::Mount>,
    /// `--read-only`.
    #[serde(default)]
    pub readonly_rootfs: bool,
    /// The process: entrypoint + command.
    pub args: Vec<String>,
    /// Environment (`KEY=value`), final (see [`docker_env`]).
    #[serde(default)]
    pub env: Vec<String>,
    /// Working directory (absolute, existing inside the root: see [`prepare_workdir`]).
    #[serde(default)]
    pub cwd: String,
    /// The user, when already resolved (see [`RunPlan::user_spec`]).
    #[serde(default)]
    pub user: ResolvedUser,
    /// `--user` as given (`name`, `uid`, `name:group`, `uid:gid`): when set, the monitor resolves
    /// it against the mounted root's `/etc/passwd` and `/etc/group` ([`RunPlan::resolve_in_root`])
    /// and replaces [`RunPlan::user`]; an unknown name fails the start with Docker's message.
    #[serde(default)]
    pub user_spec: Option<String>,
    /// `--group-add` (names or ids), resolved with [`RunPlan::user_spec`].
    #[serde(default)]
    pub group_add: Vec<String>,
    /// Host name.
    #[serde(default)]
    pub hostname: String,
    /// Domain name.
    #[serde(default)]
    pub domainname: String,
    /// Allocate a pseudo-terminal.
    #[serde(default)]
    pub tty: bool,
    /// Keep stdin open (`-i`).
    #[serde(default)]
    pub open_stdin: bool,
    /// Close the container's stdin when the first client that attached it goes away.
    #[serde(default)]
    pub stdin_once: bool,
    /// Initial terminal size `(height, width)`; `(0, 0)`: the runtime's default.
    #[serde(default)]
    pub console_size: (u16, u16),
    /// Network mode.
    #[serde(default)]
    pub network: NetworkMode,
    /// Extra mounts in OCI form, after the defaults (the monitor adds the user's here once it
    /// has set up [`RunPlan::user_mounts`]).
    #[serde(default)]
    pub mounts: Vec<Mount>,
    /// The user's volumes, binds and tmpfs, in the order they are applied; the monitor pins
    /// their sources and resolves their destinations inside the mounted root
    /// ([`super::mounts::prepare_user_mounts`]).
    #[serde(default)]
    pub user_mounts: Vec<super::mounts::PlannedMount>,
    /// Propagation of the root (`shared`, `rslave`) when a user mount needs it; `None`: the
    /// runtime's default.
    #[serde(default)]
    pub rootfs_propagation: Option<String>,
    /// The OCI runtime.
    pub runtime: Runtime,
    /// The json-file log (`<container dir>/<id>-json.log`).
    pub log_path: PathBuf,
    /// `--rm`.
    #[serde(default)]
    pub auto_remove: bool,
    /// The stop signal (`SIGTERM`, `TERM`, `15`).
    #[serde(default)]
    pub stop_signal: String,
    /// Seconds between the stop signal and SIGKILL.
    #[serde(default)]
    pub stop_timeout: u64,
    /// File bind-mounted on `/etc/hosts`.
    #[serde(default)]
    pub hosts_path: Option<PathBuf>,
    /// File bind-mounted on `/etc/hostname`.
    #[serde(default)]
    pub hostname_path: Option<PathBuf>,
    /// File bind-mounted on `/etc/resolv.conf`.
    #[serde(default)]
    pub resolv_conf_path: Option<PathBuf>,
    /// `/dev/shm` size in bytes (0: Docker's 64 MiB).
    #[serde(default)]
    pub shm_size: u64,
    /// Masked paths (`None`: Docker's).
    #[serde(default)]
    pub masked_paths: Option<Vec<String>>,
    /// Read-only paths (`None`: Docker's).
    #[serde(default)]
    pub readonly_paths: Option<Vec<String>>,
    /// `RLIMIT_NOFILE` (soft and hard) of the process; 0: [`default_nofile`].
    #[serde(default)]
    pub nofile: u64,
}

impl RunPlan {
    /// The plan's file name in the container directory.
    pub const FILE: &'static str = "plan.json";

    /// Write the plan into `dir`, atomically (a reader sees the old plan or the new one). It is
    /// not synced: a plan is written anew at every start and lives no longer than the run it
    /// describes (a crash of the host ends the run too), so an fsync would only slow each start.
    pub fn save(&self, dir: &Path) -> Result<(), RunError> {
        let data = serde_json::to_vec(self)
            .map_err(|e| RunError::Internal(format!("encoding run plan: {e}")))?;
        write_replace(dir, Self::FILE, &data)
            .map_err(|e| RunError::io("writing", dir.join(Self::FILE), e))
    }

    /// Read the plan of the container directory `dir`.
    pub fn load(dir: &Path) -> Result<RunPlan, RunError> {
        let path = dir.join(Self::FILE);
        let data = std::fs::read(&path).map_err(|e| RunError::io("reading", &path, e))?;
        serde_json::from_slice(&data)
            .map_err(|e| RunError::Internal(format!("{}: {e}", path.display())))
    }

    /// Finish the plan against its mounted root (done by the monitor after mounting it, the way
    /// Docker does at start): resolve [`RunPlan::user_spec`] inside the root, add `HOME` from it
    /// when the environment has none, and create the working directory inside the root.
    pub fn resolve_in_root(&mut self) -> Result<(), RunError> {
        let needs_root = self.user_spec.is_some() || !matches!(self.cwd.as_str(), "" | "/");
        if !needs_root {
            return Ok(());
        }
        let root =
            Root::open(&self.rootfs).map_err(|e| RunError::io("opening", &self.rootfs, e))?;
        if let Some(spec) = &self.user_spec {
            self.user = resolve_user(&root, spec, &self.group_add)?;
            if !self.env.iter().any(|e| e.starts_with("HOME=")) {
                self.env.push(format!("HOME={}", self.user.home));
            }
        }
        self.cwd = prepare_workdir(&root, &self.cwd)?;
        Ok(())
    }

    /// The cgroup path of the container.
    pub fn cgroups_path(&self) -> String {
        format!("{CGROUP_PARENT}/{}", self.id)
    }
}

fn mount(dest: &str, typ: &str, source: &str, options: &[&str]) -> Mount {
    MountBuilder::default()
        .destination(dest)
        .typ(typ)
        .source(source)
        .options(options.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .build()
        .expect("all mount fields are set")
}

/// Docker's default mounts, with `/dev/shm` of `shm_size` bytes.
pub fn default_mounts(shm_size: u64) -> Vec<Mount> {
    let shm = if shm_size == 0 {
        super::types::DEFAULT_SHM_SIZE as u64
    } else {
        shm_size
    };
    let shm_opt = format!("size={shm}");
    vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"]),
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        ),
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        ),
        mount(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", "ro"],
        ),
        mount(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &["ro", "nosuid", "noexec", "nodev"],
        ),
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        ),
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", &shm_opt],
        ),
    ]
}

/// The device cgroup rules Docker gives unprivileged containers: deny all, allow `mknod` of
/// anything and use of the default devices (null, zero, full, random, urandom, tty, console,
/// ptmx, pts, tun).
fn default_device_rules() -> Vec<oci_spec::runtime::LinuxDeviceCgroup> {
    let rule = |allow: bool,
                typ: Option<LinuxDeviceType>,
                major: Option<i64>,
                minor: Option<i64>,
                access: &str| {
        let mut b = LinuxDeviceCgroupBuilder::default()
            .allow(allow)
            .access(access);
        if let Some(t) = typ {
            b = b.typ(t);
        }
        if let Some(m) = major {
            b = b.major(m);
        }
        if let Some(m) = minor {
            b = b.minor(m);
        }
        b.build().expect("all device rule fields are set")
    };
    let c = Some(LinuxDeviceType::C);
    vec![
        rule(false, None, None, None, "rwm"),
        rule(true, c, None, None, "m"),
        rule(true, Some(LinuxDeviceType::B), None, None, "m"),
        rule(true, c, Some(1), Some(3), "rwm"),
        rule(true, c, Some(1), Some(8), "rwm"),
        rule(true, c, Some(1), Some(7), "rwm"),
        rule(true, c, Some(5), Some(0), "rwm"),
        rule(true, c, Some(5), Some(1), "rwm"),
        rule(true, c, Some(1), Some(5), "rwm"),
        rule(true, c, Some(1), Some(9), "rwm"),
        rule(true, c, Some(136), None, "rwm"),
        rule(true, c, Some(5), Some(2), "rwm"),
        rule(true, c, Some(10), Some(200), "rwm"),
    ]
}

fn etc_bind(dest: &str, source: &Path, readonly: bool) -> Mount {
    let mut options = vec!["rbind".to_string(), "rprivate".to_string()];
    if readonly {
        options.push("ro".into());
    }
    MountBuilder::default()
        .destination(dest)
        .typ("bind")
        .source(source)
        .options(options)
        .build()
        .expect("all mount fields are set")
}

/// Render the OCI runtime spec of `plan` with Docker's defaults.
pub fn oci_spec(plan: &RunPlan) -> Result<Spec, RunError> {
    let bad = |e: oci_spec::OciSpecError| RunError::Internal(format!("building OCI spec: {e}"));
    let caps: HashSet<Capability> = DEFAULT_CAPABILITIES.iter().copied().collect();
    let mut capabilities = LinuxCapabilitiesBuilder::default()
        .bounding(caps.clone())
        .effective(caps.clone())
        .permitted(caps)
        .build()
        .map_err(bad)?;
    // Docker grants no inheritable or ambient capabilities (the builder's default has some).
    capabilities.set_inheritable(None);
    capabilities.set_ambient(None);
    let mut user = UserBuilder::default().uid(plan.user.uid).gid(plan.user.gid);
    if !plan.user.additional_gids.is_empty() {
        user = user.additional_gids(plan.user.additional_gids.clone());
    }
    let user = user.build().map_err(bad)?;
    let nofile = if plan.nofile == 0 {
        default_nofile()
    } else {
        plan.nofile
    };
    let rlimit = PosixRlimitBuilder::default()
        .typ(PosixRlimitType::RlimitNofile)
        .soft(nofile)
        .hard(nofile)
        .build()
        .map_err(bad)?;
    let cwd = if plan.cwd.is_empty() { "/" } else { &plan.cwd };
    let mut process = ProcessBuilder::default()
        .terminal(plan.tty)
        .user(user)
        .args(plan.args.clone())
        .env(plan.env.clone())
        .cwd(cwd)
        .capabilities(capabilities)
        .rlimits(vec![rlimit])
        .no_new_privileges(false);
    if plan.tty && plan.console_size.0 > 0 && plan.console_size.1 > 0 {
        process = process.console_size(
            oci_spec::runtime::BoxBuilder::default()
                .height(plan.console_size.0 as u64)
                .width(plan.console_size.1 as u64)
                .build()
                .map_err(bad)?,
        );
    }
    let process = process.build().map_err(bad)?;

    let mut namespaces = Vec::new();
    let mut kinds = vec![
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Mount,
    ];
    if plan.network == NetworkMode::None {
        kinds.push(LinuxNamespaceType::Network);
    }
    kinds.push(LinuxNamespaceType::Cgroup);
    for typ in kinds {
        namespaces.push(
            LinuxNamespaceBuilder::default()
                .typ(typ)
                .build()
                .map_err(bad)?,
        );
    }
    let resources = LinuxResourcesBuilder::default()
        .devices(default_device_rules())
        .build()
        .map_err(bad)?;
    let masked = plan
        .masked_paths
        .clone()
        .unwrap_or_else(|| DEFAULT_MASKED_PATHS.iter().map(|s| s.to_string()).collect());
    let readonly = plan.readonly_paths.clone().unwrap_or_else(|| {
        DEFAULT_READONLY_PATHS
            .iter()
            .map(|s| s.to_string())
            .collect()
    });
    let mut linux = LinuxBuilder::default()
        .namespaces(namespaces)
        .resources(resources)
        .cgroups_path(plan.cgroups_path())
        .masked_paths(masked)
        .readonly_paths(readonly);
    if let Some(p) = &plan.rootfs_propagation {
        linux = linux.rootfs_propagation(p.clone());
    }
    let linux = linux.build().map_err(bad)?;

    let mut mounts = default_mounts(plan.shm_size);
    // Docker's network files: writable unless the root is read-only.
    let etc_ro = plan.readonly_rootfs;
    if let Some(p) = &plan.resolv_conf_path {
        mounts.push(etc_bind("/etc/resolv.conf", p, etc_ro));
    }
    if let Some(p) = &plan.hostname_path {
        mounts.push(etc_bind("/etc/hostname", p, etc_ro));
    }
    if let Some(p) = &plan.hosts_path {
        mounts.push(etc_bind("/etc/hosts", p, etc_ro));
    }
    // A user mount on a default destination replaces the default, and one on `/dev` replaces
    // every default below it too (as Docker does).
    let user_dests: HashSet<&Path> = plan
        .mounts
        .iter()
        .map(|m| m.destination().as_path())
        .collect();
    let user_dev = user_dests.contains(Path::new("/dev"));
    mounts.retain(|m| {
        let dest = m.destination().as_path();
        let under_user_dev = user_dev && dest.starts_with("/dev");
        !(user_dests.contains(dest) || under_user_dev)
    });
    mounts.extend(plan.mounts.iter().cloned());

    let root = RootBuilder::default()
        .path(&plan.rootfs)
        .readonly(plan.readonly_rootfs)
        .build()
        .map_err(bad)?;
    let mut spec = SpecBuilder::default()
        .version(OCI_VERSION)
        .root(root)
        .process(process)
        .mounts(mounts)
        .linux(linux);
    if !plan.hostname.is_empty() {
        spec = spec.hostname(plan.hostname.clone());
    }
    if !plan.domainname.is_empty() {
        spec = spec.domainname(plan.domainname.clone());
    }
    spec.build().map_err(bad)
}

/// Write `spec` as `config.json` into `bundle` (crash-safely).
pub fn write_config(bundle: &Path, spec: &Spec) -> Result<(), RunError> {
    let data = serde_json::to_vec(spec)
        .map_err(|e| RunError::Internal(format!("encoding config.json: {e}")))?;
    write_replace(bundle, "config.json", &data)
        .map_err(|e| RunError::io("writing", bundle.join("config.json"), e))
}

/// Replace `dir/name` with `data` atomically (temp file and rename) but without `fsync`: for
/// files that are rewritten on every start and worthless after a crash of the host (the
/// container does not survive it either), where syncing would only add latency.
pub fn write_replace(dir: &Path, name: &str, data: &[u8]) -> std::io::Result<()> {
    write_replace_mode(dir, name, data, 0o600)
}

/// [`write_replace`] with the file mode of a new file.
pub fn write_replace_mode(dir: &Path, name: &str, data: &[u8], mode: u32) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let r = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .and_then(|mut f| f.write_all(data))
        .and_then(|()| std::fs::rename(&tmp, dir.join(name)));
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r
}

/// The environment Docker gives a container: `PATH` (when the image sets none), `HOSTNAME`,
/// `TERM=xterm` with a terminal, `HOME` from the resolved user (when not set), then `env` (image
/// environment followed by `-e`, later entries winning).
pub fn docker_env(env: &[String], hostname: &str, tty: bool, home: &str) -> Vec<String> {
    let mut out = base_env(env, hostname, tty);
    if !out.iter().any(|e| e.starts_with("HOME=")) {
        let home = if home.is_empty() { "/" } else { home };
        out.push(format!("HOME={home}"));
    }
    out
}

/// [`docker_env`] without `HOME`: what the store plans before the user is known. The monitor adds
/// `HOME` when it resolves `--user` in the mounted root ([`RunPlan::resolve_in_root`]); without
/// `--user` the runtime sets it from the root user's `/etc/passwd` entry, as Docker does.
pub fn base_env(env: &[String], hostname: &str, tty: bool) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let set = |out: &mut Vec<String>, kv: String| {
        let key = kv.split('=').next().unwrap_or("").to_string();
        if let Some(pos) = out
            .iter()
            .position(|e| e.split('=').next() == Some(key.as_str()))
        {
            out[pos] = kv;
        } else {
            out.push(kv);
        }
    };
    set(&mut out, format!("PATH={DEFAULT_PATH}"));
    if !hostname.is_empty() {
        set(&mut out, format!("HOSTNAME={hostname}"));
    }
    if tty {
        set(&mut out, "TERM=xterm".into());
    }
    for kv in env {
        set(&mut out, kv.clone());
    }
    out
}

/// Most bytes read from an image's `/etc/passwd` or `/etc/group`.
const MAX_DB_FILE: u64 = 16 << 20;

/// Read a regular file inside the root (symlinks resolved inside it). `Ok(None)` when missing.
fn read_in_root(root: &Root, rel: &str) -> Result<Option<String>, RunError> {
    let fd: OwnedFd = match root.open_at(
        Path::new(rel),
        OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => return Ok(None),
        Err(e) => return Err(RunError::io("opening", root.path().join(rel), e)),
    };
    let st = rustix::fs::fstat(&fd)
        .map_err(|e| RunError::io("stat", root.path().join(rel), e.into()))?;
    if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::RegularFile {
        return Err(RunError::InvalidArgument(format!(
            "/{rel} in the container is not a regular file"
        )));
    }
    let mut data = String::new();
    std::fs::File::from(fd)
        .take(MAX_DB_FILE)
        .read_to_string(&mut data)
        .map_err(|e| RunError::io("reading", root.path().join(rel), e))?;
    Ok(Some(data))
}

#[derive(Debug)]
struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
    home: String,
}

#[derive(Debug)]
struct GroupEntry {
    name: String,
    gid: u32,
    members: Vec<String>,
}

fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            Some(PasswdEntry {
                name: f.first()?.to_string(),
                uid: f.get(2)?.trim().parse().ok()?,
                gid: f.get(3).and_then(|g| g.trim().parse().ok()).unwrap_or(0),
                home: f.get(5).map(|s| s.to_string()).unwrap_or_default(),
            })
        })
        .collect()
}

fn parse_group(text: &str) -> Vec<GroupEntry> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            Some(GroupEntry {
                name: f.first()?.to_string(),
                gid: f.get(2)?.trim().parse().ok()?,
                members: f
                    .get(3)
                    .map(|m| {
                        m.split(',')
                            .map(str::trim)
                            .filter(|s| !s.is_empty())
                            .map(String::from)
                            .collect()
                    })
                    .unwrap_or_default(),
            })
        })
        .collect()
}

fn parse_id(s: &str) -> Option<Result<u32, RunError>> {
    let n: i64 = s.parse().ok()?;
    if !(0..=i64::from(i32::MAX)).contains(&n) {
        return Some(Err(RunError::InvalidArgument(
            "uids and gids must be in range 0-2147483647".into(),
        )));
    }
    Some(Ok(n as u32))
}

/// Resolve `--user` (`name`, `uid`, `name:group`, `uid:gid`, empty for root) and `--group-add`
/// against the image's `/etc/passwd` and `/etc/group`, read inside `root`, with the rules of
/// Docker (runc's `GetExecUser`): a numeric uid or gid without an entry is allowed, a name that
/// has no entry is an error, and supplementary groups come from `/etc/group` membership when the
/// group is not given explicitly.
pub fn resolve_user(
    root: &Root,
    spec: &str,
    group_add: &[String],
) -> Result<ResolvedUser, RunError> {
    let passwd = read_in_root(root, "etc/passwd")?.map(|t| parse_passwd(&t));
    let group = read_in_root(root, "etc/group")?.map(|t| parse_group(&t));
    resolve_user_in(passwd.as_deref(), group.as_deref(), spec, group_add)
}

fn resolve_user_in(
    passwd: Option<&[PasswdEntry]>,
    group: Option<&[GroupEntry]>,
    spec: &str,
    group_add: &[String],
) -> Result<ResolvedUser, RunError> {
    let (user_arg, group_arg) = match spec.split_once(':') {
        Some((u, g)) => (u, g),
        None => (spec, ""),
    };
    let mut out = ResolvedUser {
        home: "/".into(),
        ..Default::default()
    };
    let uid_arg = parse_id(user_arg).transpose()?;
    let matched = passwd.and_then(|p| {
        p.iter().find(|e| {
            if user_arg.is_empty() {
                e.uid == 0
            } else if let Some(uid) = uid_arg {
                e.uid == uid
            } else {
                e.name == user_arg
            }
        })
    });
    let mut matched_name = None;
    if let Some(e) = matched {
        matched_name = Some(e.name.clone());
        out.uid = e.uid;
        out.gid = e.gid;
        if !e.home.is_empty() {
            out.home = e.home.clone();
        }
    } else if !user_arg.is_empty() {
        match uid_arg {
            Some(uid) => out.uid = uid,
            None => {
                return Err(RunError::InvalidArgument(format!(
                    "unable to find user {user_arg}: no matching entries in passwd file"
                )));
            }
        }
    }
    if !group_arg.is_empty() {
        let gid_arg = parse_id(group_arg).transpose()?;
        let found = group.and_then(|g| {
            g.iter().find(|e| match gid_arg {
                Some(gid) => e.gid == gid,
                None => e.name == group_arg,
            })
        });
        out.gid = match (found, gid_arg) {
            (Some(e), _) => e.gid,
            (None, Some(gid)) => gid,
            (None, None) => {
                return Err(RunError::InvalidArgument(format!(
                    "unable to find group {group_arg}: no matching entries in group file"
                )));
            }
        };
    } else if let (Some(name), Some(groups)) = (&matched_name, group) {
        out.additional_gids = groups
            .iter()
            .filter(|g| g.members.iter().any(|m| m == name))
            .map(|g| g.gid)
            .collect();
    }
    for g in group_add {
        let gid = match parse_id(g).transpose()? {
            Some(gid) => gid,
            None => group
                .and_then(|gs| gs.iter().find(|e| &e.name == g))
                .map(|e| e.gid)
                .ok_or_else(|| {
                    RunError::InvalidArgument(format!(
                        "Unable to find group {g}: no matching entries in group file"
                    ))
                })?,
        };
        if !out.additional_gids.contains(&gid) {
            out.additional_gids.push(gid);
        }
    }
    Ok(out)
}

/// Make sure the working directory `cwd` exists inside `root` (created root-owned with mode 0755
/// when missing, resolved inside the root) and return it cleaned. Relative paths are refused, as
/// Docker refuses them.
pub fn prepare_workdir(root: &Root, cwd: &str) -> Result<String, RunError> {
    if cwd.is_empty() {
        return Ok("/".into());
    }
    if !cwd.starts_with('/') {
        return Err(RunError::InvalidArgument(format!(
            "the working directory '{cwd}' is invalid, it needs to be an absolute path"
        )));
    }
    let clean = carrel_core::fs::clean_absolute(Path::new(cwd));
    match root.mkdir_all(&clean, 0o755) {
        Ok(_) => Ok(clean.to_string_lossy().into_owned()),
        Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => Err(RunError::InvalidArgument(
            format!("Cannot mkdir: {cwd} is not a directory"),
        )),
        Err(e) => Err(RunError::io(
            "creating working directory",
            PathBuf::from(cwd),
            e,
        )),
    }
}

/// Write Docker-like `hostname`, `hosts` and `resolv.conf` files into the container directory
/// `dir` and return their paths (for [`RunPlan::hostname_path`], `hosts_path`,
/// `resolv_conf_path`). With the host network, `hosts` and `resolv.conf` are the host's.
pub fn write_network_files(
    dir: &Path,
    hostname: &str,
    network: NetworkMode,
) -> Result<(PathBuf, PathBuf, PathBuf), RunError> {
    // Written anew at every start, like the run plan: atomically, not synced.
    let write = |name: &str, data: &[u8]| -> Result<PathBuf, RunError> {
        write_replace_mode(dir, name, data, 0o644)
            .map_err(|e| RunError::io("writing", dir.join(name), e))?;
        Ok(dir.join(name))
    };
    let hostname_p = write("hostname", format!("{hostname}\n").as_bytes())?;
    let hosts = match network {
        NetworkMode::Host => std::fs::read("/etc/hosts").unwrap_or_default(),
        NetworkMode::None => format!(
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n127.0.0.1\t{hostname}\n"
        )
        .into_bytes(),
    };
    let hosts_p = write("hosts", &hosts)?;
    let host_resolv = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let resolv = match network {
        NetworkMode::Host => host_resolv,
        // Docker drops loopback name servers, which cannot work from another namespace.
        NetworkMode::None => host_resolv
            .lines()
            .filter(|l| {
                let mut f = l.split_whitespace();
                !(f.next() == Some("nameserver")
                    && f.next()
                        .is_some_and(|a| a.starts_with("127.") || a == "::1"))
            })
            .map(|l| format!("{l}\n"))
            .collect(),
    };
    let resolv_p = write("resolv.conf", resolv.as_bytes())?;
    Ok((hostname_p, hosts_p, resolv_p))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn plan() -> RunPlan {
        RunPlan {
            id: "abc".into(),
            nofile: DEFAULT_NOFILE,
            bundle: "/c/abc".into(),
            rootfs: "/c/abc/merged".into(),
            args: vec!["/bin/true".into()],
            env: vec!["PATH=/bin".into()],
            cwd: "/".into(),
            hostname: "abc123".into(),
            runtime: Runtime {
                name: "runc".into(),
                path: "/usr/sbin/runc".into(),
                state_root: "/r/runtime/runc".into(),
            },
            log_path: "/c/abc/abc-json.log".into(),
            ..Default::default()
        }
    }

    fn json(p: &RunPlan) -> Value {
        serde_json::to_value(oci_spec(p).unwrap()).unwrap()
    }

    fn strs(v: &Value) -> Vec<String> {
        let mut out: Vec<String> = v
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_string())
            .collect();
        out.sort();
        out
    }

    #[test]
    fn docker_defaults() {
        let j = json(&plan());
        assert_eq!(j["ociVersion"], OCI_VERSION);
        assert_eq!(j["root"]["path"], "/c/abc/merged");
        assert_eq!(j["hostname"], "abc123");
        let p = &j["process"];
        assert_eq!(p["terminal"], false);
        assert_eq!(p["noNewPrivileges"], false);
        assert_eq!(p["cwd"], "/");
        assert_eq!(p["user"]["uid"], 0);
        let mut want: Vec<String> = [
            "CAP_CHOWN",
            "CAP_DAC_OVERRIDE",
            "CAP_FSETID",
            "CAP_FOWNER",
            "CAP_MKNOD",
            "CAP_NET_RAW",
            "CAP_SETGID",
            "CAP_SETUID",
            "CAP_SETFCAP",
            "CAP_SETPCAP",
            "CAP_NET_BIND_SERVICE",
            "CAP_SYS_CHROOT",
            "CAP_KILL",
            "CAP_AUDIT_WRITE",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        want.sort();
        for set in ["bounding", "effective", "permitted"] {
            assert_eq!(strs(&p["capabilities"][set]), want, "{set}");
        }
        assert!(p["capabilities"].get("inheritable").is_none());
        assert!(p["capabilities"].get("ambient").is_none());
        assert_eq!(p["rlimits"][0]["type"], "RLIMIT_NOFILE");
        assert_eq!(p["rlimits"][0]["soft"], DEFAULT_NOFILE);
        let l = &j["linux"];
        let ns: Vec<&str> = l["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["type"].as_str().unwrap())
            .collect();
        assert_eq!(ns, ["pid", "ipc", "uts", "mount", "network", "cgroup"]);
        assert_eq!(l["cgroupsPath"], "/carrel/abc");
        assert!(l.get("sysctl").is_none());
        assert_eq!(l["maskedPaths"].as_array().unwrap().len(), 12);
        assert_eq!(l["readonlyPaths"][3], "/proc/sys");
        let dev = &l["resources"]["devices"];
        assert_eq!(dev[0]["allow"], false);
        assert_eq!(dev[0]["access"], "rwm");
        assert!(
            dev.as_array()
                .unwrap()
                .iter()
                .any(|d| d["major"] == 136 && d["type"] == "c" && d["allow"] == true)
        );
        let dests: Vec<&str> = j["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["destination"].as_str().unwrap())
            .collect();
        assert_eq!(
            dests,
            [
                "/proc",
                "/dev",
                "/dev/pts",
                "/sys",
                "/sys/fs/cgroup",
                "/dev/mqueue",
                "/dev/shm"
            ]
        );
        let shm = &j["mounts"][6];
        assert!(strs(&shm["options"]).contains(&"size=67108864".to_string()));
        assert_eq!(j["mounts"][3]["options"][3], "ro");
    }

    #[test]
    fn host_network_tty_readonly_and_etc_files() {
        let mut p = plan();
        p.network = NetworkMode::Host;
        p.tty = true;
        p.console_size = (40, 120);
        p.readonly_rootfs = true;
        p.shm_size = 1 << 20;
        p.hosts_path = Some("/c/abc/hosts".into());
        p.resolv_conf_path = Some("/c/abc/resolv.conf".into());
        p.user = ResolvedUser {
            uid: 1000,
            gid: 100,
            additional_gids: vec![10, 20],
            home: "/home/u".into(),
        };
        p.mounts
            .push(mount("/data", "bind", "/host/data", &["rbind", "ro"]));
        let j = json(&p);
        assert_eq!(j["process"]["terminal"], true);
        assert_eq!(j["process"]["consoleSize"]["height"], 40);
        assert_eq!(j["process"]["consoleSize"]["width"], 120);
        assert_eq!(j["process"]["user"]["uid"], 1000);
        assert_eq!(j["process"]["user"]["additionalGids"][1], 20);
        assert_eq!(j["root"]["readonly"], true);
        let ns: Vec<&str> = j["linux"]["namespaces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["type"].as_str().unwrap())
            .collect();
        assert!(!ns.contains(&"network"));
        let mounts = j["mounts"].as_array().unwrap();
        let hosts = mounts
            .iter()
            .find(|m| m["destination"] == "/etc/hosts")
            .unwrap();
        assert_eq!(hosts["type"], "bind");
        assert_eq!(hosts["source"], "/c/abc/hosts");
        assert_eq!(strs(&hosts["options"]), ["rbind", "ro", "rprivate"]);
        assert_eq!(mounts.last().unwrap()["destination"], "/data");
        let shm = mounts
            .iter()
            .find(|m| m["destination"] == "/dev/shm")
            .unwrap();
        assert!(strs(&shm["options"]).contains(&"size=1048576".to_string()));
    }

    #[test]
    fn user_mount_replaces_default() {
        let mut p = plan();
        p.mounts
            .push(mount("/dev/shm", "tmpfs", "tmpfs", &["size=1m"]));
        let j = json(&p);
        let shms: Vec<&Value> = j["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|m| m["destination"] == "/dev/shm")
            .collect();
        assert_eq!(shms.len(), 1);
        assert_eq!(shms[0]["options"][0], "size=1m");
    }

    #[test]
    fn plan_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let mut p = plan();
        p.rootfs_mounts = vec![carrel_mount::Mount::bind("/x", false)];
        p.save(dir.path()).unwrap();
        assert_eq!(RunPlan::load(dir.path()).unwrap(), p);
    }

    #[test]
    fn env_like_docker() {
        let env = docker_env(
            &["PATH=/bin".into(), "A=1".into(), "A=2".into()],
            "h",
            true,
            "/root",
        );
        assert_eq!(
            env,
            ["PATH=/bin", "HOSTNAME=h", "TERM=xterm", "A=2", "HOME=/root"]
        );
        let env = docker_env(&["HOME=/x".into()], "", false, "/root");
        assert_eq!(env, [format!("PATH={DEFAULT_PATH}"), "HOME=/x".into()]);
    }

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n# comment\n\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\nalice:x:1000:1000::/home/alice:/bin/sh\n";
    const GROUP: &str =
        "root:x:0:\nwheel:x:10:alice,bob\nstaff:x:50:bob\nalice:x:1000:\naudio:x:29:alice\n";

    fn resolve(spec: &str, add: &[&str]) -> Result<ResolvedUser, RunError> {
        let p = parse_passwd(PASSWD);
        let g = parse_group(GROUP);
        let add: Vec<String> = add.iter().map(|s| s.to_string()).collect();
        resolve_user_in(Some(&p), Some(&g), spec, &add)
    }

    #[test]
    fn users_like_docker() {
        let r = resolve("", &[]).unwrap();
        assert_eq!((r.uid, r.gid, r.home.as_str()), (0, 0, "/root"));
        let a = resolve("alice", &[]).unwrap();
        assert_eq!((a.uid, a.gid), (1000, 1000));
        assert_eq!(a.additional_gids, [10, 29]);
        assert_eq!(a.home, "/home/alice");
        let a = resolve("1000", &[]).unwrap();
        assert_eq!(a.additional_gids, [10, 29]);
        // An explicit group: no supplementary groups from membership.
        let a = resolve("alice:staff", &[]).unwrap();
        assert_eq!((a.uid, a.gid), (1000, 50));
        assert!(a.additional_gids.is_empty());
        let n = resolve("4242:4343", &[]).unwrap();
        assert_eq!((n.uid, n.gid, n.home.as_str()), (4242, 4343, "/"));
        let n = resolve("4242", &["wheel", "77"]).unwrap();
        assert_eq!((n.uid, n.gid), (4242, 0));
        assert_eq!(n.additional_gids, [10, 77]);
        assert_eq!(
            resolve("bob", &[]).unwrap_err().to_string(),
            "unable to find user bob: no matching entries in passwd file"
        );
        assert_eq!(
            resolve("alice:nogroup", &[]).unwrap_err().to_string(),
            "unable to find group nogroup: no matching entries in group file"
        );
        assert!(resolve("-1", &[]).is_err());
        // No passwd file at all: numeric ids still work, names do not.
        let n = resolve_user_in(None, None, "5:6", &[]).unwrap();
        assert_eq!((n.uid, n.gid), (5, 6));
        assert!(resolve_user_in(None, None, "alice", &[]).is_err());
    }

    #[test]
    fn user_files_are_read_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("passwd"), "evil:x:0:0::/:/bin/sh\n").unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        // An absolute symlink that would leave the root on the host.
        std::os::unix::fs::symlink(outside.path().join("passwd"), dir.path().join("etc/passwd"))
            .unwrap();
        std::os::unix::fs::symlink("/../../../etc/gshadow", dir.path().join("etc/group")).unwrap();
        let root = Root::open(dir.path()).unwrap();
        // Both links resolve inside the root, where nothing exists: only numeric users work.
        assert!(resolve_user(&root, "evil", &[]).is_err());
        assert_eq!(resolve_user(&root, "7", &[]).unwrap().uid, 7);
        // A FIFO is refused, not opened for a blocking read.
        std::fs::remove_file(dir.path().join("etc/passwd")).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            dir.path().join("etc/passwd"),
            rustix::fs::FileType::Fifo,
            Mode::from_raw_mode(0o644),
            0,
        )
        .unwrap();
        assert!(resolve_user(&root, "0", &[]).is_err());
        std::fs::remove_file(dir.path().join("etc/passwd")).unwrap();
        std::fs::write(dir.path().join("etc/passwd"), PASSWD).unwrap();
        assert_eq!(resolve_user(&root, "alice", &[]).unwrap().uid, 1000);
    }

    #[test]
    fn workdir_is_created_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("link")).unwrap();
        let root = Root::open(dir.path()).unwrap();
        assert_eq!(prepare_workdir(&root, "/a/./b/../c").unwrap(), "/a/c");
        assert!(dir.path().join("a/c").is_dir());
        prepare_workdir(&root, "/link/work").unwrap();
        assert!(!outside.path().join("work").exists());
        assert!(prepare_workdir(&root, "rel").is_err());
        std::fs::write(dir.path().join("file"), "").unwrap();
        assert_eq!(
            prepare_workdir(&root, "/file/x").unwrap_err().to_string(),
            "Cannot mkdir: /file/x is not a directory"
        );
        assert_eq!(prepare_workdir(&root, "").unwrap(), "/");
    }

    #[test]
    fn network_files() {
        let dir = tempfile::tempdir().unwrap();
        let (h, hosts, r) = write_network_files(dir.path(), "box", NetworkMode::None).unwrap();
        assert_eq!(std::fs::read_to_string(h).unwrap(), "box\n");
        assert!(
            std::fs::read_to_string(hosts)
                .unwrap()
                .contains("127.0.0.1\tbox")
        );
        assert!(r.exists());
    }
}
