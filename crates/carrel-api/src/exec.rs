//! Exec sessions (`docker exec`): created, started on a hijacked connection, inspected for the
//! exit code, resized. A session runs `carrel exec` (the CLI's own exec, so the server and the
//! CLI exec alike) as a child process: with a terminal on a pseudo-terminal the server holds
//! (resizes reach the process as `SIGWINCH`), otherwise on pipes framed into Docker's stream.

use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::json;
use tokio::io::AsyncReadExt;

use carrel_engine::containers::tty;

use crate::body::{self, Body};
use crate::error::{ApiError, ApiResult};
use crate::router::Ctx;
use crate::state::State;
use crate::streams::{self, Conn, STDERR, STDOUT};

/// The body of `POST /containers/{id}/exec`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ExecConfig {
    /// Attach stdin.
    pub attach_stdin: bool,
    /// Attach stdout.
    pub attach_stdout: bool,
    /// Attach stderr.
    pub attach_stderr: bool,
    /// Allocate a terminal.
    pub tty: bool,
    /// `KEY=VALUE` additions.
    pub env: Option<Vec<String>>,
    /// The command.
    pub cmd: Option<Vec<String>>,
    /// User.
    pub user: Option<String>,
    /// Working directory.
    pub working_dir: Option<String>,
    /// Privileged (refused).
    pub privileged: bool,
    /// Detach keys (unused: the client handles them).
    pub detach_keys: Option<String>,
    /// Initial terminal size `[h, w]`.
    pub console_size: Option<[u16; 2]>,
}

/// What a session did.
#[derive(Debug, Default)]
pub struct ExecStatus {
    /// Started already.
    pub started: bool,
    /// Its process runs.
    pub running: bool,
    /// Its exit code, once it ended.
    pub exit_code: Option<i64>,
    /// Its process id (of the `carrel exec` that runs it).
    pub pid: u32,
    /// The pseudo-terminal's server side (with a terminal).
    pub pty: Option<Arc<OwnedFd>>,
    /// A size asked for before the terminal existed.
    pub size: Option<(u16, u16)>,
}

/// An exec session.
#[derive(Debug)]
pub struct ExecSession {
    /// 64 hex characters.
    pub id: String,
    /// The container's id.
    pub container_id: String,
    /// What to run.
    pub config: ExecConfig,
    /// What happened.
    pub status: Mutex<ExecStatus>,
}

/// `POST /containers/{id}/exec`.
pub async fn create(ctx: Ctx, id: &str, req: Request<Incoming>) -> ApiResult<Response<Body>> {
    let data = body::read_all(req.into_body(), 1 << 20).await?;
    let cfg: ExecConfig = body::decode(&data)?;
    if cfg.cmd.as_ref().is_none_or(|c| c.is_empty()) {
        return Err(ApiError::bad_request("No exec command specified"));
    }
    if cfg.privileged {
        return Err(ApiError::bad_request(
            "privileged exec is not supported by carrel",
        ));
    }
    let id = id.to_string();
    let c = ctx
        .state
        .run(move |e| Ok(e.resolve_container(&id)?))
        .await?;
    if !c.is_running() {
        return Err(ApiError::conflict(format!(
            "Container {} is not running",
            c.id
        )));
    }
    let session = Arc::new(ExecSession {
        id: carrel_core::id::random_id(),
        container_id: c.id.clone(),
        config: cfg,
        status: Mutex::new(ExecStatus::default()),
    });
    let exec_id = session.id.clone();
    forget_finished(&ctx.state, 1000);
    State::lock(&ctx.state.execs).insert(exec_id.clone(), session);
    Ok(body::json(StatusCode::CREATED, &json!({"Id": exec_id})))
}

fn session(ctx: &Ctx, id: &str) -> ApiResult<Arc<ExecSession>> {
    State::lock(&ctx.state.execs)
        .get(id)
        .cloned()
        .ok_or_else(|| ApiError::not_found(format!("No such exec instance: {id}")))
}

/// The body of `POST /exec/{id}/start`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct StartBody {
    detach: bool,
    tty: bool,
    console_size: Option<[u16; 2]>,
}

/// The `carrel exec` command line of a session.
fn exec_command(ctx: &Ctx, s: &ExecSession, detach: bool, tty: bool) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(&ctx.state.opts.carrel_program);
    cmd.arg("--root")
        .arg(ctx.state.engine.layout().root())
        .arg("exec");
    if detach {
        cmd.arg("-d");
    }
    if s.config.attach_stdin {
        cmd.arg("-i");
    }
    if tty {
        cmd.arg("-t");
    }
    if let Some(u) = s.config.user.as_deref().filter(|u| !u.is_empty()) {
        cmd.arg("-u").arg(u);
    }
    if let Some(w) = s.config.working_dir.as_deref().filter(|w| !w.is_empty()) {
        cmd.arg("-w").arg(w);
    }
    for e in s.config.env.iter().flatten() {
        cmd.arg("-e").arg(e);
    }
    cmd.arg("--").arg(&s.container_id);
    cmd.args(s.config.cmd.iter().flatten());
    cmd.kill_on_drop(false);
    cmd
}

