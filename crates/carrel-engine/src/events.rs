//! Events: a durable, append-only record of what happened in a data root (`<root>/events.log`),
//! written by every carrel process (the CLI, container monitors, `carrel serve`) at the points
//! where Docker emits its events, and read by `GET /events` (`docker events`, compose).
//!
//! Each line is one JSON [`Event`] in Docker's shape (`Type`, `Action`, `Actor`, `scope`, `time`,
//! `timeNano`). A line is written with a single `write(2)` on a file opened with `O_APPEND`, so
//! concurrent writers never interleave. When the file passes [`ROTATE_BYTES`] it is renamed to
//! `events.log.1` (replacing the previous one), so the record stays bounded; a reader that
//! follows the log notices the rename and finishes the old file before opening the new one.
//!
//! Recording an event never fails the operation it describes: errors are logged.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::Engine;

/// The log's file name under the data root.
pub const EVENTS_FILE: &str = "events.log";

/// Size past which the log is rotated.
pub const ROTATE_BYTES: u64 = 8 << 20;

/// What kind of object an event is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// A container.
    Container,
    /// An image.
    Image,
    /// A volume.
    Volume,
    /// A network (the API server's stub networks).
    Network,
}

impl EventType {
    /// Docker's word for it.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Container => "container",
            EventType::Image => "image",
            EventType::Volume => "volume",
            EventType::Network => "network",
        }
    }
}

/// The object an event is about.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Actor {
    /// Container id, image id or reference, volume name.
    #[serde(rename = "ID")]
    pub id: String,
    /// Labels and details (`name`, `image`, `exitCode`, `driver`, `container`…).
    #[serde(rename = "Attributes")]
    pub attributes: BTreeMap<String, String>,
}

/// One event, in Docker's shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// `container`, `image`, `volume`, `network`.
    #[serde(rename = "Type")]
    pub kind: String,
    /// `create`, `start`, `die`, `destroy`, `mount`, `tag`…
    #[serde(rename = "Action")]
    pub action: String,
    /// What it is about.
    #[serde(rename = "Actor")]
    pub actor: Actor,
    /// Always `local`.
    pub scope: String,
    /// Seconds since the epoch.
    pub time: i64,
    /// Nanoseconds since the epoch.
    #[serde(rename = "timeNano")]
    pub time_nano: i64,
}

impl Event {
    /// A new event stamped now.
    pub fn new(
        kind: EventType,
        action: &str,
        id: &str,
        attributes: BTreeMap<String, String>,
    ) -> Event {
        let now = carrel_meta::now_nanos();
        Event {
            kind: kind.as_str().into(),
            action: action.into(),
            actor: Actor {
                id: id.into(),
                attributes,
            },
            scope: "local".into(),
            time: now.div_euclid(1_000_000_000),
            time_nano: now,
        }
    }
}

/// Append `event` to the log in `dir` (one line, one write), rotating a full log.
pub fn append(dir: &Path, event: &Event) -> io::Result<()> {
    let path = dir.join(EVENTS_FILE);
    let mut line = serde_json::to_vec(event).map_err(io::Error::other)?;
    line.push(b'\n');
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .mode_0600()
        .open(&path)?;
    f.write_all(&line)?;
    if f.metadata()?.len() > ROTATE_BYTES {
        // Several writers may see the size at once: only the one whose rename still finds this
        // very file rotates it (a second rename would move the fresh log aside).
        let lock = carrel_core::fs::FileLock::lock(&dir.join(".events.lock"))?;
        let same = std::fs::metadata(&path)
            .map(|m| m.ino() == f.metadata().map(|x| x.ino()).unwrap_or(0))
            .unwrap_or(false);
        if same {
            std::fs::rename(&path, dir.join(format!("{EVENTS_FILE}.1")))?;
        }
        drop(lock);
    }
    Ok(())
}

trait Mode0600 {
    fn mode_0600(&mut self) -> &mut Self;
}

impl Mode0600 for OpenOptions {
    fn mode_0600(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.mode(0o600)
    }
}

/// How long [`EventReader::wait`] sleeps when the log cannot be watched (no inotify).
const UNWATCHED_POLL: Duration = Duration::from_millis(20);

/// Reads the log: what is there, then what is appended, across rotations.
#[derive(Debug)]
pub struct EventReader {
    path: PathBuf,
    file: Option<File>,
    ino: u64,
    pending: Vec<u8>,
    /// An inotify instance watching the log's directory (followers only).
    watch: Option<OwnedFd>,
}

