//! Abuse resistance on the credential endpoints: per-IP rate limits and the per-account
//! login throttle, decided here and counted in PostgreSQL (`db::limits`) so that all
//! instances share them.
//!
//! - Signup, login, refresh, password change and the email operations (forgot, reset,
//!   verify, resend) are each limited per client IP
//!   (`RATE_LIMIT_*_PER_IP` requests per `RATE_LIMIT_WINDOW_SECONDS`, fixed windows).
//! - Login and the current password of a password change are also throttled per account
//!   (the normalised email, known or not, so the throttle reveals nothing about which
//!   accounts exist), per client network: after `RATE_LIMIT_LOGIN_FAILURES_PER_ACCOUNT`
//!   failures from one network each further failure blocks that network for 1, 2, 4 …
//!   seconds up to `RATE_LIMIT_LOGIN_MAX_DELAY_SECONDS`; failures from all networks
//!   together are held to `RATE_LIMIT_LOGIN_ACCOUNT_CEILING` the same way. A client that
//!   shows the device token of an earlier successful login is held to its own allowance
//!   instead. So an attacker blocks only their own network, never the owner, and `Retry-After`
//!   says the block's length, not its end. A success clears what its attempt was charged.
//!
//! A client is its IPv4 address, or its IPv6 address's first `RATE_LIMIT_IPV6_PREFIX`
//! (64) bits: an IPv6 subscriber is given a whole /64 at least and could otherwise take a
//! fresh address for every request ([`client_key`]). Sessions and events still record the
//! full address.
//!
//! `introspect_token` is limited per calling API key instead ([`check_key`]): the services
//! that call it sit behind a few addresses, and each key is one caller.
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
    /// `forgot_password`.
    Forgot,
    /// `reset_password` and `check_password_reset`.
    Reset,
    /// `verify_email`.
    Verify,
    /// `resend_verification`.
    Resend,
    /// `request_email_change`: held to `RATE_LIMIT_PASSWORD_CHANGE_PER_IP`, since it
    /// checks the password too; counted apart.
    EmailChange,
    /// `confirm_email_change` and `cancel_email_change`: held to
    /// `RATE_LIMIT_VERIFY_PER_IP`, since they take an emailed token; counted apart.
    EmailChangeToken,
    /// The second-factor operations that take a password or a code (enrol, confirm,
    /// verify, remove): held to `RATE_LIMIT_PASSWORD_CHANGE_PER_IP`; counted apart. The
    /// session's and the account's attempt counts (`db::mfa`) are the finer limits.
    Mfa,
    /// A passkey sign-in's options (`start_passkey_authentication`, public): held to
    /// `RATE_LIMIT_LOGIN_PER_IP`, since it begins a login; counted apart.
    PasskeySignIn,
    /// `create_api_key`: held to `RATE_LIMIT_PASSWORD_CHANGE_PER_IP`, since it may check
    /// the password too; counted apart.
    ApiKeyCreate,
    /// `introspect_token`, per calling key (`RATE_LIMIT_INTROSPECT_PER_KEY`), through
    /// [`check_key`].
    Introspect,
}

impl Action {
    fn name(self) -> &'static str {
        match self {
            Action::Signup => "signup",
            Action::Login => "login",
            Action::Refresh => "refresh",
            Action::PasswordChange => "password_change",
            Action::Forgot => "forgot",
            Action::Reset => "reset",
            Action::Verify => "verify",
            Action::Resend => "resend",
            Action::EmailChange => "email_change",
            Action::EmailChangeToken => "email_change_token",
            Action::Mfa => "mfa",
            Action::PasskeySignIn => "passkey_sign_in",
            Action::ApiKeyCreate => "api_key_create",
            Action::Introspect => "introspect",
        }
    }

    /// Requests allowed per window: per client IP, or for [`Action::Introspect`] per key.
    fn allowance(self, state: &AppState) -> u32 {
        let limits = &state.config.rate_limits;
        match self {
            Action::Signup => limits.signup_per_ip,
            Action::Login => limits.login_per_ip,
            Action::Refresh => limits.refresh_per_ip,
            Action::PasswordChange => limits.password_change_per_ip,
            Action::Forgot => limits.forgot_per_ip,
            Action::Reset => limits.reset_per_ip,
            Action::Verify => limits.verify_per_ip,
            Action::Resend => limits.resend_per_ip,
            Action::EmailChange => limits.password_change_per_ip,
            Action::EmailChangeToken => limits.verify_per_ip,
            Action::Mfa => limits.password_change_per_ip,
            Action::PasskeySignIn => limits.login_per_ip,
            Action::ApiKeyCreate => limits.password_change_per_ip,
            Action::Introspect => limits.introspect_per_key,
        }
    }
}

/// Counts this request against its per-IP limit; [`ApiError::TooManyRequests`] when over.
/// The first refusal of each window is recorded as a `rate_limited` event (for the account
/// `user_id` or `account` names, if any), so a flood of refused requests cannot flood the
/// event log.
pub async fn check(
    state: &AppState,
    action: Action,
    call: &Call,
    account: Option<&Email>,
    user_id: Option<Uuid>,
) -> Result<(), ApiError> {
    let per_ip = action.allowance(state);
    if per_ip == 0 {
        return Ok(());
    }
    let ip = &client_key(call.client_ip, state.config.rate_limits.ipv6_prefix);
    let hit = db::limits::hit(
        &state.db,
        action.name(),
        ip,
        state.config.rate_limits.window,
    )
    .await?;
    if hit.count <= i64::from(per_ip) {
        return Ok(());
    }
    tracing::info!(action = action.name(), %ip, count = hit.count, "rate limited by IP");
    let first = hit.count == i64::from(per_ip) + 1;
    refuse(
        state,
        call,
        action.name(),
        whole_seconds(hit.window_left),
        first,
        user_id,
        account,
    )
    .await
}