/// `POST /exec/{id}/start`: hijacked unless detached.
pub async fn start(ctx: Ctx, id: &str, mut req: Request<Incoming>) -> ApiResult<Response<Body>> {
    let s = session(&ctx, id)?;
    let upgrade = streams::take_upgrade(&mut req);
    let data = body::read_all(req.into_body(), 1 << 20).await?;
    let b: StartBody = body::decode(&data)?;
    let tty = b.tty || s.config.tty;
    {
        let mut st = State::lock(&s.status);
        if st.started {
            return Err(ApiError::conflict(format!(
                "Error: Exec command {} is already running",
                s.id
            )));
        }
        st.started = true;
        st.running = true;
    }
    if b.detach {
        let mut cmd = exec_command(&ctx, &s, true, tty);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let out = cmd
            .output()
            .await
            .map_err(|e| ApiError::internal(format!("running carrel exec: {e}")))?;
        let mut st = State::lock(&s.status);
        st.running = false;
        if !out.status.success() {
            st.exit_code = Some(i64::from(out.status.code().unwrap_or(126)));
            return Err(ApiError::internal(
                String::from_utf8_lossy(&out.stderr)
                    .trim()
                    .trim_start_matches("Error: ")
                    .to_string(),
            ));
        }
        return Ok(body::no_content(StatusCode::OK));
    }
    let mut cmd = exec_command(&ctx, &s, false, tty);
    let pty = if tty {
        let (master, slave) = tty::open_pty()
            .map_err(|e| ApiError::internal(format!("allocating a terminal: {e}")))?;
        // Only a transport between the server and `carrel exec` (which relays the container's
        // own terminal): raw, so nothing is echoed or translated twice.
        if let Ok(mut t) = rustix::termios::tcgetattr(&slave) {
            t.make_raw();
            let _ = rustix::termios::tcsetattr(&slave, rustix::termios::OptionalActions::Now, &t);
        }
        let size = b
            .console_size
            .or(s.config.console_size)
            .map(|[h, w]| (h, w))
            .or(State::lock(&s.status).size);
        if let Some((h, w)) = size.filter(|(h, w)| *h > 0 && *w > 0) {
            let _ = tty::set_size(master.as_fd(), h, w);
        }
        let dup = |f: &OwnedFd| {
            f.try_clone()
                .map_err(|e| ApiError::internal(format!("terminal: {e}")))
        };
        cmd.stdin(Stdio::from(dup(&slave)?))
            .stdout(Stdio::from(dup(&slave)?))
            .stderr(Stdio::from(slave));
        // SAFETY: setsid and ioctl are async-signal-safe; the terminal becomes the child's
        // controlling terminal, so resizes reach it as SIGWINCH.
        unsafe {
            cmd.pre_exec(|| {
                libc::setsid();
                libc::ioctl(0, libc::TIOCSCTTY, 0);
                Ok(())
            });
        }
        Some(Arc::new(master))
    } else {
        cmd.stdin(if s.config.attach_stdin {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        None
    };
    let mut child = cmd
        .spawn()
        .map_err(|e| ApiError::internal(format!("running carrel exec: {e}")))?;
    drop(cmd);
    {
        let mut st = State::lock(&s.status);
        st.pid = child.id().unwrap_or(0);
        st.pty = pty.clone();
    }
    let content_type = streams::stream_content_type(ctx.version, tty);
    let (resp, conn) = streams::hijack(upgrade, content_type);
    let attach_stdout = s.config.attach_stdout;
    let attach_stderr = s.config.attach_stderr;
    let stdin = s.config.attach_stdin;
    tokio::spawn(async move {
        let conn = conn.await;
        let code = match (conn, pty) {
            (Some(conn), Some(master)) => relay_pty(conn, master, &mut child, stdin).await,
            (Some(conn), None) => relay_pipes(conn, &mut child, attach_stdout, attach_stderr).await,
            (None, _) => child.wait().await.ok().and_then(|s| s.code()),
        };
        let mut st = State::lock(&s.status);
        st.running = false;
        st.exit_code = Some(i64::from(code.unwrap_or(137)));
        st.pty = None;
    });
    Ok(resp)
}

/// Relay a terminal session: the pty's output raw to the client, the client's input to it.
/// Returns the exit code (recorded before the connection is closed, so the client's inspect
/// right after sees it).
async fn relay_pty(
    conn: Conn,
    master: Arc<OwnedFd>,
    child: &mut tokio::process::Child,
    stdin: bool,
) -> Option<i32> {
    let Conn { out, input } = conn;
    if stdin && let Some(input) = input {
        let w = master.clone();
        streams::pump_input(
            input,
            move |d| std::fs::File::from(w.try_clone()?).write_all(d),
            || {},
        );
    }
    let r = master.clone();
    let out2 = out.clone();
    let reader = tokio::task::spawn_blocking(move || {
        let Ok(fd) = r.try_clone() else { return };
        let mut f = std::fs::File::from(fd);
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match f.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if out2
                        .blocking_send(Ok(Bytes::copy_from_slice(&buf[..n])))
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
    });
    let status = child.wait().await.ok();
    // The process and its descendants are gone; what the terminal still holds is drained (EIO
    // ends the read once no one has the other side open).
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), reader).await;
    let code = status.and_then(|s| s.code());
    drop(out);
    code
}

