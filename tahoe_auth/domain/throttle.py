"""How long a failed login makes the next attempt wait: pure policy, no I/O
(services/throttle.py keeps the counts).

After `free_failures` failures within `window` seconds, each failure imposes a wait
before the next attempt: 1 s, doubling every `doubling_every` further failures, up to
`max_delay`.

Two policies, because the two counts protect different things:
- per account (tenant + email): a password guessed against one account. Few free
  failures, doubling at each, up to 15 minutes: the owner mistypes a few times at most,
  a guesser gets under twenty tries an hour.
- per client address: one source spraying many accounts. But an address is often many
  people (a company or campus NAT, a mobile carrier), and its lock delays every login
  behind it, correct passwords included. So it allows many more failures (100 an hour),
  grows ten times more slowly and stops at one minute: a NAT where people mistype is
  never locked, and even under attack its users wait at most a minute per attempt
  instead of fifteen. The price: one address can try about two hundred passwords an
  hour across accounts (about thirty with the account's policy), each account still held by
  its own policy, and every login by the per-address rate limit (api/rate_limit.py).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ThrottlePolicy:
    free_failures: int
    max_delay: float = 900.0
    window: float = 3600.0
    doubling_every: int = 1
    first_delay: float = 1.0

    def delay_after(self, failures: int) -> float:
        if failures < self.free_failures:
            return 0.0
        doublings = (failures - self.free_failures) // self.doubling_every
        return min(self.max_delay, self.first_delay * 2.0 ** min(doublings, 64))  # bounded: 2.0 ** 1024 overflows


ACCOUNT_POLICY = ThrottlePolicy(free_failures=5)
# Second-factor answers per user, across challenges: a six-digit code has a million
# values, so after ten misses in a quarter hour each further try waits a minute and
# more (up to 15); a challenge also dies after its own five misses.
MFA_POLICY = ThrottlePolicy(free_failures=10, max_delay=900.0, window=900.0, first_delay=60.0)
ADDRESS_POLICY = ThrottlePolicy(free_failures=100, max_delay=60.0, doubling_every=10)
