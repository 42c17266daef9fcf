//! HTTP plumbing: response bodies (whole or streamed through a bounded channel, so a slow
//! client slows the producer down and a gone one stops it), a blocking reader over a request
//! body, query strings, Docker's filters and booleans.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body::{Body as HttpBody, Frame};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde::Serialize;
use tokio::sync::mpsc;

use crate::error::{ApiError, ApiResult};

/// The body of every response.
pub type Body = http_body_util::combinators::BoxBody<Bytes, io::Error>;

/// A whole body.
pub fn full(data: impl Into<Bytes>) -> Body {
    http_body_util::Full::new(data.into())
        .map_err(|never| match never {})
        .boxed()
}

/// An empty body.
pub fn empty() -> Body {
    http_body_util::Empty::new()
        .map_err(|never| match never {})
        .boxed()
}

/// A response with `status` and no body.
pub fn no_content(status: StatusCode) -> Response<Body> {
    let mut r = Response::new(empty());
    *r.status_mut() = status;
    r
}

/// A JSON response.
pub fn json<T: Serialize + ?Sized>(status: StatusCode, value: &T) -> Response<Body> {
    let mut data = serde_json::to_vec(value).unwrap_or_else(|_| b"null".to_vec());
    data.push(b'\n');
    let mut r = Response::new(full(data));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// Docker's error response.
pub fn error_response(e: &ApiError) -> Response<Body> {
    json(e.status, &serde_json::json!({ "message": e.message }))
}

/// A response body fed through a bounded channel.
pub struct ChannelBody {
    rx: mpsc::Receiver<io::Result<Bytes>>,
}

impl HttpBody for ChannelBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(Ok(b))) => Poll::Ready(Some(Ok(Frame::data(b)))),
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl ChannelBody {
    /// A body reading from `rx`.
    pub fn from_receiver(rx: mpsc::Receiver<io::Result<Bytes>>) -> Body {
        ChannelBody { rx }.boxed()
    }
}

/// A streamed body and its sending end (at most `depth` chunks in flight).
pub fn channel(depth: usize) -> (mpsc::Sender<io::Result<Bytes>>, Body) {
    let (tx, rx) = mpsc::channel(depth);
    (tx, ChannelBody { rx }.boxed())
}

/// A blocking `Write` into a streamed body: chunks of up to 64 KiB; writing after the client
/// went away is a broken pipe, which stops the producer.
pub struct ChannelWriter {
    tx: mpsc::Sender<io::Result<Bytes>>,
    buf: Vec<u8>,
}

const CHUNK: usize = 64 * 1024;

impl ChannelWriter {
    /// A writer into `tx` (call from a blocking thread only).
    pub fn new(tx: mpsc::Sender<io::Result<Bytes>>) -> ChannelWriter {
        ChannelWriter {
            tx,
            buf: Vec::with_capacity(CHUNK),
        }
    }

    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let data = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx
            .blocking_send(Ok(data))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the client went away"))
    }

    /// End the body with an error (the client sees a truncated stream, never a whole one).
    pub fn abort(self, e: io::Error) {
        let _ = self.tx.blocking_send(Err(e));
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.tx.is_closed() {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the client went away",
            ));
        }
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

impl Drop for ChannelWriter {
    fn drop(&mut self) {
        let _ = self.send();
    }
}

/// A blocking `Read` over a request body (plain or chunked), pumped by a task of its own.
pub struct BodyReader {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    cur: Bytes,
}

impl BodyReader {
    /// Start reading `body` (call from the runtime; read from a blocking thread).
    pub fn new(mut body: Incoming) -> BodyReader {
        let (tx, rx) = mpsc::channel(4);
        tokio::spawn(async move {
            loop {
                match body.frame().await {
                    Some(Ok(f)) => {
                        if let Ok(data) = f.into_data()
                            && !data.is_empty()
                            && tx.send(Ok(data)).await.is_err()
                        {
                            return;
                        }
                    }
                    Some(Err(e)) => {
                        let _ = tx.send(Err(io::Error::other(e))).await;
                        return;
                    }
                    None => return,
                }
            }
        });
        BodyReader {
            rx,
            cur: Bytes::new(),
        }
    }
}

impl Read for BodyReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(b)) => self.cur = b,
                Some(Err(e)) => return Err(e),
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.cur.len());
        out[..n].copy_from_slice(&self.cur[..n]);
        let _ = self.cur.split_to(n);
        Ok(n)
    }
}

/// Read a whole (small) request body, at most `limit` bytes.
pub async fn read_all(body: Incoming, limit: usize) -> ApiResult<Bytes> {
    let limited = http_body_util::Limited::new(body, limit);
    match limited.collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) => Err(ApiError::bad_request(format!(
            "error reading the request body: {e}"
        ))),
    }
}

