//! `faults-driver`: the load and the bookkeeping of the fault-injection run.
//!
//! `bench/faults` sets the stage (a private PostgreSQL, two `jobpath-server` instances) and
//! injects the faults; this program drives a steady mixed load across both instances
//! meanwhile, records every request, and at the end reconciles what clients were told with
//! what the database holds and what the instances accept, and writes the report.
//!
//! - `faults-driver free-port`: prints a loopback port nothing listens on.
//! - `faults-driver load --instances URL,URL --seconds N --workers W --pace-ms P
//!   --events FILE --database-url URL --out FILE --bcrypt-rounds R`
//! - `faults-driver resets …`: password-reset requests across the SMTP server's outage,
//!   and the reconciliation of the outbox with what that server received ([`resets`]).
//!
//! Each worker repeats one user's life, alternating instances step by step: sign up, log in,
//! `GET /auth/me`, log out, and (after a successful logout) `GET /auth/me` with the revoked
//! token on the other instance, which must not be accepted. Steps start at most every
//! `--pace-ms`, so the offered load stays the same whether the service is up or down. A
//! connection refused (an instance restarting) is retried once on the other instance, as a
//! load balancer would; the refusal itself is recorded too.

mod report;
mod resets;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, bail};
use jobpath_client::{Client, types};

/// A request with no answer after this long counts as hung.
const HUNG_AFTER: Duration = Duration::from_secs(30);
const PASSWORD: &str = "fault-run password 1";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Op {
    Signup,
    Login,
    Me,
    Logout,
    /// `GET /auth/me` with a token whose logout answered 200: must never be 200.
    MeRevoked,
}

