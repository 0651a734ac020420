"""docs/tenants.md states the built-in roles and each method's policy: keep it true."""

from __future__ import annotations

import re
from pathlib import Path

from tahoe_auth import server
from tahoe_auth.domain.permissions import BUILTIN_ROLES

DOC = (Path(__file__).resolve().parents[2] / "docs" / "tenants.md").read_text()
ROW = re.compile(r"^\| `([^`]+)` \| ([^|]+) \|", re.M)
NOTES = re.compile(r"^\| `([^`]+)` \| [^|]+ \|([^|]*)\|", re.M)


def rows() -> dict[str, str]:
    return {name: cell.strip() for name, cell in ROW.findall(DOC)}


def test_builtin_roles_are_documented_exactly() -> None:
    documented = rows()
    for role, grants in BUILTIN_ROLES.items():
        assert documented[role] == ", ".join(f"`{g}`" for g in grants), role


def test_every_method_policy_is_documented_exactly() -> None:
    documented = rows()
    documented_services = [s for s in server.GOVERNED_SERVICES if s.name in ("AuthService", "TenantService")]
    for name in server.method_names(documented_services):
        service, method = name.strip("/").split("/")
        policy = server.POLICIES[name]
        if policy.public:
            expected = "public"
        elif policy.platform_only:
            expected = "platform administrator"
        else:
            expected = f"`{policy.permission}`" if policy.permission else "self"
        assert documented[f"{service.rsplit('.', 1)[1]}.{method}"] == expected, name


def test_the_step_up_methods_are_documented_exactly() -> None:
    notes = {name: cell for name, cell in NOTES.findall(DOC)}
    documented_services = [s for s in server.GOVERNED_SERVICES if s.name in ("AuthService", "TenantService")]
    for name in server.method_names(documented_services):
        service, method = name.strip("/").split("/")
        documented = "step-up" in notes[f"{service.rsplit('.', 1)[1]}.{method}"]
        assert documented == server.POLICIES[name].step_up, name
