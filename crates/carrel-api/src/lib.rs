//! carrel-api: `carrel serve`, the Docker Engine API on a unix socket.
//!
//! The server is another face on carrel's engine, like the CLI: each handler parses the request,
//! calls an [`Engine`] method (on a blocking thread: the engine does file and database work) and
//! formats Docker's answer. It shares the data root, its locks and its behaviour with every other
//! carrel process, and keeps only what Docker keeps in daemon memory: exec sessions, attach
//! clients waiting for a start, and the stub networks compose asks for.
//!
//! - Versions: [`version`] (1.24 to 1.50, both `/path` and `/v1.xx/path`; behaviour that changed
//!   between versions follows the request's version).
//! - Streams: [`body`] (bounded channels between blocking producers and the connection, so a slow
//!   client slows the engine down and a gone one stops it).
//! - Hijacked connections (attach, exec): [`streams`].
//! - Events: the engine's durable events log (`carrel_engine::events`), tailed by one thread
//!   that feeds every `GET /events` client and every `wait`; it sleeps on inotify until the log
//!   changes, so an exit reaches a waiting client at once.

#![warn(missing_docs)]

pub mod body;
pub mod containers;
pub mod error;
pub mod exec;
pub mod images;
pub mod networks;
pub mod router;
pub mod state;
pub mod streams;
pub mod system;
pub mod version;
pub mod volumes;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::UnixListener;

pub use carrel_engine::Engine;
pub use error::{ApiError, ApiResult};
pub use state::State;

/// How the server runs containers.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// The carrel binary, re-executed as each container's monitor (and for `exec`), exactly as
    /// the CLI starts containers, so they survive the server.
    pub carrel_program: PathBuf,
}

/// Serve the API on `listener` until `shutdown` completes. Connections in progress are dropped
/// then (their blocking engine work finishes or is rolled back by its lease); containers keep
/// running under their own monitors.
pub async fn serve(
    engine: Arc<Engine>,
    listener: UnixListener,
    opts: ServeOptions,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let state = State::new(engine, opts);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => {
                tracing::info!("shutting down");
                return Ok(());
            }
            accepted = listener.accept() => {
                let (stream, _) = match accepted {
                    Ok(s) => s,
                    Err(e) => {
                        // EMFILE and friends: keep serving the connections there are.
                        tracing::warn!(%e, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let state = state.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        let state = state.clone();
                        async move { Ok::<_, std::convert::Infallible>(router::handle(state, req).await) }
                    });
                    if let Err(e) = http1::Builder::new()
                        .keep_alive(true)
                        .serve_connection(TokioIo::new(stream), svc)
                        .with_upgrades()
                        .await
                    {
                        tracing::debug!(%e, "connection ended with an error");
                    }
                });
            }
        }
    }
}
