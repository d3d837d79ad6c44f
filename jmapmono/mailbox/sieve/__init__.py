"""Sieve mail filtering (RFC 5228 with imap4flags, vacation, reject/ereject, mailbox, copy): scripts are parsed
and checked once, when set (:mod:`.compile`), kept compiled in the store (:mod:`.scripts`), and the account's
active one runs at delivery, before the message is stored (:mod:`.run`)."""
