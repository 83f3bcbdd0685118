//! The route table: one [`Route`] per `operationId` of `openapi.yaml`, matched with matchit,
//! and a short second table of [`Page`]s that are deliberately not API operations.
//!
//! Paths are written exactly as in the spec (matchit ≥ 0.8 uses OpenAPI's `{param}` syntax),
//! and a test checks that the [`Route`] table and the spec list the same (method, path,
//! operationId) set, and that each route's declared [`Security`] is the spec's `security:`
//! for that operation, and that each route's required role ([`Route::required_role`]) is
//! the operation's `x-required-role` extension (the spec's way of saying which role a
//! bearer token must carry; a separate security scheme would make the generated client
//! ask for a second, identical token). Dispatch (`handlers::dispatch`) runs the guard for every route
//! declared [`Security::Bearer`], so the declaration is what protects a route.
//!
//! A path is resolved once per request ([`Router::resolve`]): the target, its parameters,
//! and the methods the path answers (`Allow`, also the CORS preflight's
//! `Access-Control-Allow-Methods`). An unknown path is 404; a known path with another
//! method is 405 with `Allow`.
//!
//! Why pages stay out of the spec: `/docs`, `/redoc`, the account pages emailed links open
//! (`/account/…`) and their assets are HTML, scripts and styles for people, and `/metrics`
//! is for Prometheus. Putting them in `openapi.yaml` would give the generated client methods
//! nobody should call and make the contract describe JavaScript bundles. Both tables share
//! one matchit router, so a path can be in only one of them, and the test harness holds
//! pages to their own rule (the content type each page declares), see
//! `tests/api/spec_check.rs`.

use http::Method;

use crate::auth::api_keys::Scope;

/// Who may call an operation, as its `security:` block in `openapi.yaml` says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Security {
    /// No credentials (`security: []`, or no block).
    Public,
    /// `Authorization: Bearer <access token>` of a live session (`bearerAuth`), checked by
    /// `auth::guard` before the handler runs.
    Bearer,
    /// Either (`security: [{}, {bearerAuth: []}]`): a request with an `Authorization`
    /// header is held to [`Security::Bearer`]'s check, one without is anonymous.
    Optional,
    /// Only an API key (`security: [{apiKeyAuth: []}]`) holding the scope of
    /// [`Route::api_key_scope`]; an access token is refused 403.
    ApiKey,
}

/// Every operation of the API. Dispatch is an exhaustive `match` on this enum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Route {
    Signup,
    Login,
    GetMe,
    DeleteMe,
    Logout,
    Refresh,
    ChangePassword,
    ListSessions,
    RevokeSession,
    ListEvents,
    ForgotPassword,
    CheckPasswordReset,
    ResetPassword,
    VerifyEmail,
    ResendVerification,
    AdminListUsers,
    AdminGetUser,
    AdminDeactivateUser,
    AdminReactivateUser,
    AdminListSessions,
    AdminEndSessions,
    AdminEndSession,
    AdminSetRoles,
    AdminSendPasswordReset,
    AdminListUserEvents,
    AdminListEvents,
    AdminDeleteUser,
    RequestEmailChange,
    ConfirmEmailChange,
    CancelEmailChange,
    EnrolTotp,
    ConfirmTotp,
    VerifyMfa,
    ListMfaFactors,
    RemoveMfaFactor,
    GetRecoveryCodesStatus,
    RegenerateRecoveryCodes,
    AdminResetMfa,
    StartPasskeyRegistration,
    FinishPasskeyRegistration,
    StartPasskeyAuthentication,
    FinishPasskeyAuthentication,
    ListPasskeys,
    RenamePasskey,
    RemovePasskey,
    StartMfaPasskey,
    ListApiKeys,
    CreateApiKey,
    DeleteApiKey,
    IntrospectToken,
    Liveness,
    Readiness,
    OpenApiJson,
    OpenApiYaml,
    GetJwks,
    GetOpenIdConfiguration,
}

