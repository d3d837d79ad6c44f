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

-- Who may read a blob and why. ref is 'upload:<user id>' for an upload or a
-- Blob/copy (readable by that user only; expires_at set: collected after it
-- unless something else references the blob) or what holds it, e.g.
-- 'message:<id>' (expires_at NULL). See jmapmono/mailbox/blobs.py.
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

-- ---------------------------------------------------------------------------
-- Mail (jmapmono/mailbox/): mailboxes, messages, threads, maintained counts,
-- the change log behind */changes and the event outbox. Only the
-- MailboxManager writes these tables. Ids are opaque text, never reused.

-- name_key is the case-folded name: sibling names are unique case-insensitively.
-- The four counters are maintained in every mutating transaction (counts.py).
CREATE TABLE mailboxes (
    id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL,
    name TEXT NOT NULL,
    name_key TEXT NOT NULL,
    parent_id TEXT REFERENCES mailboxes(id),
    role TEXT,
    sort_order INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    total_emails INTEGER NOT NULL DEFAULT 0,
    unread_emails INTEGER NOT NULL DEFAULT 0,
    total_threads INTEGER NOT NULL DEFAULT 0,
    unread_threads INTEGER NOT NULL DEFAULT 0
);
CREATE UNIQUE INDEX mailboxes_sibling_name ON mailboxes(account_id, COALESCE(parent_id, ''), name_key);
CREATE UNIQUE INDEX mailboxes_role ON mailboxes(account_id, role);
CREATE INDEX mailboxes_parent ON mailboxes(parent_id);

-- Subscriptions are per user: a delegate's differ from the owner's.
CREATE TABLE mailbox_subscriptions (
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    mailbox_id TEXT NOT NULL REFERENCES mailboxes(id) ON DELETE CASCADE,
    PRIMARY KEY (user_id, mailbox_id)
);
CREATE INDEX mailbox_subscriptions_mailbox ON mailbox_subscriptions(mailbox_id);

-- One email. Raw bytes are the blob (ref 'message:<id>'); the rest is the parsed
-- header summary Email/get answers from. Address lists and id lists are JSON text.
CREATE TABLE messages (
    id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL,
    blob_id TEXT NOT NULL REFERENCES blobs(id),
    thread_id TEXT NOT NULL,
    size INTEGER NOT NULL,
    received_at INTEGER NOT NULL,
    sent_at INTEGER,
    subject TEXT,
    from_json TEXT NOT NULL DEFAULT '[]',
    sender_json TEXT NOT NULL DEFAULT '[]',
    to_json TEXT NOT NULL DEFAULT '[]',
    cc_json TEXT NOT NULL DEFAULT '[]',
    bcc_json TEXT NOT NULL DEFAULT '[]',
    reply_to_json TEXT NOT NULL DEFAULT '[]',
    message_id_json TEXT NOT NULL DEFAULT '[]',
    in_reply_to_json TEXT NOT NULL DEFAULT '[]',
    references_json TEXT NOT NULL DEFAULT '[]',
    preview TEXT NOT NULL DEFAULT '',
    has_attachment INTEGER NOT NULL DEFAULT 0,
    problems_json TEXT NOT NULL DEFAULT '[]',
    created_at INTEGER NOT NULL
);
CREATE INDEX messages_account_received ON messages(account_id, received_at, id);
CREATE INDEX messages_thread ON messages(thread_id, received_at);

-- Mailbox membership. received_at and thread_id are copied from the message
-- (both immutable) so that a mailbox's newest-first view and its thread
-- collapsing read this index alone, however large the mailbox.
CREATE TABLE message_mailboxes (
    message_id TEXT NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    mailbox_id TEXT NOT NULL REFERENCES mailboxes(id),
    received_at INTEGER NOT NULL,
    thread_id TEXT NOT NULL,
    PRIMARY KEY (message_id, mailbox_id)
);
CREATE INDEX message_mailboxes_view ON message_mailboxes(mailbox_id, received_at DESC, message_id);

-- JMAP keywords, lower-cased ($seen, $flagged, $draft, $answered, ...).
CREATE TABLE message_keywords (
    message_id TEXT NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    keyword TEXT NOT NULL,
    PRIMARY KEY (message_id, keyword)
);
CREATE INDEX message_keywords_keyword ON message_keywords(keyword, message_id);

