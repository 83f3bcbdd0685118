//! Password hashing on a dedicated, bounded pool of OS threads.
//!
//! bcrypt at cost 12 takes ~0.3 s of one core. Run on tokio's workers it would stall every
//! other request on that worker; run on `spawn_blocking` it would be unbounded (hundreds of
//! threads fighting for two cores). So a fixed set of `HASH_THREADS` threads takes jobs from
//! a bounded queue; a caller that cannot enqueue within the pool wait timeout gets a 503.
//!
//! The pool reports its queue depth (jobs not yet taken by a thread, including callers still
//! waiting for a queue slot) and the time of each bcrypt call through [`HashMetrics`].
//!
//! The hashing threads run at `SCHED_IDLE`, the lowest scheduling class: with as many
//! hashing threads as cores, a hash at the same priority as the async workers holds a core
//! for its whole time slice while requests that need only microseconds wait behind it
//! (`/auth/me` p99 went from a few ms to ~46 ms while logins ran, see `bench/RESULTS.md`).
//! At `SCHED_IDLE` a request-serving thread of this process that wakes up takes the core at
//! once, and hashing still gets every cycle nothing else wants. (With the kernel's
//! autogroup scheduling this ranks threads within the server's own group only; the
//! PostgreSQL backends are scheduled as other groups.)
//!
//! bcrypt reads only the first 72 bytes of its input. Rather than truncating (two passwords
//! sharing a 72-byte prefix would both log in) or refusing long passphrases, the password is
//! first reduced to 32 bytes and base64-encoded: 44 ASCII bytes, no NUL, all of the
//! password's entropy.
//!
//! Stored hashes carry a version ([`PREFIX_V2`]):
//!
//! - `v2$<bcrypt>`: bcrypt of HMAC-SHA256 under the pepper (`PASSWORD_PEPPER`, a secret
//!   kept outside the database) of the NFKC-normalised password. Without the pepper a
//!   leaked table cannot be tested at all, neither by guessing nor against unsalted
//!   SHA-256 dumps of other breaches ("hash shucking").
//! - a bare `$2b$…` (version 1, before the pepper): bcrypt of SHA-256 of the password as
//!   typed. Still verified; a successful login re-hashes it as version 2
//!   ([`needs_rehash`](Hasher::needs_rehash), `auth::login`).
//! - `v1p$<bcrypt setting>$<tag>` (version 1, wrapped): what every server makes of a
//!   version-1 hash without waiting for its owner ([`Hasher::wrap_v1`], run by
//!   `maintenance`): the bcrypt hash itself is replaced by an HMAC of it under the pepper,
//!   keeping only its cost and salt. Verifying recomputes the version-1 hash from the
//!   password and that salt and compares the HMAC, so a leaked table holds no hash that
//!   can be tested without the pepper, dormant accounts included. It too is re-hashed as
//!   version 2 at the next login.
//!
//! Changing the pepper makes every version-2 hash unverifiable: it is not derived from the
//! JWT secret, which can then be rotated freely.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow};
use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use tokio::sync::{mpsc, oneshot};

use super::credentials::Password;
use crate::errors::ApiError;
use crate::metrics::HashMetrics;

/// Jobs that may wait per hashing thread before callers are made to wait for a queue slot.
const QUEUE_PER_THREAD: usize = 16;

/// The prefix of a version-2 hash (see the module documentation).
pub const PREFIX_V2: &str = "v2$";
/// The prefix of a wrapped version-1 hash.
pub const PREFIX_V1_WRAPPED: &str = "v1p$";
/// `$2b$NN$` and the 22-character salt: the part of a bcrypt hash a wrapped one keeps.
const BCRYPT_SETTING_LEN: usize = 29;

/// The pepper, ready to key an HMAC: each use clones this state instead of re-deriving the
/// key's pads.
#[derive(Clone)]
pub struct Pepper(Hmac<Sha256>);

impl Pepper {
    pub fn new(secret: &[u8]) -> Pepper {
        Pepper(Hmac::new_from_slice(secret).expect("HMAC takes any key length"))
    }

    /// What identifies this pepper without revealing it (`sql/0009_key_fingerprints.sql`).
    pub fn fingerprint(&self) -> Vec<u8> {
        let mut mac = self.0.clone();
        mac.update(b"jobpath pepper fingerprint");
        mac.finalize().into_bytes().to_vec()
    }

