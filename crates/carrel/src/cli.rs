//! The command line: Docker's commands, flags and aliases, plus carrel's own additions.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// carrel: a container storage engine with Docker's commands, without a daemon.
///
/// Image layers are read-only and shared, every container gets a copy-on-write layer, and
/// volumes, bind mounts and tmpfs work as Docker users expect. Every carrel process works on the
/// data root directly (like Podman); `carrel serve` adds the Docker Engine API for Docker's tools.
#[derive(Debug, Parser)]
#[command(name = "carrel", version, about, max_term_width = 100)]
pub struct Cli {
    /// Options of every command.
    #[command(flatten)]
    pub global: GlobalOptions,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Options of every command.
#[derive(Debug, Args)]
pub struct GlobalOptions {
    /// Data root: images, layers, containers and volumes live here.
    #[arg(long, global = true, env = "CARREL_ROOT", default_value = carrel_engine::DEFAULT_ROOT, value_name = "DIR")]
    pub root: PathBuf,
    /// Storage driver: overlay2 (kernel overlayfs, the default) or copy (full copies, with
    /// reflinks on XFS and btrfs). A data root keeps the driver it was created with.
    #[arg(
        long,
        global = true,
        env = "CARREL_STORAGE_DRIVER",
        value_name = "NAME"
    )]
    pub storage_driver: Option<String>,
    /// Log level: error, warn, info, debug or trace (give it before the command, as with docker).
    #[arg(short = 'l', long, default_value = "warn", value_name = "LEVEL")]
    pub log_level: String,
    /// Debug logging (same as --log-level debug; before the command).
    #[arg(short = 'D', long)]
    pub debug: bool,
}

/// The commands.
// `defer`: a subcommand's flags are built only when it is the one invoked (here and in every
// nested command set), instead of the whole tree at every start of every carrel process.
#[derive(Debug, Subcommand)]
#[command(defer = true)]
pub enum Command {
    /// List images (same as `image ls`).
    Images(ImageListArgs),
    /// Manage images.
    #[command(subcommand)]
    Image(ImageCommand),
    /// Load images from a tar archive (`docker save` format or OCI layout) or STDIN.
    Load(LoadArgs),
    /// Save images to a tar archive (streamed to STDOUT by default).
    Save(SaveArgs),
    /// Import the contents of a root filesystem tarball to create an image.
    Import(ImportArgs),
    /// Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE.
    Tag(TagArgs),
    /// Remove one or more images.
    Rmi(RemoveImageArgs),
    /// Show the history of an image.
    History(HistoryArgs),
    /// Return low-level information on images.
    Inspect(InspectArgs),
    /// Display system-wide information.
    Info(InfoArgs),
    /// Show the carrel version information.
    Version,
    /// Manage the data root.
    #[command(subcommand)]
    System(SystemCommand),
    /// Manage volumes.
    #[command(subcommand)]
    Volume(VolumeCommand),
    /// Run a container's monitor (internal: carrel starts it for every running container).
    #[command(hide = true)]
    ContainerMonitor(ContainerMonitorArgs),
    /// Serve the Docker Engine API on a unix socket, so Docker's own tools drive carrel.
    Serve(ServeArgs),
    /// Create a new container.
    #[command(disable_help_flag = true)]
    Create(CreateArgs),
    /// Create and run a new container from an image.
    #[command(disable_help_flag = true)]
    Run(RunArgs),
    /// List containers.
    #[command(visible_alias = "ls")]
    Ps(PsArgs),
    /// Remove one or more containers.
    Rm(RmArgs),
    /// Rename a container.
    Rename(RenameArgs),
    /// Manage containers.
    #[command(subcommand)]
    Container(ContainerCommand),
    /// Inspect changes to files or directories on a container's filesystem.
    Diff(DiffArgs),
    /// Create a new image from a container's changes.
    Commit(CommitArgs),
    /// Export a container's filesystem as a tar archive.
    Export(ExportArgs),
    /// Copy files/folders between a container and the local filesystem.
    #[command(long_about = CP_LONG_ABOUT)]
    Cp(CpArgs),
    /// Start one or more stopped containers.
    Start(StartArgs),
    /// Stop one or more running containers.
    Stop(StopArgs),
    /// Kill one or more running containers.
    Kill(KillArgs),
    /// Restart one or more containers.
    Restart(StopArgs),
    /// Block until one or more containers stop, then print their exit codes.
    Wait(WaitArgs),
    /// Fetch the logs of a container.
    Logs(LogsArgs),
    /// Attach local standard input, output, and error streams to a running container.
    Attach(AttachArgs),
    /// Execute a command in a running container.
    Exec(ExecArgs),
}