-- Bounded plain text of each message (subject, addresses, body) for full-text search.
CREATE TABLE message_search (
    message_id TEXT PRIMARY KEY REFERENCES messages(id) ON DELETE CASCADE,
    account_id TEXT NOT NULL,
    text TEXT NOT NULL
);

-- Threading keys: one row per id a message names (its Message-ID, In-Reply-To,
-- References) with a hash of its base subject (threads.py).
CREATE TABLE thread_keys (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    account_id TEXT NOT NULL,
    msgid TEXT NOT NULL,
    subject TEXT NOT NULL,
    thread_id TEXT NOT NULL,
    message_id TEXT NOT NULL
);
CREATE INDEX thread_keys_lookup ON thread_keys(account_id, msgid, subject);
CREATE INDEX thread_keys_message ON thread_keys(message_id);

-- Per (mailbox, thread): emails of the thread in the mailbox, and how many unread.
CREATE TABLE mailbox_threads (
    mailbox_id TEXT NOT NULL REFERENCES mailboxes(id) ON DELETE CASCADE,
    thread_id TEXT NOT NULL,
    emails INTEGER NOT NULL,
    unread INTEGER NOT NULL,
    PRIMARY KEY (mailbox_id, thread_id)
);

-- The change log (changes.py). account_changes.last is the account's sequence,
-- locked by every mutating transaction so that sequence order is commit order.
-- kind: 'c' created, 'u' updated, 'd' destroyed. A type's state is the seq of
-- its last change; pruned_through is the newest seq of it already pruned.
CREATE TABLE account_changes (
    account_id TEXT PRIMARY KEY,
    last INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE change_log (
    account_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    type TEXT NOT NULL,
    object_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    count_only INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (account_id, seq)
);
CREATE INDEX change_log_type ON change_log(account_id, type, seq);
CREATE INDEX change_log_age ON change_log(created_at);
CREATE TABLE change_states (
    account_id TEXT NOT NULL,
    type TEXT NOT NULL,
    state INTEGER NOT NULL,
    pruned_through INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (account_id, type)
);

-- Events written by the transaction that made the change; a relay publishes
-- them after commit and sets dispatched_at.
CREATE TABLE event_outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    bus TEXT NOT NULL,
    event TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    dispatched_at INTEGER
);
CREATE INDEX event_outbox_pending ON event_outbox(id) WHERE dispatched_at IS NULL;

-- Event bus (jmapmono/events). A group-listener event that failed every
-- attempt is parked here, one row per bus, group and event id (parking it
-- again adds to attempts); `events redeliver` sets redeliver_requested_at and
-- a running bus claims the row (claimed_until) and deletes it once handled.
CREATE TABLE event_dead_letters (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    bus TEXT NOT NULL,
    group_name TEXT NOT NULL,
    event_id TEXT NOT NULL,
    event_type TEXT NOT NULL,
    event TEXT NOT NULL,
    error TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    failed_at INTEGER NOT NULL,
    redeliver_requested_at INTEGER,
    claimed_until INTEGER,
    UNIQUE (bus, group_name, event_id)
);
CREATE INDEX event_dead_letters_requested ON event_dead_letters(bus, redeliver_requested_at);

-- Event ids a group listener has handled (done = 1) or is handling (done = 0
-- until lease_until), so duplicate copies are skipped; pruned by updated_at.
CREATE TABLE event_processed (
    bus TEXT NOT NULL,
    group_name TEXT NOT NULL,
    event_id TEXT NOT NULL,
    done INTEGER NOT NULL,
    lease_until INTEGER NOT NULL,
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (bus, group_name, event_id)
);
CREATE INDEX event_processed_updated ON event_processed(updated_at);

-- ---------------------------------------------------------------------------
-- Outbox relay (jmapmono/events/outbox_relay.py). A relay claims a batch of pending
-- rows for a short lease (claimed_until) before publishing them outside any
-- transaction, so several relays (nodes, workers) share the work; a relay that
-- dies leaves its claim to lapse and another publishes the rows (at least once).
-- Dispatched rows are pruned by dispatched_at after a retention period.
ALTER TABLE event_outbox ADD COLUMN claimed_until INTEGER;
CREATE INDEX event_outbox_dispatched ON event_outbox(dispatched_at) WHERE dispatched_at IS NOT NULL;

-- ---------------------------------------------------------------------------
-- Sending (jmapmono/mailbox/identities.py, submissions.py, vacation.py): the
-- addresses an account sends as, what it sent, and its vacation response.
-- Written only through those modules (change log + outbox like the mail tables).