    /// The tag that stands for the version-1 hash `v1` in a wrapped one. The label keeps
    /// it apart from version 2's pre-hashes, which are of passwords.
    fn v1_tag(&self, v1: &str) -> Hmac<Sha256> {
        let mut mac = self.0.clone();
        mac.update(b"jobpath wrapped v1 hash\0");
        mac.update(v1.as_bytes());
        mac
    }
}

enum Job {
    Hash {
        password: Password,
        reply: oneshot::Sender<anyhow::Result<String>>,
    },
    Verify {
        password: Password,
        hash: Arc<str>,
        reply: oneshot::Sender<anyhow::Result<bool>>,
    },
}

/// Handle to the hashing pool; cheap to clone. The threads exit when every handle is gone.
#[derive(Clone)]
pub struct Hasher {
    queue: mpsc::Sender<Job>,
    cost: u32,
    enqueue_timeout: Duration,
    metrics: HashMetrics,
    /// For wrapping version-1 hashes, which takes no bcrypt and so no hashing thread.
    pepper: Pepper,
    /// A hash of a random password at the configured cost, verified against when the email
    /// is unknown so that such a login costs the same time as a wrong password.
    dummy: Arc<tokio::sync::OnceCell<Arc<str>>>,
}

impl Hasher {
    pub fn start(
        threads: usize,
        cost: u32,
        pepper: Pepper,
        enqueue_timeout: Duration,
        metrics: HashMetrics,
    ) -> anyhow::Result<Hasher> {
        let (tx, rx) = mpsc::channel(threads * QUEUE_PER_THREAD);
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads {
            let rx = Arc::clone(&rx);
            let metrics = metrics.clone();
            let pepper = pepper.clone();
            std::thread::Builder::new()
                .name(format!("jobpath-hash-{i}"))
                .spawn(move || {
                    yield_to_request_serving();
                    worker(&rx, cost, &pepper, &metrics);
                })
                .context("spawning a password-hashing thread")?;
        }
        Ok(Hasher {
            queue: tx,
            cost,
            enqueue_timeout,
            metrics,
            pepper,
            dummy: Arc::default(),
        })
    }

    /// The wrapped form of a version-1 hash (see the module documentation), or `None` if
    /// `stored` is not one (only `$2b$` hashes were ever made).
    pub fn wrap_v1(&self, stored: &str) -> Option<String> {
        let is_v1 = stored.len() == 60
            && stored.starts_with("$2b$")
            && stored.parse::<bcrypt::HashParts>().is_ok();
        if !is_v1 {
            return None;
        }
        let tag = self.pepper.v1_tag(stored).finalize().into_bytes();
        let tag = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(tag);
        Some(format!(
            "{PREFIX_V1_WRAPPED}{}${tag}",
            &stored[..BCRYPT_SETTING_LEN]
        ))
    }

    pub fn cost(&self) -> u32 {
        self.cost
    }

    /// Whether `stored` should be replaced after a successful verification: it is of an
    /// older version, or made at another cost than the configured one.
    pub fn needs_rehash(&self, stored: &str) -> bool {
        match stored.strip_prefix(PREFIX_V2) {
            Some(bcrypt) => bcrypt_cost(bcrypt) != Some(self.cost),
            None => true,
        }
    }

    /// Hashes a new password for storage.
    pub async fn hash(&self, password: Password) -> Result<String, ApiError> {
        let (reply, rx) = oneshot::channel();
        self.submit(Job::Hash { password, reply }).await?;
        let hash = rx.await.map_err(|_| pool_gone())?;
        hash.map_err(ApiError::Internal)
    }

    /// Checks `password` against a stored hash.
    pub async fn verify(&self, password: Password, hash: Arc<str>) -> Result<bool, ApiError> {
        let (reply, rx) = oneshot::channel();
        self.submit(Job::Verify {
            password,
            hash,
            reply,
        })
        .await?;
        let ok = rx.await.map_err(|_| pool_gone())?;
        ok.map_err(ApiError::Internal)
    }

    /// Spends one verification against a throwaway hash: the cost of a login attempt for an
    /// email that has no account. Always `false`.
    pub async fn verify_dummy(&self, password: Password) -> Result<bool, ApiError> {
        let dummy = self
            .dummy
            .get_or_try_init(|| async {
                let random = Password::for_login(uuid::Uuid::new_v4().to_string())?;
                self.hash(random).await.map(Arc::from)
            })
            .await?;
        self.verify(password, Arc::clone(dummy)).await?;
        Ok(false)
    }

