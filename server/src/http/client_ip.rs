//! Which address a request comes from, for rate limits, sessions and the event log.
//!
//! The socket peer, unless the peer is a trusted proxy (`TRUSTED_PROXIES`): then the
//! right-most address in the one header those proxies write (`TRUSTED_PROXY_HEADER`:
//! `X-Forwarded-For` or `Forwarded: for=`) that is not itself a trusted proxy. Only the
//! right-hand end of that header is trustworthy: each proxy appends the address it saw, and
//! everything to the left of the last trusted hop was written by the client and can say
//! anything. The other header is never read, not even as a fallback: the proxy does not
//! touch it, so all of it is the client's. With no trusted proxies (the default) both are
//! ignored, so a client cannot escape its per-IP limit by sending them.

use std::net::IpAddr;

use http::HeaderMap;

use crate::config::{Cidr, ProxyHeader, canonical};

pub fn client_ip(
    peer: IpAddr,
    headers: &HeaderMap,
    trusted: &[Cidr],
    header: ProxyHeader,
) -> IpAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|block| block.contains(ip));
    let mut current = canonical(peer);
    if !is_trusted(current) {
        return current;
    }
    let hops = match header {
        ProxyHeader::XForwardedFor => x_forwarded_for(headers),
        ProxyHeader::Forwarded => forwarded(headers),
    };
    for hop in hops.iter().rev() {
        match hop {
            // A hop a proxy could not name (`unknown`, a garbled value): nothing to its left
            // can be believed, so the last address we could is the answer.
            None => return current,
            Some(ip) => {
                current = canonical(*ip);
                if !is_trusted(current) {
                    return current;
                }
            }
        }
    }
    current
}

/// The addresses of `X-Forwarded-For` (all its lines, in order); `None` for an entry that
/// is not an address.
fn x_forwarded_for(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    headers
        .get_all("x-forwarded-for")
        .iter()
        .flat_map(|v| v.to_str().ok().unwrap_or("?").split(','))
        .map(|s| parse_node(s.trim()))
        .collect()
}

/// The addresses of `Forwarded`'s `for=` parameters (all its lines, in order); `None` for
/// an entry that is not an address.
fn forwarded(headers: &HeaderMap) -> Vec<Option<IpAddr>> {
    headers
        .get_all(http::header::FORWARDED)
        .iter()
        .flat_map(|v| v.to_str().ok().unwrap_or("for=?").split(','))
        .filter_map(|element| {
            element.split(';').find_map(|pair| {
                let (k, v) = pair.trim().split_once('=')?;
                k.trim()
                    .eq_ignore_ascii_case("for")
                    .then(|| parse_node(v.trim().trim_matches('"')))
            })
        })
        .collect()
}

/// `203.0.113.7`, `203.0.113.7:4711`, `2001:db8::1` or `[2001:db8::1]:4711`.
fn parse_node(raw: &str) -> Option<IpAddr> {
    if let Ok(ip) = raw.parse() {
        return Some(ip);
    }
    if let Some(rest) = raw.strip_prefix('[') {
        return rest.split_once(']')?.0.parse().ok();
    }
    let (host, _port) = raw.rsplit_once(':')?;
    host.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    const XFF: ProxyHeader = ProxyHeader::XForwardedFor;
    const FORWARDED: ProxyHeader = ProxyHeader::Forwarded;

    fn blocks(list: &[&str]) -> Vec<Cidr> {
        list.iter().map(|b| b.parse().unwrap()).collect()
    }

    #[test]
    fn headers_from_an_untrusted_peer_are_ignored() {
        let h = headers(&[("x-forwarded-for", "1.2.3.4"), ("forwarded", "for=5.6.7.8")]);
        assert_eq!(client_ip(ip("9.9.9.9"), &h, &[], XFF), ip("9.9.9.9"));
        assert_eq!(
            client_ip(ip("9.9.9.9"), &h, &blocks(&["10.0.0.0/8"]), XFF),
            ip("9.9.9.9")
        );
    }

    #[test]
    fn the_right_most_untrusted_hop_behind_trusted_proxies_is_the_client() {
        let trusted = blocks(&["10.0.0.0/8"]);
        // The client forged the first entry; the proxy appended what it saw.
        let h = headers(&[("x-forwarded-for", "6.6.6.6, 203.0.113.7, 10.0.0.2")]);
        assert_eq!(
            client_ip(ip("10.0.0.1"), &h, &trusted, XFF),
            ip("203.0.113.7")
        );
        let h = headers(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-for", "203.0.113.7"),
        ]);
        assert_eq!(
            client_ip(ip("10.0.0.1"), &h, &trusted, XFF),
            ip("203.0.113.7")
        );
        let h = headers(&[(
            "forwarded",
            r#"for=6.6.6.6, for="[2001:db8::7]:4711";proto=https"#,
        )]);
        assert_eq!(
            client_ip(ip("10.0.0.1"), &h, &trusted, FORWARDED),
            ip("2001:db8::7")
        );
    }

    #[test]
    fn a_garbled_hop_stops_the_walk_at_the_last_known_address() {
        let trusted = blocks(&["10.0.0.0/8"]);
        let h = headers(&[("x-forwarded-for", "6.6.6.6, unknown, 10.0.0.3")]);
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &trusted, XFF), ip("10.0.0.3"));
        let none = HeaderMap::new();
        assert_eq!(
            client_ip(ip("10.0.0.1"), &none, &trusted, XFF),
            ip("10.0.0.1")
        );
    }

    #[test]
    fn only_the_configured_header_is_read_with_no_fallback_to_the_other() {
        let trusted = blocks(&["10.0.0.0/8"]);
        let both = headers(&[
            ("x-forwarded-for", "6.6.6.6"),
            ("forwarded", "for=203.0.113.7"),
        ]);
        assert_eq!(
            client_ip(ip("10.0.0.1"), &both, &trusted, FORWARDED),
            ip("203.0.113.7")
        );
        assert_eq!(
            client_ip(ip("10.0.0.1"), &both, &trusted, XFF),
            ip("6.6.6.6")
        );
        let other_only = headers(&[("forwarded", "for=6.6.6.6")]);
        assert_eq!(
            client_ip(ip("10.0.0.1"), &other_only, &trusted, XFF),
            ip("10.0.0.1")
        );
    }
}