impl Route {
    pub const ALL: [Route; 56] = [
        Route::Signup,
        Route::Login,
        Route::GetMe,
        Route::DeleteMe,
        Route::Logout,
        Route::Refresh,
        Route::ChangePassword,
        Route::ListSessions,
        Route::RevokeSession,
        Route::ListEvents,
        Route::ForgotPassword,
        Route::CheckPasswordReset,
        Route::ResetPassword,
        Route::VerifyEmail,
        Route::ResendVerification,
        Route::AdminListUsers,
        Route::AdminGetUser,
        Route::AdminDeactivateUser,
        Route::AdminReactivateUser,
        Route::AdminListSessions,
        Route::AdminEndSessions,
        Route::AdminEndSession,
        Route::AdminSetRoles,
        Route::AdminSendPasswordReset,
        Route::AdminListUserEvents,
        Route::AdminListEvents,
        Route::AdminDeleteUser,
        Route::RequestEmailChange,
        Route::ConfirmEmailChange,
        Route::CancelEmailChange,
        Route::EnrolTotp,
        Route::ConfirmTotp,
        Route::VerifyMfa,
        Route::ListMfaFactors,
        Route::RemoveMfaFactor,
        Route::GetRecoveryCodesStatus,
        Route::RegenerateRecoveryCodes,
        Route::AdminResetMfa,
        Route::StartPasskeyRegistration,
        Route::FinishPasskeyRegistration,
        Route::StartPasskeyAuthentication,
        Route::FinishPasskeyAuthentication,
        Route::ListPasskeys,
        Route::RenamePasskey,
        Route::RemovePasskey,
        Route::StartMfaPasskey,
        Route::ListApiKeys,
        Route::CreateApiKey,
        Route::DeleteApiKey,
        Route::IntrospectToken,
        Route::Liveness,
        Route::Readiness,
        Route::OpenApiJson,
        Route::OpenApiYaml,
        Route::GetJwks,
        Route::GetOpenIdConfiguration,
    ];

