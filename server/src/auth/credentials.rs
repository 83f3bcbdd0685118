//! `Email` and `Password`: once a value of these types exists, it satisfies the policy
//! documented in `openapi.yaml` (`Credentials` schema), so handlers and the database layer
//! never re-check it. A new password (signup, password change) must also pass the password
//! policy ([`weakness`]): not one of the most common breached passwords, and not containing
//! the email's local part.

use unicode_normalization::UnicodeNormalization as _;
use unicode_properties::{GeneralCategory, UnicodeGeneralCategory as _};

use crate::errors::ApiError;

/// Longest address SMTP can carry (RFC 5321 path limit).
pub const EMAIL_MAX_CHARS: usize = 254;
/// Longest local part (RFC 5321).
pub const EMAIL_LOCAL_MAX_CHARS: usize = 64;
pub const PASSWORD_MIN_CHARS: usize = 8;
/// Generous for passphrases, small enough that hashing input stays trivially cheap.
pub const PASSWORD_MAX_CHARS: usize = 256;

/// A normalised email address, so that uniqueness and look-ups see one address however it
/// was typed: trimmed, NFKC-normalised and lower-cased ([`normalise`]), with the domain as
/// its IDNA A-label (`xn--…`).
///
/// NFKC, not NFC: besides the canonical equivalents NFC merges (a precomposed `é` and `e` +
/// combining accent), NFKC folds compatibility variants — fullwidth `ａｄａ`, ligatures such
/// as `ﬁ`, superscripts, circled letters — which look like, and are typed as, the plain
/// letters. An account key must err towards merging look-alikes: two accounts for what a
/// person reads as one address is the impersonation this prevents, and UTS 46 folds domains
/// the same way. Invisible characters (format characters such as zero-width spaces, soft
/// hyphens and bidi controls, and the other default-ignorable ones) are refused rather than
/// dropped, so what is stored is what the user sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Email(String);

