-- Access tokens revoked by logout, keyed by the token's `jti`. A row only matters until the
-- token would have expired anyway, so `expires_at` lets the server prune rows that can no
-- longer change an answer. Rows go with their user.
CREATE TABLE revoked_tokens (
    jti        uuid        NOT NULL,
    user_id    uuid        NOT NULL,
    expires_at timestamptz NOT NULL,
    revoked_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT revoked_tokens_pkey PRIMARY KEY (jti),
    CONSTRAINT revoked_tokens_user_fkey FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE
);

CREATE INDEX revoked_tokens_expires_at_idx ON revoked_tokens (expires_at);
CREATE INDEX revoked_tokens_user_id_idx ON revoked_tokens (user_id);
