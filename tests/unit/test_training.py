"""flywheel.training's pure policy: what a train_model run came to."""

from __future__ import annotations

from flywheel.training import run_outcome

CANDIDATE = {"version": "4"}
VERDICT = {"summary": "Gate PASSED: 0.74 vs champion 0.72", "promote": True}


def test_promoted():
    states = {"prepare_training": "success", "train_local": "success"}
    outcome = run_outcome(states, CANDIDATE, VERDICT, {"new": "4"})
    assert outcome == {
        "result": "promoted",
        "failed_tasks": [],
        "version": "4",
        "gate": VERDICT["summary"],
        "promoted": True,
    }


def test_refused_when_the_gate_said_no():
    outcome = run_outcome({"gate_candidate": "success"}, CANDIDATE, VERDICT, None)
    assert (outcome["result"], outcome["promoted"]) == ("refused", False)


def test_no_candidate_when_nothing_was_trained():
    states = {"prepare_training": "skipped", "train_local": "skipped"}
    outcome = run_outcome(states, None, None, None)
    assert outcome["result"] == "no candidate"
    assert outcome["version"] is None


def test_a_failed_task_decides_whatever_else_got_done():
    states = {
        "prepare_training": "success",
        "train_local": "failed",
        "register_candidate": "upstream_failed",
        "write_run_card": "failed",
    }
    outcome = run_outcome(states, CANDIDATE, VERDICT, {"new": "4"})
    assert outcome["result"] == "failed"
    # Only the tasks that failed themselves, not the ones their failure held back.
    assert outcome["failed_tasks"] == ["train_local", "write_run_card"]


# Airflow's task runner points fds 1 and 2 at its log sockets and opens them as
# sys.stdout / sys.stderr with closefd=True; then the task calls train_local.
_AS_AIRFLOW_TASK = """
import io, os, sys
sink = os.open(os.devnull, os.O_WRONLY)
for fd, name in ((1, "stdout"), (2, "stderr")):
    os.dup2(sink, fd)
    setattr(sys, name, io.TextIOWrapper(os.fdopen(fd, "wb"), line_buffering=True))
from flywheel.training import _forked_entrypoint
code, lines = _forked_entrypoint(sys.argv[1])
with open(sys.argv[2], "w") as out:
    out.write(f"{code}\\n" + "\\n".join(lines))
"""


def test_forked_training_output_reaches_the_task_log(tmp_path):
    """The child's traceback and exit code come back through the pipe, even though the
    streams it replaces own fds 1 and 2 (collected, they used to close the pipe: exit 1,
    no output, whatever the training did)."""
    import subprocess
    import sys

    report = tmp_path / "report.txt"
    missing = tmp_path / "no-such-spec.json"
    subprocess.run(
        [sys.executable, "-c", _AS_AIRFLOW_TASK, str(missing), str(report)],
        check=True,
        timeout=120,
    )
    code, *lines = report.read_text().splitlines()
    assert code == "2"  # flywheel.train's exit code for a bad spec, not a lost 1
    assert lines[-1] == (
        f"flywheel.train: error: cannot read spec file {missing}: No such file or directory"
    )
    assert lines[0] == "Traceback (most recent call last):"
