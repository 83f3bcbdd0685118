//! The messages: a subject, a plain-text part and an HTML part for each [`Kind`], with
//! `APP_NAME` and links to `APP_BASE_URL`.
//!
//! Compiled in, as plain `format!` templates: a few short messages do not need a template
//! engine, and a typo in one is a compile error rather than a broken email. The HTML part
//! is the text part's content with its values escaped; it loads nothing (no images, no
//! tracking pixels, no remote styles), so a mail client has nothing to fetch and a mail
//! scanner nothing to follow but the one link. Every link is to the front end
//! (`APP_BASE_URL`), never to an address taken from a request.

use super::Kind;

/// What a message says, before it becomes MIME.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub subject: String,
    pub text: String,
    pub html: String,
}

/// The values a message is written from.
pub struct Context<'a> {
    pub app_name: &'a str,
    /// The link (with its token) and the code, for messages that carry a secret.
    pub secret: Option<(&'a str, &'a str)>,
    /// How long the secret is valid, in words ("30 minutes").
    pub valid_for: &'a str,
    /// The notice's one value, where it has one: how many recovery codes are left; who
    /// removed the second factors (`admin`).
    pub detail: Option<&'a str>,
}

pub fn render(kind: Kind, cx: &Context<'_>) -> Rendered {
    let app = cx.app_name;
    let (link, code) = cx.secret.unwrap_or(("", ""));
    let (subject, intro, action, after) = match kind {
        Kind::VerifyEmail => (
            format!("Confirm your email address for {app}"),
            format!("Someone, hopefully you, created a {app} account with this address."),
            "Confirm my email address",
            format!(
                "The link and the code work for {}. If you did not create this account, \
                 ignore this email: nothing happens without the link or the code.",
                cx.valid_for
            ),
        ),
        Kind::PasswordReset => (
            format!("Reset your {app} password"),
            format!("Someone, hopefully you, asked to reset the password of your {app} account."),
            "Choose a new password",
            format!(
                "The link and the code work once, for {}; asking again makes this one stop \
                 working. If you did not ask, ignore this email: your password stays as it is.",
                cx.valid_for
            ),
        ),
        Kind::PasswordChanged => (
            format!("Your {app} password was changed"),
            format!(
                "The password of your {app} account was just changed, and every session \
                 that was signed in with the old one has ended."
            ),
            "",
            "If this was not you, reset your password at once with \"Forgot password\" on \
             the sign-in page, and review your account's recent activity."
                .to_owned(),
        ),
        Kind::EmailChangeConfirm => (
            format!("Confirm your new email address for {app}"),
            format!(
                "Someone, hopefully you, asked to use this address for their {app} account \
                 instead of its current one."
            ),
            "Confirm the new address",
            format!(
                "The link works once, for {}; the address changes only when it is used. If \
                 you did not ask, ignore this email: nothing changes without the link.",
                cx.valid_for
            ),
        ),
        Kind::EmailChangeNotice => (
            format!("Your {app} email address is about to change"),
            format!(
                "Someone signed in to your {app} account asked to change its email address \
                 from this one to another. It changes only if the link sent to the new \
                 address is used within {}.",
                cx.valid_for
            ),
            "This wasn't me: cancel the change and sign out everywhere",
            "If it was you, there is nothing to do. If it was not, use the link above: it \
             cancels the change and ends every session of the account. Then reset your \
             password with \"Forgot password\" on the sign-in page, since whoever asked \
             knew it."
                .to_owned(),
        ),
        Kind::EmailChanged => (
            format!("The email address of your {app} account was changed"),
            format!(
                "The email address of your {app} account was just changed, and every other \
                 session of the account has ended. From now on the account signs in with \
                 the new address."
            ),
            "",
            "If this was not you, contact support at once: the account's old address no \
             longer signs in."
                .to_owned(),
        ),
        Kind::AccountDeleted => (
            format!("Your {app} account was deleted"),
            format!(
                "The {app} account of this address was just deleted: every session has \
                 ended, the password no longer works, and this address is free to sign up \
                 with again. This is the last email the account gets."
            ),
            "",
            "If this was not you, someone who knew your password deleted the account: \
             change that password wherever else you use it."
                .to_owned(),
        ),
        Kind::MfaEnrolled => (
            format!("Two-factor authentication was turned on for your {app} account"),
            format!(
                "An authenticator app was just added to your {app} account as a second \
                 factor: from now on, signing in also asks for its code."
            ),
            "",
            "If this was not you, someone knows your password: reset it at once with \
             \"Forgot password\" on the sign-in page, then contact support to remove the \
             factor they added."
                .to_owned(),
        ),
        Kind::MfaRemoved => (
            format!("A second factor was removed from your {app} account"),
            match cx.detail {
                Some("admin") => format!(
                    "At a support request, an administrator removed every second factor of \
                     your {app} account and signed it out everywhere: it now signs in with \
                     the password alone."
                ),
                _ => format!("An authenticator app was just removed from your {app} account."),
            },
            "",
            "If this was not you, contact support at once and reset your password with \
             \"Forgot password\" on the sign-in page."
                .to_owned(),
        ),
        Kind::MfaLocked => (
            format!("Too many wrong codes for your {app} account"),
            format!(
                "Someone who knows the password of your {app} account entered wrong \
                 two-factor codes too many times, so the second factor is locked for a \
                 while."
            ),
            "",
            "If this was not you, your password is known to someone else: reset it with \
             \"Forgot password\" on the sign-in page. Your account stayed protected by its \
             second factor."
                .to_owned(),
        ),
        Kind::RecoveryCodeUsed => (
            format!("A recovery code of your {app} account was used"),
            format!(
                "A recovery code was just used to sign in to your {app} account; {} left.",
                match cx.detail {
                    Some("1") => "1 code is".to_owned(),
                    Some(n) => format!("{n} codes are"),
                    None => "some codes are".to_owned(),
                }
            ),
            "",
            "Each code works once. If this was not you, reset your password with \"Forgot \
             password\" on the sign-in page and make new recovery codes."
                .to_owned(),
        ),
        Kind::PasskeyAdded => (
            format!("A passkey was added to your {app} account"),
            format!(
                "A passkey was just added to your {app} account: from now on, it signs in \
                 with no password, on the device or password manager that holds it."
            ),
            "",
            "If this was not you, someone signed in to your account: reset your password \
             with \"Forgot password\" on the sign-in page, remove the passkey from your \
             account's passkeys, and contact support."
                .to_owned(),
        ),
        Kind::ApiKeyCreated => (
            format!("An API key was made for your {app} account"),
            format!(
                "An API key{} was just made for your {app} account: until it expires or is \
                 revoked, a program holding it can act for the account within the key's \
                 scopes.",
                match cx.detail {
                    Some(prefix) => format!(" ({prefix}…)"),
                    None => String::new(),
                }
            ),
            "",
            "If this was not you, someone signed in to your account: revoke the key in your \
             account's API keys, reset your password with \"Forgot password\" on the \
             sign-in page (which revokes every key), and contact support."
                .to_owned(),
        ),
        Kind::PasskeyRemoved => (
            format!("A passkey was removed from your {app} account"),
            format!("A passkey was just removed from your {app} account: it no longer signs in."),
            "",
            "If this was not you, someone signed in to your account: reset your password \
             with \"Forgot password\" on the sign-in page, and contact support."
                .to_owned(),
        ),
    };
    let code = kind.has_code().then_some(code);
    let text = match (cx.secret, code) {
        (Some(_), Some(code)) => format!(
            "{intro}\n\n{action}:\n{link}\n\nOr enter this code: {code}\n\n{after}\n\n-- \n{app}\n"
        ),
        (Some(_), None) => format!("{intro}\n\n{action}:\n{link}\n\n{after}\n\n-- \n{app}\n"),
        (None, _) => format!("{intro}\n\n{after}\n\n-- \n{app}\n"),
    };
    let body = match (cx.secret, code) {
        (Some(_), Some(code)) => format!(
            "<p>{}</p>\n<p><a href=\"{}\">{}</a></p>\n<p>Or enter this code: \
             <strong style=\"font-family:monospace;font-size:1.3em\">{}</strong></p>\n<p>{}</p>",
            escape(&intro),
            escape(link),
            escape(action),
            escape(code),
            escape(&after)
        ),
        (Some(_), None) => format!(
            "<p>{}</p>\n<p><a href=\"{}\">{}</a></p>\n<p>{}</p>",
            escape(&intro),
            escape(link),
            escape(action),
            escape(&after)
        ),
        (None, _) => format!("<p>{}</p>\n<p>{}</p>", escape(&intro), escape(&after)),
    };
    let html = format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{}</title></head>\n\
         <body style=\"font-family:sans-serif;line-height:1.5\">\n{body}\n<p>&mdash; {}</p>\n\
         </body></html>\n",
        escape(&subject),
        escape(app)
    );
    Rendered {
        subject,
        text,
        html,
    }
}

