"""The landing zone: batches appear atomically, are claimed once, archived idempotently,
quarantined without losing good data, and the deliberate defects really are defects."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pandas as pd
import pytest

from flywheel import landing
from flywheel.config import DEFAULT_CONFIG, Config, load_config
from flywheel.paths import DOORBELL, Home

MONTH = "2013-02"  # the shortest month: the cheapest real batch


@pytest.fixture(scope="module")
def cfg() -> Config:
    return load_config(DEFAULT_CONFIG)


@pytest.fixture
def home(tmp_path: Path) -> Home:
    return Home(tmp_path / "home")


def _tiny(cfg: Config, month: str, home: Home, marker: str = "a") -> Path:
    """A small stand-in batch: for the queue mechanics the content does not matter."""
    tables = {name: pd.DataFrame({"marker": [marker]}) for name in cfg.source.tables}
    return landing.write_batch(cfg, month, tables, home)


def _marker(folder: Path, cfg: Config) -> str:
    return str(pd.read_csv(folder / cfg.primary.file)["marker"].iloc[0])


# --- land ----------------------------------------------------------------------------------


def test_land_writes_every_table_of_the_month_and_rings(cfg: Config, home: Home) -> None:
    folder = landing.land(cfg, MONTH, home)

    assert folder == home.incoming / MONTH
    files = {p.name for p in folder.iterdir()}
    assert files == {t.file for t in cfg.source.tables.values()}
    assert (home.incoming / DOORBELL).is_file()
    # Nothing half-written is left beside it, and the month is the only one waiting.
    assert [p.name for p in home.incoming.iterdir() if p.name.startswith(".")] == []
    assert landing.pending(home) == [MONTH]

    expected = landing.source_batch(cfg, MONTH)
    for name, spec in cfg.source.tables.items():
        written = pd.read_csv(folder / spec.file)
        assert list(written.columns) == list(expected[name].columns), name
        assert len(written) == len(expected[name]), name
    flights = pd.read_csv(folder / cfg.primary.file)
    ts = pd.to_datetime(flights[cfg.primary.timestamp], utc=True)
    assert ts.min() >= pd.Timestamp("2013-02-01", tz="UTC")
    assert ts.max() < pd.Timestamp("2013-03-01", tz="UTC")
    assert len(flights) > 20_000  # a real month, not a stub
    weather = pd.read_csv(folder / cfg.source.tables["weather"].file)
    assert pd.to_datetime(weather["time_hour"], utc=True).dt.strftime("%Y-%m").eq(MONTH).all()


def test_land_replaces_a_stale_half_written_batch(cfg: Config, home: Home) -> None:
    # A landing that died half-way leaves its hidden temp folder behind.
    stale = home.incoming / f".{MONTH}.landing"
    stale.mkdir(parents=True)
    (stale / "junk.csv").write_text("half,a,file")
    assert landing.pending(home) == []  # the temp folder is never mistaken for a batch

    folder = _tiny(cfg, MONTH, home)
    assert not stale.exists()
    assert not (folder / "junk.csv").exists()


def test_landing_the_same_month_twice_is_refused(cfg: Config, home: Home) -> None:
    first = _tiny(cfg, MONTH, home, marker="first")
    (home.incoming / DOORBELL).unlink()
    with pytest.raises(landing.LandingError, match=f"{MONTH} is already waiting in {first}"):
        _tiny(cfg, MONTH, home, marker="second")
    assert _marker(first, cfg) == "first"  # the waiting batch is untouched


def test_landing_a_month_that_is_still_claimed_is_refused(cfg: Config, home: Home) -> None:
    """A second copy could never be claimed (its rename would hit the claimed folder) and
    would wait unseen forever: refuse it, naming where the first copy is."""
    _tiny(cfg, MONTH, home, marker="first")
    assert landing.claim(home) == MONTH
    claimed = home.incoming / landing.CLAIMED / MONTH
    with pytest.raises(landing.LandingError, match=f"{MONTH} was claimed .*{claimed}"):
        _tiny(cfg, MONTH, home, marker="second")
    assert landing.pending(home) == []
    # Once that run archives it, the month may be delivered again.
    landing.archive(MONTH, home)
    _tiny(cfg, MONTH, home, marker="second")
    assert landing.claim(home) == MONTH


def test_ring_creates_the_doorbell_even_without_incoming(home: Home) -> None:
    landing.ring(home)
    assert (home.incoming / DOORBELL).is_file()


def test_pending_is_sorted_and_ignores_files_and_hidden_folders(cfg: Config, home: Home) -> None:
    assert landing.pending(home) == []  # no landing zone yet
    for month in ("2013-03", "2013-01", "2013-02"):
        _tiny(cfg, month, home)
    (home.incoming / ".2013-04.landing").mkdir()
    assert landing.pending(home) == ["2013-01", "2013-02", "2013-03"]


# --- claim -----------------------------------------------------------------------------------


def test_claim_takes_the_oldest_and_only_once(cfg: Config, home: Home) -> None:
    assert landing.claim(home) is None  # nothing landed
    _tiny(cfg, "2013-02", home)
    _tiny(cfg, "2013-01", home)

    assert landing.claim(home) == "2013-01"
    assert landing.claim(home) == "2013-02"
    assert landing.claim(home) is None
    assert landing.pending(home) == []
    claimed = home.incoming / landing.CLAIMED
    assert sorted(p.name for p in claimed.iterdir()) == ["2013-01", "2013-02"]


def test_two_claims_of_one_month_race_one_wins(
    cfg: Config, home: Home, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Deterministic interleaving: another run claims between our listing and our rename."""
    _tiny(cfg, MONTH, home)
    real_pending = landing.pending
    rival: list[str | None] = []

    def pending_then_rival_claims(h: Home) -> list[str]:
        months = real_pending(h)
        if not rival:
            rival.append(None)
            monkeypatch.setattr(landing, "pending", real_pending)  # the rival lists for real
            rival[0] = landing.claim(h)  # the other run is faster
        return months

    monkeypatch.setattr(landing, "pending", pending_then_rival_claims)
    mine = landing.claim(home)

    assert rival == [MONTH]
    assert mine is None
    assert (home.incoming / landing.CLAIMED / MONTH).is_dir()


