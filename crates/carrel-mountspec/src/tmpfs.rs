//! tmpfs options: Docker's defaults, its merge rule, the allow-list, and rendering into mount(2)
//! flags and data.
//!
//! Every Docker tmpfs starts from `noexec,nosuid,nodev,rprivate`; the user's options follow and
//! the list is merged from the end, keeping the **last** option of each kind (`ro`/`rw` share a
//! slot, as do `exec`/`noexec`, `suid`/`nosuid`, … and all propagation words; `size=` etc. by
//! key); `defaults` is dropped. Without `size=` the kernel's default applies (half of RAM);
//! without `mode=` the root is `1777`. `size=0` means *unlimited* to the kernel.
//!
//! Allowed: the flag words below (so a user may ask for `exec`, `suid` or `dev` explicitly, as
//! Docker permits) and the data keys `size`, `mode`, `uid`, `gid`, `nr_inodes`, `nr_blocks`,
//! `mpol` with a non-empty value. Everything else is refused with Docker's
//! `invalid tmpfs option "<key>"`, at start like Docker. carrel also refuses three words Docker
//! lets through into the runtime's option list although they make no sense on a fresh tmpfs and
//! change what the runtime mounts: `bind`, `rbind` and `remount`.

use crate::error::MountError;
use crate::spec::{Propagation, TmpfsSpec};

/// Docker's tmpfs defaults, before the user's options.
pub const DEFAULT_OPTIONS: [&str; 4] = ["noexec", "nosuid", "nodev", "rprivate"];

/// The data keys a tmpfs option may set.
pub const DATA_KEYS: [&str; 7] = [
    "size",
    "mode",
    "uid",
    "gid",
    "nr_inodes",
    "nr_blocks",
    "mpol",
];

/// A mount(2) flag a tmpfs option word sets or clears.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MountFlag {
    /// `MS_RDONLY` (`ro` / `rw`)
    ReadOnly,
    /// `MS_NOSUID` (`nosuid` / `suid`)
    NoSuid,
    /// `MS_NODEV` (`nodev` / `dev`)
    NoDev,
    /// `MS_NOEXEC` (`noexec` / `exec`)
    NoExec,
    /// `MS_SYNCHRONOUS` (`sync` / `async`)
    Synchronous,
    /// `MS_DIRSYNC` (`dirsync`)
    DirSync,
    /// `MS_MANDLOCK` (`mand` / `nomand`)
    MandLock,
    /// `MS_NOATIME` (`noatime` / `atime`)
    NoAtime,
    /// `MS_NODIRATIME` (`nodiratime` / `diratime`)
    NoDirAtime,
    /// `MS_RELATIME` (`relatime` / `norelatime`)
    RelAtime,
    /// `MS_STRICTATIME` (`strictatime` / `nostrictatime`)
    StrictAtime,
}

/// What one option word means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Word {
    /// Sets (`true`) or clears (`false`) a flag.
    Flag(MountFlag, bool),
    /// A propagation word (`unbindable`/`runbindable` included): one shared slot.
    Propagation,
}

fn word(option: &str) -> Option<Word> {
    use MountFlag::*;
    let w = match option {
        "ro" => Word::Flag(ReadOnly, true),
        "rw" => Word::Flag(ReadOnly, false),
        "nosuid" => Word::Flag(NoSuid, true),
        "suid" => Word::Flag(NoSuid, false),
        "nodev" => Word::Flag(NoDev, true),
        "dev" => Word::Flag(NoDev, false),
        "noexec" => Word::Flag(NoExec, true),
        "exec" => Word::Flag(NoExec, false),
        "sync" => Word::Flag(Synchronous, true),
        "async" => Word::Flag(Synchronous, false),
        "dirsync" => Word::Flag(DirSync, true),
        "mand" => Word::Flag(MandLock, true),
        "nomand" => Word::Flag(MandLock, false),
        "noatime" => Word::Flag(NoAtime, true),
        "atime" => Word::Flag(NoAtime, false),
        "nodiratime" => Word::Flag(NoDirAtime, true),
        "diratime" => Word::Flag(NoDirAtime, false),
        "relatime" => Word::Flag(RelAtime, true),
        "norelatime" => Word::Flag(RelAtime, false),
        "strictatime" => Word::Flag(StrictAtime, true),
        "nostrictatime" => Word::Flag(StrictAtime, false),
        "private" | "rprivate" | "shared" | "rshared" | "slave" | "rslave" | "unbindable"
        | "runbindable" => Word::Propagation,
        _ => return None,
    };
    Some(w)
}

