"""The model server: the current `@champion` behind a small REST API.

    python -m flywheel.serving [--host 127.0.0.1] [--port 5005]

- `GET /health` answers 200 whenever the server is up: `{"status": "ok" | "no_champion",
  "model", "version", "loaded_at", ...}`, so a health wait works before any model exists.
- `POST /predict` takes `{"rows": [{<entity key>: str, ...}, ...]}` (1 to 1000 rows, the
  keys of `cfg.entity_columns()`, optional `"request_id"`), reads the rows' features from
  Feast's online store in one call, scores them with the champion and answers
  `{"model", "version", "request_id", "predictions": [{<join key>, "score", "label",
  "missing_features"}]}`. 422 names the missing or invalid keys; 503 means no @champion yet
  (or the online store cannot be read). A row Feast does not know gets missing (NaN)
  features, which the model handles; they are listed in its `missing_features`.
- A background thread asks the registry every $FLYWHEEL_SERVE_RELOAD_S seconds (10) where
  @champion points; a new version is loaded (`models:/<name>/<version>`), made to score a
  placeholder row (a model that cannot is never served) and swapped in atomically. Each
  request reads the served model once, so the version it answers is the one that produced
  its scores. A failed poll or load keeps the current model and shows in /health's "error".
- Every request is logged in the prediction-log format (`flywheel.prediction_log`, source
  "online"): kept in memory by the request and written by a background thread every
  $FLYWHEEL_SERVE_FLUSH_S seconds (1.0) and at shutdown, never in the request's path.
- A `build_model` hist_gbm champion scores through `flywheel.models.FastScorer` (its own
  numbers, checked against it at load; ~0.3 ms a row instead of tens of ms through the
  pipeline), and a request of up to INLINE_ROWS rows is answered on the event loop, without
  a worker thread. Other models score a DataFrame in a worker thread.

The state and tracking server come from $FLYWHEEL_HOME and $MLFLOW_TRACKING_URI (the
embedded stack sets both), the config from $FLYWHEEL_CONFIG. Predictions use one OpenMP
thread each ($OMP_NUM_THREADS, default 1 here): requests run side by side instead.

`ModelServer` takes the registry and feature-store reads as functions, so tests build the
app (`create_app`) around fakes; `build_app` wires the real MLflow and Feast ones. MLflow,
Feast, pandas and FastAPI are imported when a server is built, not with this module.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import math
import os
import sys
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field

from flywheel.config import Config
from flywheel.paths import Home

if TYPE_CHECKING:
    import pandas as pd
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse

log = logging.getLogger(__name__)

HOST = "127.0.0.1"  # loopback only, like the rest of the embedded stack: no authentication
DEFAULT_PORT = 5005
MAX_ROWS = 1000
INLINE_ROWS = 16  # requests up to this size score on the event loop (see scores_inline)
THRESHOLD = 0.5  # classification: label = score >= THRESHOLD
RELOAD_ENV, FLUSH_ENV, PORT_ENV = (
    "FLYWHEEL_SERVE_RELOAD_S",
    "FLYWHEEL_SERVE_FLUSH_S",
    "FLYWHEEL_SERVE_PORT",
)

# What the server reads from outside, injectable (build_app wires MLflow and Feast):
ChampionLookup = Callable[[], str | None]  # the version @champion points to, or None
ModelLoader = Callable[[str], Any]  # version -> model (predict_proba / predict)
# Entity rows -> feature name -> one value per row (None where unknown), Feast's
# `OnlineResponse.to_dict()` shape.
FeatureReader = Callable[[list[dict[str, Any]]], Mapping[str, Sequence[Any]]]


class InvalidRows(ValueError):
    """The request's rows lack keys or carry invalid ones (HTTP 422)."""


class Unavailable(RuntimeError):
    """No champion yet, or the online store cannot be read (HTTP 503)."""


class PredictRequest(BaseModel):
    rows: list[dict[str, Any]] = Field(min_length=1, max_length=MAX_ROWS)
    request_id: str | None = Field(default=None, min_length=1, max_length=128)