/// Decode a JSON request body into `T` (an empty or `null` body is `T::default()`), with the
/// decoder's message on error, as dockerd's 400s carry it.
pub fn decode<T: serde::de::DeserializeOwned + Default>(data: &[u8]) -> ApiResult<T> {
    let trimmed = data.trim_ascii();
    if trimmed.is_empty() || trimmed == b"null" {
        return Ok(T::default());
    }
    serde_json::from_slice(trimmed).map_err(|e| ApiError::bad_request(format!("invalid JSON: {e}")))
}

/// A request's query string.
#[derive(Debug, Clone, Default)]
pub struct Query {
    pairs: Vec<(String, String)>,
}

impl Query {
    /// Parse `a=1&b=x`.
    pub fn parse(q: Option<&str>) -> Query {
        Query {
            pairs: q
                .map(|q| form_urlencoded::parse(q.as_bytes()).into_owned().collect())
                .unwrap_or_default(),
        }
    }

    /// The first value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `key`.
    pub fn all(&self, key: &str) -> Vec<String> {
        self.pairs
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// A non-empty value of `key`.
    pub fn string(&self, key: &str) -> Option<String> {
        self.get(key).filter(|v| !v.is_empty()).map(String::from)
    }

    /// Docker's boolean parameter (`httputils.BoolValue`): anything but empty, `0`, `no`,
    /// `false` and `none` (any case) is true.
    pub fn bool(&self, key: &str) -> bool {
        match self.get(key) {
            None => false,
            Some(v) => !matches!(
                v.trim().to_ascii_lowercase().as_str(),
                "" | "0" | "no" | "false" | "none"
            ),
        }
    }

    /// Docker's boolean parameter with a default when absent.
    pub fn bool_or(&self, key: &str, default: bool) -> bool {
        if self.get(key).is_none() {
            default
        } else {
            self.bool(key)
        }
    }

    /// An integer parameter (absent or empty: `None`).
    pub fn int(&self, key: &str) -> ApiResult<Option<i64>> {
        match self.get(key).map(str::trim).filter(|v| !v.is_empty()) {
            None => Ok(None),
            Some(v) => v.parse().map(Some).map_err(|_| {
                ApiError::bad_request(format!(
                    "invalid value for {key}: strconv.ParseInt: parsing {v:?}: invalid syntax"
                ))
            }),
        }
    }

    /// The `filters` parameter as `key=value` strings (the engine's filter syntax).
    pub fn filters(&self) -> ApiResult<Vec<String>> {
        Ok(parse_filters(self.get("filters").unwrap_or(""))?
            .into_iter()
            .flat_map(|(k, vs)| vs.into_iter().map(move |v| format!("{k}={v}")))
            .collect())
    }
}

/// Docker's `filters` JSON in either encoding: map of bools (`{"name":{"x":true}}`, the Go
/// client's) or map of lists (`{"name":["x"]}`, docker-py's and older clients').
pub fn parse_filters(raw: &str) -> ApiResult<BTreeMap<String, Vec<String>>> {
    let mut out = BTreeMap::new();
    if raw.trim().is_empty() {
        return Ok(out);
    }
    let bad = |e: String| ApiError::bad_request(format!("invalid filter: {e}"));
    let v: serde_json::Value = serde_json::from_str(raw).map_err(|e| bad(e.to_string()))?;
    let serde_json::Value::Object(map) = v else {
        return Err(bad("expected a JSON object".into()));
    };
    for (k, v) in map {
        let values: Vec<String> = match v {
            serde_json::Value::Object(m) => m.into_iter().map(|(x, _)| x).collect(),
            serde_json::Value::Array(a) => a
                .into_iter()
                .map(|x| match x {
                    serde_json::Value::String(s) => Ok(s),
                    other => Err(bad(format!("unexpected value {other} for {k}"))),
                })
                .collect::<ApiResult<_>>()?,
            other => return Err(bad(format!("unexpected value {other} for {k}"))),
        };
        out.insert(k, values);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_both_encodings() {
        let a = parse_filters(r#"{"dangling":{"true":true},"name":{"x":true}}"#).unwrap();
        let b = parse_filters(r#"{"dangling": ["true"], "name": ["x"]}"#).unwrap();
        assert_eq!(a, b);
        assert_eq!(a["name"], vec!["x"]);
        assert!(parse_filters("[1]").is_err());
        assert!(parse_filters("{").is_err());
        let q = Query::parse(Some(
            "filters=%7B%22label%22%3A%5B%22a%3Db%22%5D%7D&force=True&v=0",
        ));
        assert_eq!(q.filters().unwrap(), vec!["label=a=b"]);
        assert!(q.bool("force"));
        assert!(!q.bool("v"));
        assert!(!q.bool("missing"));
    }
}
