//! The CLI layer: `docker run`'s mount flags turned into the API request, exactly as the docker
//! CLI (28/29) builds it, with the CLI's own errors.
//!
//! - `-v SPEC`: split with the CLI's colon-aware scanner; a spec with a source goes to
//!   `HostConfig.Binds` (a relative source starting with `.` made absolute against the working
//!   directory), one without goes to `Config.Volumes`. Identical strings collapse.
//! - `--mount CSV`: read as one Go `encoding/csv` record into an [`ApiMount`].
//! - `--tmpfs PATH[:OPTS]`: split at the first `:` into `HostConfig.Tmpfs`, unvalidated.

use crate::api::{
    ApiMount, BindOptions, DriverConfig, Empty, ImageOptions, MountRequest, TmpfsOptions,
    VolumeOptions,
};
use crate::error::MountError;
use crate::gostr;

/// The run/create flags that concern mounts, collected in command-line order; [`CliFlags::finish`]
/// turns them into a [`MountRequest`].
///
/// `--mount` values are parsed as they are added (the CLI's flag parser reports them first, as
/// `invalid argument "<value>" for "--mount" flag: …`, see [`MountError::cli_text`]); `-v` values
/// are checked in `finish`, like the CLI does after flag parsing.
#[derive(Debug, Clone)]
pub struct CliFlags {
    cwd: String,
    volumes: Vec<String>,
    mounts: Vec<ApiMount>,
    tmpfs: Vec<String>,
    volumes_from: Vec<String>,
    volume_driver: String,
    readonly_rootfs: bool,
    auto_remove: bool,
    restart_policy: String,
}

impl CliFlags {
    /// Start with no flags; `cwd` is the client's working directory (relative sources are made
    /// absolute against it).
    pub fn new(cwd: impl Into<String>) -> CliFlags {
        CliFlags {
            cwd: cwd.into(),
            volumes: Vec::new(),
            mounts: Vec::new(),
            tmpfs: Vec::new(),
            volumes_from: Vec::new(),
            volume_driver: String::new(),
            readonly_rootfs: false,
            auto_remove: false,
            restart_policy: String::new(),
        }
    }

    /// `-v` / `--volume`. Identical strings collapse into one (the CLI keeps them in a set).
    pub fn volume(&mut self, spec: &str) -> &mut Self {
        if !self.volumes.iter().any(|v| v == spec) {
            self.volumes.push(spec.to_string());
        }
        self
    }

    /// `--mount`: parsed now; the error is the flag parse error the CLI reports.
    pub fn mount(&mut self, value: &str) -> Result<&mut Self, MountError> {
        let m = parse_mount_flag(value, &self.cwd).map_err(|e| e.with_flag("--mount", value))?;
        self.mounts.push(m);
        Ok(self)
    }

    /// `--tmpfs PATH[:OPTIONS]`.
    pub fn tmpfs(&mut self, value: &str) -> &mut Self {
        self.tmpfs.push(value.to_string());
        self
    }

    /// `--volumes-from CONTAINER[:MODE]` (sent verbatim; the daemon parses it).
    pub fn volumes_from(&mut self, value: &str) -> &mut Self {
        self.volumes_from.push(value.to_string());
        self
    }

    /// `--volume-driver`.
    pub fn volume_driver(&mut self, driver: &str) -> &mut Self {
        self.volume_driver = driver.to_string();
        self
    }

    /// `--read-only`.
    pub fn read_only(&mut self, on: bool) -> &mut Self {
        self.readonly_rootfs = on;
        self
    }

    /// `--rm`.
    pub fn auto_remove(&mut self, on: bool) -> &mut Self {
        self.auto_remove = on;
        self
    }

    /// `--restart POLICY` (only its name matters here: `no`/empty is none).
    pub fn restart(&mut self, policy: &str) -> &mut Self {
        self.restart_policy = policy.split(':').next().unwrap_or("").to_string();
        self
    }

