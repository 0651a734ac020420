"""A demo transcription service behind Envoy + Tahoe Auth: it trusts only the verified
identity (`x-tahoe-identity`, checked with tahoe_auth.identity) and keeps every job
in its tenant."""
