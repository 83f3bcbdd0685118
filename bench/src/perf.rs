//! `jobpath-bench`: the measurements of `bench/run` that a shell cannot make precisely, done
//! with the server's own code so that the figures describe what the server really runs.
//!
//! - `hash COST`: a bcrypt hash of `$BENCH_PASSWORD`, made by the server's hashing function
//!   (SHA-256 pre-hash included), for seeding accounts without a signup per account.
//! - `verify-cost COST SAMPLES`: the time of one verification on one thread — the unit of
//!   the hash ceiling. Prints the median and the fastest sample.
//! - `tokens`: reads `id|email|session id` lines and prints one access token per line, minted by the
//!   server's `TokenKeys` with `$JWT_SECRET_KEY`, so `/auth/me` load spreads over many users.
//!   With `$BENCH_SIGNING_KEY` (`kid|algorithm|sealed private key in hex|public JWK`, the
//!   server's active row of `signing_keys`) they are signed with that key instead, as an
//!   ES256 or EdDSA server signs them.
//! - `sign-verify N`: the time of signing and of verifying one access token, for HS256,
//!   ES256 and EdDSA, with the server's `TokenKeys` (N of each, one thread).
//! - `startup RUNS HOST:PORT -- PROGRAM [ARGS…]`: starts PROGRAM (inheriting the
//!   environment) RUNS times, and times process start → first `200` from `/health/ready`.
//!
//! Output lines are `key=value`, for the script to read.

use std::io::{BufRead as _, Read as _, Write as _};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use jobpath_server::auth::credentials::Password;
use jobpath_server::auth::hasher::{Pepper, hash_now, verify_now};
use jobpath_server::auth::signing::{KeyAlgorithm, KeySet, KeyState, Sealer, StoredKey, generate};
use jobpath_server::auth::token::TokenKeys;

const USAGE: &str = "usage: jobpath-bench hash COST | verify-cost COST SAMPLES | tokens \
                     | sign-verify N | startup RUNS HOST:PORT -- PROGRAM [ARGS...]";

/// How long the server may take to become ready before the start-up run counts as failed.
const READY_DEADLINE: Duration = Duration::from_secs(10);
/// Between readiness probes: small next to the 200 ms target, large enough not to load the
/// server while it starts.
const PROBE_EVERY: Duration = Duration::from_millis(1);

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).map(String::as_str);
    match arg(0) {
        Some("hash") => hash(number(arg(1))?),
        Some("verify-cost") => verify_cost(number(arg(1))?, number(arg(2))?),
        Some("tokens") => tokens(),
        Some("sign-verify") => sign_verify(number(arg(1))?),
        Some("startup") if arg(3) == Some("--") && args.len() > 4 => {
            startup(number(arg(1))?, &args[2], &args[4], &args[5..])
        }
        _ => bail!("{USAGE}"),
    }
}

fn number<T: std::str::FromStr>(raw: Option<&str>) -> anyhow::Result<T> {
    raw.and_then(|r| r.parse().ok())
        .with_context(|| format!("expected a number\n{USAGE}"))
}

/// The pepper the benchmarked server uses: `PASSWORD_PEPPER`, or development's.
fn pepper() -> Pepper {
    let secret = std::env::var("PASSWORD_PEPPER")
        .unwrap_or_else(|_| jobpath_server::config::secret::DEVELOPMENT_PEPPER.to_owned());
    Pepper::new(secret.as_bytes())
}

fn password() -> anyhow::Result<Password> {
    let raw = std::env::var("BENCH_PASSWORD").context("BENCH_PASSWORD is not set")?;
    // Seeded straight into the database: the signup policy does not apply, only the type.
    Password::for_login(raw).map_err(|e| anyhow::anyhow!("BENCH_PASSWORD: {e}"))
}

fn hash(cost: u32) -> anyhow::Result<()> {
    println!("hash={}", hash_now(&password()?, cost, &pepper())?);
    Ok(())
}

fn verify_cost(cost: u32, samples: usize) -> anyhow::Result<()> {
    let password = password()?;
    let pepper = pepper();
    let stored = hash_now(&password, cost, &pepper)?;
    let mut times: Vec<f64> = (0..samples.max(1))
        .map(|_| {
            let started = Instant::now();
            let ok = verify_now(&password, &stored, &pepper)?;
            anyhow::ensure!(ok, "a fresh hash did not verify");
            Ok(started.elapsed().as_secs_f64())
        })
        .collect::<anyhow::Result<_>>()?;
    times.sort_by(f64::total_cmp);
    println!("verify_median_s={:.6}", times[times.len() / 2]);
    println!("verify_min_s={:.6}", times[0]);
    Ok(())
}

fn tokens() -> anyhow::Result<()> {
    let secret = std::env::var("JWT_SECRET_KEY").context("JWT_SECRET_KEY is not set")?;
    // The server's lifetime (it refuses longer ones); bench/run sets one longer than any
    // run, since a token that expires mid-run would turn into 401s.
    let minutes: u64 = std::env::var("ACCESS_TOKEN_EXPIRE_MINUTES")
        .context("ACCESS_TOKEN_EXPIRE_MINUTES is not set")?
        .parse()
        .context("ACCESS_TOKEN_EXPIRE_MINUTES")?;
    let mut keys = TokenKeys::new(
        secret.as_bytes(),
        jobpath_server::config::DEFAULT_JWT_ISSUER,
        jobpath_server::config::DEFAULT_JWT_AUDIENCE,
        Duration::from_secs(60 * minutes),
    );
    if let Ok(row) = std::env::var("BENCH_SIGNING_KEY") {
        keys = keys.signing_with_keys(None);
        keys.install(signing_key_set(&row, &secret)?);
    }
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        let mut fields = line.split('|');
        let (Some(id), Some(email), Some(sid)) = (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let (token, _) = keys
            .issue(
                id.parse().context("user id")?,
                email,
                false,
                &[],
                &jobpath_server::auth::token::Assurance::password(),
                sid.parse().context("session id")?,
            )
            .map_err(|e| anyhow::anyhow!("issuing a token: {e}"))?;
        writeln!(out, "{token}")?;
    }
    Ok(())
}

