//! A TCP proxy on 127.0.0.1 that a test can cut, hang and restore, to take a dependency
//! (such as PostgreSQL) away from a running server without touching the shared dependency
//! itself: cut closes every connection and refuses new ones; hang keeps them open and
//! forwards nothing either way (a partition, or a server that stopped answering).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{AbortHandle, JoinHandle};

/// What the proxy does with bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Forward,
    Hang,
    Cut,
}

/// One proxied connection: its task and the local port of its upstream side (the
/// `client_port` the upstream sees).
#[derive(Debug)]
struct Link {
    task: AbortHandle,
    upstream_port: u16,
}

/// A cuttable proxy to one upstream address.
#[derive(Debug)]
pub struct FaultProxy {
    addr: SocketAddr,
    mode: watch::Sender<Mode>,
    links: Arc<Mutex<Vec<Link>>>,
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
        let (mode, mode_rx) = watch::channel(Mode::Forward);
        let links: Arc<Mutex<Vec<Link>>> = Arc::default();
        let acceptor = tokio::spawn(accept(listener, upstream, mode_rx, links.clone()));
        Ok(Self {
            addr,
            mode,
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
        let _unchanged = self.mode.send(Mode::Cut);
        for link in self
            .links
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
        {
            link.task.abort();
        }
    }

    /// Keeps every connection open and accepts new ones, but forwards no byte either way
    /// until [`Self::restore`] (what was sent meanwhile is delivered then).
    pub fn hang(&self) {
        let _unchanged = self.mode.send(Mode::Hang);
    }

    /// Forwards again: held bytes and new connections.
    pub fn restore(&self) {
        let _unchanged = self.mode.send(Mode::Forward);
    }

    /// The local ports of the upstream sides of the connections still open (the
    /// `client_port`s PostgreSQL's `pg_stat_activity` shows for them).
    pub fn upstream_ports(&self) -> Vec<u16> {
        let mut links = self.links.lock().unwrap_or_else(PoisonError::into_inner);
        links.retain(|link| !link.task.is_finished());
        links.iter().map(|link| link.upstream_port).collect()
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
    mode: watch::Receiver<Mode>,
    links: Arc<Mutex<Vec<Link>>>,
) {
    while let Ok((client, _)) = listener.accept().await {
        if *mode.borrow() == Mode::Cut {
            drop(client);
            continue;
        }
        let Ok(server) = TcpStream::connect(upstream).await else {
            continue;
        };
        let Ok(local) = server.local_addr() else {
            continue;
        };
        let (client_read, client_write) = client.into_split();
        let (server_read, server_write) = server.into_split();
        let (up, down) = (mode.clone(), mode.clone());
        let task = tokio::spawn(async move {
            tokio::select! {
                () = pipe(client_read, server_write, up) => {}
                () = pipe(server_read, client_write, down) => {}
            }
        });
        links
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Link {
                task: task.abort_handle(),
                upstream_port: local.port(),
            });
    }
}

/// Copies `from` to `to` while the mode is Forward; waits while it is Hang; ends at EOF,
/// on an error, or when cut.
async fn pipe(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, mut mode: watch::Receiver<Mode>) {
    let mut buf = vec![0; 16 * 1024];
    loop {
        if !flowing(&mut mode).await {
            return;
        }
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        // Bytes read just before a hang are held too.
        if !flowing(&mut mode).await || to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// Waits until the mode is Forward (true) or Cut (false).
async fn flowing(mode: &mut watch::Receiver<Mode>) -> bool {
    match mode.wait_for(|m| *m != Mode::Hang).await {
        Ok(m) => *m == Mode::Forward,
        Err(_) => false,
    }
}