fn invalid(key: &str) -> MountError {
    MountError::start(format!("invalid tmpfs option {}", crate::gostr::quote(key)))
}

/// Check one user option against the allow-list; returns its merge slot.
fn slot(option: &str) -> Result<String, MountError> {
    match word(option) {
        Some(Word::Flag(flag, _)) => Ok(format!("flag:{flag:?}")),
        Some(Word::Propagation) => Ok("propagation".to_string()),
        None => {
            let (key, value) = option.split_once('=').ok_or_else(|| invalid(option))?;
            if !DATA_KEYS.contains(&key) {
                return Err(invalid(key));
            }
            if value.is_empty() || value.chars().any(|c| c.is_control() || c.is_whitespace()) {
                return Err(invalid(key));
            }
            Ok(format!("data:{key}"))
        }
    }
}

/// Docker's `MergeTmpfsOptions` over `defaults + user options`: keep the last option of each
/// kind, in their original order, drop `defaults`, refuse what is not allowed.
pub fn merge_options(user: &[&str]) -> Result<Vec<String>, MountError> {
    let all: Vec<&str> = DEFAULT_OPTIONS
        .iter()
        .copied()
        .chain(user.iter().copied())
        .collect();
    let mut seen = std::collections::HashSet::new();
    let mut out: Vec<String> = Vec::new();
    for option in all.iter().rev() {
        if *option == "defaults" {
            continue;
        }
        let slot = slot(option)?;
        if seen.insert(slot) {
            out.push(option.to_string());
        }
    }
    out.reverse();
    Ok(out)
}

/// Merge a Docker tmpfs data string (`rw,size=64m`; empty for none).
pub fn merge_data(data: &str) -> Result<Vec<String>, MountError> {
    if data.is_empty() {
        merge_options(&[])
    } else {
        merge_options(&data.split(',').collect::<Vec<_>>())
    }
}

/// The data string Docker derives from a `--mount type=tmpfs` (its `ConvertTmpfsOptions`):
/// `ro` when read-only, `mode=<octal>` when set, `size=<n><unit>` with the largest of `g`, `m`,
/// `k` that divides the byte count, then the API-only `exec`/`noexec` options.
pub fn data_from_mount(readonly: bool, size_bytes: i64, mode: u32, extra: &[String]) -> String {
    let mut opts: Vec<String> = Vec::new();
    if readonly {
        opts.push("ro".to_string());
    }
    if mode != 0 {
        opts.push(format!("mode={mode:o}"));
    }
    if size_bytes != 0 {
        let mut size = size_bytes;
        let mut suffix = "";
        for (s, divisor) in [("g", 1i64 << 30), ("m", 1 << 20), ("k", 1 << 10)] {
            if size % divisor == 0 {
                size /= divisor;
                suffix = s;
                break;
            }
        }
        opts.push(format!("size={size}{suffix}"));
    }
    opts.extend(extra.iter().cloned());
    opts.join(",")
}

