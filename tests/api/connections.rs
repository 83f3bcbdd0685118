//! Connection slots: a client that stops reading gives its slot back at the write timeout,
//! and one client address cannot hold more than `MAX_CONNECTIONS_PER_CLIENT` of them.
//!
//! Raw sockets throughout: the generated client's pool would keep connections (and so
//! slots) open behind the test's back, and only a raw socket can refuse to read, shrink its
//! receive buffer, or connect from another loopback address.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use jobpath_server::handlers::docs::{ASSETS, ASSETS_PREFIX};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpSocket, TcpStream};

use crate::faults::eventually;
use crate::helpers::{TestApp, spawn_app_with};

/// Where the tests' clients connect from. Linux routes all of 127/8 to the loopback
/// interface, so a socket bound to 127.0.0.2 is a second client address.
const HOME: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1));
const NEIGHBOUR: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

fn addr(app: &TestApp) -> SocketAddr {
    app.base_url.trim_start_matches("http://").parse().unwrap()
}

/// A connection to `to` from the address `from`.
async fn connect_from(from: IpAddr, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(from, 0)).unwrap();
    socket.connect(to).await.unwrap()
}

/// Sends one request on `stream` and reads its response: the whole of it, by its
/// `Content-Length`, or up to the close. Returns the head and body as text.
async fn exchange(stream: &mut TcpStream, path: &str) -> String {
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let read = async {
        loop {
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                let length = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map(|v| v.trim().parse::<usize>().unwrap());
                if length.is_some_and(|n| buf.len() >= end + 4 + n) {
                    break;
                }
            }
            match stream.read(&mut chunk).await.unwrap() {
                0 => break,
                n => buf.extend_from_slice(&chunk[..n]),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(15), read)
        .await
        .expect("a response within 15 s");
    String::from_utf8_lossy(&buf).into_owned()
}

fn status(response: &str) -> &str {
    response.lines().next().unwrap_or("")
}

/// The status line of `/health/live` on a fresh connection from `from`.
async fn probe_from(from: IpAddr, to: SocketAddr) -> String {
    let mut stream = connect_from(from, to).await;
    status(&exchange(&mut stream, "/health/live").await).to_owned()
}

#[track_caller]
fn assert_refused_503(response: &str) {
    assert_eq!(
        status(response),
        "HTTP/1.1 503 Service Unavailable",
        "{response}"
    );
    let lower = response.to_ascii_lowercase();
    assert!(lower.contains("\r\nretry-after: 2\r\n"), "{response}");
    assert!(
        response.contains(r#""error":"service_unavailable""#),
        "{response}"
    );
}

async fn scrape(app: &TestApp) -> String {
    let url = app.metrics_url.as_ref().expect("a metrics listener");
    reqwest::get(url).await.unwrap().text().await.unwrap()
}

fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map(|v| v.parse().unwrap())
}

/// The largest response the server has, Swagger UI's bundle: its path and its size (about
/// 1.7 MB).
fn bundle() -> (String, usize) {
    let asset = ASSETS
        .iter()
        .find(|a| a.file.ends_with("/swagger-ui-bundle.js"))
        .unwrap();
    let file = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../server/assets/swagger-ui/swagger-ui-bundle.js"
    );
    let size = std::fs::metadata(file).unwrap().len();
    (
        format!("{ASSETS_PREFIX}{}", asset.file),
        usize::try_from(size).unwrap(),
    )
}

/// The most a socket's send buffer may grow to (`net.ipv4.tcp_wmem`), which loopback's
/// autotuning can reach: the server could hand that much to the kernel and be done.
fn max_send_buffer() -> usize {
    std::fs::read_to_string("/proc/sys/net/ipv4/tcp_wmem")
        .ok()
        .and_then(|s| s.split_whitespace().nth(2)?.parse().ok())
        .unwrap_or(4 << 20)
}

