//! What the server keeps between requests: the engine, attach clients waiting for a start,
//! exec sessions, stub networks, and the feed of the events log.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use carrel_engine::Engine;
use carrel_engine::containers::monitor::client::AttachStream;
use carrel_engine::events::{Event, EventReader};
use tokio::sync::{broadcast, oneshot};

use crate::ServeOptions;
use crate::error::{ApiError, ApiResult};
use crate::exec::ExecSession;
use crate::networks::Network;

/// An attach client waiting for a start: its token and where the stream goes.
pub type AttachWaiter = (u64, oneshot::Sender<AttachStream>);

/// The server's shared state.
pub struct State {
    /// The engine (one handle on the data root, shared by every handler).
    pub engine: Arc<Engine>,
    /// How containers are run.
    pub opts: ServeOptions,
    /// Attach clients waiting for the container's start (`docker run` attaches first), by id.
    pub attach_waiters: Mutex<HashMap<String, Vec<AttachWaiter>>>,
    /// Tokens of attach waiters.
    pub next_token: std::sync::atomic::AtomicU64,
    /// Exec sessions by id.
    pub execs: Mutex<HashMap<String, Arc<ExecSession>>>,
    /// Stub networks by id.
    pub networks: Mutex<BTreeMap<String, Network>>,
    /// Events as they are appended to the log, by any carrel process.
    pub events: broadcast::Sender<Event>,
}

/// How long the events feed waits for the log to change before it checks that the server is
/// still there (it wakes at once when the log changes).
const EVENTS_IDLE_CHECK: Duration = Duration::from_secs(1);

impl State {
    /// The state for `engine`, with its events feed running.
    pub fn new(engine: Arc<Engine>, opts: ServeOptions) -> Arc<State> {
        let (tx, _) = broadcast::channel(4096);
        let state = Arc::new(State {
            engine,
            opts,
            attach_waiters: Mutex::new(HashMap::new()),
            next_token: std::sync::atomic::AtomicU64::new(1),
            execs: Mutex::new(HashMap::new()),
            networks: Mutex::new(crate::networks::predefined()),
            events: tx.clone(),
        });
        let dir = state.engine.events_dir().to_path_buf();
        let weak = Arc::downgrade(&state);
        std::thread::Builder::new()
            .name("events-feed".into())
            .spawn(move || {
                let mut reader = match EventReader::follow(&dir) {
                    Ok(r) => r,
                    Err(e) => {
                        tracing::warn!(%e, "cannot read the events log; no live events");
                        return;
                    }
                };
                // Ends with the server's state.
                while weak.strong_count() > 0 {
                    match reader.read_new() {
                        Ok(events) => {
                            for e in events {
                                let _ = tx.send(e);
                            }
                        }
                        Err(e) => tracing::debug!(%e, "reading the events log"),
                    }
                    if let Err(e) = reader.wait(EVENTS_IDLE_CHECK) {
                        tracing::debug!(%e, "waiting for the events log");
                        std::thread::sleep(EVENTS_IDLE_CHECK);
                    }
                }
            })
            .ok();
        state
    }

    /// Run `f` on the engine in a blocking thread.
    pub async fn run<T, F>(&self, f: F) -> ApiResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&Engine) -> ApiResult<T> + Send + 'static,
    {
        let engine = self.engine.clone();
        match tokio::task::spawn_blocking(move || f(&engine)).await {
            Ok(r) => r,
            Err(e) => Err(ApiError::internal(format!("engine task failed: {e}"))),
        }
    }

    /// Lock a mutex of the state (a panicked holder leaves consistent data here).
    pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
        m.lock().unwrap_or_else(|p| p.into_inner())
    }
}
