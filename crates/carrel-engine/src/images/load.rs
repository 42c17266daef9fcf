//! `carrel load`: images from `docker save` archives (the legacy `manifest.json` layout and the
//! OCI image layout Docker ≥ 25 writes), compressed or not, from a file or a stream.
//!
//! The archive is made seekable first (a stream or a compressed archive is spooled into the
//! content store's ingest directory), then indexed, then each image's config and layers are
//! verified and stored. Everything is done under a lease: if the process dies, the next carrel
//! command rolls back what was half done, and no image is recorded until all its layers are.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use serde::Deserialize;

use carrel_core::Digest;
use carrel_core::reference::Reference;
use carrel_meta::Lease;
use carrel_meta::images::{self as rows, ImageRow};
use carrel_storage::content::Expected;

use super::config::{ImageConfig, MAX_JSON};
use super::layers::{LayerJob, LayerSpec};
use crate::progress::ProgressReader;
use crate::{Engine, EngineError, Progress, Result};

/// Where an archive comes from.
pub enum LoadInput {
    /// A file on the host.
    File(PathBuf),
    /// A stream (stdin, an HTTP body).
    Stream(Box<dyn Read + Send>),
}

/// One image that was loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadedImage {
    /// Its id.
    pub id: Digest,
    /// The tags it got (familiar form), empty when the archive named none.
    pub tags: Vec<String>,
    /// Tags that moved from another image: (tag, previous image id).
    pub moved_tags: Vec<(String, Digest)>,
}

/// The most entries an image archive may have.
const MAX_ENTRIES: usize = 1_000_000;
/// Media type recorded for configs.
pub const MEDIA_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Media type recorded for uncompressed layers of legacy archives.
pub const MEDIA_LAYER_TAR: &str = "application/vnd.oci.image.layer.v1.tar";

/// How messages about refused archives begin (the archive's name is added once known).
const BAD_ARCHIVE: &str = "invalid image archive";

fn bad(what: impl std::fmt::Display) -> EngineError {
    EngineError::InvalidArgument(format!("{BAD_ARCHIVE}: {what}"))
}

/// Name the input in the message of an error about its content (`invalid image archive
/// /path/x.tar: …`): when a file is refused, users need to know which one. `what` is the prefix
/// such messages start with; errors that are not about the content (I/O, full disk) are kept.
pub(crate) fn name_input(e: EngineError, what: &str, input: Option<&str>) -> EngineError {
    use carrel_core::HasKind;
    let Some(name) = input else { return e };
    match e {
        EngineError::InvalidArgument(m) => match m.strip_prefix(what) {
            Some(rest) if rest.starts_with(": ") => {
                EngineError::InvalidArgument(format!("{what} {name}{rest}"))
            }
            _ => EngineError::InvalidArgument(m),
        },
        EngineError::Archive(a) if a.kind() == carrel_core::ErrorKind::InvalidArgument => {
            EngineError::InvalidArgument(format!("{what} {name}: {a}"))
        }
        other => other,
    }
}

/// Text from a parser (which may quote the garbage it choked on) made fit for a one-line
/// message: control characters and undecodable bytes become `?`, and it is cut short.
fn printable(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| {
            if c.is_control() || c == char::REPLACEMENT_CHARACTER {
                '?'
            } else {
                c
            }
        })
        .take(200)
        .collect();
    if s.chars().count() > 200 {
        out.push('…');
    }
    out
}

/// A file entry of the outer archive.
#[derive(Debug, Clone)]
struct Entry {
    offset: u64,
    size: u64,
}

/// The outer archive, indexed.
struct ArchiveIndex {
    file: File,
    entries: HashMap<String, Entry>,
}

/// Normalize an archive member name: no leading `./` or `/`, no `.` components.
fn norm(name: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for p in name.split('/') {
        match p {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            p => parts.push(p),
        }
    }
    parts.join("/")
}

