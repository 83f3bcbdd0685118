-- Sessions: each login starts one. Access tokens name their session (`sid` claim), so
-- ending a session ends its access tokens at once; the refresh token renews it.
--
-- Refresh tokens are stored only as SHA-256 hashes (they are 256-bit random or derived
-- values, so a fast hash is enough). A spent token stays on record with `spent_at`, so
-- presenting it again is recognised as reuse (theft) and ends the session, however many
-- rotations ago it was spent.
--
-- Logout now ends the session instead of listing revoked token ids, so revoked_tokens
-- (0002) is no longer used and goes; tokens issued before this migration carry no
-- session and are refused, which only asks their holders to log in again.
CREATE TABLE sessions (
    id           uuid        NOT NULL DEFAULT gen_random_uuid(),
    user_id      uuid        NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL,
    ended_at     timestamptz,
    end_reason   text,
    user_agent   text,
    ip           text,
    CONSTRAINT sessions_pkey PRIMARY KEY (id),
    CONSTRAINT sessions_user_fkey FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE,
    CONSTRAINT sessions_user_agent_length CHECK (char_length(user_agent) <= 512),
    CONSTRAINT sessions_end_reason CHECK (
        end_reason IN ('logout', 'logout_global', 'logout_others', 'revoked', 'password_changed', 'refresh_reuse')
    ),
    CONSTRAINT sessions_ended_with_reason CHECK ((ended_at IS NULL) = (end_reason IS NULL))
);

CREATE INDEX sessions_user_id_idx ON sessions (user_id);
CREATE INDEX sessions_expires_at_idx ON sessions (expires_at);

CREATE TABLE refresh_tokens (
    token_hash bytea       NOT NULL,
    session_id uuid        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    spent_at   timestamptz,
    CONSTRAINT refresh_tokens_pkey PRIMARY KEY (token_hash),
    CONSTRAINT refresh_tokens_session_fkey FOREIGN KEY (session_id) REFERENCES sessions (id) ON DELETE CASCADE,
    CONSTRAINT refresh_tokens_hash_length CHECK (octet_length(token_hash) = 32)
);

CREATE INDEX refresh_tokens_session_id_idx ON refresh_tokens (session_id);

DROP TABLE revoked_tokens;
