//! An SMTP server that hangs: it accepts TCP connections and never says a word, as a
//! provider does whose server is overloaded or behind a black-holing firewall. A client
//! without timeouts waits on it for good; the tests of the mail sender's timeouts use it.

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A listener on 127.0.0.1 that accepts and holds every connection, silently, until it is
/// dropped.
pub struct Tarpit {
    port: u16,
    accepting: JoinHandle<()>,
}

impl Tarpit {
    /// Listens on a free port; connections are accepted from the moment this returns.
    pub async fn start() -> Tarpit {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("the tarpit binds a free port");
        let port = listener.local_addr().unwrap().port();
        let accepting = tokio::spawn(async move {
            // Held, not dropped: a closed connection would tell the client something.
            let mut held: Vec<TcpStream> = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                held.push(stream);
            }
        });
        Tarpit { port, accepting }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The same form as [`super::MailServer::url`].
    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}?tls=none", self.port)
    }
}

impl Drop for Tarpit {
    fn drop(&mut self) {
        // Ends the task, which closes the listener and every connection it held.
        self.accepting.abort();
    }
}