/// The kernel's `memparse` for `size=`/`nr_blocks=`-style values: a decimal or `0x` number with
/// an optional `k`/`m`/`g`/`t`/`p`/`e` suffix (any case). `None` for `N%` and anything else.
pub fn parse_kernel_size(v: &str) -> Option<u64> {
    let (digits, radix) = match v.strip_prefix("0x").or_else(|| v.strip_prefix("0X")) {
        Some(hex) => (hex, 16),
        None => (v, 10),
    };
    let end = digits
        .find(|c: char| !c.is_digit(radix))
        .unwrap_or(digits.len());
    let (num, suffix) = digits.split_at(end);
    let n = u64::from_str_radix(num, radix).ok()?;
    let shift = match suffix.to_ascii_lowercase().as_str() {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        "p" => 50,
        "e" => 60,
        _ => return None,
    };
    n.checked_mul(1u64.checked_shl(shift)?)
}

/// The mount(2) arguments for a tmpfs: flags to set, flags to clear, propagation, and the data
/// string handed to tmpfs.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TmpfsMountArgs {
    /// Flags to set (`MS_NOEXEC`, …).
    pub set: Vec<MountFlag>,
    /// Flags explicitly cleared by the user (`exec`, `suid`, `dev`, `rw`, …).
    pub clear: Vec<MountFlag>,
    /// Propagation of the new mount (`rprivate` unless the user named another).
    pub propagation: Option<Propagation>,
    /// The filesystem data (`size=64m,mode=1777`), only allow-listed keys.
    pub data: String,
}

impl TmpfsSpec {
    /// The merged option list, recomputed from [`TmpfsSpec::data`] (fails like Docker at start
    /// for options outside the allow-list).
    pub fn effective_options(&self) -> Result<Vec<String>, MountError> {
        merge_data(&self.data)
    }

    /// carrel's limits on top of Docker's rules (ADVERSARIAL ST-48): an explicit `size=0` or
    /// `nr_blocks=0` (unlimited memory) or `nr_inodes=0` (unlimited inodes) is refused.
    pub fn check_limits(&self) -> Result<(), MountError> {
        for option in &self.options {
            if let Some((key, value)) = option.split_once('=')
                && matches!(key, "size" | "nr_blocks" | "nr_inodes")
                && parse_kernel_size(value) == Some(0)
            {
                return Err(MountError::start(format!(
                    "invalid tmpfs option \"{option}\": an unlimited tmpfs is not allowed, give a size"
                )));
            }
        }
        Ok(())
    }

    /// The options as `mount -o` takes them: [`TmpfsSpec::options`] without the propagation word
    /// (propagation is set on the mount after it is made, see [`TmpfsSpec::mount_args`]).
    pub fn mount_options(&self) -> Vec<String> {
        self.options
            .iter()
            .filter(|o| word(o) != Some(Word::Propagation))
            .cloned()
            .collect()
    }