    /// Build the request: check and classify the `-v` specs, fill the tmpfs map, and refuse
    /// `--rm` with a restart policy.
    pub fn finish(&self) -> Result<MountRequest, MountError> {
        let mut req = MountRequest {
            mounts: self.mounts.clone(),
            volumes_from: self.volumes_from.clone(),
            volume_driver: self.volume_driver.clone(),
            readonly_rootfs: self.readonly_rootfs,
            auto_remove: self.auto_remove,
            restart_policy: self.restart_policy.clone(),
            ..MountRequest::default()
        };
        for spec in &self.volumes {
            let parsed = parse_volume_spec(spec)?;
            match parsed.source {
                None => {
                    req.config_volumes.insert(spec.clone(), Empty {});
                }
                Some(_) => req.binds.push(self.bind_string(spec, parsed.is_bind)),
            }
        }
        for t in &self.tmpfs {
            let (dest, opts) = t.split_once(':').unwrap_or((t.as_str(), ""));
            req.tmpfs.insert(dest.to_string(), opts.to_string());
        }
        if self.auto_remove && restart_is_set(&self.restart_policy) {
            return Err(MountError::cli(
                "conflicting options: cannot specify both --restart and --rm",
            ));
        }
        Ok(req)
    }

    /// The `Binds` entry for a `-v` spec with a source: a relative host path starting with `.`
    /// becomes absolute (CLI ≥ 28.2 for any `.` prefix; `~` is never expanded).
    fn bind_string(&self, spec: &str, is_bind: bool) -> String {
        if !is_bind {
            return spec.to_string();
        }
        match spec.split_once(':') {
            Some((host, rest)) if !gostr::is_abs(host) && host.starts_with('.') => {
                format!("{}:{rest}", gostr::abs(&self.cwd, host))
            }
            _ => spec.to_string(),
        }
    }
}

fn restart_is_set(policy: &str) -> bool {
    !policy.is_empty() && policy != "no"
}

/// A `-v` spec as the CLI's scanner splits it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeSpec {
    /// First field when there are at least two (`None`: an anonymous volume).
    pub source: Option<String>,
    /// Path in the container.
    pub target: String,
    /// The third field, if any (not validated here; the daemon does).
    pub mode: Option<String>,
    /// Whether the CLI classifies the source as a host path (`.`, `/`, `~`, a drive letter, `\\`).
    pub is_bind: bool,
}

/// Split a `-v` spec like the docker CLI (`internal/volumespec`): a one-letter field followed by
/// `:` is a Windows drive and stays with what follows; empty sections and a fourth section are
/// errors; a string of one or two bytes is always an anonymous target.
pub fn parse_volume_spec(spec: &str) -> Result<VolumeSpec, MountError> {
    match spec.len() {
        0 => return Err(MountError::cli("invalid empty volume spec")),
        1 | 2 => {
            return Ok(VolumeSpec {
                source: None,
                target: spec.to_string(),
                mode: None,
                is_bind: false,
            });
        }
        _ => {}
    }
    let err = |what: &str| MountError::cli(format!("invalid spec: {spec}: {what}"));
    let mut fields: Vec<String> = Vec::new();
    let mut buffer: Vec<char> = Vec::new();
    let chars: Vec<char> = spec.chars().collect();
    for i in 0..=chars.len() {
        let c = chars.get(i).copied();
        let is_drive = c == Some(':') && buffer.len() == 1 && buffer[0].is_alphabetic();
        if is_drive {
            buffer.push(':');
            continue;
        }
        if c == Some(':') || c.is_none() {
            if buffer.is_empty() {
                return Err(err("empty section between colons"));
            }
            if fields.len() == 2 && c == Some(':') {
                return Err(err("too many colons"));
            }
            fields.push(buffer.iter().collect());
            buffer.clear();
            continue;
        }
        buffer.push(c.unwrap_or_default());
    }
    let mut fields = fields.into_iter();
    let first = fields.next().unwrap_or_default();
    let Some(target) = fields.next() else {
        return Ok(VolumeSpec {
            source: None,
            target: first,
            mode: None,
            is_bind: false,
        });
    };
    let is_bind = is_file_path(&first);
    Ok(VolumeSpec {
        source: Some(first),
        target,
        mode: fields.next(),
        is_bind,
    })
}

