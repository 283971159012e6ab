"""Validate a landed batch with Great Expectations before anything downstream sees it.

`check_batch` reads the batch's files (`read_batch`) and runs one GX Checkpoint per table
(`validate_batch`) with a suite built from the config's `TableSpec` (`build_suite`): schema,
types, nulls, key uniqueness, ranges, allowed values, a minimum row count and freshness
(every event timestamp inside the batch's month). The result is a `ValidationReport` whose
`failures` read like "flights.distance: expect_column_values_to_be_in_type_list failed
(observed type object)"; a failed batch is quarantined and `BatchRejected.from_report`
fails the task with that list.

GX is imported inside the functions: importing it costs seconds and DAG files import
this module at parse time.
"""

from __future__ import annotations

import fcntl
import io
import json
import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from datetime import time as dtime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

from flywheel.config import Config, TableSpec, month_bounds

if TYPE_CHECKING:
    import pandas as pd
    from great_expectations.core import ExpectationSuite
    from great_expectations.data_context import AbstractDataContext

# Only these cells are null: "n/a" or "-" in a number column is a type error, not a null.
NULL_TOKENS = ["", "NA", "NaN", "nan", "null", "NULL"]

# Accepted dtypes per declared type. Pandas turns an int column with a null into float64,
# and a float column whose values happen to be whole into int64. Object columns are checked
# value by value by GX (so "str" matches Python strings; "object" would match nothing).
_TYPES: dict[str, list[str]] = {
    "int": ["int64", "int32"],
    "float": ["float64", "float32", "int64", "int32"],
    "str": ["str", "string", "StringDtype"],
}
_DATASOURCE = "flywheel"
# Counts and up to 20 example values. SUMMARY adds the unexpected rows' index list and a
# query for them: two more passes over the whole table per expectation (it more than
# doubled the time on 1M rows), for row numbers nobody reads in a landed CSV.
_RESULT_FORMAT = "BASIC"


class BatchRejected(Exception):
    """A batch failed validation; the message lists why."""

    @classmethod
    def from_report(
        cls, month: str, report: ValidationReport, quarantine: Path | None = None
    ) -> BatchRejected:
        where = f"; quarantined in {quarantine}" if quarantine else ""
        lines = [f"batch {month} rejected: {len(report.failures)} failed check(s){where}"]
        lines += [f"  - {f}" for f in report.failures]
        if report.docs_path:
            lines.append(f"Data Docs: {report.docs_path}")
        return cls("\n".join(lines))


class BatchUnreadable(BatchRejected):
    """A file of the batch is missing, empty or not a readable CSV."""


@dataclass
class ValidationReport:
    success: bool
    failures: list[str] = field(default_factory=list)
    results: dict[str, Any] = field(default_factory=dict)  # JSON-serializable
    docs_path: Path | None = None

    def as_dict(self) -> dict[str, Any]:
        """The report as plain JSON data (e.g. for the quarantine's validation.json)."""
        return {
            "success": self.success,
            "failures": self.failures,
            "results": self.results,
            "docs_path": str(self.docs_path) if self.docs_path else None,
        }


# --- reading ---------------------------------------------------------------------------


def read_batch(cfg: Config, folder: Path) -> dict[str, pd.DataFrame]:
    """Read every table file of a landed batch; raise `BatchUnreadable` naming each bad file."""
    tables: dict[str, pd.DataFrame] = {}
    problems: list[str] = []
    for name, spec in cfg.source.tables.items():
        try:
            tables[name] = _read_table(folder / spec.file, spec)
        except BatchUnreadable as err:
            problems.append(str(err))
    if problems:
        raise BatchUnreadable("; ".join(problems))
    return tables


