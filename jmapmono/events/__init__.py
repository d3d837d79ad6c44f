"""The event buses (mailbox and JMAP), their listeners and registration keys."""