    /// Render into mount(2) arguments. Only options from the allow-list reach this point, so the
    /// data string holds nothing but `size`/`mode`/`uid`/`gid`/`nr_inodes`/`nr_blocks`/`mpol`.
    pub fn mount_args(&self) -> TmpfsMountArgs {
        let mut args = TmpfsMountArgs::default();
        let mut data: Vec<&str> = Vec::new();
        for option in &self.options {
            match word(option) {
                Some(Word::Flag(flag, true)) => args.set.push(flag),
                Some(Word::Flag(flag, false)) => args.clear.push(flag),
                Some(Word::Propagation) => args.propagation = Propagation::parse(option),
                None => data.push(option),
            }
        }
        args.data = data.join(",");
        args
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Origin;

    fn merged(data: &str) -> Vec<String> {
        merge_data(data).unwrap_or_else(|e| panic!("{data:?}: {e}"))
    }

    #[test]
    fn merge_keeps_the_last_of_each_kind() {
        assert_eq!(merged(""), ["noexec", "nosuid", "nodev", "rprivate"]);
        assert_eq!(
            merged("rw,noexec,nosuid,size=65536k"),
            ["nodev", "rprivate", "rw", "noexec", "nosuid", "size=65536k"]
        );
        assert_eq!(
            merged("rw,size=8192k,exec,size=4096k,noexec"),
            ["nosuid", "nodev", "rprivate", "rw", "size=4096k", "noexec"]
        );
        assert_eq!(
            merged("defaults"),
            ["noexec", "nosuid", "nodev", "rprivate"]
        );
        assert_eq!(
            merged("exec,suid,dev,shared"),
            ["exec", "suid", "dev", "shared"]
        );
        assert_eq!(
            merged("uid=1000,gid=1000,mode=0755"),
            [
                "noexec",
                "nosuid",
                "nodev",
                "rprivate",
                "uid=1000",
                "gid=1000",
                "mode=0755"
            ]
        );
    }

    #[test]
    fn options_outside_the_allow_list_are_refused() {
        for (data, key) in [
            ("foobar", "foobar"),
            ("size", "size"),
            ("tmpcopyup", "tmpcopyup"),
            ("huge=always", "huge"),
            ("bind=/etc", "bind"),
            ("bind", "bind"),
            ("rbind", "rbind"),
            ("remount", "remount"),
            ("noexec,,suid", ""),
            ("size=", "size"),
            ("mode=1777 ", "mode"),
        ] {
            assert_eq!(
                merge_data(data).unwrap_err().to_string(),
                format!("invalid tmpfs option \"{key}\""),
                "{data:?}"
            );
        }
    }

    #[test]
    fn data_from_mount_uses_the_largest_unit() {
        assert_eq!(
            data_from_mount(false, 1 << 20, 0o700, &[]),
            "mode=700,size=1m"
        );
        assert_eq!(data_from_mount(false, 1_610_612_736, 0, &[]), "size=1536m");
        assert_eq!(data_from_mount(false, 1000, 0, &[]), "size=1000");
        assert_eq!(data_from_mount(false, 2 << 30, 0, &[]), "size=2g");
        assert_eq!(
            data_from_mount(true, 0, 0o1770, &["exec".into()]),
            "ro,mode=1770,exec"
        );
        assert_eq!(data_from_mount(false, 0, 0, &[]), "");
    }

    fn spec(data: &str) -> TmpfsSpec {
        let options = merged(data);
        TmpfsSpec {
            target: "/t".into(),
            readonly: false,
            size_bytes: None,
            mode: None,
            options,
            data: data.into(),
            origin: Origin::Tmpfs,
        }
    }

    #[test]
    fn render_mount_args() {
        let s = spec("exec,size=1m,mode=1777,uid=0,ro");
        let args = s.mount_args();
        assert_eq!(
            args.set,
            [MountFlag::NoSuid, MountFlag::NoDev, MountFlag::ReadOnly]
        );
        assert_eq!(args.clear, [MountFlag::NoExec]);
        assert_eq!(args.propagation, Some(Propagation::RPrivate));
        assert_eq!(args.data, "size=1m,mode=1777,uid=0");
        assert_eq!(
            s.mount_options(),
            [
                "nosuid",
                "nodev",
                "exec",
                "size=1m",
                "mode=1777",
                "uid=0",
                "ro"
            ]
        );
        assert_eq!(spec("").mount_args().data, "");
        assert_eq!(spec("").effective_mode(), 0o1777);
    }

    #[test]
    fn unlimited_is_refused() {
        assert!(spec("size=0").check_limits().is_err());
        assert!(spec("size=0k").check_limits().is_err());
        assert!(spec("nr_inodes=0").check_limits().is_err());
        assert!(spec("size=1m,size=0").check_limits().is_err());
        assert!(spec("size=0,size=1m").check_limits().is_ok());
        assert!(spec("size=50%").check_limits().is_ok());
        assert!(spec("").check_limits().is_ok());
    }

    #[test]
    fn kernel_sizes() {
        assert_eq!(parse_kernel_size("65536k"), Some(64 << 20));
        assert_eq!(parse_kernel_size("1G"), Some(1 << 30));
        assert_eq!(parse_kernel_size("999"), Some(999));
        assert_eq!(parse_kernel_size("0x10"), Some(16));
        assert_eq!(parse_kernel_size("50%"), None);
        assert_eq!(parse_kernel_size("1x"), None);
        assert_eq!(parse_kernel_size(""), None);
    }
}