    /// (method, path, operationId), as in `openapi.yaml`.
    pub fn spec(self) -> (Method, &'static str, &'static str) {
        match self {
            Route::Signup => (Method::POST, "/auth/signup", "signup"),
            Route::Login => (Method::POST, "/auth/login", "login"),
            Route::GetMe => (Method::GET, "/auth/me", "get_me"),
            Route::DeleteMe => (Method::POST, "/auth/me/delete", "delete_me"),
            Route::Logout => (Method::POST, "/auth/logout", "logout"),
            Route::Refresh => (Method::POST, "/auth/refresh", "refresh"),
            Route::ChangePassword => (Method::POST, "/auth/password", "change_password"),
            Route::ListSessions => (Method::GET, "/auth/sessions", "list_sessions"),
            Route::RevokeSession => (
                Method::DELETE,
                "/auth/sessions/{session_id}",
                "revoke_session",
            ),
            Route::ListEvents => (Method::GET, "/auth/events", "list_events"),
            Route::ForgotPassword => (Method::POST, "/auth/password/forgot", "forgot_password"),
            Route::CheckPasswordReset => (
                Method::POST,
                "/auth/password/reset/check",
                "check_password_reset",
            ),
            Route::ResetPassword => (Method::POST, "/auth/password/reset", "reset_password"),
            Route::VerifyEmail => (Method::POST, "/auth/email/verify", "verify_email"),
            Route::ResendVerification => (
                Method::POST,
                "/auth/email/verify/resend",
                "resend_verification",
            ),
            Route::AdminListUsers => (Method::GET, "/admin/users", "admin_list_users"),
            Route::AdminGetUser => (Method::GET, "/admin/users/{user_id}", "admin_get_user"),
            Route::AdminDeactivateUser => (
                Method::POST,
                "/admin/users/{user_id}/deactivate",
                "admin_deactivate_user",
            ),
            Route::AdminReactivateUser => (
                Method::POST,
                "/admin/users/{user_id}/reactivate",
                "admin_reactivate_user",
            ),
            Route::AdminListSessions => (
                Method::GET,
                "/admin/users/{user_id}/sessions",
                "admin_list_sessions",
            ),
            Route::AdminEndSessions => (
                Method::DELETE,
                "/admin/users/{user_id}/sessions",
                "admin_end_sessions",
            ),
            Route::AdminEndSession => (
                Method::DELETE,
                "/admin/users/{user_id}/sessions/{session_id}",
                "admin_end_session",
            ),
            Route::AdminSetRoles => (
                Method::PUT,
                "/admin/users/{user_id}/roles",
                "admin_set_roles",
            ),
            Route::AdminSendPasswordReset => (
                Method::POST,
                "/admin/users/{user_id}/password-reset",
                "admin_send_password_reset",
            ),
            Route::AdminListUserEvents => (
                Method::GET,
                "/admin/users/{user_id}/events",
                "admin_list_user_events",
            ),
            Route::AdminListEvents => (Method::GET, "/admin/events", "admin_list_events"),
            Route::AdminDeleteUser => (
                Method::DELETE,
                "/admin/users/{user_id}",
                "admin_delete_user",
            ),
            Route::RequestEmailChange => {
                (Method::POST, "/auth/email/change", "request_email_change")
            }
            Route::ConfirmEmailChange => (
                Method::POST,
                "/auth/email/change/confirm",
                "confirm_email_change",
            ),
            Route::CancelEmailChange => (
                Method::POST,
                "/auth/email/change/cancel",
                "cancel_email_change",
            ),
            Route::EnrolTotp => (Method::POST, "/auth/mfa/totp", "enrol_totp"),
            Route::ConfirmTotp => (
                Method::POST,
                "/auth/mfa/totp/{factor_id}/confirm",
                "confirm_totp",
            ),
            Route::VerifyMfa => (Method::POST, "/auth/mfa/verify", "verify_mfa"),
            Route::ListMfaFactors => (Method::GET, "/auth/mfa/factors", "list_mfa_factors"),
            Route::RemoveMfaFactor => (
                Method::DELETE,
                "/auth/mfa/factors/{factor_id}",
                "remove_mfa_factor",
            ),
            Route::GetRecoveryCodesStatus => (
                Method::GET,
                "/auth/mfa/recovery-codes",
                "get_recovery_codes_status",
            ),
            Route::RegenerateRecoveryCodes => (
                Method::POST,
                "/auth/mfa/recovery-codes",
                "regenerate_recovery_codes",
            ),
            Route::AdminResetMfa => (
                Method::DELETE,
                "/admin/users/{user_id}/mfa",
                "admin_reset_mfa",
            ),
            Route::StartPasskeyRegistration => (
                Method::POST,
                "/auth/passkeys/registration/options",
                "start_passkey_registration",
            ),
            Route::FinishPasskeyRegistration => (
                Method::POST,
                "/auth/passkeys/registration/verify",
                "finish_passkey_registration",
            ),
            Route::StartPasskeyAuthentication => (
                Method::POST,
                "/auth/passkeys/authentication/options",
                "start_passkey_authentication",
            ),
            Route::FinishPasskeyAuthentication => (
                Method::POST,
                "/auth/passkeys/authentication/verify",
                "finish_passkey_authentication",
            ),
            Route::ListPasskeys => (Method::GET, "/auth/passkeys", "list_passkeys"),
            Route::RenamePasskey => (
                Method::PATCH,
                "/auth/passkeys/{passkey_id}",
                "rename_passkey",
            ),
            Route::RemovePasskey => (
                Method::DELETE,
                "/auth/passkeys/{passkey_id}",
                "remove_passkey",
            ),
            Route::StartMfaPasskey => (Method::POST, "/auth/mfa/passkey", "start_mfa_passkey"),
            Route::ListApiKeys => (Method::GET, "/auth/api-keys", "list_api_keys"),
            Route::CreateApiKey => (Method::POST, "/auth/api-keys", "create_api_key"),
            Route::DeleteApiKey => (Method::DELETE, "/auth/api-keys/{key_id}", "delete_api_key"),
            Route::IntrospectToken => (Method::POST, "/auth/introspect", "introspect_token"),
            Route::Liveness => (Method::GET, "/health/live", "liveness"),
            Route::Readiness => (Method::GET, "/health/ready", "readiness"),
            Route::OpenApiJson => (Method::GET, "/openapi.json", "get_openapi_json"),
            Route::OpenApiYaml => (Method::GET, "/openapi.yaml", "get_openapi_yaml"),
            Route::GetJwks => (Method::GET, "/.well-known/jwks.json", "get_jwks"),
            Route::GetOpenIdConfiguration => (
                Method::GET,
                "/.well-known/openid-configuration",
                "get_openid_configuration",
            ),
        }
    }

