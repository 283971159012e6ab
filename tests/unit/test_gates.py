"""The gate's truth table: thresholds, margins (with the exact edge), directions, missing and
NaN metrics, lineage, dry runs; and the decision's summary and tags."""

from __future__ import annotations

import json
import math

import pytest

from flywheel.config import GateSpec, load_config
from flywheel.gates import (
    EPSILON,
    LINEAGE_TAGS,
    Check,
    Decision,
    beats_champion,
    decide,
    lineage_complete,
    meets_thresholds,
)

AUC = GateSpec(metric="roc_auc", threshold=0.60, min_improvement=0.002)
LOSS = GateSpec(metric="log_loss", threshold=0.60, min_improvement=0.005)
GATES = [AUC, GateSpec(metric="log_loss", threshold=0.60)]  # as in configs/flights.yaml
LINEAGE = {
    "feast.feature_service": "flight_delay_v1",
    "dataset.fingerprint": "9f2c4e1ab0d3",
    "code.version": "4f2a9c1",
}
GOOD = {"roc_auc": 0.712, "log_loss": 0.48}


def by_name(checks: list[Check]) -> dict[str, Check]:
    return {c.name: c for c in checks}


def test_gates_match_the_flights_config() -> None:
    # The table below uses the real config's gates: keep them in sync.
    assert load_config().gates == GATES


def test_first_model_is_judged_on_thresholds_only() -> None:
    d = decide(GOOD, None, LINEAGE, GATES)
    assert d.promote
    assert d.passed
    assert d.outcome == "passed"
    vs = by_name(d.checks)["vs_champion.roc_auc"]
    assert vs.passed
    assert vs.detail == "no champion yet: thresholds only"
    assert by_name(d.checks)["threshold.roc_auc"].detail == "roc_auc 0.712 >= 0.600"
    assert by_name(d.checks)["threshold.log_loss"].detail == "log_loss 0.480 <= 0.600"


def test_first_model_below_a_threshold_is_refused() -> None:
    d = decide({"roc_auc": 0.58, "log_loss": 0.48}, None, LINEAGE, GATES)
    assert not d.promote
    assert [c.name for c in d.failed] == ["threshold.roc_auc"]
    assert d.failed[0].detail == "roc_auc 0.580 < 0.600"


@pytest.mark.parametrize(
    ("candidate", "champion", "passes"),
    [
        pytest.param(0.720, 0.712, True, id="better-by-more-than-margin"),
        pytest.param(0.700, 0.712, False, id="worse"),
        pytest.param(0.712, 0.712, False, id="equal"),
        pytest.param(0.712, 0.710, True, id="exactly-at-margin"),
        # 0.688 - 0.686 == 0.0019999999999998908 in floats: the edge passes anyway.
        pytest.param(0.688, 0.686, True, id="exactly-at-margin-float-noise"),
        pytest.param(0.7119, 0.710, False, id="just-below-margin"),
        pytest.param(0.710 + 0.002 - EPSILON / 2, 0.710, True, id="within-epsilon"),
        pytest.param(0.710 + 0.002 - 1e-6, 0.710, False, id="beyond-epsilon"),
    ],
)
def test_beating_the_champion_by_the_margin(
    candidate: float, champion: float, passes: bool
) -> None:
    assert (0.688 - 0.686) < 0.002  # the float noise the epsilon exists for
    checks = beats_champion({"roc_auc": candidate}, {"roc_auc": champion, "log_loss": 0.5}, GATES)
    assert len(checks) == 1  # log_loss has no margin: thresholds only
    assert checks[0].name == "vs_champion.roc_auc"
    assert checks[0].passed is passes
    d = decide({"roc_auc": candidate, "log_loss": 0.5}, {"roc_auc": champion}, LINEAGE, GATES)
    assert d.promote is passes


def test_margin_detail_has_the_numbers() -> None:
    (ok,) = beats_champion({"roc_auc": 0.712}, {"roc_auc": 0.710}, [AUC])
    assert ok.detail == "roc_auc 0.712 vs champion 0.710: improvement +0.002 >= 0.002 required"
    (bad,) = beats_champion({"roc_auc": 0.700}, {"roc_auc": 0.712}, [AUC])
    assert bad.detail == "roc_auc 0.700 vs champion 0.712: improvement -0.012 < 0.002 required"


def test_zero_margin_means_at_least_as_good() -> None:
    gate = GateSpec(metric="roc_auc", threshold=0.5, min_improvement=0.0)
    assert beats_champion({"roc_auc": 0.7}, {"roc_auc": 0.7}, [gate])[0].passed
    assert not beats_champion({"roc_auc": 0.699}, {"roc_auc": 0.7}, [gate])[0].passed


@pytest.mark.parametrize(
    ("candidate", "champion", "passes"),
    [
        pytest.param(0.470, 0.480, True, id="lower-by-more-than-margin"),
        pytest.param(0.475, 0.480, True, id="lower-exactly-by-margin"),
        pytest.param(0.402, 0.407, True, id="lower-exactly-by-margin-float-noise"),
        pytest.param(0.4751, 0.480, False, id="lower-by-less-than-margin"),
        pytest.param(0.490, 0.480, False, id="higher-is-worse"),
    ],
)
def test_lower_is_better_direction(candidate: float, champion: float, passes: bool) -> None:
    assert not LOSS.higher_is_better
    (check,) = beats_champion({"log_loss": candidate}, {"log_loss": champion}, [LOSS])
    assert check.passed is passes
    assert "lower is better" in check.detail


