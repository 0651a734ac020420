"""Who a verified credential speaks for."""

from __future__ import annotations

from dataclasses import dataclass, field

from tahoe_auth.domain.mfa import MfaStanding
from tahoe_auth.domain.permissions import PermissionSet

USER = "user"
API_KEY = "api_key"
SERVICE = "service"
PLATFORM = "platform"


@dataclass(frozen=True)
class Principal:
    tenant_id: str
    subject: str
    subject_type: str
    permissions: PermissionSet = field(default_factory=lambda: PermissionSet.of(()))
    session_id: str = ""
    expires_at: int | None = None
    platform_admin: bool = False
    tenant_active: bool = True
    subject_active: bool = True
    # How the caller proved who it is, for logs and ExplainDecision (never the secret).
    credential: str = ""
    # User sessions: how they signed in (RFC 8176 `amr`), and their second factors as
    # far as step-up cares (enrolled, required by policy, last verified, window).
    amr: tuple[str, ...] = ()
    mfa: MfaStanding = field(default_factory=MfaStanding)
    # A restricted token (only `mfa_enrollment` exists) and the challenge it belongs to.
    restriction: str = ""
    challenge_id: str = ""

    @property
    def platform_scoped(self) -> bool:
        """Not bound to one tenant: platform administrators and platform-wide service
        accounts (whose tokens carry an empty tenant). They name the tenant they act on."""
        return self.platform_admin or not self.tenant_id