    /// Who may call it. Exhaustive on purpose: a new route must say.
    pub fn security(self) -> Security {
        match self {
            Route::GetMe
            | Route::DeleteMe
            | Route::Logout
            | Route::ChangePassword
            | Route::ListSessions
            | Route::RevokeSession
            | Route::ListEvents
            | Route::AdminListUsers
            | Route::AdminGetUser
            | Route::AdminDeactivateUser
            | Route::AdminReactivateUser
            | Route::AdminListSessions
            | Route::AdminEndSessions
            | Route::AdminEndSession
            | Route::AdminSetRoles
            | Route::AdminSendPasswordReset
            | Route::AdminListUserEvents
            | Route::AdminListEvents
            | Route::AdminDeleteUser
            | Route::RequestEmailChange
            | Route::EnrolTotp
            | Route::ConfirmTotp
            | Route::VerifyMfa
            | Route::ListMfaFactors
            | Route::RemoveMfaFactor
            | Route::GetRecoveryCodesStatus
            | Route::RegenerateRecoveryCodes
            | Route::AdminResetMfa
            | Route::StartPasskeyRegistration
            | Route::FinishPasskeyRegistration
            | Route::ListPasskeys
            | Route::RenamePasskey
            | Route::RemovePasskey
            | Route::StartMfaPasskey
            | Route::ListApiKeys
            | Route::CreateApiKey
            | Route::DeleteApiKey => Security::Bearer,
            Route::IntrospectToken => Security::ApiKey,
            Route::ResendVerification => Security::Optional,
            Route::Signup
            | Route::Login
            | Route::Refresh
            | Route::ForgotPassword
            | Route::CheckPasswordReset
            | Route::ResetPassword
            | Route::VerifyEmail
            | Route::ConfirmEmailChange
            | Route::CancelEmailChange
            | Route::StartPasskeyAuthentication
            | Route::FinishPasskeyAuthentication
            | Route::Liveness
            | Route::Readiness
            | Route::OpenApiJson
            | Route::OpenApiYaml
            | Route::GetJwks
            | Route::GetOpenIdConfiguration => Security::Public,
        }
    }
}

impl Route {
    /// The role the caller's token must carry (`x-required-role` in the spec), checked by
    /// the guard after the token itself. Exhaustive on purpose: a new route must say.
    pub fn required_role(self) -> Option<&'static str> {
        match self {
            Route::AdminListUsers
            | Route::AdminGetUser
            | Route::AdminDeactivateUser
            | Route::AdminReactivateUser
            | Route::AdminListSessions
            | Route::AdminEndSessions
            | Route::AdminEndSession
            | Route::AdminSetRoles
            | Route::AdminSendPasswordReset
            | Route::AdminListUserEvents
            | Route::AdminListEvents
            | Route::AdminDeleteUser
            | Route::AdminResetMfa => Some(ADMIN_ROLE),
            Route::Signup
            | Route::Login
            | Route::GetMe
            | Route::Logout
            | Route::Refresh
            | Route::ChangePassword
            | Route::ListSessions
            | Route::RevokeSession
            | Route::ListEvents
            | Route::ForgotPassword
            | Route::CheckPasswordReset
            | Route::ResetPassword
            | Route::VerifyEmail
            | Route::ResendVerification
            | Route::DeleteMe
            | Route::RequestEmailChange
            | Route::ConfirmEmailChange
            | Route::CancelEmailChange
            | Route::EnrolTotp
            | Route::ConfirmTotp
            | Route::VerifyMfa
            | Route::ListMfaFactors
            | Route::RemoveMfaFactor
            | Route::GetRecoveryCodesStatus
            | Route::RegenerateRecoveryCodes
            | Route::StartPasskeyRegistration
            | Route::FinishPasskeyRegistration
            | Route::StartPasskeyAuthentication
            | Route::FinishPasskeyAuthentication
            | Route::ListPasskeys
            | Route::RenamePasskey
            | Route::RemovePasskey
            | Route::StartMfaPasskey
            | Route::ListApiKeys
            | Route::CreateApiKey
            | Route::DeleteApiKey
            | Route::IntrospectToken
            | Route::Liveness
            | Route::Readiness
            | Route::OpenApiJson
            | Route::OpenApiYaml
            | Route::GetJwks
            | Route::GetOpenIdConfiguration => None,
        }
    }

    /// Whether a session that must still pass its second factor may call it
    /// (`x-allowed-before-mfa` in the spec): the few operations that let it step up, see
    /// who it is, or leave. Dispatch answers 403 `mfa_required` for every other protected
    /// route. Exhaustive on purpose: a new route must say.
    pub fn allowed_before_mfa(self) -> bool {
        match self {
            Route::GetMe
            | Route::Logout
            | Route::VerifyMfa
            | Route::ListMfaFactors
            | Route::EnrolTotp
            | Route::ConfirmTotp
            | Route::StartMfaPasskey => true,
            Route::Signup
            | Route::Login
            | Route::DeleteMe
            | Route::Refresh
            | Route::ChangePassword
            | Route::ListSessions
            | Route::RevokeSession
            | Route::ListEvents
            | Route::ForgotPassword
            | Route::CheckPasswordReset
            | Route::ResetPassword
            | Route::VerifyEmail
            | Route::ResendVerification
            | Route::AdminListUsers
            | Route::AdminGetUser
            | Route::AdminDeactivateUser
            | Route::AdminReactivateUser
            | Route::AdminListSessions
            | Route::AdminEndSessions
            | Route::AdminEndSession
            | Route::AdminSetRoles
            | Route::AdminSendPasswordReset
            | Route::AdminListUserEvents
            | Route::AdminListEvents
            | Route::AdminDeleteUser
            | Route::AdminResetMfa
            | Route::RequestEmailChange
            | Route::ConfirmEmailChange
            | Route::CancelEmailChange
            | Route::RemoveMfaFactor
            | Route::GetRecoveryCodesStatus
            | Route::RegenerateRecoveryCodes
            | Route::StartPasskeyRegistration
            | Route::FinishPasskeyRegistration
            | Route::StartPasskeyAuthentication
            | Route::FinishPasskeyAuthentication
            | Route::ListPasskeys
            | Route::RenamePasskey
            | Route::RemovePasskey
            | Route::ListApiKeys
            | Route::CreateApiKey
            | Route::DeleteApiKey
            | Route::IntrospectToken
            | Route::Liveness
            | Route::Readiness
            | Route::OpenApiJson
            | Route::OpenApiYaml
            | Route::GetJwks
            | Route::GetOpenIdConfiguration => false,
        }
    }

    /// The scope an API key must hold to call it (`x-api-key-scope`, and `apiKeyAuth` in
    /// the operation's `security:`); `None`: the route refuses every API key (403
    /// `insufficient_scope`). Exhaustive on purpose: a new route must say.
    pub fn api_key_scope(self) -> Option<Scope> {
        match self {
            Route::GetMe => Some(Scope::AccountRead),
            Route::IntrospectToken => Some(Scope::Introspect),
            Route::Signup
            | Route::Login
            | Route::DeleteMe
            | Route::Logout
            | Route::Refresh
            | Route::ChangePassword
            | Route::ListSessions
            | Route::RevokeSession
            | Route::ListEvents
            | Route::ForgotPassword
            | Route::CheckPasswordReset
            | Route::ResetPassword
            | Route::VerifyEmail
            | Route::ResendVerification
            | Route::AdminListUsers
            | Route::AdminGetUser
            | Route::AdminDeactivateUser
            | Route::AdminReactivateUser
            | Route::AdminListSessions
            | Route::AdminEndSessions
            | Route::AdminEndSession
            | Route::AdminSetRoles
            | Route::AdminSendPasswordReset
            | Route::AdminListUserEvents
            | Route::AdminListEvents
            | Route::AdminDeleteUser
            | Route::RequestEmailChange
            | Route::ConfirmEmailChange
            | Route::CancelEmailChange
            | Route::EnrolTotp
            | Route::ConfirmTotp
            | Route::VerifyMfa
            | Route::ListMfaFactors
            | Route::RemoveMfaFactor
            | Route::GetRecoveryCodesStatus
            | Route::RegenerateRecoveryCodes
            | Route::AdminResetMfa
            | Route::StartPasskeyRegistration
            | Route::FinishPasskeyRegistration
            | Route::StartPasskeyAuthentication
            | Route::FinishPasskeyAuthentication
            | Route::ListPasskeys
            | Route::RenamePasskey
            | Route::RemovePasskey
            | Route::StartMfaPasskey
            | Route::ListApiKeys
            | Route::CreateApiKey
            | Route::DeleteApiKey
            | Route::Liveness
            | Route::Readiness
            | Route::OpenApiJson
            | Route::OpenApiYaml
            | Route::GetJwks
            | Route::GetOpenIdConfiguration => None,
        }
    }
}

