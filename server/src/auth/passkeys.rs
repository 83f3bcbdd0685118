//! The WebAuthn relying party (webauthn-rs), and the shapes its ceremonies take on the wire.
//!
//! Three ceremonies, each begun by one request and finished by another, with the library's
//! state kept in PostgreSQL in between (`db::passkeys`):
//!
//! - **registration**: creation options for the signed-in user (their existing passkeys
//!   excluded, so one authenticator is not registered twice), then the attestation checked
//!   into a [`Passkey`]. The options ask for a discoverable credential (`residentKey:
//!   "preferred"`), so the passkey can sign in without an email typed; the library itself
//!   asks for none, since some security keys cannot hold one, and it still accepts them.
//! - **sign-in** (discoverable): request options that name no credential; the assertion
//!   names its credential (and, from a discoverable one, its user handle), which finds the
//!   passkey and its owner.
//! - **second factor**: request options naming the account's passkeys, for a session that
//!   logged in with a password.
//!
//! User verification (a PIN or biometric on the authenticator) is required by every
//! ceremony, as the library does for passkeys: a passkey sign-in is two factors at once
//! (aal2). Origins and the relying party id are checked by the library against
//! [`WebauthnConfig`].

use std::time::Duration;

use serde_json::Value;
use uuid::Uuid;
use webauthn_rs::prelude::{
    AuthenticationResult, CredentialID, DiscoverableAuthentication, DiscoverableKey, Passkey,
    PasskeyAuthentication, PasskeyRegistration, PublicKeyCredential, RegisterPublicKeyCredential,
    Webauthn, WebauthnBuilder,
};

use crate::config::WebauthnConfig;
use crate::errors::ApiError;

/// How long a ceremony may take, from its options to its verification: the timeout the
/// options give the browser, and the life of its state.
pub const CEREMONY_TTL: Duration = Duration::from_secs(300);

pub struct RelyingParty {
    webauthn: Webauthn,
}

/// A ceremony begun: the options for the browser (`{"publicKey": …}`) and the state to
/// keep until it is finished.
pub struct Begun {
    pub options: Value,
    pub state: Value,
}

/// Why an assertion or attestation was refused, for the logs and events (never for the
/// caller, who only learns that it was).
#[derive(Debug)]
pub struct Refused(pub String);

impl RelyingParty {
    pub fn new(config: &WebauthnConfig) -> anyhow::Result<RelyingParty> {
        let mut builder = WebauthnBuilder::new(&config.rp_id, &config.origins[0])
            .map_err(|e| anyhow::anyhow!("WEBAUTHN_RP_ID and WEBAUTHN_RP_ORIGINS: {e:?}"))?
            .rp_name(&config.rp_name)
            .timeout(CEREMONY_TTL)
            .allow_any_port(config.any_port);
        for origin in &config.origins[1..] {
            builder = builder.append_allowed_origin(origin);
        }
        let webauthn = builder
            .build()
            .map_err(|e| anyhow::anyhow!("the passkeys' relying party: {e:?}"))?;
        Ok(RelyingParty { webauthn })
    }

    /// Begins registering a passkey for the user whose passkey handle is `handle`;
    /// `email` is the name the authenticator shows; `exclude`, the credentials the user
    /// has already.
    pub fn start_registration(
        &self,
        handle: Uuid,
        email: &str,
        exclude: Vec<CredentialID>,
    ) -> Result<Begun, ApiError> {
        let (options, state) = self
            .webauthn
            .start_passkey_registration(handle, email, email, Some(exclude))
            .map_err(internal)?;
        let mut options = serde_json::to_value(options).map_err(|e| internal(e.to_string()))?;
        // A discoverable credential where the authenticator can make one (see the module
        // docs); `requireResidentKey` stays false, as the library verifies it.
        if let Some(selection) = options
            .pointer_mut("/publicKey/authenticatorSelection")
            .and_then(Value::as_object_mut)
        {
            selection.insert("residentKey".into(), Value::from("preferred"));
        }
        Ok(Begun {
            options,
            state: state_value(&state)?,
        })
    }

    /// Checks a registration's attestation against its state: the new passkey.
    pub fn finish_registration(
        &self,
        credential: &RegisterPublicKeyCredential,
        state: Value,
    ) -> Result<Passkey, Refused> {
        let state: PasskeyRegistration = serde_json::from_value(state)
            .map_err(|e| Refused(format!("stored state unreadable: {e}")))?;
        self.webauthn
            .finish_passkey_registration(credential, &state)
            .map_err(|e| Refused(format!("{e:?}")))
    }

