//! Container commands: create, run, ps, inspect, rm, rename, container prune.

use std::collections::BTreeMap;
use std::io::Write;

use anyhow::{Context, Result, bail};
use serde::Serialize;

use carrel_core::units::{human_duration, human_size};
use carrel_engine::Engine;
use carrel_engine::containers::list::ContainerFilter;
use carrel_engine::containers::types::{Config, CreateRequest, HostConfig};
use carrel_engine::containers::{Container, status_text};

use super::ExitStatus;
use crate::cli::{ContainerPruneArgs, CreateArgs, PsArgs, RenameArgs, RmArgs};
use crate::format::render_list;

/// Parse a `KEY=VALUE` env entry; a bare `KEY` takes its value from carrel's environment and is
/// dropped when unset (Docker's rule).
pub fn env_entry(raw: &str) -> Option<String> {
    if raw.contains('=') {
        Some(raw.to_string())
    } else {
        std::env::var(raw).ok().map(|v| format!("{raw}={v}"))
    }
}

/// Read an `--env-file`: `KEY=VALUE` lines, `#` comments and blank lines ignored.
pub fn env_file(path: &std::path::Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("open {}", path.display()))?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let key = line.split_once('=').map(|(k, _)| k).unwrap_or(line);
        if key.is_empty() || key.contains(char::is_whitespace) {
            bail!(
                "invalid environment variable in {} line {}: {line:?}",
                path.display(),
                n + 1
            );
        }
        if let Some(e) = env_entry(line) {
            out.push(e);
        }
    }
    Ok(out)
}

/// The mount flags (`-v`, `--mount`, `--tmpfs`, `--volumes-from`, `--read-only`, `--rm`) as the
/// docker CLI turns them into request fields (`HostConfig.Binds`, `Mounts`, `Tmpfs`,
/// `VolumesFrom`, `Config.Volumes`), with its errors: a `--mount` value it cannot parse reads
/// `invalid argument "<value>" for "--mount" flag: <reason>`.
fn mount_request(a: &CreateArgs) -> Result<carrel_mountspec::MountRequest> {
    let cwd = std::env::current_dir()
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "/".into());
    let mut flags = carrel_mountspec::CliFlags::new(cwd);
    for v in &a.volume {
        flags.volume(v);
    }
    for m in &a.mount {
        flags
            .mount(m)
            .map_err(|e| anyhow::anyhow!("{}", e.cli_text()))?;
    }
    for t in &a.tmpfs {
        flags.tmpfs(t);
    }
    for v in &a.volumes_from {
        flags.volumes_from(v);
    }
    flags.read_only(a.read_only).auto_remove(a.rm);
    if let Some(r) = &a.restart {
        flags.restart(r);
    }
    flags
        .finish()
        .map_err(|e| anyhow::anyhow!("{}", e.cli_text()))
}

/// Turn `create`/`run` flags into the request the engine (and the Docker API) takes.
pub fn create_request(a: &CreateArgs, attach: bool) -> Result<CreateRequest> {
    if !a.publish.is_empty() {
        bail!(
            "publishing ports (-p) is not supported: carrel does not manage container networking (use --network host)"
        );
    }
    if let Some(p) = &a.pull
        && !matches!(p.as_str(), "never" | "missing")
    {
        bail!(
            "--pull={p} is not supported: carrel never pulls images (load or import them instead)"
        );
    }
    let mut words = a.image_and_command.clone();
    let image = words.remove(0);
    let mut env = Vec::new();
    for f in &a.env_file {
        env.extend(env_file(f)?);
    }
    env.extend(a.env.iter().filter_map(|e| env_entry(e)));
    let labels: BTreeMap<String, String> = a
        .label
        .iter()
        .map(|l| match l.split_once('=') {
            Some((k, v)) => (k.to_string(), v.to_string()),
            None => (l.clone(), String::new()),
        })
        .collect();
    let entrypoint = a.entrypoint.as_ref().map(|e| {
        if e.is_empty() {
            Vec::new()
        } else {
            vec![e.clone()]
        }
    });
    let shm_size = match &a.shm_size {
        Some(s) => carrel_core::units::parse_ram_bytes(s).map_err(|_| {
            anyhow::anyhow!("invalid argument {s:?} for \"--shm-size\" flag: invalid size: '{s}'")
        })?,
        None => 0,
    };
    let mounts = mount_request(a)?;
    let config = Config {
        hostname: a.hostname.clone().unwrap_or_default(),
        domainname: a.domainname.clone().unwrap_or_default(),
        user: a.user.clone().unwrap_or_default(),
        attach_stdin: attach && a.interactive,
        attach_stdout: attach,
        attach_stderr: attach,
        tty: a.tty,
        open_stdin: a.interactive,
        stdin_once: attach && a.interactive,
        env: (!env.is_empty()).then_some(env),
        cmd: (!words.is_empty()).then_some(words),
        image,
        volumes: (!mounts.config_volumes.is_empty()).then(|| {
            mounts
                .config_volumes
                .keys()
                .map(|k| (k.clone(), serde_json::json!({})))
                .collect()
        }),
        working_dir: a.workdir.clone().unwrap_or_default(),
        entrypoint,
        labels: Some(labels),
        stop_signal: a.stop_signal.clone(),
        stop_timeout: a.stop_timeout,
        ..Default::default()
    };
    let host_config = HostConfig {
        binds: (!mounts.binds.is_empty()).then(|| mounts.binds.clone()),
        network_mode: a.network.clone().unwrap_or_else(|| "none".into()),
        restart_policy: carrel_engine::containers::types::RestartPolicy {
            name: a.restart.clone().unwrap_or_else(|| "no".into()),
            maximum_retry_count: 0,
        },
        auto_remove: mounts.auto_remove,
        volumes_from: (!mounts.volumes_from.is_empty()).then(|| mounts.volumes_from.clone()),
        group_add: (!a.group_add.is_empty()).then(|| a.group_add.clone()),
        privileged: a.privileged,
        readonly_rootfs: mounts.readonly_rootfs,
        tmpfs: (!mounts.tmpfs.is_empty()).then(|| mounts.tmpfs.clone()),
        shm_size,
        runtime: a.runtime.clone().unwrap_or_default(),
        mounts: (!mounts.mounts.is_empty()).then(|| mounts.mounts.clone()),
        container_id_file: a
            .cidfile
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
        ..Default::default()
    };
    Ok(CreateRequest {
        name: a.name.clone().unwrap_or_default(),
        config,
        host_config,
    })
}