    /// Computes the dummy hash ahead of the first unknown-email login, off the start-up path.
    pub fn warm_up(&self) {
        let this = self.clone();
        tokio::spawn(async move {
            let warm = Password::for_login("warm-up".into());
            if let Ok(p) = warm {
                let _ = this.verify_dummy(p).await;
            }
        });
    }

    async fn submit(&self, job: Job) -> Result<(), ApiError> {
        // Counted before the send, so that callers still waiting for a slot show up too; the
        // worker that takes the job counts it out.
        self.metrics.enqueued();
        let result = match tokio::time::timeout(self.enqueue_timeout, self.queue.send(job)).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(_)) => Err(pool_gone()),
            Err(_) => Err(ApiError::Unavailable(anyhow!(
                "password-hashing queue full for {:?}",
                self.enqueue_timeout
            ))),
        };
        self.metrics.dequeued();
        result
    }
}

fn pool_gone() -> ApiError {
    ApiError::Internal(anyhow!("password-hashing threads have stopped"))
}

/// Moves the calling thread to `SCHED_IDLE` (see the module docs). Lowering one's own
/// priority needs no privilege; if the platform refuses anyway, hashing still works, only
/// without the isolation, so that is a warning and not a start-up failure.
#[cfg(target_os = "linux")]
fn yield_to_request_serving() {
    use thread_priority::{
        NormalThreadSchedulePolicy, ThreadPriority, ThreadSchedulePolicy,
        set_thread_priority_and_policy, thread_native_id,
    };
    let idle = ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Idle);
    if let Err(e) = set_thread_priority_and_policy(thread_native_id(), ThreadPriority::Min, idle) {
        tracing::warn!(error = ?e, "could not lower the priority of a password-hashing thread");
    }
}

/// `SCHED_IDLE` is Linux's; elsewhere the threads keep the default priority.
#[cfg(not(target_os = "linux"))]
fn yield_to_request_serving() {}

fn worker(rx: &Mutex<mpsc::Receiver<Job>>, cost: u32, pepper: &Pepper, metrics: &HashMetrics) {
    loop {
        // Holding the lock while blocking is intended: exactly one idle thread waits on the
        // queue, the others wait for the lock, and each job goes to one thread.
        let job = match rx.lock() {
            Ok(mut rx) => rx.blocking_recv(),
            Err(_) => return,
        };
        let Some(job) = job else { return };
        metrics.dequeued();
        // A closed reply means the client went away while the job queued: skip the work
        // rather than spend a core on an answer nobody reads.
        match job {
            Job::Hash { password, reply } if !reply.is_closed() => {
                let started = Instant::now();
                let hash = hash_now(&password, cost, pepper);
                metrics.observe("hash", started.elapsed().as_secs_f64());
                let _ = reply.send(hash);
            }
            Job::Verify {
                password,
                hash,
                reply,
            } if !reply.is_closed() => {
                let started = Instant::now();
                let ok = verify_now(&password, &hash, pepper);
                metrics.observe("verify", started.elapsed().as_secs_f64());
                let _ = reply.send(ok);
            }
            Job::Hash { .. } | Job::Verify { .. } => {}
        }
    }
}