impl ArchiveIndex {
    fn build(file: File) -> Result<ArchiveIndex> {
        let mut entries: HashMap<String, Entry> = HashMap::new();
        let mut links: Vec<(String, String)> = Vec::new();
        {
            let mut archive = tar::Archive::new(&file);
            let iter = archive
                .entries_with_seek()
                .map_err(|e| bad(format!("not a tar archive: {e}")))?;
            for (n, entry) in iter.enumerate() {
                if n >= MAX_ENTRIES {
                    return Err(bad(format!("more than {MAX_ENTRIES} entries")));
                }
                let entry = entry.map_err(|e| {
                    if n == 0 {
                        bad("not a tar archive (no valid tar header at its start)")
                    } else {
                        bad(format!(
                            "corrupt or truncated tar after {n} entries: {}",
                            printable(&e.to_string())
                        ))
                    }
                })?;
                let name = norm(&String::from_utf8_lossy(&entry.path_bytes()));
                let kind = entry.header().entry_type();
                if kind.is_file() {
                    let offset = entry.raw_file_position();
                    let size = entry.size();
                    entries.insert(name, Entry { offset, size });
                } else if kind.is_symlink() || kind.is_hard_link() {
                    let target = entry
                        .link_name_bytes()
                        .map(|b| String::from_utf8_lossy(&b).into_owned())
                        .unwrap_or_default();
                    let resolved = if kind.is_symlink() && !target.starts_with('/') {
                        let dir = name.rsplit_once('/').map(|(d, _)| d).unwrap_or("");
                        norm(&format!("{dir}/{target}"))
                    } else {
                        norm(&target)
                    };
                    links.push((name, resolved));
                }
            }
        }
        // Links to files (legacy archives link shared layers): resolve a few hops.
        for _ in 0..8 {
            let mut progress = false;
            for (name, target) in &links {
                if !entries.contains_key(name)
                    && let Some(e) = entries.get(target).cloned()
                {
                    entries.insert(name.clone(), e);
                    progress = true;
                }
            }
            if !progress {
                break;
            }
        }
        let len = file
            .metadata()
            .map_err(|e| bad(format!("cannot stat archive: {e}")))?
            .len();
        for (name, e) in &entries {
            if e.offset.saturating_add(e.size) > len {
                return Err(bad(format!("{name} is truncated")));
            }
        }
        Ok(ArchiveIndex { file, entries })
    }

    fn get(&self, name: &str) -> Result<&Entry> {
        self.entries
            .get(&norm(name))
            .ok_or_else(|| bad(format!("{name} is referenced but not in the archive")))
    }

    fn reader(&self, name: &str) -> Result<RangeReader> {
        let e = self.get(name)?;
        let file = self
            .file
            .try_clone()
            .map_err(|err| bad(format!("cannot reopen archive: {err}")))?;
        Ok(RangeReader {
            file,
            pos: e.offset,
            end: e.offset + e.size,
        })
    }

    fn read_small(&self, name: &str) -> Result<Vec<u8>> {
        let e = self.get(name)?;
        if e.size > MAX_JSON {
            return Err(bad(format!("{name} is too large ({} bytes)", e.size)));
        }
        let mut out = Vec::with_capacity(e.size as usize);
        self.reader(name)?
            .read_to_end(&mut out)
            .map_err(|err| bad(format!("reading {name}: {err}")))?;
        Ok(out)
    }
}

/// Reads one byte range of a file with `pread`, independent of other readers.
struct RangeReader {
    file: File,
    pos: u64,
    end: u64,
}

impl Read for RangeReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.end.saturating_sub(self.pos);
        if left == 0 {
            return Ok(0);
        }
        let want = buf.len().min(left as usize);
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "archive ends inside an entry",
            ));
        }
        self.pos += n as u64;
        Ok(n)
    }
}

/// A temporary file in the ingest directory, removed when dropped.
struct Spool {
    path: PathBuf,
}

impl Drop for Spool {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// `manifest.json` of a docker archive.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerManifestEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

/// An OCI descriptor.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    media_type: String,
    digest: Digest,
    size: u64,
    #[serde(default)]
    annotations: Option<BTreeMap<String, String>>,
    #[serde(default)]
    platform: Option<Platform>,
}

#[derive(Debug, Clone, Deserialize)]
struct Platform {
    architecture: String,
    os: String,
}

#[derive(Debug, Deserialize)]
struct OciIndex {
    manifests: Vec<Descriptor>,
}

#[derive(Debug, Deserialize)]
struct OciManifest {
    config: Descriptor,
    layers: Vec<Descriptor>,
}

/// An image found in an archive, before it is stored.
struct Candidate {
    config_path: String,
    config_expected: Option<Expected>,
    manifest: Option<String>,
    layers: Vec<CandidateLayer>,
    tags: Vec<String>,
}

struct CandidateLayer {
    path: String,
    expected: Option<Expected>,
    media_type: String,
}