/// `carrel serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Where to listen: `unix:///path.sock` (mode 0660, owned by root).
    #[arg(
        short = 'H',
        long = "host",
        default_value = "unix:///run/carrel.sock",
        value_name = "ADDRESS"
    )]
    pub host: String,
}

impl Cli {
    /// Docker's usage error for an option clap took as the image or container of `run`,
    /// `create` or `exec` (their first word may not start with `-`: words from the image on
    /// belong to the container's command, so clap lets them start with one): `unknown flag:
    /// --bogus`, on one line with where to find the flags.
    pub fn unknown_flag(&self) -> Option<String> {
        let (command, first) = match &self.command {
            Command::Run(a) | Command::Container(ContainerCommand::Run(a)) => {
                ("run", a.create.image_and_command.first())
            }
            Command::Create(a) | Command::Container(ContainerCommand::Create(a)) => {
                ("create", a.image_and_command.first())
            }
            Command::Exec(a) | Command::Container(ContainerCommand::Exec(a)) => {
                ("exec", a.container_and_command.first())
            }
            _ => return None,
        };
        let word = first?;
        let flag = if let Some(long) = word.strip_prefix("--") {
            format!("unknown flag: --{}", long.split('=').next().unwrap_or(long))
        } else {
            let short = word.strip_prefix('-')?.chars().next()?;
            format!("unknown shorthand flag: '{short}' in {word}")
        };
        Some(format!("{flag} (see 'carrel {command} --help')"))
    }
}

/// `carrel container-monitor` (hidden): the per-container monitor process.
#[derive(Debug, Args)]
pub struct ContainerMonitorArgs {
    /// The full container id.
    pub id: String,
}

/// `carrel container …`.
#[derive(Debug, Subcommand)]
#[command(defer = true)]
pub enum ContainerCommand {
    /// Create a new container.
    #[command(disable_help_flag = true)]
    Create(CreateArgs),
    /// Create and run a new container from an image.
    #[command(disable_help_flag = true)]
    Run(RunArgs),
    /// List containers.
    #[command(visible_alias = "ps", visible_alias = "list")]
    Ls(PsArgs),
    /// Display detailed information on one or more containers.
    Inspect(InspectArgs),
    /// Remove one or more containers.
    #[command(visible_alias = "remove")]
    Rm(RmArgs),
    /// Rename a container.
    Rename(RenameArgs),
    /// Remove all stopped containers.
    Prune(ContainerPruneArgs),
    /// Inspect changes to files or directories on a container's filesystem.
    Diff(DiffArgs),
    /// Create a new image from a container's changes.
    Commit(CommitArgs),
    /// Export a container's filesystem as a tar archive.
    Export(ExportArgs),
    /// Copy files/folders between a container and the local filesystem.
    #[command(long_about = CP_LONG_ABOUT)]
    Cp(CpArgs),
    /// Start one or more stopped containers.
    Start(StartArgs),
    /// Stop one or more running containers.
    Stop(StopArgs),
    /// Kill one or more running containers.
    Kill(KillArgs),
    /// Restart one or more containers.
    Restart(StopArgs),
    /// Block until one or more containers stop, then print their exit codes.
    Wait(WaitArgs),
    /// Fetch the logs of a container.
    Logs(LogsArgs),
    /// Attach local standard input, output, and error streams to a running container.
    Attach(AttachArgs),
    /// Execute a command in a running container.
    Exec(ExecArgs),
}

/// `carrel start`.
#[derive(Debug, Args)]
pub struct StartArgs {
    /// Containers to start.
    #[arg(required = true, value_name = "CONTAINER")]
    pub names: Vec<String>,
    /// Attach STDOUT/STDERR and forward signals.
    #[arg(short, long)]
    pub attach: bool,
    /// Attach container's STDIN.
    #[arg(short, long)]
    pub interactive: bool,
}

/// `carrel stop` and `carrel restart`.
#[derive(Debug, Args)]
pub struct StopArgs {
    /// Containers.
    #[arg(required = true, value_name = "CONTAINER")]
    pub names: Vec<String>,
    /// Seconds to wait before killing the container (default: its stop timeout, else 10).
    #[arg(
        short,
        long = "timeout",
        alias = "time",
        value_name = "SECONDS",
        allow_negative_numbers = true
    )]
    pub timeout: Option<i64>,
    /// Signal to send to the container (default: its stop signal, else SIGTERM).
    #[arg(short, long)]
    pub signal: Option<String>,
}