def _read_table(path: Path, spec: TableSpec) -> pd.DataFrame:
    import pandas as pd

    if not path.is_file():
        raise BatchUnreadable(f"{path.name}: file is missing from {path.parent}")
    raw = path.read_bytes()
    if not raw.strip():
        raise BatchUnreadable(f"{path.name}: file is empty ({len(raw)} bytes)")
    if b"\x00" in raw:
        raise BatchUnreadable(f"{path.name}: corrupt file (binary data: NUL bytes)")
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as err:
        bad = f"byte {raw[err.start]:#04x} at offset {err.start}"
        raise BatchUnreadable(f"{path.name}: corrupt file (not UTF-8: {bad})") from None
    strings = {c: str for c, s in spec.columns.items() if s.type == "str"}
    try:
        frame = pd.read_csv(
            io.BytesIO(raw), dtype=strings, keep_default_na=False, na_values=NULL_TOKENS
        )
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as err:
        raise BatchUnreadable(f"{path.name}: corrupt CSV ({' '.join(str(err).split())})") from None
    for col, s in spec.columns.items():
        if s.type == "datetime" and col in frame.columns:
            # Unparseable timestamps become NaT and fail the not-null check, naming the column.
            frame[col] = pd.to_datetime(frame[col], utc=True, errors="coerce", format="ISO8601")
    return frame


# --- the suite ---------------------------------------------------------------------------


def _gx() -> Any:
    logging.getLogger("great_expectations").setLevel(logging.WARNING)
    import great_expectations as gx

    return gx


def build_suite(name: str, spec: TableSpec, start: datetime, end: datetime) -> ExpectationSuite:
    """The expectations of one table; event timestamps must lie in [start, end)."""
    gx = _gx()
    import great_expectations.expectations as gxe

    exps: list[Any] = [
        gxe.ExpectTableColumnsToMatchSet(column_set=list(spec.columns), exact_match=False),
        gxe.ExpectTableRowCountToBeBetween(min_value=spec.min_rows),
    ]
    if len(spec.keys) > 1:
        exps.append(gxe.ExpectCompoundColumnsToBeUnique(column_list=spec.keys))
    else:
        exps.append(gxe.ExpectColumnValuesToBeUnique(column=spec.keys[0]))
    for col, s in spec.columns.items():
        if s.type == "datetime":
            # No type-list name matches datetime64[ns, UTC] in GX 1.24; "of type" does.
            exps.append(gxe.ExpectColumnValuesToBeOfType(column=col, type_="Timestamp"))
        else:
            types = _TYPES[s.type] + (["float64"] if s.type == "int" and s.nullable else [])
            exps.append(gxe.ExpectColumnValuesToBeInTypeList(column=col, type_list=types))
        if not s.nullable:
            exps.append(gxe.ExpectColumnValuesToNotBeNull(column=col))
        if s.min is not None or s.max is not None:
            exps.append(
                gxe.ExpectColumnValuesToBeBetween(
                    column=col, min_value=s.min, max_value=s.max, mostly=s.mostly
                )
            )
        if s.allowed is not None:
            exps.append(gxe.ExpectColumnValuesToBeInSet(column=col, value_set=s.allowed))
    if spec.timestamp:
        exps.append(
            gxe.ExpectColumnValuesToBeBetween(
                column=spec.timestamp, min_value=start, max_value=end, strict_max=True
            )
        )
    suite: ExpectationSuite = gx.ExpectationSuite(name=name, expectations=exps)
    return suite


# --- running -------------------------------------------------------------------------------