impl EventReader {
    /// A reader of the log in `dir` positioned at its end (`from_start`: at the start of the
    /// rotated log, so the whole record is read first).
    pub fn open(dir: &Path, from_start: bool) -> io::Result<EventReader> {
        let path = dir.join(EVENTS_FILE);
        let mut r = EventReader {
            path,
            file: None,
            ino: 0,
            pending: Vec::new(),
            watch: None,
        };
        if from_start {
            // The rotated file first, as a file of its own that is read to its end.
            if let Ok(f) = File::open(dir.join(format!("{EVENTS_FILE}.1"))) {
                r.ino = f.metadata()?.ino();
                r.file = Some(f);
            }
        } else if let Ok(mut f) = File::open(&r.path) {
            r.ino = f.metadata()?.ino();
            f.seek(SeekFrom::End(0))?;
            r.file = Some(f);
        }
        Ok(r)
    }

    /// A reader positioned at the end of the log in `dir` that [`EventReader::wait`]s for the
    /// log to change instead of polling it: the directory is watched with inotify (from before
    /// the end is taken, so no append is missed). Without inotify, `wait` sleeps a little.
    pub fn follow(dir: &Path) -> io::Result<EventReader> {
        use rustix::fs::inotify;
        let watch = inotify::init(inotify::CreateFlags::CLOEXEC | inotify::CreateFlags::NONBLOCK)
            .and_then(|fd| {
                inotify::add_watch(
                    &fd,
                    dir,
                    inotify::WatchFlags::MODIFY
                        | inotify::WatchFlags::CREATE
                        | inotify::WatchFlags::MOVED_TO
                        | inotify::WatchFlags::MOVED_FROM,
                )?;
                Ok(fd)
            });
        let watch = match watch {
            Ok(fd) => Some(fd),
            Err(e) => {
                tracing::debug!(error = %e, "cannot watch the events log; polling it");
                None
            }
        };
        let mut r = EventReader::open(dir, false)?;
        r.watch = watch;
        Ok(r)
    }

    /// Block until the log may have new events (something wrote, created or renamed a file of
    /// the log) or `timeout` has passed. A follower alternates [`EventReader::read_new`] and
    /// this.
    pub fn wait(&mut self, timeout: Duration) -> io::Result<()> {
        use rustix::event::{PollFd, PollFlags, Timespec};
        use rustix::fs::inotify;
        let Some(fd) = self.watch.as_ref() else {
            std::thread::sleep(timeout.min(UNWATCHED_POLL));
            return Ok(());
        };
        let deadline = Instant::now() + timeout;
        let mut buf = [std::mem::MaybeUninit::uninit(); 4096];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(());
            }
            let ts = Timespec::try_from(left).map_err(io::Error::other)?;
            let mut fds = [PollFd::new(fd, PollFlags::IN)];
            match rustix::event::poll(&mut fds, Some(&ts)) {
                Ok(0) => return Ok(()),
                Ok(_) => {}
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            }
            // Other files of the directory (the store's database) change too: only the log's
            // files end the wait.
            let mut log_changed = false;
            let mut reader = inotify::Reader::new(fd, &mut buf);
            loop {
                match reader.next() {
                    Ok(ev) => {
                        let name = ev.file_name().map(|n| n.to_bytes()).unwrap_or_default();
                        log_changed |= name.starts_with(EVENTS_FILE.as_bytes())
                            || ev.events().contains(inotify::ReadFlags::QUEUE_OVERFLOW);
                    }
                    Err(rustix::io::Errno::WOULDBLOCK) => break,
                    Err(rustix::io::Errno::INTR) => continue,
                    Err(e) => return Err(e.into()),
                }
            }
            if log_changed {
                return Ok(());
            }
        }
    }

    /// The events appended since the last call (complete lines only; a line that does not parse
    /// is skipped).
    pub fn read_new(&mut self) -> io::Result<Vec<Event>> {
        let mut out = Vec::new();
        loop {
            if let Some(f) = self.file.as_mut() {
                let mut buf = Vec::new();
                f.read_to_end(&mut buf)?;
                self.pending.extend_from_slice(&buf);
                while let Some(pos) = self.pending.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = self.pending.drain(..=pos).collect();
                    if let Ok(e) = serde_json::from_slice::<Event>(&line[..line.len() - 1]) {
                        out.push(e);
                    }
                }
            }
            // The file at the path is another one (rotated, or the first one appeared): what the
            // old one had is read, continue with the new one from its start.
            match std::fs::metadata(&self.path) {
                Ok(m) if self.file.is_none() || m.ino() != self.ino => {
                    match File::open(&self.path) {
                        Ok(f) => {
                            self.ino = f.metadata()?.ino();
                            self.file = Some(f);
                            self.pending.clear();
                        }
                        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
                        Err(e) => return Err(e),
                    }
                }
                _ => return Ok(out),
            }
        }
    }
}