/// The role this service itself checks: the admin API's.
pub const ADMIN_ROLE: &str = "admin";

/// Everything served that is not an API operation. All are `GET`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Page {
    /// Swagger UI on the server's own contract.
    Docs,
    /// ReDoc on the server's own contract.
    Redoc,
    /// The scripts and styles both pages load (embedded in the binary).
    DocsAsset,
    /// The page a password-reset email links to (`APP_BASE_URL`'s default is this server's
    /// `/account`). Served whatever `DOCS_ENABLED` says: it is part of the product.
    ResetPassword,
    /// The page a verification email links to.
    VerifyEmail,
    /// The page an email-change confirmation links to.
    ConfirmEmailChange,
    /// The page the "this wasn't me" link of an email-change notice opens.
    CancelEmailChange,
    /// Signing in with a password or a passkey and adding a passkey: no email links to it;
    /// it is the reference page for a front end's passkey calls.
    Passkeys,
    /// The script and style of the account pages.
    AccountAsset,
    /// The Prometheus scrape, on this port only with `METRICS_PUBLIC=true`.
    Metrics,
}

impl Page {
    pub const ALL: [Page; 10] = [
        Page::Docs,
        Page::Redoc,
        Page::DocsAsset,
        Page::ResetPassword,
        Page::VerifyEmail,
        Page::ConfirmEmailChange,
        Page::CancelEmailChange,
        Page::Passkeys,
        Page::AccountAsset,
        Page::Metrics,
    ];

