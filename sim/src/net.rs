//! The production driver's network seam ([`net::transport::Net`]) over turmoil's simulated TCP,
//! so that the simulator runs the very same node, transport and client code.

use std::io;

use net::transport::{BoxFuture, Listener, Net};

/// turmoil's TCP. Addresses are `host:port` with turmoil host names (`n1:7100`).
#[derive(Clone, Copy, Debug, Default)]
pub struct TurmoilNet;

/// A listener on one of turmoil's hosts.
pub struct TurmoilListener(turmoil::net::TcpListener);

impl Listener for TurmoilListener {
    type Stream = turmoil::net::TcpStream;
    fn accept(&mut self) -> BoxFuture<'_, io::Result<(Self::Stream, String)>> {
        Box::pin(async move {
            let (stream, remote) = self.0.accept().await?;
            Ok((stream, remote.to_string()))
        })
    }

    /// A local task of the host's `LocalSet`, which a crash drops in the order the tasks were
    /// started. tokio's scheduler would drop them in an order set by its process-wide task
    /// counter, which simulations running at once on other threads advance too.
    fn spawn<F>(task: F) -> tokio::task::JoinHandle<F::Output>
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send + 'static,
    {
        tokio::task::spawn_local(task)
    }
}

impl Net for TurmoilNet {
    type Stream = turmoil::net::TcpStream;
    type Listener = TurmoilListener;

    fn bind(&self, addr: String) -> BoxFuture<'static, io::Result<Self::Listener>> {
        Box::pin(async move {
            // A host listens on all of its addresses; the host part names whose they are.
            let port = addr
                .rsplit_once(':')
                .and_then(|(_, p)| p.parse::<u16>().ok())
                .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, addr.clone()))?;
            turmoil::net::TcpListener::bind(("0.0.0.0", port))
                .await
                .map(TurmoilListener)
        })
    }

    fn connect(&self, addr: String) -> BoxFuture<'static, io::Result<Self::Stream>> {
        Box::pin(async move { turmoil::net::TcpStream::connect(addr).await })
    }
}
