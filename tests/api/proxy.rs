//! A fault-injecting TCP proxy between the service and a real dependency (MariaDB, Redis).
//!
//! A mode applies to new connections and, where a real fault would, to open ones too (pooled
//! connections are where a service meets most faults):
//! - `Up` forwards bytes.
//! - `Refuse` closes every open connection (FIN) and closes new ones at once, as a stopped server.
//! - `Reset` resets every open connection (RST: zero linger, then close) and resets new ones, as a
//!   crashed host or a firewall answering with RST.
//! - `Blackhole` holds connections and swallows what the client sends without ever answering, as a
//!   hung server or a dead network; it counts the swallowed bytes, the signal that a request has
//!   reached the dependency. Back `Up`, a swallowed connection is closed (its stream is broken).
//! - `Latency(d)` delays every chunk by `d` in each direction, so a request/reply round trip
//!   takes at least `2·d` more.
//! - `CloseAfter(n)` forwards `n` more bytes of the dependency's replies on each connection
//!   (counted from the moment the mode is set, or from the connection's start), then closes it:
//!   requests pass, replies are cut mid-way (mid-handshake, mid-result-set).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Up,
    Refuse,
    Reset,
    Blackhole,
    Latency(Duration),
    CloseAfter(u64),
}

impl Mode {
    /// Whether the mode ends forwarding on open connections at once.
    fn cuts(self) -> bool {
        matches!(self, Mode::Refuse | Mode::Reset | Mode::Blackhole)
    }
}

/// The current mode and how many times a mode was set, so that a connection can tell a new
/// `CloseAfter(n)` from the one whose budget it is already spending.
#[derive(Debug, Clone, Copy)]
struct Setting {
    mode: Mode,
    epoch: u64,
}

/// A running proxy; dropped, it stops accepting and closes its connections.
pub struct Proxy {
    pub address: SocketAddr,
    setting: watch::Sender<Setting>,
    swallowed: Arc<AtomicU64>,
    accept_task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    pub async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let (setting, _) = watch::channel(Setting {
            mode: Mode::Up,
            epoch: 0,
        });
        let swallowed = Arc::new(AtomicU64::new(0));
        let settings = setting.clone();
        let counter = swallowed.clone();
        let accept_task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(handle(
                    client,
                    upstream,
                    settings.subscribe(),
                    counter.clone(),
                ));
            }
        });
        Proxy {
            address,
            setting,
            swallowed,
            accept_task,
        }
    }

    pub fn set(&self, mode: Mode) {
        self.setting.send_modify(|setting| {
            setting.mode = mode;
            setting.epoch += 1;
        });
    }

    /// Bytes clients sent while the proxy was a black hole.
    pub fn swallowed_bytes(&self) -> u64 {
        self.swallowed.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept_task.abort();
        self.set(Mode::Refuse);
    }
}

/// Reply bytes a connection may still forward under `CloseAfter`, and under which setting.
#[derive(Default)]
struct Budget {
    epoch: u64,
    remaining: u64,
}

async fn handle(
    mut client: TcpStream,
    upstream: SocketAddr,
    mut setting: watch::Receiver<Setting>,
    swallowed: Arc<AtomicU64>,
) {
    let mode = setting.borrow_and_update().mode;
    // Lives until the fault ends: behind a black hole the dependency sees no close either.
    let mut server = None;
    let fault = if mode.cuts() {
        mode
    } else {
        let Ok(stream) = TcpStream::connect(upstream).await else {
            return reset(&client);
        };
        let server = server.insert(stream);
        let budget = Mutex::new(Budget::default());
        let forwarding = forward(&mut client, server, setting.clone(), &budget);
        tokio::select! {
            _ = forwarding => return,
            changed = setting.wait_for(|s| s.mode.cuts()) => match changed {
                Ok(setting) => setting.mode,
                Err(_) => Mode::Refuse,
            },
        }
    };
    match fault {
        Mode::Reset => reset(&client),
        Mode::Blackhole => swallow_until_up(&mut client, &mut setting, &swallowed).await,
        _ => {}
    }
}

/// Copies both directions until both ended or one failed; replies are the `CloseAfter` budget.
async fn forward(
    client: &mut TcpStream,
    server: &mut TcpStream,
    setting: watch::Receiver<Setting>,
    budget: &Mutex<Budget>,
) -> std::io::Result<()> {
    let (client_read, client_write) = client.split();
    let (server_read, server_write) = server.split();
    tokio::try_join!(
        pump(client_read, server_write, setting.clone(), None),
        pump(server_read, client_write, setting.clone(), Some(budget)),
    )
    .map(|_| ())
}

/// One direction: read a chunk, apply the mode (delay, budget), write it on.
async fn pump(
    mut from: ReadHalf<'_>,
    mut to: WriteHalf<'_>,
    setting: watch::Receiver<Setting>,
    budget: Option<&Mutex<Budget>>,
) -> std::io::Result<()> {
    let mut buffer = vec![0u8; 16 * 1024];
    loop {
        let read = from.read(&mut buffer).await?;
        if read == 0 {
            return to.shutdown().await;
        }
        let current = *setting.borrow();
        let allowed = match (current.mode, budget) {
            (Mode::Latency(delay), _) => {
                tokio::time::sleep(delay).await;
                read
            }
            (Mode::CloseAfter(limit), Some(budget)) => spend(budget, current.epoch, limit, read),
            _ => read,
        };
        to.write_all(&buffer[..allowed]).await?;
        if allowed < read {
            return Err(std::io::ErrorKind::ConnectionAborted.into());
        }
    }
}