    pub fn path(self) -> &'static str {
        match self {
            Page::Docs => "/docs",
            Page::Redoc => "/redoc",
            Page::DocsAsset => "/docs/assets/{*file}",
            Page::ResetPassword => "/account/reset-password",
            Page::VerifyEmail => "/account/verify-email",
            Page::ConfirmEmailChange => "/account/confirm-email-change",
            Page::CancelEmailChange => "/account/cancel-email-change",
            Page::Passkeys => "/account/passkeys",
            Page::AccountAsset => "/account/assets/{*file}",
            Page::Metrics => "/metrics",
        }
    }

    /// The label of its requests in the metrics.
    pub fn name(self) -> &'static str {
        match self {
            Page::Docs => "docs",
            Page::Redoc => "redoc",
            Page::DocsAsset => "docs_asset",
            Page::ResetPassword => "account_reset_password",
            Page::VerifyEmail => "account_verify_email",
            Page::ConfirmEmailChange => "account_confirm_email_change",
            Page::CancelEmailChange => "account_cancel_email_change",
            Page::Passkeys => "account_passkeys",
            Page::AccountAsset => "account_asset",
            Page::Metrics => "metrics",
        }
    }
}

/// What a (method, path) pair is answered by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Target {
    Api(Route),
    Page(Page),
}

/// The targets sharing one path, and the `Allow` header for it.
struct PathTargets {
    targets: Vec<(Method, Target)>,
    allow: String,
}

/// The path parameters of a matched route (`{name}` segments), usually none.
#[derive(Debug, Default, Clone)]
pub struct Params(Vec<(String, String)>);

impl Params {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// What a (method, path) pair resolved to.
pub enum Resolved<'a> {
    Found {
        target: Target,
        params: Params,
        /// The methods the path answers, for a CORS preflight.
        allow: &'a str,
    },
    /// A known path, another method; `allow` lists the path's methods.
    MethodNotAllowed {
        allow: &'a str,
    },
    NotFound,
}

impl<'a> Resolved<'a> {
    /// The methods the path answers (`None`: unknown path).
    pub fn allow(&self) -> Option<&'a str> {
        match self {
            Resolved::Found { allow, .. } | Resolved::MethodNotAllowed { allow } => Some(allow),
            Resolved::NotFound => None,
        }
    }

    /// The matched target, if the method matched too.
    pub fn target(&self) -> Option<Target> {
        match self {
            Resolved::Found { target, .. } => Some(*target),
            _ => None,
        }
    }
}

pub struct Router {
    paths: matchit::Router<PathTargets>,
}

impl Router {
    /// The API routes, the account pages, the documentation pages if `docs`
    /// (`DOCS_ENABLED`), and `/metrics` if `public_metrics`.
    pub fn new(public_metrics: bool, docs: bool) -> Router {
        let api = Route::ALL.into_iter().map(|route| {
            let (method, path, _) = route.spec();
            (method, path, Target::Api(route))
        });
        let pages = Page::ALL
            .into_iter()
            .filter(|page| match page {
                Page::Metrics => public_metrics,
                Page::Docs | Page::Redoc | Page::DocsAsset => docs,
                Page::ResetPassword
                | Page::VerifyEmail
                | Page::ConfirmEmailChange
                | Page::CancelEmailChange
                | Page::Passkeys
                | Page::AccountAsset => true,
            })
            .map(|page| (Method::GET, page.path(), Target::Page(page)));
        let mut by_path: Vec<(&'static str, Vec<(Method, Target)>)> = Vec::new();
        for (method, path, target) in api.chain(pages) {
            match by_path.iter_mut().find(|(p, _)| *p == path) {
                Some((_, targets)) => targets.push((method, target)),
                None => by_path.push((path, vec![(method, target)])),
            }
        }
        let mut paths = matchit::Router::new();
        for (path, targets) in by_path {
            let mut methods: Vec<&str> = targets.iter().map(|(m, _)| m.as_str()).collect();
            methods.push("OPTIONS");
            let allow = methods.join(", ");
            paths
                .insert(path, PathTargets { targets, allow })
                .expect("route and page paths are valid and distinct");
        }
        Router { paths }
    }

    pub fn resolve(&self, method: &Method, path: &str) -> Resolved<'_> {
        let Ok(matched) = self.paths.at(path) else {
            return Resolved::NotFound;
        };
        let entry = matched.value;
        match entry.targets.iter().find(|(m, _)| m == method) {
            Some((_, target)) => {
                let params = matched
                    .params
                    .iter()
                    .map(|(k, v)| (k.to_owned(), v.to_owned()));
                Resolved::Found {
                    target: *target,
                    params: Params(params.collect()),
                    allow: &entry.allow,
                }
            }
            None => Resolved::MethodNotAllowed {
                allow: &entry.allow,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    fn spec() -> serde_json::Value {
        serde_json::from_slice(crate::spec::JSON).unwrap()
    }

    /// The contract and the router must describe the same API.
    #[test]
    fn router_table_and_openapi_spec_list_the_same_operations() {
        let spec = spec();
        let mut from_spec = BTreeSet::new();
        for (path, item) in spec["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                from_spec.insert((
                    method.to_uppercase(),
                    path.clone(),
                    op["operationId"].as_str().unwrap().to_owned(),
                ));
            }
        }
        let from_router: BTreeSet<_> = Route::ALL
            .iter()
            .map(|r| {
                let (m, p, id) = r.spec();
                (m.to_string(), p.to_owned(), id.to_owned())
            })
            .collect();
        assert_eq!(from_router, from_spec);
    }