/// Version 2's bcrypt input: HMAC-SHA256 under the pepper of the normalised password,
/// base64 (44 bytes).
fn prehash_v2(password: &Password, pepper: &Pepper) -> String {
    let mut mac = pepper.0.clone();
    mac.update(password.expose().as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Version 1's: SHA-256 of the password as typed, base64.
fn prehash_v1(password: &Password) -> String {
    let digest = Sha256::digest(password.as_typed().as_bytes());
    base64::engine::general_purpose::STANDARD.encode(digest)
}

/// The work one hashing thread does for a `hash` job, on the calling thread: a version-2
/// hash. Public so that the benchmark (`bench/`) times exactly what the server runs,
/// pre-hash included.
pub fn hash_now(password: &Password, cost: u32, pepper: &Pepper) -> anyhow::Result<String> {
    let bcrypt =
        bcrypt::non_truncating_hash(prehash_v2(password, pepper), cost).context("bcrypt hash")?;
    Ok(format!("{PREFIX_V2}{bcrypt}"))
}

/// The work one hashing thread does for a `verify` job, on the calling thread (see
/// [`hash_now`]), for a hash of either version.
pub fn verify_now(password: &Password, hash: &str, pepper: &Pepper) -> anyhow::Result<bool> {
    if let Some(wrapped) = hash.strip_prefix(PREFIX_V1_WRAPPED) {
        return verify_wrapped_v1(password, wrapped, pepper);
    }
    let (input, bcrypt) = match hash.strip_prefix(PREFIX_V2) {
        Some(bcrypt) => (prehash_v2(password, pepper), bcrypt),
        None => (prehash_v1(password), hash),
    };
    bcrypt::non_truncating_verify(input, bcrypt).context("bcrypt verify")
}

/// Recomputes the version-1 hash from `password` and the kept cost and salt, and compares
/// its tag (in constant time).
fn verify_wrapped_v1(password: &Password, wrapped: &str, pepper: &Pepper) -> anyhow::Result<bool> {
    let malformed = || anyhow!("malformed wrapped hash");
    let setting = wrapped.get(..BCRYPT_SETTING_LEN).ok_or_else(malformed)?;
    let tag = wrapped
        .get(BCRYPT_SETTING_LEN..)
        .and_then(|t| t.strip_prefix('$'))
        .ok_or_else(malformed)?;
    let tag = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(tag)
        .context("malformed wrapped hash")?;
    // The setting with a placeholder digest is a hash bcrypt parses for cost and salt.
    let parts: bcrypt::HashParts = format!("{setting}{}", ".".repeat(31))
        .parse()
        .context("malformed wrapped hash")?;
    let recomputed = bcrypt::non_truncating_hash_with_salt(
        prehash_v1(password),
        parts.get_cost(),
        parts.get_salt_raw(),
    )
    .context("bcrypt hash")?
    .to_string();
    Ok(pepper.v1_tag(&recomputed).verify_slice(&tag).is_ok())
}

/// The cost a bcrypt hash was made with (`$2b$12$…` → 12).
fn bcrypt_cost(bcrypt: &str) -> Option<u32> {
    bcrypt.split('$').nth(2)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pw(s: &str) -> Password {
        Password::for_login(s.to_owned()).unwrap()
    }

    fn pepper() -> Pepper {
        Pepper::new(b"a test pepper of thirty-two bytes")
    }

    #[tokio::test]
    async fn a_hash_is_versioned_and_keyed_with_the_pepper() {
        let h = Hasher::start(1, 4, pepper(), Duration::from_secs(5), HashMetrics::new()).unwrap();
        let stored = h.hash(pw("correct horse")).await.unwrap();
        assert!(stored.starts_with("v2$$2b$04$"), "{stored}");
        let other = Pepper::new(b"another pepper, also long enough");
        assert!(!verify_now(&pw("correct horse"), &stored, &other).unwrap());
        // Not the unkeyed pre-hash of version 1 either.
        let bcrypt = stored.strip_prefix(PREFIX_V2).unwrap();
        assert!(!bcrypt::non_truncating_verify(prehash_v1(&pw("correct horse")), bcrypt).unwrap());
        assert!(!h.needs_rehash(&stored));
    }

    #[tokio::test]
    async fn a_version_1_hash_still_verifies_and_asks_to_be_replaced() {
        let h = Hasher::start(1, 4, pepper(), Duration::from_secs(5), HashMetrics::new()).unwrap();
        let v1 = bcrypt::non_truncating_hash(prehash_v1(&pw("correct horse")), 4).unwrap();
        assert!(
            h.verify(pw("correct horse"), v1.clone().into())
                .await
                .unwrap()
        );
        assert!(
            !h.verify(pw("correct horsE"), v1.clone().into())
                .await
                .unwrap()
        );
        assert!(h.needs_rehash(&v1));
        // Version 1 hashed the password as typed (computed here without the module's
        // helpers): a decomposed accent stays decomposed.
        let typed = "cafe\u{301} cre\u{300}me";
        let digest = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(typed));
        let v1 = bcrypt::non_truncating_hash(digest, 4).unwrap();
        assert!(h.verify(pw(typed), v1.into()).await.unwrap());
        let other_cost = format!(
            "{PREFIX_V2}{}",
            bcrypt::non_truncating_hash("x", 5).unwrap()
        );
        assert!(h.needs_rehash(&other_cost));
    }

    #[tokio::test]
    async fn a_wrapped_version_1_hash_verifies_only_with_the_pepper_and_keeps_no_bcrypt_digest() {
        let h = Hasher::start(1, 4, pepper(), Duration::from_secs(5), HashMetrics::new()).unwrap();
        let v1 = bcrypt::non_truncating_hash(prehash_v1(&pw("correct horse")), 4).unwrap();
        let wrapped = h.wrap_v1(&v1).unwrap();
        assert!(wrapped.starts_with("v1p$$2b$04$"), "{wrapped}");
        // The salt is kept, bcrypt's digest (the last 31 characters) is not.
        assert!(wrapped.contains(&v1[..29]) && !wrapped.contains(&v1[29..]));
        assert!(
            h.verify(pw("correct horse"), wrapped.clone().into())
                .await
                .unwrap()
        );
        assert!(
            !h.verify(pw("correct horsE"), wrapped.clone().into())
                .await
                .unwrap()
        );
        let other = Pepper::new(b"another pepper, also long enough");
        assert!(!verify_now(&pw("correct horse"), &wrapped, &other).unwrap());
        assert!(h.needs_rehash(&wrapped));
        // Only bare version-1 hashes are wrapped; a malformed wrapped hash is an error.
        assert_eq!(h.wrap_v1(&wrapped), None);
        assert_eq!(h.wrap_v1(&h.hash(pw("correct horse")).await.unwrap()), None);
        assert_eq!(h.wrap_v1("$2b$04$short"), None);
        assert!(verify_now(&pw("x"), "v1p$$2b$04$", &pepper()).is_err());
    }

    #[tokio::test]
    async fn a_password_verifies_however_its_characters_were_composed() {
        let h = Hasher::start(1, 4, pepper(), Duration::from_secs(5), HashMetrics::new()).unwrap();
        // "café ｐａｓｓ" precomposed and fullwidth, then decomposed and plain.
        let stored: Arc<str> = h
            .hash(pw("caf\u{e9} \u{ff50}\u{ff41}\u{ff53}\u{ff53}"))
            .await
            .unwrap()
            .into();
        assert!(h.verify(pw("cafe\u{301} pass"), stored).await.unwrap());
    }

    #[tokio::test]
    async fn a_hash_verifies_its_password_and_nothing_else() {
        let h = Hasher::start(1, 4, pepper(), Duration::from_secs(5), HashMetrics::new()).unwrap();
        let stored: Arc<str> = h.hash(pw("correct horse")).await.unwrap().into();
        assert!(h.verify(pw("correct horse"), stored.clone()).await.unwrap());
        assert!(!h.verify(pw("correct horsE"), stored).await.unwrap());
    }

    #[tokio::test]
    async fn passwords_sharing_the_first_72_bytes_are_different_passwords() {
        let h = Hasher::start(1, 4, pepper(), Duration::from_secs(5), HashMetrics::new()).unwrap();
        let prefix = "p".repeat(72);
        let stored: Arc<str> = h.hash(pw(&format!("{prefix}-one"))).await.unwrap().into();
        assert!(
            h.verify(pw(&format!("{prefix}-one")), stored.clone())
                .await
                .unwrap()
        );
        assert!(
            !h.verify(pw(&format!("{prefix}-two")), stored)
                .await
                .unwrap()
        );
    }

    /// With one thread busy on a slow hash, a second job waits in the queue and is counted
    /// there until the thread takes it.
    #[tokio::test]
    async fn the_queue_depth_counts_jobs_waiting_for_a_thread() {
        let metrics = HashMetrics::new();
        let h = Hasher::start(1, 12, pepper(), Duration::from_secs(30), metrics.clone()).unwrap();
        let first = tokio::spawn({
            let h = h.clone();
            async move { h.hash(pw("first password")).await }
        });
        let second = tokio::spawn({
            let h = h.clone();
            async move { h.hash(pw("second password")).await }
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        while metrics.queue_depth() != 1 {
            assert!(
                Instant::now() < deadline,
                "never saw one job waiting; depth {}",
                metrics.queue_depth()
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        first.await.unwrap().unwrap();
        second.await.unwrap().unwrap();
        assert_eq!(metrics.queue_depth(), 0);
    }

    #[tokio::test]
    async fn an_unknown_user_costs_a_verification_and_never_matches() {
        let h = Hasher::start(1, 4, pepper(), Duration::from_secs(5), HashMetrics::new()).unwrap();
        assert!(!h.verify_dummy(pw("anything")).await.unwrap());
    }
}
