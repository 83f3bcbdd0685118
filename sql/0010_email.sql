-- Email: proven addresses, one-time secrets (password reset, email verification), and the
-- transactional outbox the mailer drains.
--
-- users.email_verified_at: when the address was proven (a verification, or a password
-- reset, which proves the mailbox as much). NULL for every existing account.
ALTER TABLE users ADD COLUMN email_verified_at timestamptz;

-- One-time secrets. An emailed secret is a 256-bit token (for the link) and an 8-digit
-- code (to type), both stored only as keyed hashes (HMAC-SHA256 with a key the server
-- derives from its secret): the table alone gives neither. code_hash is bound to the row's
-- id, so a code is only ever compared with its own account's secret. attempts is counted
-- before each comparison of a code; a secret at the limit is spent. A secret is consumed
-- by one conditional UPDATE (consumed_at IS NULL), so of two concurrent uses one wins.
-- Issuing a secret consumes the account's earlier live ones of the same purpose (under a
-- per-address advisory lock, so concurrent issues cannot leave two alive).
CREATE TABLE one_time_secrets (
    id          uuid        NOT NULL,
    user_id     uuid        NOT NULL,
    purpose     text        NOT NULL,
    token_hash  bytea       NOT NULL,
    code_hash   bytea       NOT NULL,
    attempts    integer     NOT NULL DEFAULT 0,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL,
    consumed_at timestamptz,
    CONSTRAINT one_time_secrets_pkey PRIMARY KEY (id),
    CONSTRAINT one_time_secrets_user_fkey FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE,
    CONSTRAINT one_time_secrets_purpose CHECK (purpose IN ('password_reset', 'verify_email')),
    CONSTRAINT one_time_secrets_token_hash_length CHECK (octet_length(token_hash) = 32),
    CONSTRAINT one_time_secrets_code_hash_length CHECK (octet_length(code_hash) = 32)
);

CREATE UNIQUE INDEX one_time_secrets_token_hash_key ON one_time_secrets (token_hash);
CREATE INDEX one_time_secrets_user_live_idx ON one_time_secrets (user_id, purpose)
    WHERE consumed_at IS NULL;
CREATE INDEX one_time_secrets_expires_at_idx ON one_time_secrets (expires_at);

-- The outbox: a request that causes an email inserts its row in the transaction of the
-- change that causes it; the sender task of every instance claims due rows (FOR UPDATE
-- SKIP LOCKED, then a lease: lease_until), sends them and records the outcome. A claimed
-- row whose lease ran out (its instance died) is due again.
--
-- secret_seed: what the link and code of the message are derived from (with a key the
-- server derives from its secret), never the link or code themselves; NULL for notices,
-- and set to NULL when the row reaches a terminal state (sent, abandoned), so nothing
-- secret outlives the delivery. The Message-ID is derived from id, so every attempt of
-- one message carries the same one.
CREATE TABLE email_outbox (
    id              uuid        NOT NULL,
    kind            text        NOT NULL,
    user_id         uuid,
    recipient       text        NOT NULL,
    secret_seed     bytea,
    status          text        NOT NULL DEFAULT 'queued',
    attempts        integer     NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    lease_until     timestamptz,
    expires_at      timestamptz NOT NULL,
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    sent_at         timestamptz,
    CONSTRAINT email_outbox_pkey PRIMARY KEY (id),
    CONSTRAINT email_outbox_user_fkey FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE SET NULL,
    CONSTRAINT email_outbox_kind CHECK (kind IN ('verify_email', 'password_reset', 'password_changed')),
    CONSTRAINT email_outbox_status CHECK (status IN ('queued', 'sending', 'sent', 'abandoned')),
    CONSTRAINT email_outbox_no_secret_when_done CHECK (status IN ('queued', 'sending') OR secret_seed IS NULL),
    CONSTRAINT email_outbox_last_error_length CHECK (char_length(last_error) <= 512)
);

CREATE INDEX email_outbox_due_idx ON email_outbox (next_attempt_at) WHERE status IN ('queued', 'sending');
CREATE INDEX email_outbox_user_kind_idx ON email_outbox (user_id, kind, created_at);
CREATE INDEX email_outbox_created_at_idx ON email_outbox (created_at);

-- A password reset ends every session of the account.
ALTER TABLE sessions DROP CONSTRAINT sessions_end_reason;
ALTER TABLE sessions ADD CONSTRAINT sessions_end_reason CHECK (
    end_reason IN ('logout', 'logout_global', 'logout_others', 'revoked', 'password_changed',
                   'refresh_reuse', 'evicted', 'password_reset')
);

ALTER TABLE auth_events DROP CONSTRAINT auth_events_kind;
ALTER TABLE auth_events ADD CONSTRAINT auth_events_kind CHECK (kind IN (
    'signup', 'login_succeeded', 'login_failed', 'logout', 'refresh',
    'refresh_reuse_detected', 'password_changed', 'password_change_failed',
    'session_revoked', 'session_evicted', 'rate_limited',
    'password_reset_requested', 'password_reset_completed', 'password_reset_failed',
    'email_verification_sent', 'email_verified'
));