    /// Begins a discoverable sign-in: options naming no credential. The library asks for
    /// conditional mediation (autofill); that is the page's choice, so it is left out.
    pub fn start_sign_in(&self) -> Result<Begun, ApiError> {
        let (options, state) = self
            .webauthn
            .start_discoverable_authentication()
            .map_err(internal)?;
        let mut options = serde_json::to_value(options).map_err(|e| internal(e.to_string()))?;
        if let Some(o) = options.as_object_mut() {
            o.remove("mediation");
        }
        Ok(Begun {
            options,
            state: state_value(&state)?,
        })
    }

    /// Checks a sign-in's assertion, made by `passkey`, against its state.
    pub fn finish_sign_in(
        &self,
        credential: &PublicKeyCredential,
        state: Value,
        passkey: &Passkey,
    ) -> Result<AuthenticationResult, Refused> {
        let state: DiscoverableAuthentication = serde_json::from_value(state)
            .map_err(|e| Refused(format!("stored state unreadable: {e}")))?;
        self.webauthn
            .finish_discoverable_authentication_v2(
                credential,
                state,
                DiscoverableKey::from(passkey),
            )
            .map_err(|e| Refused(format!("{e:?}")))
    }

    /// Begins a second-factor assertion by one of `passkeys`.
    pub fn start_second_factor(&self, passkeys: &[Passkey]) -> Result<Begun, ApiError> {
        let (options, state) = self
            .webauthn
            .start_passkey_authentication(passkeys)
            .map_err(internal)?;
        Ok(Begun {
            options: serde_json::to_value(options).map_err(|e| internal(e.to_string()))?,
            state: state_value(&state)?,
        })
    }

    /// Checks a second-factor assertion against its state.
    pub fn finish_second_factor(
        &self,
        credential: &PublicKeyCredential,
        state: Value,
    ) -> Result<AuthenticationResult, Refused> {
        let state: PasskeyAuthentication = serde_json::from_value(state)
            .map_err(|e| Refused(format!("stored state unreadable: {e}")))?;
        self.webauthn
            .finish_passkey_authentication(credential, &state)
            .map_err(|e| Refused(format!("{e:?}")))
    }
}

/// The credential of a request body, or 422 naming the field: the browser's
/// `PublicKeyCredential` as JSON (binary fields base64url, as `toJSON()` makes them).
pub fn credential<T: serde::de::DeserializeOwned>(raw: Value) -> Result<T, ApiError> {
    serde_json::from_value(raw).map_err(|e| {
        ApiError::validation(
            "credential",
            format!("credential is not a WebAuthn credential as JSON: {e}"),
        )
    })
}

/// The counter and flags of a passkey as stored beside it, and the passkey as JSON.
pub struct Stored {
    pub credential_id: Vec<u8>,
    pub json: String,
    pub sign_count: i64,
}

impl Stored {
    /// A new passkey as stored: its counter is the attestation's, read from the library's
    /// serialised record (its stable storage format; there is no getter), 0 if absent.
    pub fn of(passkey: &Passkey) -> Result<Stored, ApiError> {
        let json = serde_json::to_value(passkey).map_err(|e| internal(e.to_string()))?;
        let sign_count = json
            .pointer("/cred/counter")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        Ok(Stored {
            credential_id: AsRef::<[u8]>::as_ref(passkey.cred_id()).to_vec(),
            json: json.to_string(),
            sign_count,
        })
    }
}

/// A new passkey's backup flags (eligible, backed up), as the library recorded them from
/// the attestation: read from its serialised form, which is the library's stable storage
/// format (it has no getter for them); false when absent.
pub fn backup_flags(passkey: &Passkey) -> (bool, bool) {
    let json = serde_json::to_value(passkey).unwrap_or_default();
    let flag = |name: &str| {
        json.pointer(&format!("/cred/{name}"))
            .and_then(Value::as_bool)
            .unwrap_or(false)
    };
    (flag("backup_eligible"), flag("backup_state"))
}

/// A stored passkey read back.
pub fn parse_stored(json: &str) -> Result<Passkey, ApiError> {
    serde_json::from_str(json)
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("stored passkey: {e}")))
}

fn state_value<T: serde::Serialize>(state: &T) -> Result<Value, ApiError> {
    serde_json::to_value(state).map_err(|e| internal(e.to_string()))
}

fn internal(e: impl std::fmt::Debug) -> ApiError {
    ApiError::Internal(anyhow::anyhow!("webauthn: {e:?}"))
}
