//! A fault-injecting TCP proxy between the service and a real dependency (MariaDB, Redis).
//!
//! `Up` forwards bytes; `Refuse` cuts every connection and drops new ones at once, as a stopped
//! server does; `Blackhole` holds connections and swallows what the client sends without ever
//! answering, as a hung server or a dead network does. It counts the swallowed bytes, which is
//! the signal that a request has reached the dependency.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Up,
    Refuse,
    Blackhole,
}

/// A running proxy; dropped, it stops accepting.
pub struct Proxy {
    pub address: SocketAddr,
    mode: watch::Sender<Mode>,
    swallowed: Arc<AtomicU64>,
    accept_task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    pub async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (mode, _) = watch::channel(Mode::Up);
        let swallowed = Arc::new(AtomicU64::new(0));
        let modes = mode.clone();
        let counter = swallowed.clone();
        let accept_task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(handle(client, upstream, modes.subscribe(), counter.clone()));
            }
        });
        Proxy {
            address,
            mode,
            swallowed,
            accept_task,
        }
    }

    pub fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }

    /// Bytes clients sent while the proxy was a black hole.
    pub fn swallowed_bytes(&self) -> u64 {
        self.swallowed.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept_task.abort();
        self.mode.send_replace(Mode::Refuse);
    }
}

async fn handle(
    mut client: TcpStream,
    upstream: SocketAddr,
    mut mode: watch::Receiver<Mode>,
    swallowed: Arc<AtomicU64>,
) {
    let current = *mode.borrow_and_update();
    match current {
        Mode::Refuse => return,
        Mode::Blackhole => return swallow_until_up(&mut client, &mut mode, &swallowed).await,
        Mode::Up => {}
    }
    let Ok(mut server) = TcpStream::connect(upstream).await else {
        return;
    };
    let changed = tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => return,
        changed = mode.wait_for(|m| *m != Mode::Up) => changed.map(|m| *m),
    };
    if matches!(changed, Ok(Mode::Blackhole)) {
        swallow_until_up(&mut client, &mut mode, &swallowed).await;
    }
}

/// Reads and discards what the client sends until the proxy is up again, then hangs up.
async fn swallow_until_up(
    client: &mut TcpStream,
    mode: &mut watch::Receiver<Mode>,
    swallowed: &AtomicU64,
) {
    let mut buffer = [0u8; 4096];
    loop {
        tokio::select! {
            read = client.read(&mut buffer) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => { swallowed.fetch_add(n as u64, Ordering::SeqCst); }
            },
            _ = mode.wait_for(|m| *m != Mode::Blackhole) => return,
        }
    }
}
