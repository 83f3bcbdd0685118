-- Roles, account deactivation by an administrator, and who did what in the event log.
--
-- user_roles: one row per role a user holds. Role names are short identifiers; `admin` is
-- the one this service itself checks (the admin API), others are for the product's own
-- services, which read them from the access token's `roles` claim. granted_by is the admin
-- who granted it, NULL when granted from the command line (or when that admin's account is
-- gone). Granting or removing a role ends the user's sessions (end_reason 'role_changed'),
-- so a token's `roles` claim is never stale for longer than no time at all.
CREATE TABLE user_roles (
    user_id    uuid        NOT NULL,
    role       text        NOT NULL,
    granted_by uuid,
    granted_at timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT user_roles_pkey PRIMARY KEY (user_id, role),
    CONSTRAINT user_roles_user_fkey FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE,
    CONSTRAINT user_roles_granted_by_fkey FOREIGN KEY (granted_by) REFERENCES users (id) ON DELETE SET NULL,
    CONSTRAINT user_roles_role_name CHECK (role ~ '^[a-z][a-z0-9_]{0,31}$')
);

CREATE INDEX user_roles_role_idx ON user_roles (role);

-- Deactivation by an administrator: when, and the reason they gave (shown to admins only).
ALTER TABLE users ADD COLUMN deactivated_at timestamptz;
ALTER TABLE users ADD COLUMN deactivation_reason text;
ALTER TABLE users ADD CONSTRAINT users_deactivation_reason_length
    CHECK (char_length(deactivation_reason) <= 500);

-- The admin list pages through accounts by address and matches an address prefix: the
-- address is stored lower-case, and a "C"-collated index serves both `LIKE 'prefix%'` and
-- the keyset order.
CREATE INDEX users_email_c_idx ON users ((email COLLATE "C"));

-- Who did it, when it was not the account's owner: the acting admin's id. No foreign key:
-- the record of an admin's action outlives the admin's account.
ALTER TABLE auth_events ADD COLUMN actor_id uuid;
-- The purge of a deleted admin's account finds the events it acted in.
CREATE INDEX auth_events_actor_id_idx ON auth_events (actor_id) WHERE actor_id IS NOT NULL;
CREATE INDEX auth_events_kind_idx ON auth_events (kind, id DESC);
-- An account's last login, as the admin API shows it, without walking its other events
-- (thousands of failed logins, for an account under attack).
CREATE INDEX auth_events_last_login_idx ON auth_events (user_id, id DESC)
    WHERE kind = 'login_succeeded';

ALTER TABLE sessions DROP CONSTRAINT sessions_end_reason;
ALTER TABLE sessions ADD CONSTRAINT sessions_end_reason CHECK (
    end_reason IN ('logout', 'logout_global', 'logout_others', 'revoked', 'password_changed',
                   'refresh_reuse', 'evicted', 'password_reset',
                   'role_changed', 'deactivated', 'admin_revoked')
);

ALTER TABLE auth_events DROP CONSTRAINT auth_events_kind;
ALTER TABLE auth_events ADD CONSTRAINT auth_events_kind CHECK (kind IN (
    'signup', 'login_succeeded', 'login_failed', 'logout', 'refresh',
    'refresh_reuse_detected', 'password_changed', 'password_change_failed',
    'session_revoked', 'session_evicted', 'rate_limited',
    'password_reset_requested', 'password_reset_completed', 'password_reset_failed',
    'email_verification_sent', 'email_verified',
    'role_granted', 'role_revoked', 'account_deactivated', 'account_reactivated',
    'sessions_revoked'
));