def test_lower_is_better_threshold() -> None:
    ok, bad = (
        meets_thresholds({"log_loss": 0.60}, [LOSS]),
        meets_thresholds({"log_loss": 0.61}, [LOSS]),
    )
    assert ok[0].passed
    assert ok[0].detail == "log_loss 0.600 <= 0.600"
    assert not bad[0].passed
    assert bad[0].detail == "log_loss 0.610 > 0.600"


def test_threshold_edge_passes() -> None:
    assert meets_thresholds({"roc_auc": 0.6}, [AUC])[0].passed
    assert meets_thresholds({"roc_auc": 0.1 * 6}, [AUC])[0].passed  # 0.6000000000000001
    assert not meets_thresholds({"roc_auc": 0.5999}, [AUC])[0].passed


def test_missing_metric_fails_naming_it() -> None:
    d = decide({"roc_auc": 0.9}, {"roc_auc": 0.7, "log_loss": 0.5}, LINEAGE, GATES)
    assert not d.promote
    (failed,) = d.failed
    assert failed.name == "threshold.log_loss"
    assert "log_loss is missing" in failed.detail
    # Missing on the candidate side of a margin gate, too.
    (vs,) = beats_champion({}, {"roc_auc": 0.7}, [AUC])
    assert not vs.passed
    assert "roc_auc is missing" in vs.detail


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, "0.7", None, True])
def test_nan_and_non_numbers_fail(bad: object) -> None:
    metrics = {"roc_auc": bad, "log_loss": 0.4}
    d = decide(metrics, None, LINEAGE, GATES)  # type: ignore[arg-type]
    if isinstance(bad, str):  # a numeric string is a number
        assert d.promote
        return
    assert not d.promote
    assert [c.name for c in d.failed] == ["threshold.roc_auc"]


def test_nan_champion_metric_fails_closed() -> None:
    (check,) = beats_champion({"roc_auc": 0.9}, {"roc_auc": math.nan}, [AUC])
    assert not check.passed
    assert "champion" in check.detail
    assert "NaN" in check.detail
    (check,) = beats_champion({"roc_auc": 0.9}, {}, [AUC])
    assert not check.passed
    assert "cannot compare" in check.detail


@pytest.mark.parametrize("missing", LINEAGE_TAGS)
@pytest.mark.parametrize("how", ["absent", "blank"])
def test_incomplete_lineage_is_never_promoted(missing: str, how: str) -> None:
    tags = dict(LINEAGE)
    if how == "absent":
        del tags[missing]
    else:
        tags[missing] = "  "
    great = {"roc_auc": 0.99, "log_loss": 0.05}
    d = decide(great, {"roc_auc": 0.6, "log_loss": 0.6}, tags, GATES)
    assert not d.promote
    assert not d.passed
    assert d.outcome == "refused"
    assert [c.name for c in d.failed] == ["lineage"]
    assert missing in d.failed[0].detail
    assert all(other not in d.failed[0].detail for other in set(LINEAGE_TAGS) - {missing})


def test_lineage_names_every_missing_key() -> None:
    check = lineage_complete({})
    assert not check.passed
    assert all(k in check.detail for k in LINEAGE_TAGS)
    ok = lineage_complete(LINEAGE)
    assert ok.passed
    assert "flight_delay_v1" in ok.detail


@pytest.mark.parametrize("good", [True, False])
def test_dry_run_never_promotes_but_records(good: bool) -> None:
    metrics = GOOD if good else {"roc_auc": 0.5, "log_loss": 0.48}
    d = decide(metrics, None, LINEAGE, GATES, dry_run=True)
    assert d.promote is False
    assert d.dry_run
    assert d.passed is good
    assert d.outcome == ("dry_run_passed" if good else "dry_run_refused")
    tags = d.as_tags()
    assert tags["gate.decision"] == d.outcome
    assert len(json.loads(tags["gate.checks"])) == len(d.checks)
    assert d.summary().startswith("DRY RUN")


def test_summary_lists_every_check_with_marks_and_numbers() -> None:
    d = decide({"roc_auc": 0.705, "log_loss": 0.48}, {"roc_auc": 0.704}, LINEAGE, GATES)
    text = d.summary()
    assert not d.promote
    assert text.splitlines()[0].startswith("Gate REFUSED (1 of 4 checks failed)")
    assert "champion keeps serving" in text.splitlines()[0]
    assert len(text.splitlines()) == 1 + len(d.checks)
    assert "✓ threshold.roc_auc: roc_auc 0.705 >= 0.600" in text
    assert "✗ vs_champion.roc_auc: roc_auc 0.705 vs champion 0.704" in text
    assert "✓ lineage:" in text
    assert decide(GOOD, None, LINEAGE, GATES).summary().startswith("Gate PASSED (4 checks)")


def test_tags_round_trip() -> None:
    d = decide({"roc_auc": 0.705, "log_loss": 0.7}, {"roc_auc": 0.704}, LINEAGE, GATES)
    tags = d.as_tags()
    assert tags["gate.decision"] == "refused"
    assert tags["gate.failed"] == "threshold.log_loss,vs_champion.roc_auc"
    assert tags["gate.threshold.log_loss"] == "FAILED | log_loss 0.700 > 0.600"
    assert tags["gate.threshold.roc_auc"].startswith("passed | ")
    assert json.loads(tags["gate.checks"])[0]["name"] == "lineage"
    again = Decision.from_tags(tags)
    assert again is not None
    assert again.checks == d.checks
    assert again.outcome == "refused"
    assert not again.promote
    assert Decision.from_tags({}) is None
    # Every key is a valid MLflow tag name (no colons: Windows clients reject them).
    assert all(k.replace(".", "").replace("_", "").isalnum() for k in tags)


def test_a_decision_without_checks_does_not_pass() -> None:
    assert not Decision(promote=False, checks=[], dry_run=False).passed
