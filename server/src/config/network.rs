//! Who may talk to the server: browser origins for CORS ([`CorsOrigins`], `CORS_ORIGINS`)
//! and the proxies whose forwarding headers are believed ([`Cidr`], `TRUSTED_PROXIES`).

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use anyhow::{anyhow, bail};

/// Which browser origins may call the API (`CORS_ORIGINS`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CorsOrigins {
    /// `*`: any origin, for bearer tokens only: never with credentials, so the refresh
    /// cookie of cookie mode works only from the API's own origin then.
    Any,
    /// An explicit list; empty means CORS is off.
    List(Vec<String>),
}

/// As in `CORS_ORIGINS`, for the start-up line and `check-config`.
impl fmt::Display for CorsOrigins {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CorsOrigins::Any => f.write_str("*"),
            CorsOrigins::List(list) if list.is_empty() => f.write_str("<off>"),
            CorsOrigins::List(list) => f.write_str(&list.join(",")),
        }
    }
}

impl CorsOrigins {
    pub fn allows(&self, origin: &str) -> bool {
        match self {
            CorsOrigins::Any => true,
            CorsOrigins::List(list) => list.iter().any(|o| o == origin),
        }
    }

    /// Parses `CORS_ORIGINS`: unset is off, `*` is any, else a comma-separated list of
    /// `http(s)://` origins (a trailing slash is dropped).
    pub fn parse(raw: Option<String>) -> anyhow::Result<CorsOrigins> {
        let Some(raw) = raw else {
            return Ok(CorsOrigins::List(Vec::new()));
        };
        if raw == "*" {
            return Ok(CorsOrigins::Any);
        }
        let mut origins = Vec::new();
        for origin in raw.split(',').map(str::trim).filter(|o| !o.is_empty()) {
            let origin = origin.trim_end_matches('/');
            let valid = (origin.starts_with("http://") || origin.starts_with("https://"))
                && !origin.contains(char::is_whitespace);
            if !valid {
                bail!("CORS_ORIGINS: '{origin}' is not an origin like https://app.example.com");
            }
            origins.push(origin.to_owned());
        }
        Ok(CorsOrigins::List(origins))
    }
}

/// An address block such as `10.0.0.0/8` or `::1/128`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for Cidr {
    type Err = anyhow::Error;
    fn from_str(raw: &str) -> anyhow::Result<Cidr> {
        let (addr, prefix) = match raw.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (raw, None),
        };
        let addr = canonical(
            addr.parse::<IpAddr>()
                .map_err(|_| anyhow!("'{raw}' is not an IP address or CIDR block"))?,
        );
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| anyhow!("'{raw}': the prefix length must be 0 to {max}"))?,
        };
        Ok(Cidr { addr, prefix })
    }
}

/// An IPv4-mapped IPv6 address (`::ffff:10.0.0.1`, what a dual-stack socket reports) as the
/// IPv4 address it is, so that one block matches both spellings.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// The header a trusted proxy appends the client's address to (`TRUSTED_PROXY_HEADER`).
/// Exactly one is read: were both, a client could send the one its proxy does not write,
/// already filled in, and choose its own address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyHeader {
    /// `X-Forwarded-For` (the default: what nginx, HAProxy and the cloud balancers write).
    XForwardedFor,
    /// `Forwarded: for=` (RFC 7239).
    Forwarded,
}

impl ProxyHeader {
    /// As in `TRUSTED_PROXY_HEADER`.
    pub fn name(self) -> &'static str {
        match self {
            ProxyHeader::XForwardedFor => "x-forwarded-for",
            ProxyHeader::Forwarded => "forwarded",
        }
    }

    pub(super) fn parse(raw: &str) -> anyhow::Result<ProxyHeader> {
        match raw.to_ascii_lowercase().as_str() {
            "x-forwarded-for" => Ok(ProxyHeader::XForwardedFor),
            "forwarded" => Ok(ProxyHeader::Forwarded),
            _ => anyhow::bail!("must be 'x-forwarded-for' or 'forwarded'"),
        }
    }
}
