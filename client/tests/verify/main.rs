//! The `verify` feature's tests, one binary (`cargo test -p jobpath-client --features
//! verify`): tokens are signed with keys made in the test and checked against a local
//! server publishing their JWKS, so no auth server or database is needed.

mod discovery;
mod introspect;
mod refresh;
mod support;
mod tokens;