/// `carrel kill`.
#[derive(Debug, Args)]
pub struct KillArgs {
    /// Containers.
    #[arg(required = true, value_name = "CONTAINER")]
    pub names: Vec<String>,
    /// Signal to send to the container.
    #[arg(short, long, default_value = "KILL")]
    pub signal: String,
}

/// `carrel wait`.
#[derive(Debug, Args)]
pub struct WaitArgs {
    /// Containers.
    #[arg(required = true, value_name = "CONTAINER")]
    pub names: Vec<String>,
}

/// `carrel logs`.
#[derive(Debug, Args)]
pub struct LogsArgs {
    /// The container.
    #[arg(value_name = "CONTAINER")]
    pub name: String,
    /// Follow log output (until the container stops).
    #[arg(short, long)]
    pub follow: bool,
    /// Number of lines to show from the end of the logs ("all" or a number).
    #[arg(short = 'n', long, default_value = "all")]
    pub tail: String,
    /// Show timestamps.
    #[arg(short, long)]
    pub timestamps: bool,
    /// Show extra details provided to logs (accepted; the json-file log has none).
    #[arg(long)]
    pub details: bool,
    /// Show logs since a timestamp (not supported yet).
    #[arg(long)]
    pub since: Option<String>,
    /// Show logs before a timestamp (not supported yet).
    #[arg(long)]
    pub until: Option<String>,
}

/// `carrel attach`.
#[derive(Debug, Args)]
pub struct AttachArgs {
    /// The container.
    #[arg(value_name = "CONTAINER")]
    pub name: String,
    /// Do not attach STDIN.
    #[arg(long)]
    pub no_stdin: bool,
    /// Proxy all received signals to the process.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub sig_proxy: bool,
}

/// `carrel exec`.
#[derive(Debug, Args)]
pub struct ExecArgs {
    /// Detached mode: run command in the background.
    #[arg(short, long)]
    pub detach: bool,
    /// Set environment variables.
    #[arg(short, long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Read in a file of environment variables.
    #[arg(long = "env-file", value_name = "FILE")]
    pub env_file: Vec<PathBuf>,
    /// Keep STDIN open even if not attached.
    #[arg(short, long)]
    pub interactive: bool,
    /// Allocate a pseudo-TTY.
    #[arg(short, long)]
    pub tty: bool,
    /// Username or UID (format: "<name|uid>[:<group|gid>]").
    #[arg(short, long)]
    pub user: Option<String>,
    /// Working directory inside the container.
    #[arg(short, long)]
    pub workdir: Option<String>,
    /// Give extended privileges to the command (not supported).
    #[arg(long)]
    pub privileged: bool,
    /// The container, then the command and its arguments.
    #[arg(
        required = true,
        num_args = 2..,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "CONTAINER COMMAND [ARG...]"
    )]
    pub container_and_command: Vec<String>,
}

/// `carrel diff`.
#[derive(Debug, Args)]
pub struct DiffArgs {
    /// The container.
    #[arg(value_name = "CONTAINER")]
    pub container: String,
}

/// `carrel commit`.
#[derive(Debug, Args)]
pub struct CommitArgs {
    /// Author (e.g., "John Hannibal Smith <hannibal@a-team.com>").
    #[arg(short, long)]
    pub author: Option<String>,
    /// Apply Dockerfile instruction to the created image (CMD, ENTRYPOINT, ENV, EXPOSE, LABEL,
    /// ONBUILD, STOPSIGNAL, USER, VOLUME, WORKDIR).
    #[arg(short, long = "change", value_name = "INSTRUCTION")]
    pub change: Vec<String>,
    /// Commit message.
    #[arg(short, long)]
    pub message: Option<String>,
    /// Pause container during commit (accepted; carrel cannot pause and commits a running
    /// container as it is).
    #[arg(
        short,
        long,
        default_value_t = true,
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "true",
        action = clap::ArgAction::Set
    )]
    pub pause: bool,
    /// The container.
    #[arg(value_name = "CONTAINER")]
    pub container: String,
    /// The repository and tag of the new image.
    #[arg(value_name = "REPOSITORY[:TAG]")]
    pub reference: Option<String>,
}