#[tokio::test]
async fn a_client_that_never_reads_its_response_loses_its_slot_at_the_write_timeout() {
    let app = spawn_app_with(|c| {
        c.max_connections = 1;
        // Long enough that the 503 below lands inside it on a loaded machine.
        c.write_timeout = Duration::from_secs(4);
    })
    .await;
    let to = addr(&app);
    let (path, size) = bundle();

    // A receive buffer of a few KiB, and enough pipelined requests that their responses
    // overflow the largest send buffer the kernel would give the server.
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut slow = socket.connect(to).await.unwrap();
    let pipelined = max_send_buffer() / size + 3;
    let asked = pipelined * size;
    let requests = format!("GET {path} HTTP/1.1\r\nHost: t\r\n\r\n").repeat(pipelined);
    slow.write_all(requests.as_bytes()).await.unwrap();

    // While the slow client holds the one slot, everyone else gets 503 ...
    let refused = exchange(&mut connect_from(HOME, to).await, "/health/live").await;
    assert_refused_503(&refused);
    // ... until it has accepted nothing for the write timeout and is closed.
    eventually(
        "a slot freed by the write timeout",
        Duration::from_secs(30),
        || async { probe_from(HOME, to).await == "HTTP/1.1 200 OK" },
    )
    .await;

    // The server gave up on it: what is left to read ends short of what it asked for, by
    // more than a full send buffer.
    let mut received = 0usize;
    let mut chunk = vec![0u8; 64 * 1024];
    let drained = tokio::time::timeout(Duration::from_secs(15), async {
        while let Ok(n @ 1..) = slow.read(&mut chunk).await {
            received += n;
        }
    })
    .await;
    assert!(drained.is_ok(), "the slow connection is still open");
    assert!(
        received + max_send_buffer() < asked,
        "read {received} of {asked} bytes"
    );
    let metrics = scrape(&app).await;
    assert_eq!(
        sample(&metrics, "jobpath_connection_write_timeouts_total"),
        Some(1.0),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_client_over_its_connection_cap_gets_503_while_other_addresses_are_served() {
    let app = spawn_app_with(|c| c.max_connections_per_client = 2).await;
    let to = addr(&app);
    let mut first = connect_from(HOME, to).await;
    let mut second = connect_from(HOME, to).await;
    assert_eq!(
        status(&exchange(&mut first, "/health/live").await),
        "HTTP/1.1 200 OK"
    );
    assert_eq!(
        status(&exchange(&mut second, "/health/live").await),
        "HTTP/1.1 200 OK"
    );

    // A third connection from the same address is over its cap.
    let refused = exchange(&mut connect_from(HOME, to).await, "/health/live").await;
    assert_refused_503(&refused);
    // Another address is served meanwhile, and so are the first two connections.
    let mut neighbour = connect_from(NEIGHBOUR, to).await;
    assert_eq!(
        status(&exchange(&mut neighbour, "/health/live").await),
        "HTTP/1.1 200 OK"
    );
    assert_eq!(
        status(&exchange(&mut first, "/health/live").await),
        "HTTP/1.1 200 OK"
    );

    // Once one of them closes, the address gets a connection again.
    drop(second);
    eventually(
        "a slot freed by the closed connection",
        Duration::from_secs(10),
        || async { probe_from(HOME, to).await == "HTTP/1.1 200 OK" },
    )
    .await;

    let metrics = scrape(&app).await;
    let refusals = sample(
        &metrics,
        r#"jobpath_connections_refused_total{reason="client_limit"}"#,
    );
    assert!(refusals.is_some_and(|n| n >= 1.0), "{metrics}");
    assert_eq!(
        sample(
            &metrics,
            r#"jobpath_connections_refused_total{reason="server_limit"}"#
        ),
        None,
        "{metrics}"
    );
}

#[tokio::test]
async fn a_trusted_proxy_is_not_held_to_the_per_client_cap() {
    let app = spawn_app_with(|c| {
        c.max_connections_per_client = 1;
        c.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
    })
    .await;
    let to = addr(&app);
    let mut proxied = Vec::new();
    for _ in 0..3 {
        let mut conn = connect_from(HOME, to).await;
        assert_eq!(
            status(&exchange(&mut conn, "/health/live").await),
            "HTTP/1.1 200 OK"
        );
        proxied.push(conn);
    }
    // Any other address still is.
    let mut neighbour = connect_from(NEIGHBOUR, to).await;
    assert_eq!(
        status(&exchange(&mut neighbour, "/health/live").await),
        "HTTP/1.1 200 OK"
    );
    let refused = exchange(&mut connect_from(NEIGHBOUR, to).await, "/health/live").await;
    assert_refused_503(&refused);
}
