//! Reading single variables: [`Vars`] turns a lookup function into parsed, range-checked
//! values, so that every error has one shape — it names the variable, the value it got, and
//! what was expected (a type, or a range).
//!
//! Every read goes through [`Vars::get`], which insists (in debug builds, so in every test)
//! that the variable is in [`super::VARIABLES`]: a variable the code reads but the list,
//! `check-config`, `.env.example` and `docs/configuration.md` do not know cannot slip in.

use std::fmt::Display;
use std::ops::{Bound, RangeBounds};
use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context as _, anyhow, bail};

/// The configuration's view of the environment. Empty values count as unset.
pub struct Vars<F> {
    lookup: F,
}

impl<F: Fn(&str) -> Option<String>> Vars<F> {
    pub fn new(lookup: F) -> Self {
        Vars { lookup }
    }

    /// The trimmed value of `key`, or `None` when unset or empty.
    pub fn get(&self, key: &'static str) -> Option<String> {
        debug_assert!(
            super::VARIABLES.contains(&key),
            "{key} is read but missing from config::VARIABLES"
        );
        (self.lookup)(key)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    }

    /// `key` parsed with `parse`, or `default` when unset.
    pub fn parse_with<T>(
        &self,
        key: &'static str,
        default: T,
        parse: impl Fn(&str) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        match self.get(key) {
            None => Ok(default),
            Some(raw) => parse(&raw).with_context(|| format!("{key}: invalid value '{raw}'")),
        }
    }

    /// `key` parsed with its [`FromStr`], or `default` when unset.
    pub fn parse<T>(&self, key: &'static str, default: T) -> anyhow::Result<T>
    where
        T: FromStr,
        T::Err: std::error::Error + Send + Sync + 'static,
    {
        self.parse_with(key, default, |raw| Ok(raw.parse::<T>()?))
    }

    /// `key` parsed, or `default`, and within `range`; outside it is an error such as
    /// "BCRYPT_ROUNDS must be between 4 and 31, got 40".
    pub fn range<T>(
        &self,
        key: &'static str,
        default: T,
        range: impl RangeBounds<T>,
    ) -> anyhow::Result<T>
    where
        T: FromStr + PartialOrd + Display,
        T::Err: std::error::Error + Send + Sync + 'static,
    {
        let value = self.parse(key, default)?;
        if !range.contains(&value) {
            bail!("{key} must be {}, got {value}", describe(&range));
        }
        Ok(value)
    }

    /// A number of seconds (fractions allowed), more than 0 and at most an hour.
    pub fn seconds(&self, key: &'static str, default: f64) -> anyhow::Result<Duration> {
        let secs = self.range(
            key,
            default,
            (Bound::Excluded(0.0), Bound::Included(MAX_SECONDS)),
        )?;
        Ok(Duration::from_secs_f64(secs))
    }

    /// `true`/`false`, also `1`/`0`, `yes`/`no`, `on`/`off`.
    pub fn flag(&self, key: &'static str, default: bool) -> anyhow::Result<bool> {
        self.parse_with(key, default, |raw| {
            match raw.to_ascii_lowercase().as_str() {
                "1" | "true" | "yes" | "on" => Ok(true),
                "0" | "false" | "no" | "off" => Ok(false),
                _ => Err(anyhow!("expected true or false")),
            }
        })
    }
}

/// The upper bound of every [`Vars::seconds`] value: a wait longer than an hour is a typo.
pub const MAX_SECONDS: f64 = 3600.0;

/// A range in words: "between 1 and 1440", "at least 1", "more than 0 and at most 3600".
fn describe<T: Display>(range: &impl RangeBounds<T>) -> String {
    match (range.start_bound(), range.end_bound()) {
        (Bound::Included(a), Bound::Included(b)) => format!("between {a} and {b}"),
        (Bound::Included(a), Bound::Unbounded) => format!("at least {a}"),
        (Bound::Excluded(a), Bound::Included(b)) => format!("more than {a} and at most {b}"),
        (Bound::Unbounded, Bound::Included(b)) => format!("at most {b}"),
        (start, end) => format!("in {}..{}", bound(start), bound(end)),
    }
}

fn bound<T: Display>(b: Bound<&T>) -> String {
    match b {
        Bound::Included(v) => format!("={v}"),
        Bound::Excluded(v) => v.to_string(),
        Bound::Unbounded => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(
        pairs: &'static [(&'static str, &'static str)],
    ) -> Vars<impl Fn(&str) -> Option<String>> {
        Vars::new(move |key: &str| {
            pairs
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, v)| (*v).to_owned())
        })
    }

    #[test]
    fn a_value_outside_its_range_names_the_variable_the_range_and_the_value() {
        let v = vars(&[
            ("BCRYPT_ROUNDS", "40"),
            ("HASH_THREADS", "0"),
            ("DEBUG", "maybe"),
        ]);
        let err = v.range("BCRYPT_ROUNDS", 12u32, 4..=31).unwrap_err();
        assert_eq!(
            err.to_string(),
            "BCRYPT_ROUNDS must be between 4 and 31, got 40"
        );
        let err = v.range("HASH_THREADS", 2usize, 1..).unwrap_err();
        assert_eq!(err.to_string(), "HASH_THREADS must be at least 1, got 0");
        let err = v.flag("DEBUG", false).unwrap_err();
        assert_eq!(
            format!("{err:#}"),
            "DEBUG: invalid value 'maybe': expected true or false"
        );
    }

    #[test]
    fn unset_and_empty_values_take_the_default_and_the_default_is_range_checked_too() {
        let v = vars(&[("PORT", "  ")]);
        assert_eq!(v.parse("PORT", 8000u16).unwrap(), 8000);
        assert_eq!(
            v.range("MAX_CONNECTIONS", 1024usize, 1..=1_000_000)
                .unwrap(),
            1024
        );
        assert!(v.range("MAX_CONNECTIONS", 0usize, 1..=1_000_000).is_err());
    }

    #[test]
    fn seconds_are_more_than_zero_and_at_most_an_hour() {
        let err = vars(&[("SHUTDOWN_GRACE_SECONDS", "0")])
            .seconds("SHUTDOWN_GRACE_SECONDS", 30.0)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "SHUTDOWN_GRACE_SECONDS must be more than 0 and at most 3600, got 0"
        );
        let half =
            vars(&[("SHUTDOWN_GRACE_SECONDS", "0.5")]).seconds("SHUTDOWN_GRACE_SECONDS", 30.0);
        assert_eq!(half.unwrap(), Duration::from_millis(500));
        for bad in ["3601", "NaN", "inf", "-1"] {
            let v = Vars::new(move |_: &str| Some(bad.to_owned()));
            assert!(v.seconds("SHUTDOWN_GRACE_SECONDS", 30.0).is_err(), "{bad}");
        }
    }
}