/// `carrel export`.
#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Write to a file, instead of STDOUT.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// The container.
    #[arg(value_name = "CONTAINER")]
    pub container: String,
}

/// Docker's long help of `cp`.
pub const CP_LONG_ABOUT: &str = "Copy files/folders between a container and the local filesystem

Use '-' as the source to read a tar archive from stdin
and extract it to a directory destination in a container.
Use '-' as the destination to stream a tar archive of a
container source to stdout.";

/// `carrel cp`.
#[derive(Debug, Args)]
pub struct CpArgs {
    /// Archive mode (copy all uid/gid information).
    #[arg(short = 'a', long = "archive")]
    pub archive: bool,
    /// Always follow symbol link in SRC_PATH.
    #[arg(short = 'L', long = "follow-link")]
    pub follow_link: bool,
    /// Suppress progress output during copy. Progress output is automatically suppressed if no
    /// terminal is attached.
    #[arg(short, long)]
    pub quiet: bool,
    /// CONTAINER:SRC_PATH, a local path, or - (a tar archive on STDIN).
    #[arg(value_name = "SRC", allow_hyphen_values = true)]
    pub src: String,
    /// CONTAINER:DEST_PATH, a local path, or - (a tar archive on STDOUT).
    #[arg(value_name = "DEST", allow_hyphen_values = true)]
    pub dest: String,
}

/// Options shared by `create` and `run`.
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// Assign a name to the container.
    #[arg(long)]
    pub name: Option<String>,
    /// Set environment variables (KEY=VALUE, or KEY to copy it from carrel's environment).
    #[arg(short, long = "env", value_name = "KEY=VALUE")]
    pub env: Vec<String>,
    /// Read in a file of environment variables.
    #[arg(long = "env-file", value_name = "FILE")]
    pub env_file: Vec<PathBuf>,
    /// Working directory inside the container.
    #[arg(short, long, value_name = "DIR")]
    pub workdir: Option<String>,
    /// Username or UID (format: <name|uid>[:<group|gid>]), resolved in the image's /etc/passwd
    /// and /etc/group.
    #[arg(short, long)]
    pub user: Option<String>,
    /// Overwrite the default ENTRYPOINT of the image (an empty string clears it).
    #[arg(long, value_name = "COMMAND")]
    pub entrypoint: Option<String>,
    /// Container host name.
    #[arg(short = 'h', long)]
    pub hostname: Option<String>,
    /// Container NIS domain name.
    #[arg(long)]
    pub domainname: Option<String>,
    /// Mount the container's root filesystem as read only (mounts stay writable).
    #[arg(long)]
    pub read_only: bool,
    /// Network mode: none (default: only a loopback device) or host (share the host's network).
    /// carrel does not create container networks, so bridge and user networks are refused.
    #[arg(long, alias = "net", value_name = "MODE")]
    pub network: Option<String>,
    /// Automatically remove the container and its anonymous volumes when it exits.
    #[arg(long)]
    pub rm: bool,
    /// Keep STDIN open even if not attached.
    #[arg(short, long)]
    pub interactive: bool,
    /// Allocate a pseudo-TTY.
    #[arg(short, long)]
    pub tty: bool,
    /// Set meta data on a container (KEY=VALUE).
    #[arg(short, long = "label", value_name = "KEY=VALUE")]
    pub label: Vec<String>,
    /// OCI runtime to use for this container: a name (crun, runc) or a path.
    #[arg(long, value_name = "NAME|PATH")]
    pub runtime: Option<String>,
    /// Signal to stop the container.
    #[arg(long, value_name = "SIGNAL")]
    pub stop_signal: Option<String>,
    /// Timeout (in seconds) to stop a container.
    #[arg(long, value_name = "SECONDS")]
    pub stop_timeout: Option<i64>,
    /// Size of /dev/shm (e.g. 64m).
    #[arg(long, value_name = "SIZE")]
    pub shm_size: Option<String>,
    /// Additional groups to join.
    #[arg(long = "group-add", value_name = "GROUP")]
    pub group_add: Vec<String>,
    /// Bind mount a volume (SOURCE:DEST[:OPTIONS]).
    #[arg(short, long = "volume", value_name = "VOLUME")]
    pub volume: Vec<String>,
    /// Attach a filesystem mount to the container (type=bind|volume|tmpfs,...).
    #[arg(long = "mount", value_name = "MOUNT")]
    pub mount: Vec<String>,
    /// Mount a tmpfs directory (PATH[:OPTIONS]).
    #[arg(long = "tmpfs", value_name = "PATH")]
    pub tmpfs: Vec<String>,
    /// Mount volumes from the specified container(s) (CONTAINER[:ro|rw]).
    #[arg(long = "volumes-from", value_name = "CONTAINER")]
    pub volumes_from: Vec<String>,
    /// Write the container ID to the file.
    #[arg(long, value_name = "FILE")]
    pub cidfile: Option<PathBuf>,
    /// Restart policy (carrel has no daemon: only "no").
    #[arg(long, value_name = "POLICY")]
    pub restart: Option<String>,
    /// Give extended privileges (not supported by carrel).
    #[arg(long)]
    pub privileged: bool,
    /// Publish ports (not supported: carrel does not manage container networking).
    #[arg(short, long = "publish", value_name = "PORT")]
    pub publish: Vec<String>,
    /// Pull image before running: carrel never pulls (only "never" and "missing" are accepted).
    #[arg(long, value_name = "POLICY")]
    pub pull: Option<String>,
    /// Suppress the pull output (accepted for compatibility).
    #[arg(short, long)]
    pub quiet: bool,
    /// Print help.
    #[arg(long, action = clap::ArgAction::Help)]
    pub help: Option<bool>,
    /// The image, then the command and its arguments (options after the image belong to the
    /// command, as with docker).
    #[arg(
        required = true,
        num_args = 1..,
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "IMAGE [COMMAND] [ARG...]"
    )]
    pub image_and_command: Vec<String>,
}

