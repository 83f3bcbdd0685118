-- The login throttle, redone so that it can be neither raced nor turned against the owner.
--
-- login_throttle (replacing 0004's table; its rows are short-lived counters, dropped):
-- failed attempts per account (the normalised email, whether or not an account has it) and
-- per key, where key is one of
--   'net:<client>'    the client network (an IPv4 address, an IPv6 prefix): the escalating
--                     block after a few failures, so guessing from one network blocks
--                     only that network;
--   'account'         every network together, with a much higher ceiling, against guesses
--                     spread over many networks;
--   'device:<hash>'   a client that proved an earlier successful login (login_devices): it
--                     is checked against its own allowance instead of the two above.
-- Past its free allowance each further failure blocks the row for 1, 2, 4 ... seconds up
-- to a bound (block_seconds is the current block's length, which is what Retry-After
-- says); refusal_recorded says whether the current block's one rate_limited event exists.
--
-- login_charge() decides and records an attempt in one statement: it locks the rows the
-- attempt counts against, refuses if any is blocked, and otherwise charges them all,
-- before the password is verified. A success then deletes the rows it charged
-- (login_refund). Concurrent attempts queue on the row locks, so a burst is evaluated one
-- by one and stops at the block.
--
-- login_devices: keyed hashes (HMAC-SHA256, key held by the server) of the device tokens
-- successful logins hand out, with their account and expiry. Never the token itself.
DROP TABLE login_throttle;

CREATE TABLE login_throttle (
    email            text        NOT NULL,
    key              text        NOT NULL,
    failures         integer     NOT NULL DEFAULT 0,
    last_failure_at  timestamptz NOT NULL DEFAULT now(),
    blocked_until    timestamptz,
    block_seconds    float8,
    refusal_recorded boolean     NOT NULL DEFAULT false,
    CONSTRAINT login_throttle_pkey PRIMARY KEY (email, key)
);

CREATE INDEX login_throttle_last_failure_at_idx ON login_throttle (last_failure_at);

CREATE TABLE login_devices (
    token_hash bytea       NOT NULL,
    user_id    uuid        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    CONSTRAINT login_devices_pkey PRIMARY KEY (token_hash),
    CONSTRAINT login_devices_user_fkey FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE
);

CREATE INDEX login_devices_user_id_idx ON login_devices (user_id);
CREATE INDEX login_devices_expires_at_idx ON login_devices (expires_at);

-- Charges one attempt for p_email from p_network (or the device whose token hashes to
-- p_device, if it is a live device of that account). Returns the keys charged, or — when
-- refused — blocked_for (the longest current block's length, seconds) and first_refusal
-- (whether this is the first refusal of that block, for the one event it gets).
CREATE FUNCTION login_charge(
    p_email text, p_network text, p_device bytea, p_free integer, p_ceiling integer,
    p_max_delay float8
) RETURNS TABLE (keys text[], blocked_for float8, first_refusal boolean)
LANGUAGE plpgsql AS $$
DECLARE
    v_keys  text[];
    v_frees integer[];
    v_block float8;
    v_first integer;
BEGIN
    IF p_device IS NOT NULL AND EXISTS (
        SELECT 1 FROM login_devices d JOIN users u ON u.id = d.user_id
         WHERE d.token_hash = p_device AND lower(u.email) = p_email AND d.expires_at > now()
    ) THEN
        v_keys := ARRAY['device:' || encode(p_device, 'hex')];
        v_frees := ARRAY[p_free];
    ELSE
        v_keys := ARRAY['net:' || p_network];
        v_frees := ARRAY[p_free];
        IF p_ceiling > 0 THEN
            v_keys := v_keys || 'account'::text;
            v_frees := v_frees || p_ceiling;
        END IF;
    END IF;

    -- One lock per account, taken first here and in login_refund: concurrent attempts on
    -- an account queue on it, whatever order their row locks would come in (an insert
    -- that skips an existing row takes none, a delete takes them in heap order), so they
    -- cannot deadlock. The pruning skips locked rows and never waits.
    PERFORM pg_advisory_xact_lock(7, hashtext(p_email));
    INSERT INTO login_throttle (email, key)
    SELECT p_email, k FROM unnest(v_keys) AS k ORDER BY k
    ON CONFLICT DO NOTHING;
    PERFORM 1 FROM login_throttle
      WHERE email = p_email AND key = ANY (v_keys)
      ORDER BY key
      FOR UPDATE;

    SELECT max(block_seconds) INTO v_block FROM login_throttle
     WHERE email = p_email AND key = ANY (v_keys) AND blocked_until > now();
    IF v_block IS NOT NULL THEN
        UPDATE login_throttle SET refusal_recorded = true
         WHERE email = p_email AND key = ANY (v_keys) AND blocked_until > now()
           AND NOT refusal_recorded;
        GET DIAGNOSTICS v_first = ROW_COUNT;
        RETURN QUERY SELECT v_keys, v_block, v_first > 0;
        RETURN;
    END IF;

    UPDATE login_throttle AS t
       SET failures = t.failures + 1,
           last_failure_at = now(),
           block_seconds = CASE WHEN t.failures + 1 > f.free
               THEN least(p_max_delay, power(2.0::float8, (t.failures - f.free)::float8)) END,
           blocked_until = CASE WHEN t.failures + 1 > f.free
               THEN now() + make_interval(secs => least(p_max_delay, power(2.0::float8, (t.failures - f.free)::float8))) END,
           refusal_recorded = false
      FROM unnest(v_keys, v_frees) AS f (key, free)
     WHERE t.email = p_email AND t.key = f.key;
    RETURN QUERY SELECT v_keys, NULL::float8, false;
END
$$;

-- Deletes the rows a successful attempt was charged to, under login_charge's account lock
-- (a plain DELETE racing login_charge deadlocked in about 3% of concurrent pairs).
CREATE FUNCTION login_refund(p_email text, p_keys text[]) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(7, hashtext(p_email));
    DELETE FROM login_throttle WHERE email = p_email AND key = ANY (p_keys);
END
$$;

-- A wrong current password at POST /auth/password is an event too.
ALTER TABLE auth_events DROP CONSTRAINT auth_events_kind;
ALTER TABLE auth_events ADD CONSTRAINT auth_events_kind CHECK (kind IN (
    'signup', 'login_succeeded', 'login_failed', 'logout', 'refresh',
    'refresh_reuse_detected', 'password_changed', 'password_change_failed',
    'session_revoked', 'rate_limited'
));
