//! Authentication domain: what an email and a password are, how passwords are hashed, how
//! access tokens are made and checked. Nothing here knows about HTTP or SQL.
//!
//! - [`credentials`]: `Email` and `Password` newtypes ("parse, don't validate").
//! - [`hasher`]: bcrypt on a dedicated, bounded thread pool, off the async workers.
//! - [`token`]: HS256 JWTs with the algorithm pinned and every claim required.
//! - [`refresh`]: single-use refresh tokens and their derived successors.

pub mod credentials;
pub mod hasher;
pub mod refresh;
pub mod token;