/// `carrel run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Run the container in the background and print its ID.
    #[arg(short, long)]
    pub detach: bool,
    /// Proxy received signals to the process (non-TTY mode only).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub sig_proxy: bool,
    /// Everything `create` takes.
    #[command(flatten)]
    pub create: CreateArgs,
}

/// `carrel ps`.
#[derive(Debug, Args)]
pub struct PsArgs {
    /// Show all containers (default shows just running).
    #[arg(short, long)]
    pub all: bool,
    /// Filter output based on conditions provided (id, name, label, status, exited, ancestor,
    /// before, since, volume).
    #[arg(short, long = "filter", value_name = "FILTER")]
    pub filter: Vec<String>,
    /// Format output using a custom template: 'table', 'table TEMPLATE', 'json', or a Go
    /// template.
    #[arg(long, default_value = "")]
    pub format: String,
    /// Show n last created containers (includes all states).
    #[arg(short = 'n', long, default_value_t = -1)]
    pub last: i64,
    /// Show the latest created container (includes all states).
    #[arg(short, long)]
    pub latest: bool,
    /// Don't truncate output.
    #[arg(long)]
    pub no_trunc: bool,
    /// Only display container IDs.
    #[arg(short, long)]
    pub quiet: bool,
    /// Display total file sizes.
    #[arg(short, long)]
    pub size: bool,
}

/// `carrel rm`.
#[derive(Debug, Args)]
pub struct RmArgs {
    /// Containers to remove.
    #[arg(required = true, value_name = "CONTAINER")]
    pub names: Vec<String>,
    /// Force the removal of a running container (uses SIGKILL).
    #[arg(short, long)]
    pub force: bool,
    /// Remove anonymous volumes associated with the container.
    #[arg(short, long)]
    pub volumes: bool,
}

/// `carrel rename`.
#[derive(Debug, Args)]
pub struct RenameArgs {
    /// The container.
    #[arg(value_name = "CONTAINER")]
    pub container: String,
    /// Its new name.
    #[arg(value_name = "NEW_NAME")]
    pub new_name: String,
}

/// `carrel container prune`.
#[derive(Debug, Args)]
pub struct ContainerPruneArgs {
    /// Provide filter values (label=KEY[=VALUE]).
    #[arg(long = "filter", value_name = "FILTER")]
    pub filter: Vec<String>,
    /// Do not prompt for confirmation.
    #[arg(short, long)]
    pub force: bool,
}

