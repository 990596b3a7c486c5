//! A socket that is plain TCP or TLS, and its two halves.
//!
//! Plain TCP splits into owned halves without a lock; only TLS streams, which cannot be read
//! and written independently, go through `tokio::io::split`. The relay polls these halves for
//! every message, so the plain path stays free of shared state.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// Any byte stream tollgate wraps (TLS over TCP, in practice).
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

pub enum Stream {
    Tcp(TcpStream),
    Wrapped(Box<dyn Io>),
}

pub enum ReadHalf {
    Tcp(OwnedReadHalf),
    Wrapped(tokio::io::ReadHalf<Box<dyn Io>>),
}

pub enum WriteHalf {
    Tcp(OwnedWriteHalf),
    Wrapped(tokio::io::WriteHalf<Box<dyn Io>>),
}

impl Stream {
    pub fn wrap(io: impl Io + 'static) -> Stream {
        Stream::Wrapped(Box::new(io))
    }

    /// Stands in for a stream while it is being moved into TLS.
    pub fn placeholder() -> Stream {
        Stream::wrap(tokio::io::join(tokio::io::empty(), tokio::io::sink()))
    }

    pub fn split(self) -> (ReadHalf, WriteHalf) {
        match self {
            Stream::Tcp(s) => {
                let (r, w) = s.into_split();
                (ReadHalf::Tcp(r), WriteHalf::Tcp(w))
            }
            Stream::Wrapped(s) => {
                let (r, w) = tokio::io::split(s);
                (ReadHalf::Wrapped(r), WriteHalf::Wrapped(w))
            }
        }
    }
}

macro_rules! delegate_read {
    ($t:ty, $($variant:ident),+) => {
        impl AsyncRead for $t {
            fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    $(Self::$variant(s) => Pin::new(s).poll_read(cx, buf),)+
                }
            }
        }
    };
}

macro_rules! delegate_write {
    ($t:ty, $($variant:ident),+) => {
        impl AsyncWrite for $t {
            fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
                match self.get_mut() {
                    $(Self::$variant(s) => Pin::new(s).poll_write(cx, buf),)+
                }
            }
            fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    $(Self::$variant(s) => Pin::new(s).poll_flush(cx),)+
                }
            }
            fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
                match self.get_mut() {
                    $(Self::$variant(s) => Pin::new(s).poll_shutdown(cx),)+
                }
            }
        }
    };
}

delegate_read!(Stream, Tcp, Wrapped);
delegate_write!(Stream, Tcp, Wrapped);
delegate_read!(ReadHalf, Tcp, Wrapped);
delegate_write!(WriteHalf, Tcp, Wrapped);

/// A stream whose first reads return bytes already read from it (a MySQL client starts its
/// TLS handshake right behind its SSLRequest, in the same segment).
pub struct Prefixed {
    prefix: bytes::Bytes,
    inner: Stream,
}

impl Prefixed {
    pub fn new(prefix: bytes::Bytes, inner: Stream) -> Prefixed {
        Prefixed { prefix, inner }
    }
}

impl AsyncRead for Prefixed {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.prefix.is_empty() {
            let n = this.prefix.len().min(buf.remaining());
            buf.put_slice(&this.prefix.split_to(n));
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}
