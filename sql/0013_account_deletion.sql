-- Account deletion: POST /auth/me/delete (and the admin's DELETE /admin/users/{id}), and
-- the purge that removes the row ACCOUNT_PURGE_DAYS later (db::accounts).
--
-- users.deleted_at: when the account was deleted. A deleted account is scrubbed at once, in
-- the deleting transaction: inactive, its address rewritten to 'deleted+<id>@invalid' (a
-- domain without a dot, which signup never accepts, under the reserved TLD: it frees the
-- address and can never be anyone's), its password hash replaced by '!' (no hash format
-- starts with it: no password verifies), its address no longer verified. The constraint
-- holds every deleted row to that, so no later change (a reactivation, say) can bring a
-- deleted account back half-way.
ALTER TABLE users ADD COLUMN deleted_at timestamptz;
ALTER TABLE users ADD CONSTRAINT users_deleted_scrubbed CHECK (
    deleted_at IS NULL OR (
        NOT is_active
        AND email = 'deleted+' || id::text || '@invalid'
        AND password_hash = '!'
        AND email_verified_at IS NULL
    )
);
-- The purge's look-up: the few deleted rows, oldest first.
CREATE INDEX users_deleted_at_idx ON users (deleted_at) WHERE deleted_at IS NOT NULL;

-- Security events outlive the account only in anonymised form. 0005 deleted a user's events
-- with the user (ON DELETE CASCADE); now the purge first anonymises them — the link to the
-- account, the session, the client address, the user agent and the request id are erased,
-- kind, time and reason are kept, and anonymised_at says when — and the events then stay
-- until EVENT_RETENTION_DAYS after they occurred, like every event. ON DELETE SET NULL only
-- keeps a row deleted by hand from taking its events with it (it erases the link alone).
ALTER TABLE auth_events DROP CONSTRAINT auth_events_user_fkey;
ALTER TABLE auth_events ADD CONSTRAINT auth_events_user_fkey
    FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE SET NULL;
ALTER TABLE auth_events ADD COLUMN anonymised_at timestamptz;
ALTER TABLE auth_events ADD CONSTRAINT auth_events_anonymised CHECK (
    anonymised_at IS NULL OR (
        user_id IS NULL AND session_id IS NULL AND ip IS NULL AND user_agent IS NULL
        AND request_id IS NULL
    )
);

-- The deletion ends every session ...
ALTER TABLE sessions DROP CONSTRAINT sessions_end_reason;
ALTER TABLE sessions ADD CONSTRAINT sessions_end_reason CHECK (
    end_reason IN ('logout', 'logout_global', 'logout_others', 'revoked', 'password_changed',
                   'refresh_reuse', 'evicted', 'password_reset',
                   'role_changed', 'deactivated', 'admin_revoked',
                   'email_changed', 'email_change_cancelled',
                   'account_deleted')
);

-- ... queues a last notice to the old address ...
ALTER TABLE email_outbox DROP CONSTRAINT email_outbox_kind;
ALTER TABLE email_outbox ADD CONSTRAINT email_outbox_kind CHECK (
    kind IN ('verify_email', 'password_reset', 'password_changed',
             'email_change_confirm', 'email_change_notice', 'email_changed',
             'account_deleted')
);

-- ... and is an event, as is a deletion refused for a wrong password (reason
-- 'wrong_password'). account_deleted's reason says who deleted: 'self' or 'admin'.
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
    'account_deleted', 'account_deletion_failed'
));