fn is_file_path(source: &str) -> bool {
    let mut chars = source.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    if matches!(first, '.' | '/' | '~') {
        return true;
    }
    let Some(second) = chars.next() else {
        return false;
    };
    source.starts_with("\\\\") || (second == ':' && first.is_alphabetic())
}

/// Parse one `--mount` value into the API's `Mount` object (docker CLI ≥ 29.3 rules). The error
/// is the bare message; [`CliFlags::mount`] adds the flag context.
pub fn parse_mount_flag(value: &str, cwd: &str) -> Result<ApiMount, MountError> {
    let value = value.trim();
    if value.is_empty() {
        return Err(MountError::cli("value is empty"));
    }
    let fields = crate::csv::read_record(value).map_err(|e| MountError::cli(e.to_string()))?;
    let mut m = ApiMount {
        kind: "volume".to_string(),
        ..ApiMount::default()
    };
    for field in &fields {
        let (raw_key, val) = match field.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (field.as_str(), None),
        };
        let trimmed = raw_key.trim();
        if trimmed != raw_key {
            return Err(MountError::cli(format!(
                "invalid option '{trimmed}' in '{field}': option should not have whitespace"
            )));
        }
        let key = raw_key.to_lowercase();
        let Some(val) = val else {
            match key.as_str() {
                "readonly" | "ro" => m.read_only = true,
                "volume-nocopy" => volume_options(&mut m).no_copy = true,
                "bind-create-src" => bind_options(&mut m).create_mountpoint = true,
                "bind-nonrecursive" => return Err(nonrecursive_removed()),
                _ => {
                    return Err(MountError::cli(format!(
                        "invalid field '{field}' must be a key=value pair"
                    )));
                }
            }
            continue;
        };
        let v = val.trim();
        if v.is_empty() {
            return Err(MountError::cli(format!(
                "invalid value for '{key}': value is empty"
            )));
        }
        if v != val {
            return Err(MountError::cli(format!(
                "invalid value for '{key}' in '{field}': value should not have whitespace"
            )));
        }
        match key.as_str() {
            "type" => m.kind = val.to_lowercase(),
            "source" | "src" => {
                m.source = if !gostr::is_abs(val) && val.starts_with('.') {
                    gostr::abs(cwd, val)
                } else {
                    val.to_string()
                };
            }
            "target" | "dst" | "destination" => m.target = val.to_string(),
            "readonly" | "ro" => m.read_only = parse_bool(&key, val)?,
            "consistency" => m.consistency = val.to_lowercase(),
            "bind-propagation" => bind_options(&mut m).propagation = val.to_lowercase(),
            "bind-recursive" => match val {
                "enabled" => {}
                "disabled" => bind_options(&mut m).non_recursive = true,
                "writable" => bind_options(&mut m).read_only_non_recursive = true,
                "readonly" => bind_options(&mut m).read_only_force_recursive = true,
                _ => {
                    return Err(MountError::cli(format!(
                        "invalid value for bind-recursive: {val} (must be \"enabled\", \"disabled\", \"writable\", or \"readonly\")"
                    )));
                }
            },
            "bind-create-src" => {
                bind_options(&mut m).create_mountpoint = parse_bool(&key, val)?;
            }
            "bind-nonrecursive" => return Err(nonrecursive_removed()),
            "volume-nocopy" => volume_options(&mut m).no_copy = parse_bool(&key, val)?,
            "volume-label" => {
                let (k, v) = val.split_once('=').unwrap_or((val, ""));
                let opts = volume_options(&mut m);
                if !k.is_empty() {
                    opts.labels.insert(k.to_string(), v.to_string());
                }
            }
            "volume-driver" => driver_config(&mut m).name = val.to_string(),
            "volume-opt" => {
                let (k, v) = val.split_once('=').unwrap_or((val, ""));
                let driver = driver_config(&mut m);
                if !k.is_empty() {
                    driver.options.insert(k.to_string(), v.to_string());
                }
            }
            "volume-subpath" => volume_options(&mut m).subpath = val.to_string(),
            "image-subpath" => {
                m.image_options
                    .get_or_insert_with(ImageOptions::default)
                    .subpath = val.to_string()
            }
            "tmpfs-size" => {
                let size = ram_in_bytes(val).ok_or_else(|| {
                    MountError::cli(format!("invalid value for tmpfs-size: {val}"))
                })?;
                tmpfs_options(&mut m).size_bytes = size;
            }
            "tmpfs-mode" => {
                let mode = parse_octal_u32(val).ok_or_else(|| {
                    MountError::cli(format!("invalid value for tmpfs-mode: {val}"))
                })?;
                tmpfs_options(&mut m).mode = mode;
            }
            _ => {
                return Err(MountError::cli(format!(
                    "unknown option '{key}' in '{field}'"
                )));
            }
        }
    }
    let families = [
        ("bind", m.bind_options.is_some()),
        ("volume", m.volume_options.is_some()),
        ("image", m.image_options.is_some()),
        ("tmpfs", m.tmpfs_options.is_some()),
    ];
    for (family, present) in families {
        if present && m.kind != family {
            return Err(MountError::cli(format!(
                "cannot mix '{family}-*' options with mount type '{}'",
                m.kind
            )));
        }
    }
    if let Some(b) = &m.bind_options {
        if b.read_only_non_recursive && !m.read_only {
            return Err(MountError::cli(
                "option 'bind-recursive=writable' requires 'readonly' to be specified in conjunction",
            ));
        }
        if b.read_only_force_recursive {
            if !m.read_only {
                return Err(MountError::cli(
                    "option 'bind-recursive=readonly' requires 'readonly' to be specified in conjunction",
                ));
            }
            if b.propagation != "rprivate" {
                return Err(MountError::cli(
                    "option 'bind-recursive=readonly' requires 'bind-propagation=rprivate' to be specified in conjunction",
                ));
            }
        }
    }
    Ok(m)
}