/// Counts this request against its per-key limit (the caller is the API key `key_id` of
/// `user_id`); [`ApiError::TooManyRequests`] when over, with one `rate_limited` event per
/// window, as [`check`].
pub async fn check_key(
    state: &AppState,
    action: Action,
    call: &Call,
    key_id: Uuid,
    user_id: Uuid,
) -> Result<(), ApiError> {
    let limit = action.allowance(state);
    if limit == 0 {
        return Ok(());
    }
    let key = format!("key:{key_id}");
    let hit = db::limits::hit(
        &state.db,
        action.name(),
        &key,
        state.config.rate_limits.window,
    )
    .await?;
    if hit.count <= i64::from(limit) {
        return Ok(());
    }
    tracing::info!(action = action.name(), %key_id, count = hit.count, "rate limited by API key");
    let first = hit.count == i64::from(limit) + 1;
    refuse(
        state,
        call,
        action.name(),
        whole_seconds(hit.window_left),
        first,
        Some(user_id),
        None,
    )
    .await
}

/// An attempt at an account's password (login, or the current password of a password
/// change) charged to the account's throttle before the password is verified; a success
/// hands it to [`refund`].
pub struct Attempt {
    account: String,
    keys: Vec<String>,
}

impl Attempt {
    /// The account and throttle keys to refund, for a refund made inside another
    /// transaction (`db::sessions::start`, which opens the session of a login).
    pub fn refund_args(&self) -> (&str, &[String]) {
        (&self.account, &self.keys)
    }
}

/// Charges one attempt at `account`'s password: against the client network's and the
/// account-wide allowance, or — with the `device_token` of an earlier successful login of
/// this account — the device's own. Decided and recorded in one statement, so concurrent
/// attempts cannot all pass a check made before any of them is counted. Refused:
/// [`ApiError::TooManyRequests`] with the block's length (not what is left of it) as
/// `Retry-After`, and one `rate_limited` event per block.
pub async fn charge(
    state: &AppState,
    call: &Call,
    account: &Email,
    device_token: Option<&str>,
    user_id: Option<Uuid>,
) -> Result<Option<Attempt>, ApiError> {
    let limits = &state.config.rate_limits;
    // An address no account can have (control characters, NUL) needs no protecting, and
    // PostgreSQL could not store it as a key anyway.
    if limits.login_failures_per_account == 0 || !account.could_exist() {
        return Ok(None);
    }
    let network = client_key(call.client_ip, limits.ipv6_prefix);
    let device_hash = device_token.map(|t| state.devices.hash(t));
    let throttle = db::limits::Throttle {
        account: account.as_str(),
        network: &network,
        device_hash: device_hash.as_deref(),
        free: limits.login_failures_per_account,
        // A ceiling below the per-network allowance would make that allowance a lie.
        ceiling: match limits.login_account_ceiling {
            0 => 0,
            n => n.max(limits.login_failures_per_account),
        },
        max_delay: limits.login_max_delay,
    };
    match db::limits::charge(&state.db, &throttle).await? {
        db::limits::Charge::Charged(keys) => Ok(Some(Attempt {
            account: account.as_str().to_owned(),
            keys,
        })),
        db::limits::Charge::Blocked {
            block_seconds,
            first,
        } => {
            tracing::info!(%network, "throttled for the account");
            refuse(
                state,
                call,
                "login_account",
                whole_seconds(block_seconds),
                first,
                user_id,
                Some(account),
            )
            .await
        }
    }
}

/// The attempt succeeded: its charge, and the failures before it on the same rows, go.
pub async fn refund(state: &AppState, attempt: Option<Attempt>) -> Result<(), ApiError> {
    match attempt {
        Some(a) => db::limits::refund(&state.db, &a.account, &a.keys).await,
        None => Ok(()),
    }
}

/// The 429, after the `rate_limited` event when this is the first refusal of its window or
/// block.
async fn refuse<T>(
    state: &AppState,
    call: &Call,
    reason: &'static str,
    retry_after: u64,
    first: bool,
    user_id: Option<Uuid>,
    account: Option<&Email>,
) -> Result<T, ApiError> {
    if first {
        db::events::record(
            &state.db,
            call,
            "rate_limited",
            Some(reason),
            user_id,
            account.filter(|e| e.could_exist()).map(Email::as_str),
        )
        .await?;
    }
    Err(ApiError::TooManyRequests {
        retry_after,
        reason,
    })
}

/// The key one client's requests are counted under: an IPv4 address whole (an IPv4 address
/// is scarce, and a /24 is routinely shared by unrelated customers of one provider), an
/// IPv6 address cut to its first `v6_prefix` bits (`2001:db8:1:2::/64`).
pub fn client_key(ip: IpAddr, v6_prefix: u8) -> String {
    match client_network(ip, v6_prefix) {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("{v6}/{v6_prefix}"),
    }
}

/// [`client_key`] as an address, for counting in memory: an IPv4 address whole, an IPv6
/// address with all but its first `v6_prefix` bits cleared.
pub fn client_network(ip: IpAddr, v6_prefix: u8) -> IpAddr {
    match crate::config::canonical(ip) {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => {
            let mask = u128::MAX
                .checked_shl(128 - u32::from(v6_prefix.min(128)))
                .unwrap_or(0);
            IpAddr::V6(Ipv6Addr::from(u128::from(v6) & mask))
        }
    }
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
