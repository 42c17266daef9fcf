//! The monitor's stream protocol, used on the sync socket (client that spawned the monitor) and
//! on the attach socket (`attach.sock`).
//!
//! Every message is a frame: an 8-byte header — kind (1 byte), three zero bytes, payload length
//! (u32, big endian) — then the payload. Output uses Docker's multiplexed stream framing (kind 1:
//! stdout, 2: stderr; with a terminal everything is stdout), so an API server can pass it on
//! unchanged; the control kinds below are carrel's own and never reach Docker clients.
//!
//! Monitor → client: [`STDOUT`], [`STDERR`], [`STARTED`] (JSON [`Started`]), [`ERROR`] (JSON
//! [`StartError`]), [`EXIT`] (JSON [`ExitInfo`](super::ExitInfo)).
//! Client → monitor: [`STDIN`] (bytes), [`STDIN_CLOSE`], [`RESIZE`] (rows u16 BE, cols u16 BE),
//! and, first of all to a monitor spawned before its container existed, [`ASSIGN`] (JSON
//! [`Assignment`]).

use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};

/// Container input (client → monitor).
pub const STDIN: u8 = 0;
/// Container standard output (and all terminal output).
pub const STDOUT: u8 = 1;
/// Container standard error.
pub const STDERR: u8 = 2;
/// The container started (payload: JSON [`Started`]).
pub const STARTED: u8 = 10;
/// The container could not be started (payload: JSON [`StartError`]).
pub const ERROR: u8 = 11;
/// The container ended and its exit was recorded (payload: JSON `ExitInfo`).
pub const EXIT: u8 = 12;
/// Close the container's stdin (client → monitor).
pub const STDIN_CLOSE: u8 = 20;
/// Resize the container's terminal (client → monitor, payload rows and cols as u16 BE).
pub const RESIZE: u8 = 21;
/// The container a monitor spawned ahead of it is to run (client → monitor, payload JSON
/// [`Assignment`]); the first frame on such a monitor's sync socket.
pub const ASSIGN: u8 = 22;

/// Payload of [`ASSIGN`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Assignment {
    /// The container's full id.
    pub id: String,
    /// The client also attaches (gets the output, sends input) on the sync socket.
    pub attach: bool,
}

/// Largest payload accepted in one frame.
pub const MAX_FRAME: usize = 1 << 20;

/// Payload of [`STARTED`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Started {
    /// Host pid of the container's init process.
    pub pid: i32,
    /// Pid of the monitor.
    pub monitor_pid: i32,
    /// Start time, nanoseconds since the epoch.
    pub started_at: i64,
}

/// Payload of [`ERROR`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartError {
    /// The error message (Docker's wording).
    pub message: String,
    /// `docker run`'s exit code for it (125, 126, 127).
    pub exit_code: i32,
    /// The runtime operation that failed, when it was the runtime (`create`, `start`).
    #[serde(default)]
    pub op: String,
    /// The error's kind (`carrel_core::ErrorKind` as text: `not found`, `invalid argument`,
    /// ...), so the client can rebuild an error of the same kind.
    #[serde(default)]
    pub kind: String,
}

/// Encode one frame.
pub fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + payload.len());
    out.push(kind);
    out.extend_from_slice(&[0, 0, 0]);
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// Write one frame.
pub fn write_frame(w: &mut impl Write, kind: u8, payload: &[u8]) -> io::Result<()> {
    w.write_all(&frame(kind, payload))?;
    w.flush()
}

/// Read one frame; `Ok(None)` at a clean end of stream.
pub fn read_frame(r: &mut impl Read) -> io::Result<Option<(u8, Vec<u8>)>> {
    let mut h = [0u8; 8];
    let mut got = 0;
    while got < 8 {
        match r.read(&mut h[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let len = u32::from_be_bytes([h[4], h[5], h[6], h[7]]) as usize;
    if len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "frame too large",
        ));
    }
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload)?;
    Ok(Some((h[0], payload)))
}

/// Split complete frames off the front of `buf` (for non-blocking readers).
pub fn take_frames(buf: &mut Vec<u8>) -> io::Result<Vec<(u8, Vec<u8>)>> {
    let mut out = Vec::new();
    let mut off = 0;
    while buf.len() - off >= 8 {
        let h = &buf[off..off + 8];
        let len = u32::from_be_bytes([h[4], h[5], h[6], h[7]]) as usize;
        if len > MAX_FRAME {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "frame too large",
            ));
        }
        if buf.len() - off < 8 + len {
            break;
        }
        out.push((h[0], buf[off + 8..off + 8 + len].to_vec()));
        off += 8 + len;
    }
    buf.drain(..off);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        let mut buf = frame(STDOUT, b"hello");
        assert_eq!(&buf[..8], &[1, 0, 0, 0, 0, 0, 0, 5]);
        buf.extend(frame(RESIZE, &[0, 24, 0, 80]));
        buf.extend(&frame(STDERR, b"partial")[..6]);
        let got = take_frames(&mut buf).unwrap();
        assert_eq!(
            got,
            vec![(STDOUT, b"hello".to_vec()), (RESIZE, vec![0, 24, 0, 80])]
        );
        assert_eq!(buf.len(), 6);
        let mut r = io::Cursor::new(frame(EXIT, b"{}"));
        assert_eq!(read_frame(&mut r).unwrap(), Some((EXIT, b"{}".to_vec())));
        assert_eq!(read_frame(&mut r).unwrap(), None);
    }
}
