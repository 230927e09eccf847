//! A network that is plain TCP or TLS as the command line says, one type for both, so that a
//! client (`KvClient`) is the same type whichever the user chose.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use super::stream::{TlsListener, TlsNet, TlsStream};
use crate::transport::{BoxFuture, Listener, Net, TokioNet};

/// Plain TCP, or TLS over it.
#[derive(Clone)]
pub enum MaybeTlsNet {
    Plain,
    Tls(TlsNet<TokioNet>),
}

/// A connection of a [`MaybeTlsNet`].
pub enum MaybeTlsStream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// A listener of a [`MaybeTlsNet`].
pub enum MaybeTlsListener {
    Plain(TcpListener),
    Tls(TlsListener<TcpListener>),
}

impl Net for MaybeTlsNet {
    type Stream = MaybeTlsStream;
    type Listener = MaybeTlsListener;

    fn bind(&self, addr: String) -> BoxFuture<'static, io::Result<Self::Listener>> {
        let net = self.clone();
        Box::pin(async move {
            Ok(match net {
                MaybeTlsNet::Plain => MaybeTlsListener::Plain(TokioNet.bind(addr).await?),
                MaybeTlsNet::Tls(tls) => MaybeTlsListener::Tls(tls.bind(addr).await?),
            })
        })
    }

    fn connect(&self, addr: String) -> BoxFuture<'static, io::Result<Self::Stream>> {
        let net = self.clone();
        Box::pin(async move {
            Ok(match net {
                MaybeTlsNet::Plain => MaybeTlsStream::Plain(TokioNet.connect(addr).await?),
                MaybeTlsNet::Tls(tls) => MaybeTlsStream::Tls(Box::new(tls.connect(addr).await?)),
            })
        })
    }
}

impl Listener for MaybeTlsListener {
    type Stream = MaybeTlsStream;

    fn accept(&mut self) -> BoxFuture<'_, io::Result<(Self::Stream, String)>> {
        Box::pin(async move {
            Ok(match self {
                MaybeTlsListener::Plain(l) => {
                    let (s, remote) = Listener::accept(l).await?;
                    (MaybeTlsStream::Plain(s), remote)
                }
                MaybeTlsListener::Tls(l) => {
                    let (s, remote) = l.accept().await?;
                    (MaybeTlsStream::Tls(Box::new(s)), remote)
                }
            })
        })
    }
}

impl AsyncRead for MaybeTlsStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTlsStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            MaybeTlsStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for MaybeTlsStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            MaybeTlsStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            MaybeTlsStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTlsStream::Plain(s) => Pin::new(s).poll_flush(cx),
            MaybeTlsStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            MaybeTlsStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            MaybeTlsStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
