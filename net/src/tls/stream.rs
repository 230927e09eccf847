//! TLS over any [`Net`]: a listener whose accepted streams do their handshake in the task that
//! reads them (never in the accept loop, where one stalled client would hold up everyone),
//! bounded by a handshake timeout; a dialer; and [`TlsNet`], a `Net` that does both.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use rustls::pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::reload::Reloadable;
use crate::transport::{BoxFuture, Listener, Net, Stream};

/// How long a connection may take to finish its handshake, from accept (or dial) on.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

type Handshake<S> = BoxFuture<'static, io::Result<tokio_rustls::TlsStream<S>>>;

enum State<S> {
    Handshaking(Handshake<S>),
    Ready(Box<tokio_rustls::TlsStream<S>>),
    Failed,
}

/// A TLS connection, accepted or dialed. An accepted one does its handshake on first use (a
/// read, a write, or [`TlsStream::handshake`]); a failed or timed-out handshake makes every
/// later use fail, and dropping the stream closes the socket.
pub struct TlsStream<S> {
    state: State<S>,
}

impl<S: Stream> TlsStream<S> {
    /// A server-side connection on `stream`, to handshake with `config` within `timeout` of now.
    pub fn accept(stream: S, config: Arc<rustls::ServerConfig>, timeout: Duration) -> Self {
        let acceptor = tokio_rustls::TlsAcceptor::from(config);
        let handshake = tokio::time::timeout(timeout, acceptor.accept(stream));
        TlsStream {
            state: State::Handshaking(Box::pin(async move {
                match handshake.await {
                    Ok(done) => done.map(tokio_rustls::TlsStream::Server),
                    Err(_) => Err(timed_out()),
                }
            })),
        }
    }

    /// Dials TLS on `stream` (already connected) with `config`, expecting the server's
    /// certificate to name `server_name` (a DNS name or an IP address), within `timeout`.
    pub async fn connect(
        stream: S,
        config: Arc<rustls::ClientConfig>,
        server_name: &str,
        timeout: Duration,
    ) -> io::Result<Self> {
        let name = ServerName::try_from(server_name.to_owned()).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{server_name:?} is not a valid TLS server name"),
            )
        })?;
        let connector = tokio_rustls::TlsConnector::from(config);
        match tokio::time::timeout(timeout, connector.connect(name, stream)).await {
            Ok(Ok(tls)) => Ok(TlsStream {
                state: State::Ready(Box::new(tokio_rustls::TlsStream::Client(tls))),
            }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(timed_out()),
        }
    }

    /// Completes the handshake (at once if it is done), or says why it failed.
    pub async fn handshake(&mut self) -> io::Result<()> {
        std::future::poll_fn(|cx| self.poll_handshake(cx)).await
    }

    /// The certificates the other side presented (its own first), once the handshake is done;
    /// None before, or if it presented none.
    pub fn peer_certificates(&self) -> Option<&[CertificateDer<'static>]> {
        match &self.state {
            State::Ready(tls) => match tls.as_ref() {
                tokio_rustls::TlsStream::Server(s) => s.get_ref().1.peer_certificates(),
                tokio_rustls::TlsStream::Client(s) => s.get_ref().1.peer_certificates(),
            },
            _ => None,
        }
    }

    fn poll_handshake(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match &mut self.state {
            State::Ready(_) => Poll::Ready(Ok(())),
            State::Failed => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "the TLS handshake failed",
            ))),
            State::Handshaking(handshake) => match ready!(handshake.as_mut().poll(cx)) {
                Ok(tls) => {
                    self.state = State::Ready(Box::new(tls));
                    Poll::Ready(Ok(()))
                }
                Err(e) => {
                    self.state = State::Failed;
                    Poll::Ready(Err(e))
                }
            },
        }
    }

    fn established(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<&mut Self>> {
        ready!(self.poll_handshake(cx))?;
        Poll::Ready(Ok(self))
    }

    fn tls(&mut self) -> Pin<&mut tokio_rustls::TlsStream<S>> {
        match &mut self.state {
            State::Ready(tls) => Pin::new(tls.as_mut()),
            _ => unreachable!("used only after the handshake completed"),
        }
    }
}

impl<S: Stream> AsyncRead for TlsStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = ready!(self.get_mut().established(cx))?;
        this.tls().poll_read(cx, buf)
    }
}

