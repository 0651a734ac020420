"""Sending mail: an SMTP transport (STARTTLS or TLS, authentication) and a log
transport that writes each message to a directory (the embedded default)."""