/// HTML text and attribute escaping.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reset_carries_its_link_and_code_in_both_parts_and_loads_nothing() {
        let link = "https://app.example.com/reset-password#token=abc";
        let r = render(
            Kind::PasswordReset,
            &Context {
                app_name: "Job<Path>",
                secret: Some((link, "12345678")),
                valid_for: "30 minutes",
                detail: None,
            },
        );
        assert!(r.text.contains(link) && r.text.contains("12345678"));
        assert!(r.html.contains(&format!("href=\"{link}\"")));
        assert!(r.html.contains("12345678"));
        assert!(
            r.html.contains("Job&lt;Path&gt;"),
            "the app name is escaped"
        );
        assert!(!r.html.contains("<img") && !r.html.contains("src="));
        assert_eq!(r.html.matches("href=").count(), 1);
    }

    #[test]
    fn a_notice_has_no_link() {
        let r = render(
            Kind::PasswordChanged,
            &Context {
                app_name: "JobPath",
                secret: None,
                valid_for: "",
                detail: None,
            },
        );
        assert!(!r.text.contains("http") && !r.html.contains("href"));
    }

    /// The email-change messages: the two with a link carry no code, and the notice after
    /// the change has no link at all.
    #[test]
    fn email_change_messages_carry_their_link_only() {
        let link = "https://app.example.com/cancel-email-change#token=abc";
        for kind in [Kind::EmailChangeConfirm, Kind::EmailChangeNotice] {
            let r = render(
                kind,
                &Context {
                    app_name: "JobPath",
                    secret: Some((link, "12345678")),
                    valid_for: "60 minutes",
                    detail: None,
                },
            );
            assert!(
                r.text.contains(link) && r.text.contains("60 minutes"),
                "{kind:?}"
            );
            assert!(!r.text.contains("12345678") && !r.html.contains("12345678"));
            assert_eq!(r.html.matches("href=").count(), 1);
        }
        let r = render(
            Kind::EmailChanged,
            &Context {
                app_name: "JobPath",
                secret: None,
                valid_for: "",
                detail: None,
            },
        );
        assert!(!r.text.contains("http") && !r.html.contains("href"));
    }

    #[test]
    fn the_deletion_notice_says_the_address_is_free_and_has_no_link() {
        let r = render(
            Kind::AccountDeleted,
            &Context {
                app_name: "JobPath",
                secret: None,
                valid_for: "",
                detail: None,
            },
        );
        assert_eq!(r.subject, "Your JobPath account was deleted");
        assert!(r.text.contains("free to sign up with again"));
        assert!(!r.text.contains("http") && !r.html.contains("href"));
    }

    #[test]
    fn the_recovery_code_notice_says_how_many_are_left() {
        let r = render(
            Kind::RecoveryCodeUsed,
            &Context {
                app_name: "JobPath",
                secret: None,
                valid_for: "",
                detail: Some("9"),
            },
        );
        assert!(r.text.contains("9 codes are left"), "{}", r.text);
        assert!(r.html.contains("9 codes are left"));
        assert!(!r.text.contains("http") && !r.html.contains("href"));
    }
}
