//! Docker image references (`busybox`, `user/img:1`, `localhost:5000/x@sha256:…`).
//!
//! This follows the grammar of `github.com/distribution/reference`, which the Docker CLI and
//! daemon use, including its normalization rules and its exact error texts:
//!
//! ```text
//! reference        := name [ ":" tag ] [ "@" digest ]
//! name             := [domain '/'] remote-name
//! domain           := host [':' port-number]
//! host             := domain-name | '[' IPv6address ']'
//! domain-name      := domain-component ['.' domain-component]*
//! domain-component := /([a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])/
//! port-number      := /[0-9]+/
//! remote-name      := path-component ['/' path-component]*
//! path-component   := alpha-numeric [separator alpha-numeric]*
//! alpha-numeric    := /[a-z0-9]+/
//! separator        := /[_.]|__|[-]+/
//! tag              := /[\w][\w.-]{0,127}/
//! digest           := algorithm ":" /[0-9a-fA-F]{32,}/
//! ```
//!
//! The grammar is matched by a small hand-written parser rather than a regular expression; where
//! the regular expression is ambiguous (is `foo` in `foo/bar` a registry or a namespace?) the
//! parser makes the same choice as Go's leftmost-first matching.
//!
//! Normalization ([`Reference::parse_normalized_named`]) turns the "familiar" names users type
//! into fully qualified ones: `busybox` ⇒ `docker.io/library/busybox`, `user/img:1` ⇒
//! `docker.io/user/img:1`. [`Reference::familiar_string`] goes the other way, for display.
//!
//! ```
//! use carrel_core::reference::Reference;
//!
//! let r = Reference::parse_normalized_named("busybox").unwrap().with_default_tag();
//! assert_eq!(r.to_string(), "docker.io/library/busybox:latest");
//! assert_eq!(r.familiar_string(), "busybox:latest");
//! assert_eq!(r.familiar_name(), "busybox");
//!
//! let err = Reference::parse_normalized_named("Busybox").unwrap_err();
//! assert_eq!(
//!     err.to_string(),
//!     "invalid reference format: repository name (library/Busybox) must be lowercase"
//! );
//! ```

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::digest::is_hex64;
use crate::{Digest, ErrorKind, HasKind};

/// The registry that familiar names belong to.
pub const DEFAULT_DOMAIN: &str = "docker.io";
/// The legacy name of Docker Hub, normalized to [`DEFAULT_DOMAIN`].
pub const LEGACY_DEFAULT_DOMAIN: &str = "index.docker.io";
/// The namespace of Docker Hub's official images.
pub const OFFICIAL_REPO_PREFIX: &str = "library/";
/// The tag added to a reference that has neither tag nor digest.
pub const DEFAULT_TAG: &str = "latest";
/// The longest allowed repository path (the name without its domain).
pub const REPOSITORY_NAME_TOTAL_LENGTH_MAX: usize = 255;

/// Why a string is not a valid reference. The texts are Docker's, word for word.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReferenceError {
    /// The string does not follow the reference grammar.
    #[error("invalid reference format")]
    InvalidFormat,
    /// The repository part of a familiar name has upper-case letters.
    #[error("invalid reference format: repository name ({0}) must be lowercase")]
    NameNotLowercase(String),
    /// A (non-normalized) reference would be valid if it were lower case.
    #[error("repository name must be lowercase")]
    NameContainsUppercase,
    /// The name is empty.
    #[error("repository name must have at least one component")]
    NameEmpty,
    /// The repository path is longer than [`REPOSITORY_NAME_TOTAL_LENGTH_MAX`].
    #[error("repository name must not be more than 255 characters")]
    NameTooLong,
    /// A bare 64-character hex string, which would be ambiguous with an image id.
    #[error("invalid repository name ({0}), cannot specify 64-byte hexadecimal strings")]
    HexRepositoryName(String),
    /// A tag that does not match `[\w][\w.-]{0,127}`.
    #[error("invalid tag format")]
    TagInvalidFormat,
    /// The digest is malformed for its algorithm.
    #[error("invalid checksum digest format")]
    DigestInvalidFormat,
    /// The digest's hex part has the wrong length for its algorithm.
    #[error("invalid checksum digest length")]
    DigestInvalidLength,
    /// The digest algorithm is not supported (carrel supports sha256 only).
    #[error("unsupported digest algorithm")]
    DigestUnsupported,
    /// `docker tag` was given a target with a digest.
    #[error("refusing to create a tag with a digest reference")]
    TagWithDigest,
    /// A tag whose repository name is `sha256`, which reads like a digest.
    #[error("refusing to create an ambiguous tag using digest algorithm as name")]
    AmbiguousTagName,
    /// The wrapper the Docker client puts around errors of `docker tag` arguments.
    #[error("Error parsing reference: {} is not a valid repository/tag: {cause}", go_quote(.input))]
    NotValidRepositoryTag {
        /// The argument as the user typed it.
        input: String,
        /// What was wrong with it.
        cause: Box<ReferenceError>,
    },
}

impl HasKind for ReferenceError {
    fn kind(&self) -> ErrorKind {
        ErrorKind::InvalidArgument
    }
}

