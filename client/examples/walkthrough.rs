//! Signs up, logs in, refreshes, reads the account and logs out against a running server.
//!
//! ```text
//! cargo run -p jobpath-client --example walkthrough -- http://localhost:8000
//! ```

use jobpath_client::{Client, types};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let base = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "http://localhost:8000".to_owned());
    let api = Client::new(&base);

    // A fresh address each run, so the example can be repeated.
    let email = format!("walkthrough-{}@example.com", std::process::id());
    let creds = types::Credentials::builder()
        .email(email.as_str())
        .password("correct horse battery staple");
    let account = api.signup().body(creds).send().await?.into_inner();
    println!("signed up   {} ({})", account.email, account.id);

    let login = types::LoginRequest::builder()
        .email(email.as_str())
        .password("correct horse battery staple");
    let session = api.login().body(login).send().await?.into_inner();
    println!(
        "logged in   session {}, access token for {} s",
        session.session_id, session.expires_in
    );

    // Access tokens are short-lived; the refresh token (single-use) renews them.
    let refresh = types::RefreshRequest::builder()
        .refresh_token(session.refresh_token.map(|t| t.parse()).transpose()?);
    let token = api.refresh().body(refresh).send().await?.into_inner();
    println!("refreshed   new access and refresh tokens, same session");

    let me = jobpath_client::authenticated(&base, &token.access_token)?;
    let user = me.get_me().send().await?.into_inner();
    println!("me          {} active={}", user.email, user.is_active);

    let bye = me.logout().send().await?.into_inner();
    println!("logout      {}", bye.message);

    match me.get_me().send().await {
        Err(jobpath_client::Error::ErrorResponse(err)) => {
            println!("me again    {} {}", err.status(), err.error);
        }
        other => {
            return Err(format!("expected the revoked token to be refused, got {other:?}").into());
        }
    }
    Ok(())
}
