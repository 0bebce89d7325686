//! Who a request is charged to: an API key or bearer identity when one is configured, else the
//! client address — the peer, or the first untrusted hop of `Forwarded` / `X-Forwarded-For`
//! when the peer is a proxy named in `TRUST_PROXY`.
//!
//! The forwarding headers are read from the right: each trusted proxy appends the address it
//! saw, so the rightmost address not of a trusted proxy is the one a client cannot forge.

use std::fmt::Write as _;
use std::net::{IpAddr, Ipv6Addr};

use http::{HeaderMap, HeaderName};
use ipnet::IpNet;
use sha2::{Digest, Sha256};

/// A rate-limited party. IPv6 clients are grouped by /64, the block one subscriber holds.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ClientId {
    Ip(IpAddr),
    /// The first 16 bytes of the SHA-256 of the credential: keys are never stored in clear.
    Key([u8; 16]),
}

impl ClientId {
    fn from_ip(ip: IpAddr) -> ClientId {
        match ip {
            IpAddr::V6(v6) => {
                if let Some(v4) = v6.to_ipv4_mapped() {
                    return ClientId::Ip(IpAddr::V4(v4));
                }
                let masked = u128::from(v6) & !((1u128 << 64) - 1);
                ClientId::Ip(IpAddr::V6(Ipv6Addr::from(masked)))
            }
            v4 @ IpAddr::V4(_) => ClientId::Ip(v4),
        }
    }

    /// The part of the Redis key naming this client.
    #[must_use]
    pub fn key_part(&self) -> String {
        match self {
            ClientId::Ip(ip) => format!("ip:{ip}"),
            ClientId::Key(hash) => {
                let mut text = String::with_capacity(36);
                text.push_str("key:");
                for byte in hash {
                    let _ = write!(text, "{byte:02x}");
                }
                text
            }
        }
    }
}

/// Resolves the client of a request.
#[derive(Debug, Clone, Default)]
pub struct ClientResolver {
    /// Proxies whose forwarding headers are believed (`TRUST_PROXY`).
    pub trusted_proxies: Vec<IpNet>,
    /// A header carrying an API key or `Authorization: Bearer …` identity (`RATE_LIMIT_KEY_HEADER`).
    pub key_header: Option<HeaderName>,
}

impl ClientResolver {
    #[must_use]
    pub fn resolve(&self, peer: IpAddr, headers: &HeaderMap) -> ClientId {
        if let Some(id) = self.key_identity(headers) {
            return id;
        }
        if !self.is_trusted(peer) {
            return ClientId::from_ip(peer);
        }
        ClientId::from_ip(self.forwarded_client(headers).unwrap_or(peer))
    }

    fn key_identity(&self, headers: &HeaderMap) -> Option<ClientId> {
        let value = headers.get(self.key_header.as_ref()?)?.as_bytes();
        let credential = strip_bearer(value);
        if credential.is_empty() {
            return None;
        }
        let digest = Sha256::digest(credential);
        let mut hash = [0u8; 16];
        hash.copy_from_slice(&digest[..16]);
        Some(ClientId::Key(hash))
    }

    fn is_trusted(&self, ip: IpAddr) -> bool {
        self.trusted_proxies.iter().any(|net| net.contains(&ip))
    }

    /// The rightmost hop that is not a trusted proxy; the leftmost when all of them are.
    fn forwarded_client(&self, headers: &HeaderMap) -> Option<IpAddr> {
        let hops = forwarded_hops(headers);
        let mut leftmost = None;
        for hop in hops.iter().rev() {
            let ip = (*hop)?;
            if !self.is_trusted(ip) {
                return Some(ip);
            }
            leftmost = Some(ip);
        }
        leftmost
    }
}

fn strip_bearer(value: &[u8]) -> &[u8] {
    let trimmed = value.trim_ascii();
    match trimmed.get(..7) {
        Some(prefix) if prefix.eq_ignore_ascii_case(b"bearer ") => trimmed[7..].trim_ascii(),
        _ => trimmed,
    }
}

/// Every hop of `Forwarded` (RFC 7239) if present, else of `X-Forwarded-For`, left to right;
/// `None` for a hop that is not an address (`unknown`, an obfuscated name, garbage).
fn forwarded_hops(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    let forwarded: Vec<Option<IpAddr>> = headers
        .get_all(http::header::FORWARDED)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(|element| {
            element
                .split(';')
                .filter_map(|pair| pair.trim().split_once('='))
                .find(|(name, _)| name.eq_ignore_ascii_case("for"))
                .and_then(|(_, node)| parse_node(node))
        })
        .collect();
    if !forwarded.is_empty() {
        return forwarded;
    }
    headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(parse_node)
        .collect()
}