fn blob_path(d: &Digest) -> String {
    format!("blobs/sha256/{}", d.hex())
}

/// The digest a member name promises: `blobs/sha256/<hex>` or legacy `<hex>.json`.
fn named_digest(path: &str) -> Option<Digest> {
    let p = norm(path);
    if let Some(hex) = p.strip_prefix("blobs/sha256/") {
        return Digest::from_hex(hex).ok();
    }
    p.strip_suffix(".json")
        .and_then(|h| Digest::from_hex(h).ok())
}

fn docker_candidates(index: &ArchiveIndex) -> Result<Vec<Candidate>> {
    let raw = index.read_small("manifest.json")?;
    let manifest: Vec<DockerManifestEntry> =
        serde_json::from_slice(&raw).map_err(|e| bad(format!("manifest.json: {e}")))?;
    if manifest.is_empty() {
        return Err(bad("manifest.json lists no images"));
    }
    Ok(manifest
        .into_iter()
        .map(|m| Candidate {
            config_expected: named_digest(&m.config).map(|digest| Expected { digest, size: None }),
            config_path: m.config,
            manifest: None,
            layers: m
                .layers
                .into_iter()
                .map(|l| CandidateLayer {
                    expected: norm(&l)
                        .strip_prefix("blobs/sha256/")
                        .and_then(|h| Digest::from_hex(h).ok())
                        .map(|digest| Expected { digest, size: None }),
                    path: l,
                    media_type: MEDIA_LAYER_TAR.to_string(),
                })
                .collect(),
            tags: m.repo_tags.unwrap_or_default(),
        })
        .collect())
}

fn oci_candidates(index: &ArchiveIndex) -> Result<Vec<Candidate>> {
    let raw = index.read_small("index.json")?;
    let idx: OciIndex =
        serde_json::from_slice(&raw).map_err(|e| bad(format!("index.json: {e}")))?;
    let mut out = Vec::new();
    let mut queue: Vec<(Descriptor, Option<String>)> =
        idx.manifests.into_iter().map(|d| (d, None)).collect();
    let mut depth = 0;
    while let Some((desc, inherited_name)) = queue.pop() {
        depth += 1;
        if depth > 1000 {
            return Err(bad("index.json nests too deeply"));
        }
        let name = desc
            .annotations
            .as_ref()
            .and_then(|a| {
                a.get("io.containerd.image.name")
                    .or_else(|| a.get("org.opencontainers.image.ref.name"))
            })
            .cloned()
            .or(inherited_name);
        let bytes = index.read_small(&blob_path(&desc.digest))?;
        verify_bytes(&bytes, &desc, "manifest")?;
        match desc.media_type.as_str() {
            "application/vnd.oci.image.index.v1+json"
            | "application/vnd.docker.distribution.manifest.list.v2+json" => {
                let nested: OciIndex = serde_json::from_slice(&bytes)
                    .map_err(|e| bad(format!("index {}: {e}", desc.digest)))?;
                // Pick the manifest for this host's platform.
                let arch = super::config::host_architecture();
                let chosen = nested
                    .manifests
                    .iter()
                    .find(|m| {
                        m.platform
                            .as_ref()
                            .is_some_and(|p| p.architecture == arch && p.os == "linux")
                    })
                    .or(nested.manifests.first())
                    .cloned();
                if let Some(m) = chosen {
                    queue.push((m, name));
                }
            }
            _ => {
                let m: OciManifest = serde_json::from_slice(&bytes)
                    .map_err(|e| bad(format!("manifest {}: {e}", desc.digest)))?;
                let tags = name
                    .filter(|n| n.contains(':') || n.contains('/'))
                    .into_iter()
                    .collect();
                out.push(Candidate {
                    config_path: blob_path(&m.config.digest),
                    config_expected: Some(Expected {
                        digest: m.config.digest.clone(),
                        size: Some(m.config.size),
                    }),
                    manifest: Some(String::from_utf8_lossy(&bytes).into_owned()),
                    layers: m
                        .layers
                        .iter()
                        .map(|l| CandidateLayer {
                            path: blob_path(&l.digest),
                            expected: Some(Expected {
                                digest: l.digest.clone(),
                                size: Some(l.size),
                            }),
                            media_type: l.media_type.clone(),
                        })
                        .collect(),
                    tags,
                });
            }
        }
    }
    if out.is_empty() {
        return Err(bad("index.json lists no image manifests"));
    }
    Ok(out)
}