fn nonrecursive_removed() -> MountError {
    MountError::cli("bind-nonrecursive is deprecated, use bind-recursive=disabled instead")
}

fn bind_options(m: &mut ApiMount) -> &mut BindOptions {
    m.bind_options.get_or_insert_with(BindOptions::default)
}

fn volume_options(m: &mut ApiMount) -> &mut VolumeOptions {
    m.volume_options.get_or_insert_with(VolumeOptions::default)
}

fn driver_config(m: &mut ApiMount) -> &mut DriverConfig {
    volume_options(m)
        .driver_config
        .get_or_insert_with(DriverConfig::default)
}

fn tmpfs_options(m: &mut ApiMount) -> &mut TmpfsOptions {
    m.tmpfs_options.get_or_insert_with(TmpfsOptions::default)
}

/// The CLI's strict boolean (≥ 29.2.1): `true`, `1`, `false`, `0`.
fn parse_bool(key: &str, val: &str) -> Result<bool, MountError> {
    match val {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(MountError::cli(format!(
            "invalid value for '{key}': invalid boolean value ({}): must be one of \"true\", \"1\", \"false\", or \"0\" (default \"true\")",
            gostr::quote(val)
        ))),
    }
}

/// Go's `strconv.ParseUint(v, 8, 32)`: octal digits only, no sign or prefix, at most 32 bits.
fn parse_octal_u32(v: &str) -> Option<u32> {
    if v.is_empty() || !v.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return None;
    }
    u32::from_str_radix(v, 8).ok()
}

/// `go-units` `RAMInBytes`: a non-negative decimal number (fractions allowed), an optional space,
/// and an optional binary suffix `k`, `m`, `g`, `t` or `p` (any case) followed by nothing, `b` or
/// `ib`; a lone `b` means bytes. `1.5g` is 1610612736.
pub fn ram_in_bytes(s: &str) -> Option<i64> {
    let sep = s.rfind(|c: char| c.is_ascii_digit() || c == '.' || c == ' ')?;
    let (num, suffix) = if s.as_bytes()[sep] == b' ' {
        (&s[..sep], &s[sep + 1..])
    } else {
        (&s[..=sep], &s[sep + 1..])
    };
    let size = parse_go_float(num)?;
    if size < 0.0 {
        return None;
    }
    let suffix = suffix.to_ascii_lowercase();
    let size = if suffix.is_empty() || suffix == "b" {
        size
    } else {
        if suffix.len() > 3 {
            return None;
        }
        let mul: f64 = match suffix.as_bytes()[0] {
            b'k' => 1024.0,
            b'm' => 1024f64.powi(2),
            b'g' => 1024f64.powi(3),
            b't' => 1024f64.powi(4),
            b'p' => 1024f64.powi(5),
            _ => return None,
        };
        match suffix.len() {
            2 if &suffix[1..] != "b" => return None,
            3 if &suffix[1..] != "ib" => return None,
            _ => {}
        }
        size * mul
    };
    if size >= i64::MAX as f64 {
        return None;
    }
    Some(size as i64)
}