def test_a_lost_race_moves_on_to_the_next_month(
    cfg: Config, home: Home, monkeypatch: pytest.MonkeyPatch
) -> None:
    _tiny(cfg, "2013-01", home)
    _tiny(cfg, "2013-02", home)
    real_pending = landing.pending
    rival: list[str | None] = []

    def pending_then_rival_claims(h: Home) -> list[str]:
        months = real_pending(h)
        if not rival:
            rival.append(None)
            monkeypatch.setattr(landing, "pending", real_pending)  # the rival lists for real
            rival[0] = landing.claim(h)
        return months

    monkeypatch.setattr(landing, "pending", pending_then_rival_claims)
    assert landing.claim(home) == "2013-02"
    assert rival == ["2013-01"]


def test_concurrent_claims_take_each_month_exactly_once(cfg: Config, home: Home) -> None:
    months = ["2013-01", "2013-02", "2013-03"]
    for month in months:
        _tiny(cfg, month, home)
    barrier = threading.Barrier(8)
    results: list[str | None] = []
    lock = threading.Lock()

    def worker() -> None:
        barrier.wait()
        got = landing.claim(home)
        with lock:
            results.append(got)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    taken = [r for r in results if r is not None]
    assert sorted(taken) == months
    assert results.count(None) == 8 - len(months)


# --- locate / archive / quarantine -------------------------------------------------------


def test_locate_finds_waiting_claimed_and_archived_batches(cfg: Config, home: Home) -> None:
    _tiny(cfg, MONTH, home)
    assert landing.locate(MONTH, home) == home.incoming / MONTH
    assert landing.claim(home) == MONTH
    assert landing.locate(MONTH, home) == home.incoming / landing.CLAIMED / MONTH
    landing.archive(MONTH, home)
    assert landing.locate(MONTH, home) == home.archive / MONTH


def test_locate_a_missing_month_names_where_it_looked(home: Home) -> None:
    with pytest.raises(landing.LandingError) as info:
        landing.locate("2013-05", home)
    msg = str(info.value)
    assert "no batch for 2013-05" in msg
    assert str(home.incoming / "2013-05") in msg
    assert str(home.archive / "2013-05") in msg


def test_archive_moves_the_batch_and_is_idempotent(cfg: Config, home: Home) -> None:
    _tiny(cfg, MONTH, home, marker="kept")
    assert landing.claim(home) == MONTH

    first = landing.archive(MONTH, home)
    assert first == home.archive / MONTH
    assert not (home.incoming / landing.CLAIMED / MONTH).exists()
    second = landing.archive(MONTH, home)  # a re-run: nothing left to move
    assert second == first
    assert _marker(first, cfg) == "kept"
    assert landing.archived_months(home) == [MONTH]