/// A parsed image reference: a repository name (domain and path) with an optional tag and an
/// optional digest.
///
/// `Display` gives the full string (`docker.io/library/busybox:latest`); use
/// [`familiar_string`](Self::familiar_string) for what Docker shows users.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Reference {
    domain: String,
    path: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

/// What [`parse_any_reference`] found: an image id / digest, or a name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnyReference {
    /// A bare 64-hex id or a `sha256:…` digest.
    Digest(Digest),
    /// A (normalized) named reference.
    Named(Reference),
}

impl Reference {
    /// Parse a reference exactly as written, without normalization (Go's `reference.Parse`):
    /// `busybox` has an empty domain and path `busybox`.
    pub fn parse(s: &str) -> Result<Reference, ReferenceError> {
        if s.is_empty() {
            return Err(ReferenceError::NameEmpty);
        }
        let Some(parts) = match_reference(s) else {
            let lower = s.to_lowercase();
            if lower != s && match_reference(&lower).is_some() {
                return Err(ReferenceError::NameContainsUppercase);
            }
            return Err(ReferenceError::InvalidFormat);
        };
        if parts.path.len() > REPOSITORY_NAME_TOTAL_LENGTH_MAX {
            return Err(ReferenceError::NameTooLong);
        }
        let digest = parts.digest.map(validate_digest).transpose()?;
        Ok(Reference {
            domain: parts.domain.to_string(),
            path: parts.path.to_string(),
            tag: parts.tag.map(str::to_string),
            digest,
        })
    }

    /// Parse a name as users type it and make it fully qualified (Go's
    /// `reference.ParseNormalizedNamed`): `busybox` ⇒ `docker.io/library/busybox`,
    /// `user/img:1` ⇒ `docker.io/user/img:1`, `localhost:5000/x` stays as it is.
    ///
    /// No default tag is added: see [`with_default_tag`](Self::with_default_tag).
    pub fn parse_normalized_named(s: &str) -> Result<Reference, ReferenceError> {
        if is_hex64(s) {
            return Err(ReferenceError::HexRepositoryName(s.to_string()));
        }
        let (domain, remainder) = split_docker_domain(s);
        let remote = match remainder.find(':') {
            Some(i) => &remainder[..i],
            None => &remainder[..],
        };
        if remote.to_lowercase() != remote {
            return Err(ReferenceError::NameNotLowercase(remote.to_string()));
        }
        Reference::parse(&format!("{domain}/{remainder}"))
    }

    /// Like [`parse_normalized_named`](Self::parse_normalized_named), then as Docker's
    /// `ParseDockerRef`: a reference with both tag and digest keeps only the digest, and a bare
    /// name gets the `latest` tag.
    pub fn parse_docker_ref(s: &str) -> Result<Reference, ReferenceError> {
        let mut r = Reference::parse_normalized_named(s)?;
        if r.digest.is_some() {
            r.tag = None;
        }
        Ok(r.with_default_tag())
    }

    /// Add the `latest` tag when the reference has neither tag nor digest (Go's `TagNameOnly`).
    #[must_use]
    pub fn with_default_tag(mut self) -> Reference {
        if self.tag.is_none() && self.digest.is_none() {
            self.tag = Some(DEFAULT_TAG.to_string());
        }
        self
    }

    /// The same repository with `tag` (validated), keeping any digest.
    pub fn with_tag(&self, tag: &str) -> Result<Reference, ReferenceError> {
        if !is_tag(tag) {
            return Err(ReferenceError::TagInvalidFormat);
        }
        Ok(Reference {
            tag: Some(tag.to_string()),
            ..self.clone()
        })
    }

    /// The same repository with `digest`, keeping any tag.
    #[must_use]
    pub fn with_digest(&self, digest: Digest) -> Reference {
        Reference {
            digest: Some(digest),
            ..self.clone()
        }
    }

    /// The repository alone, without tag or digest (Go's `TrimNamed`).
    #[must_use]
    pub fn trim(&self) -> Reference {
        Reference {
            domain: self.domain.clone(),
            path: self.path.clone(),
            tag: None,
            digest: None,
        }
    }

    /// The registry part, e.g. `docker.io` or `localhost:5000` (empty for a reference parsed
    /// with [`parse`](Self::parse) that names no registry).
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// The repository path within the registry, e.g. `library/busybox`.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The tag, if any.
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    /// The digest, if any.
    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// True when the reference has neither tag nor digest.
    pub fn is_name_only(&self) -> bool {
        self.tag.is_none() && self.digest.is_none()
    }

    /// The full repository name: `docker.io/library/busybox`.
    pub fn name(&self) -> String {
        if self.domain.is_empty() {
            self.path.clone()
        } else {
            format!("{}/{}", self.domain, self.path)
        }
    }

    /// The repository as `docker images` shows it: `busybox`, `user/img`, `localhost:5000/x`.
    pub fn familiar_name(&self) -> String {
        if self.domain == DEFAULT_DOMAIN {
            match self.path.strip_prefix(OFFICIAL_REPO_PREFIX) {
                Some(rest) if !rest.contains('/') => rest.to_string(),
                _ => self.path.clone(),
            }
        } else {
            self.name()
        }
    }

    /// Docker's short display form: `busybox:latest`, `user/img:1`, `localhost:5000/x:tag`,
    /// `busybox@sha256:…`.
    pub fn familiar_string(&self) -> String {
        let mut s = self.familiar_name();
        self.push_suffix(&mut s);
        s
    }

