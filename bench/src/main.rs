//! `faults-driver`: the load and the bookkeeping of the fault-injection run.
//!
//! `bench/faults` sets the stage (a private PostgreSQL, PgBouncer in transaction mode in
//! front of it, two `jobpath-server` instances, HAProxy in front of them) and injects the
//! faults; this program drives a steady mixed load through the balancer meanwhile, records
//! every request, and at the end reconciles what clients were told with what the database
//! holds and what each instance accepts, reads the balancer's log, and writes the report.
//!
//! - `faults-driver free-port`: prints a loopback port nothing listens on.
//! - `faults-driver load --target URL --instances URL,URL --seconds N --workers W
//!   --pace-ms P --events FILE --balancer-log FILE --database-url URL --out FILE
//!   --bcrypt-rounds R`
//! - `faults-driver resets …`: password-reset requests across the SMTP server's outage,
//!   and the reconciliation of the outbox with what that server received ([`resets`]).
//!
//! Each worker repeats one user's life through the balancer (`--target`): sign up, log in,
//! `GET /auth/me`, log out, and (after a successful logout) `GET /auth/me` with the revoked
//! token, which must not be accepted; the balancer spreads the steps over the instances
//! round robin. Steps start at most every `--pace-ms`, so the offered load stays the same
//! whether the service is up or down. The driver never retries: a request the balancer could
//! not place is the balancer's to retry ([`balancer`] reads its log to say which it did), and
//! an answer the balancer made itself (502, 503 or 504 with its own HTML page) is recorded
//! as such, apart from the instances' answers. `--instances` (each instance directly) is for
//! the final check that every revoked token is refused by both.

mod balancer;
mod outage;
mod reconcile;
mod report;
mod resets;

use std::collections::{BTreeMap, HashMap};
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
    /// An instance's answer.
    Status(u16),
    /// An answer the balancer made itself (its HTML error page): 503 when it had no instance
    /// to send the request to, 502 when the instance's connection broke before an answer,
    /// 504 when the instance took longer than the balancer waits.
    Gateway(u16),
    /// Connection refused: nothing was listening.
    Refused,
    /// No answer within [`HUNG_AFTER`].
    Hung,
    /// Any other transport failure (a connection reset mid-request, a bad body).
    Broken,
}

impl Outcome {
    /// Whether the request certainly did nothing: an answer that says so (4xx, 503) from an
    /// instance, or a 503 from the balancer, which sends nothing to an instance before it
    /// answers that. A 502 or 504 from the balancer, a hang or a broken connection leave it
    /// unknown: the instance may have done the work.
    pub fn certainly_refused(self) -> bool {
        match self {
            Outcome::Status(s) => s != 500 && !(200..300).contains(&s),
            Outcome::Gateway(s) => s == 503,
            Outcome::Refused => true,
            Outcome::Hung | Outcome::Broken => false,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Record {
    /// Milliseconds since the load started.
    pub start_ms: u64,
    pub latency: Duration,
    pub op: Op,
    pub outcome: Outcome,
    /// The answer carried `Retry-After` (what every 503 of an instance must do).
    pub retry_after: bool,
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
    /// The balancer, for anonymous calls; authenticated ones get a client per token.
    target: String,
    anon: Client,
    started: Instant,
    until: Instant,
    pace: Duration,
    run_id: u64,
    records: Mutex<Vec<Record>>,
    ledger: Mutex<Ledger>,
    /// Why requests counted as broken broke, and how often: the report lists them.
    broken: Mutex<BTreeMap<String, usize>>,
}

type ApiResult<T> = Result<jobpath_client::ResponseValue<T>, jobpath_client::Error<types::Error>>;

fn outcome<T>(result: &ApiResult<T>) -> Outcome {
    use jobpath_client::Error as E;
    match result {
        Ok(resp) => Outcome::Status(resp.status().as_u16()),
        Err(E::ErrorResponse(resp)) => Outcome::Status(resp.status().as_u16()),
        // A status the contract does not list for the operation (502 and 504 are listed for
        // none): the balancer's if it came as its HTML page.
        Err(E::UnexpectedResponse(resp)) => {
            let status = resp.status().as_u16();
            let html = resp
                .headers()
                .get(reqwest::header::CONTENT_TYPE)
                .is_some_and(|v| v.as_bytes().starts_with(b"text/html"));
            if html {
                Outcome::Gateway(status)
            } else {
                Outcome::Status(status)
            }
        }
        // A listed status (503 is listed for most operations) whose body is not the
        // contract's JSON: the balancer's page, which names its status in its heading.
        Err(E::InvalidResponsePayload(body, _)) => {
            balancer_page_status(body).map_or(Outcome::Broken, Outcome::Gateway)
        }
        Err(E::CommunicationError(e) | E::ResponseBodyError(e)) if e.is_timeout() => Outcome::Hung,
        Err(E::CommunicationError(e)) if e.is_connect() => Outcome::Refused,
        Err(_) => Outcome::Broken,
    }
}

/// The status of HAProxy's built-in error page (`<html><body><h1>503 Service
/// Unavailable</h1>…`), if `body` is one.
fn balancer_page_status(body: &[u8]) -> Option<u16> {
    let rest = body.strip_prefix(b"<html><body><h1>")?;
    std::str::from_utf8(rest.get(..3)?).ok()?.parse().ok()
}

/// What went wrong with a request whose outcome is [`Outcome::Broken`]: the error and its
/// causes, without the URL (the same for every request).
fn broken_reason<T>(result: &ApiResult<T>) -> String {
    let Err(error) = result else {
        return "no error".into();
    };
    let mut reason = match error {
        jobpath_client::Error::InvalidResponsePayload(body, e) => {
            let head = String::from_utf8_lossy(&body[..body.len().min(40)]).into_owned();
            format!("a body that is not the contract's ({e}): {head:?}")
        }
        other => other.to_string(),
    };
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        let text = cause.to_string();
        if !text.starts_with("error sending request for url") {
            reason.push_str(": ");
            reason.push_str(&text);
        }
        source = cause.source();
    }
    reason
}

/// Whether the answer carried `Retry-After`.
fn retry_after<T>(result: &ApiResult<T>) -> bool {
    use jobpath_client::Error as E;
    let headers = match result {
        Ok(resp) => resp.headers(),
        Err(E::ErrorResponse(resp)) => resp.headers(),
        Err(E::UnexpectedResponse(resp)) => resp.headers(),
        Err(_) => return false,
    };
    headers.contains_key(reqwest::header::RETRY_AFTER)
}

fn http() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .timeout(HUNG_AFTER)
        .connect_timeout(Duration::from_secs(5))
}

impl Ctx {
    /// Sends one request, once, and records what came back.
    async fn call<T>(&self, op: Op, send: impl Future<Output = ApiResult<T>>) -> ApiResult<T> {
        let started = Instant::now();
        let result = send.await;
        let start_ms = started.duration_since(self.started).as_millis() as u64;
        let outcome = outcome(&result);
        if outcome == Outcome::Broken {
            let reason = format!("{}: {}", op.name(), broken_reason(&result));
            *self.broken.lock().unwrap().entry(reason).or_default() += 1;
        }
        self.records.lock().unwrap().push(Record {
            start_ms,
            latency: started.elapsed(),
            op,
            outcome,
            retry_after: retry_after(&result),
        });
        result
    }

