//! What every request can reach: configuration, database pool, hashing pool, token and
//! email-secret keys, metrics, and the route table. Built once by [`crate::App::build`], shared behind an `Arc`.

use std::sync::{Arc, OnceLock};

use crate::auth::device::DeviceKeys;
use crate::auth::hasher::Hasher;
use crate::auth::refresh::RefreshKeys;
use crate::auth::token::TokenKeys;
use crate::config::Config;
use crate::db::Database;
use crate::db::owners::OwnerLookups;
use crate::http::router::{Router, Target};
use crate::mail::secrets::SecretKeys;
use crate::metrics::Metrics;

pub struct AppState {
    pub config: Config,
    /// The pool every request's SQL runs on (`db::Database::run`).
    pub db: Database,
    /// The token-owner read of every bearer-authenticated request, batched across
    /// requests on connections they share.
    pub owners: OwnerLookups,
    pub hasher: Hasher,
    pub tokens: TokenKeys,
    /// Opens the signing keys' private halves; `None` for an HS256 server, which only
    /// verifies and publishes them (`keyring`).
    pub sealer: Option<crate::auth::signing::Sealer>,
    pub refresh: RefreshKeys,
    /// The key of device tokens' stored hashes.
    pub devices: DeviceKeys,
    /// The key of API keys' stored hashes.
    pub api_keys: crate::auth::api_keys::ApiKeyKeys,
    /// The keys of emailed tokens and codes.
    pub email_secrets: SecretKeys,
    /// The keys of second factors (sealed TOTP secrets, recovery-code hashes) and the
    /// clock TOTP reads.
    pub mfa: crate::auth::mfa::MfaKeys,
    /// The passkeys' relying party (`WEBAUTHN_RP_*`).
    pub passkeys: crate::auth::passkeys::RelyingParty,
    pub metrics: Metrics,
    pub router: Router,
    /// Sees every response just before it is sent. Unset in production; the test suite uses
    /// it to check each response against the contract.
    pub observer: OnceLock<ResponseObserver>,
}

/// A response as sent: the operation or page it answered (if the path and method matched
/// one), the request method, and the full response.
pub struct Observed<'a> {
    pub target: Option<Target>,
    pub method: &'a http::Method,
    pub path: &'a str,
    pub response: &'a http::Response<bytes::Bytes>,
}

pub type ResponseObserver = Arc<dyn Fn(&Observed<'_>) + Send + Sync>;