/// How many of `wanted` bytes the budget of setting `epoch` still allows; spends them.
fn spend(budget: &Mutex<Budget>, epoch: u64, limit: u64, wanted: usize) -> usize {
    let mut budget = budget.lock().unwrap();
    if budget.epoch != epoch {
        *budget = Budget {
            epoch,
            remaining: limit,
        };
    }
    let allowed = budget.remaining.min(wanted as u64);
    budget.remaining -= allowed;
    allowed as usize
}

/// Closes with RST instead of FIN: a zero linger time makes the close abortive.
fn reset(stream: &TcpStream) {
    let _ = stream.set_zero_linger();
}

/// Reads and discards what the client sends until the proxy is up again, then hangs up.
async fn swallow_until_up(
    client: &mut TcpStream,
    setting: &mut watch::Receiver<Setting>,
    swallowed: &AtomicU64,
) {
    let mut buffer = [0u8; 4096];
    loop {
        tokio::select! {
            read = client.read(&mut buffer) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => { swallowed.fetch_add(n as u64, Ordering::SeqCst); }
            },
            _ = setting.wait_for(|s| s.mode != Mode::Blackhole) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    //! The modes against a raw TCP echo server.

    use std::io::ErrorKind;
    use std::time::Instant;

    use super::*;

    /// Echoes every byte back until the client closes.
    async fn echo_server() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let (mut read, mut write) = stream.split();
                    let _ = tokio::io::copy(&mut read, &mut write).await;
                });
            }
        });
        address
    }

    async fn round_trip(stream: &mut TcpStream, message: &[u8]) -> std::io::Result<Vec<u8>> {
        stream.write_all(message).await?;
        let mut reply = vec![0u8; message.len()];
        stream.read_exact(&mut reply).await?;
        Ok(reply)
    }

    /// Reads until the proxy closes; what arrived, and how it ended.
    async fn read_to_end(stream: &mut TcpStream) -> (Vec<u8>, std::io::Result<()>) {
        let mut received = Vec::new();
        let mut buffer = [0u8; 1024];
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) => return (received, Ok(())),
                Ok(n) => received.extend_from_slice(&buffer[..n]),
                Err(error) => return (received, Err(error)),
            }
        }
    }

    #[tokio::test]
    async fn latency_delays_each_direction_of_open_connections() {
        let proxy = Proxy::start(echo_server().await).await;
        let mut stream = TcpStream::connect(proxy.address).await.unwrap();
        assert_eq!(round_trip(&mut stream, b"up").await.unwrap(), b"up");
        let delay = Duration::from_millis(100);
        proxy.set(Mode::Latency(delay));
        let started = Instant::now();
        assert_eq!(round_trip(&mut stream, b"slow").await.unwrap(), b"slow");
        assert!(started.elapsed() >= 2 * delay, "{:?}", started.elapsed());
    }

    #[tokio::test]
    async fn reset_sends_rst_on_open_and_new_connections() {
        let proxy = Proxy::start(echo_server().await).await;
        let mut open = TcpStream::connect(proxy.address).await.unwrap();
        assert_eq!(round_trip(&mut open, b"up").await.unwrap(), b"up");
        proxy.set(Mode::Reset);
        let (_, ended) = read_to_end(&mut open).await;
        assert_eq!(ended.unwrap_err().kind(), ErrorKind::ConnectionReset);
        let mut new = TcpStream::connect(proxy.address).await.unwrap();
        let (_, ended) = read_to_end(&mut new).await;
        assert_eq!(ended.unwrap_err().kind(), ErrorKind::ConnectionReset);
    }

    #[tokio::test]
    async fn close_after_forwards_that_many_reply_bytes_then_closes() {
        let proxy = Proxy::start(echo_server().await).await;
        let mut open = TcpStream::connect(proxy.address).await.unwrap();
        assert_eq!(round_trip(&mut open, b"up").await.unwrap(), b"up");
        proxy.set(Mode::CloseAfter(5));
        for stream in [
            &mut open,
            &mut TcpStream::connect(proxy.address).await.unwrap(),
        ] {
            stream.write_all(b"0123456789").await.unwrap();
            let (received, ended) = read_to_end(stream).await;
            assert_eq!(received, b"01234");
            ended.unwrap();
        }
    }

    #[tokio::test]
    async fn refuse_closes_open_connections_and_blackhole_swallows() {
        let proxy = Proxy::start(echo_server().await).await;
        let mut open = TcpStream::connect(proxy.address).await.unwrap();
        assert_eq!(round_trip(&mut open, b"up").await.unwrap(), b"up");
        proxy.set(Mode::Blackhole);
        let mut held = TcpStream::connect(proxy.address).await.unwrap();
        held.write_all(b"into the void").await.unwrap();
        open.write_all(b"me too").await.unwrap();
        let expected = u64::try_from(b"into the void".len() + b"me too".len()).unwrap();
        crate::helpers::eventually(Duration::from_secs(5), "bytes swallowed", || async {
            proxy.swallowed_bytes() == expected
        })
        .await;
        proxy.set(Mode::Refuse);
        for stream in [&mut open, &mut held] {
            let (received, ended) = read_to_end(stream).await;
            assert!(received.is_empty(), "a black hole never answers");
            ended.unwrap();
        }
        let mut refused = TcpStream::connect(proxy.address).await.unwrap();
        assert_eq!(read_to_end(&mut refused).await.0, b"");
    }
}
