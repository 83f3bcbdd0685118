-- Asymmetric signing keys for access tokens (JWT_ALGORITHM = ES256 or EdDSA), shared by
-- every instance, so all of them sign with the same key and verify with the same set.
--
-- A key moves one way: standby (published in the JWKS, signs nothing) -> active (signs) ->
-- retired (published, verifies, signs nothing) -> revoked (gone from the JWKS, verifies
-- nothing). A standby key may also be retired or revoked without ever signing. The
-- private half is sealed (AES-256-GCM, a key derived from JWT_SECRET_KEY, the kid as
-- associated data): a copy of this table alone signs nothing.
CREATE TABLE signing_keys (
    kid          text        NOT NULL,
    algorithm    text        NOT NULL,
    state        text        NOT NULL DEFAULT 'standby',
    -- nonce || ciphertext || tag of the 32-byte private scalar (ES256) or seed (EdDSA).
    private_key  bytea       NOT NULL,
    -- The public JWK as published (RFC 7517), without private members.
    public_jwk   jsonb       NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    activated_at timestamptz,
    retired_at   timestamptz,
    revoked_at   timestamptz,
    CONSTRAINT signing_keys_pkey PRIMARY KEY (kid),
    CONSTRAINT signing_keys_algorithm CHECK (algorithm IN ('ES256', 'EdDSA')),
    CONSTRAINT signing_keys_state CHECK (state IN ('standby', 'active', 'retired', 'revoked')),
    CONSTRAINT signing_keys_kid CHECK (kid ~ '^[A-Za-z0-9_-]{1,64}$'),
    -- Each state carries the time it was entered, so the safety windows of the key
    -- commands can be computed from the row alone.
    CONSTRAINT signing_keys_times CHECK (
        (state = 'standby' AND activated_at IS NULL AND retired_at IS NULL AND revoked_at IS NULL)
        OR (state = 'active' AND activated_at IS NOT NULL AND retired_at IS NULL AND revoked_at IS NULL)
        OR (state = 'retired' AND retired_at IS NOT NULL AND revoked_at IS NULL)
        OR (state = 'revoked' AND revoked_at IS NOT NULL)
    )
);

-- Exactly one key signs: the database refuses a second active key, whatever the caller.
CREATE UNIQUE INDEX signing_keys_one_active ON signing_keys ((true)) WHERE state = 'active';

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
    'signing_key_created', 'signing_key_activated', 'signing_key_retired', 'signing_key_revoked'
));
