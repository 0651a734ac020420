"""Webhook delivery: endpoints, the outbox worker and an SSRF-safe HTTP sender."""
