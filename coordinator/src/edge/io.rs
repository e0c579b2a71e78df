//! A connection that closes itself when idle and holds its permits.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::{Instant, Sleep};

/// Wraps a connection: once no byte was read or written for `idle`, the
/// next read fails with `TimedOut` (which makes hyper or tonic close the
/// connection). The connection-cap permits are released when it drops.
///
/// The timer is polled from `poll_read`, so it fires while the server waits
/// for the peer; it does not interrupt a handler that is still working on a
/// request (nothing reads the connection then).
pub struct IdleIo<T> {
    inner: T,
    idle: Option<Duration>,
    timer: Pin<Box<Sleep>>,
    _permits: Vec<OwnedSemaphorePermit>,
}

impl<T> IdleIo<T> {
    /// `idle: None` never times out (the wrapper then only holds permits).
    pub fn new(inner: T, idle: Option<Duration>, permits: Vec<OwnedSemaphorePermit>) -> Self {
        let timer = Box::pin(tokio::time::sleep_until(deadline(idle)));
        IdleIo {
            inner,
            idle,
            timer,
            _permits: permits,
        }
    }

    pub fn get_ref(&self) -> &T {
        &self.inner
    }

    fn touch(&mut self) {
        // Without a limit the timer is never polled: leave it alone.
        if self.idle.is_some() {
            self.timer.as_mut().reset(deadline(self.idle));
        }
    }
}

/// Far enough never to matter, near enough never to overflow.
const NEVER: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

fn deadline(idle: Option<Duration>) -> Instant {
    let now = Instant::now();
    now.checked_add(idle.unwrap_or(NEVER))
        .or_else(|| now.checked_add(NEVER))
        .unwrap_or(now)
}

impl<T: AsyncRead + Unpin> AsyncRead for IdleIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    self.touch();
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                if self.idle.is_some() && self.timer.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "connection idle for too long",
                    )));
                }
                Poll::Pending
            }
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for IdleIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, data);
        if let Poll::Ready(Ok(n)) = &r
            && *n > 0
        {
            self.touch();
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = &r
            && *n > 0
        {
            self.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl<T: tonic::transport::server::Connected> tonic::transport::server::Connected for IdleIo<T> {
    type ConnectInfo = T::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.inner.connect_info()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn an_idle_connection_fails_its_read_and_activity_postpones_it() {
        let (a, mut b) = tokio::io::duplex(64);
        let mut io = IdleIo::new(a, Some(Duration::from_secs(3)), Vec::new());
        let mut buf = [0u8; 8];
        b.write_all(b"hi").await.expect("write");
        assert_eq!(io.read(&mut buf).await.expect("data in time"), 2);
        let early = tokio::time::timeout(Duration::from_millis(300), io.read(&mut buf)).await;
        assert!(early.is_err(), "no timeout well before the idle limit");
        let err = tokio::time::timeout(Duration::from_secs(30), io.read(&mut buf))
            .await
            .expect("the idle limit ends the read")
            .expect_err("idle");
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    }

    #[tokio::test]
    async fn without_a_limit_it_never_times_out() {
        let (a, _b) = tokio::io::duplex(64);
        let mut io = IdleIo::new(a, None, Vec::new());
        let mut buf = [0u8; 8];
        let r = tokio::time::timeout(Duration::from_millis(300), io.read(&mut buf)).await;
        assert!(r.is_err(), "still waiting");
    }
}
