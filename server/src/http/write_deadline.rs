//! The write timeout (`WRITE_TIMEOUT_SECONDS`): a connection whose socket accepts no bytes
//! for that long is closed, so a client that asks for a large response and never reads it
//! gives its connection slot back instead of holding it until it leaves.
//!
//! It is a deadline on write *progress*, not on the whole response: a slow link that keeps
//! taking bytes is served to the end however long that takes, and the clock restarts with
//! every byte the socket accepts. A client that reads a trickle, just enough to beat the
//! deadline, keeps its slot; the per-client cap (`client_slots`) bounds how many it can
//! hold that way.
//!
//! [`WriteDeadline`] wraps the socket under hyper. A write that completes costs one branch;
//! the timer exists only once a write has had to wait (allocated then, once per
//! connection), and is rearmed only when a stall begins, not on every retry within one.
//! When it fires the write fails with [`WriteStalled`], hyper ends the connection, and the
//! socket is closed with a reset: the bytes still queued in the kernel for a client that
//! does not read them are dropped at once rather than retried for minutes.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

/// A [`TcpStream`] whose writes fail once they have made no progress for `timeout`.
pub struct WriteDeadline {
    stream: TcpStream,
    timeout: Duration,
    /// Made at the first write that has to wait; reused for every later stall.
    timer: Option<Pin<Box<Sleep>>>,
    /// A write is waiting, and `timer` is set to when that wait began plus `timeout`.
    stalled: bool,
}

/// The cause of the error a stalled write ends with, so that the connection's owner can
/// tell a write timeout from the client going away.
#[derive(Debug, thiserror::Error)]
#[error("no write progress within the write timeout")]
pub struct WriteStalled;

impl WriteStalled {
    /// Whether `err` (a connection's error, through its chain of causes) is a write timeout.
    pub fn caused(err: &(dyn std::error::Error + 'static)) -> bool {
        let mut cause = Some(err);
        while let Some(e) = cause {
            if e.downcast_ref::<io::Error>()
                .and_then(io::Error::get_ref)
                .is_some_and(|inner| inner.is::<WriteStalled>())
            {
                return true;
            }
            cause = e.source();
        }
        false
    }
}

impl WriteDeadline {
    pub fn new(stream: TcpStream, timeout: Duration) -> WriteDeadline {
        WriteDeadline {
            stream,
            timeout,
            timer: None,
            stalled: false,
        }
    }

    /// Passes a finished write on and ends any stall; for a waiting one, starts the clock
    /// if this wait is new, and fails the write once the clock has run out.
    fn deadline<T>(
        &mut self,
        cx: &mut Context<'_>,
        write: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if write.is_ready() {
            self.stalled = false;
            return write;
        }
        if !self.stalled {
            self.stalled = true;
            let deadline = Instant::now() + self.timeout;
            match &mut self.timer {
                Some(timer) => timer.as_mut().reset(deadline),
                None => self.timer = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
        }
        let expired = self
            .timer
            .as_mut()
            .map_or(Poll::Pending, |timer| timer.as_mut().poll(cx));
        match expired {
            Poll::Pending => Poll::Pending,
            Poll::Ready(()) => {
                // Dropping the socket now resets the connection instead of leaving the
                // kernel to retry the unread bytes to a zero window.
                let _ = self.stream.set_zero_linger();
                Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, WriteStalled)))
            }
        }
    }
}

impl AsyncRead for WriteDeadline {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for WriteDeadline {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let write = Pin::new(&mut this.stream).poll_write(cx, buf);
        this.deadline(cx, write)
    }

    // hyper writes a response's head and body in one vectored write: keep it vectored.
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let write = Pin::new(&mut this.stream).poll_write_vectored(cx, bufs);
        this.deadline(cx, write)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_timeout_is_recognised_through_the_causes_that_wrap_it() {
        #[derive(Debug, thiserror::Error)]
        #[error("connection error")]
        struct Outer(#[source] io::Error);

        let stalled = Outer(io::Error::new(io::ErrorKind::TimedOut, WriteStalled));
        assert!(WriteStalled::caused(&stalled));
        let other = Outer(io::Error::from(io::ErrorKind::TimedOut));
        assert!(!WriteStalled::caused(&other));
        let reset = io::Error::from(io::ErrorKind::ConnectionReset);
        assert!(!WriteStalled::caused(&reset));
    }
}
