//! Container streams: hijacked connections (HTTP upgrade, as dockerd does for attach and exec),
//! Docker's multiplexed framing, `attach` and `logs`.

use std::future::Future;
use std::io;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderValue, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use hyper::upgrade::{OnUpgrade, Upgraded};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt, ReadHalf};
use tokio::sync::{mpsc, oneshot};

use carrel_engine::containers::monitor::client::{AttachStream, Event as MonitorEvent};
use carrel_engine::containers::monitor::logs::{LogEntry, LogOptions, format_entry, read_log};

use crate::body::{self, Body};
use crate::error::{ApiError, ApiResult};
use crate::router::Ctx;
use crate::state::State;
use crate::version::ApiVersion;

/// Stream numbers of Docker's framing (`stdcopy`).
pub const STDOUT: u8 = 1;
/// Standard error.
pub const STDERR: u8 = 2;

/// One frame of Docker's multiplexed stream: `[stream, 0, 0, 0, len_be32]` then the bytes.
pub fn frame(stream: u8, data: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(8 + data.len());
    b.put_u8(stream);
    b.put_slice(&[0, 0, 0]);
    b.put_u32(data.len() as u32);
    b.put_slice(data);
    b.freeze()
}

/// The content type of a container's raw stream: multiplexed (framed) without a terminal from
/// API 1.42 on, Docker's `raw-stream` otherwise.
pub fn stream_content_type(version: ApiVersion, tty: bool) -> &'static str {
    if !tty && version.at_least(1, 42) {
        "application/vnd.docker.multiplexed-stream"
    } else {
        "application/vnd.docker.raw-stream"
    }
}

/// The client side of a hijacked request: where output goes (closing it ends the connection's
/// write side) and, for an upgraded connection, the client's input.
pub struct Conn {
    /// Output to the client (bounded: a slow client slows the producer).
    pub out: mpsc::Sender<io::Result<Bytes>>,
    /// The client's input (upgraded connections only).
    pub input: Option<ReadHalf<TokioIo<Upgraded>>>,
}

/// Answer a hijack request: `101 UPGRADED` when the client asked for an upgrade (the CLI and
/// docker-py do), else `200` with the output as the body. The returned future yields the
/// connection once it is taken over.
pub fn hijack(
    upgrade: Option<OnUpgrade>,
    content_type: &'static str,
) -> (
    Response<Body>,
    impl Future<Output = Option<Conn>> + Send + 'static,
) {
    let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(16);
    if let Some(on) = upgrade {
        let mut r = body::no_content(StatusCode::SWITCHING_PROTOCOLS);
        let h = r.headers_mut();
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("tcp"));
        let fut = async move {
            let upgraded = match on.await {
                Ok(u) => u,
                Err(e) => {
                    tracing::debug!(%e, "upgrade failed");
                    return None;
                }
            };
            let (rd, mut wr) = tokio::io::split(TokioIo::new(upgraded));
            let mut rx = rx;
            tokio::spawn(async move {
                while let Some(Ok(b)) = rx.recv().await {
                    if wr.write_all(&b).await.is_err() || wr.flush().await.is_err() {
                        return;
                    }
                }
                let _ = wr.shutdown().await;
            });
            Some(Conn {
                out: tx,
                input: Some(rd),
            })
        };
        (r, futures_either::Either::Left(fut))
    } else {
        let b = body::ChannelBody::from_receiver(rx);
        let mut r = Response::new(b);
        r.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        (
            r,
            futures_either::Either::Right(async move {
                Some(Conn {
                    out: tx,
                    input: None,
                })
            }),
        )
    }
}

/// The upgrade of a request that asked for one (`Upgrade: tcp`), taken before its body is read.
pub fn take_upgrade(req: &mut Request<Incoming>) -> Option<OnUpgrade> {
    req.headers()
        .contains_key(header::UPGRADE)
        .then(|| hyper::upgrade::on(req))
}