/// `carrel image …`.
#[derive(Debug, Subcommand)]
#[command(defer = true)]
pub enum ImageCommand {
    /// List images.
    #[command(visible_alias = "list")]
    Ls(ImageListArgs),
    /// Display detailed information on one or more images.
    Inspect(InspectArgs),
    /// Remove one or more images.
    #[command(visible_alias = "remove")]
    Rm(RemoveImageArgs),
    /// Create a tag TARGET_IMAGE that refers to SOURCE_IMAGE.
    Tag(TagArgs),
    /// Show the history of an image.
    History(HistoryArgs),
    /// Remove unused images.
    Prune(ImagePruneArgs),
    /// Load images from a tar archive or STDIN.
    Load(LoadArgs),
    /// Save one or more images to a tar archive (streamed to STDOUT by default).
    Save(SaveArgs),
    /// Import the contents of a tarball to create a filesystem image.
    Import(ImportArgs),
    /// Build the demo image from the host's static busybox (Debian's busybox-static), offline.
    ImportBusybox(ImportBusyboxArgs),
}

/// `carrel images`.
#[derive(Debug, Args)]
pub struct ImageListArgs {
    /// Restrict the list to images whose repository matches.
    pub repository: Option<String>,
    /// Show all images (carrel keeps no intermediate build images, so this changes nothing).
    #[arg(short, long)]
    pub all: bool,
    /// Filter output based on conditions provided (dangling=true|false, reference=PATTERN,
    /// label=KEY[=VALUE]).
    #[arg(short, long = "filter", value_name = "FILTER")]
    pub filter: Vec<String>,
    /// Format output using a custom template: 'table', 'table TEMPLATE', 'json', or a Go
    /// template such as '{{.Repository}}:{{.Tag}}'.
    #[arg(long, default_value = "")]
    pub format: String,
    /// Don't truncate output.
    #[arg(long)]
    pub no_trunc: bool,
    /// Only show image IDs.
    #[arg(short, long)]
    pub quiet: bool,
    /// Show digests.
    #[arg(long)]
    pub digests: bool,
}

/// `carrel image inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// Images to inspect.
    #[arg(required = true, value_name = "IMAGE")]
    pub names: Vec<String>,
    /// Format output using a custom template: 'json' or a Go template.
    #[arg(short, long, default_value = "")]
    pub format: String,
    /// Only inspect objects of the given type (container or image).
    #[arg(long = "type", value_name = "TYPE")]
    pub kind: Option<String>,
}

/// `carrel rmi`.
#[derive(Debug, Args)]
pub struct RemoveImageArgs {
    /// Images to remove.
    #[arg(required = true, value_name = "IMAGE")]
    pub names: Vec<String>,
    /// Force removal of the image (all its tags, even if stopped containers use it).
    #[arg(short, long)]
    pub force: bool,
    /// Do not delete untagged parents.
    #[arg(long)]
    pub no_prune: bool,
}

/// `carrel tag`.
#[derive(Debug, Args)]
pub struct TagArgs {
    /// The image to tag (reference or ID).
    #[arg(value_name = "SOURCE_IMAGE[:TAG]")]
    pub source: String,
    /// The new tag.
    #[arg(value_name = "TARGET_IMAGE[:TAG]")]
    pub target: String,
}

/// `carrel history`.
#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// The image.
    #[arg(value_name = "IMAGE")]
    pub name: String,
    /// Print sizes and dates in human readable format.
    #[arg(short = 'H', long, default_value_t = true, action = clap::ArgAction::Set)]
    pub human: bool,
    /// Don't truncate output.
    #[arg(long)]
    pub no_trunc: bool,
    /// Only show image IDs.
    #[arg(short, long)]
    pub quiet: bool,
    /// Format output using a custom template.
    #[arg(long, default_value = "")]
    pub format: String,
}

/// `carrel image prune`.
#[derive(Debug, Args)]
pub struct ImagePruneArgs {
    /// Remove all unused images, not just dangling ones.
    #[arg(short, long)]
    pub all: bool,
    /// Provide filter values (label=KEY[=VALUE]).
    #[arg(long = "filter", value_name = "FILTER")]
    pub filter: Vec<String>,
    /// Do not prompt for confirmation.
    #[arg(short, long)]
    pub force: bool,
}

/// `carrel load`.
#[derive(Debug, Args)]
pub struct LoadArgs {
    /// Read from a tar archive file, instead of STDIN.
    #[arg(short, long, value_name = "FILE")]
    pub input: Option<PathBuf>,
    /// Suppress the load output.
    #[arg(short, long)]
    pub quiet: bool,
}

