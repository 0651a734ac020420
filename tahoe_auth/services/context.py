"""What a use case knows about the call it serves."""

from __future__ import annotations

from dataclasses import dataclass

from tahoe_auth.domain.principal import Principal


@dataclass(frozen=True)
class CallContext:
    principal: Principal | None = None
    client_address: str = ""
    user_agent: str = ""
    request_id: str = ""

    def require_principal(self) -> Principal:
        if self.principal is None:
            from tahoe_auth.domain.errors import Unauthenticated

            raise Unauthenticated("this method needs a credential")
        return self.principal