/// A minimal `Either` future, so `hijack` returns one type for both cases.
pub mod futures_either {
    use std::future::Future;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    /// One of two futures with the same output.
    pub enum Either<A, B> {
        /// The first.
        Left(A),
        /// The second.
        Right(B),
    }

    impl<A: Future, B: Future<Output = A::Output>> Future for Either<A, B> {
        type Output = A::Output;
        fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<A::Output> {
            // SAFETY: structural pinning; the variants are never moved out.
            unsafe {
                match self.get_unchecked_mut() {
                    Either::Left(a) => Pin::new_unchecked(a).poll(cx),
                    Either::Right(b) => Pin::new_unchecked(b).poll(cx),
                }
            }
        }
    }
}

/// Copy the client's input to `write` (on a thread of its own: monitor sockets are blocking),
/// then `close`.
pub fn pump_input<W, C>(mut input: ReadHalf<TokioIo<Upgraded>>, write: W, close: C)
where
    W: FnMut(&[u8]) -> io::Result<()> + Send + 'static,
    C: FnOnce() + Send + 'static,
{
    let (tx, rx) = std::sync::mpsc::channel::<Option<Vec<u8>>>();
    std::thread::spawn(move || {
        let mut write = write;
        while let Ok(Some(chunk)) = rx.recv() {
            if write(&chunk).is_err() {
                return;
            }
        }
        close();
    });
    tokio::spawn(async move {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match input.read(&mut buf).await {
                Ok(0) | Err(_) => {
                    let _ = tx.send(None);
                    return;
                }
                Ok(n) => {
                    if tx.send(Some(buf[..n].to_vec())).is_err() {
                        return;
                    }
                }
            }
        }
    });
}

/// Which of a container's streams a client wants, and how they are framed.
#[derive(Debug, Clone, Copy)]
pub struct Streams {
    /// Standard output.
    pub stdout: bool,
    /// Standard error.
    pub stderr: bool,
    /// The container has a terminal: raw bytes, no frames.
    pub tty: bool,
}

impl Streams {
    fn encode(&self, stream: u8, data: &[u8]) -> Option<Bytes> {
        let wanted = if stream == STDERR {
            self.stderr
        } else {
            self.stdout
        };
        if !wanted || data.is_empty() {
            return None;
        }
        Some(if self.tty {
            Bytes::copy_from_slice(data)
        } else {
            frame(stream, data)
        })
    }

    fn entry(&self, e: &LogEntry, timestamps: bool) -> Option<Bytes> {
        let stream = if e.stream == "stderr" { STDERR } else { STDOUT };
        self.encode(stream, &format_entry(e, timestamps))
    }
}

/// `POST /containers/{id}/attach?stream=&stdin=&stdout=&stderr=&logs=`: hijacked. A container
/// that does not run yet (`docker run` and `start -a` attach before they start) gets its output
/// from its first byte once it is started, through the server or by any carrel process.
pub async fn attach(ctx: Ctx, id: &str, mut req: Request<Incoming>) -> ApiResult<Response<Body>> {
    let q = &ctx.query;
    let want_stream = q.bool("stream");
    let logs = q.bool("logs");
    let stdin = q.bool("stdin");
    let (stdout, stderr) = (q.bool("stdout"), q.bool("stderr"));
    let id = id.to_string();
    let c = ctx
        .state
        .run(move |e| Ok(e.resolve_container(&id)?))
        .await?;
    let streams = Streams {
        stdout,
        stderr,
        tty: c.spec.config.tty,
    };
    let waiter = if want_stream && !c.is_running() {
        let (tx, rx) = oneshot::channel();
        let token = ctx
            .state
            .next_token
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        State::lock(&ctx.state.attach_waiters)
            .entry(c.id.clone())
            .or_default()
            .push((token, tx));
        Some((token, rx))
    } else {
        None
    };
    let (resp, conn) = hijack(
        take_upgrade(&mut req),
        stream_content_type(ctx.version, streams.tty),
    );
    let state = ctx.state.clone();
    let open_stdin = stdin && c.spec.config.open_stdin;
    tokio::spawn(async move {
        let Some(conn) = conn.await else { return };
        let log_path = state.engine.container_log_path(&c);
        if logs {
            let out = conn.out.clone();
            let replay = tokio::task::spawn_blocking(move || {
                read_log(
                    &log_path,
                    &LogOptions {
                        tail: None,
                        follow: false,
                    },
                    |e| match streams.entry(e, false) {
                        Some(b) => out
                            .blocking_send(Ok(b))
                            .map_err(|_| io::Error::from(io::ErrorKind::BrokenPipe)),
                        None => Ok(()),
                    },
                    || true,
                )
            })
            .await;
            if !matches!(replay, Ok(Ok(()))) {
                return;
            }
        }
        if !want_stream {
            return;
        }
        let stream = match waiter {
            Some((token, rx)) => wait_for_stream(&state, &c.id, token, rx, &conn.out).await,
            None => {
                let id = c.id.clone();
                state.run(move |e| Ok(e.container_attach(&id)?)).await.ok()
            }
        };
        let Some(stream) = stream else { return };
        relay(stream, conn, streams, open_stdin).await;
    });
    Ok(resp)
}

