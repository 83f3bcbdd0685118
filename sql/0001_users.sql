-- Accounts. The email is stored already normalised (trimmed, lower-case) by the server; the
-- unique index on lower(email) makes the database, not a racy read-then-insert, the judge of
-- uniqueness, so concurrent signups of one address yield exactly one row.
CREATE TABLE users (
    id            uuid        NOT NULL DEFAULT gen_random_uuid(),
    email         text        NOT NULL,
    password_hash text        NOT NULL,
    is_active     boolean     NOT NULL DEFAULT true,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT users_pkey PRIMARY KEY (id),
    CONSTRAINT users_email_length CHECK (char_length(email) BETWEEN 3 AND 254),
    CONSTRAINT users_email_normalised CHECK (email = lower(btrim(email)))
);

CREATE UNIQUE INDEX users_email_key ON users (lower(email));