impl<S: Stream> AsyncWrite for TlsStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = ready!(self.get_mut().established(cx))?;
        this.tls().poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = ready!(self.get_mut().established(cx))?;
        this.tls().poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        match this.state {
            // Nothing was established to close: dropping the stream closes the socket.
            State::Handshaking(_) | State::Failed => Poll::Ready(Ok(())),
            State::Ready(_) => this.tls().poll_shutdown(cx),
        }
    }
}

fn timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "the TLS handshake timed out")
}

/// A listener whose connections speak TLS with the configuration current at accept time.
pub struct TlsListener<L> {
    inner: L,
    config: Reloadable<rustls::ServerConfig>,
    handshake_timeout: Duration,
}

impl<L: Listener> TlsListener<L> {
    pub fn new(
        inner: L,
        config: Reloadable<rustls::ServerConfig>,
        handshake_timeout: Duration,
    ) -> Self {
        TlsListener {
            inner,
            config,
            handshake_timeout,
        }
    }
}

impl<L: Listener> Listener for TlsListener<L> {
    type Stream = TlsStream<L::Stream>;

    fn accept(&mut self) -> BoxFuture<'_, io::Result<(Self::Stream, String)>> {
        Box::pin(async move {
            let (stream, remote) = self.inner.accept().await?;
            let tls = TlsStream::accept(stream, self.config.current(), self.handshake_timeout);
            Ok((tls, remote))
        })
    }

    fn spawn<F>(task: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        L::spawn(task)
    }
}

/// TLS over another [`Net`]: `connect` dials and completes the handshake (the server's
/// certificate must name the host of the address dialed, or `server_name` if set); `bind`
/// gives a [`TlsListener`]. A side without a configuration fails with an error.
#[derive(Clone)]
pub struct TlsNet<N> {
    inner: N,
    client: Option<Reloadable<rustls::ClientConfig>>,
    server: Option<Reloadable<rustls::ServerConfig>>,
    server_name: Option<String>,
    handshake_timeout: Duration,
}

impl<N: Net> TlsNet<N> {
    /// A dialing-only TLS network (the client side).
    pub fn client(inner: N, config: Reloadable<rustls::ClientConfig>) -> Self {
        TlsNet {
            inner,
            client: Some(config),
            server: None,
            server_name: None,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
        }
    }

    /// A listening-only TLS network (the server side).
    pub fn server(inner: N, config: Reloadable<rustls::ServerConfig>) -> Self {
        TlsNet {
            inner,
            client: None,
            server: Some(config),
            server_name: None,
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
        }
    }

    /// Expect this name in every server's certificate instead of the host dialed.
    pub fn with_server_name(mut self, name: impl Into<String>) -> Self {
        self.server_name = Some(name.into());
        self
    }

    pub fn with_handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = timeout;
        self
    }
}

/// The host part of `host:port` (`[::1]:6379` gives `::1`).
pub fn host_of(addr: &str) -> &str {
    let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
    host.trim_start_matches('[').trim_end_matches(']')
}

impl<N: Net> Net for TlsNet<N> {
    type Stream = TlsStream<N::Stream>;
    type Listener = TlsListener<N::Listener>;

    fn bind(&self, addr: String) -> BoxFuture<'static, io::Result<Self::Listener>> {
        let inner = self.inner.clone();
        let server = self.server.clone();
        let timeout = self.handshake_timeout;
        Box::pin(async move {
            let config = server.ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidInput, "no TLS server certificate")
            })?;
            Ok(TlsListener::new(inner.bind(addr).await?, config, timeout))
        })
    }

    fn connect(&self, addr: String) -> BoxFuture<'static, io::Result<Self::Stream>> {
        let inner = self.inner.clone();
        let client = self.client.clone();
        let name = self
            .server_name
            .clone()
            .unwrap_or_else(|| host_of(&addr).to_owned());
        let timeout = self.handshake_timeout;
        Box::pin(async move {
            let config = client.ok_or_else(|| {
                io::Error::new(io::ErrorKind::InvalidInput, "no TLS client configuration")
            })?;
            let stream = inner.connect(addr).await?;
            TlsStream::connect(stream, config.current(), &name, timeout).await
        })
    }
}