/// The stream of a container that is not running yet: handed over by the server's `start`
/// (which takes the waiter `token` before it starts the container), or, when another process
/// starts it, its attach socket once it runs. `None` when the client went away or the container
/// was removed.
async fn wait_for_stream(
    state: &Arc<State>,
    id: &str,
    token: u64,
    mut rx: oneshot::Receiver<AttachStream>,
    out: &mpsc::Sender<io::Result<Bytes>>,
) -> Option<AttachStream> {
    let forget = || {
        let mut w = State::lock(&state.attach_waiters);
        let mine = w
            .get_mut(id)
            .map(|list| {
                let before = list.len();
                list.retain(|(t, _)| *t != token);
                before != list.len()
            })
            .unwrap_or(false);
        if w.get(id).is_some_and(|l| l.is_empty()) {
            w.remove(id);
        }
        mine
    };
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(200));
    loop {
        tokio::select! {
            got = &mut rx => return got.ok(),
            _ = out.closed() => {
                forget();
                return None;
            }
            _ = tick.tick() => {
                let id2 = id.to_string();
                match state.run(move |e| Ok(e.resolve_container(&id2)?)).await {
                    Err(_) => {
                        forget();
                        return None;
                    }
                    Ok(c) if c.is_running() => {
                        if !forget() {
                            // The server's start took this waiter: the stream is on its way.
                            return rx.await.ok();
                        }
                        // Started by another process: its attach socket.
                        let id2 = id.to_string();
                        return state.run(move |e| Ok(e.container_attach(&id2)?)).await.ok();
                    }
                    Ok(_) => {}
                }
            }
        }
    }
}

/// Relay a monitor connection and a client: output frames until the container exits (then the
/// write side is closed), input to the container's stdin. A client that goes away stops the
/// relay; the container goes on.
pub async fn relay(stream: AttachStream, conn: Conn, streams: Streams, stdin: bool) {
    let Conn { out, input } = conn;
    let sock = stream.socket().try_clone().ok();
    if stdin
        && let Some(input) = input
        && let Ok(w) = stream.try_clone()
    {
        let w = Arc::new(std::sync::Mutex::new(w));
        let w2 = w.clone();
        pump_input(
            input,
            move |d| w.lock().unwrap_or_else(|p| p.into_inner()).send_stdin(d),
            move || {
                let _ = w2.lock().unwrap_or_else(|p| p.into_inner()).close_stdin();
            },
        );
    }
    let out2 = out.clone();
    let reader = tokio::task::spawn_blocking(move || {
        let mut stream = stream;
        loop {
            match stream.next_event() {
                Ok(Some(MonitorEvent::Stdout(d))) => {
                    if let Some(b) = streams.encode(STDOUT, &d)
                        && out2.blocking_send(Ok(b)).is_err()
                    {
                        return;
                    }
                }
                Ok(Some(MonitorEvent::Stderr(d))) => {
                    if let Some(b) = streams.encode(STDERR, &d)
                        && out2.blocking_send(Ok(b)).is_err()
                    {
                        return;
                    }
                }
                Ok(Some(MonitorEvent::Exit(_))) | Ok(None) | Err(_) => return,
                Ok(Some(_)) => {}
            }
        }
    });
    tokio::pin!(reader);
    tokio::select! {
        _ = &mut reader => {}
        _ = out.closed() => {
            // The client went away: unblock the reader (the container goes on).
            if let Some(s) = &sock {
                let _ = s.shutdown(std::net::Shutdown::Both);
            }
            let _ = reader.await;
        }
    }
    drop(out);
}

