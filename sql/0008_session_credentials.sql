-- Credential versions: a compare-and-set on the password a session was opened with.
--
-- users.credential_version is bumped by every password change, in the same UPDATE that
-- compares it with the version the change verified (so of two concurrent changes one
-- commits and the other finds the version moved). Every session records the version its
-- login verified; a login commits its session only while the version is still the one it
-- read with the hash, and the token check (db::owners) and refresh treat a session whose
-- version is not the user's as ended. A login that verified the old password while a
-- change committed therefore never holds a live session on the old password.
--
-- Existing rows start at 1 on both sides, so every live session stays live.
ALTER TABLE users ADD COLUMN credential_version bigint NOT NULL DEFAULT 1;
ALTER TABLE sessions ADD COLUMN credential_version bigint NOT NULL DEFAULT 1;

-- A per-session secret mixed into every refresh-token successor (auth::refresh): a
-- successor is HMAC(refresh key, refresh_secret || presented token), so knowing the key
-- and a token is not enough to compute the next token of a session. It never leaves the
-- server. gen_random_uuid() draws from PostgreSQL's strong random source; two of them give
-- 244 random bits without needing pgcrypto. The default is evaluated per row, existing
-- sessions included.
ALTER TABLE sessions ADD COLUMN refresh_secret bytea NOT NULL
    DEFAULT (uuid_send(gen_random_uuid()) || uuid_send(gen_random_uuid()));

-- A login beyond SESSIONS_PER_USER_MAX ends the user's least recently used live session,
-- with its own end reason ... The other reasons are those of 0003.
ALTER TABLE sessions DROP CONSTRAINT sessions_end_reason;
ALTER TABLE sessions ADD CONSTRAINT sessions_end_reason CHECK (
    end_reason IN ('logout', 'logout_global', 'logout_others', 'revoked', 'password_changed',
                   'refresh_reuse', 'evicted')
);
CREATE INDEX sessions_user_live_idx ON sessions (user_id, last_used_at) WHERE ended_at IS NULL;
-- ... and a session_evicted event, so that its owner's event log says where it went.
ALTER TABLE auth_events DROP CONSTRAINT auth_events_kind;
ALTER TABLE auth_events ADD CONSTRAINT auth_events_kind CHECK (kind IN (
    'signup', 'login_succeeded', 'login_failed', 'logout', 'refresh',
    'refresh_reuse_detected', 'password_changed', 'password_change_failed',
    'session_revoked', 'session_evicted', 'rate_limited'
));

-- When the session's user last proved the password (its login; refresh does not renew
-- it). Ending other sessions requires it to be within REAUTH_WINDOW_MINUTES. Existing
-- sessions count as authenticated when they were created.
ALTER TABLE sessions ADD COLUMN authenticated_at timestamptz NOT NULL DEFAULT now();
UPDATE sessions SET authenticated_at = created_at;