    fn push_suffix(&self, s: &mut String) {
        if let Some(tag) = &self.tag {
            s.push(':');
            s.push_str(tag);
        }
        if let Some(d) = &self.digest {
            s.push('@');
            s.push_str(&d.to_string());
        }
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = self.name();
        self.push_suffix(&mut s);
        f.write_str(&s)
    }
}

impl fmt::Debug for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Reference({self})")
    }
}

impl FromStr for Reference {
    type Err = ReferenceError;
    /// Same as [`Reference::parse_normalized_named`].
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Reference::parse_normalized_named(s)
    }
}

impl Serialize for Reference {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Reference {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Reference::parse_normalized_named(&s).map_err(serde::de::Error::custom)
    }
}

/// Parse a string that may be an image id, a digest or a name (Go's `ParseAnyReference`):
/// a bare 64-hex string or `sha256:<hex>` is a digest, anything else a normalized name.
pub fn parse_any_reference(s: &str) -> Result<AnyReference, ReferenceError> {
    if is_hex64(s)
        && let Ok(d) = Digest::from_hex(s)
    {
        return Ok(AnyReference::Digest(d));
    }
    if let Ok(d) = Digest::parse(s) {
        return Ok(AnyReference::Digest(d));
    }
    Reference::parse_normalized_named(s).map(AnyReference::Named)
}

/// Parse the target of `docker tag SOURCE TARGET` as the Docker client and daemon do:
/// errors are wrapped as `Error parsing reference: "…" is not a valid repository/tag: …`, a
/// digest is refused, `sha256` as a repository name is refused, and `latest` is added when no
/// tag is given.
pub fn parse_tag_target(s: &str) -> Result<Reference, ReferenceError> {
    let r = Reference::parse_normalized_named(s).map_err(|e| wrap_tag_error(s, e))?;
    if r.digest.is_some() {
        return Err(ReferenceError::TagWithDigest);
    }
    if r.familiar_name() == "sha256" {
        return Err(ReferenceError::AmbiguousTagName);
    }
    Ok(r.with_default_tag())
}

/// Parse the source of `docker tag SOURCE TARGET` (an id, digest or name), wrapping errors the
/// way the Docker client does.
pub fn parse_tag_source(s: &str) -> Result<AnyReference, ReferenceError> {
    parse_any_reference(s).map_err(|e| wrap_tag_error(s, e))
}

fn wrap_tag_error(input: &str, cause: ReferenceError) -> ReferenceError {
    ReferenceError::NotValidRepositoryTag {
        input: input.to_string(),
        cause: Box::new(cause),
    }
}

/// True when `tag` is a valid tag: `[\w][\w.-]{0,127}`.
pub fn is_tag(tag: &str) -> bool {
    let b = tag.as_bytes();
    let word = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
    !b.is_empty()
        && b.len() <= 128
        && word(b[0])
        && b[1..].iter().all(|&c| word(c) || c == b'.' || c == b'-')
}

/// Go's `splitDockerDomain`: decide whether the first path element is a registry.
fn split_docker_domain(name: &str) -> (&str, String) {
    let Some((maybe_domain, maybe_remote)) = name.split_once('/') else {
        return (DEFAULT_DOMAIN, format!("{OFFICIAL_REPO_PREFIX}{name}"));
    };
    let (domain, remote) = if maybe_domain == "localhost" {
        (maybe_domain, maybe_remote)
    } else if maybe_domain == LEGACY_DEFAULT_DOMAIN {
        (DEFAULT_DOMAIN, maybe_remote)
    } else if maybe_domain.contains(['.', ':']) || maybe_domain.to_lowercase() != maybe_domain {
        (maybe_domain, maybe_remote)
    } else {
        (DEFAULT_DOMAIN, name)
    };
    if domain == DEFAULT_DOMAIN && !remote.contains('/') {
        (domain, format!("{OFFICIAL_REPO_PREFIX}{remote}"))
    } else {
        (domain, remote.to_string())
    }
}

/// The pieces of a string that matches the full reference grammar.
struct Parts<'a> {
    domain: &'a str,
    path: &'a str,
    tag: Option<&'a str>,
    digest: Option<&'a str>,
}

/// Match the whole reference grammar. The optional domain is tried first, as Go's
/// leftmost-first regular expression does.
fn match_reference(s: &str) -> Option<Parts<'_>> {
    if let Some((first, rest)) = s.split_once('/')
        && is_domain_and_port(first)
        && let Some(mut parts) = match_tail(rest)
    {
        parts.domain = first;
        return Some(parts);
    }
    match_tail(s)
}

/// Match `remote-name [":" tag] ["@" digest]`.
fn match_tail(s: &str) -> Option<Parts<'_>> {
    let end = s.find([':', '@']).unwrap_or(s.len());
    let path = &s[..end];
    if !is_remote_name(path) {
        return None;
    }
    let mut rest = &s[end..];
    let mut tag = None;
    if let Some(r) = rest.strip_prefix(':') {
        let e = r.find('@').unwrap_or(r.len());
        if !is_tag(&r[..e]) {
            return None;
        }
        tag = Some(&r[..e]);
        rest = &r[e..];
    }
    let mut digest = None;
    if let Some(d) = rest.strip_prefix('@') {
        if !is_digest_pattern(d) {
            return None;
        }
        digest = Some(d);
    } else if !rest.is_empty() {
        return None;
    }
    Some(Parts {
        domain: "",
        path,
        tag,
        digest,
    })
}

