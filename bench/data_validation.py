"""Validating a 1M-row raw batch: the Great Expectations checkpoints of `ingest.validate`
against the same checks written by hand in pandas.

Ours is `validation.check_batch` on a landed batch, exactly what the `ingest_features`
DAG's validate task runs: `read_batch` (the CSVs into typed frames), then `validate_batch`
(the file-backed GX context, one suite and checkpoint per table, results stored, Data Docs
updated). The batch is January 2013 with its flights resampled (with replacement) to 1M
rows; flight numbers of repeated rows are redrawn so the compound key stays unique, as a
real month's is. Weather and planes are January's own tables.

The baseline checks every expectation the suites hold (`build_suite`: column set, row
count, key uniqueness, types, nulls, ranges with `mostly`, allowed sets, timestamps inside
the month) with plain pandas on the frames `read_batch` returns, and gives pass/fail per
expectation. The verdicts are compared expectation by expectation, on the good batch and
on one with null carriers (both must fail the same single expectation); a disagreement
fails the benchmark. The baseline writes no report: the stored results and Data Docs are
what GX adds, and part of what we pay for.

Two figures: the checks alone (check_batch minus its own read_batch, timed inside it,
against the pandas checks; the issue's target), and the whole call with reading on both
sides (recorded: what the DAG task pays).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from datetime import time as dtime
from typing import Any

import numpy as np
import pandas as pd

from bench.harness import Context, Figure, median, timings
from flywheel.config import Config, TableSpec, load_config, month_bounds

NAME = "data_validation"
TITLE = "Raw-batch validation (GX checkpoints) vs hand-written pandas checks"
MONTH = "2013-01"
ROWS, QUICK_ROWS = 1_000_000, 50_000
REPEATS, QUICK_REPEATS = 3, 1
NULL_CARRIERS = 25  # rows of the broken batch with no carrier

Key = tuple[str, str, str]  # (table, expectation type, column or "a, b" or "")


# --- the batch ---------------------------------------------------------------------------


def synth_batch(cfg: Config, month: str, rows: int, seed: int = 0) -> dict[str, pd.DataFrame]:
    """The month's raw tables with the primary one resampled to `rows` rows, keys unique."""
    from flywheel import landing

    tables = {k: v.copy() for k, v in landing.source_batch(cfg, month).items()}
    spec = cfg.primary
    rng = np.random.default_rng(seed)
    frame = tables[cfg.source.primary]
    out = frame.iloc[rng.integers(0, len(frame), rows)].reset_index(drop=True)
    # A resampled row repeats its key; a new flight number (the column's own range) makes
    # it another flight in the same hour, from the same airport, of the same carrier.
    number = "flight"
    low, high = int(spec.columns[number].min or 1), int(spec.columns[number].max or 9999)
    values = out[number].to_numpy().copy()
    while True:
        dup = out.assign(**{number: values}).duplicated(spec.keys).to_numpy()
        if not dup.any():
            break
        values[dup] = rng.integers(low, high + 1, int(dup.sum()))
    out[number] = values
    tables[cfg.source.primary] = out
    return tables