/// Docker's `since`/`until` of logs: Unix seconds, maybe with a fraction (0: unset).
fn log_time(s: Option<&str>) -> ApiResult<Option<f64>> {
    match s.map(str::trim).filter(|s| !s.is_empty() && *s != "0") {
        None => Ok(None),
        Some(v) => v
            .parse::<f64>()
            .map(Some)
            .map_err(|_| ApiError::bad_request(format!("invalid time value {v:?}"))),
    }
}

fn entry_secs(e: &LogEntry) -> f64 {
    chrono::DateTime::parse_from_rfc3339(&e.time)
        .map(|t| t.timestamp() as f64 + f64::from(t.timestamp_subsec_nanos()) / 1e9)
        .unwrap_or(0.0)
}

/// `GET /containers/{id}/logs?stdout=&stderr=&follow=&tail=&timestamps=&since=&until=`.
pub async fn logs(ctx: Ctx, id: &str) -> ApiResult<Response<Body>> {
    let q = &ctx.query;
    let (stdout, stderr) = (q.bool("stdout"), q.bool("stderr"));
    if !stdout && !stderr {
        return Err(ApiError::bad_request(
            "Bad parameters: you must choose at least one stream",
        ));
    }
    let tail = match q.get("tail").unwrap_or("all").trim() {
        "all" | "" => None,
        n => match n.parse::<i64>() {
            Ok(v) if v >= 0 => Some(v as usize),
            Ok(_) => None,
            Err(_) => {
                return Err(ApiError::bad_request(format!(
                    "invalid value for \"tail\": {n:?}"
                )));
            }
        },
    };
    let since = log_time(q.get("since"))?;
    let until = log_time(q.get("until"))?;
    let timestamps = q.bool("timestamps");
    let follow = q.bool("follow");
    let id = id.to_string();
    let c = ctx
        .state
        .run(move |e| Ok(e.resolve_container(&id)?))
        .await?;
    let streams = Streams {
        stdout,
        stderr,
        tty: c.spec.config.tty,
    };
    let (tx, b) = body::channel(16);
    let engine = ctx.state.engine.clone();
    tokio::task::spawn_blocking(move || {
        let path = engine.container_log_path(&c);
        let opts = LogOptions {
            tail,
            follow: follow && c.is_running(),
        };
        let tx2 = tx.clone();
        let r = read_log(
            &path,
            &opts,
            |e| {
                let t = entry_secs(e);
                if since.is_some_and(|s| t < s) || until.is_some_and(|u| t > u) {
                    return Ok(());
                }
                match streams.entry(e, timestamps) {
                    Some(b) => tx
                        .blocking_send(Ok(b))
                        .map_err(|_| io::Error::from(io::ErrorKind::BrokenPipe)),
                    None => Ok(()),
                }
            },
            || tx2.is_closed() || !engine.container_monitor_alive(&c.id),
        );
        if let Err(e) = r
            && e.kind() != io::ErrorKind::BrokenPipe
        {
            let _ = tx2.blocking_send(Err(e));
        }
    });
    let mut r = Response::new(b);
    if ctx.version.at_least(1, 42) {
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(stream_content_type(ctx.version, streams.tty)),
        );
    }
    Ok(r)
}
