//! Routing: the version prefix, Docker's headers on every response, one match over method and
//! path, JSON errors, `page not found` for the rest.

use std::sync::Arc;

use http::{HeaderValue, Method, Request, Response};
use hyper::body::Incoming;

use crate::body::{Body, Query, error_response};
use crate::error::{ApiError, ApiResult};
use crate::state::State;
use crate::version::{ApiVersion, MAX_VERSION, split_path};
use crate::{containers, exec, images, networks, streams, system, volumes};

/// What a handler gets besides the request.
#[derive(Clone)]
pub struct Ctx {
    /// The server's state.
    pub state: Arc<State>,
    /// The request's API version.
    pub version: ApiVersion,
    /// Its query string.
    pub query: Query,
}

/// The `Server` header (Docker's form).
pub fn server_header() -> String {
    format!("Docker/{} (linux)", env!("CARGO_PKG_VERSION"))
}

/// Answer one request.
pub async fn handle(state: Arc<State>, req: Request<Incoming>) -> Response<Body> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let (version, result) = match split_path(&path) {
        Err(e) => (MAX_VERSION, Err(e)),
        Ok((version, rest)) => {
            let ctx = Ctx {
                state,
                version,
                query: Query::parse(req.uri().query()),
            };
            let rest = rest.to_string();
            (version, route(ctx, &method, &rest, req).await)
        }
    };
    let mut resp = match result {
        Ok(r) => r,
        Err(e) => {
            if e.status.is_server_error() {
                tracing::warn!(%method, path, status = %e.status, message = %e.message, "request failed");
            } else {
                tracing::debug!(%method, path, status = %e.status, message = %e.message, "request refused");
            }
            error_response(&e)
        }
    };
    tracing::debug!(%method, path, status = %resp.status(), "request");
    let h = resp.headers_mut();
    let v = |s: String| HeaderValue::from_str(&s).unwrap_or(HeaderValue::from_static(""));
    // The version the server speaks, whatever the request asked (moby's middleware).
    let _ = version;
    h.insert("Api-Version", v(MAX_VERSION.to_string()));
    h.insert("Server", v(server_header()));
    h.insert("Ostype", HeaderValue::from_static("linux"));
    h.insert("Docker-Experimental", HeaderValue::from_static("false"));
    resp
}

