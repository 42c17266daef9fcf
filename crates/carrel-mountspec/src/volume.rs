//! The `local` volume driver's checks at volume creation, shared by container create (volumes a
//! container needs) and `volume create`: the name rule and the driver options.

use crate::cli::ram_in_bytes;
use crate::error::MountError;
use crate::gostr;
use std::collections::BTreeMap;

/// The characters a local volume name may use, as Docker's error message quotes them.
pub const RESTRICTED_NAME_CHARS: &str = "[a-zA-Z0-9][a-zA-Z0-9_.-]";

/// The options the local driver accepts.
pub const LOCAL_DRIVER_OPTIONS: [&str; 4] = ["device", "o", "size", "type"];

/// Whether `name` matches the local driver's rule `^[a-zA-Z0-9][a-zA-Z0-9_.-]+$` (at least two
/// characters, the first alphanumeric).
pub fn is_valid_local_volume_name(name: &str) -> bool {
    let b = name.as_bytes();
    b.len() >= 2
        && b[0].is_ascii_alphanumeric()
        && b[1..]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

/// The local driver's name check, with Docker's messages (without the `create <name>: ` prefix
/// the volume store adds, see [`check_local_volume_create`]).
pub fn validate_local_volume_name(name: &str) -> Result<(), MountError> {
    if name.len() == 1 {
        return Err(MountError::volume_driver(
            "volume name is too short, names should be at least two alphanumeric characters",
        ));
    }
    if !is_valid_local_volume_name(name) {
        return Err(MountError::volume_driver(format!(
            "{} includes invalid characters for a local volume name, only {} are allowed. If you intended to pass a host directory, use absolute path",
            gostr::quote(name),
            gostr::quote(RESTRICTED_NAME_CHARS)
        )));
    }
    Ok(())
}

/// The local driver's option check (`type`, `device`, `o`, `size`), with Docker's messages
/// (without the `create <name>: ` prefix). `quota_supported` says whether the data root can
/// enforce `size`.
pub fn validate_local_driver_options(
    options: &BTreeMap<String, String>,
    quota_supported: bool,
) -> Result<(), MountError> {
    if options.is_empty() {
        return Ok(());
    }
    if let Some(key) = options
        .keys()
        .find(|k| !LOCAL_DRIVER_OPTIONS.contains(&k.as_str()))
    {
        return Err(MountError::volume_driver(format!(
            "invalid option: {}",
            gostr::quote(key)
        )));
    }
    if let (Some("cifs"), Some(device)) = (
        options.get("type").map(String::as_str),
        options.get("device"),
    ) && !device.is_empty()
        && cifs_url_has_port(device)
    {
        return Err(MountError::volume_driver(
            "port not allowed in CIFS device URL, include 'port' in 'o='",
        ));
    }
    if let Some(size) = options.get("size") {
        let bytes = ram_in_bytes(size)
            .ok_or_else(|| MountError::volume_driver(format!("invalid size: '{size}'")))?;
        if bytes > 0 && !quota_supported {
            return Err(MountError::volume_driver(
                "quota size requested but no quota support",
            ));
        }
    }
    let mandatory: [(&str, &[&str]); 3] = [
        ("device", &["type"]),
        ("o", &["device", "type"]),
        ("type", &["device"]),
    ];
    for (opt, required) in mandatory {
        if options.contains_key(opt) {
            for req in required {
                if !options.contains_key(*req) {
                    return Err(MountError::volume_driver(format!(
                        "missing required option: {}",
                        gostr::quote(req)
                    )));
                }
            }
        }
    }
    Ok(())
}

/// Whether a `//host:445/share` style device URL names a port (Go's `url.Port() != ""`).
fn cifs_url_has_port(device: &str) -> bool {
    let Some(rest) = device.strip_prefix("//") else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    if let Some(v6) = host.strip_prefix('[') {
        return v6
            .split_once("]:")
            .is_some_and(|(_, port)| !port.is_empty());
    }
    host.split_once(':')
        .is_some_and(|(_, port)| !port.is_empty())
}

/// What the local driver checks when it creates volume `name` (a named volume, or the generated
/// name of an anonymous one) with `options`; the error reads like Docker's
/// `create <name>: <reason>`. Creating a name that already exists with the same driver is not an
/// error (and its new options are ignored) — the volume service must skip this check then.
pub fn check_local_volume_create(
    name: &str,
    options: &BTreeMap<String, String>,
    quota_supported: bool,
) -> Result<(), MountError> {
    validate_local_volume_name(name)
        .and_then(|()| validate_local_driver_options(options, quota_supported))
        .map_err(|e| e.prefixed(&format!("create {name}: ")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        for ok in ["ab", "thing.d", "hello-world", "a_b", "A1", "0.0"] {
            assert!(is_valid_local_volume_name(ok), "{ok}");
            assert!(validate_local_volume_name(ok).is_ok());
        }
        for bad in [
            "", "x", "..", ".", "/testvol", "./hello", ".hello", "a/b", "a\\b", "a b", "a:b",
            "a\0b", "-ab", "_ab", "é1",
        ] {
            assert!(!is_valid_local_volume_name(bad), "{bad:?}");
        }
        assert_eq!(
            validate_local_volume_name("x").unwrap_err().to_string(),
            "volume name is too short, names should be at least two alphanumeric characters"
        );
        assert_eq!(
            check_local_volume_create("a\\b", &BTreeMap::new(), false)
                .unwrap_err()
                .to_string(),
            "create a\\b: \"a\\\\b\" includes invalid characters for a local volume name, only \"[a-zA-Z0-9][a-zA-Z0-9_.-]\" are allowed. If you intended to pass a host directory, use absolute path"
        );
    }

    fn opts(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn driver_options() {
        let check = |p: &[(&str, &str)]| {
            validate_local_driver_options(&opts(p), false)
                .err()
                .map(|e| e.to_string())
        };
        assert_eq!(check(&[]), None);
        assert_eq!(
            check(&[("type", "tmpfs"), ("device", "tmpfs"), ("o", "size=1m")]),
            None
        );
        assert_eq!(check(&[("foo", "bar")]).unwrap(), "invalid option: \"foo\"");
        assert_eq!(
            check(&[("device", "/dev/sdb1")]).unwrap(),
            "missing required option: \"type\""
        );
        assert_eq!(
            check(&[("type", "tmpfs"), ("o", "size=1m")]).unwrap(),
            "missing required option: \"device\""
        );
        assert_eq!(check(&[("size", "abc")]).unwrap(), "invalid size: 'abc'");
        assert_eq!(
            check(&[("size", "1g")]).unwrap(),
            "quota size requested but no quota support"
        );
        assert_eq!(check(&[("size", "0")]), None);
        assert_eq!(
            check(&[("type", "cifs"), ("device", "//host:445/share")]).unwrap(),
            "port not allowed in CIFS device URL, include 'port' in 'o='"
        );
        assert_eq!(check(&[("type", "cifs"), ("device", "//host/share")]), None);
    }
}
