//! `carrel save`: write images as an archive both `docker load` (any version) and OCI tools read.
//!
//! The archive holds the OCI image layout (`oci-layout`, `index.json`, `blobs/sha256/…`) and
//! Docker's `manifest.json` (plus the legacy `repositories`), like the archives Docker ≥ 25
//! writes. Layers are written uncompressed, so a layer's blob digest is its diff id; each is
//! re-hashed while written and checked against the diff id. A layer loaded as a plain tar is
//! reassembled from its extracted directory and its tar-split (the same bytes as loaded).

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read, Write};

use serde_json::json;

use carrel_core::{Digest, DigestReader};
use carrel_meta::images::ImageRow;
use carrel_meta::snapshots;

use super::layers::{LABEL_BLOB, LABEL_DIFF_ID, LABEL_TAR_SIZE, LABEL_TAR_SPLIT, layer_key};
use crate::progress::ProgressReader;
use crate::{Engine, EngineError, Progress, Result};

/// Media type of an OCI manifest.
pub const MEDIA_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// Media type of an OCI index.
pub const MEDIA_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// One image to save and the names it is saved under.
struct Selected {
    row: ImageRow,
    tags: Vec<carrel_core::reference::Reference>,
}

/// Where a saved layer's tar comes from.
enum LayerSource {
    /// The layer as shipped (plain or compressed), stored whole.
    Blob(Digest),
    /// The layer's tar-split (stored blob) and the snapshot whose directory holds the rest.
    Split { split: Digest, key: String },
}

/// A layer's diff id, where its tar comes from, and its uncompressed size.
struct LayerFile {
    diff_id: Digest,
    source: LayerSource,
    size: u64,
}