impl Email {
    /// Validates an address for signup. Lengths are checked on the normalised value, the
    /// one stored: lower-casing can lengthen (`İ` becomes `i` + U+0307).
    pub fn parse(raw: &str) -> Result<Email, ApiError> {
        let bad = |message: &'static str| Err(ApiError::validation("email", message));
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return bad("Email must not be empty");
        }
        if trimmed.chars().count() > EMAIL_MAX_CHARS {
            return bad("Email must be at most 254 characters");
        }
        let email = normalise(trimmed);
        if email.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return bad("Email must not contain spaces or control characters");
        }
        if email.chars().any(is_invisible) {
            return bad(
                "Email must not contain invisible characters (zero-width, soft hyphen, direction controls)",
            );
        }
        let Some((local, domain)) = email.split_once('@') else {
            return bad("Email must contain '@'");
        };
        if local.is_empty() || domain.contains('@') {
            return bad("Email must have exactly one '@' with a name before it");
        }
        if local.chars().count() > EMAIL_LOCAL_MAX_CHARS {
            return bad("The part of the email before '@' must be at most 64 characters");
        }
        // UTS 46 with STD3 rules and DNS lengths: a label of at most 63 octets, no empty
        // label, no leading or trailing hyphen, letters, digits and hyphens once encoded.
        let Ok(domain) = idna::domain_to_ascii_strict(domain) else {
            return bad("Email domain must look like example.com");
        };
        if !domain.contains('.') || domain.split('.').any(str::is_empty) {
            return bad("Email domain must look like example.com");
        }
        let email = format!("{local}@{domain}");
        if email.chars().count() > EMAIL_MAX_CHARS {
            return bad("Email must be at most 254 characters");
        }
        Ok(Email(email))
    }

    /// Normalises an address typed at login as signup does, without judging its shape: an
    /// address that could never have signed up simply matches no account.
    pub fn normalise_for_lookup(raw: &str) -> Result<Email, ApiError> {
        // Only the raw value is held to the schema (`minLength: 1`, `maxLength: 254`); one
        // that trims to nothing is well-formed input that matches no account.
        if raw.is_empty() {
            return Err(ApiError::validation("email", "Email must not be empty"));
        }
        let email = raw.trim();
        if raw.chars().count() > EMAIL_MAX_CHARS {
            return Err(ApiError::validation(
                "email",
                "Email must be at most 254 characters",
            ));
        }
        let email = normalise(email);
        // A domain that has no A-label never signed up: keep it as typed, it matches nothing.
        let email = match email.split_once('@') {
            Some((local, domain)) => match idna::domain_to_ascii_strict(domain) {
                Ok(domain) => format!("{local}@{domain}"),
                Err(_) => email,
            },
            None => email,
        };
        Ok(Email(email))
    }

    /// Whether any account could have this address. Signup refuses control and invisible
    /// characters, and PostgreSQL cannot even store NUL in text, so such an address is not
    /// worth a query; nor is one longer than signup accepts.
    pub fn could_exist(&self) -> bool {
        !self.0.is_empty()
            && self.0.chars().count() <= EMAIL_MAX_CHARS
            && !self.0.chars().any(|c| c.is_control() || is_invisible(c))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// NFKC, lower case, NFKC again: lower-casing an NFKC string can leave it un-normalised
/// (a lower-case letter may compose with a following mark), and the stored key must be a
/// fixed point so that normalising it again changes nothing.
/// An address prefix (the admin list's `q`) normalised as stored addresses are (NFKC,
/// lower case), so that it matches what it looks like. A domain is stored in its ASCII
/// (`xn--`) form, which a prefix of an internationalised domain must use.
pub fn normalise_prefix(prefix: &str) -> String {
    normalise(prefix.trim())
}

fn normalise(email: &str) -> String {
    email
        .nfkc()
        .collect::<String>()
        .to_lowercase()
        .nfkc()
        .collect()
}

/// A character that renders as nothing, or only steers how its neighbours render: Unicode's
/// format characters (`Cf`: zero-width space and joiners, soft hyphen, bidi embeddings,
/// overrides, isolates and marks, word joiner, BOM, tags) and the default-ignorable code
/// points outside `Cf` (combining grapheme joiner, Hangul fillers, Mongolian and other
/// variation selectors).
fn is_invisible(c: char) -> bool {
    c.general_category() == GeneralCategory::Format
        || matches!(
            c,
            '\u{34f}'
                | '\u{115f}'
                | '\u{1160}'
                | '\u{17b4}'
                | '\u{17b5}'
                | '\u{180b}'..='\u{180f}'
                | '\u{3164}'
                | '\u{fe00}'..='\u{fe0f}'
                | '\u{ffa0}'
                | '\u{e0100}'..='\u{e01ef}'
        )
}

/// A password that satisfies the policy, NFKC-normalised (NIST SP 800-63B 5.1.1.2): the
/// same passphrase typed on another keyboard or input method (a precomposed `é` or `e` +
/// combining accent, fullwidth letters) is the same password. Lengths and the policy see
/// the normalised value, which is also what is hashed; the text as typed is kept only to
/// verify hashes made before normalisation ([`as_typed`](Password::as_typed)). `Debug`
/// never shows either.
#[derive(Clone)]
pub struct Password {
    typed: String,
    normalised: String,
}

impl std::fmt::Debug for Password {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

impl Password {
    fn new(typed: String) -> Password {
        let normalised = typed.nfkc().collect();
        Password { typed, normalised }
    }

    /// Validates a new password (signup, password change) for the account `email`: the
    /// length rules, then the policy ([`weakness`]). The field named in a length error is
    /// `field`; a policy refusal is [`ApiError::WeakPassword`].
    pub fn parse_new(
        raw: String,
        email: &Email,
        field: &'static str,
    ) -> Result<Password, ApiError> {
        let too_long = || {
            Err(ApiError::validation(
                field,
                "Password must be at most 256 characters",
            ))
        };
        // The typed length first: normalisation can lengthen a character eighteenfold, and
        // is not worth running on input that is refused anyway.
        if raw.chars().count() > PASSWORD_MAX_CHARS {
            return too_long();
        }
        let password = Password::new(raw);
        let chars = password.normalised.chars().count();
        // Both forms: the schema's minLength is the typed one's, and normalisation can
        // lengthen (`¾` is three characters once normalised).
        if chars < PASSWORD_MIN_CHARS || password.typed.chars().count() < PASSWORD_MIN_CHARS {
            return Err(ApiError::validation(
                field,
                "Password must be at least 8 characters",
            ));
        }
        if chars > PASSWORD_MAX_CHARS {
            return too_long();
        }
        if let Some(reason) = weakness(&password.normalised, email) {
            return Err(ApiError::WeakPassword(reason));
        }
        Ok(password)
    }

    /// Accepts any non-empty password of bounded length (login): the policy applies to new
    /// passwords, and a rule change must not lock existing users out.
    pub fn for_login(raw: String) -> Result<Password, ApiError> {
        if raw.is_empty() {
            return Err(ApiError::validation(
                "password",
                "Password must not be empty",
            ));
        }
        // The length as typed, as it was before passwords were normalised: a password
        // whose normalised form is longer (ligatures such as `ﬁ` expand) still logs in.
        if raw.chars().count() > PASSWORD_MAX_CHARS {
            return Err(ApiError::validation(
                "password",
                "Password must be at most 256 characters",
            ));
        }
        Ok(Password::new(raw))
    }

    /// The password, normalised: what new hashes are made of.
    pub fn expose(&self) -> &str {
        &self.normalised
    }

    /// The password exactly as the client sent it: hashes made before passwords were
    /// normalised are of this.
    pub fn as_typed(&self) -> &str {
        &self.typed
    }
}

/// How many of the most common breached passwords are refused outright.
pub const COMMON_PASSWORDS_REFUSED: usize = 10_000;
/// The longest of those passwords: a longer password can never be one of them (nor a case
/// or l33t variant of one), so zxcvbn's matcher need not run on it.
const LONGEST_COMMON_PASSWORD: usize = 18;
/// A local part shorter than this ("al", "x") occurs by chance in good passphrases.
const LOCAL_PART_MIN_CHARS: usize = 3;

/// Why a new password is refused by the policy, or `None` if it is acceptable.
///
/// Two rules, both about what an attacker tries first: the whole password is one of the
/// [`COMMON_PASSWORDS_REFUSED`] most frequent passwords of public breaches (zxcvbn's list),
/// in any case or with common l33t substitutions; or it contains the email's local part,
/// which anyone who knows the address can guess. Length, not composition, is what makes a
/// password strong, so there are no character-class rules: passphrases are welcome.
pub fn weakness(password: &str, email: &Email) -> Option<&'static str> {
    let lowered = password.to_lowercase();
    let local = email.as_str().split('@').next().unwrap_or_default();
    if local.chars().count() >= LOCAL_PART_MIN_CHARS && lowered.contains(local) {
        return Some("Password must not contain the part of your email address before '@'");
    }
    if is_common(password) {
        return Some(
            "Password is one of the most commonly used passwords; choose a longer or less predictable one",
        );
    }
    None
}

/// Whether zxcvbn explains the whole password as one entry of its breached-password list
/// ranked within [`COMMON_PASSWORDS_REFUSED`] (a case or l33t variant counts too).
fn is_common(password: &str) -> bool {
    if password.chars().count() > LONGEST_COMMON_PASSWORD {
        return false;
    }
    let entropy = zxcvbn::zxcvbn(password, &[]);
    let [only] = entropy.sequence() else {
        return false;
    };
    let whole = only.i == 0 && only.j + 1 == password.chars().count();
    match &only.pattern {
        // zxcvbn does not export the type of `dictionary_name`; its Debug name is the
        // only way to tell its breach list from its word lists (a unit test pins it).
        zxcvbn::matching::patterns::MatchPattern::Dictionary(d) => {
            whole
                && !d.reversed
                && d.rank <= COMMON_PASSWORDS_REFUSED
                && format!("{:?}", d.dictionary_name) == "Passwords"
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_trimmed_and_lower_cased() {
        let e = Email::parse("  Ada.Lovelace@Example.COM ").unwrap();
        assert_eq!(e.as_str(), "ada.lovelace@example.com");
    }

    #[test]
    fn every_spelling_of_an_address_has_one_key() {
        for spelling in [
            "jos\u{e9}@b\u{fc}cher.example",
            "jose\u{301}@bu\u{308}cher.example",
            "\u{ff2a}OS\u{c9}\u{ff20}B\u{dc}CHER.example",
            "jos\u{e9}@xn--bcher-kva.example",
        ] {
            let key = Email::parse(spelling).unwrap();
            assert_eq!(
                key.as_str(),
                "jos\u{e9}@xn--bcher-kva.example",
                "{spelling:?}"
            );
            assert_eq!(Email::normalise_for_lookup(spelling).unwrap(), key);
            // A fixed point: the stored key normalises to itself.
            assert_eq!(Email::parse(key.as_str()).unwrap(), key);
        }
    }

    #[test]
    fn invisible_characters_and_lengthening_addresses_are_refused() {
        for bad in [
            "ada\u{200b}@example.com",
            "ada\u{ad}@example.com",
            "\u{202e}ada@example.com",
            "ada@exam\u{200d}ple.com",
            "ada\u{34f}@example.com",
        ] {
            assert!(Email::parse(bad).is_err(), "accepted {bad:?}");
            assert!(!Email::normalise_for_lookup(bad).unwrap().could_exist());
        }
        let local = format!("{}@example.com", "\u{130}".repeat(40));
        assert!(Email::parse(&local).is_err());
        let domain = format!("a@{}com", format!("{}.", "\u{130}".repeat(60)).repeat(4));
        assert!(Email::parse(&domain).is_err());
    }

    #[test]
    fn malformed_emails_are_refused() {
        let long_local = format!("{}@example.com", "a".repeat(65));
        let too_long = format!("{}@{}.com", "a".repeat(60), "b".repeat(200));
        for bad in [
            "",
            "   ",
            "ada",
            "ada@",
            "@example.com",
            "ada@example",
            "a b@example.com",
            "ada@exa mple.com",
            "ada\0@example.com",
            "ada\n@example.com",
            "a@b@example.com",
            "ada@-example.com",
            "ada@example..com",
            &long_local,
            &too_long,
        ] {
            assert!(Email::parse(bad).is_err(), "accepted {bad:?}");
        }
    }

    #[test]
    fn login_addresses_with_control_characters_cannot_exist() {
        assert!(
            Email::normalise_for_lookup("ada@example.com")
                .unwrap()
                .could_exist()
        );
        assert!(
            !Email::normalise_for_lookup("a\0da@example.com")
                .unwrap()
                .could_exist()
        );
        let blank = Email::normalise_for_lookup("\u{a0}").unwrap();
        assert!(!blank.could_exist(), "white space only matches no account");
        assert!(Email::normalise_for_lookup("").is_err());
        // The schema's maxLength is the raw value's: white space around it counts.
        let long = format!("\n{}@example.com", "a".repeat(EMAIL_MAX_CHARS - 12));
        assert_eq!(long.trim().chars().count(), EMAIL_MAX_CHARS);
        assert!(Email::normalise_for_lookup(&long).is_err());
        assert!(Email::normalise_for_lookup(long.trim()).is_ok());
    }

    #[test]
    fn a_new_password_is_too_short_if_either_form_is() {
        let email = Email::parse("someone@example.com").unwrap();
        // Seven characters as typed, nine once `¾` is normalised to `3⁄4`.
        let short = "¾v4Mq0z".to_owned();
        assert_eq!(short.chars().count(), 7);
        assert!(matches!(
            Password::parse_new(short, &email, "password"),
            Err(ApiError::Validation { .. })
        ));
        assert!(Password::parse_new("¾v4Mq0zk".to_owned(), &email, "password").is_ok());
    }

    fn ada() -> Email {
        Email::parse("ada.lovelace@example.com").unwrap()
    }

    #[test]
    fn password_length_counts_characters_not_bytes() {
        let new = |p: &str| Password::parse_new(p.to_owned(), &ada(), "password");
        assert!(new("tr0mb7x").is_err());
        assert!(new("tr0mb7xq").is_ok());
        // 64 two-byte characters = 128 bytes: far past bcrypt's 72, and accepted.
        assert!(new(&"é".repeat(64)).is_ok());
        assert!(new(&"x".repeat(257)).is_err());
        // Any character is fine: the HMAC pre-hash means bcrypt never sees a NUL.
        assert!(new("abc\0defgh").is_ok());
        assert!(Password::for_login("short".into()).is_ok());
        assert!(Password::for_login(String::new()).is_err());
    }

    #[test]
    fn lengths_are_of_the_normalised_password_but_a_login_is_never_refused_for_normalising() {
        let new = |p: &str| Password::parse_new(p.to_owned(), &ada(), "password");
        // U+FDFA is one character typed and 18 once NFKC-normalised.
        let ligature = "\u{fdfa}";
        assert_eq!(
            Password::for_login(ligature.into())
                .unwrap()
                .expose()
                .chars()
                .count(),
            18
        );
        assert!(
            new(&ligature.repeat(15)).is_err(),
            "270 characters normalised"
        );
        // Typed within the limit, longer normalised: such a password may exist from before
        // normalisation, and must still log in.
        assert!(Password::for_login(ligature.repeat(200)).is_ok());
        assert!(Password::for_login("x".repeat(257)).is_err());
        // Composed and decomposed forms are one password.
        assert_eq!(
            Password::for_login("cafe\u{301}".into()).unwrap().expose(),
            Password::for_login("caf\u{e9}".into()).unwrap().expose()
        );
    }

    #[test]
    fn the_most_common_passwords_and_their_variants_are_weak() {
        for weak in [
            "12345678",
            "password",
            "Password",
            "PASSWORD1",
            "p@ssw0rd",
            "qwertyuiop",
            "iloveyou",
            "sunshine",
            "football",
            "baseball",
            "trustno1",
        ] {
            assert!(
                matches!(
                    Password::parse_new(weak.into(), &ada(), "password"),
                    Err(ApiError::WeakPassword(_))
                ),
                "accepted {weak:?}"
            );
        }
    }

    #[test]
    fn passphrases_and_uncommon_passwords_are_accepted() {
        for fine in [
            "correct horse battery staple",
            "long enough",
            "an entirely new passphrase",
            "contract run passphrase",
            "a brand new passphrase",
            "hunter2hunter2",
            "Tr0ub4dor&3x",
            // Reversed breach entries are not the list's entries.
            "drowssap1",
        ] {
            assert!(
                Password::parse_new(fine.into(), &ada(), "password").is_ok(),
                "refused {fine:?}"
            );
        }
    }

    #[test]
    fn passwords_containing_the_email_local_part_are_weak() {
        let refused = |p: &str| {
            matches!(
                Password::parse_new(p.into(), &ada(), "password"),
                Err(ApiError::WeakPassword(_))
            )
        };
        assert!(refused("ada.lovelace1984"));
        assert!(refused("my ADA.LOVELACE pass"));
        // A very short local part is not a rule: "al" occurs in many good passphrases.
        let al = Email::parse("al@example.com").unwrap();
        assert!(Password::parse_new("always alert alpacas".into(), &al, "password").is_ok());
    }

    #[test]
    fn debug_never_shows_a_password() {
        let p = Password::for_login("hunter2hunter2".into()).unwrap();
        assert!(!format!("{p:?}").contains("hunter2"));
    }
}