/// `1.2.3.4`, `1.2.3.4:80`, `"[2001:db8::1]:4711"`, `2001:db8::1`.
fn parse_node(node: &str) -> Option<IpAddr> {
    let node = node.trim().trim_matches('"');
    if let Ok(ip) = node.parse() {
        return Some(ip);
    }
    if let Some(rest) = node.strip_prefix('[') {
        return rest.split(']').next()?.parse().ok();
    }
    let (host, _port) = node.rsplit_once(':')?;
    host.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        map
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    fn trusting(nets: &[&str]) -> ClientResolver {
        ClientResolver {
            trusted_proxies: nets.iter().map(|n| n.parse().unwrap()).collect(),
            key_header: None,
        }
    }

    #[test]
    fn forwarding_headers_are_ignored_unless_the_peer_is_trusted() {
        let forged = headers(&[("x-forwarded-for", "9.9.9.9")]);
        let client = trusting(&[]).resolve(ip("203.0.113.7"), &forged);
        assert_eq!(client, ClientId::Ip(ip("203.0.113.7")));
    }

    #[test]
    fn the_rightmost_untrusted_hop_is_the_client() {
        let resolver = trusting(&["10.0.0.0/8"]);
        let chain = headers(&[("x-forwarded-for", "6.6.6.6, 198.51.100.4, 10.0.0.2")]);
        let client = resolver.resolve(ip("10.0.0.1"), &chain);
        assert_eq!(client, ClientId::Ip(ip("198.51.100.4")));
    }

    #[test]
    fn forwarded_wins_over_x_forwarded_for_and_handles_ports_and_brackets() {
        let resolver = trusting(&["10.0.0.1/32"]);
        let both = headers(&[
            ("forwarded", "for=\"[2001:db8:1:2::9]:4711\";proto=https"),
            ("x-forwarded-for", "198.51.100.4"),
        ]);
        let client = resolver.resolve(ip("10.0.0.1"), &both);
        assert_eq!(client, ClientId::Ip(ip("2001:db8:1:2::")));
        let with_port = headers(&[("forwarded", "for=192.0.2.60:8080, for=10.0.0.1")]);
        assert_eq!(
            resolver.resolve(ip("10.0.0.1"), &with_port),
            ClientId::Ip(ip("192.0.2.60"))
        );
    }

    #[test]
    fn ipv6_clients_are_grouped_by_64_and_mapped_v4_is_v4() {
        let resolver = trusting(&[]);
        let a = resolver.resolve(ip("2001:db8::1"), &HeaderMap::new());
        let b = resolver.resolve(ip("2001:db8::ffff:1"), &HeaderMap::new());
        assert_eq!(a, b);
        let mapped = resolver.resolve(ip("::ffff:192.0.2.1"), &HeaderMap::new());
        assert_eq!(mapped, ClientId::Ip(ip("192.0.2.1")));
    }

    #[test]
    fn a_garbage_hop_falls_back_to_the_peer() {
        let resolver = trusting(&["10.0.0.0/8"]);
        let garbage = headers(&[("x-forwarded-for", "1.2.3.4, not-an-ip")]);
        assert_eq!(
            resolver.resolve(ip("10.0.0.1"), &garbage),
            ClientId::Ip(ip("10.0.0.1"))
        );
    }

    #[test]
    fn a_configured_key_header_takes_precedence_and_is_hashed() {
        let resolver = ClientResolver {
            trusted_proxies: Vec::new(),
            key_header: Some(HeaderName::from_static("authorization")),
        };
        let a = resolver.resolve(ip("1.1.1.1"), &headers(&[("authorization", "Bearer abc")]));
        let b = resolver.resolve(ip("2.2.2.2"), &headers(&[("authorization", "bearer  abc")]));
        assert_eq!(a, b);
        assert!(matches!(a, ClientId::Key(_)));
        assert!(!a.key_part().contains("abc"));
        let none = resolver.resolve(ip("1.1.1.1"), &HeaderMap::new());
        assert_eq!(none, ClientId::Ip(ip("1.1.1.1")));
    }
}