fn is_remote_name(s: &str) -> bool {
    s.split('/').all(is_path_component)
}

/// `[a-z0-9]+ (separator [a-z0-9]+)*` with separator `[._] | __ | -+`.
fn is_path_component(s: &str) -> bool {
    let b = s.as_bytes();
    let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    let mut i = 0;
    loop {
        // An alphanumeric run, required at the start and after each separator.
        let start = i;
        while i < b.len() && alnum(b[i]) {
            i += 1;
        }
        if i == start {
            return false;
        }
        if i == b.len() {
            return true;
        }
        match b[i] {
            b'.' => i += 1,
            b'_' => {
                i += 1;
                if i < b.len() && b[i] == b'_' {
                    i += 1;
                }
            }
            b'-' => {
                while i < b.len() && b[i] == b'-' {
                    i += 1;
                }
            }
            _ => return false,
        }
    }
}

/// `host [":" port]` where host is a domain name or a bracketed IPv6 address.
fn is_domain_and_port(s: &str) -> bool {
    let (host, port) = if let Some(inner) = s.strip_prefix('[') {
        let Some(close) = inner.find(']') else {
            return false;
        };
        let addr = &inner[..close];
        if addr.is_empty() || !addr.bytes().all(|c| c.is_ascii_hexdigit() || c == b':') {
            return false;
        }
        (None, &inner[close + 1..])
    } else {
        match s.find(':') {
            Some(i) => (Some(&s[..i]), &s[i..]),
            None => (Some(s), ""),
        }
    };
    if let Some(host) = host
        && !host.split('.').all(is_domain_component)
    {
        return false;
    }
    match port.strip_prefix(':') {
        Some(p) => !p.is_empty() && p.bytes().all(|c| c.is_ascii_digit()),
        None => port.is_empty(),
    }
}

/// `[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]`.
fn is_domain_component(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().all(|&c| c.is_ascii_alphanumeric() || c == b'-')
}

/// `[A-Za-z][A-Za-z0-9]*([-_+.][A-Za-z][A-Za-z0-9]*)* ":" [0-9a-fA-F]{32,}`.
fn is_digest_pattern(s: &str) -> bool {
    let Some((alg, hex)) = s.split_once(':') else {
        return false;
    };
    let alg_ok = alg.split(['-', '_', '+', '.']).all(|c| {
        let b = c.as_bytes();
        !b.is_empty() && b[0].is_ascii_alphabetic() && b.iter().all(u8::is_ascii_alphanumeric)
    });
    alg_ok && hex.len() >= 32 && hex.bytes().all(|c| c.is_ascii_hexdigit())
}

/// go-digest's validation of a digest that matched the reference grammar.
fn validate_digest(s: &str) -> Result<Digest, ReferenceError> {
    let (alg, hex) = s
        .split_once(':')
        .ok_or(ReferenceError::DigestInvalidFormat)?;
    let size = match alg {
        "sha256" => 64,
        "sha384" => 96,
        "sha512" => 128,
        _ => {
            // go-digest: an unknown algorithm is "unsupported" only when the digest is
            // otherwise well formed (lower-case algorithm components).
            let alg_ok = alg.split(['.', '+', '_', '-']).all(|c| {
                !c.is_empty()
                    && c.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            });
            return Err(if alg_ok {
                ReferenceError::DigestUnsupported
            } else {
                ReferenceError::DigestInvalidFormat
            });
        }
    };
    if hex.len() != size {
        return Err(ReferenceError::DigestInvalidLength);
    }
    if !hex
        .bytes()
        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(ReferenceError::DigestInvalidFormat);
    }
    if alg != "sha256" {
        // Valid for Docker, but carrel only stores sha256 content addresses.
        return Err(ReferenceError::DigestUnsupported);
    }
    Digest::from_hex(hex).map_err(|_| ReferenceError::DigestInvalidFormat)
}

