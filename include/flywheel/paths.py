"""Where Flywheel keeps its state: one folder, $FLYWHEEL_HOME (default `.flywheel/`).

Nothing here creates anything at import time; callers make the folders they write to.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
DOORBELL = "_NEW"  # touched after a batch lands; the landing AssetWatcher consumes it


@dataclass(frozen=True)
class Home:
    root: Path

    @classmethod
    def from_env(cls) -> Home:
        return cls(Path(os.environ.get("FLYWHEEL_HOME") or REPO_ROOT / ".flywheel").resolve())

    # Landing zone: months arrive in incoming/, move to archive/ once ingested, or to
    # quarantine/ (with the validation result) when they fail validation.
    @property
    def incoming(self) -> Path:
        return self.root / "landing" / "incoming"

    @property
    def archive(self) -> Path:
        return self.root / "landing" / "archive"

    @property
    def quarantine(self) -> Path:
        return self.root / "landing" / "quarantine"

    @property
    def offline(self) -> Path:
        """Feast's file offline store: <view>/<YYYY-MM>.parquet, one partition per month."""
        return self.root / "offline"

    @property
    def feast(self) -> Path:
        """Feast registry and SQLite online store."""
        return self.root / "feast"

    @property
    def gx(self) -> Path:
        """Great Expectations file context, validation results and Data Docs."""
        return self.root / "gx"

    @property
    def predictions(self) -> Path:
        """The prediction log: batch/, online/ and labelled/ (see flywheel.prediction_log)."""
        return self.root / "predictions"

    @property
    def monitoring(self) -> Path:
        """Drift reports, window signals, policy decisions and retrain requests."""
        return self.root / "monitoring"

    def entity_rows(self, entity: str) -> Path:
        """Entity rows with their labels: the spine of training sets and scoring."""
        return self.offline / f"{entity}_entities"

    # Airflow Assets, identified by URI; every DAG producing or consuming one uses these.
    @property
    def landing_uri(self) -> str:
        return self.incoming.as_uri()

    @property
    def features_uri(self) -> str:
        return self.offline.as_uri()

    @property
    def predictions_uri(self) -> str:
        return self.predictions.as_uri()

    @property
    def model_uri(self) -> str:
        """The served model: events mean `@champion` moved."""
        return (self.root / "registry" / "champion").as_uri()
