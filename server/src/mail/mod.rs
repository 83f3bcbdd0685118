//! Email: what the service sends, and the sender that delivers the outbox.
//!
//! Nothing is sent from inside a request. A request that causes an email (a signup, a
//! forgotten password, a password change) writes the message's row into `email_outbox` in
//! the same transaction as the change that causes it (`db::secrets`, `db::users`,
//! `db::sessions`) and returns; so a slow or failing mail server never slows or fails a
//! request, and "this account exists" takes as long as "it does not". The [`sender`] task of
//! every instance delivers the rows.
//!
//! - [`secrets`]: the link's token and the code, made from a seed the outbox row keeps, and
//!   the keyed hashes `one_time_secrets` keeps.
//! - [`templates`]: subject, text and HTML of each [`Kind`].
//! - [`transport`]: SMTP with lettre, or development's log mailer.
//! - [`sender`]: claims due rows, sends them, records each outcome, retries with backoff.

pub mod secrets;
pub mod sender;
pub mod templates;
pub mod transport;

/// The kinds of message, as `email_outbox.kind` names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// The link and code that prove an address (signup, resend).
    VerifyEmail,
    /// The link and code that set a new password (forgot password).
    PasswordReset,
    /// The notice that the password was changed (change or reset).
    PasswordChanged,
    /// The link that confirms a change of address, sent to the new address.
    EmailChangeConfirm,
    /// The notice of a requested change, with its "this wasn't me" link, sent to the
    /// current address.
    EmailChangeNotice,
    /// The notice that the address was changed, sent to both the old and the new one.
    EmailChanged,
    /// The last notice to a deleted account's address.
    AccountDeleted,
    /// The notice that a second factor was added.
    MfaEnrolled,
    /// The notice that a second factor was removed (by the owner, or an admin's reset).
    MfaRemoved,
    /// The notice that wrong codes locked the second factor.
    MfaLocked,
    /// The notice that a recovery code was used, with how many are left.
    RecoveryCodeUsed,
    /// The notice that a passkey was added.
    PasskeyAdded,
    /// The notice that a passkey was removed.
    PasskeyRemoved,
    /// The notice that an API key was made (its prefix in the detail).
    ApiKeyCreated,
}

impl Kind {
    pub const ALL: [Kind; 14] = [
        Kind::VerifyEmail,
        Kind::PasswordReset,
        Kind::PasswordChanged,
        Kind::EmailChangeConfirm,
        Kind::EmailChangeNotice,
        Kind::EmailChanged,
        Kind::AccountDeleted,
        Kind::MfaEnrolled,
        Kind::MfaRemoved,
        Kind::MfaLocked,
        Kind::RecoveryCodeUsed,
        Kind::PasskeyAdded,
        Kind::PasskeyRemoved,
        Kind::ApiKeyCreated,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::VerifyEmail => "verify_email",
            Kind::PasswordReset => "password_reset",
            Kind::PasswordChanged => "password_changed",
            Kind::EmailChangeConfirm => "email_change_confirm",
            Kind::EmailChangeNotice => "email_change_notice",
            Kind::EmailChanged => "email_changed",
            Kind::AccountDeleted => "account_deleted",
            Kind::MfaEnrolled => "mfa_enrolled",
            Kind::MfaRemoved => "mfa_removed",
            Kind::MfaLocked => "mfa_locked",
            Kind::RecoveryCodeUsed => "recovery_code_used",
            Kind::PasskeyAdded => "passkey_added",
            Kind::PasskeyRemoved => "passkey_removed",
            Kind::ApiKeyCreated => "api_key_created",
        }
    }

    pub fn parse(raw: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == raw)
    }

    /// The page of `APP_BASE_URL` the message's link opens, for kinds that have one.
    pub fn page(self) -> Option<&'static str> {
        match self {
            Kind::VerifyEmail => Some("verify-email"),
            Kind::PasswordReset => Some("reset-password"),
            Kind::EmailChangeConfirm => Some("confirm-email-change"),
            Kind::EmailChangeNotice => Some("cancel-email-change"),
            Kind::PasswordChanged
            | Kind::EmailChanged
            | Kind::AccountDeleted
            | Kind::MfaEnrolled
            | Kind::MfaRemoved
            | Kind::MfaLocked
            | Kind::RecoveryCodeUsed
            | Kind::PasskeyAdded
            | Kind::PasskeyRemoved
            | Kind::ApiKeyCreated => None,
        }
    }

    /// Whether the message shows a code to type beside its link. The email-change links
    /// carry none: the change is confirmed or cancelled by its link only.
    pub fn has_code(self) -> bool {
        matches!(self, Kind::VerifyEmail | Kind::PasswordReset)
    }
}

/// The channel `LISTEN`/`NOTIFY` wakes the senders on; a transaction that queues a message
/// notifies it, and PostgreSQL delivers the notification when that transaction commits.
pub const CHANNEL: &str = "email_outbox";