/// Quote a string as Go's `%q` does (enough of it for error messages).
fn go_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\x07' => out.push_str("\\a"),
            '\x08' => out.push_str("\\b"),
            '\x0c' => out.push_str("\\f"),
            '\x0b' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c == '\x7f' => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if c.is_control() => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff";

    fn norm(s: &str) -> Reference {
        Reference::parse_normalized_named(s).unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn norm_err(s: &str) -> String {
        match Reference::parse_normalized_named(s) {
            Ok(r) => panic!("{s} parsed as {r}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn normalizes_familiar_names() {
        let cases = [
            ("busybox", "docker.io/library/busybox"),
            ("busybox:latest", "docker.io/library/busybox:latest"),
            ("user/img:1", "docker.io/user/img:1"),
            ("localhost:5000/x", "localhost:5000/x"),
            ("localhost/x", "localhost/x"),
            ("docker.io/busybox", "docker.io/library/busybox"),
            ("index.docker.io/busybox", "docker.io/library/busybox"),
            ("index.docker.io/user/img", "docker.io/user/img"),
            ("docker.io/library/foo/bar", "docker.io/library/foo/bar"),
            ("example.com/a/b", "example.com/a/b"),
            ("Foo/bar", "Foo/bar"),
            ("test_com/foo", "docker.io/test_com/foo"),
            ("192.168.0.1", "docker.io/library/192.168.0.1"),
            ("192.168.0.1:80", "docker.io/library/192.168.0.1:80"),
            ("[fc00::1]:5000/docker", "[fc00::1]:5000/docker"),
            ("xn--n3h.com:18080/foo", "xn--n3h.com:18080/foo"),
            ("dock__er/docker", "docker.io/dock__er/docker"),
            ("docker---rules/docker", "docker.io/docker---rules/docker"),
            (
                "lowercase:Uppercase",
                "docker.io/library/lowercase:Uppercase",
            ),
        ];
        for (input, full) in cases {
            assert_eq!(norm(input).to_string(), full, "{input}");
        }
    }

    #[test]
    fn splits_domain_and_path() {
        let cases = [
            ("test.com/foo", "test.com", "foo"),
            ("test_com/foo", "docker.io", "test_com/foo"),
            ("docker/migrator", "docker.io", "docker/migrator"),
            ("test.com:8080/foo", "test.com:8080", "foo"),
            ("test-com:8080/foo", "test-com:8080", "foo"),
            ("foo", "docker.io", "library/foo"),
            ("xn--n3h.com/foo", "xn--n3h.com", "foo"),
            ("docker.io/foo", "docker.io", "library/foo"),
            ("docker.io/library/foo/bar", "docker.io", "library/foo/bar"),
            (
                "127.0.0.1:8000/private/moonbase",
                "127.0.0.1:8000",
                "private/moonbase",
            ),
            ("FOO/bar", "FOO", "bar"),
        ];
        for (input, domain, path) in cases {
            let r = norm(input);
            assert_eq!((r.domain(), r.path()), (domain, path), "{input}");
        }
    }

    #[test]
    fn familiar_forms() {
        let cases = [
            ("busybox", "busybox", "busybox"),
            (
                "docker.io/library/busybox:latest",
                "busybox",
                "busybox:latest",
            ),
            ("user/img:1", "user/img", "user/img:1"),
            (
                "localhost:5000/x:tag",
                "localhost:5000/x",
                "localhost:5000/x:tag",
            ),
            ("library/foo/bar", "library/foo/bar", "library/foo/bar"),
            ("other/library", "other/library", "other/library"),
            (
                "example.com:8000/privatebase",
                "example.com:8000/privatebase",
                "example.com:8000/privatebase",
            ),
            ("Foo/bar", "Foo/bar", "Foo/bar"),
        ];
        for (input, name, string) in cases {
            let r = norm(input);
            assert_eq!(r.familiar_name(), name, "{input}");
            assert_eq!(r.familiar_string(), string, "{input}");
        }
    }

    #[test]
    fn tag_and_digest_together() {
        let short = "busybox:latest@sha256:86e0e091d0da6bde2456dbb48306f3956bbeb2eae1b5b9a43045843f69fe4aaa";
        let r = norm(short);
        assert_eq!(r.to_string(), format!("docker.io/library/{short}"));
        assert_eq!(r.familiar_string(), short);
        assert_eq!(r.tag(), Some("latest"));
        assert_eq!(
            r.digest().unwrap().hex(),
            "86e0e091d0da6bde2456dbb48306f3956bbeb2eae1b5b9a43045843f69fe4aaa"
        );
        let d = Reference::parse_docker_ref(short).unwrap();
        assert_eq!(
            d.to_string(),
            "docker.io/library/busybox@sha256:86e0e091d0da6bde2456dbb48306f3956bbeb2eae1b5b9a43045843f69fe4aaa"
        );
        assert_eq!(
            Reference::parse_docker_ref("busybox").unwrap().to_string(),
            "docker.io/library/busybox:latest"
        );
    }

    #[test]
    fn digest_references() {
        let r = norm(&format!("example.com/a/b@sha256:{HEX}"));
        assert_eq!(
            (r.domain(), r.path(), r.tag()),
            ("example.com", "a/b", None)
        );
        assert_eq!(r.digest().unwrap().hex(), HEX);
        // A digest reference gets no default tag.
        assert_eq!(r.clone().with_default_tag(), r);
        assert_eq!(r.familiar_string(), format!("example.com/a/b@sha256:{HEX}"));
    }

    #[test]
    fn default_tag() {
        assert_eq!(norm("busybox").tag(), None);
        assert!(norm("busybox").is_name_only());
        assert_eq!(
            norm("busybox").with_default_tag().to_string(),
            "docker.io/library/busybox:latest"
        );
        assert_eq!(
            norm("busybox:1").with_default_tag().to_string(),
            "docker.io/library/busybox:1"
        );
    }

    #[test]
    fn docker_error_texts() {
        let cases: Vec<(String, &str)> = vec![
            ("Busybox".into(), "invalid reference format: repository name (library/Busybox) must be lowercase"),
            ("BAD:Name".into(), "invalid reference format: repository name (library/BAD) must be lowercase"),
            ("docker/Docker".into(), "invalid reference format: repository name (docker/Docker) must be lowercase"),
            ("docker.io/docker/Docker".into(), "invalid reference format: repository name (docker/Docker) must be lowercase"),
            ("test:5000/Uppercase/lowercase:tag".into(), "invalid reference format: repository name (Uppercase/lowercase) must be lowercase"),
            ("".into(), "invalid reference format"),
            (":justtag".into(), "invalid reference format"),
            ("-docker".into(), "invalid reference format"),
            ("docker///docker".into(), "invalid reference format"),
            ("https://github.com/docker/docker".into(), "invalid reference format"),
            ("[fc00::1]".into(), "invalid reference format"),
            ("[fc00::1]:5000".into(), "invalid reference format"),
            ("fc00::1:5000/debian".into(), "invalid reference format"),
            ("[fe80::1%eth0]:5000/debian".into(), "invalid reference format"),
            ("[2001:db8:3:4::192.0.2.33]:5000/debian".into(), "invalid reference format"),
            ("docker/".into(), "invalid reference format"),
            ("dock..er/docker".into(), "invalid reference format"),
            ("dock_.er/docker".into(), "invalid reference format"),
            ("dock-.er/docker".into(), "invalid reference format"),
            ("____/____".into(), "invalid reference format"),
            ("_docker/_docker".into(), "invalid reference format"),
            ("docker-/docker".into(), "invalid reference format"),
            ("aa/asdf$$^/aa".into(), "invalid reference format"),
            ("busybox:".into(), "invalid reference format"),
            ("busybox:-tag".into(), "invalid reference format"),
            (format!("busybox:{}", "a".repeat(129)), "invalid reference format"),
            ("jekyll/jekyll:3.8 AS build-env".into(), "invalid reference format"),
            (
                "1a3f5e7d9c1b3a5f7e9d1c3b5a7f9e1d3c5b7a9f1e3d5d7c9b1a3f5e7d9c1b3a".into(),
                "invalid repository name (1a3f5e7d9c1b3a5f7e9d1c3b5a7f9e1d3c5b7a9f1e3d5d7c9b1a3f5e7d9c1b3a), cannot specify 64-byte hexadecimal strings",
            ),
            (
                format!("{}a:tag", "a/".repeat(128)),
                "repository name must not be more than 255 characters",
            ),
            (
                "this_is_not_a_valid_namespace_because_its_lenth_is_greater_than_255_this_is_not_a_valid_namespace_because_its_lenth_is_greater_than_255_this_is_not_a_valid_namespace_because_its_lenth_is_greater_than_255_this_is_not_a_valid_namespace_because_its_lenth_is_greater_than_255/docker".into(),
                "repository name must not be more than 255 characters",
            ),
            ("repo@sha256:ffffffffffffffffffffffffffffffffff".into(), "invalid checksum digest length"),
            (format!("validname@invaliddigest:{HEX}"), "unsupported digest algorithm"),
            (format!("repo@sha256:{}", HEX.to_uppercase()), "invalid checksum digest format"),
            (format!("repo:t@SHA256:{HEX}"), "invalid checksum digest format"),
            // Go checks case up to the first ':', which here lies inside the digest.
            (
                format!("repo@SHA256:{HEX}"),
                "invalid reference format: repository name (library/repo@SHA256) must be lowercase",
            ),
        ];
        for (input, want) in cases {
            assert_eq!(norm_err(&input), want, "{input:?}");
        }
    }

    #[test]
    fn valid_names_from_docker_tests() {
        let valid = [
            "docker/docker",
            "library/debian",
            "debian",
            "docker.io/docker/docker",
            "docker.io/library/debian",
            "docker.io/debian",
            "index.docker.io/docker/docker",
            "index.docker.io/library/debian",
            "index.docker.io/debian",
            "127.0.0.1:5000/docker/docker",
            "127.0.0.1:5000/library/debian",
            "127.0.0.1:5000/debian",
            "192.168.0.1",
            "192.168.0.1:80",
            "192.168.0.1:8/debian",
            "192.168.0.2:25000/debian",
            "thisisthesongthatneverendsitgoesonandonandonthisisthesongthatnev",
            "[fc00::1]:5000/docker",
            "[fc00::1]:5000/docker/docker",
            "[fc00:1:2:3:4:5:6:7]:5000/library/debian",
            "docker.io/1a3f5e7d9c1b3a5f7e9d1c3b5a7f9e1d3c5b7a9f1e3d5d7c9b1a3f5e7d9c1b3a",
            "Docker/docker",
            "DOCKER/docker",
            "docker-rules/docker",
            "doc/docker",
            "d/docker",
            "jess/t",
        ];
        for v in valid {
            norm(v);
        }
    }

    #[test]
    fn raw_parse_matches_distribution_tests() {
        // (input, domain, name, tag, digest hex)
        let ok: Vec<(String, &str, String, Option<&str>, bool)> = vec![
            ("test_com".into(), "", "test_com".into(), None, false),
            (
                "test.com:tag".into(),
                "",
                "test.com".into(),
                Some("tag"),
                false,
            ),
            (
                "test.com:5000".into(),
                "",
                "test.com".into(),
                Some("5000"),
                false,
            ),
            (
                "test.com/repo:tag".into(),
                "test.com",
                "test.com/repo".into(),
                Some("tag"),
                false,
            ),
            (
                "test:5000/repo".into(),
                "test:5000",
                "test:5000/repo".into(),
                None,
                false,
            ),
            (
                format!("test:5000/repo:tag@sha256:{HEX}"),
                "test:5000",
                "test:5000/repo".into(),
                Some("tag"),
                true,
            ),
            (
                format!("test:5000/repo@sha256:{HEX}"),
                "test:5000",
                "test:5000/repo".into(),
                None,
                true,
            ),
            (
                "lowercase:Uppercase".into(),
                "",
                "lowercase".into(),
                Some("Uppercase"),
                false,
            ),
            (
                format!("{}a:tag", "a/".repeat(128)),
                "a",
                format!("{}a", "a/".repeat(128)),
                Some("tag"),
                false,
            ),
            (
                format!("{}a:tag-puts-this-over-max", "a/".repeat(127)),
                "a",
                format!("{}a", "a/".repeat(127)),
                Some("tag-puts-this-over-max"),
                false,
            ),
            (
                "sub-dom1.foo.com/bar/baz/quux:some-long-tag".into(),
                "sub-dom1.foo.com",
                "sub-dom1.foo.com/bar/baz/quux".into(),
                Some("some-long-tag"),
                false,
            ),
            (
                "b.gcr.io/test.example.com/my-app:test.example.com".into(),
                "b.gcr.io",
                "b.gcr.io/test.example.com/my-app".into(),
                Some("test.example.com"),
                false,
            ),
            (
                "foo_bar.com:8080".into(),
                "",
                "foo_bar.com".into(),
                Some("8080"),
                false,
            ),
            (
                "foo/foo_bar.com:8080".into(),
                "foo",
                "foo/foo_bar.com".into(),
                Some("8080"),
                false,
            ),
            ("192.168.1.1".into(), "", "192.168.1.1".into(), None, false),
            (
                "192.168.1.1:5000".into(),
                "",
                "192.168.1.1".into(),
                Some("5000"),
                false,
            ),
            (
                "192.168.1.1/repo".into(),
                "192.168.1.1",
                "192.168.1.1/repo".into(),
                None,
                false,
            ),
            (
                "192.168.1.1:5000/repo:5050".into(),
                "192.168.1.1:5000",
                "192.168.1.1:5000/repo".into(),
                Some("5050"),
                false,
            ),
            (
                "[2001:db8::1]/repo".into(),
                "[2001:db8::1]",
                "[2001:db8::1]/repo".into(),
                None,
                false,
            ),
            (
                "[2001:db8:1:2:3:4:5:6]/repo:tag".into(),
                "[2001:db8:1:2:3:4:5:6]",
                "[2001:db8:1:2:3:4:5:6]/repo".into(),
                Some("tag"),
                false,
            ),
            (
                format!("[2001:db8::1]:5000/repo:tag@sha256:{HEX}"),
                "[2001:db8::1]:5000",
                "[2001:db8::1]:5000/repo".into(),
                Some("tag"),
                true,
            ),
            (
                "[2001:db8::]:5000/repo".into(),
                "[2001:db8::]:5000",
                "[2001:db8::]:5000/repo".into(),
                None,
                false,
            ),
            (
                "[::1]:5000/repo".into(),
                "[::1]:5000",
                "[::1]:5000/repo".into(),
                None,
                false,
            ),
        ];
        for (input, domain, name, tag, has_digest) in ok {
            let r = Reference::parse(&input).unwrap_or_else(|e| panic!("{input}: {e}"));
            assert_eq!(r.to_string(), input);
            assert_eq!(r.domain(), domain, "{input}");
            assert_eq!(r.name(), name, "{input}");
            assert_eq!(r.tag(), tag, "{input}");
            assert_eq!(r.digest().is_some(), has_digest, "{input}");
        }
        let bad: Vec<(String, ReferenceError)> = vec![
            ("".into(), ReferenceError::NameEmpty),
            (":justtag".into(), ReferenceError::InvalidFormat),
            (format!("@sha256:{HEX}"), ReferenceError::InvalidFormat),
            (
                "Uppercase:tag".into(),
                ReferenceError::NameContainsUppercase,
            ),
            (
                "test:5000/Uppercase/lowercase:tag".into(),
                ReferenceError::NameContainsUppercase,
            ),
            // The limit applies to the path alone, not the domain (distribution/reference#9).
            (
                format!("example.com/{}a:tag", "a/".repeat(128)),
                ReferenceError::NameTooLong,
            ),
            ("[2001:db8::1]".into(), ReferenceError::InvalidFormat),
            ("[2001:db8::1]:5000".into(), ReferenceError::InvalidFormat),
            ("[2001:db8::1]:tag".into(), ReferenceError::InvalidFormat),
            (
                "[fe80::1%eth0]:5000/repo".into(),
                ReferenceError::InvalidFormat,
            ),
            (
                "[fe80::1%@invalidzone]:5000/repo".into(),
                ReferenceError::InvalidFormat,
            ),
        ];
        for (input, want) in bad {
            assert_eq!(Reference::parse(&input).unwrap_err(), want, "{input}");
        }
        assert_eq!(
            Reference::parse(&format!("repo@sha512:{HEX}{HEX}")).unwrap_err(),
            ReferenceError::DigestUnsupported
        );
        assert_eq!(
            norm_err("a@sha512:0123456789abcdef0123456789abcdef"),
            "invalid checksum digest length"
        );
    }

    #[test]
    fn with_tag_validates() {
        let r = norm("busybox");
        assert_eq!(
            r.with_tag("TAG5").unwrap().to_string(),
            "docker.io/library/busybox:TAG5"
        );
        assert_eq!(
            r.with_tag("-foo").unwrap_err().to_string(),
            "invalid tag format"
        );
        assert_eq!(
            r.with_tag("").unwrap_err(),
            ReferenceError::TagInvalidFormat
        );
        assert!(r.with_tag(&"a".repeat(128)).is_ok());
        assert!(r.with_tag(&"a".repeat(129)).is_err());
        assert!(r.with_tag("_x.y-Z").is_ok());
        let d = Digest::from_hex(HEX).unwrap();
        let both = r.with_tag("t").unwrap().with_digest(d);
        assert_eq!(
            both.to_string(),
            format!("docker.io/library/busybox:t@sha256:{HEX}")
        );
        assert_eq!(both.trim().to_string(), "docker.io/library/busybox");
    }

    #[test]
    fn any_reference() {
        let id = "dbcc1c35ac38df41fd2f5e4130b32ffdb93ebae8b3dbe638c23575912276fc9c";
        assert_eq!(
            parse_any_reference(id).unwrap(),
            AnyReference::Digest(Digest::from_hex(id).unwrap())
        );
        assert_eq!(
            parse_any_reference(&format!("sha256:{id}")).unwrap(),
            AnyReference::Digest(Digest::from_hex(id).unwrap())
        );
        let named = |s: &str| match parse_any_reference(s).unwrap() {
            AnyReference::Named(r) => r.to_string(),
            other => panic!("{other:?}"),
        };
        assert_eq!(named("redis"), "docker.io/library/redis");
        assert_eq!(named("dbcc1"), "docker.io/library/dbcc1");
        assert_eq!(named(&id[..63]), format!("docker.io/library/{}", &id[..63]));
        assert_eq!(
            named("dmcgowan/myapp:latest"),
            "docker.io/dmcgowan/myapp:latest"
        );
    }

    #[test]
    fn tag_command_messages() {
        assert_eq!(
            parse_tag_target("BAD:Name").unwrap_err().to_string(),
            "Error parsing reference: \"BAD:Name\" is not a valid repository/tag: invalid reference format: repository name (library/BAD) must be lowercase"
        );
        assert_eq!(
            parse_tag_target("cdkSpringRds-app:0.0.1-SNAPSHOT")
                .unwrap_err()
                .to_string(),
            "Error parsing reference: \"cdkSpringRds-app:0.0.1-SNAPSHOT\" is not a valid repository/tag: invalid reference format: repository name (library/cdkSpringRds-app) must be lowercase"
        );
        assert_eq!(
            parse_tag_target("jekyll/jekyll:3.8 AS build-env")
                .unwrap_err()
                .to_string(),
            "Error parsing reference: \"jekyll/jekyll:3.8 AS build-env\" is not a valid repository/tag: invalid reference format"
        );
        assert_eq!(
            parse_tag_target(&format!("x@sha256:{HEX}"))
                .unwrap_err()
                .to_string(),
            "refusing to create a tag with a digest reference"
        );
        assert_eq!(
            parse_tag_target("sha256:abc").unwrap_err().to_string(),
            "refusing to create an ambiguous tag using digest algorithm as name"
        );
        assert_eq!(
            parse_tag_target("x\"y").unwrap_err().to_string(),
            "Error parsing reference: \"x\\\"y\" is not a valid repository/tag: invalid reference format"
        );
        let t = parse_tag_target("user/img").unwrap();
        assert_eq!(t.familiar_string(), "user/img:latest");
        assert!(parse_tag_source("a04f76681f15").is_ok());
        assert_eq!(
            parse_tag_source("A").unwrap_err().to_string(),
            "Error parsing reference: \"A\" is not a valid repository/tag: invalid reference format: repository name (library/A) must be lowercase"
        );
        assert_eq!(
            parse_tag_target("Busybox").unwrap_err().kind(),
            ErrorKind::InvalidArgument
        );
    }

    #[test]
    fn serde_round_trip() {
        use serde::de::IntoDeserializer;
        use serde::de::value::{Error as DeError, StrDeserializer};
        let r = norm("localhost:5000/x:tag");
        let de: StrDeserializer<'_, DeError> = "localhost:5000/x:tag".into_deserializer();
        assert_eq!(Reference::deserialize(de).unwrap(), r);
        let de: StrDeserializer<'_, DeError> = "Bad".into_deserializer();
        assert!(Reference::deserialize(de).is_err());
        let back: Reference = "localhost:5000/x:tag".parse().unwrap();
        assert_eq!(back, r);
        // Normalization is idempotent, so stored full strings read back unchanged.
        for s in [
            "busybox",
            "Foo/bar",
            "foo_bar.com/x",
            "docker.io/user/img:1",
        ] {
            let once = norm(s);
            assert_eq!(norm(&once.to_string()), once, "{s}");
        }
    }
}
