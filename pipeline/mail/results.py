"""What a delivery run did, per campaign, and what a person should do about it.

The send loop fills these; the CLI prints them and the scheduler logs them, both
with the same words (``advice``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from pipeline.ledger.bounce_rows import CampaignRates

RESUME = "pipeline send --resume"
FORCE = "pipeline send --resume --force"


@dataclass
class CampaignResult:
    key: str
    total: int = 0
    sent: int = 0  # in this run
    failed: int = 0
    bounced: int = 0
    skipped: int = 0
    retried: int = 0  # 4xx answers (or no answer in time), to be tried again
    recovered: int = 0  # left 'sending' by a sender that died; sent again
    remaining: int = 0  # pending or sending when the run ended
    finished: bool = False
    busy_with: str | None = None  # another sender holds this campaign
    problems: list[tuple[str, str, str]] = field(default_factory=list)  # (address, status, reply)
    paused: str | None = None  # why the campaign is paused (it sends nothing until resumed)
    held: int = 0  # waiting for `send --resume --force`
    held_now: int = 0  # of which this run held (found in flight after a second crash)
    held_addresses: list[tuple[str, str]] = field(default_factory=list)  # (address, why)
    released: int = 0  # held deliveries sent again because of --force
    rates: CampaignRates | None = None  # the whole campaign's bounce and complaint rates so far

    def advice(self) -> list[str]:
        """What stopped this campaign and how to continue, in words; empty if nothing did."""
        lines = []
        if self.paused:
            lines.append(f"campaign {self.key} is paused: {self.paused}. Fix the cause, then continue with: {RESUME}")
        if self.held:
            lines.append(
                f"campaign {self.key}: {self.held} deliver{'y is' if self.held == 1 else 'ies are'} held: each was "
                f"in flight when a sender stopped without recording it, twice, so it may have arrived already. "
                f"Send {'it' if self.held == 1 else 'them'} anyway with: {FORCE}"
            )
        return lines


@dataclass
class Summary:
    campaigns: list[CampaignResult] = field(default_factory=list)
    seconds: float = 0.0

    def _sum(self, name: str) -> int:
        return sum(int(getattr(c, name)) for c in self.campaigns)

    @property
    def sent(self) -> int:
        return self._sum("sent")

    @property
    def failed(self) -> int:
        return self._sum("failed")

    @property
    def bounced(self) -> int:
        return self._sum("bounced")

    @property
    def skipped(self) -> int:
        return self._sum("skipped")

    @property
    def remaining(self) -> int:
        return self._sum("remaining")

    @property
    def held(self) -> int:
        return self._sum("held")

    @property
    def paused(self) -> list[CampaignResult]:
        return [c for c in self.campaigns if c.paused]

    @property
    def ok(self) -> bool:
        """Nothing failed or bounced in this run."""
        return self.failed == 0 and self.bounced == 0


@dataclass(frozen=True)
class Progress:
    """Passed to the ``progress`` callback after every batch of outcomes."""

    campaign: str
    total: int
    sent: int  # whole campaign, not just this run
    failed: int  # failed + bounced
    remaining: int


ProgressCallback = Callable[[Progress], None]
