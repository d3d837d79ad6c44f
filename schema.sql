-- The jmapmono schema: the one source of truth for SQLite and Postgres.
--
-- Sections headed "-- version: N" are migrations, applied once each, in order,
-- at start (jmapmono/store/migrations.py). Written in SQLite's dialect with
-- portable conventions rewritten for Postgres: INTEGER PRIMARY KEY AUTOINCREMENT
-- -> BIGSERIAL PRIMARY KEY, INTEGER -> BIGINT, BLOB -> BYTEA. A statement whose
-- first line is "-- only: sqlite" or "-- only: postgres" applies to one backend.
-- Times are integer milliseconds since the epoch (UTC). Statements end with ";"
-- at the end of a line.

-- version: 1

-- Users log in with their email address (stored lower-case). account_id is the
-- opaque, stable JMAP account id of the user's own account.
CREATE TABLE users (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    email TEXT NOT NULL UNIQUE,
    account_id TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    created_at INTEGER NOT NULL
);

-- App passwords: usable as Bearer tokens or as the password of HTTP Basic.
-- Only a SHA-256 of the high-entropy secret is kept.
CREATE TABLE app_passwords (
    id TEXT PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    secret_hash TEXT NOT NULL,
    label TEXT NOT NULL DEFAULT '',
    created_at INTEGER NOT NULL,
    last_used_at INTEGER
);
CREATE INDEX app_passwords_user ON app_passwords(user_id);

-- The delegate gets full access to the owner's account.
CREATE TABLE delegations (
    owner_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    delegate_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (owner_id, delegate_id)
);
CREATE INDEX delegations_delegate ON delegations(delegate_id);

-- Blob contents, addressed by content (id = "G" + SHA-256 hex), shared by
-- every account that holds a reference. Kept in the database so several nodes
-- share one Postgres with no shared disk.
CREATE TABLE blobs (
    id TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    data BLOB NOT NULL,
    created_at INTEGER NOT NULL
);

-- Who may read a blob and why. ref is 'upload' (expires_at set: collected
-- after it unless something else references the blob) or what holds it, e.g.
-- 'message:<id>' (expires_at NULL).
CREATE TABLE blob_refs (
    account_id TEXT NOT NULL,
    blob_id TEXT NOT NULL REFERENCES blobs(id),
    ref TEXT NOT NULL,
    type TEXT,
    expires_at INTEGER,
    PRIMARY KEY (account_id, blob_id, ref)
);
CREATE INDEX blob_refs_blob ON blob_refs(blob_id);
CREATE INDEX blob_refs_expires ON blob_refs(expires_at);

-- Messages. (The full mail model extends this table.)
CREATE TABLE messages (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    account_id TEXT NOT NULL,
    blob_id TEXT NOT NULL REFERENCES blobs(id),
    size INTEGER NOT NULL,
    received_at INTEGER NOT NULL,
    mailbox_name TEXT NOT NULL DEFAULT 'Inbox'
);
CREATE INDEX messages_account ON messages(account_id, received_at);