impl Engine {
    /// Write `names` (references or ids) as one archive to `out`.
    pub fn image_save(
        &self,
        names: &[String],
        out: &mut dyn Write,
        progress: &dyn Progress,
    ) -> Result<()> {
        if names.is_empty() {
            return Err(EngineError::InvalidArgument("no images to save".into()));
        }
        let mut selected: Vec<Selected> = Vec::new();
        for name in names {
            let row = self.resolve_image(name)?;
            let mut tags = Vec::new();
            // A name that is a tag saves that tag; an id saves all of the image's tags.
            match carrel_core::reference::Reference::parse_normalized_named(name) {
                Ok(r) if !carrel_core::digest::is_hex64(name) && self.is_tag_of(&r, &row)? => {
                    tags.push(r.with_default_tag())
                }
                _ => {
                    for t in self
                        .meta()
                        .read(|c| carrel_meta::images::tags_of(c, &row.id))?
                    {
                        tags.push(carrel_core::reference::Reference::parse_normalized_named(
                            &t,
                        )?);
                    }
                }
            }
            if let Some(s) = selected.iter_mut().find(|s| s.row.id == row.id) {
                for t in tags {
                    if !s.tags.contains(&t) {
                        s.tags.push(t);
                    }
                }
            } else {
                selected.push(Selected { row, tags });
            }
        }

        let mut builder = tar::Builder::new(out);
        let mut written: BTreeSet<Digest> = BTreeSet::new();
        let mut docker_manifest = Vec::new();
        let mut oci_manifests = Vec::new();
        let mut repositories: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        for sel in &selected {
            let layers = self.layer_files(&sel.row)?;
            for l in &layers {
                if written.insert(l.diff_id.clone()) {
                    self.write_layer(&mut builder, l, progress)?;
                }
            }
            if written.insert(sel.row.id.clone()) {
                append_bytes(
                    &mut builder,
                    &blob_name(&sel.row.id),
                    sel.row.config.as_bytes(),
                )?;
            }
            let manifest = json!({
                "schemaVersion": 2,
                "mediaType": MEDIA_MANIFEST,
                "config": {
                    "mediaType": super::load::MEDIA_CONFIG,
                    "digest": sel.row.id.to_string(),
                    "size": sel.row.config.len(),
                },
                "layers": layers.iter().map(|l| json!({
                    "mediaType": super::load::MEDIA_LAYER_TAR,
                    "digest": l.diff_id.to_string(),
                    "size": l.size,
                })).collect::<Vec<_>>(),
            });
            let manifest_bytes = serde_json::to_vec(&manifest).unwrap_or_default();
            let manifest_digest = Digest::of_bytes(&manifest_bytes);
            if written.insert(manifest_digest.clone()) {
                append_bytes(&mut builder, &blob_name(&manifest_digest), &manifest_bytes)?;
            }
            let familiar: Vec<String> = sel.tags.iter().map(|t| t.familiar_string()).collect();
            docker_manifest.push(json!({
                "Config": blob_name(&sel.row.id),
                "RepoTags": if familiar.is_empty() { serde_json::Value::Null } else { json!(familiar) },
                "Layers": layers.iter().map(|l| blob_name(&l.diff_id)).collect::<Vec<_>>(),
            }));
            let descriptor = |annotations: serde_json::Value| {
                json!({
                    "mediaType": MEDIA_MANIFEST,
                    "digest": manifest_digest.to_string(),
                    "size": manifest_bytes.len(),
                    "annotations": annotations,
                })
            };
            if sel.tags.is_empty() {
                oci_manifests.push(descriptor(json!({})));
            }
            for t in &sel.tags {
                oci_manifests.push(descriptor(json!({
                    "io.containerd.image.name": t.to_string(),
                    "org.opencontainers.image.ref.name": t.tag().unwrap_or("latest"),
                })));
                if let Some(top) = sel.row.layers.last() {
                    repositories.entry(t.familiar_name()).or_default().insert(
                        t.tag().unwrap_or("latest").to_string(),
                        top.hex().to_string(),
                    );
                }
            }
        }
        let index = json!({
            "schemaVersion": 2,
            "mediaType": MEDIA_INDEX,
            "manifests": oci_manifests,
        });
        append_bytes(
            &mut builder,
            "index.json",
            &serde_json::to_vec(&index).unwrap_or_default(),
        )?;
        append_bytes(
            &mut builder,
            "manifest.json",
            &serde_json::to_vec(&docker_manifest).unwrap_or_default(),
        )?;
        append_bytes(
            &mut builder,
            "oci-layout",
            br#"{"imageLayoutVersion":"1.0.0"}"#,
        )?;
        if !repositories.is_empty() {
            append_bytes(
                &mut builder,
                "repositories",
                &serde_json::to_vec(&repositories).unwrap_or_default(),
            )?;
        }
        builder
            .into_inner()
            .and_then(|w| w.flush())
            .map_err(|e| EngineError::io("writing", "archive", e))?;
        Ok(())
    }

    fn is_tag_of(&self, r: &carrel_core::reference::Reference, row: &ImageRow) -> Result<bool> {
        let full = r.clone().with_default_tag().to_string();
        Ok(self
            .meta()
            .read(|c| carrel_meta::images::get_tag(c, &full))?
            .is_some_and(|t| t.image_id == row.id))
    }

    /// The layers of an image with the blobs that hold them and their uncompressed sizes.
    fn layer_files(&self, row: &ImageRow) -> Result<Vec<LayerFile>> {
        let mut out = Vec::new();
        for chain in &row.layers {
            let snap = self
                .meta()
                .read(|c| snapshots::get(c, &layer_key(chain)))?
                .ok_or_else(|| {
                    EngineError::NotFound(format!(
                        "image {}: layer {chain} is missing (run `carrel system check`)",
                        row.id.short()
                    ))
                })?;
            let parse = |label: &str| -> Result<Digest> {
                snap.labels
                    .get(label)
                    .and_then(|v| Digest::parse(v).ok())
                    .ok_or_else(|| {
                        EngineError::NotFound(format!(
                            "layer {chain} has no stored content to save (label {label})"
                        ))
                    })
            };
            let diff_id = parse(LABEL_DIFF_ID)?;
            let source = if snap.labels.contains_key(LABEL_TAR_SPLIT) {
                LayerSource::Split {
                    split: parse(LABEL_TAR_SPLIT)?,
                    key: snap.key.clone(),
                }
            } else {
                LayerSource::Blob(parse(LABEL_BLOB)?)
            };
            let size = match (
                snap.labels.get(LABEL_TAR_SIZE).and_then(|v| v.parse().ok()),
                &source,
            ) {
                (Some(size), _) => size,
                (None, LayerSource::Blob(blob)) => self.uncompressed_size(blob)?,
                (None, LayerSource::Split { .. }) => {
                    return Err(EngineError::NotFound(format!(
                        "layer {chain} has no recorded tar size (label {LABEL_TAR_SIZE})"
                    )));
                }
            };
            out.push(LayerFile {
                diff_id,
                source,
                size,
            });
        }
        Ok(out)
    }

