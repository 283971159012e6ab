"""The retrain policy: when confirmed drift is allowed to retrain the champion.

One small function, `decide`, reviewed like any other code. A retrain needs all four:

1. **Confirmed**: drift or performance decay in at least `k` of the last `n` windows
   (the current one included). One noisy window is not a trend; with fewer than `n`
   windows so far, the `k` must still be found among those there are.
2. **Cooldown**: at least `cooldown_days` since the last retrain this policy asked for,
   so a retrain has time to show its effect before the next one; and none after the
   window (re-checking an old window never retrains on what was trained on since).
3. **Budget**: fewer than `budget` retrains in the `budget_days` before this window.
4. **Data gate green**: the newest batch passed validation; retraining on a period whose
   data is in quarantine would train on a hole.

Time is the data's clock (window ends), not the wall clock, so a replay of a past year
behaves as the year did. Every decision carries the reasons for and against, recorded by
the caller whatever the outcome.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import Any

from flywheel.config import PolicySpec


@dataclass(frozen=True)
class WindowSignal:
    """What monitoring concluded about one window."""

    window: str  # e.g. the month, "2013-06"
    end: datetime  # the window's end on the data clock
    drift: bool  # data or prediction drift beyond the thresholds
    decay: bool = False  # performance on matured labels fell below the reference
    drifted_features: tuple[str, ...] = ()

    @property
    def flagged(self) -> bool:
        return self.drift or self.decay


@dataclass(frozen=True)
class Decision:
    retrain: bool
    window: str
    reasons: list[str]  # each check, passed or not, in words
    flagged_windows: list[str] = field(default_factory=list)
    drifted_features: list[str] = field(default_factory=list)

    def summary(self) -> str:
        verdict = "RETRAIN" if self.retrain else "no retrain"
        return f"{verdict} at {self.window}: " + "; ".join(self.reasons)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def decide(
    policy: PolicySpec,
    signals: list[WindowSignal],
    retrains: list[datetime],
    data_gate_green: bool,
) -> Decision:
    """Decide for the last window of `signals` (chronological, one per window).

    `retrains`: data-clock times (window ends) of the retrains this policy already asked for.
    """
    if not signals:
        raise ValueError("decide needs at least the current window's signal")
    ends = [s.end for s in signals]
    if ends != sorted(ends) or len({s.window for s in signals}) != len(signals):
        raise ValueError("signals must be one per window, oldest first")
    current = signals[-1]
    recent = signals[-policy.n :]
    flagged = [s for s in recent if s.flagged]
    reasons = []

    confirmed = len(flagged) >= policy.k
    seen = f"{len(flagged)} of the last {len(recent)} window(s) flagged"
    if len(recent) < policy.n:
        seen += f" (only {len(recent)} so far)"
    reasons.append(
        f"{seen}, {policy.k} of {policy.n} needed" + ("" if confirmed else ": not confirmed")
    )

    earlier = [t for t in retrains if t <= current.end]
    later = [t for t in retrains if t > current.end]
    cooldown = timedelta(days=policy.cooldown_days)
    cooled = True
    if later:
        # A re-check of an old window: the data after it has been trained on already.
        cooled = False
        reasons.append(f"superseded: a retrain at {max(later):%Y-%m-%d} came after this window")
    elif earlier:
        since = current.end - max(earlier)
        cooled = since >= cooldown
        reasons.append(
            f"last retrain {since.days} day(s) before, cooldown {policy.cooldown_days} day(s)"
            + ("" if cooled else ": still cooling down")
        )
    else:
        reasons.append("no retrain yet: no cooldown")

    period = timedelta(days=policy.budget_days)
    spent = sum(1 for t in earlier if current.end - t < period)
    in_budget = spent < policy.budget
    reasons.append(
        f"{spent} of {policy.budget} retrain(s) used in {policy.budget_days} days"
        + ("" if in_budget else ": budget spent")
    )
    reasons.append("latest data gate green" if data_gate_green else "latest data gate RED")

    features: list[str] = []
    for s in reversed(flagged):  # most recent first, each feature once
        features += [f for f in s.drifted_features if f not in features]
    return Decision(
        retrain=confirmed and cooled and in_budget and data_gate_green,
        window=current.window,
        reasons=reasons,
        flagged_windows=[s.window for s in flagged],
        drifted_features=features,
    )
