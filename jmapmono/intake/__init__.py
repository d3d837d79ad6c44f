"""Mail coming in: the LMTP server and the ``deliver`` agent, both handing messages to the MailboxManager."""