    /// The size of a blob once decompressed (the blob's own size when it is not compressed).
    fn uncompressed_size(&self, blob: &Digest) -> Result<u64> {
        let file = self.content().open_blob(blob)?;
        let (_, mut plain) =
            carrel_archive::decompress(io::BufReader::with_capacity(1 << 20, file))?;
        io::copy(&mut plain, &mut io::sink())
            .map_err(|e| EngineError::io("reading blob", self.content().blob_path(blob), e))
    }

    /// A layer's uncompressed tar: the stored blob, decompressed, or the tar-split reassembled
    /// from the layer's directory.
    fn layer_tar(&self, source: &LayerSource) -> Result<Box<dyn Read + '_>> {
        match source {
            LayerSource::Blob(blob) => {
                let file = self.content().open_blob(blob)?;
                let (_, plain) =
                    carrel_archive::decompress(io::BufReader::with_capacity(1 << 20, file))?;
                Ok(plain)
            }
            LayerSource::Split { split, key } => {
                let stored = self.content().read_blob(split, MAX_SPLIT_BYTES)?;
                let path = self.content().blob_path(split);
                let split = carrel_archive::TarSplit::from_bytes(&stored)
                    .map_err(|e| EngineError::io("reading tar-split", &path, e))?;
                let dir = self.snapshotter().upper_dir(key)?;
                let root = carrel_core::fs::Root::open(&dir)
                    .map_err(|e| EngineError::io("opening layer", &dir, e))?;
                Ok(Box::new(io::BufReader::with_capacity(
                    1 << 20,
                    split.reassemble(root),
                )))
            }
        }
    }

    fn write_layer(
        &self,
        builder: &mut tar::Builder<&mut dyn Write>,
        layer: &LayerFile,
        progress: &dyn Progress,
    ) -> Result<()> {
        progress.start(
            &format!("Saving layer {}", layer.diff_id.short()),
            Some(layer.size),
        );
        let plain = self.layer_tar(&layer.source)?;
        let mut hashed = DigestReader::new(ProgressReader::new(plain, progress));
        let mut header = file_header(layer.size);
        builder
            .append_data(
                &mut header,
                blob_name(&layer.diff_id),
                &mut (&mut hashed).take(layer.size),
            )
            .map_err(|e| EngineError::io("writing layer", blob_name(&layer.diff_id), e))?;
        let (found, n, _) = hashed.finish_now();
        progress.finish();
        if n != layer.size || found != layer.diff_id {
            return Err(EngineError::InvalidArgument(format!(
                "layer {}: stored content does not match its diff id (found {found}, {n} bytes); run `carrel system check`",
                layer.diff_id
            )));
        }
        Ok(())
    }
}

/// The largest stored tar-split read back (they hold at most
/// [`carrel_archive::split::MAX_RAW_BYTES`] of headers, compressed).
const MAX_SPLIT_BYTES: u64 = 256 << 20;

fn blob_name(d: &Digest) -> String {
    format!("blobs/sha256/{}", d.hex())
}

fn file_header(size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(size);
    h.set_mode(0o444);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h
}

fn append_bytes(builder: &mut tar::Builder<&mut dyn Write>, name: &str, data: &[u8]) -> Result<()> {
    let mut h = file_header(data.len() as u64);
    builder
        .append_data(&mut h, name, data)
        .map_err(|e| EngineError::io("writing", name.to_string(), e))
}
