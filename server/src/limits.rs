//! Abuse resistance on the credential endpoints: per-IP rate limits and the per-account
//! login throttle, decided here and counted in PostgreSQL (`db::limits`) so that all
//! instances share them.
//!
//! - Signup, login, refresh and password change are each limited per client IP
//!   (`RATE_LIMIT_*_PER_IP` requests per `RATE_LIMIT_WINDOW_SECONDS`, fixed windows).
//! - Login is also throttled per account (the normalised email, known or not, so the
//!   throttle reveals nothing about which accounts exist): after
//!   `RATE_LIMIT_LOGIN_FAILURES_PER_ACCOUNT` failures each further failure blocks the
//!   account for 1, 2, 4 … seconds up to `RATE_LIMIT_LOGIN_MAX_DELAY_SECONDS`. A delay, not
//!   a lock: an attacker cannot keep the owner out for long, and the owner's successful
//!   login clears it.
//!
//! A client is its IPv4 address, or its IPv6 address's first `RATE_LIMIT_IPV6_PREFIX`
//! (64) bits: an IPv6 subscriber is given a whole /64 at least and could otherwise take a
//! fresh address for every request ([`client_key`]). Sessions and events still record the
//! full address.
//!
//! Over a limit is 429 `rate_limited` with `Retry-After`. Nothing here runs for other
//! routes: `/auth/me` costs no extra query.

use std::net::{IpAddr, Ipv6Addr};

use uuid::Uuid;

use crate::auth::credentials::Email;
use crate::call::Call;
use crate::db;
use crate::errors::ApiError;
use crate::state::AppState;

/// The kind of request a per-IP limit counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Signup,
    Login,
    Refresh,
    PasswordChange,
}

impl Action {
    fn name(self) -> &'static str {
        match self {
            Action::Signup => "signup",
            Action::Login => "login",
            Action::Refresh => "refresh",
            Action::PasswordChange => "password_change",
        }
    }

    fn per_ip(self, state: &AppState) -> u32 {
        let limits = &state.config.rate_limits;
        match self {
            Action::Signup => limits.signup_per_ip,
            Action::Login => limits.login_per_ip,
            Action::Refresh => limits.refresh_per_ip,
            Action::PasswordChange => limits.password_change_per_ip,
        }
    }
}

/// Counts this request against its per-IP limit (and, for login, checks the account's
/// throttle); [`ApiError::TooManyRequests`] when over. The refusal is recorded as a
/// `rate_limited` event (for the account `user_id` or `account` names, if any) — for the
/// per-IP limit only the first refusal of each window, so a flood of refused requests
/// cannot flood the event log.
pub async fn check(
    state: &AppState,
    action: Action,
    call: &Call,
    account: Option<&Email>,
    user_id: Option<Uuid>,
) -> Result<(), ApiError> {
    let refusal = over(state, action, call, account).await?;
    let Some(Refusal {
        reason,
        retry_after,
        first,
    }) = refusal
    else {
        return Ok(());
    };
    if !first {
        return Err(ApiError::TooManyRequests {
            retry_after,
            reason,
        });
    }
    db::events::record(
        &state.db,
        call,
        "rate_limited",
        Some(reason),
        user_id,
        account.filter(|e| e.could_exist()).map(Email::as_str),
    )
    .await?;
    Err(ApiError::TooManyRequests {
        retry_after,
        reason,
    })
}

/// Which limit refuses a request, for how long, and whether this is its first refusal.
struct Refusal {
    /// The event's reason: the action, or `login_account` for the account throttle.
    reason: &'static str,
    retry_after: u64,
    first: bool,
}

async fn over(
    state: &AppState,
    action: Action,
    call: &Call,
    account: Option<&Email>,
) -> Result<Option<Refusal>, ApiError> {
    let per_ip = action.per_ip(state);
    let account = account
        .filter(|e| state.config.rate_limits.login_failures_per_account > 0 && e.could_exist())
        .map(Email::as_str);
    if per_ip == 0 && account.is_none() {
        return Ok(None);
    }
    let ip = &client_key(call.client_ip, state.config.rate_limits.ipv6_prefix);
    let hit = db::limits::hit(
        &state.db,
        action.name(),
        ip,
        state.config.rate_limits.window,
        account,
    )
    .await?;
    if per_ip > 0 && hit.count > i64::from(per_ip) {
        tracing::info!(action = action.name(), %ip, count = hit.count, "rate limited by IP");
        return Ok(Some(Refusal {
            reason: action.name(),
            retry_after: whole_seconds(hit.window_left),
            first: hit.count == i64::from(per_ip) + 1,
        }));
    }
    if let Some(blocked_for) = hit.account_blocked_for {
        tracing::info!(action = action.name(), "login throttled for the account");
        // Attempts while blocked are few: each one also counts against its IP's limit.
        return Ok(Some(Refusal {
            reason: "login_account",
            retry_after: whole_seconds(blocked_for),
            first: true,
        }));
    }
    Ok(None)
}

/// The key one client's requests are counted under: an IPv4 address whole (an IPv4 address
/// is scarce, and a /24 is routinely shared by unrelated customers of one provider), an
/// IPv6 address cut to its first `v6_prefix` bits (`2001:db8:1:2::/64`).
pub fn client_key(ip: IpAddr, v6_prefix: u8) -> String {
    match crate::config::canonical(ip) {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let bits = u128::from(v6);
            let mask = u128::MAX
                .checked_shl(128 - u32::from(v6_prefix.min(128)))
                .unwrap_or(0);
            format!("{}/{}", Ipv6Addr::from(bits & mask), v6_prefix)
        }
    }
}

/// A failed login: one more strike against the account.
pub async fn login_failed(state: &AppState, account: &Email) -> Result<(), ApiError> {
    let limits = &state.config.rate_limits;
    // An address no account can have (control characters, NUL) needs no protecting, and
    // PostgreSQL could not store it as a key anyway.
    if limits.login_failures_per_account == 0 || !account.could_exist() {
        return Ok(());
    }
    db::limits::login_failed(
        &state.db,
        account.as_str(),
        limits.login_failures_per_account,
        limits.login_max_delay,
    )
    .await
}

/// A successful login clears the account's strikes.
pub async fn login_succeeded(state: &AppState, account: &Email) -> Result<(), ApiError> {
    if state.config.rate_limits.login_failures_per_account == 0 || !account.could_exist() {
        return Ok(());
    }
    db::limits::login_succeeded(&state.db, account.as_str()).await
}

/// `Retry-After` is whole seconds; rounding up never invites a retry that is refused again.
fn whole_seconds(secs: f64) -> u64 {
    if secs.is_finite() && secs > 0.0 {
        (secs.ceil() as u64).max(1)
    } else {
        1
    }
}

#[cfg(test)]
mod tests {
    use super::client_key;

    #[test]
    fn an_ipv6_client_is_its_prefix_and_an_ipv4_client_its_address() {
        let key = |ip: &str, prefix| client_key(ip.parse().unwrap(), prefix);
        assert_eq!(key("2001:db8:1:2:aaaa::1", 64), "2001:db8:1:2::/64");
        assert_eq!(key("2001:db8:1:2:bbbb::9", 64), "2001:db8:1:2::/64");
        assert_eq!(key("2001:db8:1:2:bbbb::9", 48), "2001:db8:1::/48");
        assert_eq!(key("2001:db8::9", 128), "2001:db8::9/128");
        assert_eq!(key("203.0.113.7", 64), "203.0.113.7");
        assert_eq!(key("::ffff:203.0.113.7", 64), "203.0.113.7");
    }
}
