"""The mailbox layer: MailboxManager, MIME parsing, blobs and delivery. Knows nothing of JMAP."""