@dataclass(frozen=True)
class Served:
    """One loaded champion; replaced as a whole, never modified."""

    version: str
    model: Any
    loaded_at: datetime
    # models.FastScorer: the model's own scores without the pipeline's per-call costs;
    # None where it cannot be built (another model type): the model scores a DataFrame.
    scorer: Any = None


@dataclass(frozen=True)
class _Pending:
    """One request's log entry, turned into prediction-log rows by the flusher (which
    builds the DataFrame: no pandas work in the request's path)."""

    entities: list[dict[str, Any]]  # the entity keys, as the model got them
    values: Any  # ndarray (rows, features), float64, NaN where missing
    scores: Any  # ndarray
    version: str
    request_id: str
    at: datetime


def _now() -> datetime:
    return datetime.now(UTC)


def _iso(at: datetime | None) -> str | None:
    return None if at is None else at.isoformat(timespec="seconds")


class ModelServer:
    """The champion, its reload, request scoring and the buffered prediction log."""

    def __init__(
        self,
        cfg: Config,
        home: Home,
        *,
        champion_version: ChampionLookup,
        load_model: ModelLoader,
        read_features: FeatureReader,
        max_buffered_rows: int = 100_000,
    ) -> None:
        # Imported once here, never per request.
        import numpy as np
        import pandas as pd

        from flywheel import prediction_log
        from flywheel.features import EVENT_TS, MISSING_KEY

        self._np, self._pd, self._plog, self._event_ts = np, pd, prediction_log, EVENT_TS
        self.missing_key = MISSING_KEY  # a null key in a request, as ingestion writes it
        self.cfg, self.home = cfg, home
        self.model_name = cfg.registry.model_name
        self.keys = cfg.entity_columns()
        self.join_key = cfg.entity.join_key
        self.features = cfg.feature_names()
        self._classify = cfg.task == "classification"
        self._champion_version = champion_version
        self._load_model = load_model
        self._read_features = read_features
        self._max_buffered = max_buffered_rows

        self._served: Served | None = None  # swapped by reload(), read once per request
        self._reload_lock = threading.Lock()
        self.checked_at: datetime | None = None  # last registry answer
        self.last_error: str | None = None  # last reload failure, None once one succeeds

        self._buffer: list[_Pending] = []
        self._buffered_rows = 0
        self._buffer_lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self.logged_rows = 0
        self.dropped_rows = 0

        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # --- the champion -------------------------------------------------------------------

    @property
    def served(self) -> Served | None:
        return self._served

    def reload(self) -> bool:
        """One registry poll: load and swap in the version @champion points to if it is not
        the one served. Returns True when the served model changed. Never raises: a failed
        poll or load keeps the current model and is reported by /health."""
        with self._reload_lock:
            try:
                version = self._champion_version()
            except Exception as err:
                self._failed(f"registry not readable: {err}")
                return False
            self.checked_at = _now()
            current = self._served
            if version is None:
                self.last_error = None
                if current is None:
                    return False
                log.warning("@champion of %s is gone: serving nothing", self.model_name)
                self._served = None
                return True
            if current is not None and current.version == version:
                self.last_error = None
                return False
            try:
                model = self._load_model(version)
                scorer = self._fast_scorer(model, version)
                self._probe(model, scorer)
            except Exception as err:
                self._failed(f"cannot load {self.model_name} v{version}: {err}")
                return False
            self._served = Served(
                version=str(version), model=model, loaded_at=_now(), scorer=scorer
            )
            self.last_error = None
            log.info(
                "serving %s v%s (was %s)",
                self.model_name,
                version,
                f"v{current.version}" if current else "nothing",
            )
            return True

    def _fast_scorer(self, model: Any, version: str) -> Any:
        """The model's FastScorer (checked against the model when built), or None."""
        if not hasattr(model, "steps"):  # not a Pipeline: nothing to compile
            return None
        from flywheel.models import compile_scorer

        scorer = compile_scorer(model)
        log.info(
            "%s v%s scores %s",
            self.model_name,
            version,
            "on the fast path" if scorer is not None else "with its pipeline",
        )
        return scorer

    def _probe(self, model: Any, scorer: Any = None) -> None:
        """Score one placeholder row the way a request would, before the model is swapped
        in: a model that cannot score a request is never served, and the first request does
        not pay the online store's and the model's first-call costs."""
        probe = [dict.fromkeys(self.keys, self.missing_key)]
        try:
            found = self._read_features(probe)
        except Exception as err:  # the store may come later than the model: not the model's fault
            log.warning("online store not readable yet (retried per request): %s", err)
            found = {}
        values, _ = self._values(probe, found)
        self._score(model, scorer, probe, values)

    def _failed(self, message: str) -> None:
        if message != self.last_error:  # once per distinct failure, not every poll
            log.error("%s", message)
        self.last_error = message

    def health(self) -> dict[str, Any]:
        served = self._served
        return {
            "status": "ok" if served is not None else "no_champion",
            "model": self.model_name,
            "version": served.version if served else None,
            "loaded_at": _iso(served.loaded_at) if served else None,
            "checked_at": _iso(self.checked_at),
            "error": self.last_error,
            "log": {
                "pending_rows": self._buffered_rows,
                "logged_rows": self.logged_rows,
                "dropped_rows": self.dropped_rows,
            },
        }

    # --- scoring --------------------------------------------------------------------------

    def entity_rows(self, rows: Sequence[Any]) -> list[dict[str, Any]]:
        """The rows' entity keys, checked: every key of `cfg.entity_columns()` present, no
        other, values strings (null allowed except for the join key, read as the ingestion's
        placeholder for a missing key). Raises InvalidRows naming the problems."""
        problems: list[str] = []
        out: list[dict[str, Any]] = []
        wanted = set(self.keys)
        for i, row in enumerate(rows):
            if not isinstance(row, dict):
                problems.append(f"rows[{i}] must be an object with keys {self.keys}")
                continue
            missing = [k for k in self.keys if k not in row]
            unknown = sorted(str(k) for k in row if k not in wanted)
            bad = []
            clean: dict[str, Any] = {}
            for key in self.keys:
                value = row.get(key)
                if key not in row:
                    continue
                if value is None and key != self.join_key:
                    clean[key] = self.missing_key
                elif isinstance(value, str) and value:
                    clean[key] = value
                else:
                    bad.append(f"{key!r} ({type(value).__name__} {value!r})")
            what = []
            if missing:
                what.append(f"missing keys {missing}")
            if unknown:
                what.append(f"unknown keys {unknown}")
            if bad:
                what.append("invalid values for " + ", ".join(bad) + ": expected non-empty strings")
            if what:
                problems.append(f"rows[{i}]: " + "; ".join(what))
            out.append(clean)
        if problems:
            shown = problems[:5] + ([f"... {len(problems) - 5} more"] if len(problems) > 5 else [])
            raise InvalidRows(f"each row needs exactly the keys {self.keys}: " + " | ".join(shown))
        return out

    def scores_inline(self, rows: int) -> bool:
        """Whether a request of `rows` rows is scored on the event loop: a few rows on the
        fast path take about a millisecond (Feast's read included), less than the two thread
        hand-offs a worker thread costs, each a wait for a CPU on a busy machine. Bigger
        requests, and models without a fast path (tens of ms a call), go to a worker
        thread so they do not hold up the loop (though a small request waits on the loop
        for the online store while a big one reads it: reads are one at a time)."""
        served = self._served
        return served is not None and served.scorer is not None and rows <= INLINE_ROWS

    def predict(self, rows: Sequence[Any], request_id: str | None = None) -> dict[str, Any]:
        """Score entity rows with the served champion; queue the request for the log."""
        entities = self.entity_rows(rows)
        served = self._served  # one read: this model, and its version, answer the request
        if served is None:
            raise Unavailable(f"no @champion yet for model {self.model_name!r}")
        at = _now()
        try:
            found = self._read_features(entities)
        except Exception as err:
            raise Unavailable(f"online store not readable: {err}") from err
        values, missing = self._values(entities, found)
        scores = self._score(served.model, served.scorer, entities, values)
        rid = request_id or uuid.uuid4().hex
        self._enqueue(_Pending(entities, values, scores, served.version, rid, at))
        predictions = []
        for i, entity in enumerate(entities):
            score = float(scores[i])
            finite = math.isfinite(score)
            predictions.append(
                {
                    self.join_key: entity[self.join_key],
                    "score": score if finite else None,
                    "label": int(score >= THRESHOLD) if self._classify and finite else None,
                    "missing_features": missing[i],
                }
            )
        return {
            "model": self.model_name,
            "version": served.version,
            "request_id": rid,
            "predictions": predictions,
        }

    def _values(
        self, entities: list[dict[str, Any]], found: Mapping[str, Sequence[Any]]
    ) -> tuple[Any, list[list[str]]]:
        """The features, (rows, features) float64 with NaN where missing, and each row's
        missing ones."""
        np, pd = self._np, self._pd
        n = len(entities)
        values = np.full((n, len(self.features)), np.nan)
        for j, name in enumerate(self.features):
            column = found.get(name)
            if column is None:  # the store does not serve it: missing everywhere
                continue
            if len(column) != n:
                raise Unavailable(f"online store returned {len(column)} values of {name} for {n}")
            try:
                values[:, j] = np.asarray(column, dtype="float64")  # None -> NaN
            except (TypeError, ValueError):
                values[:, j] = pd.to_numeric(pd.Series(column), errors="coerce").to_numpy()
        mask = np.isnan(values)
        missing = [[self.features[j] for j in np.flatnonzero(mask[i])] for i in range(n)]
        return values, missing

    def _frame(self, entities: list[dict[str, Any]], values: Any) -> pd.DataFrame:
        """Entity keys + features: what the model scores, and what the log records."""
        data: dict[str, Any] = {key: [e[key] for e in entities] for key in self.keys}
        data.update({name: values[:, j] for j, name in enumerate(self.features)})
        return self._pd.DataFrame(data)

    def _score(self, model: Any, scorer: Any, entities: list[dict[str, Any]], values: Any) -> Any:
        if scorer is not None:
            columns: dict[str, Any] = {key: [e[key] for e in entities] for key in self.keys}
            columns.update({name: values[:, j] for j, name in enumerate(self.features)})
            return scorer.score(columns)
        frame = self._frame(entities, values)
        scores = model.predict_proba(frame)[:, 1] if self._classify else model.predict(frame)
        return self._np.asarray(scores, dtype="float64")

    # --- the prediction log ---------------------------------------------------------------

    def _enqueue(self, entry: _Pending) -> None:
        n = len(entry.entities)
        with self._buffer_lock:
            if self._buffered_rows + n > self._max_buffered:
                self.dropped_rows += n
                dropped = True
            else:
                self._buffer.append(entry)
                self._buffered_rows += n
                dropped = False
        if dropped:
            log.error("prediction log buffer full (%d rows): request not logged", n)

    def flush(self) -> int:
        """Write the buffered requests to the online prediction log; returns the rows written.
        A failed write keeps the rows for the next flush (up to the buffer's limit)."""
        with self._flush_lock:
            with self._buffer_lock:
                pending, self._buffer = self._buffer, []
                self._buffered_rows = 0
            if not pending:
                return 0
            count = sum(len(p.entities) for p in pending)
            try:
                self._write(pending)
            except Exception:
                log.exception("writing %d prediction log rows failed", count)
                with self._buffer_lock:
                    if self._buffered_rows + count <= self._max_buffered:
                        self._buffer = pending + self._buffer
                        self._buffered_rows += count
                    else:
                        self.dropped_rows += count
                return 0
            self.logged_rows += count
            return count

    def _write(self, pending: list[_Pending]) -> None:
        pd, np, plog = self._pd, self._np, self._plog
        frame = self._frame(
            [e for p in pending for e in p.entities], np.concatenate([p.values for p in pending])
        )
        counts = [len(p.entities) for p in pending]
        times = pd.DatetimeIndex([pd.Timestamp(p.at) for p in pending]).repeat(counts)
        frame[self._event_ts] = times  # an online request's event is the request itself
        scores = np.concatenate([p.scores for p in pending])
        first = pending[0]
        rows = plog.make_rows(
            self.cfg, frame, scores, first.version, "online", first.request_id, scored_at=first.at
        )
        # One make_rows call for the whole flush; these three differ per request.
        rows[plog.MODEL_VERSION] = np.repeat([p.version for p in pending], counts)
        rows[plog.REQUEST_ID] = np.repeat([p.request_id for p in pending], counts)
        rows[plog.SCORED_AT] = times
        days = rows[plog.SCORED_AT].dt.date
        for day in days.unique():
            plog.append_online(self.home, rows[days == day].reset_index(drop=True))

    # --- background threads ---------------------------------------------------------------

    def start(self, reload_s: float, flush_s: float) -> None:
        """The reload thread (a poll now, then every `reload_s`) and the flush thread."""
        self._stop.clear()
        self._threads = [
            threading.Thread(
                target=self._every, args=(reload_s, self.reload, True), name="champion-reload"
            ),
            threading.Thread(
                target=self._every, args=(flush_s, self.flush, False), name="log-flush"
            ),
        ]
        for thread in self._threads:
            thread.daemon = True  # a hung registry call must not keep the process alive
            thread.start()

    def _every(self, seconds: float, step: Callable[[], object], now: bool) -> None:
        if not now and self._stop.wait(seconds):
            return
        while True:
            try:
                step()
            except Exception:  # steps report their own failures; never kill the thread
                log.exception("%s failed", threading.current_thread().name)
            if self._stop.wait(seconds):
                return

    def close(self, timeout: float = 10.0) -> None:
        """Stop the threads, then write what is still buffered."""
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout)
        self._threads = []
        self.flush()


