-- The security event log: one row per authentication event, for the account owner
-- (GET /auth/events) and for investigation.
--
-- kind is what happened; reason the internal detail a client is never told (why a login
-- failed: unknown_email, wrong_password or inactive; which limit refused a request). Rows
-- are written by the same statement or transaction as the change they record, so an event
-- exists exactly when its change does. user_id is NULL when no account is known (a login
-- for an unknown email); a deleted account's events are deleted with it. Rows older than
-- EVENT_RETENTION_DAYS are pruned by the maintenance task.
CREATE TABLE auth_events (
    id          bigint      GENERATED ALWAYS AS IDENTITY,
    occurred_at timestamptz NOT NULL DEFAULT now(),
    kind        text        NOT NULL,
    reason      text,
    user_id     uuid,
    session_id  uuid,
    ip          text,
    user_agent  text,
    request_id  text,
    CONSTRAINT auth_events_pkey PRIMARY KEY (id),
    CONSTRAINT auth_events_user_fkey FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE,
    CONSTRAINT auth_events_kind CHECK (kind IN (
        'signup', 'login_succeeded', 'login_failed', 'logout', 'refresh',
        'refresh_reuse_detected', 'password_changed', 'session_revoked', 'rate_limited'
    )),
    CONSTRAINT auth_events_user_agent_length CHECK (char_length(user_agent) <= 512),
    CONSTRAINT auth_events_request_id_length CHECK (char_length(request_id) <= 128)
);

CREATE INDEX auth_events_user_id_idx ON auth_events (user_id, id DESC);
CREATE INDEX auth_events_occurred_at_idx ON auth_events (occurred_at);