def test_archive_of_a_month_never_landed_is_a_no_op(home: Home) -> None:
    assert landing.archive("2013-07", home) == home.archive / "2013-07"
    assert not (home.archive / "2013-07").exists()
    assert landing.archived_months(home) == []


def test_archive_of_a_redelivered_month_replaces_the_old_copy(cfg: Config, home: Home) -> None:
    _tiny(cfg, MONTH, home, marker="old")
    landing.archive(MONTH, home)
    _tiny(cfg, MONTH, home, marker="new")
    landing.archive(MONTH, home)
    assert _marker(home.archive / MONTH, cfg) == "new"
    assert landing.pending(home) == []


def test_quarantine_of_a_waiting_batch_moves_it_with_the_report(cfg: Config, home: Home) -> None:
    _tiny(cfg, MONTH, home, marker="bad")
    report: dict[str, object] = {"month": MONTH, "failures": ["flights.carrier: nulls"]}

    dst = landing.quarantine(MONTH, home, report)

    assert dst.parent == home.quarantine
    assert dst.name.startswith(f"{MONTH}__")
    assert not (home.incoming / MONTH).exists()
    assert landing.pending(home) == []
    assert json.loads((dst / "validation.json").read_text()) == report
    assert _marker(dst, cfg) == "bad"


def test_quarantine_of_an_archived_batch_keeps_the_archive(cfg: Config, home: Home) -> None:
    _tiny(cfg, MONTH, home, marker="good")
    landing.archive(MONTH, home)
    before = {p.name: p.read_bytes() for p in (home.archive / MONTH).iterdir()}

    dst = landing.quarantine(MONTH, home, {"month": MONTH, "failures": ["re-check"]})

    after = {p.name: p.read_bytes() for p in (home.archive / MONTH).iterdir()}
    assert after == before  # nothing added to or taken from the archive
    assert landing.archived_months(home) == [MONTH]
    assert json.loads((dst / "validation.json").read_text())["failures"] == ["re-check"]
    assert {p.name for p in dst.iterdir()} == {*before, "validation.json"}


def test_quarantine_report_may_hold_non_json_values(cfg: Config, home: Home) -> None:
    _tiny(cfg, MONTH, home)
    dst = landing.quarantine(MONTH, home, {"when": pd.Timestamp("2013-02-01", tz="UTC")})
    assert "2013-02-01" in json.loads((dst / "validation.json").read_text())["when"]


def test_quarantine_of_a_missing_month_raises(home: Home) -> None:
    with pytest.raises(landing.LandingError, match="no batch for 2013-09"):
        landing.quarantine("2013-09", home, {})


# --- deliberate defects -------------------------------------------------------------------