/// Relay a session on pipes: stdout and stderr framed, the client's input to stdin.
async fn relay_pipes(
    conn: Conn,
    child: &mut tokio::process::Child,
    want_stdout: bool,
    want_stderr: bool,
) -> Option<i32> {
    let Conn { out, input } = conn;
    if let (Some(mut input), Some(mut stdin)) = (input, child.stdin.take()) {
        tokio::spawn(async move {
            let _ = tokio::io::copy(&mut input, &mut stdin).await;
            drop(stdin);
        });
    }
    async fn pump(
        mut r: impl tokio::io::AsyncRead + Unpin,
        stream: u8,
        wanted: bool,
        out: tokio::sync::mpsc::Sender<std::io::Result<Bytes>>,
    ) {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match r.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if wanted
                        && out
                            .send(Ok(streams::frame(stream, &buf[..n])))
                            .await
                            .is_err()
                    {
                        return;
                    }
                }
            }
        }
    }
    let so = child.stdout.take();
    let se = child.stderr.take();
    let a = async {
        if let Some(so) = so {
            pump(so, STDOUT, want_stdout, out.clone()).await;
        }
    };
    let b = async {
        if let Some(se) = se {
            pump(se, STDERR, want_stderr, out.clone()).await;
        }
    };
    tokio::join!(a, b);
    let code = child.wait().await.ok().and_then(|s| s.code());
    drop(out);
    code
}

/// `POST /exec/{id}/resize?h=&w=`.
pub async fn resize(ctx: Ctx, id: &str) -> ApiResult<Response<Body>> {
    let s = session(&ctx, id)?;
    let h = ctx.query.int("h")?.unwrap_or(0).clamp(0, u16::MAX as i64) as u16;
    let w = ctx.query.int("w")?.unwrap_or(0).clamp(0, u16::MAX as i64) as u16;
    let mut st = State::lock(&s.status);
    match &st.pty {
        Some(m) => {
            tty::set_size(m.as_fd(), h, w)
                .map_err(|e| ApiError::internal(format!("resizing: {e}")))?;
        }
        None => st.size = Some((h, w)),
    }
    Ok(body::no_content(StatusCode::OK))
}

/// `GET /exec/{id}/json`.
pub async fn inspect(ctx: Ctx, id: &str) -> ApiResult<Response<Body>> {
    let s = session(&ctx, id)?;
    let st = State::lock(&s.status);
    let cmd = s.config.cmd.clone().unwrap_or_default();
    let v = json!({
        "ID": s.id,
        "Running": st.running,
        "ExitCode": st.exit_code.map(serde_json::Value::from).unwrap_or(serde_json::Value::Null),
        "ProcessConfig": {
            "tty": s.config.tty,
            "entrypoint": cmd.first().cloned().unwrap_or_default(),
            "arguments": cmd.iter().skip(1).collect::<Vec<_>>(),
            "privileged": false,
            "user": s.config.user.clone().unwrap_or_default(),
        },
        "OpenStdin": s.config.attach_stdin,
        "OpenStderr": s.config.attach_stderr,
        "OpenStdout": s.config.attach_stdout,
        "CanRemove": false,
        "ContainerID": s.container_id,
        "DetachKeys": "",
        "Pid": st.pid,
    });
    Ok(body::json(StatusCode::OK, &v))
}

/// Sessions of containers that are gone, and finished sessions, are forgotten after a while.
pub fn forget_finished(state: &State, keep: usize) {
    let mut execs = State::lock(&state.execs);
    if execs.len() <= keep {
        return;
    }
    let finished: Vec<String> = execs
        .iter()
        .filter(|(_, s)| {
            let st = State::lock(&s.status);
            st.started && !st.running
        })
        .map(|(k, _)| k.clone())
        .collect();
    for k in finished.into_iter().take(execs.len() - keep) {
        execs.remove(&k);
    }
}
