"""Users, passwords, app passwords and delegation: who may use which account."""
