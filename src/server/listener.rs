//! Accept stage, before the loop: the listening socket, bound once at start-up.
//!
//! Owns the socket options of the listener: `SO_REUSEADDR` (as tokio sets it, so a restart does
//! not wait for `TIME_WAIT`) and, with `REUSE_PORT=1`, `SO_REUSEPORT` (Linux), which lets several
//! instances on one host listen on the same port while the kernel spreads new connections over
//! them by a hash of the connection's addresses. Never accepts a connection: that is
//! [`super::run`].

use std::io;
use std::net::SocketAddr;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::TcpListener;

/// Pending connections the kernel queues per listener (tokio's own `bind` uses the same).
const BACKLOG: i32 = 1024;

/// The listener could not be opened; names the settings at fault.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// Another socket holds the port and they cannot share it.
    #[error(
        "PORT: {address} is already in use{hint}",
        hint = if *reuse_port {
            " by a socket without SO_REUSEPORT (every instance sharing a port needs REUSE_PORT=1, and the same user)"
        } else {
            " (set REUSE_PORT=1 on every instance that should share it, or choose another PORT)"
        }
    )]
    InUse {
        address: SocketAddr,
        reuse_port: bool,
        #[source]
        source: io::Error,
    },
    #[error("HOST/PORT: cannot listen on {address}: {source}")]
    Other {
        address: SocketAddr,
        #[source]
        source: io::Error,
    },
}

/// Binds `address` and listens; with `reuse_port`, other sockets with `SO_REUSEPORT` (of the
/// same user) may listen on the same address. Must be called inside the tokio runtime.
///
/// # Errors
/// [`BindError::InUse`] when the port is taken by a socket it cannot share with, otherwise
/// [`BindError::Other`] with the operating system's reason.
pub fn bind(address: SocketAddr, reuse_port: bool) -> Result<TcpListener, BindError> {
    open(address, reuse_port).map_err(|source| {
        if source.kind() == io::ErrorKind::AddrInUse {
            BindError::InUse {
                address,
                reuse_port,
                source,
            }
        } else {
            BindError::Other { address, source }
        }
    })
}

fn open(address: SocketAddr, reuse_port: bool) -> io::Result<TcpListener> {
    let socket = Socket::new(
        Domain::for_address(address),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    if reuse_port {
        set_reuse_port(&socket)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&address.into())?;
    socket.listen(BACKLOG)?;
    TcpListener::from_std(socket.into())
}

#[cfg(target_os = "linux")]
fn set_reuse_port(socket: &Socket) -> io::Result<()> {
    socket.set_reuse_port(true)
}

/// `Config` refuses `REUSE_PORT=1` off Linux, so this is only reached by a caller passing
/// `reuse_port` itself: other systems' `SO_REUSEPORT` does not spread connections the same way.
#[cfg(not(target_os = "linux"))]
fn set_reuse_port(_socket: &Socket) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "REUSE_PORT is only supported on Linux",
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_taken_port_is_an_error_naming_port_unless_both_sockets_reuse_it() {
        let any_port = SocketAddr::from(([127, 0, 0, 1], 0));
        let plain = bind(any_port, false).unwrap();
        let taken = plain.local_addr().unwrap();
        let error = bind(taken, false).unwrap_err();
        assert!(matches!(error, BindError::InUse { .. }), "{error:?}");
        let message = error.to_string();
        assert!(message.starts_with("PORT: "), "{message}");
        assert!(message.contains("REUSE_PORT=1"), "{message}");
        // One side with SO_REUSEPORT is not enough.
        assert!(matches!(
            bind(taken, true),
            Err(BindError::InUse {
                reuse_port: true,
                ..
            })
        ));

        #[cfg(target_os = "linux")]
        {
            let first = bind(any_port, true).unwrap();
            let shared = first.local_addr().unwrap();
            let second = bind(shared, true).unwrap();
            assert_eq!(second.local_addr().unwrap(), shared);
        }
    }
}