-- JMAP Identity. is_default marks the one every account gets for its login
-- address (created on first use, mayDelete false). Address lists are JSON or NULL.
CREATE TABLE identities (
    id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL,
    name TEXT NOT NULL DEFAULT '',
    email TEXT NOT NULL,
    reply_to_json TEXT,
    bcc_json TEXT,
    text_signature TEXT NOT NULL DEFAULT '',
    html_signature TEXT NOT NULL DEFAULT '',
    is_default INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL
);
CREATE INDEX identities_account ON identities(account_id, created_at);
CREATE UNIQUE INDEX identities_default ON identities(account_id) WHERE is_default = 1;

-- JMAP EmailSubmission: one message sent (there is no delayed send, so
-- undo_status is 'final'). envelope_json is the envelope used (given or
-- derived); delivery_status_json maps each recipient to its DeliveryStatus.
CREATE TABLE email_submissions (
    id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL,
    identity_id TEXT NOT NULL,
    email_id TEXT NOT NULL,
    thread_id TEXT NOT NULL,
    envelope_json TEXT NOT NULL,
    send_at INTEGER NOT NULL,
    undo_status TEXT NOT NULL,
    delivery_status_json TEXT,
    created_at INTEGER NOT NULL
);
CREATE INDEX email_submissions_account ON email_submissions(account_id, send_at, id);

-- JMAP VacationResponse (the "singleton"); no row = disabled, every text null.
CREATE TABLE vacation_responses (
    account_id TEXT PRIMARY KEY,
    is_enabled INTEGER NOT NULL DEFAULT 0,
    from_date INTEGER,
    to_date INTEGER,
    subject TEXT,
    text_body TEXT,
    html_body TEXT,
    updated_at INTEGER NOT NULL
);

-- Whom the vacation response answered and when (RFC 3834: once per sender per
-- period); emptied whenever the vacation response changes.
CREATE TABLE vacation_replies (
    account_id TEXT NOT NULL,
    sender TEXT NOT NULL,
    replied_at INTEGER NOT NULL,
    PRIMARY KEY (account_id, sender)
);

-- ---------------------------------------------------------------------------
-- Search (jmapmono/mailbox/search.py, search_sql.py, search_query.py): the
-- Email/query filters and sorts, full-text search of bodies, SearchSnippet.
-- Written by messages.append (search.index_message) in the appending
-- transaction; removed with the message (cascade and triggers).

-- Sort keys of the string sorts: the base subject, and the first From/To
-- address's name (else its email). Collations are applied when sorting.
ALTER TABLE message_search ADD COLUMN subject_key TEXT NOT NULL DEFAULT '';
ALTER TABLE message_search ADD COLUMN from_key TEXT NOT NULL DEFAULT '';
ALTER TABLE message_search ADD COLUMN to_key TEXT NOT NULL DEFAULT '';

