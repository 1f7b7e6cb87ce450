//! A TCP proxy on 127.0.0.1 that a test can cut and restore, to take a dependency (such as
//! PostgreSQL) away from a running server without touching the shared dependency itself.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{AbortHandle, JoinHandle};

/// A cuttable proxy to one upstream address.
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    up: watch::Sender<bool>,
    links: Arc<Mutex<Vec<AbortHandle>>>,
    acceptor: JoinHandle<()>,
}

impl FaultProxy {
    /// Starts forwarding a local port to `upstream`.
    ///
    /// # Errors
    /// When no local port can be bound.
    pub async fn start(upstream: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let (up, up_rx) = watch::channel(true);
        let links: Arc<Mutex<Vec<AbortHandle>>> = Arc::default();
        let acceptor = tokio::spawn(accept(listener, upstream, up_rx, links.clone()));
        Ok(Self {
            addr,
            up,
            links,
            acceptor,
        })
    }

    /// The local address to connect to instead of the upstream.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Breaks every open connection and refuses new ones until [`Self::restore`].
    pub fn cut(&self) {
        let _unchanged = self.up.send(false);
        for link in self
            .links
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
        {
            link.abort();
        }
    }

    /// Forwards new connections again.
    pub fn restore(&self) {
        let _unchanged = self.up.send(true);
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.acceptor.abort();
        self.cut();
    }
}

async fn accept(
    listener: TcpListener,
    upstream: SocketAddr,
    up: watch::Receiver<bool>,
    links: Arc<Mutex<Vec<AbortHandle>>>,
) {
    while let Ok((client, _)) = listener.accept().await {
        if !*up.borrow() {
            drop(client);
            continue;
        }
        let link = tokio::spawn(async move {
            let Ok(mut server) = TcpStream::connect(upstream).await else {
                return;
            };
            let mut client = client;
            let _closed = tokio::io::copy_bidirectional(&mut client, &mut server).await;
        });
        links
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(link.abort_handle());
    }
}
