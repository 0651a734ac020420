"""`python -m transcription_demo [migrate]`: migrate the schema, then serve."""

from __future__ import annotations

import logging
import sys

from tahoe_auth.identity import IdentityVerifier
from transcription_demo import migrate
from transcription_demo.app import Service, make_server
from transcription_demo.config import Config
from transcription_demo.store import JobStore, make_engine
from transcription_demo.usage import UsageReporter
from transcription_demo.usage_grpc import GrpcUsageSender


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = Config.from_env()
    if config.database_url.startswith("sqlite:///") and not config.database_url.startswith("sqlite:////"):
        from pathlib import Path

        Path(config.database_url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    migrate.upgrade(config.database_url, legacy_tenant_id=config.legacy_tenant_id)
    if argv[1:2] == ["migrate"]:
        return 0
    verifier = IdentityVerifier(config.jwks_url, audience=config.audience, issuer=config.issuer)
    log = logging.getLogger("transcription")
    if config.client_id and config.client_secret:
        sender = GrpcUsageSender(config.auth_grpc_target, config.client_id, config.client_secret)
        usage = UsageReporter(sender)
        log.info("reporting usage to %s as service account %s", config.auth_grpc_target, config.client_id)
    else:
        usage = UsageReporter(None)
        log.warning("usage is not reported: set TRANSCRIPTION_CLIENT_ID and TRANSCRIPTION_CLIENT_SECRET")
    service = Service(JobStore(make_engine(config.database_url)), verifier, usage)
    server = make_server(config, service)
    log.info("transcription demo listening on %s", config.addr)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