/// Go's `strconv.ParseFloat` for the decimal forms `go-units` can hand it.
fn parse_go_float(s: &str) -> Option<f64> {
    let body = s.strip_prefix(['+', '-']).unwrap_or(s);
    let ok = !body.is_empty()
        && body.bytes().any(|b| b.is_ascii_digit())
        && body
            .bytes()
            .all(|b| b.is_ascii_digit() || matches!(b, b'.' | b'e' | b'E' | b'+' | b'-'));
    if !ok {
        return None;
    }
    s.parse::<f64>().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ram_sizes_match_go_units() {
        let cases = [
            ("1000", Some(1000)),
            ("64k", Some(65536)),
            ("1m", Some(1 << 20)),
            ("1MB", Some(1 << 20)),
            ("512KiB", Some(512 << 10)),
            ("2g", Some(2 << 30)),
            ("1.5g", Some(1_610_612_736)),
            ("1024m", Some(1 << 30)),
            ("0", Some(0)),
            ("10 MB", Some(10 << 20)),
            ("32b", Some(32)),
            ("-1", None),
            ("foo", None),
            ("1x", None),
            ("1kb2", None),
            ("1ki", None),
            ("", None),
            ("k", None),
        ];
        for (input, want) in cases {
            assert_eq!(ram_in_bytes(input), want, "{input:?}");
        }
    }

    #[test]
    fn octal_modes() {
        assert_eq!(parse_octal_u32("700"), Some(0o700));
        assert_eq!(parse_octal_u32("0700"), Some(0o700));
        assert_eq!(parse_octal_u32("1770"), Some(0o1770));
        assert_eq!(parse_octal_u32("0o700"), None);
        assert_eq!(parse_octal_u32("800"), None);
        assert_eq!(parse_octal_u32("+7"), None);
        assert_eq!(parse_octal_u32(""), None);
    }

    #[test]
    fn volume_spec_scanner() {
        let p = parse_volume_spec("C:\\foo:D:\\bar").unwrap();
        assert_eq!(p.source.as_deref(), Some("C:\\foo"));
        assert_eq!(p.target, "D:\\bar");
        assert!(p.is_bind);
        let p = parse_volume_spec("x:/data").unwrap();
        assert_eq!((p.source, p.target.as_str()), (None, "x:/data"));
        let p = parse_volume_spec("ab").unwrap();
        assert_eq!((p.source, p.target.as_str()), (None, "ab"));
        let p = parse_volume_spec("name:/data:ro").unwrap();
        assert!(!p.is_bind);
        assert_eq!(p.mode.as_deref(), Some("ro"));
        assert_eq!(
            parse_volume_spec("/a:/b:ro:x").unwrap_err().to_string(),
            "invalid spec: /a:/b:ro:x: too many colons"
        );
        assert_eq!(
            parse_volume_spec("/a::/b").unwrap_err().to_string(),
            "invalid spec: /a::/b: empty section between colons"
        );
    }

    #[test]
    fn mount_flag_error_text() {
        let mut f = CliFlags::new("/");
        let e = f.mount("type=bind,src=\"/x\",dst=/y").unwrap_err();
        assert_eq!(
            e.cli_text(),
            "invalid argument \"type=bind,src=\\\"/x\\\",dst=/y\" for \"--mount\" flag: parse error on line 1, column 15: bare \" in non-quoted-field"
        );
    }
}