def break_carriers(cfg: Config, tables: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """A copy of the batch with the first NULL_CARRIERS carriers missing."""
    broken = {k: v.copy() for k, v in tables.items()}
    broken[cfg.source.primary].loc[: NULL_CARRIERS - 1, "carrier"] = None
    return broken


# --- the baseline: the suite's expectations in pandas --------------------------------------


def _python_types(type_list: list[str]) -> tuple[type, ...]:
    """The value types an object column may hold for `type_list` (numpy names or builtins)."""
    builtin = {"str": str, "int": int, "float": float, "bool": bool}
    out: list[type] = []
    for name in type_list:
        with suppress(TypeError):
            out.append(np.dtype(name).type)
        if name.lower() in builtin:
            out.append(builtin[name.lower()])
    return tuple(out)


def _values_of_types(s: pd.Series, type_list: list[str]) -> bool:
    """GX's type rule: an object column is checked value by value (nulls skipped), any
    other by its dtype's name."""
    if s.dtype != object:
        return str(s.dtype) in type_list
    allowed = _python_types(type_list)
    if str in allowed and pd.api.types.infer_dtype(s, skipna=True) in ("string", "empty"):
        return True  # pandas' one C pass over the values, as ours uses
    kinds = s.dropna().map(type).unique()
    return all(issubclass(k, allowed) for k in kinds)


def _between(
    s: pd.Series, low: Any, high: Any, mostly: float | None, strict_max: bool = False
) -> bool:
    values = s.dropna()
    if values.empty:
        return True
    ok = pd.Series(True, index=values.index)
    if low is not None:
        ok &= values >= low
    if high is not None:
        ok &= (values < high) if strict_max else (values <= high)
    return bool(ok.mean() >= (mostly or 1.0))


def _table_checks(
    table: str, spec: TableSpec, frame: pd.DataFrame, start: datetime, end: datetime
) -> dict[Key, Callable[[], bool]]:
    from flywheel.validation import _TYPES

    checks: dict[Key, Callable[[], bool]] = {
        (table, "expect_table_columns_to_match_set", ""): lambda: (
            set(spec.columns) <= set(frame.columns)
        ),
        (table, "expect_table_row_count_to_be_between", ""): lambda: len(frame) >= spec.min_rows,
    }
    if len(spec.keys) > 1:
        checks[(table, "expect_compound_columns_to_be_unique", ", ".join(spec.keys))] = lambda: (
            not frame.duplicated(spec.keys, keep=False).any()
        )
    else:
        key = spec.keys[0]
        checks[(table, "expect_column_values_to_be_unique", key)] = lambda: (
            not frame[key].dropna().duplicated(keep=False).any()
        )
    for col, s in spec.columns.items():
        if col not in frame.columns:
            continue  # GX cannot evaluate these either: the column-set check fails instead
        series = frame[col]
        if s.type == "datetime":
            checks[(table, "expect_column_values_to_be_of_type", col)] = lambda series=series: (
                series.dtype.type is pd.Timestamp or _values_of_types(series, ["Timestamp"])
            )
        else:
            types = _TYPES[s.type] + (["float64"] if s.type == "int" and s.nullable else [])
            checks[(table, "expect_column_values_to_be_in_type_list", col)] = (
                lambda series=series, types=types: _values_of_types(series, types)
            )
        if not s.nullable:
            checks[(table, "expect_column_values_to_not_be_null", col)] = lambda series=series: (
                bool(series.notna().all())
            )
        if s.min is not None or s.max is not None:
            low, high, mostly = s.min, s.max, s.mostly
            checks[(table, "expect_column_values_to_be_between", col)] = (
                lambda series=series, low=low, high=high, mostly=mostly: _between(
                    series, low, high, mostly
                )
            )
        if s.allowed is not None:
            checks[(table, "expect_column_values_to_be_in_set", col)] = lambda series=series, s=s: (
                bool(series.dropna().isin(s.allowed).all())
            )
    if spec.timestamp and spec.timestamp in frame.columns:
        stamps = frame[spec.timestamp]
        checks[(table, "expect_column_values_to_be_between", spec.timestamp)] = lambda: _between(
            stamps, start, end, None, strict_max=True
        )
    return checks


def pandas_verdicts(cfg: Config, month: str, tables: dict[str, pd.DataFrame]) -> dict[Key, bool]:
    """Pass/fail per expectation of the month's suites, computed with pandas alone."""
    first, after = month_bounds(month)
    start = datetime.combine(first, dtime(), tzinfo=UTC)
    end = datetime.combine(after, dtime(), tzinfo=UTC)
    out: dict[Key, bool] = {}
    for table, spec in cfg.source.tables.items():
        for key, check in _table_checks(table, spec, tables[table], start, end).items():
            out[key] = bool(check())
    return out


def gx_verdicts(results: dict[str, Any]) -> dict[Key, bool]:
    """Pass/fail per expectation from a `ValidationReport.results`."""
    out: dict[Key, bool] = {}
    for table, described in results["tables"].items():
        for validation in described["validation_results"]:
            for e in validation["expectations"]:
                kw = e["kwargs"]
                column = ", ".join(kw["column_list"]) if "column_list" in kw else kw.get("column")
                key = (table, e["expectation_type"], column or "")
                if key in out:
                    raise AssertionError(f"two expectations share the key {key}")
                out[key] = bool(e["success"])
    return out


def _agree(ours: dict[Key, bool], baseline: dict[Key, bool], what: str) -> None:
    if ours != baseline:
        diff = sorted(
            f"{k}: gx={ours.get(k)} pandas={baseline.get(k)}"
            for k in set(ours) | set(baseline)
            if ours.get(k) != baseline.get(k)
        )
        raise AssertionError(f"{what}: GX and pandas disagree on {len(diff)} check(s): {diff}")


# --- the benchmark -----------------------------------------------------------------------


@contextmanager
def _spent(module: Any, names: list[str]) -> Iterator[dict[str, list[float]]]:
    """Record the seconds of each call of `module.<name>` while inside (wrapping them)."""
    spent: dict[str, list[float]] = {n.lstrip("_"): [] for n in names}
    saved = {n: getattr(module, n) for n in names}

    def timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            began = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[name.lstrip("_")].append(time.perf_counter() - began)

        return wrapper

    try:
        for n in names:
            setattr(module, n, timed(n, saved[n]))
        yield spent
    finally:
        for n, fn in saved.items():
            setattr(module, n, fn)


def run(ctx: Context) -> list[Figure]:
    from flywheel import landing, validation
    from flywheel.paths import Home

    cfg = load_config()
    rows = QUICK_ROWS if ctx.quick else ROWS
    repeats = QUICK_REPEATS if ctx.quick else REPEATS
    home = Home(ctx.path("data_validation_home"))

    began = time.perf_counter()
    tables = synth_batch(cfg, MONTH, rows)
    synth_s = time.perf_counter() - began
    began = time.perf_counter()
    folder = landing.write_batch(cfg, MONTH, tables, home)
    write_s = time.perf_counter() - began
    del tables
    ctx.log(f"{rows:,} flights rows: synthesized {synth_s:.1f} s, written {write_s:.1f} s")

    # Ours is the DAG's call, check_batch (read the CSVs, then validate_batch); the read is
    # timed inside it, so one run gives both figures. The first call pays GX's import and
    # creates the GX project (once per task process): timed on its own.
    began = time.perf_counter()
    first = validation.check_batch(cfg, MONTH, folder, home.gx)
    cold_s = time.perf_counter() - began
    if not first.success:
        raise AssertionError(f"the synthesized batch failed validation: {first.failures}")
    reports: list[Any] = []
    steps = ["read_batch", "_context", "_run_checkpoint", "_update_docs"]
    with _spent(validation, steps) as spent:
        ours = timings(
            lambda: reports.append(validation.check_batch(cfg, MONTH, folder, home.gx)), repeats
        )
    ours_checks = [t - r for t, r in zip(ours, spent["read_batch"], strict=True)]

    frames: dict[str, pd.DataFrame] = {}
    reads: list[float] = []
    checks: list[float] = []
    verdicts: list[dict[Key, bool]] = []
    for _ in range(repeats):
        began = time.perf_counter()
        frames = validation.read_batch(cfg, folder)
        reads.append(time.perf_counter() - began)
        began = time.perf_counter()
        verdicts.append(pandas_verdicts(cfg, MONTH, frames))
        checks.append(time.perf_counter() - began)
    _agree(gx_verdicts(reports[-1].results), verdicts[-1], "good batch")
    ctx.log(
        f"checks: GX {median(ours_checks):.2f} s, pandas {median(checks):.2f} s; "
        f"with reading: {median(ours):.2f} s, {median(reads) + median(checks):.2f} s; "
        f"{len(verdicts[-1])} verdicts agree"
    )

    broken = break_carriers(cfg, frames)
    began = time.perf_counter()
    bad = validation.validate_batch(cfg, MONTH, broken, home.gx)
    bad_s = time.perf_counter() - began
    bad_base = pandas_verdicts(cfg, MONTH, broken)
    _agree(gx_verdicts(bad.results), bad_base, "broken batch")
    failed = sorted(k for k, ok in bad_base.items() if not ok)
    expected = [(cfg.source.primary, "expect_column_values_to_not_be_null", "carrier")]
    if failed != expected or len(bad.failures) != 1:
        raise AssertionError(
            f"broken batch: expected {expected} to fail, got {failed}, {bad.failures}"
        )
    ctx.log(f"broken batch: both fail {failed[0]} ({bad.failures[0]})")

    value, baseline = median(ours_checks), median(checks)
    total, base_total = median(ours), median(reads) + median(checks)
    return [
        Figure(
            name=f"validate a {rows:,}-row batch (checks only)",
            value=value,
            unit="s",
            target="≤ 3× hand-written pandas checks",
            met=value <= 3 * baseline,
            baseline=baseline,
            baseline_name="pandas checks",
            detail={
                "flights_rows": rows,
                "tables": {k: len(v) for k, v in frames.items()},
                "expectations": len(verdicts[-1]),
                "verdicts_agree": True,
                "repeats": repeats,
                "ours_s": [round(t, 3) for t in ours_checks],
                "baseline_s": [round(t, 3) for t in checks],
                "ours_steps_s": {k: [round(t, 3) for t in v] for k, v in spent.items()},
                "first_call_s": round(cold_s, 2),
                "write_batch_s": round(write_s, 2),
                "broken_batch_s": round(bad_s, 2),
                "broken_batch_failure": bad.failures[0],
                "result_format": validation._RESULT_FORMAT,
            },
            note="check_batch minus its read_batch; first_call_s includes GX's import",
        ),
        Figure(
            name=f"check a {rows:,}-row landed batch (read + checks)",
            value=total,
            unit="s",
            target="recorded: what the DAG's validate task pays",
            met=None,
            baseline=base_total,
            baseline_name="read_batch + pandas checks",
            detail={
                "ours_s": [round(t, 3) for t in ours],
                "read_batch_s": [round(t, 3) for t in reads],
            },
        ),
    ]
