"""Mail going out: the SMTP relay (smarthost) client, EmailSubmission sending and vacation replies."""