    fn authed(&self, token: &str) -> anyhow::Result<Client> {
        let http = jobpath_client::bearer_http_client(token)?
            .timeout(HUNG_AFTER)
            .connect_timeout(Duration::from_secs(5))
            .build()?;
        Ok(Client::new_with_client(&self.target, http))
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
        let email = format!("faults-{}-{w}-{n}@example.com", ctx.run_id);

        let credentials = types::Credentials::builder()
            .email(email.as_str())
            .password(PASSWORD);
        let result = ctx
            .call(Op::Signup, ctx.anon.signup().body(credentials).send())
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

        let login = types::LoginRequest::builder()
            .email(email.as_str())
            .password(PASSWORD);
        let result = ctx
            .call(Op::Login, ctx.anon.login().body(login).send())
            .await;
        pace(&mut next).await;
        let Ok(login) = result else { continue };
        let token = login.into_inner().access_token;
        let client = ctx.authed(&token)?;

        ctx.call(Op::Me, client.get_me().send()).await.ok();
        pace(&mut next).await;

        let result = ctx.call(Op::Logout, client.logout().send()).await;
        pace(&mut next).await;
        if outcome(&result) == Outcome::Status(200) {
            ctx.ledger.lock().unwrap().revoked.push(token.clone());
            ctx.call(Op::MeRevoked, client.get_me().send()).await.ok();
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
            "usage: faults-driver free-port | load --target URL --instances URL,URL ... | resets --target URL ..."
        ),
    }
}

async fn load(args: HashMap<String, String>) -> anyhow::Result<()> {
    let get = |k: &str| args.get(k).with_context(|| format!("--{k} is required"));
    let target = get("target")?.to_owned();
    let instances: Vec<String> = get("instances")?.split(',').map(str::to_owned).collect();
    if instances.len() != 2 {
        bail!("--instances takes exactly two URLs");
    }
    let seconds: u64 = get("seconds")?.parse()?;
    let workers: usize = get("workers")?.parse()?;
    let pace = Duration::from_millis(get("pace-ms")?.parse()?);
    let anon = Client::new_with_client(&target, http().build()?);
    let started = Instant::now();
    let started_epoch = epoch_ms();
    let ctx = Arc::new(Ctx {
        target,
        anon,
        started,
        until: started + Duration::from_secs(seconds),
        pace,
        run_id: started_epoch,
        records: Mutex::default(),
        ledger: Mutex::default(),
        broken: Mutex::default(),
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
    let broken = ctx.broken.into_inner().unwrap();
    let events = report::read_events(get("events")?, started_epoch)?;
    let balancer = balancer::read_log(get("balancer-log")?, started_epoch)?;
    let reconciliation =
        reconcile::reconcile(&ledger, &instances, get("database-url")?, ctx.run_id).await?;
    let text = report::render(&report::Input {
        records: &records,
        events: &events,
        balancer: &balancer,
        broken: &broken,
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