@contextmanager
def _locked(gx_root: Path) -> Iterator[None]:
    # GX's file stores (great_expectations.yml above all) are rewritten on every update:
    # two months validated at once must not interleave their writes.
    gx_root.mkdir(parents=True, exist_ok=True)
    with open(gx_root / ".flywheel.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _context(gx_root: Path) -> AbstractDataContext:
    gx = _gx()
    from great_expectations.data_context.types.base import ProgressBarsConfig

    ctx: AbstractDataContext = gx.get_context(mode="file", project_root_dir=gx_root)
    ctx.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
    return ctx


def validate_batch(
    cfg: Config, month: str, tables: dict[str, pd.DataFrame], gx_root: Path
) -> ValidationReport:
    """Run a GX Checkpoint per table of the batch (re-runnable in the same `gx_root`)."""
    first, after = month_bounds(month)
    start = datetime.combine(first, dtime(), tzinfo=UTC)
    end = datetime.combine(after, dtime(), tzinfo=UTC)
    began = time.perf_counter()
    failures: list[str] = []
    results: dict[str, Any] = {"month": month, "tables": {}}
    with _locked(gx_root):
        ctx = _context(gx_root)
        built: list[Any] = []
        for table, spec in cfg.source.tables.items():
            if table not in tables:
                failures.append(f"{table}: table missing from the batch")
                continue
            # One suite and checkpoint per table and month: the month's freshness window
            # lives in its suite, and Data Docs group results by month.
            name = f"{cfg.name}.{month}.{table}"
            suite = build_suite(name, spec, start, end)
            frame = tables[table]
            described, checks, ids = _run_checkpoint(
                ctx,
                f"{cfg.name}.{table}",
                suite,
                _typed_strings(frame, spec),
                f"{cfg.name}-{month}",
            )
            failures += _failures(table, frame, checks)
            results["tables"][table] = described
            built += ids
        docs = _update_docs(ctx, built)
    results["seconds"] = round(time.perf_counter() - began, 3)
    results = json.loads(json.dumps(results, default=str))
    return ValidationReport(
        success=not failures, failures=failures, results=results, docs_path=docs
    )


def _typed_strings(frame: pd.DataFrame, spec: TableSpec) -> pd.DataFrame:
    """The frame with each "str" column that holds only strings as pandas' string dtype
    (nulls too, where the column may have them); other columns, and a "str" column
    holding anything else, as they are.

    Why: GX checks an object column's type value by value, in Python (about half a second
    per million values); a string-dtype column it checks by its dtype. The verdict is the
    same (every value is a string either way). A column with a non-string value, or with a
    null it must not have, stays object, so GX counts and shows the offending values
    exactly as before (a null as None or nan, not as <NA>)."""
    import pandas as pd

    convert = [
        col
        for col, s in spec.columns.items()
        if s.type == "str"
        and col in frame.columns
        and frame[col].dtype == object
        # One pass in C; without skipna, a null makes the column "mixed".
        and pd.api.types.infer_dtype(frame[col], skipna=s.nullable) in ("string", "empty")
    ]
    if not convert:
        return frame
    with pd.option_context("mode.copy_on_write", True):  # the other columns stay shared
        return frame.astype(dict.fromkeys(convert, "string"))


def _run_checkpoint(
    ctx: AbstractDataContext,
    asset_name: str,
    suite: ExpectationSuite,
    frame: pd.DataFrame,
    run_name: str,
) -> tuple[dict[str, Any], list[Any], list[Any]]:
    """Validate one dataframe with one suite through a Checkpoint.

    Returns the checkpoint's description, the expectation results and the identifiers of
    the suite and of its stored validation result (for `_update_docs`). Re-runnable: the
    suite's checkpoint and validation definition are replaced, the asset reused.
    """
    import pandas as pd

    gx = _gx()
    from great_expectations.data_context.types.resource_identifiers import (
        ExpectationSuiteIdentifier,
    )

    sources = ctx.data_sources.all()
    # add_or_update_pandas would drop the assets (and their batch definitions) each time.
    ds = (
        sources[_DATASOURCE] if _DATASOURCE in sources else ctx.data_sources.add_pandas(_DATASOURCE)
    )
    asset = (
        ds.get_asset(asset_name)
        if asset_name in ds.get_asset_names()
        else ds.add_dataframe_asset(asset_name)
    )
    batch_def = next((b for b in asset.batch_definitions if b.name == "whole"), None)
    if batch_def is None:
        batch_def = asset.add_batch_definition_whole_dataframe("whole")
    _delete(ctx, suite.name)
    vd = gx.ValidationDefinition(name=suite.name, data=batch_def, suite=suite)
    # A Checkpoint hands the same batch parameters to all its validation definitions, so
    # each dataframe needs its own Checkpoint. Adding it adds its definition and suite too.
    # No UpdateDataDocsAction: it rebuilds the site (and recompiles every template) once
    # per checkpoint; `_update_docs` builds it once for the whole batch.
    checkpoint = ctx.checkpoints.add_or_update(
        gx.Checkpoint(name=suite.name, validation_definitions=[vd], result_format=_RESULT_FORMAT)
    )
    # Copy-on-write: GX drops the null rows of a column by filtering the whole table, once
    # per metric; without nulls to drop, that filter is then a view instead of a full copy.
    with pd.option_context("mode.copy_on_write", True):
        outcome = checkpoint.run(
            batch_parameters={"dataframe": frame}, run_id=gx.RunIdentifier(run_name=run_name)
        )
    checks = [r for vr in outcome.run_results.values() for r in vr.results]
    ids = [*outcome.run_results, ExpectationSuiteIdentifier(name=suite.name)]
    return outcome.describe_dict(), checks, ids


def validate_training_set(
    cfg: Config, frame: pd.DataFrame, window_end: datetime, name: str, gx_root: Path
) -> ValidationReport:
    """The training set's checkpoint: label present and valid, class balance within the
    configured bounds, every feature column there, no row from after the window, and at
    least `training.min_rows` rows (per-row expectations pass on an empty frame)."""
    gx = _gx()
    e = gx.expectations
    label, ts = cfg.label.name, "event_timestamp"
    expectations = [
        e.ExpectTableColumnsToMatchSet(
            column_set=[label, ts, *cfg.feature_names(), *cfg.training.categorical],
            exact_match=False,
        ),
        e.ExpectTableRowCountToBeBetween(min_value=cfg.training.min_rows),
        e.ExpectColumnValuesToNotBeNull(column=label),
        e.ExpectColumnValuesToNotBeNull(column=ts),
        e.ExpectColumnValuesToBeBetween(column=ts, max_value=window_end, strict_max=True),
    ]
    if cfg.task == "classification":
        lo, hi = cfg.training.class_balance
        expectations += [
            e.ExpectColumnDistinctValuesToBeInSet(column=label, value_set=[0, 1]),
            e.ExpectColumnMeanToBeBetween(column=label, min_value=lo, max_value=hi),
        ]
    with _locked(gx_root):
        ctx = _context(gx_root)  # a suite takes expectations only once a context exists
        suite = gx.ExpectationSuite(name=f"{cfg.name}.training.{name}")
        for expectation in expectations:
            suite.add_expectation(expectation)
        described, checks, ids = _run_checkpoint(
            ctx, f"{cfg.name}.training", suite, frame, f"{cfg.name}-training-{name}"
        )
        docs = _update_docs(ctx, ids)
    failures = _failures("training_set", frame, checks)
    results = json.loads(json.dumps(described, default=str))
    return ValidationReport(
        success=not failures, failures=failures, results=results, docs_path=docs
    )


def _delete(ctx: AbstractDataContext, name: str) -> None:
    """Drop a re-run's checkpoint, validation definition and suite, children last.

    Re-creating them is idempotent and cheaper than add_or_update, which matches every old
    expectation against every new one (O(n^2) pydantic comparisons, ~0.3 s a table).
    """
    from great_expectations.exceptions import DataContextError

    for factory in (ctx.checkpoints, ctx.validation_definitions, ctx.suites):
        with suppress(DataContextError):
            factory.delete(name)


def _update_docs(ctx: AbstractDataContext, resource_identifiers: list[Any]) -> Path | None:
    """Render these validation results and suites into Data Docs, with the index, as
    GX's UpdateDataDocsAction does, in one build; return the index page's path."""
    if resource_identifiers:
        ctx.build_data_docs(resource_identifiers=resource_identifiers, build_index=True)
    return _docs_index(ctx)


def _docs_index(ctx: AbstractDataContext) -> Path | None:
    for site in ctx.get_docs_sites_urls(only_if_exists=True):
        url = site.get("site_url")
        if url and url.startswith("file://"):
            return Path(unquote(urlparse(url).path))
    return None


def check_batch(cfg: Config, month: str, folder: Path, gx_root: Path) -> ValidationReport:
    """Read and validate a landed batch; an unreadable batch is a failed report, not a crash."""
    try:
        tables = read_batch(cfg, folder)
    except BatchUnreadable as err:
        return ValidationReport(
            success=False, failures=[str(err)], results={"month": month, "unreadable": str(err)}
        )
    return validate_batch(cfg, month, tables, gx_root)


# --- readable failures -------------------------------------------------------------------


def _failures(table: str, frame: pd.DataFrame, results: list[Any]) -> list[str]:
    """One line per failed expectation, naming table, column, expectation and what was seen."""
    missing: set[str] = set()
    for r in results:
        details = (r.result or {}).get("details") or {}
        missing |= set(details.get("mismatched", {}).get("missing", []))
    lines = []
    for r in results:
        kwargs = r.expectation_config.kwargs
        columns = kwargs.get("column_list") or ([kwargs["column"]] if "column" in kwargs else [])
        if r.success or missing & set(columns):
            continue  # a missing column is reported once, by the schema check
        where = table + (f".{columns[0]}" if len(columns) == 1 else "")
        if len(columns) > 1:
            where += f".[{', '.join(columns)}]"
        lines.append(f"{where}: {r.expectation_config.type} failed ({_observed(r, frame)})")
    return lines


def _observed(r: Any, frame: pd.DataFrame) -> str:
    res: dict[str, Any] = r.result or {}
    kwargs: dict[str, Any] = r.expectation_config.kwargs
    if not res:  # the expectation raised instead of returning a result
        info: dict[str, Any] = r.exception_info or {}
        # One {"exception_message": ...}, or several keyed by metric id.
        infos = (
            [info]
            if "exception_message" in info
            else [v for v in info.values() if isinstance(v, dict)]
        )
        messages = sorted({str(i.get("exception_message")) for i in infos})
        return f"could not be evaluated: {'; '.join(messages) or 'no result'}"
    missing = ((res.get("details") or {}).get("mismatched") or {}).get("missing")
    if missing:
        return f"missing columns: {', '.join(missing)}"
    parts = []
    column = kwargs.get("column")
    if r.expectation_config.type.endswith(("_in_type_list", "_of_type")) and column in frame:
        parts.append(f"observed type {frame[column].dtype}")
    elif "observed_value" in res:
        parts.append(f"observed {_show(res['observed_value'])}")
    if res.get("unexpected_count"):
        examples = ", ".join(_show(v) for v in _most_common(res.get("partial_unexpected_list")))
        parts.append(
            f"{res['unexpected_count']} of {res.get('element_count')} values unexpected "
            f"({res.get('unexpected_percent') or 0:.2f}%), e.g. {examples}"
        )
    if "min_value" in kwargs or "max_value" in kwargs:
        low, high = kwargs.get("min_value"), kwargs.get("max_value")
        close = ")" if kwargs.get("strict_max") else "]"
        low_s = "-inf" if low is None else _show(low)
        high_s = "inf" if high is None else _show(high)
        share = kwargs.get("mostly") or 1.0
        parts.append(
            f"expected [{low_s}, {high_s}{close}"
            + (f" for {share:.1%} of rows" if share < 1 else "")
        )
    elif kwargs.get("value_set") is not None:
        parts.append(f"expected one of {', '.join(map(str, kwargs['value_set']))}")
    return "; ".join(parts)


def _most_common(values: list[Any] | None, n: int = 3) -> list[Any]:
    """The n most frequent of GX's example values, ties by value: what SUMMARY's
    `partial_unexpected_counts` lists first (it counts the same at most 20 examples)."""
    from collections import Counter

    if not values:
        return []
    try:
        counts = Counter(tuple(v.values()) if isinstance(v, dict) else v for v in values)
    except TypeError:  # unhashable examples: the first ones
        return values[:n]
    try:
        ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    except TypeError:  # values of kinds that do not compare: by count alone
        ranked = sorted(counts.items(), key=lambda kv: -kv[1])
    return [value for value, _ in ranked[:n]]


def _show(value: Any) -> str:
    if isinstance(value, tuple):
        return f"({', '.join(_show(v) for v in value)})"
    if isinstance(value, datetime):
        return value.isoformat()
    return repr(value) if isinstance(value, str) else str(value)
