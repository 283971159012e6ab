"""The retrain policy's truth table: k-of-n, cooldown, budget, data gate, first window."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from flywheel.config import PolicySpec
from flywheel.policy import WindowSignal, decide

POLICY = PolicySpec(k=2, n=3, cooldown_days=56, budget=2, budget_days=365)


def end(month: int) -> datetime:
    """End of a 2013 month on the data clock (the first of the next)."""
    return datetime(2013 + month // 12, month % 12 + 1, 1, tzinfo=UTC)


def windows(flags: str, first_month: int = 4) -> list[WindowSignal]:
    """'.DX' -> clean, drift, decay windows on consecutive months."""
    out = []
    for i, flag in enumerate(flags):
        month = first_month + i
        out.append(
            WindowSignal(
                window=f"2013-{month:02d}",
                end=end(month),
                drift=flag == "D",
                decay=flag == "X",
                drifted_features=("temp", f"f{month}") if flag == "D" else (),
            )
        )
    return out


@pytest.mark.parametrize(
    ("flags", "retrain"),
    [
        ("D", False),  # first window: one flagged window is not 2 of 3
        ("DD", True),  # two windows so far, both flagged
        ("D.D", True),  # 2 of the last 3
        ("DD.", True),  # 2 of the last 3, the current one clean
        ("D..D", False),  # the first D left the last 3
        ("...", False),
        ("XD", True),  # decay counts like drift
        ("XX", True),
        (".X.", False),
    ],
)
def test_k_of_n(flags: str, retrain: bool) -> None:
    decision = decide(POLICY, windows(flags), retrains=[], data_gate_green=True)
    assert decision.retrain is retrain, decision.summary()
    assert decision.window == windows(flags)[-1].window


def test_k_of_one_retrains_on_first_flagged_window() -> None:
    policy = PolicySpec(k=1, n=1, cooldown_days=0, budget=5, budget_days=365)
    assert decide(policy, windows("D"), [], True).retrain
    assert not decide(policy, windows("D."), [], True).retrain


@pytest.mark.parametrize(
    ("last_retrain_month", "retrain"),
    [
        (7, False),  # same window: a re-run of the same window is inside the cooldown
        (6, False),  # 31 days < 56
        (5, True),  # 61 days >= 56
    ],
)
def test_cooldown(last_retrain_month: int, retrain: bool) -> None:
    signals = windows("DDDD")  # 2013-04 .. 2013-07
    decision = decide(POLICY, signals, [end(last_retrain_month)], True)
    assert decision.retrain is retrain, decision.summary()
    if not retrain:
        assert any("still cooling down" in r for r in decision.reasons)


def test_old_window_rechecked_after_a_later_retrain_is_superseded() -> None:
    # Re-checking May after a retrain at November must not retrain again.
    decision = decide(POLICY, windows("DD"), [end(11)], True)
    assert not decision.retrain
    assert any(r.startswith("superseded") for r in decision.reasons)


def test_budget() -> None:
    policy = PolicySpec(k=1, n=1, cooldown_days=0, budget=2, budget_days=365)
    signals = windows("DDDD")
    spent = [end(4), end(5)]
    decision = decide(policy, signals, spent, True)
    assert not decision.retrain
    assert any("budget spent" in r for r in decision.reasons)
    # Retrains older than the period no longer count.
    old = [datetime(2012, 1, 1, tzinfo=UTC), datetime(2012, 2, 1, tzinfo=UTC)]
    assert decide(policy, signals, old, True).retrain


def test_red_data_gate_blocks_retrain() -> None:
    decision = decide(POLICY, windows("DD"), [], data_gate_green=False)
    assert not decision.retrain
    assert "latest data gate RED" in decision.reasons


def test_every_decision_says_why() -> None:
    yes = decide(POLICY, windows("DD"), [], True)
    no = decide(POLICY, windows(".D"), [], True)
    assert yes.summary().startswith("RETRAIN at 2013-05")
    assert no.summary().startswith("no retrain at 2013-05")
    assert "1 of the last 2 window(s) flagged (only 2 so far), 2 of 3 needed: not confirmed" in (
        no.reasons
    )
    # The newest drifted features come first, each once.
    assert yes.drifted_features == ["temp", "f5", "f4"]
    assert yes.flagged_windows == ["2013-04", "2013-05"]
    assert yes.as_dict()["retrain"] is True


def test_signals_must_be_ordered_and_unique() -> None:
    with pytest.raises(ValueError, match="oldest first"):
        decide(POLICY, list(reversed(windows("DD"))), [], True)
    with pytest.raises(ValueError, match="oldest first"):
        decide(POLICY, [*windows("D"), *windows("D")], [], True)
    with pytest.raises(ValueError, match="at least"):
        decide(POLICY, [], [], True)