-- Every top-level header field of a message, one row per lower-cased name:
-- the decoded values folded (lower case, no accents, one line each, joined by
-- newlines) for the header/from/to/cc/bcc/subject/text filters (substring).
CREATE TABLE message_headers (
    message_id TEXT NOT NULL REFERENCES messages(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (message_id, name)
);

-- The collapsed mailbox view: "has this thread a newer email in this mailbox"
-- is one probe of this index per row of message_mailboxes_view.
CREATE INDEX message_mailboxes_thread ON message_mailboxes(mailbox_id, thread_id, received_at, message_id);

-- only: sqlite
-- Full-text index of message_search.text (FTS5, contentless). Its rowids come
-- from message_search_rows (stable: AUTOINCREMENT, unlike an implicit rowid
-- that VACUUM may renumber); the triggers keep both in step with message_search.
CREATE TABLE message_search_rows (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id TEXT NOT NULL UNIQUE
);

-- only: sqlite
CREATE VIRTUAL TABLE message_search_fts USING fts5(text, content='', tokenize='unicode61 remove_diacritics 2');

-- only: sqlite
CREATE TRIGGER message_search_fts_insert AFTER INSERT ON message_search BEGIN INSERT INTO message_search_rows (message_id) VALUES (new.message_id); INSERT INTO message_search_fts (rowid, text) SELECT id, new.text FROM message_search_rows WHERE message_id = new.message_id; END;

-- only: sqlite
CREATE TRIGGER message_search_fts_delete AFTER DELETE ON message_search BEGIN INSERT INTO message_search_fts (message_search_fts, rowid, text) SELECT 'delete', id, old.text FROM message_search_rows WHERE message_id = old.message_id; DELETE FROM message_search_rows WHERE message_id = old.message_id; END;

-- only: sqlite
CREATE TRIGGER message_search_fts_update AFTER UPDATE OF text ON message_search BEGIN INSERT INTO message_search_fts (message_search_fts, rowid, text) SELECT 'delete', id, old.text FROM message_search_rows WHERE message_id = old.message_id; INSERT INTO message_search_fts (rowid, text) SELECT id, new.text FROM message_search_rows WHERE message_id = new.message_id; END;

-- only: postgres
-- Full-text index of message_search.text: the words as search.tsvector() builds
-- them (locale-independent, the same words as SQLite's tokenizer).
ALTER TABLE message_search ADD COLUMN search_vector tsvector NOT NULL DEFAULT ''::tsvector;

-- only: postgres
CREATE INDEX message_search_vector ON message_search USING GIN (search_vector);

-- ---------------------------------------------------------------------------
-- WebSocket tickets (jmapmono/push/ws_tickets.py): short-lived, single-use
-- credentials for browsers, which cannot send Authorization on a WebSocket
-- upgrade (POST /jmap/ws/ticket, then /jmap/ws?ticket=…). Kept in the database
-- so a ticket made by one worker or node is redeemed by any other. Only a
-- SHA-256 of the ticket is stored; redeeming deletes the row. A ticket made
-- with an app password dies with it.
CREATE TABLE ws_tickets (
    ticket_hash TEXT PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    app_password_id TEXT REFERENCES app_passwords(id) ON DELETE CASCADE,
    expires_at INTEGER NOT NULL
);
CREATE INDEX ws_tickets_expires ON ws_tickets(expires_at);

-- ---------------------------------------------------------------------------
-- Web push (RFC 8620 §7.2; jmapmono/push/subscriptions_store.py): the
-- PushSubscriptions a client registered, per user AND credential (the app
-- password it was created with, NULL for the account password): a
-- subscription dies with its credential or its user (cascade). Nothing but
-- the PushVerification is sent to url until verified = 1 (the client set the
-- verification_code it was sent). keys (p256dh, auth; NULL: unencrypted) and
-- url are never returned to clients. types_json: JSON array, NULL = all types.
-- Expired rows are never pushed to and are pruned by the sender.
CREATE TABLE push_subscriptions (
    id TEXT PRIMARY KEY,
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    app_password_id TEXT REFERENCES app_passwords(id) ON DELETE CASCADE,
    device_client_id TEXT NOT NULL,
    url TEXT NOT NULL,
    p256dh TEXT,
    auth TEXT,
    verification_code TEXT NOT NULL,
    verified INTEGER NOT NULL DEFAULT 0,
    expires_at INTEGER NOT NULL,
    types_json TEXT,
    created_at INTEGER NOT NULL
);
CREATE INDEX push_subscriptions_user ON push_subscriptions(user_id, created_at);
CREATE INDEX push_subscriptions_expires ON push_subscriptions(expires_at);

-- version: 2
-- Leases (jmapmono/store/leases.py): the holder of a named periodic job until expires_at, so that
-- housekeeping that must run once per cluster runs on one process at a time.
CREATE TABLE leases (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    expires_at INTEGER NOT NULL
);

-- version: 3
-- Failed logins (jmapmono/accounts/throttle.py), one row per failure: the client address key (an IPv4
-- address or an IPv6 /64) and, for a password login, the user name tried (lower case, known or not).
-- Counted per address over a minute (over the limit: refused) and per user name over 15 minutes
-- (past the limit: attempts from addresses not known-good are delayed). Pruned by housekeeping.
CREATE TABLE login_failures (
    address TEXT NOT NULL,
    username TEXT,
    at INTEGER NOT NULL
);
CREATE INDEX login_failures_address ON login_failures(address, at);
CREATE INDEX login_failures_username ON login_failures(username, at);
CREATE INDEX login_failures_at ON login_failures(at);

-- Known-good addresses: where a user logged in with their password while they had recent failures;
-- attempts for that user from there are never delayed. Expire after 30 days (housekeeping).
CREATE TABLE login_sources (
    user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    address TEXT NOT NULL,
    seen_at INTEGER NOT NULL,
    PRIMARY KEY (user_id, address)
);
CREATE INDEX login_sources_seen ON login_sources(seen_at);

-- version: 4
-- Which account password is in force: counted up by every password change (Accounts.set_password), kept
-- by a rehash. A connection, a WebSocket ticket or a push subscription made with the password records
-- it, so that what was made with a replaced password is known as such even if the CredentialsRevoked
-- event never reached it (jmapmono/push/channel.py checks on resync).
ALTER TABLE users ADD COLUMN password_epoch INTEGER NOT NULL DEFAULT 0;

-- The credential a push subscription or a ticket was made with (RFC 8620 §7.2: a subscription is "tied
-- to the credentials used to authenticate the API request that created it"): app_password_id, or, when
-- that is NULL, the account password of this epoch. Rows made before this version with the account
-- password are taken as made with the password in force now (epoch 0, every user's epoch here); rows
-- of an app password keep password_epoch NULL.
ALTER TABLE push_subscriptions ADD COLUMN password_epoch INTEGER;
UPDATE push_subscriptions SET password_epoch = 0 WHERE app_password_id IS NULL;
ALTER TABLE ws_tickets ADD COLUMN password_epoch INTEGER;
UPDATE ws_tickets SET password_epoch = 0 WHERE app_password_id IS NULL;

-- version: 5
-- The server's VAPID key pairs for web push (RFC 8292, advertised as RFC 9749 says; jmapmono/push/vapid.py),
-- one row per generation: the newest is the Session's applicationServerKey. The private key is PKCS#8 PEM,
-- the public key the base64url uncompressed P-256 point. `jmapmono vapid rotate` adds a generation and
-- destroys every push subscription.
CREATE TABLE vapid_keys (
    generation INTEGER PRIMARY KEY,
    private_key TEXT NOT NULL,
    public_key TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
-- The generation advertised when the subscription was made: its pushes are signed with that key. NULL (made
-- before this version): signed with the newest.
ALTER TABLE push_subscriptions ADD COLUMN vapid_generation INTEGER;

-- version: 6
-- Quotas (RFC 9425, jmapmono/mailbox/quota.py): per account, the octets and the number of its messages, kept
-- by every transaction that adds or removes a message (no recount per delivery); and the operator's limits
-- (`jmapmono user quota`): NULL is the configured default, -1 no limit. Usage starts from a count of what
-- each account holds now.
CREATE TABLE quota_usage (
    account_id TEXT PRIMARY KEY,
    octets INTEGER NOT NULL DEFAULT 0,
    messages INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE quota_limits (
    account_id TEXT PRIMARY KEY,
    octets INTEGER,
    messages INTEGER
);
INSERT INTO quota_usage (account_id, octets, messages)
SELECT account_id, SUM(size), COUNT(*) FROM messages GROUP BY account_id;

-- version: 7
-- Search in the user's language (jmapmono/mailbox/search_tokens.py): the index is fed with tokens made in
-- Python, the same on both backends (CJK runs as bigrams, language-tagged stems apart from the words).
-- tokenizer: what made the row's index entries; 0, every row written before, is the words alone (SQLite:
-- in message_search_fts as the triggers fed it). `jmapmono search reindex` brings rows to the current one;
-- until then they are found as they were.
ALTER TABLE message_search ADD COLUMN tokenizer INTEGER NOT NULL DEFAULT 0;

-- Rows still to reindex: header searches read them all (their trigrams are not indexed).
CREATE INDEX message_search_words_only ON message_search(message_id) WHERE tokenizer = 0;

-- only: sqlite
-- The tokens (space-separated; unicode61 only splits them): words, the positional stream; extras, the
-- positionless set; fields, the trigrams of the From/To/Cc/Bcc/Subject values. Content is kept (SQLite
-- before 3.43 cannot delete from a contentless table by rowid alone), so a row is removed by its rowid,
-- that of message_search_rows.
CREATE VIRTUAL TABLE message_search_terms USING fts5(words, extras, fields, tokenize='unicode61 remove_diacritics 2');

-- only: sqlite
DROP TRIGGER message_search_fts_insert;

-- only: sqlite
DROP TRIGGER message_search_fts_update;

-- only: sqlite
DROP TRIGGER message_search_fts_delete;

-- only: sqlite
CREATE TRIGGER message_search_rows_insert AFTER INSERT ON message_search BEGIN INSERT INTO message_search_rows (message_id) VALUES (new.message_id); END;

-- only: sqlite
CREATE TRIGGER message_search_rows_delete AFTER DELETE ON message_search BEGIN INSERT INTO message_search_fts (message_search_fts, rowid, text) SELECT 'delete', id, old.text FROM message_search_rows WHERE message_id = old.message_id AND old.tokenizer = 0; DELETE FROM message_search_terms WHERE rowid IN (SELECT id FROM message_search_rows WHERE message_id = old.message_id AND old.tokenizer > 0); DELETE FROM message_search_rows WHERE message_id = old.message_id; END;
-- version: 8
-- Sieve scripts (RFC 9661; jmapmono/mailbox/sieve/scripts.py): the content is a blob the account holds
-- (reference "sieve:<id>"), beside its compiled form (JSON, made once when the content is set); at most one
-- active script per account. The replies of the scripts' vacation actions (RFC 5230 §4.2), one per sender
-- per handle within :days, apart from the VacationResponse's own.
CREATE TABLE sieve_scripts (
    id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL,
    name TEXT NOT NULL,
    blob_id TEXT NOT NULL,
    is_active INTEGER NOT NULL DEFAULT 0,
    compiled TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE UNIQUE INDEX sieve_scripts_name ON sieve_scripts (account_id, name);
CREATE UNIQUE INDEX sieve_scripts_active ON sieve_scripts (account_id) WHERE is_active = 1;
CREATE TABLE sieve_vacation_replies (
    account_id TEXT NOT NULL,
    handle TEXT NOT NULL,
    sender TEXT NOT NULL,
    replied_at INTEGER NOT NULL,
    PRIMARY KEY (account_id, handle, sender)
);

-- version: 9
-- Mailbox sharing (jmapmono/mailbox/shares.py): a mailbox of account_id shared with one user, with the
-- rights of RFC 8621 §2 MailboxRights the owner granted (may_share: may change who the mailbox is shared
-- with). A sharee sees the owner's account with only the mailboxes shared with them; rights are per
-- mailbox, never inherited by children. Rows go with the mailbox or the sharee.
CREATE TABLE mailbox_shares (
    mailbox_id TEXT NOT NULL REFERENCES mailboxes(id) ON DELETE CASCADE,
    account_id TEXT NOT NULL,
    sharee_user_id INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    may_read_items INTEGER NOT NULL DEFAULT 0,
    may_add_items INTEGER NOT NULL DEFAULT 0,
    may_remove_items INTEGER NOT NULL DEFAULT 0,
    may_set_seen INTEGER NOT NULL DEFAULT 0,
    may_set_keywords INTEGER NOT NULL DEFAULT 0,
    may_create_child INTEGER NOT NULL DEFAULT 0,
    may_rename INTEGER NOT NULL DEFAULT 0,
    may_delete INTEGER NOT NULL DEFAULT 0,
    may_submit INTEGER NOT NULL DEFAULT 0,
    may_share INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (mailbox_id, sharee_user_id)
);
CREATE INDEX mailbox_shares_sharee ON mailbox_shares(sharee_user_id, account_id);
CREATE INDEX mailbox_shares_account ON mailbox_shares(account_id);
-- RFC 9670 §5 ShareNotification: written in the sharee's account (account_id) when a share to them is
-- granted, changed or revoked; the client may only destroy them. changed_by_json: {name, email,
-- principalId}; rights as JSON MailboxRights objects, NULL when there were none (granted) or are none
-- (revoked).
CREATE TABLE share_notifications (
    id TEXT PRIMARY KEY,
    account_id TEXT NOT NULL,
    created INTEGER NOT NULL,
    changed_by_json TEXT NOT NULL,
    object_type TEXT NOT NULL,
    object_account_id TEXT NOT NULL,
    object_id TEXT NOT NULL,
    old_rights_json TEXT,
    new_rights_json TEXT,
    name TEXT NOT NULL
);
CREATE INDEX share_notifications_account ON share_notifications(account_id, created, id);

-- version: 10
-- The default quota limits (configuration) last seen in force: a process that starts with other defaults
-- records the Quota changes of every account that follows them (jmapmono/mailbox/quota.py
-- claim_defaults), so Quota/changes and pushes report a change of configuration too. One row; none
-- until a serving process first starts.
CREATE TABLE quota_defaults_applied (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    octets INTEGER,
    messages INTEGER
);