impl Engine {
    /// The directory of the events log (the data root).
    pub fn events_dir(&self) -> &Path {
        self.layout().root()
    }

    /// Record an event (errors are logged, never returned).
    pub fn emit_event(
        &self,
        kind: EventType,
        action: &str,
        id: &str,
        attributes: BTreeMap<String, String>,
    ) {
        let e = Event::new(kind, action, id, attributes);
        if let Err(err) = append(self.events_dir(), &e) {
            tracing::warn!(%err, action, id, "could not record the event");
        }
    }

    /// Record a container event: its labels, `image` and `name` as attributes, plus `extra`.
    pub fn emit_container_event(
        &self,
        c: &crate::containers::Container,
        action: &str,
        extra: &[(&str, String)],
    ) {
        let mut attrs = c.spec.config.labels.clone().unwrap_or_default();
        attrs.insert("image".into(), c.spec.config.image.clone());
        attrs.insert("name".into(), c.name.clone());
        for (k, v) in extra {
            attrs.insert((*k).into(), v.clone());
        }
        self.emit_event(EventType::Container, action, &c.id, attrs);
    }

    /// Record a volume event (`driver` attribute, plus `extra`).
    pub fn emit_volume_event(&self, name: &str, action: &str, extra: &[(&str, String)]) {
        let mut attrs = BTreeMap::new();
        attrs.insert("driver".into(), crate::volumes::LOCAL_DRIVER.into());
        for (k, v) in extra {
            attrs.insert((*k).into(), v.clone());
        }
        self.emit_event(EventType::Volume, action, name, attrs);
    }

    /// Record an image event (`name` attribute when given).
    pub fn emit_image_event(&self, id: &str, action: &str, name: Option<&str>) {
        let mut attrs = BTreeMap::new();
        if let Some(n) = name {
            attrs.insert("name".into(), n.to_string());
        }
        self.emit_event(EventType::Image, action, id, attrs);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn append_and_follow_across_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = EventReader::open(dir.path(), false).unwrap();
        assert!(r.read_new().unwrap().is_empty());
        let e = Event::new(EventType::Volume, "create", "v1", BTreeMap::new());
        append(dir.path(), &e).unwrap();
        let got = r.read_new().unwrap();
        assert_eq!(got, vec![e.clone()]);
        // A rotation: the reader finishes the old file, then reads the new one.
        append(dir.path(), &e).unwrap();
        std::fs::rename(
            dir.path().join(EVENTS_FILE),
            dir.path().join(format!("{EVENTS_FILE}.1")),
        )
        .unwrap();
        let e2 = Event::new(EventType::Volume, "destroy", "v1", BTreeMap::new());
        append(dir.path(), &e2).unwrap();
        assert_eq!(r.read_new().unwrap(), vec![e.clone(), e2.clone()]);
        // From the start: the rotated file, then the current one.
        let mut all = EventReader::open(dir.path(), true).unwrap();
        assert_eq!(all.read_new().unwrap(), vec![e.clone(), e.clone(), e2]);
    }

    #[test]
    fn a_follower_wakes_when_the_log_changes_and_not_for_other_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut r = EventReader::follow(dir.path()).unwrap();
        assert!(r.watch.is_some(), "inotify works on these machines");
        // Another file of the directory (the store's database lives there) does not end the wait.
        std::fs::write(dir.path().join("meta.db"), b"x").unwrap();
        let t = Instant::now();
        r.wait(Duration::from_millis(300)).unwrap();
        assert!(
            t.elapsed() >= Duration::from_millis(300),
            "woke for another file"
        );
        // An append by someone else does, long before the timeout, and is there to read.
        let e = Event::new(EventType::Volume, "create", "v1", BTreeMap::new());
        let writer = {
            let (dir, e) = (dir.path().to_path_buf(), e.clone());
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(100));
                append(&dir, &e).unwrap();
            })
        };
        let t = Instant::now();
        r.wait(Duration::from_secs(20)).unwrap();
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "the append did not wake the follower"
        );
        writer.join().unwrap();
        assert_eq!(r.read_new().unwrap(), vec![e.clone()]);
        // An append made before the wait began is not missed: the wait returns at once.
        append(dir.path(), &e).unwrap();
        let t = Instant::now();
        r.wait(Duration::from_secs(20)).unwrap();
        assert!(t.elapsed() < Duration::from_secs(10));
        assert_eq!(r.read_new().unwrap(), vec![e]);
    }
}