/// `carrel save`.
#[derive(Debug, Args)]
pub struct SaveArgs {
    /// Images to save.
    #[arg(required = true, value_name = "IMAGE")]
    pub names: Vec<String>,
    /// Write to a file, instead of STDOUT.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

/// `carrel import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// A root filesystem tarball (plain, gzip or zstd), or `-` for STDIN.
    #[arg(value_name = "file|-")]
    pub source: String,
    /// The repository and tag of the new image.
    #[arg(value_name = "REPOSITORY[:TAG]")]
    pub reference: Option<String>,
    /// Apply a Dockerfile instruction to the created image (CMD, ENTRYPOINT, ENV, EXPOSE,
    /// LABEL, ONBUILD, STOPSIGNAL, USER, VOLUME, WORKDIR).
    #[arg(short, long = "change", value_name = "INSTRUCTION")]
    pub change: Vec<String>,
    /// Set a commit message for the imported image.
    #[arg(short, long)]
    pub message: Option<String>,
}

/// `carrel image import-busybox`.
#[derive(Debug, Args)]
pub struct ImportBusyboxArgs {
    /// The static busybox binary to build from.
    #[arg(long, default_value = "/bin/busybox", value_name = "PATH")]
    pub busybox: PathBuf,
    /// The tag of the new image.
    #[arg(
        long,
        default_value = "busybox:latest",
        value_name = "REPOSITORY[:TAG]"
    )]
    pub tag: String,
}

/// `carrel info`.
#[derive(Debug, Args)]
pub struct InfoArgs {
    /// Format output using a custom template ('json' or a Go template).
    #[arg(short, long, default_value = "")]
    pub format: String,
}

/// `carrel system …`.
#[derive(Debug, Subcommand)]
#[command(defer = true)]
pub enum SystemCommand {
    /// Display system-wide information.
    Info(InfoArgs),
    /// Compare metadata with what is on disk; with --repair, fix what can be fixed.
    Check(CheckArgs),
    /// Show carrel disk usage.
    Df(DfArgs),
    /// Remove unused data.
    Prune(SystemPruneArgs),
}

/// `carrel system df`.
#[derive(Debug, Args)]
pub struct DfArgs {
    /// Show detailed information on space usage.
    #[arg(short, long)]
    pub verbose: bool,
    /// Format output using a custom template: 'table', 'table TEMPLATE', 'json', or a Go
    /// template.
    #[arg(long, default_value = "")]
    pub format: String,
}

/// `carrel system prune`.
#[derive(Debug, Args)]
pub struct SystemPruneArgs {
    /// Remove all unused images not just dangling ones.
    #[arg(short, long)]
    pub all: bool,
    /// Provide filter values (label=KEY[=VALUE]).
    #[arg(long = "filter", value_name = "FILTER")]
    pub filter: Vec<String>,
    /// Do not prompt for confirmation.
    #[arg(short, long)]
    pub force: bool,
    /// Prune anonymous volumes.
    #[arg(long)]
    pub volumes: bool,
}

/// `carrel volume …`.
#[derive(Debug, Subcommand)]
#[command(defer = true)]
pub enum VolumeCommand {
    /// Create a volume.
    Create(VolumeCreateArgs),
    /// List volumes.
    #[command(visible_alias = "list")]
    Ls(VolumeListArgs),
    /// Display detailed information on one or more volumes.
    Inspect(VolumeInspectArgs),
    /// Remove one or more volumes. You cannot remove a volume that is in use by a container.
    #[command(visible_alias = "remove")]
    Rm(VolumeRmArgs),
    /// Remove unused local volumes.
    Prune(VolumePruneArgs),
    /// Write a volume's content to a tar archive (streamed to STDOUT by default).
    Export(VolumeExportArgs),
    /// Extract a tar archive (plain, gzip or zstd) into an existing volume.
    Import(VolumeImportArgs),
}

/// `carrel volume create`.
#[derive(Debug, Args)]
pub struct VolumeCreateArgs {
    /// Specify volume driver name.
    #[arg(short, long, default_value = "local")]
    pub driver: String,
    /// Set driver specific options (type, device, o, size).
    #[arg(short, long = "opt", value_name = "KEY=VALUE")]
    pub opt: Vec<String>,
    /// Set metadata for a volume.
    #[arg(long = "label", value_name = "KEY=VALUE")]
    pub label: Vec<String>,
    /// Specify volume name.
    #[arg(long, hide = true)]
    pub name: Option<String>,
    /// The volume's name (none: an anonymous volume with a random name).
    #[arg(value_name = "VOLUME")]
    pub names: Vec<String>,
}

