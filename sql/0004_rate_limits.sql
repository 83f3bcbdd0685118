-- Rate limits shared by every instance on this database.
--
-- rate_limits: fixed-window counters. One row per (scope, key, window): scope is the
-- operation ('signup', 'login', 'refresh', 'password_change'), key the client IP, and
-- window_start the start of the window the request fell in. A request is one UPSERT that
-- returns the new count; rows of past windows are pruned by the maintenance task.
--
-- login_throttle: failed logins per account (the normalised email, whether or not an
-- account has it, so the throttle does not reveal which accounts exist). Past a number of
-- failures each further one blocks the address until blocked_until, doubling up to a
-- bound; a successful login deletes the row, and a quiet day prunes it.
CREATE TABLE rate_limits (
    scope        text        NOT NULL,
    key          text        NOT NULL,
    window_start timestamptz NOT NULL,
    count        integer     NOT NULL DEFAULT 1,
    CONSTRAINT rate_limits_pkey PRIMARY KEY (scope, key, window_start)
);

CREATE INDEX rate_limits_window_start_idx ON rate_limits (window_start);

CREATE TABLE login_throttle (
    email           text        NOT NULL,
    failures        integer     NOT NULL,
    last_failure_at timestamptz NOT NULL DEFAULT now(),
    blocked_until   timestamptz,
    CONSTRAINT login_throttle_pkey PRIMARY KEY (email)
);

CREATE INDEX login_throttle_last_failure_at_idx ON login_throttle (last_failure_at);