/// Write the `--cidfile` (refusing to overwrite an existing file, as Docker does).
pub fn write_cidfile(a: &CreateArgs, id: &str) -> Result<()> {
    if let Some(path) = &a.cidfile {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .with_context(|| format!("container ID file found, make sure the other container isn't running or delete {}", path.display()))?;
        f.write_all(id.as_bytes())?;
    }
    Ok(())
}

/// `carrel create`.
pub fn create(engine: &Engine, a: &CreateArgs) -> Result<u8> {
    if let Some(p) = &a.cidfile
        && p.exists()
    {
        bail!(
            "container ID file found, make sure the other container isn't running or delete {}",
            p.display()
        );
    }
    // Flags the docker CLI refuses before sending anything exit with its status 125.
    let req = create_request(a, false).map_err(|e| {
        eprintln!("Error: {e}");
        anyhow::Error::from(ExitStatus(125))
    })?;
    let resp = engine.container_create(req)?;
    write_cidfile(a, &resp.id)?;
    for w in &resp.warnings {
        eprintln!("WARNING: {w}");
    }
    println!("{}", resp.id);
    Ok(0)
}

/// One row of `carrel ps`, with the docker CLI's template field names.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct PsRow {
    command: String,
    created_at: String,
    #[serde(rename = "ID")]
    id: String,
    image: String,
    labels: String,
    local_volumes: String,
    mounts: String,
    names: String,
    networks: String,
    ports: String,
    running_for: String,
    size: String,
    state: String,
    status: String,
}

const PS_TABLE: &str =
    "table {{.ID}}\t{{.Image}}\t{{.Command}}\t{{.RunningFor}}\t{{.Status}}\t{{.Ports}}\t{{.Names}}";
const PS_HEADERS: &[(&str, &str)] = &[
    ("Command", "COMMAND"),
    ("CreatedAt", "CREATED AT"),
    ("ID", "CONTAINER ID"),
    ("Image", "IMAGE"),
    ("Labels", "LABELS"),
    ("LocalVolumes", "LOCAL VOLUMES"),
    ("Mounts", "MOUNTS"),
    ("Names", "NAMES"),
    ("Networks", "NETWORKS"),
    ("Ports", "PORTS"),
    ("RunningFor", "CREATED"),
    ("Size", "SIZE"),
    ("State", "STATE"),
    ("Status", "STATUS"),
];

/// Docker's `Ellipsis`.
fn ellipsis(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        return s.to_string();
    }
    let mut out: String = s.chars().take(width.saturating_sub(1)).collect();
    out.push('…');
    out
}

