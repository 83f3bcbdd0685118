//! Authentication domain: what an email and a password are, how passwords are hashed, how
//! access tokens are made and checked, and who may call what.
//!
//! - [`guard`]: the one check of every protected operation: bearer token, live session,
//!   active user → [`guard::CurrentUser`]; or, where the route takes one, an API key with
//!   the scope it names → [`guard::KeyCaller`].
//! - [`api_keys`]: API keys' form, checksum, stored hash and scopes.
//! - [`login`]: the login decision — throttle, one hash verification on every path, rehash.
//! - [`credentials`]: `Email` and `Password` newtypes ("parse, don't validate").
//! - [`hasher`]: bcrypt on a dedicated, bounded thread pool, off the async workers.
//! - [`token`]: access tokens (JWTs) with the algorithm pinned by the key and every claim
//!   required.
//! - [`signing`]: the asymmetric signing keys (ES256, EdDSA), sealed at rest, and the set
//!   every instance signs and verifies with and publishes as its JWKS.
//! - [`refresh`]: single-use refresh tokens and their derived successors.
//! - [`device`]: device tokens, a successful login's proof for the login throttle.
//! - [`mfa`]: the second factor's codes, sealed secrets, QR code and recovery codes.
//! - [`passkeys`]: the WebAuthn relying party and its ceremonies' wire shapes.
//! - [`keys`]: the keys of the three above, each derived from the JWT secret with HKDF.

pub mod api_keys;
pub mod credentials;
pub mod device;
pub mod guard;
pub mod hasher;
pub mod keys;
pub mod login;
pub mod mfa;
pub mod passkeys;
pub mod refresh;
pub mod signing;
pub mod token;
