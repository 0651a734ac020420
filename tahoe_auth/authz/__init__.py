"""Credential verification and the hot path shared by Check and the gRPC interceptor."""
