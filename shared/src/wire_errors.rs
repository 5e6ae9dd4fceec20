//! FastAPI-shaped JSON bodies for the errors hyper answers by itself.
//!
//! A request hyper cannot parse (a malformed request line, a URI over its limit, too many or too large headers) never
//! reaches the router: hyper writes `400`, `414` or `431` itself, with an empty body, and closes the connection.
//! Every other error of the agents is `{"detail": "..."}`, as FastAPI answers; so are these, by rewriting that one
//! answer on its way out. hyper offers no hook for it, hence this wrapper around the connection's socket: it
//! recognises hyper's error head (one of those statuses, `connection: close` and `content-length: 0`, written in one
//! piece as hyper does) and sends the same head with a JSON body instead. The agents' own answers never look like
//! that (their errors always have a body), and anything else passes through untouched. HTTP/2 needs none of this:
//! its protocol errors are frames, not answers.

use std::{
    io::{self, IoSlice},
    pin::Pin,
    task::{Context, Poll, ready},
};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The statuses hyper answers by itself, with the `detail` of each (their reason phrase, as FastAPI's default).
const HYPER_ANSWERS: [(&[u8], &str); 3] = [
    (b"HTTP/1.1 400 Bad Request\r\n", "Bad Request"),
    (b"HTTP/1.1 414 URI Too Long\r\n", "URI Too Long"),
    (b"HTTP/1.1 431 Request Header Fields Too Large\r\n", "Request Header Fields Too Large"),
];

/// A socket whose bodiless parse-error answers from hyper are given a JSON body (see the module docs).
#[derive(Debug)]
pub struct JsonParseErrors<T> {
    inner: T,
    /// A rewritten answer still to be written, and how much of it is.
    pending: Option<(Vec<u8>, usize)>,
}

impl<T> JsonParseErrors<T> {
    /// Wraps a connection's socket.
    pub fn new(inner: T) -> Self {
        Self { inner, pending: None }
    }
}

/// The answer to send instead of `written`, if `written` is one of hyper's own bodiless error answers.
fn rewrite(written: &[u8]) -> Option<Vec<u8>> {
    let detail = HYPER_ANSWERS.iter().find(|(line, _)| written.starts_with(line)).map(|(_, detail)| *detail)?;
    let head = written.strip_suffix(b"\r\n\r\n")?;
    if head.windows(4).any(|w| w == b"\r\n\r\n") {
        return None;
    }
    let mut lines: Vec<&[u8]> = head.split(|&b| b == b'\n').map(|l| l.strip_suffix(b"\r").unwrap_or(l)).collect();
    let is = |line: &&[u8], expected: &[u8]| line.eq_ignore_ascii_case(expected);
    if !lines.iter().any(|l| is(l, b"connection: close")) || !lines.iter().any(|l| is(l, b"content-length: 0")) {
        return None;
    }
    let body = format!(r#"{{"detail":"{detail}"}}"#);
    let length = format!("content-length: {}", body.len());
    lines.retain(|l| !is(l, b"content-length: 0"));
    lines.push(b"content-type: application/json");
    lines.push(length.as_bytes());
    let mut answer = lines.join(&b"\r\n"[..]);
    answer.extend_from_slice(b"\r\n\r\n");
    answer.extend_from_slice(body.as_bytes());
    Some(answer)
}

impl<T: AsyncWrite + Unpin> JsonParseErrors<T> {
    /// Writes what is left of a rewritten answer; ready once nothing is.
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some((answer, sent)) = self.pending.as_mut() {
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &answer[*sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *sent += n;
            if *sent == answer.len() {
                self.pending = None;
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for JsonParseErrors<T> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for JsonParseErrors<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        ready!(self.poll_pending(cx))?;
        if let Some(answer) = rewrite(buf) {
            // Taken whole: the caller is told all of its bytes went out; the rewritten ones follow as the socket
            // accepts them, before anything else written, flushed or shut down.
            self.pending = Some((answer, 0));
            let _ = self.poll_pending(cx)?;
            return Poll::Ready(Ok(buf.len()));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        // hyper writes a bodiless answer's head as the only slice.
        if let [only] = bufs {
            return self.poll_write(cx, only);
        }
        ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        ready!(self.poll_pending(cx))?;
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_hypers_bodiless_error_answers_are_rewritten() {
        let hyper = b"HTTP/1.1 431 Request Header Fields Too Large\r\nconnection: close\r\ncontent-length: 0\r\ndate: x\r\n\r\n";
        let rewritten = String::from_utf8(rewrite(hyper).unwrap()).unwrap();
        assert_eq!(
            rewritten,
            "HTTP/1.1 431 Request Header Fields Too Large\r\nconnection: close\r\ndate: x\r\n\
             content-type: application/json\r\ncontent-length: 44\r\n\r\n{\"detail\":\"Request Header Fields Too Large\"}"
        );
        for untouched in [
            &b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: 24\r\n\r\n"[..],
            b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nconnection: close\r\ncontent-length: 0\r\n\r\n",
            b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\n\r\nHTTP/1.1 400 Bad Request\r\n\r\n",
            b"\x00\x00\x08\x06\x00\x00\x00\x00\x00HTTP/1.1 400 Bad Request\r\n",
        ] {
            assert!(rewrite(untouched).is_none(), "{}", String::from_utf8_lossy(untouched));
        }
    }
}