fn verify_bytes(bytes: &[u8], desc: &Descriptor, what: &str) -> Result<()> {
    let found = Digest::of_bytes(bytes);
    if bytes.len() as u64 != desc.size {
        return Err(bad(format!(
            "{what} {}: size mismatch: expected {} bytes, found {}",
            desc.digest,
            desc.size,
            bytes.len()
        )));
    }
    if found != desc.digest {
        return Err(bad(format!(
            "{what}: digest mismatch: expected {}, found {found}",
            desc.digest
        )));
    }
    Ok(())
}

impl Engine {
    /// Load every image of a `docker save` / OCI archive.
    pub fn image_load(
        &self,
        input: LoadInput,
        progress: &dyn Progress,
    ) -> Result<Vec<LoadedImage>> {
        let name = match &input {
            LoadInput::File(p) => Some(p.display().to_string()),
            LoadInput::Stream(_) => None,
        };
        let lease = self.lease("image load")?;
        let mut reused = false;
        let result = self
            .load_under(&lease, input, progress, &mut reused)
            .map_err(|e| name_input(e, BAD_ARCHIVE, name.as_deref()));
        // Release the lease whatever happened. On failure, collecting garbage removes what this
        // load stored. On success the images reference what was stored, except the blobs of
        // layers that existed already (e.g. compressed where the existing layer came from an
        // uncompressed archive): collect those too.
        self.end_lease(lease, result.is_err() || reused);
        if let Ok(images) = &result {
            for img in images {
                if img.tags.is_empty() {
                    self.emit_image_event(&img.id.to_string(), "load", None);
                }
                for t in &img.tags {
                    self.emit_image_event(&img.id.to_string(), "load", Some(t));
                }
            }
        }
        result
    }

    fn load_under(
        &self,
        lease: &Lease,
        input: LoadInput,
        progress: &dyn Progress,
        reused: &mut bool,
    ) -> Result<Vec<LoadedImage>> {
        let (file, _spool) = self.seekable_archive(lease, input, progress)?;
        let index = ArchiveIndex::build(file)?;
        let candidates = if index.entries.contains_key("manifest.json") {
            docker_candidates(&index)?
        } else if index.entries.contains_key("index.json") {
            oci_candidates(&index)?
        } else {
            return Err(bad(
                "no manifest.json or index.json: not a docker save or OCI image archive",
            ));
        };
        let mut loaded = Vec::new();
        for cand in candidates {
            loaded.push(self.load_candidate(lease, &index, cand, progress, reused)?);
        }
        Ok(loaded)
    }