/// The set of the one active key `row` describes, opened with `secret`.
fn signing_key_set(row: &str, secret: &str) -> anyhow::Result<KeySet> {
    let mut fields = row.trim().splitn(4, '|');
    let (Some(kid), Some(algorithm), Some(sealed), Some(jwk)) =
        (fields.next(), fields.next(), fields.next(), fields.next())
    else {
        bail!("BENCH_SIGNING_KEY: kid|algorithm|hex|jwk");
    };
    let sealed = (0..sealed.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&sealed[i..i + 2], 16))
        .collect::<Result<Vec<u8>, _>>()
        .context("the sealed key's hex")?;
    let stored = StoredKey {
        kid: kid.to_owned(),
        algorithm: KeyAlgorithm::parse(algorithm).context("the algorithm")?,
        state: KeyState::Active,
        sealed,
        public_jwk: serde_json::from_str(jwk).context("the JWK")?,
        created_at: chrono::Utc::now(),
    };
    let sealer = Sealer::new(secret.as_bytes(), None);
    Ok(KeySet::build(&[stored], Some(&sealer))?.0)
}

/// Median of `n` timings of `f`, in microseconds.
fn median_us(n: usize, mut f: impl FnMut()) -> f64 {
    let mut samples: Vec<f64> = (0..n)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    samples[n / 2]
}

fn sign_verify(n: usize) -> anyhow::Result<()> {
    anyhow::ensure!(n > 0, "N must be positive");
    let secret = "a benchmark secret, thirty-two bytes or more";
    let sealer = Sealer::new(secret.as_bytes(), None);
    for (name, algorithm) in [
        ("hs256", None),
        ("es256", Some(KeyAlgorithm::Es256)),
        ("eddsa", Some(KeyAlgorithm::EdDsa)),
    ] {
        let mut keys = TokenKeys::new(
            secret.as_bytes(),
            jobpath_server::config::DEFAULT_JWT_ISSUER,
            jobpath_server::config::DEFAULT_JWT_AUDIENCE,
            Duration::from_secs(1800),
        );
        if let Some(algorithm) = algorithm {
            let new = generate(algorithm, &sealer);
            let stored = StoredKey {
                kid: new.kid,
                algorithm,
                state: KeyState::Active,
                sealed: new.sealed,
                public_jwk: new.public_jwk,
                created_at: chrono::Utc::now(),
            };
            keys = keys.signing_with_keys(None);
            keys.install(KeySet::build(&[stored], Some(&sealer))?.0);
        }
        let issue = || {
            keys.issue(
                uuid::Uuid::new_v4(),
                "bench@example.com",
                true,
                &[],
                &jobpath_server::auth::token::Assurance::password(),
                uuid::Uuid::new_v4(),
            )
            .map(|(token, _)| token)
            .map_err(|e| anyhow::anyhow!("issuing: {e}"))
        };
        let token = issue()?;
        keys.verify(&token)
            .map_err(|e| anyhow::anyhow!("verifying: {e}"))?;
        let sign = median_us(n, || {
            issue().expect("issued once already");
        });
        let verify = median_us(n, || {
            keys.verify(&token).expect("verified once already");
        });
        println!("sign_us_{name}={sign:.1}");
        println!("verify_us_{name}={verify:.1}");
    }
    Ok(())
}

fn startup(runs: usize, addr: &str, program: &str, args: &[String]) -> anyhow::Result<()> {
    let mut times = Vec::new();
    for _ in 0..runs.max(1) {
        let started = Instant::now();
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .spawn()
            .with_context(|| format!("starting {program}"))?;
        let ready = wait_ready(addr, started, &mut child);
        stop(&mut child);
        times.push(ready?.as_secs_f64() * 1000.0);
    }
    let runs: Vec<String> = times.iter().map(|t| format!("{t:.1}")).collect();
    println!("startup_runs_ms={}", runs.join(","));
    times.sort_by(f64::total_cmp);
    println!("startup_median_ms={:.1}", times[times.len() / 2]);
    println!("startup_max_ms={:.1}", times[times.len() - 1]);
    Ok(())
}

fn wait_ready(addr: &str, started: Instant, child: &mut Child) -> anyhow::Result<Duration> {
    while started.elapsed() < READY_DEADLINE {
        if ready_once(addr) {
            return Ok(started.elapsed());
        }
        if let Some(status) = child.try_wait()? {
            bail!("the server exited during start-up: {status}");
        }
        std::thread::sleep(PROBE_EVERY);
    }
    bail!("the server was not ready within {READY_DEADLINE:?}")
}

/// One `GET /health/ready`; true on a `200`. Refused connections (not listening yet) are
/// just "not ready".
fn ready_once(addr: &str) -> bool {
    let Ok(mut stream) = TcpStream::connect(addr) else {
        return false;
    };
    let request =
        format!("GET /health/ready HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.1 200")
}

/// SIGTERM (a graceful stop, as in production), then waits; SIGKILL if that fails.
fn stop(child: &mut Child) {
    let terminated = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .is_ok_and(|s| s.success());
    if !terminated {
        let _ = child.kill();
    }
    let _ = child.wait();
}
