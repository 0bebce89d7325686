//! The loopback guard. Load tests in this project may only target this machine, so
//! a mistyped `--host` must not send load anywhere else.

use url::{Host, Url};

/// Whether `target` (a goose `--host` such as `http://127.0.0.1:8000`) names this
/// machine: any 127.0.0.0/8 address, `localhost` or `[::1]`. An unparsable host or
/// one without a hostname is an error, never a pass.
pub fn is_loopback(target: &str) -> Result<bool, String> {
    let url = Url::parse(target).map_err(|e| format!("--host {target:?}: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(format!("--host {target:?}: scheme must be http or https"));
    }
    Ok(match url.host() {
        Some(Host::Ipv4(ip)) => ip.is_loopback(),
        Some(Host::Ipv6(ip)) => ip.is_loopback(),
        // `localhost` may not resolve to loopback on every machine, but it does here
        // and it is the name people type; any other name is refused.
        Some(Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        None => return Err(format!("--host {target:?}: no hostname")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_pass() {
        for host in [
            "http://127.0.0.1:8000",
            "http://127.0.0.1",
            "http://127.1.2.3:9000/",
            "http://localhost:8000",
            "http://LOCALHOST",
            "https://localhost",
            "http://[::1]:8000",
        ] {
            assert_eq!(is_loopback(host), Ok(true), "{host}");
        }
    }

    #[test]
    fn other_hosts_are_refused() {
        for host in [
            "http://10.0.0.1:8000",
            "http://192.168.1.10",
            "http://0.0.0.0:8000",
            "http://128.0.0.1",
            "http://example.com",
            "http://localhost.example.com",
            "http://[::ffff:127.0.0.1]",
            "http://[::2]",
        ] {
            assert_eq!(is_loopback(host), Ok(false), "{host}");
        }
    }

    #[test]
    fn unparsable_hosts_are_errors() {
        for host in [
            "127.0.0.1:8000",
            "localhost:8000",
            "",
            "ftp://127.0.0.1",
            "file:///tmp",
        ] {
            assert!(is_loopback(host).is_err(), "{host}");
        }
    }
}