/// `carrel volume ls`.
#[derive(Debug, Args)]
pub struct VolumeListArgs {
    /// Provide filter values (e.g. "dangling=true", "driver=local", "label=KEY[=VALUE]",
    /// "name=REGEXP").
    #[arg(short, long = "filter", value_name = "FILTER")]
    pub filter: Vec<String>,
    /// Format output using a custom template: 'table', 'table TEMPLATE', 'json', or a Go
    /// template.
    #[arg(long, default_value = "")]
    pub format: String,
    /// Only display volume names.
    #[arg(short, long)]
    pub quiet: bool,
}

/// `carrel volume inspect`.
#[derive(Debug, Args)]
pub struct VolumeInspectArgs {
    /// Format output using a custom template: 'json' or a Go template.
    #[arg(short, long, default_value = "")]
    pub format: String,
    /// Volumes to inspect.
    #[arg(required = true, value_name = "VOLUME")]
    pub names: Vec<String>,
}

/// `carrel volume rm`.
#[derive(Debug, Args)]
pub struct VolumeRmArgs {
    /// Force the removal of one or more volumes (unknown names are not an error; volumes in
    /// use are still refused).
    #[arg(short, long)]
    pub force: bool,
    /// Volumes to remove.
    #[arg(required = true, value_name = "VOLUME")]
    pub names: Vec<String>,
}

/// `carrel volume prune`.
#[derive(Debug, Args)]
pub struct VolumePruneArgs {
    /// Remove all unused volumes, not just anonymous ones.
    #[arg(short, long)]
    pub all: bool,
    /// Provide filter values (e.g. "label=<label>", "label!=<label>", "all=true").
    #[arg(long = "filter", value_name = "FILTER")]
    pub filter: Vec<String>,
    /// Do not prompt for confirmation.
    #[arg(short, long)]
    pub force: bool,
}

/// `carrel volume export`.
#[derive(Debug, Args)]
pub struct VolumeExportArgs {
    /// Write to a file, instead of STDOUT.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Do not pause the running containers that use the volume while it is read (the copy may
    /// then catch files in the middle of a write).
    #[arg(long)]
    pub no_pause: bool,
    /// The volume.
    #[arg(value_name = "VOLUME")]
    pub name: String,
}

/// `carrel volume import`.
#[derive(Debug, Args)]
pub struct VolumeImportArgs {
    /// Import even while running containers use the volume.
    #[arg(long)]
    pub force: bool,
    /// The volume (it must exist: create it first).
    #[arg(value_name = "VOLUME")]
    pub name: String,
    /// A tar archive (plain, gzip or zstd), or `-` for STDIN.
    #[arg(value_name = "FILE|-", allow_hyphen_values = true)]
    pub source: String,
}

/// `carrel system check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Roll back interrupted work, remove orphans and garbage, drop broken images.
    #[arg(long)]
    pub repair: bool,
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    #[test]
    fn command_line_is_consistent() {
        super::Cli::command().debug_assert();
    }

    #[test]
    fn an_unknown_flag_before_the_image_is_a_usage_error() {
        use clap::Parser;
        let parse = |args: &[&str]| super::Cli::try_parse_from(args).unwrap().unknown_flag();
        assert_eq!(
            parse(&["carrel", "run", "--rm", "--bogus", "busybox"]).as_deref(),
            Some("unknown flag: --bogus (see 'carrel run --help')")
        );
        assert_eq!(
            parse(&["carrel", "container", "create", "--bogus=1", "busybox"]).as_deref(),
            Some("unknown flag: --bogus (see 'carrel create --help')")
        );
        assert_eq!(
            parse(&["carrel", "exec", "-Z", "c1", "ls"]).as_deref(),
            Some("unknown shorthand flag: 'Z' in -Z (see 'carrel exec --help')")
        );
        // Options after the image are the command's; `-` alone is no flag.
        assert_eq!(parse(&["carrel", "run", "busybox", "ls", "--bogus"]), None);
        assert_eq!(parse(&["carrel", "exec", "c1", "-", "x"]), None);
    }

    #[test]
    fn options_after_the_image_belong_to_the_command() {
        use clap::Parser;
        let cli = super::Cli::try_parse_from([
            "carrel", "run", "--rm", "-e", "A=1", "busybox", "ls", "-l", "--rm",
        ])
        .unwrap();
        let super::Command::Run(run) = cli.command else {
            panic!("not run")
        };
        assert!(run.create.rm);
        assert_eq!(run.create.env, vec!["A=1"]);
        assert_eq!(
            run.create.image_and_command,
            vec!["busybox", "ls", "-l", "--rm"]
        );
    }
}