    /// Each route's declared security is its operation's `security:` block: a protected
    /// operation cannot be left open by the router, nor documented open while guarded.
    #[test]
    fn each_routes_security_is_the_one_its_operation_declares() {
        let spec = spec();
        assert!(
            spec.get("security").is_none(),
            "a top-level security block would apply to every operation; declare it per operation"
        );
        for route in Route::ALL {
            let (method, path, id) = route.spec();
            let op = &spec["paths"][path][method.as_str().to_lowercase()];
            let declared = match op.get("security").and_then(|s| s.as_array()) {
                None => Security::Public,
                Some(reqs) if reqs.is_empty() => Security::Public,
                Some(reqs) => {
                    let schemes: Vec<&str> = reqs
                        .iter()
                        .flat_map(|r| r.as_object().unwrap().keys().map(String::as_str))
                        .collect();
                    // An empty requirement (`{}`) beside it makes the token optional; an
                    // API key is an alternative the scope test below holds.
                    let anonymous = reqs.iter().any(|r| r.as_object().unwrap().is_empty());
                    match schemes.as_slice() {
                        ["bearerAuth"] | ["bearerAuth", "apiKeyAuth"] if anonymous => {
                            Security::Optional
                        }
                        ["bearerAuth"] | ["bearerAuth", "apiKeyAuth"] => Security::Bearer,
                        ["apiKeyAuth"] if !anonymous => Security::ApiKey,
                        other => panic!("{id}: unexpected security schemes {other:?}"),
                    }
                }
            };
            assert_eq!(route.security(), declared, "{id}");
        }
    }

    /// Each route's API-key scope is its operation's `x-api-key-scope`, and an operation
    /// names one exactly when its `security:` accepts `apiKeyAuth`: a key cannot reach an
    /// operation the contract does not open to keys, nor be refused where it says so.
    #[test]
    fn each_routes_api_key_scope_is_the_one_its_operation_declares() {
        let spec = spec();
        for route in Route::ALL {
            let (method, path, id) = route.spec();
            let op = &spec["paths"][path][method.as_str().to_lowercase()];
            let declared = op.get("x-api-key-scope").map(|s| s.as_str().unwrap());
            assert_eq!(route.api_key_scope().map(Scope::as_str), declared, "{id}");
            let accepts_keys = op["security"]
                .as_array()
                .is_some_and(|reqs| reqs.iter().any(|r| r.get("apiKeyAuth").is_some()));
            assert_eq!(
                accepts_keys,
                declared.is_some(),
                "{id}: apiKeyAuth and its scope"
            );
            if route.security() == Security::ApiKey {
                assert!(declared.is_some(), "{id}: a key-only route needs a scope");
            }
        }
    }

    /// Each route's required role is its operation's `x-required-role`, and only a
    /// protected operation can require one.
    #[test]
    fn each_routes_required_role_is_the_one_its_operation_declares() {
        let spec = spec();
        for route in Route::ALL {
            let (method, path, id) = route.spec();
            let op = &spec["paths"][path][method.as_str().to_lowercase()];
            let declared = op.get("x-required-role").map(|r| r.as_str().unwrap());
            assert_eq!(route.required_role(), declared, "{id}");
            if declared.is_some() {
                assert_eq!(
                    route.security(),
                    Security::Bearer,
                    "{id}: a role needs a token"
                );
            }
        }
    }