@pytest.fixture(scope="module")
def broken(cfg: Config, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every defect landed once, each into its own landing zone."""
    out = {}
    for defect in landing.DEFECTS:
        home = Home(tmp_path_factory.mktemp(f"broken_{defect}"))
        out[defect] = landing.land_broken(cfg, MONTH, defect, home) / cfg.primary.file
    return out


def _primary(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, keep_default_na=False, na_values=[""])


def test_every_defect_is_covered_here() -> None:
    assert set(landing.DEFECTS) == {
        "missing_column",
        "wrong_type",
        "null_keys",
        "out_of_range",
        "empty",
        "corrupt",
    }


def test_defect_missing_column(cfg: Config, broken: dict[str, Path]) -> None:
    frame = _primary(broken["missing_column"])
    missing = set(cfg.primary.columns) - set(frame.columns)
    assert len(missing) == 1
    assert not missing & set(cfg.primary.keys)  # the batch still has its keys
    assert len(frame) == len(landing.source_batch(cfg, MONTH)[cfg.source.primary])


def test_defect_wrong_type(cfg: Config, broken: dict[str, Path]) -> None:
    frame = _primary(broken["wrong_type"])
    numeric = [c for c, s in cfg.primary.columns.items() if s.type in ("int", "float")]
    bad = [c for c in numeric if frame[c].astype(str).eq("n/a").any()]
    assert bad, "no numeric column carries text"
    col = bad[0]
    assert frame[col].dtype == object
    assert pd.to_numeric(frame[col], errors="coerce").isna().sum() >= len(frame) // 10


def test_defect_null_keys(cfg: Config, broken: dict[str, Path]) -> None:
    frame = _primary(broken["null_keys"])
    nulls = frame[cfg.primary.keys].isna().sum()
    assert nulls.sum() == 25
    assert nulls[cfg.primary.timestamp] == 0


def test_defect_out_of_range(cfg: Config, broken: dict[str, Path]) -> None:
    frame = _primary(broken["out_of_range"])
    outside = {
        c: int((pd.to_numeric(frame[c], errors="coerce") > s.max).sum())
        for c, s in cfg.primary.columns.items()
        if s.max is not None
    }
    worst = max(outside.values())
    assert worst >= len(frame) // 5
    # The share out of range is far beyond what any column's `mostly` tolerates.
    col = max(outside, key=outside.__getitem__)
    assert worst / len(frame) > 1 - cfg.primary.columns[col].mostly


def test_defect_empty(cfg: Config, broken: dict[str, Path]) -> None:
    frame = _primary(broken["empty"])
    assert len(frame) == 0
    assert set(frame.columns) == set(cfg.primary.columns)  # a header, no rows
    # Only the primary table is emptied.
    weather = pd.read_csv(broken["empty"].parent / cfg.source.tables["weather"].file)
    assert len(weather) > 0


def test_defect_corrupt(cfg: Config, broken: dict[str, Path]) -> None:
    raw = broken["corrupt"].read_bytes()
    assert b"\x00" in raw
    assert not raw.startswith(",".join(cfg.primary.columns).encode()[:20])
    good = landing.source_batch(cfg, MONTH)[cfg.source.primary]
    assert len(raw) < len(good.to_csv(index=False).encode()) // 10  # truncated


def test_defects_leave_the_source_clean(cfg: Config, broken: dict[str, Path]) -> None:
    # The source tables are cached: a defect must be applied to a copy.
    batch = landing.source_batch(cfg, MONTH)
    primary = batch[cfg.source.primary]
    assert primary[cfg.primary.keys].notna().all().all()
    assert len(primary) > 20_000
    for col, spec in cfg.primary.columns.items():
        if spec.type in ("int", "float"):
            assert pd.api.types.is_numeric_dtype(primary[col]), col
    assert set(primary.columns) == set(cfg.primary.columns)


def test_unknown_defect_is_refused(cfg: Config, home: Home) -> None:
    with pytest.raises(landing.LandingError, match="unknown defect 'typo'"):
        landing.land_broken(cfg, MONTH, "typo", home)
    assert landing.pending(home) == []


# --- the command line -------------------------------------------------------------------------


@pytest.fixture
def cli_home(home: Home, monkeypatch: pytest.MonkeyPatch) -> Home:
    monkeypatch.setenv("FLYWHEEL_HOME", str(home.root))
    monkeypatch.delenv("FLYWHEEL_CONFIG", raising=False)
    return home


def test_cli_status_on_an_empty_home(cli_home: Home, capsys: pytest.CaptureFixture[str]) -> None:
    assert landing.main(["status"]) == 0
    out = capsys.readouterr().out
    assert "waiting:     []" in out
    assert "archived:    []" in out
    assert "quarantined: []" in out


def test_cli_status_lists_waiting_archived_and_quarantined(
    cfg: Config, cli_home: Home, capsys: pytest.CaptureFixture[str]
) -> None:
    _tiny(cfg, "2013-01", cli_home)
    landing.archive("2013-01", cli_home)
    _tiny(cfg, "2013-02", cli_home)
    q = landing.quarantine("2013-02", cli_home, {"failures": []})
    _tiny(cfg, "2013-03", cli_home)

    assert landing.main(["status"]) == 0
    out = capsys.readouterr().out
    assert "waiting:     ['2013-03']" in out
    assert "archived:    ['2013-01']" in out
    assert f"quarantined: ['{q.name}']" in out


def test_cli_land_then_land_again_fails_cleanly(
    cli_home: Home, capsys: pytest.CaptureFixture[str]
) -> None:
    assert landing.main(["land", MONTH]) == 0
    assert f"landed {MONTH}" in capsys.readouterr().out
    assert landing.pending(cli_home) == [MONTH]

    assert landing.main(["land", MONTH]) == 2
    assert "error:" in capsys.readouterr().err


def test_cli_refuses_months_outside_the_source(
    cli_home: Home, capsys: pytest.CaptureFixture[str]
) -> None:
    assert landing.main(["land", "2014-01"]) == 2
    assert "2013-01..2013-12" in capsys.readouterr().err
    assert landing.pending(cli_home) == []
