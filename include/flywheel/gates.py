"""The promotion gate: small, pure, reviewed functions that decide whether a candidate may
become @champion, and say why in numbers.

Three kinds of checks, all of which must pass (`decide` combines them):

- `lineage_complete`: the version records its Feast FeatureService, dataset fingerprint and
  code version (`LINEAGE_TAGS`). Without them nobody could say where the model came from,
  so it can never be promoted, whatever its metrics.
- `meets_thresholds`: every gate's absolute threshold (`GateSpec.threshold`), direction per
  `GateSpec.higher_is_better`. A missing or non-finite (NaN, inf) metric fails.
- `beats_champion`: for gates with `min_improvement`, the candidate beats the champion's
  metric (evaluated on the same rows) by at least that margin. With no champion yet, a passed
  check says "no champion yet: thresholds only".

A dry run (`decide(..., dry_run=True)`) computes and records the same checks, but its
`Decision.promote` is always False: a way to try a new gate or config on real candidates
without moving any alias.

Comparisons are inclusive and tolerate float noise: a value exactly at the threshold, or an
improvement exactly equal to the margin, passes. Metrics are computed in floating point, so
"0.688 - 0.686" is 0.0019999999999998908, not 0.002; every comparison therefore allows
`EPSILON` (1e-9), far below any meaningful metric difference and far above double rounding
error for metrics of order 1.

Standard library only: DAG files import this at parse time.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flywheel.config import GateSpec

# The tags a model version must carry to be promotable (see `lineage_complete`).
FEATURE_SERVICE_TAG = "feast.feature_service"
FINGERPRINT_TAG = "dataset.fingerprint"
CODE_VERSION_TAG = "code.version"
LINEAGE_TAGS: tuple[str, ...] = (FEATURE_SERVICE_TAG, FINGERPRINT_TAG, CODE_VERSION_TAG)

# Tolerance for float noise in every comparison (see the module docstring).
EPSILON = 1e-9

# Decision values, as recorded in the `gate.decision` tag.
PASSED = "passed"
REFUSED = "refused"
DRY_RUN_PASSED = "dry_run_passed"
DRY_RUN_REFUSED = "dry_run_refused"

DECISION_TAG = "gate.decision"
CHECKS_TAG = "gate.checks"
FAILED_TAG = "gate.failed"
_MAX_TAG_VALUE = 7900  # MLflow run tags hold 8000 characters


@dataclass(frozen=True)
class Check:
    """One gate check: `name` (tag-safe, e.g. "threshold.roc_auc"), whether it passed, and
    a `detail` carrying the numbers ("roc_auc 0.712 >= 0.600")."""

    name: str
    passed: bool
    detail: str

    def line(self) -> str:
        return f"{'✓' if self.passed else '✗'} {self.name}: {self.detail}"


def _fmt(x: float) -> str:
    """Up to 6 significant digits, at least 3 decimals: 0.712 -> "0.712", 0.6 -> "0.600",
    0.0019999999999998908 -> "0.002", 0.00195 -> "0.00195"."""
    if not math.isfinite(x):
        return str(x)
    s = f"{x:.6g}"
    if "e" in s:
        return s
    whole, _, frac = s.partition(".")
    return f"{whole}.{frac.ljust(3, '0')}"


def _number(metrics: Mapping[str, float], metric: str) -> float | str:
    """The metric as a finite float, or a string saying why it cannot be used."""
    if metric not in metrics:
        return "missing"
    value: Any = metrics[metric]
    if isinstance(value, bool):
        return f"not a number ({value!r})"
    try:
        x = float(value)
    except (TypeError, ValueError):
        return f"not a number ({value!r})"
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return f"{x} (not finite)"
    return x


def _short(value: str, width: int = 16) -> str:
    return value if len(value) <= width else value[: width - 1] + "…"


def lineage_complete(tags: Mapping[str, str]) -> Check:
    """Passes only if every `LINEAGE_TAGS` key is present with a non-blank value."""
    missing = [k for k in LINEAGE_TAGS if not str(tags.get(k) or "").strip()]
    if missing:
        return Check(
            "lineage",
            False,
            f"lineage incomplete, missing {', '.join(missing)}: a version that does not record "
            "where it came from is never promoted",
        )
    return Check("lineage", True, ", ".join(f"{k}={_short(str(tags[k]))}" for k in LINEAGE_TAGS))


def meets_thresholds(metrics: Mapping[str, float], gates: Sequence[GateSpec]) -> list[Check]:
    """One check per gate: `metric >= threshold` (or `<=` for lower-is-better metrics)."""
    checks = []
    for gate in gates:
        name = f"threshold.{gate.metric}"
        x = _number(metrics, gate.metric)
        if isinstance(x, str):
            checks.append(
                Check(name, False, f"{gate.metric} is {x} in the candidate's metrics: cannot pass")
            )
            continue
        if gate.higher_is_better:
            ok = x >= gate.threshold - EPSILON
            op = ">=" if ok else "<"
        else:
            ok = x <= gate.threshold + EPSILON
            op = "<=" if ok else ">"
        checks.append(Check(name, ok, f"{gate.metric} {_fmt(x)} {op} {_fmt(gate.threshold)}"))
    return checks


def beats_champion(
    candidate: Mapping[str, float],
    champion: Mapping[str, float] | None,
    gates: Sequence[GateSpec],
) -> list[Check]:
    """One check per gate with `min_improvement`: the candidate's improvement over the
    champion (candidate - champion, or champion - candidate for lower-is-better metrics)
    must be >= the margin. No champion: passed checks, thresholds decide alone. A champion
    without the metric (or NaN) fails closed: the two cannot be compared."""
    checks = []
    for gate in gates:
        if gate.min_improvement is None:
            continue
        name = f"vs_champion.{gate.metric}"
        margin = gate.min_improvement
        if champion is None:
            checks.append(Check(name, True, "no champion yet: thresholds only"))
            continue
        x = _number(candidate, gate.metric)
        if isinstance(x, str):
            checks.append(Check(name, False, f"{gate.metric} is {x} in the candidate's metrics"))
            continue
        c = _number(champion, gate.metric)
        if isinstance(c, str):
            checks.append(
                Check(
                    name,
                    False,
                    f"{gate.metric} is {c} in the champion's metrics: cannot compare "
                    "(evaluate the champion on the same rows)",
                )
            )
            continue
        improvement = x - c if gate.higher_is_better else c - x
        ok = improvement >= margin - EPSILON
        direction = "" if gate.higher_is_better else ", lower is better"
        checks.append(
            Check(
                name,
                ok,
                f"{gate.metric} {_fmt(x)} vs champion {_fmt(c)}: improvement "
                f"{'+' if improvement >= 0 else ''}{_fmt(improvement)} "
                f"{'>=' if ok else '<'} {_fmt(margin)} required{direction}",
            )
        )
    return checks


@dataclass(frozen=True)
class Decision:
    """The gate's verdict: `promote` is True only if every check passed and it is not a
    dry run. `passed` says whether every check passed, dry run or not."""

    promote: bool
    checks: list[Check]
    dry_run: bool

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(c.passed for c in self.checks)

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if not c.passed]

    @property
    def outcome(self) -> str:
        """passed | refused | dry_run_passed | dry_run_refused (the `gate.decision` tag)."""
        base = PASSED if self.passed else REFUSED
        return f"dry_run_{base}" if self.dry_run else base

    def summary(self) -> str:
        n, bad = len(self.checks), len(self.failed)
        if self.dry_run:
            head = (
                f"DRY RUN: the gate would pass ({n} checks); nothing is promoted"
                if self.passed
                else f"DRY RUN: the gate would refuse ({bad} of {n} checks failed); "
                "nothing is promoted"
            )
        elif self.passed:
            head = f"Gate PASSED ({n} checks): promote"
        else:
            head = (
                f"Gate REFUSED ({bad} of {n} checks failed): not promoted, "
                "the current champion keeps serving"
            )
        return "\n".join([head, *(f"  {c.line()}" for c in self.checks)])

    def as_dict(self) -> dict[str, Any]:
        """Plain data (for run cards, XCom and JSON)."""
        return {
            "decision": self.outcome,
            "promote": self.promote,
            "passed": self.passed,
            "dry_run": self.dry_run,
            "checks": [
                {"name": c.name, "passed": c.passed, "detail": c.detail} for c in self.checks
            ],
        }

    def as_tags(self) -> dict[str, str]:
        """MLflow tags: `gate.decision`, `gate.checks` (JSON), `gate.failed` (names, comma
        separated) and one `gate.<check>` = "passed | <detail>" or "FAILED | <detail>"."""
        checks = self.as_dict()["checks"]
        blob = json.dumps(checks, ensure_ascii=False, separators=(",", ":"))
        if len(blob) > _MAX_TAG_VALUE:  # the per-check tags keep the details
            blob = json.dumps([{"name": c.name, "passed": c.passed} for c in self.checks])
        tags = {
            DECISION_TAG: self.outcome,
            CHECKS_TAG: blob,
            FAILED_TAG: ",".join(c.name for c in self.failed),
        }
        for c in self.checks:
            tags[f"gate.{c.name}"] = f"{'passed' if c.passed else 'FAILED'} | {c.detail}"[
                :_MAX_TAG_VALUE
            ]
        return tags

    @classmethod
    def from_tags(cls, tags: Mapping[str, str]) -> Decision | None:
        """Read a decision back from the tags `as_tags` wrote (None if there is none)."""
        outcome = tags.get(DECISION_TAG)
        if not outcome:
            return None
        try:
            raw = json.loads(tags.get(CHECKS_TAG) or "[]")
        except json.JSONDecodeError:
            raw = []
        checks = []
        for item in raw if isinstance(raw, list) else []:
            name = str(item.get("name", "?"))
            detail = item.get("detail")
            if detail is None:
                detail = tags.get(f"gate.{name}", "").partition(" | ")[2]
            checks.append(Check(name, bool(item.get("passed")), str(detail)))
        return cls(promote=outcome == PASSED, checks=checks, dry_run=outcome.startswith("dry_run"))


def decide(
    candidate_metrics: Mapping[str, float],
    champion_metrics: Mapping[str, float] | None,
    tags: Mapping[str, str],
    gates: Sequence[GateSpec],
    dry_run: bool = False,
) -> Decision:
    """Every check, in order: lineage, thresholds, versus the champion. Promote only if all
    pass and this is not a dry run."""
    checks = [
        lineage_complete(tags),
        *meets_thresholds(candidate_metrics, gates),
        *beats_champion(candidate_metrics, champion_metrics, gates),
    ]
    passed = all(c.passed for c in checks)
    return Decision(promote=passed and not dry_run, checks=checks, dry_run=dry_run)