    /// Each route's `allowed_before_mfa` is its operation's `x-allowed-before-mfa`, and only
    /// a protected operation says so (a public one needs no session at all).
    #[test]
    fn each_routes_mfa_exemption_is_the_one_its_operation_declares() {
        let spec = spec();
        for route in Route::ALL {
            let (method, path, id) = route.spec();
            let op = &spec["paths"][path][method.as_str().to_lowercase()];
            let declared = op
                .get("x-allowed-before-mfa")
                .is_some_and(|v| v.as_bool().unwrap());
            assert_eq!(route.allowed_before_mfa(), declared, "{id}");
            if declared {
                assert_eq!(route.security(), Security::Bearer, "{id}");
            }
        }
    }

    #[test]
    fn unknown_paths_and_wrong_methods_are_told_apart() {
        let router = Router::new(false, true);
        assert!(matches!(
            router.resolve(&Method::GET, "/auth/me"),
            Resolved::Found {
                target: Target::Api(Route::GetMe),
                ..
            }
        ));
        match router.resolve(&Method::DELETE, "/auth/sessions/abc") {
            Resolved::Found {
                target: Target::Api(Route::RevokeSession),
                params,
                allow,
            } => {
                assert_eq!(params.get("session_id"), Some("abc"));
                assert_eq!(allow, "DELETE, OPTIONS");
            }
            _ => panic!("expected the session route"),
        }
        assert!(matches!(
            router.resolve(&Method::GET, "/nope"),
            Resolved::NotFound
        ));
        match router.resolve(&Method::DELETE, "/auth/login") {
            Resolved::MethodNotAllowed { allow } => assert_eq!(allow, "POST, OPTIONS"),
            _ => panic!("expected 405"),
        }
    }

    #[test]
    fn pages_resolve_and_metrics_only_when_public() {
        let private = Router::new(false, true);
        assert!(matches!(
            private.resolve(&Method::GET, "/docs/assets/swagger-ui-1/swagger-ui.css"),
            Resolved::Found {
                target: Target::Page(Page::DocsAsset),
                ..
            }
        ));
        assert!(matches!(
            private.resolve(&Method::GET, "/redoc"),
            Resolved::Found {
                target: Target::Page(Page::Redoc),
                ..
            }
        ));
        assert!(matches!(
            private.resolve(&Method::GET, "/metrics"),
            Resolved::NotFound
        ));
        assert!(matches!(
            Router::new(true, true).resolve(&Method::GET, "/metrics"),
            Resolved::Found {
                target: Target::Page(Page::Metrics),
                ..
            }
        ));
        match private.resolve(&Method::POST, "/docs") {
            Resolved::MethodNotAllowed { allow } => assert_eq!(allow, "GET, OPTIONS"),
            _ => panic!("expected 405"),
        }
    }

    /// The pages emailed links open are there with the documentation off too; the
    /// documentation is not.
    #[test]
    fn account_pages_resolve_whether_or_not_the_docs_are_enabled() {
        for docs in [false, true] {
            let router = Router::new(false, docs);
            for (path, page) in [
                ("/account/reset-password", Page::ResetPassword),
                ("/account/verify-email", Page::VerifyEmail),
                ("/account/confirm-email-change", Page::ConfirmEmailChange),
                ("/account/cancel-email-change", Page::CancelEmailChange),
                ("/account/passkeys", Page::Passkeys),
                ("/account/assets/account.js", Page::AccountAsset),
            ] {
                assert_eq!(
                    router.resolve(&Method::GET, path).target(),
                    Some(Target::Page(page)),
                    "{path} with docs {docs}"
                );
            }
            assert_eq!(
                router.resolve(&Method::GET, "/docs").target().is_some(),
                docs
            );
        }
        match Router::new(false, false).resolve(&Method::POST, "/account/reset-password") {
            Resolved::MethodNotAllowed { allow } => assert_eq!(allow, "GET, OPTIONS"),
            _ => panic!("expected 405"),
        }
    }

    /// The pages are where `mail::Kind::page` sends a link under `APP_BASE_URL`'s default,
    /// `http://localhost:{PORT}/account`.
    #[test]
    fn every_emailed_link_has_its_page_under_account() {
        use crate::mail::Kind;
        let router = Router::new(false, false);
        for kind in Kind::ALL {
            if let Some(page) = kind.page() {
                let path = format!("/account/{page}");
                assert!(
                    matches!(
                        router.resolve(&Method::GET, &path).target(),
                        Some(Target::Page(_))
                    ),
                    "{kind:?} links to {path}, which is not served"
                );
            }
        }
    }
}