    /// The archive as an uncompressed, seekable file (spooled when needed).
    fn seekable_archive(
        &self,
        lease: &Lease,
        input: LoadInput,
        progress: &dyn Progress,
    ) -> Result<(File, Option<Spool>)> {
        let stream: Box<dyn Read + Send> = match input {
            LoadInput::File(path) => {
                let mut file = File::open(&path).map_err(|e| {
                    EngineError::InvalidArgument(format!(
                        "cannot open image archive {}: {e}",
                        path.display()
                    ))
                })?;
                let mut magic = [0u8; 6];
                let n = read_full(&mut file, &mut magic)
                    .map_err(|e| EngineError::io("reading", &path, e))?;
                if n == 0 {
                    return Err(bad("the file is empty"));
                }
                if carrel_archive::detect(&magic[..n])? == carrel_archive::Compression::None {
                    file.seek(SeekFrom::Start(0))
                        .map_err(|e| EngineError::io("reading", &path, e))?;
                    return Ok((file, None));
                }
                file.seek(SeekFrom::Start(0))
                    .map_err(|e| EngineError::io("reading", &path, e))?;
                Box::new(file)
            }
            LoadInput::Stream(s) => s,
        };
        let (_, plain) = carrel_archive::decompress(BufReader::with_capacity(1 << 20, stream))?;
        let path = self.content().ingest_dir().join(format!(
            "{}-spool-{}",
            lease.id(),
            &carrel_core::id::random_id()[..8]
        ));
        let spool = Spool { path: path.clone() };
        let mut out = File::options()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| EngineError::io("creating", &path, e))?;
        progress.start("Reading archive", None);
        let mut reader = ProgressReader::new(plain, progress);
        let copied = io::copy(&mut reader, &mut out).map_err(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof
            | io::ErrorKind::InvalidData
            | io::ErrorKind::InvalidInput => bad(format!("corrupt or truncated input: {e}")),
            _ => EngineError::io("spooling archive to", &path, e),
        })?;
        progress.finish();
        if copied == 0 {
            return Err(bad("the input is empty"));
        }
        out.flush()
            .map_err(|e| EngineError::io("writing", &path, e))?;
        out.seek(SeekFrom::Start(0))
            .map_err(|e| EngineError::io("reading", &path, e))?;
        Ok((out, Some(spool)))
    }

    fn load_candidate(
        &self,
        lease: &Lease,
        index: &ArchiveIndex,
        cand: Candidate,
        progress: &dyn Progress,
        reused: &mut bool,
    ) -> Result<LoadedImage> {
        let config_bytes = index.read_small(&cand.config_path)?;
        let config_digest = Digest::of_bytes(&config_bytes);
        if let Some(exp) = &cand.config_expected {
            if exp.digest != config_digest {
                return Err(bad(format!(
                    "config {}: digest mismatch: expected {}, found {config_digest}",
                    cand.config_path, exp.digest
                )));
            }
            if let Some(size) = exp.size
                && size != config_bytes.len() as u64
            {
                return Err(bad(format!(
                    "config {}: size mismatch: expected {size} bytes, found {}",
                    cand.config_path,
                    config_bytes.len()
                )));
            }
        }
        let config = ImageConfig::parse(&config_bytes).map_err(bad)?;
        if config.rootfs.diff_ids.len() != cand.layers.len() {
            return Err(bad(format!(
                "image {}: config lists {} layers but the manifest has {}",
                config_digest.short(),
                config.rootfs.diff_ids.len(),
                cand.layers.len()
            )));
        }
        // Validate every tag before storing anything.
        let mut tags = Vec::new();
        for t in &cand.tags {
            let r = Reference::parse_normalized_named(t)
                .map_err(|e| bad(format!("tag {t:?}: {e}")))?
                .with_default_tag();
            tags.push(r);
        }
        self.content().write_bytes(
            lease,
            &config_bytes,
            MEDIA_CONFIG,
            cand.config_expected.as_ref(),
        )?;

        let chains = carrel_core::id::chain_ids(&config.rootfs.diff_ids);
        let mut jobs = Vec::with_capacity(cand.layers.len());
        for (i, layer) in cand.layers.iter().enumerate() {
            let entry_size = index.get(&layer.path)?.size;
            let path = layer.path.clone();
            jobs.push(LayerJob {
                spec: LayerSpec {
                    chain: chains[i].clone(),
                    parent: i.checked_sub(1).map(|p| chains[p].clone()),
                    diff_id: config.rootfs.diff_ids[i].clone(),
                    blob: None,
                },
                source: Box::new(
                    move || Ok(Box::new(index.reader(&path)?) as Box<dyn Read + Send>),
                ),
                size: Some(entry_size),
                store_as: Some((layer.media_type.clone(), layer.expected.clone())),
            });
        }
        let outcomes = self.ensure_layers(lease, jobs, progress)?;
        *reused |= outcomes.iter().any(|o| !o.created);
        let size = outcomes.iter().map(|o| o.size).sum();

        let now = carrel_meta::now_nanos();
        let row = ImageRow {
            id: config_digest.clone(),
            config: String::from_utf8(config_bytes)
                .map_err(|_| bad("image config is not UTF-8"))?,
            manifest: cand.manifest,
            layers: chains,
            size,
            created: config.created_nanos(),
            loaded: now,
            last_tag: None,
        };
        let moved = self.meta().write(|tx| {
            rows::insert(tx, &row)?;
            let mut moved = Vec::new();
            for t in &tags {
                if let Some(prev) = rows::set_tag(tx, &t.to_string(), &row.id, now)? {
                    moved.push((t.familiar_string(), prev));
                }
            }
            Ok(moved)
        })?;
        // Images that lost their last tag stay as dangling images, as in Docker.
        Ok(LoadedImage {
            id: config_digest,
            tags: tags.iter().map(|t| t.familiar_string()).collect(),
            moved_tags: moved,
        })
    }
}

/// Fill `buf` from `r` as far as the stream goes; returns how many bytes were read.
pub(super) fn read_full(r: &mut (impl Read + ?Sized), buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}