# --- the HTTP app -------------------------------------------------------------------------


def create_app(
    server: ModelServer, *, reload_s: float = 10.0, flush_s: float = 1.0, background: bool = True
) -> FastAPI:
    """The FastAPI app around `server`. `background` starts the reload and flush threads
    with the app (tests call `server.reload()` / `server.flush()` themselves instead); the
    buffered log is flushed when the app shuts down either way."""
    from fastapi import FastAPI, HTTPException
    from fastapi.exceptions import RequestValidationError
    from fastapi.responses import JSONResponse
    from starlette.concurrency import run_in_threadpool

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if background:
            server.start(reload_s, flush_s)
        try:
            yield
        finally:
            server.close()

    app = FastAPI(
        title="Flywheel model server",
        summary=f"The @champion of {server.model_name}",
        lifespan=lifespan,
    )

    async def invalid_request(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        problems = []
        for error in exc.errors():
            where = ".".join(str(p) for p in error.get("loc", ()) if p != "body") or "body"
            problems.append(f"{where}: {error.get('msg')}")
        return JSONResponse({"detail": "; ".join(problems)}, status_code=422)

    app.add_exception_handler(RequestValidationError, invalid_request)

    # Annotations of these endpoints must resolve in this module's globals (FastAPI reads
    # them), hence no FastAPI types in them.
    @app.get("/health", response_model=None)
    async def health() -> dict[str, Any]:
        return server.health()

    @app.post("/predict", response_model=None)
    async def predict(body: PredictRequest) -> Any:
        try:
            if server.scores_inline(len(body.rows)):
                answer = server.predict(body.rows, body.request_id)
            else:  # a worker thread: Feast and the model block for a while
                answer = await run_in_threadpool(server.predict, body.rows, body.request_id)
        except InvalidRows as err:
            raise HTTPException(status_code=422, detail=str(err)) from None
        except Unavailable as err:
            raise HTTPException(status_code=503, detail=str(err)) from None
        return JSONResponse(answer)

    return app


# --- the real registry and feature store ------------------------------------------------------


class RegistryChampion:
    """@champion through MLflow's registry: which version, and the model itself."""

    def __init__(self, tracking_uri: str, model_name: str) -> None:
        self.tracking_uri, self.model_name = tracking_uri, model_name
        self._client: Any = None

    def _mlflow_client(self) -> Any:
        if self._client is None:
            import mlflow

            mlflow.set_tracking_uri(self.tracking_uri)
            mlflow.set_registry_uri(self.tracking_uri)
            self._client = mlflow.MlflowClient(self.tracking_uri, self.tracking_uri)
        return self._client

    def version(self) -> str | None:
        from flywheel import registry

        found = registry.champion(self._mlflow_client(), self.model_name)
        return None if found is None else str(found.version)

    def load(self, version: str) -> Any:
        import mlflow

        self._mlflow_client()
        return mlflow.sklearn.load_model(f"models:/{self.model_name}/{version}")


class FeastFeatures:
    """The configured FeatureService from Feast's online store, read through
    `feast_ops.OnlineReader`: what `get_online_features(...).to_dict()` answers, without its
    per-call overheads. One reader for the server's life, built on first use (before the
    first `feast apply` there is none: each request tries again until there is)."""

    def __init__(self, cfg: Config, home: Home) -> None:
        self.cfg, self.home = cfg, home
        self._reader: Any = None
        self._init_lock = threading.Lock()

    def _ready(self) -> Any:
        if self._reader is None:
            with self._init_lock:
                if self._reader is None:
                    from flywheel import feast_ops

                    self._reader = feast_ops.OnlineReader(self.cfg, self.home)
        return self._reader

    def __call__(self, rows: list[dict[str, Any]]) -> Mapping[str, Sequence[Any]]:
        # The reader serializes reads itself: its store shares one SQLite connection.
        data: Mapping[str, Sequence[Any]] = self._ready()(rows)
        return data


def build_app(
    cfg: Config, home: Home, tracking_uri: str, *, reload_s: float = 10.0, flush_s: float = 1.0
) -> FastAPI:
    """The app with the real MLflow registry and Feast online store."""
    champion = RegistryChampion(tracking_uri, cfg.registry.model_name)
    features = FeastFeatures(cfg, home)
    server = ModelServer(
        cfg,
        home,
        champion_version=champion.version,
        load_model=champion.load,
        read_features=features,
    )
    return create_app(server, reload_s=reload_s, flush_s=flush_s)


# --- CLI ----------------------------------------------------------------------------------------


def _env_seconds(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise SystemExit(f"${name} must be a number of seconds, got {raw!r}") from None
    if not value > 0:
        raise SystemExit(f"${name} must be positive, got {raw!r}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m flywheel.serving", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--host", default=HOST, help=f"default {HOST} (loopback only)")
    parser.add_argument(
        "--port",
        type=int,
        default=int(os.environ.get(PORT_ENV) or DEFAULT_PORT),
        help=f"default ${PORT_ENV} or {DEFAULT_PORT}",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # Each retry of a poll while MLflow is down; the failed poll itself is logged once.
    logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)
    reload_s = _env_seconds(RELOAD_ENV, 10.0)
    flush_s = _env_seconds(FLUSH_ENV, 1.0)
    # One OpenMP thread per prediction, set before anything loads the runtime: concurrency
    # comes from requests scored side by side. On 2 busy cores a 1-row HistGradientBoosting
    # predict took ~100 ms with a thread per core and ~12 ms with one. $OMP_NUM_THREADS wins.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    # The log flush (every second) and the registry poll (every reload) hold the GIL for
    # tens of ms of pandas and SQLAlchemy work; a request arriving meanwhile waits for the
    # GIL up to the switch interval, 5 ms by default: half the p99 budget of a request.
    # Measured with a 30 ms GIL-bound burst every 100 ms, a 1 ms task due at a fixed time
    # finished within p90 6-8 ms / p99 10-13 ms at 5 ms, p90 2.4-4.6 / p99 6-11 ms at 1 ms.
    sys.setswitchinterval(0.001)
    # A registry poll waiting minutes on MLflow's default retries is no use: the next poll
    # comes in seconds anyway.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")

    import uvicorn

    from flywheel.config import load_config
    from flywheel.training import tracking_uri

    cfg = load_config()
    home = Home.from_env()
    uri = tracking_uri(home)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning("listening on %s: the API has no authentication", args.host)
    log.info(
        "model server for %s: home %s, registry %s, reload every %.1f s, log flush every %.1f s",
        cfg.registry.model_name,
        home.root,
        uri,
        reload_s,
        flush_s,
    )
    app = build_app(cfg, home, uri, reload_s=reload_s, flush_s=flush_s)
    # No access log: every request is in the prediction log already.
    uvicorn.run(app, host=args.host, port=args.port, access_log=False, log_level="info")
    return 0


if __name__ == "__main__":
    sys.exit(main())
