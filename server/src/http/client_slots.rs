//! The per-client connection cap (`MAX_CONNECTIONS_PER_CLIENT`): how many of the
//! `MAX_CONNECTIONS` slots one client address may hold at once, so that one host — a
//! client that opens connections and never reads, or one that reads a trickle to beat the
//! write timeout — cannot take the whole server.
//!
//! A client is the TCP peer's address, never an `X-Forwarded-For` or `Forwarded` header:
//! the cap is decided at accept, before any request is read, and headers are the client's
//! word anyway. An IPv6 peer counts by its first `RATE_LIMIT_IPV6_PREFIX` bits, as the
//! per-IP rate limits do (`limits::client_network`): an IPv6 subscriber has a /64 at least
//! and could otherwise open each connection from a fresh address.
//!
//! Behind a proxy every client shares the proxy's address, so peers in `TRUSTED_PROXIES`
//! are exempt (only the global limit holds them); a deployment behind a proxy that is not
//! listed there should raise the cap or turn it off (`0`).
//!
//! The counts live in one map under a mutex, taken once when a connection is accepted and
//! once when it ends, never per request; an address's entry goes when its last connection
//! does, so the map is no bigger than the connections open.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};

use crate::config::{Cidr, Config};
use crate::limits::client_network;

/// The connections each client holds, against the cap.
pub struct ClientSlots {
    /// 0: no cap.
    cap: usize,
    v6_prefix: u8,
    exempt: Vec<Cidr>,
    held: Mutex<HashMap<IpAddr, usize>>,
}

/// One connection counted against its client; it stops counting when dropped.
pub struct ClientSlot {
    slots: Arc<ClientSlots>,
    /// `None`: not counted (no cap, or a trusted proxy).
    client: Option<IpAddr>,
}

impl ClientSlots {
    pub fn new(config: &Config) -> Arc<ClientSlots> {
        Arc::new(ClientSlots {
            cap: config.max_connections_per_client,
            v6_prefix: config.rate_limits.ipv6_prefix,
            exempt: config.trusted_proxies.clone(),
            held: Mutex::new(HashMap::new()),
        })
    }

    /// A slot for one more connection from `peer`, or `None` if it already holds the cap.
    pub fn try_acquire(self: &Arc<Self>, peer: IpAddr) -> Option<ClientSlot> {
        let uncounted = || ClientSlot {
            slots: Arc::clone(self),
            client: None,
        };
        if self.cap == 0 || self.exempt.iter().any(|block| block.contains(peer)) {
            return Some(uncounted());
        }
        let client = client_network(peer, self.v6_prefix);
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let count = held.entry(client).or_insert(0);
        if *count >= self.cap {
            return None;
        }
        *count += 1;
        Some(ClientSlot {
            slots: Arc::clone(self),
            client: Some(client),
        })
    }

    #[cfg(test)]
    fn held_by(&self, peer: &str) -> usize {
        let client = client_network(peer.parse().unwrap(), self.v6_prefix);
        let held = self.held.lock().unwrap();
        held.get(&client).copied().unwrap_or(0)
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let Some(client) = self.client else { return };
        let mut held = self
            .slots
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = held.get_mut(&client) {
            *count -= 1;
            if *count == 0 {
                held.remove(&client);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slots(vars: &[(&str, &str)]) -> Arc<ClientSlots> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        ClientSlots::new(&Config::from_lookup(|k| vars.get(k).cloned()).unwrap())
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_client_holds_at_most_the_cap_and_a_closed_connection_gives_its_slot_back() {
        let slots = slots(&[("MAX_CONNECTIONS_PER_CLIENT", "2")]);
        let a = slots.try_acquire(ip("203.0.113.7")).unwrap();
        let b = slots.try_acquire(ip("::ffff:203.0.113.7")).unwrap();
        assert!(slots.try_acquire(ip("203.0.113.7")).is_none());
        // Another address is not affected.
        let other = slots.try_acquire(ip("203.0.113.8")).unwrap();
        drop(a);
        let c = slots.try_acquire(ip("203.0.113.7")).unwrap();
        assert_eq!(slots.held_by("203.0.113.7"), 2);
        drop((b, c, other));
        assert!(
            slots.held.lock().unwrap().is_empty(),
            "entries outlive their connections"
        );
    }

    #[test]
    fn an_ipv6_client_counts_by_its_prefix() {
        let slots = slots(&[
            ("MAX_CONNECTIONS_PER_CLIENT", "1"),
            ("RATE_LIMIT_IPV6_PREFIX", "64"),
        ]);
        let _held = slots.try_acquire(ip("2001:db8:1:2::1")).unwrap();
        assert!(slots.try_acquire(ip("2001:db8:1:2:ffff::9")).is_none());
        assert!(slots.try_acquire(ip("2001:db8:1:3::1")).is_some());
    }

    #[test]
    fn trusted_proxies_and_a_cap_of_zero_are_not_counted() {
        let slots = slots(&[
            ("MAX_CONNECTIONS_PER_CLIENT", "1"),
            ("TRUSTED_PROXIES", "10.0.0.0/8"),
        ]);
        let proxied: Vec<_> = (0..5)
            .map(|_| slots.try_acquire(ip("10.1.2.3")).unwrap())
            .collect();
        assert_eq!(slots.held_by("10.1.2.3"), 0);
        drop(proxied);

        let off = self::slots(&[("MAX_CONNECTIONS_PER_CLIENT", "0")]);
        let all: Vec<_> = (0..5)
            .map(|_| off.try_acquire(ip("203.0.113.7")).unwrap())
            .collect();
        assert_eq!(all.len(), 5);
    }
}
