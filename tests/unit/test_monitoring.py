"""The prediction log and monitoring's durable records: label maturity, the data gate,
which months wait for a check, and retrain requests that are triggered until closed."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from flywheel import monitoring, prediction_log
from flywheel.config import load_config
from flywheel.features import EVENT_TS, write_partition
from flywheel.paths import Home

CFG = load_config()


def _frame(n: int, month: str = "2013-05") -> pd.DataFrame:
    start = pd.Timestamp(f"{month}-01", tz="UTC")
    rows = {c: [f"{c}{i}" for i in range(n)] for c in CFG.entity_columns()}
    rows[EVENT_TS] = [start + pd.Timedelta(days=i) for i in range(n)]
    for name in CFG.feature_names():
        rows[name] = np.arange(n, dtype="float64")
    return pd.DataFrame(rows)


def test_make_rows_has_the_log_format() -> None:
    rows = prediction_log.make_rows(CFG, _frame(3), [0.1, 0.5, 0.9], "7", "batch")
    assert list(rows.columns) == prediction_log.columns(CFG)
    assert rows[prediction_log.MODEL_VERSION].tolist() == ["7"] * 3
    assert str(rows[prediction_log.SCORED_AT].dt.tz) == "UTC"


def test_make_rows_names_what_is_wrong() -> None:
    with pytest.raises(prediction_log.PredictionLogError, match="columns missing: \\['temp'\\]"):
        prediction_log.make_rows(CFG, _frame(2).drop(columns="temp"), [0.1, 0.2], "1", "batch")
    with pytest.raises(prediction_log.PredictionLogError, match="3 scores for 2 rows"):
        prediction_log.make_rows(CFG, _frame(2), [0.1, 0.2, 0.3], "1", "batch")
    with pytest.raises(prediction_log.PredictionLogError, match="source must be one of"):
        prediction_log.make_rows(CFG, _frame(2), [0.1, 0.2], "1", "nightly")


def test_batch_partition_is_replaced_not_appended(flywheel_home: Path) -> None:
    home = Home(flywheel_home)
    for _ in range(2):
        rows = prediction_log.make_rows(CFG, _frame(4), [0.2] * 4, "1", "batch")
        prediction_log.write_batch(home, "2013-05", rows)
    assert len(prediction_log.read_batch(home, "2013-05")) == 4
    assert prediction_log.batch_months(home) == ["2013-05"]


def test_labels_join_only_once_matured(flywheel_home: Path) -> None:
    home = Home(flywheel_home)
    frame = _frame(10)  # one flight a day, 1..10 May
    rows = prediction_log.make_rows(CFG, frame, [0.3] * 10, "1", "batch")
    prediction_log.write_batch(home, "2013-05", rows)
    truth = frame[[CFG.entity.join_key, EVENT_TS]].assign(**{CFG.label.name: [1, 0] * 5})
    write_partition(home.entity_rows(CFG.entity.name), "2013-05", truth)
    # On 6 May, the flights of 1..5 May are known (a day after each), not later ones.
    joined = prediction_log.join_labels(CFG, home, "2013-05", datetime(2013, 5, 6, tzinfo=UTC))
    known = joined[CFG.label.name].notna().tolist()
    assert known == [True] * 5 + [False] * 5
    later = prediction_log.join_labels(CFG, home, "2013-05", datetime(2013, 6, 1, tzinfo=UTC))
    assert later[CFG.label.name].notna().all()
    assert len(prediction_log.read_labelled(home, "2013-05")) == 10  # replaced, not appended


def _archive(home: Home, *months: str) -> None:
    for m in months:
        (home.archive / m).mkdir(parents=True, exist_ok=True)


def _quarantine(home: Home, month: str) -> None:
    (home.quarantine / f"{month}__20260101T000000Z").mkdir(parents=True, exist_ok=True)


def test_data_gate(flywheel_home: Path) -> None:
    home = Home(flywheel_home)
    _archive(home, "2013-04", "2013-05")
    assert monitoring.data_gate_green(home)
    _quarantine(home, "2013-06")  # the newest batch failed
    assert not monitoring.data_gate_green(home)
    _archive(home, "2013-06")  # its good copy arrived
    assert monitoring.data_gate_green(home)
    _quarantine(home, "2013-03")  # an old failure does not make today red
    assert monitoring.data_gate_green(home)
    assert monitoring.data_clock(home) == datetime(2013, 7, 1, tzinfo=UTC)


def test_unmonitored_months_wait_for_a_check(flywheel_home: Path) -> None:
    home = Home(flywheel_home)
    for month in ("2013-04", "2013-05"):
        rows = prediction_log.make_rows(CFG, _frame(2, month), [0.1, 0.2], "1", "batch")
        prediction_log.write_batch(home, month, rows)
    assert monitoring.unmonitored(home) == ["2013-04", "2013-05"]
    window = home.monitoring / "windows" / "2013-04.json"
    window.parent.mkdir(parents=True)
    window.write_text("{}")
    assert monitoring.unmonitored(home) == ["2013-05"]


def _signal(home: Home, month: str, drift: bool) -> None:
    record = {
        "window": month,
        "end": monitoring.window_end(month).isoformat(),
        "drift": drift,
        "decay": False,
        "drifted_features": ["temp"] if drift else [],
        "report_url": f"file:///reports/{month}.html",
    }
    path = home.monitoring / "windows" / f"{month}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record))


def test_requests_are_filed_once_and_triggered_until_closed(flywheel_home: Path) -> None:
    home = Home(flywheel_home)
    _archive(home, "2013-04", "2013-05")
    _signal(home, "2013-04", drift=True)
    first = monitoring.decide_retrain(CFG, home, "2013-04")
    assert first["decision"]["retrain"] is False  # 1 of 2 needed
    assert first["request"] is None
    _signal(home, "2013-05", drift=True)
    second = monitoring.decide_retrain(CFG, home, "2013-05")
    assert second["decision"]["retrain"] is True
    request = second["request"]
    assert request["run_id"] == "drift__2013-05"
    assert "drift confirmed in 2013-04, 2013-05 (temp)" in request["reason"]
    # Deciding again (a re-run) files nothing new: the cooldown holds and the request stays.
    again = monitoring.decide_retrain(CFG, home, "2013-05")
    assert again["decision"]["retrain"] is False
    assert again["request"]["id"] == "2013-05"
    assert [r["id"] for r in monitoring.requests(home)] == ["2013-05"]

    kwargs = monitoring.trigger_kwargs(monitoring.open_requests(home)[0])
    assert kwargs["trigger_run_id"] == "drift__2013-05"
    assert kwargs["conf"]["retrain_request"] == "2013-05"
    assert kwargs["conf"]["drifted_features"] == ["temp"]
    assert kwargs["conf"]["drift_report"] == "file:///reports/2013-05.html"
    assert "Triggered by drift" in kwargs["note"]

    monitoring.close_request(home, "2013-05", {"result": "promoted", "version": "2"})
    assert monitoring.open_requests(home) == []
    assert monitoring.requests(home)[0]["outcome"]["version"] == "2"
    with pytest.raises(monitoring.MonitoringError, match="no retrain request '2013-09'"):
        monitoring.close_request(home, "2013-09", {})


def test_deciding_needs_the_window_checked_first(flywheel_home: Path) -> None:
    home = Home(flywheel_home)
    _archive(home, "2013-04")
    with pytest.raises(monitoring.MonitoringError, match="no drift check for 2013-04"):
        monitoring.decide_retrain(CFG, home, "2013-04")
