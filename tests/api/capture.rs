//! Log capture for tests: one global subscriber for the whole test binary.
//!
//! Switching thread-local dispatchers is racy across tests (tracing caches each callsite's
//! interest globally), so the binary installs a single global subscriber once. Its capture
//! layers write only while the current thread has an active [`Capture`], checked per event,
//! and apply the server's production filter (`telemetry::filter`), so a test sees exactly
//! what an operator at that level would. `TEST_LOG=1` additionally prints server logs.

use std::cell::RefCell;
use std::io::Write;
use std::sync::{Arc, Mutex, Once};

use tracing::Metadata;
use tracing::subscriber::Interest;
use tracing_subscriber::Layer as _;
use tracing_subscriber::filter::FilterExt as _;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Context, Filter, SubscriberExt as _};

type Buffer = Arc<Mutex<Vec<u8>>>;

thread_local! {
    static ACTIVE: RefCell<Option<(Buffer, Buffer)>> = const { RefCell::new(None) };
}

/// Captures, on this thread, every log line at `trace` in text and JSON until dropped.
pub struct Capture {
    text: Buffer,
    json: Buffer,
}

impl Capture {
    pub fn start() -> Capture {
        init();
        let capture = Capture {
            text: Buffer::default(),
            json: Buffer::default(),
        };
        ACTIVE.with(|a| *a.borrow_mut() = Some((capture.text.clone(), capture.json.clone())));
        capture
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.text.lock().unwrap()).into_owned()
    }

    pub fn json(&self) -> String {
        String::from_utf8_lossy(&self.json.lock().unwrap()).into_owned()
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        ACTIVE.with(|a| *a.borrow_mut() = None);
    }
}

/// Enabled only on a thread with an active capture; never cached per callsite.
struct WhileCapturing;

impl<S> Filter<S> for WhileCapturing {
    fn enabled(&self, _: &Metadata<'_>, _: &Context<'_, S>) -> bool {
        ACTIVE.with(|a| a.borrow().is_some())
    }

    fn callsite_enabled(&self, _: &'static Metadata<'static>) -> Interest {
        Interest::sometimes()
    }
}

#[derive(Clone, Copy)]
enum Sink {
    Text,
    Json,
}

struct SinkWriter(Option<Buffer>);

impl Write for SinkWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if let Some(b) = &self.0 {
            b.lock().unwrap().extend_from_slice(buf);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Sink {
    type Writer = SinkWriter;
    fn make_writer(&'a self) -> SinkWriter {
        SinkWriter(ACTIVE.with(|a| {
            a.borrow().as_ref().map(|(text, json)| match self {
                Sink::Text => text.clone(),
                Sink::Json => json.clone(),
            })
        }))
    }
}

/// Installs the test binary's global subscriber (once).
pub fn init() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let production = || jobpath_server::telemetry::filter("trace").unwrap();
        let text = tracing_subscriber::fmt::layer()
            .with_ansi(false)
            .with_writer(Sink::Text)
            .with_filter(production().and(WhileCapturing));
        let json = tracing_subscriber::fmt::layer()
            .json()
            .with_current_span(true)
            .with_writer(Sink::Json)
            .with_filter(production().and(WhileCapturing));
        let wanted =
            std::env::var("TEST_LOG").is_ok_and(|v| !matches!(v.as_str(), "" | "0" | "false"));
        let shown = wanted.then(|| {
            tracing_subscriber::fmt::layer()
                .with_test_writer()
                .with_filter(jobpath_server::telemetry::filter("debug").unwrap())
        });
        let subscriber = tracing_subscriber::registry()
            .with(text)
            .with(json)
            .with(shown);
        tracing::subscriber::set_global_default(subscriber).expect("one global subscriber");
        // Dependencies that log through the `log` crate (tokio-postgres) come in through the
        // same bridge the server's own subscriber installs.
        tracing_log::LogTracer::builder()
            .with_max_level(tracing_log::log::LevelFilter::Trace)
            .init()
            .expect("one log bridge");
    });
}
