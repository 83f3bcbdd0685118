//! End-to-end tests: the real server on a real port, a real PostgreSQL database per test,
//! driven through the generated client (and raw HTTP where the typed client cannot send
//! the input). One test binary, to link once.

mod browser;
mod capture;
mod faults;
mod helpers;
mod spec_check;

mod account_pages;
mod admin;
mod api_keys;
mod connections;
mod contract;
mod cookie_mode;
mod credentials;
mod deletion;
mod docs;
mod email;
mod email_change;
mod events;
mod growth;
mod guard;
mod hashes;
mod hostile;
mod http;
mod instances;
mod introspection;
mod leaks;
mod limits;
mod login;
mod logout;
mod me;
mod metrics;
mod mfa;
mod mfa_attacks;
mod origin;
mod passkey_page;
mod passkeys;
mod policy;
mod pooler;
mod reauth;
mod reliability;
mod sessions;
mod signing_keys;
mod signup;
mod skips;
mod spa;
mod tls;
mod typescript;
mod verifiers;
