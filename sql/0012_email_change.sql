-- Changing the email address: a pending change is two one-time secrets (0010) and one row
-- here.
--
-- The confirmation secret (purpose 'email_change', emailed to the new address) is the
-- change: email_changes is keyed by its id, and the change is pending exactly while that
-- secret is live (not consumed, not expired). Whatever consumes a user's live secrets
-- (a confirmation, a cancellation, a replacing request, a password reset, account
-- deletion, deactivation) therefore ends their pending change too. The cancel secret
-- (purpose 'email_change_cancel', in the notice to the current address) is the "this
-- wasn't me" link.
--
-- new_email is personal data nobody needs once the change has ended: the row is deleted
-- by the statement that ends the change (confirm, cancel, replace), by the trigger below
-- when anything else consumes the confirmation secret, and, for expired changes, by the
-- maintenance prune (db::email_change::prune). ON DELETE CASCADE from both secrets covers
-- the secrets' own pruning and the user's deletion.
--
-- session_id: the session that asked; the confirmation ends every other session. Not a
-- foreign key: the session may be pruned while the change is pending, and then there is
-- simply no session to keep.
CREATE TABLE email_changes (
    secret_id        uuid        NOT NULL,
    cancel_secret_id uuid        NOT NULL,
    user_id          uuid        NOT NULL,
    new_email        text        NOT NULL,
    session_id       uuid,
    created_at       timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT email_changes_pkey PRIMARY KEY (secret_id),
    CONSTRAINT email_changes_secret_fkey FOREIGN KEY (secret_id)
        REFERENCES one_time_secrets (id) ON DELETE CASCADE,
    CONSTRAINT email_changes_cancel_secret_fkey FOREIGN KEY (cancel_secret_id)
        REFERENCES one_time_secrets (id) ON DELETE CASCADE,
    CONSTRAINT email_changes_user_fkey FOREIGN KEY (user_id) REFERENCES users (id) ON DELETE CASCADE,
    CONSTRAINT email_changes_new_email_length CHECK (char_length(new_email) BETWEEN 3 AND 254),
    CONSTRAINT email_changes_new_email_normalised CHECK (new_email = lower(btrim(new_email)))
);

CREATE UNIQUE INDEX email_changes_cancel_secret_key ON email_changes (cancel_secret_id);
CREATE INDEX email_changes_user_idx ON email_changes (user_id);

-- Consuming a confirmation secret, by whatever statement, erases its pending change's new
-- address at once (the secret row itself stays until the prune, as every secret does).
CREATE FUNCTION email_changes_erase_consumed() RETURNS trigger
    LANGUAGE plpgsql AS $$
BEGIN
    DELETE FROM email_changes WHERE secret_id = NEW.id;
    RETURN NULL;
END;
$$;

CREATE TRIGGER email_changes_erase_consumed
    AFTER UPDATE OF consumed_at ON one_time_secrets
    FOR EACH ROW
    WHEN (NEW.purpose = 'email_change' AND NEW.consumed_at IS NOT NULL AND OLD.consumed_at IS NULL)
    EXECUTE FUNCTION email_changes_erase_consumed();

ALTER TABLE one_time_secrets DROP CONSTRAINT one_time_secrets_purpose;
ALTER TABLE one_time_secrets ADD CONSTRAINT one_time_secrets_purpose CHECK (
    purpose IN ('password_reset', 'verify_email', 'email_change', 'email_change_cancel')
);

ALTER TABLE email_outbox DROP CONSTRAINT email_outbox_kind;
ALTER TABLE email_outbox ADD CONSTRAINT email_outbox_kind CHECK (kind IN (
    'verify_email', 'password_reset', 'password_changed',
    'email_change_confirm', 'email_change_notice', 'email_changed'
));

-- The per-recipient limit of confirmations counts by address (the new address has no
-- account to count by).
CREATE INDEX email_outbox_recipient_kind_idx ON email_outbox (lower(recipient), kind, created_at);

-- A confirmed change ends every other session; a cancelled one ends them all.
ALTER TABLE sessions DROP CONSTRAINT sessions_end_reason;
ALTER TABLE sessions ADD CONSTRAINT sessions_end_reason CHECK (
    end_reason IN ('logout', 'logout_global', 'logout_others', 'revoked', 'password_changed',
                   'refresh_reuse', 'evicted', 'password_reset',
                   'role_changed', 'deactivated', 'admin_revoked',
                   'email_changed', 'email_change_cancelled')
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
    'email_change_failed'
));
