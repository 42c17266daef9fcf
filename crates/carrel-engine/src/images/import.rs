//! `carrel import`: a one-layer image from a root filesystem tar (plain or compressed).

use std::io::{self, BufReader, Read};

use carrel_core::Digest;
use carrel_core::reference::{self, Reference};
use carrel_meta::images::{self as rows, ImageRow};

use super::changes::apply_changes;
use super::config::{
    HistoryEntry, ImageConfig, RootFs, RunConfig, host_architecture, rfc3339_nanos,
};
use super::layers::LayerSpec;
use super::load::{LoadInput, MEDIA_CONFIG, MEDIA_LAYER_TAR, name_input};
use crate::progress::ProgressReader;
use crate::{Engine, EngineError, Progress, Result};

/// How messages about refused import archives begin.
const BAD_IMPORT: &str = "invalid import archive";

/// Options of `carrel import`.
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// `REPOSITORY[:TAG]` to tag the new image with.
    pub reference: Option<String>,
    /// `--change` instructions.
    pub changes: Vec<String>,
    /// `--message`: the commit message (default `Imported from -`).
    pub message: Option<String>,
    /// Creation time to record, nanoseconds since the epoch (default: now).
    pub created: Option<i64>,
}

impl Engine {
    /// Import a root filesystem tar as a new one-layer image and return its id.
    pub fn image_import(
        &self,
        input: LoadInput,
        opts: &ImportOptions,
        progress: &dyn Progress,
    ) -> Result<Digest> {
        // Everything the user typed is validated before any work is done.
        let reference: Option<Reference> = opts
            .reference
            .as_deref()
            .map(reference::parse_tag_target)
            .transpose()?;
        let mut run = RunConfig::default();
        apply_changes(&mut run, &opts.changes)?;
        let (stream, name): (Box<dyn Read + Send>, _) = match input {
            LoadInput::File(path) => (
                Box::new(std::fs::File::open(&path).map_err(|e| {
                    EngineError::InvalidArgument(format!("cannot open {}: {e}", path.display()))
                })?),
                Some(path.display().to_string()),
            ),
            LoadInput::Stream(s) => (s, None),
        };

        let lease = self.lease("image import")?;
        let result = self
            .import_under(&lease, stream, run, reference.as_ref(), opts, progress)
            .map_err(|e| name_input(e, BAD_IMPORT, name.as_deref()));
        self.end_lease(lease, result.is_err());
        if let Ok(id) = &result {
            let name = reference.as_ref().map(|r| r.familiar_string());
            self.emit_image_event(&id.to_string(), "import", name.as_deref());
        }
        result
    }

    fn import_under(
        &self,
        lease: &carrel_meta::Lease,
        stream: Box<dyn Read + Send>,
        run: RunConfig,
        reference: Option<&Reference>,
        opts: &ImportOptions,
        progress: &dyn Progress,
    ) -> Result<Digest> {
        // Store the tar uncompressed: its digest is then the layer's diff id.
        progress.start("Importing", None);
        let (_, plain) = carrel_archive::decompress(BufReader::with_capacity(1 << 20, stream))?;
        let mut writer = self.content().writer(lease)?;
        io::copy(&mut ProgressReader::new(plain, progress), &mut writer).map_err(|e| {
            match e.kind() {
                io::ErrorKind::InvalidData
                | io::ErrorKind::UnexpectedEof
                | io::ErrorKind::InvalidInput => {
                    EngineError::InvalidArgument(format!("{BAD_IMPORT}: {e}"))
                }
                _ => EngineError::io("storing", "import stream", e),
            }
        })?;
        progress.finish();
        let diff_id = writer.commit(MEDIA_LAYER_TAR, None)?;
        let spec = LayerSpec {
            chain: diff_id.clone(),
            parent: None,
            diff_id: diff_id.clone(),
            blob: Some((diff_id.clone(), MEDIA_LAYER_TAR.to_string())),
        };
        let content = self.content().clone();
        let outcome = self.ensure_layer(lease, &spec, &|| {
            Ok(Box::new(content.open_blob(&diff_id)?) as Box<dyn Read + Send>)
        })?;

        let created = opts.created.unwrap_or_else(carrel_meta::now_nanos);
        let comment = opts
            .message
            .clone()
            .unwrap_or_else(|| "Imported from -".to_string());
        let config = ImageConfig {
            architecture: host_architecture().to_string(),
            os: "linux".into(),
            created: Some(rfc3339_nanos(created)),
            comment: Some(comment.clone()),
            config: Some(run),
            rootfs: RootFs {
                kind: "layers".into(),
                diff_ids: vec![diff_id.clone()],
            },
            history: vec![HistoryEntry {
                created: Some(rfc3339_nanos(created)),
                comment: Some(comment),
                ..Default::default()
            }],
            ..Default::default()
        };
        let config_bytes = config.to_json();
        let id = self
            .content()
            .write_bytes(lease, &config_bytes, MEDIA_CONFIG, None)?;
        let now = carrel_meta::now_nanos();
        let row = ImageRow {
            id: id.clone(),
            config: String::from_utf8_lossy(&config_bytes).into_owned(),
            manifest: None,
            layers: vec![diff_id],
            size: outcome.size,
            created,
            loaded: now,
            last_tag: None,
        };
        self.meta().write(|tx| {
            rows::insert(tx, &row)?;
            if let Some(r) = reference {
                rows::set_tag(tx, &r.to_string(), &id, now)?;
            }
            Ok(())
        })?;
        Ok(id)
    }
}
