//! The fault run's reconciliation: what clients were told against the truth afterwards.
//!
//! Every signup answered 201 must exist in the database (else it was lost), none that was
//! certainly refused may exist (else it is a phantom), and every token whose logout
//! answered 200 must be refused by both instances, each asked directly rather than through
//! the balancer.

use std::collections::{BTreeMap, HashSet};

use futures::StreamExt as _;

use crate::{Ledger, Outcome};

#[derive(Default)]
pub struct Reconciliation {
    pub signups_created: usize,
    pub signups_errored: usize,
    pub signups_unknown: usize,
    pub unknown_that_exist: usize,
    pub lost: Vec<String>,
    pub phantom: Vec<String>,
    pub revoked_checked: usize,
    /// (status or failure, count) of `GET /auth/me` with each revoked token, per instance.
    pub revoked_answers: BTreeMap<(usize, Outcome), usize>,
}

impl Reconciliation {
    pub fn revoked_accepted(&self) -> usize {
        self.revoked_answers
            .iter()
            .filter(|((_, o), _)| *o == Outcome::Status(200))
            .map(|(_, n)| n)
            .sum()
    }
}

pub async fn reconcile(
    ledger: &Ledger,
    instances: &[String],
    database_url: &str,
    run_id: u64,
) -> anyhow::Result<Reconciliation> {
    let (db, conn) = tokio_postgres::connect(database_url, tokio_postgres::NoTls).await?;
    tokio::spawn(conn);
    let stored: HashSet<String> = db
        .query(
            "SELECT email FROM users WHERE email LIKE $1",
            &[&format!("faults-{run_id}-%")],
        )
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();

    let mut r = Reconciliation::default();
    for (email, outcome) in &ledger.signups {
        let exists = stored.contains(email);
        if *outcome == Outcome::Status(201) {
            r.signups_created += 1;
            if !exists {
                r.lost.push(email.clone());
            }
        } else if outcome.certainly_refused() {
            r.signups_errored += 1;
            if exists {
                r.phantom.push(email.clone());
            }
        } else {
            // A 502 from the balancer (the instance died with the request), a hang, a
            // broken connection, a 500: the signup may or may not have happened.
            r.signups_unknown += 1;
            r.unknown_that_exist += usize::from(exists);
        }
    }

    // Every revoked token, on every instance, after the run.
    let checks = ledger
        .revoked
        .iter()
        .flat_map(|t| (0..instances.len()).map(move |i| (i, t)))
        .map(|(i, token)| async move {
            let client = jobpath_client::authenticated(&instances[i], token)?;
            let result = client.get_me().send().await;
            anyhow::Ok((i, crate::outcome(&result)))
        });
    let mut answers = futures::stream::iter(checks).buffer_unordered(16);
    while let Some(answer) = answers.next().await {
        let key = answer?;
        *r.revoked_answers.entry(key).or_default() += 1;
    }
    r.revoked_checked = ledger.revoked.len();
    Ok(r)
}
