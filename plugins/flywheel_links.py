"""Airflow UI links from Flywheel's tasks to what they produced in MLflow.

A task publishes the URL as an XCom under `mlflow_run_url`; this plugin turns it into an
"MLflow run" button on the task in the Airflow UI (empty, hence disabled, on tasks that
published nothing).
"""

from typing import Any, ClassVar

from airflow.plugins_manager import AirflowPlugin
from airflow.serialization.definitions.operatorlink import XComOperatorLink

MLFLOW_RUN_URL = "mlflow_run_url"  # the XCom key; flywheel.training.MLFLOW_RUN_URL_KEY


class FlywheelLinks(AirflowPlugin):
    name = "flywheel_links"
    global_operator_extra_links: ClassVar[list[Any]] = [
        XComOperatorLink(name="MLflow run", xcom_key=MLFLOW_RUN_URL)
    ]
