"""What both ext_authz transports (api/ext_authz.py over gRPC, api/ext_authz_http.py
over HTTP) do around one Check, whatever they speak: log context, the Gatekeeper's
decision, the per-Check metrics, and failing closed on any unexpected error.

A transport subclasses `ObservedCheck` and says how an outcome becomes its response
(`allowed`, `denied`) and what its 503 is (`error_response`).
"""

from __future__ import annotations

import logging
import time
from functools import lru_cache
from typing import Any, Generic, TypeVar

from tahoe_auth.authz.access import UNAVAILABLE_MESSAGE
from tahoe_auth.authz.check import CheckContext, CheckOutcome, Gatekeeper
from tahoe_auth.domain import decision
from tahoe_auth.kernel import logs, metrics

log = logging.getLogger("tahoe_auth.ext_authz")

__all__ = ["UNAVAILABLE_MESSAGE", "ObservedCheck", "observe"]

R = TypeVar("R")


@lru_cache(maxsize=256)
def _metrics(outcome: str, reason: str) -> tuple[Any, Any]:
    """The labelled children, resolved once (labels() per call costs more than Check's logic)."""
    return metrics.CHECK_DECISIONS.labels(outcome, reason), metrics.CHECK_DURATION.labels(outcome)


def observe(outcome: str, reason: str, started: float) -> None:
    counter, histogram = _metrics(outcome, reason)
    counter.inc()
    histogram.observe(time.perf_counter() - started)


class ObservedCheck(Generic[R]):
    """One Check, timed and counted, that never raises: an unexpected error is a 503."""

    error_response: R

    def __init__(self, gatekeeper: Gatekeeper) -> None:
        self._gatekeeper = gatekeeper

    def allowed(self, outcome: CheckOutcome) -> R:
        raise NotImplementedError

    def denied(self, outcome: CheckOutcome) -> R:
        raise NotImplementedError

    def answer(self, context: CheckContext, traceparent: str, started: float) -> R:
        """`started`: time.perf_counter() when the request arrived (the duration metric's start)."""
        try:
            logs.request_id_var.set(context.request_id)
            logs.traceparent_var.set(traceparent)
            outcome = self._gatekeeper.check(context)
            if outcome.allowed:
                response = self.allowed(outcome)
                observe("allowed", decision.ALLOW, started)
                return response
            response = self.denied(outcome)
            observe("denied", outcome.decision.reason, started)
            return response
        except Exception:  # never an allow by accident: deny (fail closed), say why in the log
            return self.fail_closed(started)

    def fail_closed(self, started: float) -> R:
        log.exception("Check failed unexpectedly: denying with 503")
        observe("error", "internal_error", started)
        return self.error_response
