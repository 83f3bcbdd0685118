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
