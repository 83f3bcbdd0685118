-- API keys: long-lived credentials a user makes for a program of theirs (handlers::api_keys,
-- db::api_keys, auth::api_keys). 0016 is the signing keys' migration.
--
-- A key is `jp_pat_` + 256 random bits + a checksum; only an HMAC-SHA256 of the whole key
-- is kept (`key_hash`, under a key derived from the server's secret for this purpose), so a
-- copy of this table authenticates nothing. `prefix` is the key's first 15 characters,
-- what its owner recognises it by. A key always expires (`expires_at` NOT NULL); revoking
-- it sets `revoked_at` and why, so the list and the log can still say what happened.
-- `last_used_at` is written at most once a minute per key (a conditional UPDATE).
CREATE TABLE api_keys (
    id            uuid        NOT NULL,
    user_id       uuid        NOT NULL,
    name          text        NOT NULL,
    prefix        text        NOT NULL,
    key_hash      bytea       NOT NULL,
    scopes        text[]      NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL,
    last_used_at  timestamptz,
    revoked_at    timestamptz,
    revoke_reason text,
    CONSTRAINT api_keys_pkey PRIMARY KEY (id),
    CONSTRAINT api_keys_key_hash_key UNIQUE (key_hash),
    CONSTRAINT api_keys_user_fkey FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE,
    CONSTRAINT api_keys_name_length CHECK (char_length(name) BETWEEN 1 AND 64),
    CONSTRAINT api_keys_prefix_form CHECK (prefix ~ '^jp_pat_[A-Za-z0-9_-]{8}$'),
    CONSTRAINT api_keys_scopes CHECK (
        cardinality(scopes) >= 1 AND scopes <@ ARRAY['account:read', 'introspect']::text[]
    ),
    CONSTRAINT api_keys_expiry CHECK (expires_at > created_at),
    CONSTRAINT api_keys_revoked CHECK ((revoked_at IS NULL) = (revoke_reason IS NULL)),
    CONSTRAINT api_keys_revoke_reason CHECK (
        revoke_reason IN ('revoked', 'deactivated', 'password_reset')
    )
);
-- The owner's keys, for the list and the cap of live keys per account.
CREATE INDEX api_keys_user_idx ON api_keys (user_id, created_at);

-- The notice that a key was made.
ALTER TABLE email_outbox DROP CONSTRAINT email_outbox_kind;
ALTER TABLE email_outbox ADD CONSTRAINT email_outbox_kind CHECK (
    kind IN ('verify_email', 'password_reset', 'password_changed',
             'email_change_confirm', 'email_change_notice', 'email_changed',
             'account_deleted',
             'mfa_enrolled', 'mfa_removed', 'mfa_locked', 'recovery_code_used',
             'passkey_added', 'passkey_removed',
             'api_key_created')
);

-- The events of a key's life. This constraint replaces the one before it, so the signing
-- keys' kinds that 0016 adds (written in parallel with this file) are listed here too.
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
    'passkey_added', 'passkey_removed', 'passkey_renamed', 'passkey_used', 'passkey_failed',
    'signing_key_created', 'signing_key_activated', 'signing_key_retired', 'signing_key_revoked',
    'api_key_created', 'api_key_revoked', 'api_key_refused'
));
