-- Two-factor authentication: TOTP factors, recovery codes, and each session's assurance
-- level (handlers::mfa, db::mfa).
--
-- mfa_factors: an authenticator app of a user. The secret is encrypted (AES-256-GCM with a
-- key derived from the server's secret for this purpose alone, the factor's id as
-- associated data, so a ciphertext moved to another row does not decrypt). A factor is
-- 'pending' from enrolment until a code from the app confirms it, then 'verified'.
-- last_used_step is the RFC 6238 time step of the last code accepted: a code is accepted
-- only for a later step, by one conditional UPDATE, so a code works once even when two
-- requests bring it at the same moment, and the code that confirmed the factor is spent.
CREATE TABLE mfa_factors (
    id             uuid        NOT NULL,
    user_id        uuid        NOT NULL,
    kind           text        NOT NULL DEFAULT 'totp',
    label          text        NOT NULL,
    secret_enc     bytea       NOT NULL,
    status         text        NOT NULL DEFAULT 'pending',
    last_used_step bigint,
    last_used_at   timestamptz,
    created_at     timestamptz NOT NULL DEFAULT now(),
    verified_at    timestamptz,
    CONSTRAINT mfa_factors_pkey PRIMARY KEY (id),
    CONSTRAINT mfa_factors_user_fkey FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE,
    CONSTRAINT mfa_factors_kind CHECK (kind IN ('totp')),
    CONSTRAINT mfa_factors_status CHECK (status IN ('pending', 'verified')),
    CONSTRAINT mfa_factors_verified_at CHECK ((status = 'verified') = (verified_at IS NOT NULL)),
    CONSTRAINT mfa_factors_label_length CHECK (char_length(label) BETWEEN 1 AND 64)
);
CREATE INDEX mfa_factors_user_idx ON mfa_factors (user_id, created_at);

-- Recovery codes: 120 random bits each, so a keyed hash (HMAC-SHA256 with a derived key)
-- is enough to store them (NIST SP 800-63B 5.1.2.2: no slow hash needed above 112 bits).
-- used_at is set by one conditional UPDATE: a code works once, also under concurrency.
CREATE TABLE mfa_recovery_codes (
    user_id    uuid        NOT NULL,
    code_hash  bytea       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    used_at    timestamptz,
    CONSTRAINT mfa_recovery_codes_pkey PRIMARY KEY (user_id, code_hash),
    CONSTRAINT mfa_recovery_codes_user_fkey FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE
);

-- Each session's assurance level (1: password; 2: password and a second factor), the
-- methods it used (RFC 8176), and its second-factor attempts, counted before each
-- comparison (the 5th wrong one ends the session).
ALTER TABLE sessions ADD COLUMN aal smallint NOT NULL DEFAULT 1;
ALTER TABLE sessions ADD COLUMN amr text[] NOT NULL DEFAULT '{pwd}';
ALTER TABLE sessions ADD COLUMN mfa_attempts smallint NOT NULL DEFAULT 0;
ALTER TABLE sessions ADD CONSTRAINT sessions_aal CHECK (aal IN (1, 2));

-- The account's consecutive wrong second-factor attempts, from any session: not reset by a
-- password login, only by a correct code. At 10 the second factor locks until
-- mfa_locked_until.
ALTER TABLE users ADD COLUMN mfa_failed_count integer NOT NULL DEFAULT 0;
ALTER TABLE users ADD COLUMN mfa_locked_until timestamptz;

-- A notice's one non-secret value to show (how many recovery codes are left).
ALTER TABLE email_outbox ADD COLUMN detail text;
ALTER TABLE email_outbox ADD CONSTRAINT email_outbox_detail_length CHECK (char_length(detail) <= 200);

-- Confirming a first factor ends the account's other sessions below aal2 ('mfa_enrolled');
-- too many wrong codes end the session that sent them ('mfa_failed'); an admin's reset of
-- the factors ends the account's sessions, and removing the last factor those still owing
-- it ('mfa_reset').
ALTER TABLE sessions DROP CONSTRAINT sessions_end_reason;
ALTER TABLE sessions ADD CONSTRAINT sessions_end_reason CHECK (
    end_reason IN ('logout', 'logout_global', 'logout_others', 'revoked', 'password_changed',
                   'refresh_reuse', 'evicted', 'password_reset',
                   'role_changed', 'deactivated', 'admin_revoked',
                   'email_changed', 'email_change_cancelled',
                   'account_deleted',
                   'mfa_enrolled', 'mfa_failed', 'mfa_reset')
);

ALTER TABLE email_outbox DROP CONSTRAINT email_outbox_kind;
ALTER TABLE email_outbox ADD CONSTRAINT email_outbox_kind CHECK (
    kind IN ('verify_email', 'password_reset', 'password_changed',
             'email_change_confirm', 'email_change_notice', 'email_changed',
             'account_deleted',
             'mfa_enrolled', 'mfa_removed', 'mfa_locked', 'recovery_code_used')
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
    'recovery_code_used', 'recovery_codes_regenerated'
));