fn ps_row(engine: &Engine, c: &Container, no_trunc: bool, size: bool) -> PsRow {
    let command = if no_trunc {
        carrel_mountspec::gostr::quote(&c.command())
    } else {
        carrel_mountspec::gostr::quote(&ellipsis(&c.command(), 20))
    };
    let created = c.created.div_euclid(1_000_000_000);
    let ago = {
        let now = chrono::Utc::now().timestamp();
        format!(
            "{} ago",
            human_duration(std::time::Duration::from_secs(
                now.saturating_sub(created).max(0) as u64
            ))
        )
    };
    let labels = c
        .spec
        .config
        .labels
        .as_ref()
        .map(|l| {
            l.iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default();
    let size = if size {
        let rw = engine
            .snapshotter()
            .usage(&c.snapshot)
            .map(|u| u.size)
            .unwrap_or(0);
        format!(
            "{} (virtual {})",
            human_size(rw),
            human_size(rw + image_size(engine, c))
        )
    } else {
        String::new()
    };
    let mounts = engine.container_mount_points(c);
    PsRow {
        command,
        created_at: chrono::DateTime::from_timestamp(created, 0)
            .unwrap_or_default()
            .format("%Y-%m-%d %H:%M:%S +0000 UTC")
            .to_string(),
        id: if no_trunc {
            c.id.clone()
        } else {
            c.short_id().to_string()
        },
        image: c.spec.config.image.clone(),
        labels,
        // The docker CLI counts the mounts of the `local` driver, and shows volume names (a
        // bind's source) cut to 15 characters unless --no-trunc.
        local_volumes: mounts
            .iter()
            .filter(|m| m.driver.as_deref() == Some("local"))
            .count()
            .to_string(),
        mounts: mounts
            .iter()
            .map(|m| {
                let name = m.name.clone().unwrap_or_else(|| m.source.clone());
                if no_trunc { name } else { ellipsis(&name, 15) }
            })
            .collect::<Vec<_>>()
            .join(","),
        names: c.name.clone(),
        networks: c.spec.host_config.network_mode.clone(),
        ports: String::new(),
        running_for: ago,
        size,
        state: c.state.status.as_str().to_string(),
        status: status_text(&c.state),
    }
}

fn image_size(engine: &Engine, c: &Container) -> u64 {
    engine
        .resolve_image(&c.image_id.to_string())
        .map(|i| i.size)
        .unwrap_or(0)
}

/// `carrel ps`.
pub fn ps(engine: &Engine, a: &PsArgs) -> Result<u8> {
    let filter = ContainerFilter::parse(&a.filter)?;
    let limit = if a.latest { 1 } else { a.last };
    let mut list = engine.container_list(a.all || limit > 0, &filter)?;
    if limit > 0 {
        list.truncate(limit as usize);
    }
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    if a.quiet {
        for c in &list {
            writeln!(out, "{}", if a.no_trunc { &c.id } else { c.short_id() })?;
        }
        out.flush()?;
        return Ok(0);
    }
    let rows: Vec<PsRow> = list
        .iter()
        .map(|c| ps_row(engine, c, a.no_trunc, a.size))
        .collect();
    let table = if a.size {
        format!("{PS_TABLE}\t{{{{.Size}}}}")
    } else {
        PS_TABLE.to_string()
    };
    out.write_all(render_list(&a.format, &table, PS_HEADERS, &rows)?.as_bytes())?;
    out.flush()?;
    Ok(0)
}

/// `carrel container inspect`.
pub fn inspect(engine: &Engine, a: &crate::cli::InspectArgs) -> Result<u8> {
    super::images::inspect_objects(engine, a, Some("container"))
}

/// `carrel rm`.
pub fn rm(engine: &Engine, a: &RmArgs) -> Result<u8> {
    let mut failed = false;
    for name in &a.names {
        match engine.container_remove(name, a.force, a.volumes) {
            Ok(()) => println!("{name}"),
            Err(e) => {
                eprintln!("Error: {e}");
                failed = true;
            }
        }
    }
    if failed {
        return Err(ExitStatus(1).into());
    }
    Ok(0)
}

/// `carrel rename`.
pub fn rename(engine: &Engine, a: &RenameArgs) -> Result<u8> {
    engine.container_rename(&a.container, &a.new_name)?;
    Ok(0)
}

/// `carrel container prune`.
pub fn prune(engine: &Engine, a: &ContainerPruneArgs) -> Result<u8> {
    let mut labels = Vec::new();
    for f in &a.filter {
        match f.split_once('=') {
            Some(("label", v)) => labels.push(v.to_string()),
            _ => bail!("invalid filter '{f}'"),
        }
    }
    if !a.force {
        println!("WARNING! This will remove all stopped containers.");
        if !super::confirm("Are you sure you want to continue?") {
            return Ok(0);
        }
    }
    let (removed, reclaimed) = engine.container_prune(&labels)?;
    let mut out = std::io::stdout().lock();
    if !removed.is_empty() {
        writeln!(out, "Deleted Containers:")?;
        for id in &removed {
            writeln!(out, "{id}")?;
        }
        writeln!(out)?;
    }
    writeln!(out, "Total reclaimed space: {}", human_size(reclaimed))?;
    Ok(0)
}
