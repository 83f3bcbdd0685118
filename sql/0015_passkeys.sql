-- Passkeys (WebAuthn): the credentials users sign in with, and the ceremonies that are in
-- progress (handlers::passkeys, db::passkeys).
--
-- passkeys: one credential of a user. `passkey` is the relying-party library's own record
-- (webauthn-rs's Passkey: the public key, the credential id, its counter and backup flags);
-- `credential_id` and `sign_count` are copied out of it so that one credential belongs to
-- one account (UNIQUE) and the counter can be compared and advanced by one conditional
-- UPDATE: an assertion whose counter is not above the stored one (a replay, a cloned
-- authenticator, or a second request racing the first) changes nothing and is refused.
-- Authenticators without a counter always send 0, and 0 after 0 is accepted.
CREATE TABLE passkeys (
    id            uuid        NOT NULL,
    user_id       uuid        NOT NULL,
    credential_id bytea       NOT NULL,
    passkey       jsonb       NOT NULL,
    name          text        NOT NULL,
    sign_count    bigint      NOT NULL DEFAULT 0,
    backup_eligible boolean   NOT NULL DEFAULT false,
    backed_up     boolean     NOT NULL DEFAULT false,
    created_at    timestamptz NOT NULL DEFAULT now(),
    last_used_at  timestamptz,
    CONSTRAINT passkeys_pkey PRIMARY KEY (id),
    CONSTRAINT passkeys_credential_id_key UNIQUE (credential_id),
    CONSTRAINT passkeys_user_fkey FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE,
    CONSTRAINT passkeys_name_length CHECK (char_length(name) BETWEEN 1 AND 64),
    CONSTRAINT passkeys_sign_count CHECK (sign_count >= 0)
);
CREATE INDEX passkeys_user_idx ON passkeys (user_id, created_at);

-- The random user handle the account's passkeys carry (WebAuthn's user.id): never the
-- account's id, so an authenticator holds nothing that names the account elsewhere. Made at
-- the first registration; a discoverable sign-in's assertion names it, and it must be the
-- owner's of the credential used.
ALTER TABLE users ADD COLUMN passkey_handle uuid;
ALTER TABLE users ADD CONSTRAINT users_passkey_handle_key UNIQUE (passkey_handle);

-- A ceremony begun and not yet finished: the library's state (its challenge, the
-- credentials allowed), kept here so that any instance can finish what another began. It
-- is consumed by `DELETE … RETURNING`, so it is finished once at most, whatever the
-- concurrency, and it lives 5 minutes. A registration or second-factor ceremony belongs to
-- the session that began it; a sign-in ceremony to nobody until its assertion names a user.
CREATE TABLE passkey_ceremonies (
    id         uuid        NOT NULL,
    kind       text        NOT NULL,
    user_id    uuid,
    session_id uuid,
    state      jsonb       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    CONSTRAINT passkey_ceremonies_pkey PRIMARY KEY (id),
    CONSTRAINT passkey_ceremonies_user_fkey FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE,
    CONSTRAINT passkey_ceremonies_kind CHECK (kind IN ('registration', 'authentication', 'mfa')),
    CONSTRAINT passkey_ceremonies_owner CHECK ((kind = 'authentication') = (user_id IS NULL))
);
CREATE INDEX passkey_ceremonies_expires_idx ON passkey_ceremonies (expires_at);
-- A session keeps one live ceremony of each kind: beginning another replaces it.
CREATE INDEX passkey_ceremonies_session_idx ON passkey_ceremonies (session_id, kind);

-- The passkey a session signed in or stepped up with: removing that passkey ends the
-- session (a stolen device's sessions go with its passkey).
ALTER TABLE sessions ADD COLUMN passkey_id uuid;
ALTER TABLE sessions ADD CONSTRAINT sessions_passkey_fkey
    FOREIGN KEY (passkey_id) REFERENCES passkeys (id) ON DELETE SET NULL;
ALTER TABLE sessions DROP CONSTRAINT sessions_end_reason;
ALTER TABLE sessions ADD CONSTRAINT sessions_end_reason CHECK (
    end_reason IN ('logout', 'logout_global', 'logout_others', 'revoked', 'password_changed',
                   'refresh_reuse', 'evicted', 'password_reset',
                   'role_changed', 'deactivated', 'admin_revoked',
                   'email_changed', 'email_change_cancelled',
                   'account_deleted',
                   'mfa_enrolled', 'mfa_failed', 'mfa_reset',
                   'passkey_removed')
);

-- A session opened with a passkey records 'webauthn' in its methods; the notices of a
-- passkey added or removed; the events of the passkeys' life.
ALTER TABLE email_outbox DROP CONSTRAINT email_outbox_kind;
ALTER TABLE email_outbox ADD CONSTRAINT email_outbox_kind CHECK (
    kind IN ('verify_email', 'password_reset', 'password_changed',
             'email_change_confirm', 'email_change_notice', 'email_changed',
             'account_deleted',
             'mfa_enrolled', 'mfa_removed', 'mfa_locked', 'recovery_code_used',
             'passkey_added', 'passkey_removed')
);

ALTER TABLE auth_events DROP CONSTRAINT auth_events_kind;
ALTER TABLE auth_events ADD CONSTRAINT auth_events_kind CHECK (kind IN (
    'signup', 'login_succeeded', 'login_failed', 'logout', 'refresh',
    'refresh_reuse_detected', 'password_changed', 'password_change_failed',
    'session_revoked', 'session_evicted', 'rate_limited',
    'password_reset_requested', 'password_reset_completed', 'password_reset_failed',
    'email_verification_sent', 'email_verified',
    'role_granted', 'role_revoked', 'account_deactivated', 'account_reactivated',
    'sessions_revoked',
    'email_change_requested', 'email_change_confirmed', 'email_change_cancelled',
    'email_change_failed',
    'account_deleted', 'account_deletion_failed',
    'mfa_enrolled', 'mfa_removed', 'mfa_verified', 'mfa_failed', 'mfa_locked',
    'recovery_code_used', 'recovery_codes_regenerated',
    'passkey_added', 'passkey_removed', 'passkey_renamed', 'passkey_used', 'passkey_failed'
));