fn decode_segment(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let Some(b) = std::str::from_utf8(&bytes[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn route(
    ctx: Ctx,
    method: &Method,
    path: &str,
    req: Request<Incoming>,
) -> ApiResult<Response<Body>> {
    let segs: Vec<String> = path
        .trim_start_matches('/')
        .trim_end_matches('/')
        .split('/')
        .map(decode_segment)
        .collect();
    let s: Vec<&str> = segs.iter().map(String::as_str).collect();
    let m = method.clone();
    match (&m, s.as_slice()) {
        (&Method::GET | &Method::HEAD, ["_ping"]) => system::ping(ctx, &m).await,
        (&Method::GET, ["version"]) => system::version(ctx).await,
        (&Method::GET, ["info"]) => system::info(ctx).await,
        (&Method::GET, ["system", "df"]) => system::df(ctx).await,
        (&Method::GET, ["events"]) => system::events(ctx).await,
        (&Method::POST, ["auth"]) => system::auth(ctx).await,

        (&Method::GET, ["volumes"]) => volumes::list(ctx).await,
        (&Method::POST, ["volumes", "create"]) => volumes::create(ctx, req).await,
        (&Method::POST, ["volumes", "prune"]) => volumes::prune(ctx).await,
        (&Method::GET, ["volumes", name]) => volumes::inspect(ctx, name).await,
        (&Method::DELETE, ["volumes", name]) => volumes::remove(ctx, name).await,

        (&Method::GET, ["containers", "json"]) => containers::list(ctx).await,
        (&Method::POST, ["containers", "create"]) => containers::create(ctx, req).await,
        (&Method::POST, ["containers", "prune"]) => containers::prune(ctx).await,
        (&Method::GET, ["containers", id, "json"]) => containers::inspect(ctx, id).await,
        (&Method::POST, ["containers", id, "start"]) => containers::start(ctx, id).await,
        (&Method::POST, ["containers", id, "stop"]) => containers::stop(ctx, id).await,
        (&Method::POST, ["containers", id, "restart"]) => containers::restart(ctx, id).await,
        (&Method::POST, ["containers", id, "kill"]) => containers::kill(ctx, id).await,
        (&Method::POST, ["containers", id, "wait"]) => containers::wait(ctx, id).await,
        (&Method::POST, ["containers", id, "rename"]) => containers::rename(ctx, id).await,
        (&Method::POST, ["containers", id, "resize"]) => containers::resize(ctx, id).await,
        (&Method::DELETE, ["containers", id]) => containers::remove(ctx, id).await,
        (&Method::GET, ["containers", id, "changes"]) => containers::changes(ctx, id).await,
        (&Method::GET, ["containers", id, "export"]) => containers::export(ctx, id).await,
        (&Method::GET | &Method::HEAD, ["containers", id, "archive"]) => {
            containers::archive_get(ctx, id, &m).await
        }
        (&Method::PUT, ["containers", id, "archive"]) => {
            containers::archive_put(ctx, id, req).await
        }
        (&Method::POST, ["containers", id, "attach"]) => streams::attach(ctx, id, req).await,
        (&Method::GET, ["containers", id, "logs"]) => streams::logs(ctx, id).await,
        (&Method::POST, ["containers", id, "exec"]) => exec::create(ctx, id, req).await,
        (&Method::POST, ["exec", id, "start"]) => exec::start(ctx, id, req).await,
        (&Method::POST, ["exec", id, "resize"]) => exec::resize(ctx, id).await,
        (&Method::GET, ["exec", id, "json"]) => exec::inspect(ctx, id).await,
        (&Method::POST, ["commit"]) => containers::commit(ctx, req).await,
        (
            _,
            [
                "containers",
                _,
                what @ ("top" | "stats" | "pause" | "unpause" | "update" | "checkpoints"),
            ],
        ) => Err(ApiError::new(
            http::StatusCode::NOT_IMPLEMENTED,
            format!("carrel does not support container {what} yet"),
        )),

        (&Method::GET, ["images", "json"]) => images::list(ctx).await,
        (&Method::POST, ["images", "create"]) => images::create(ctx, req).await,
        (&Method::POST, ["images", "load"]) => images::load(ctx, req).await,
        (&Method::GET, ["images", "get"]) => {
            let names = ctx_names(&ctx);
            images::save(ctx, names).await
        }
        (&Method::POST, ["images", "prune"]) => images::prune(ctx).await,
        (&Method::GET, ["images", "search"]) => Err(ApiError::not_found(
            "carrel does not search registries: registries are not supported yet",
        )),
        (&Method::POST, ["build", "prune"]) => system::build_prune(ctx).await,
        (_, ["images", rest @ ..]) if !rest.is_empty() => image_route(ctx, &m, rest).await,

        (&Method::GET, ["networks"]) => networks::list(ctx).await,
        (&Method::POST, ["networks", "create"]) => networks::create(ctx, req).await,
        (&Method::POST, ["networks", "prune"]) => networks::prune(ctx).await,
        (&Method::GET, ["networks", id]) => networks::inspect(ctx, id).await,
        (&Method::DELETE, ["networks", id]) => networks::remove(ctx, id).await,
        (&Method::POST, ["networks", id, "connect"]) => networks::connect(ctx, id, req).await,
        (&Method::POST, ["networks", id, "disconnect"]) => networks::disconnect(ctx, id, req).await,

        (
            _,
            ["swarm", ..]
            | ["services", ..]
            | ["nodes", ..]
            | ["tasks", ..]
            | ["secrets", ..]
            | ["configs", ..],
        ) => Err(ApiError::new(
            http::StatusCode::SERVICE_UNAVAILABLE,
            "This node is not a swarm manager. carrel has no swarm mode.",
        )),
        (_, ["plugins", ..]) if m == Method::GET && s == ["plugins"] => Ok(crate::body::json(
            http::StatusCode::OK,
            &serde_json::json!([]),
        )),
        (_, ["plugins", ..]) => Err(ApiError::new(
            http::StatusCode::NOT_IMPLEMENTED,
            "carrel does not support plugins",
        )),
        _ => Err(ApiError::page_not_found()),
    }
}

fn ctx_names(ctx: &Ctx) -> Vec<String> {
    ctx.query.all("names")
}

/// `/images/{name}/{action}`: the name may contain `/`, the action is the last segment.
async fn image_route(ctx: Ctx, m: &Method, rest: &[&str]) -> ApiResult<Response<Body>> {
    if *m == Method::DELETE {
        return images::remove(ctx, &rest.join("/")).await;
    }
    let (action, name) = match rest.split_last() {
        Some((a, n)) if !n.is_empty() => (*a, n.join("/")),
        _ => return Err(ApiError::page_not_found()),
    };
    match (m, action) {
        (&Method::GET, "json") => images::inspect(ctx, &name).await,
        (&Method::GET, "history") => images::history(ctx, &name).await,
        (&Method::GET, "get") => images::save(ctx, vec![name]).await,
        (&Method::POST, "tag") => images::tag(ctx, &name).await,
        (&Method::POST, "push") => Err(ApiError::not_found(format!(
            "An image does not exist locally with the tag: {name} (carrel cannot push: registries are not supported yet)"
        ))),
        _ => Err(ApiError::page_not_found()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_decode() {
        assert_eq!(decode_segment("imported%3Av1"), "imported:v1");
        assert_eq!(decode_segment("a%2"), "a%2");
        assert_eq!(decode_segment("plain"), "plain");
    }
}