impl Op {
    pub fn name(self) -> &'static str {
        match self {
            Op::Signup => "signup",
            Op::Login => "login",
            Op::Me => "me",
            Op::Logout => "logout",
            Op::MeRevoked => "me (revoked token)",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Outcome {
    Status(u16),
    /// Connection refused: the instance was not listening.
    Refused,
    /// No answer within [`HUNG_AFTER`].
    Hung,
    /// Any other transport failure (a connection reset mid-request, a bad body).
    Broken,
}

#[derive(Debug, Clone)]
pub struct Record {
    /// Milliseconds since the load started.
    pub start_ms: u64,
    pub latency: Duration,
    pub op: Op,
    pub instance: usize,
    pub outcome: Outcome,
}

/// What the clients were told about signups and logouts, for the reconciliation.
#[derive(Default)]
pub struct Ledger {
    /// Email → the outcome of its signup.
    pub signups: HashMap<String, Outcome>,
    /// Tokens whose logout answered 200.
    pub revoked: Vec<String>,
}

struct Ctx {
    instances: Vec<String>,
    anon: Vec<Client>,
    started: Instant,
    until: Instant,
    pace: Duration,
    run_id: u64,
    records: Mutex<Vec<Record>>,
    ledger: Mutex<Ledger>,
}

type ApiResult<T> = Result<jobpath_client::ResponseValue<T>, jobpath_client::Error<types::Error>>;

fn outcome<T>(result: &ApiResult<T>) -> Outcome {
    use jobpath_client::Error as E;
    match result {
        Ok(resp) => Outcome::Status(resp.status().as_u16()),
        Err(E::ErrorResponse(resp)) => Outcome::Status(resp.status().as_u16()),
        Err(E::UnexpectedResponse(resp)) => Outcome::Status(resp.status().as_u16()),
        Err(E::CommunicationError(e) | E::ResponseBodyError(e)) if e.is_timeout() => Outcome::Hung,
        Err(E::CommunicationError(e)) if e.is_connect() => Outcome::Refused,
        Err(_) => Outcome::Broken,
    }
}

impl Ctx {
    fn http() -> reqwest::ClientBuilder {
        reqwest::Client::builder()
            .timeout(HUNG_AFTER)
            .connect_timeout(Duration::from_secs(5))
    }

    fn record(&self, op: Op, instance: usize, started: Instant, outcome: Outcome) {
        let start_ms = started.duration_since(self.started).as_millis() as u64;
        self.records.lock().unwrap().push(Record {
            start_ms,
            latency: started.elapsed(),
            op,
            instance,
            outcome,
        });
    }

    /// Sends `op` to `instance`; on a refused connection, once more to the other instance.
    /// Returns the final result.
    async fn call<T, F, Fut>(&self, op: Op, instance: usize, send: F) -> ApiResult<T>
    where
        F: Fn(usize) -> Fut,
        Fut: std::future::Future<Output = ApiResult<T>>,
    {
        let started = Instant::now();
        let result = send(instance).await;
        let first = outcome(&result);
        self.record(op, instance, started, first);
        if first != Outcome::Refused {
            return result;
        }
        let other = (instance + 1) % self.instances.len();
        let started = Instant::now();
        let result = send(other).await;
        self.record(op, other, started, outcome(&result));
        result
    }

    fn authed(&self, instance: usize, token: &str) -> anyhow::Result<Client> {
        let http = jobpath_client::bearer_http_client(token)?
            .timeout(HUNG_AFTER)
            .connect_timeout(Duration::from_secs(5))
            .build()?;
        Ok(Client::new_with_client(&self.instances[instance], http))
    }
}

async fn worker(ctx: Arc<Ctx>, w: usize) -> anyhow::Result<()> {
    let mut next = Instant::now();
    let pace = |next: &mut Instant| {
        *next += ctx.pace;
        let at = *next;
        async move { tokio::time::sleep_until(at.into()).await }
    };
    for n in 0u64.. {
        if Instant::now() >= ctx.until {
            break;
        }
        let a = (w + n as usize) % ctx.instances.len();
        let b = (a + 1) % ctx.instances.len();
        let email = format!("faults-{}-{w}-{n}@example.com", ctx.run_id);

        let result = ctx
            .call(Op::Signup, a, |i| {
                ctx.anon[i]
                    .signup()
                    .body(
                        types::Credentials::builder()
                            .email(email.as_str())
                            .password(PASSWORD),
                    )
                    .send()
            })
            .await;
        let signup = outcome(&result);
        ctx.ledger
            .lock()
            .unwrap()
            .signups
            .insert(email.clone(), signup);
        pace(&mut next).await;
        if signup != Outcome::Status(201) {
            continue;
        }

        let result = ctx
            .call(Op::Login, b, |i| {
                ctx.anon[i]
                    .login()
                    .body(
                        types::LoginRequest::builder()
                            .email(email.as_str())
                            .password(PASSWORD),
                    )
                    .send()
            })
            .await;
        pace(&mut next).await;
        let Ok(login) = result else { continue };
        let token = login.into_inner().access_token;
        let clients = [ctx.authed(0, &token)?, ctx.authed(1, &token)?];

        ctx.call(Op::Me, a, |i| clients[i].get_me().send())
            .await
            .ok();
        pace(&mut next).await;

        let result = ctx
            .call(Op::Logout, b, |i| clients[i].logout().send())
            .await;
        pace(&mut next).await;
        if outcome(&result) == Outcome::Status(200) {
            ctx.ledger.lock().unwrap().revoked.push(token.clone());
            ctx.call(Op::MeRevoked, a, |i| clients[i].get_me().send())
                .await
                .ok();
            pace(&mut next).await;
        }
    }
    Ok(())
}

fn epoch_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

fn args() -> anyhow::Result<HashMap<String, String>> {
    let mut map = HashMap::new();
    let mut it = std::env::args().skip(2);
    while let Some(key) = it.next() {
        let Some(name) = key.strip_prefix("--") else {
            bail!("unexpected argument {key}");
        };
        let value = it.next().with_context(|| format!("{key} needs a value"))?;
        map.insert(name.to_owned(), value);
    }
    Ok(map)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match std::env::args().nth(1).as_deref() {
        Some("free-port") => {
            let port = std::net::TcpListener::bind("127.0.0.1:0")?
                .local_addr()?
                .port();
            println!("{port}");
            Ok(())
        }
        Some("load") => load(args()?).await,
        Some("resets") => resets::run(args()?).await,
        _ => bail!(
            "usage: faults-driver free-port | load --instances URL,URL ... | resets --instances URL,URL ..."
        ),
    }
}

async fn load(args: HashMap<String, String>) -> anyhow::Result<()> {
    let get = |k: &str| args.get(k).with_context(|| format!("--{k} is required"));
    let instances: Vec<String> = get("instances")?.split(',').map(str::to_owned).collect();
    if instances.len() != 2 {
        bail!("--instances takes exactly two URLs");
    }
    let seconds: u64 = get("seconds")?.parse()?;
    let workers: usize = get("workers")?.parse()?;
    let pace = Duration::from_millis(get("pace-ms")?.parse()?);
    let anon = instances
        .iter()
        .map(|u| Ctx::http().build().map(|h| Client::new_with_client(u, h)))
        .collect::<Result<Vec<_>, _>>()?;
    let started = Instant::now();
    let started_epoch = epoch_ms();
    let ctx = Arc::new(Ctx {
        instances: instances.clone(),
        anon,
        started,
        until: started + Duration::from_secs(seconds),
        pace,
        run_id: started_epoch,
        records: Mutex::default(),
        ledger: Mutex::default(),
    });
    let tasks: Vec<_> = (0..workers)
        .map(|w| tokio::spawn(worker(Arc::clone(&ctx), w)))
        .collect();
    for t in tasks {
        t.await??;
    }
    let ended_ms = started.elapsed().as_millis() as u64;
    eprintln!("faults-driver: load done; reconciling");

    let ctx = Arc::into_inner(ctx).context("workers finished")?;
    let records = ctx.records.into_inner().unwrap();
    let ledger = ctx.ledger.into_inner().unwrap();
    let events = report::read_events(get("events")?, started_epoch)?;
    let reconciliation =
        report::reconcile(&ledger, &instances, get("database-url")?, ctx.run_id).await?;
    let text = report::render(&report::Input {
        records: &records,
        events: &events,
        reconciliation: &reconciliation,
        ended_ms,
        workers,
        pace,
        bcrypt_rounds: get("bcrypt-rounds")?,
        hung_after: HUNG_AFTER,
    });
    let out = get("out")?;
    let mut existing = std::fs::read_to_string(out).unwrap_or_default();
    existing.push_str(&text.markdown);
    std::fs::write(out, existing).with_context(|| format!("writing {out}"))?;
    println!("{}", text.summary);
    if !text.target_met {
        bail!("the run missed its target; see {out}");
    }
    Ok(())
}
