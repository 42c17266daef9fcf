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
    /// Log level: error, warn, info, debug or trace.
    #[arg(
        short = 'l',
        long,
        global = true,
        default_value = "warn",
        value_name = "LEVEL"
    )]
    pub log_level: String,
    /// Debug logging (same as --log-level debug).
    #[arg(short = 'D', long, global = true)]
    pub debug: bool,
}

/// The commands.
#[derive(Debug, Subcommand)]
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
    /// Run a container's monitor (internal: carrel starts it for every running container).
    #[command(hide = true)]
    ContainerMonitor(ContainerMonitorArgs),
}

/// `carrel container-monitor` (hidden): the per-container monitor process.
#[derive(Debug, Args)]
pub struct ContainerMonitorArgs {
    /// The full container id.
    pub id: String,
}

/// `carrel image …`.
#[derive(Debug, Subcommand)]
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
    /// Only inspect objects of the given type (image).
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
pub enum SystemCommand {
    /// Display system-wide information.
    Info(InfoArgs),
    /// Compare metadata with what is on disk; with --repair, fix what can be fixed.
    Check(CheckArgs),
}

/// `carrel system check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Roll back interrupted work, remove orphans and garbage, drop broken images.
    #[arg(long)]
    pub repair: bool,
}
