"""Training cost on the full year: HistGradientBoosting, and the PyTorch MLP on CPU and GPU.

The training frame is the one the platform trains on: each month is landed and its
features built into the offline store (`landing.land`, `ingest.build_and_store`, as
`ingest_features` does, minus the validation checkpoint, which does not change the rows),
then one point-in-time retrieval through the FeatureService over the whole window
(`training_set.build`, as `train_model` and the report's oracle do). Models come from the
platform's own builder (`models.build_model`) with the inputs the training entrypoint
gives it (`prepare_frame`, the config's numeric/categorical split, its seed and CPU thread
count), so the figures are what a `train_model` run spends in `fit`.

- HistGradientBoosting: the config's hyperparameters, fitted once on the year's train split.
- MLP: the builder's defaults, but a fixed number of epochs (early stopping off) so CPU and
  GPU do the same work; the GPU figure is CPU seconds / GPU seconds on the same rows.
Each figure carries the model's ROC AUC on the holdout split, so a fast fit that learned
nothing shows. There is no baseline beyond CPU vs GPU: these figures are recorded.

Each timed fit follows an untimed tiny one (`warm_up_s` in the detail): one-off imports and
device set-up belong to the process, not to the fit. Threads are the entrypoint's
(`flywheel.train.cpu_threads`: $OMP_NUM_THREADS, else the CPUs this process may use); on a
machine other work keeps busy, OpenMP's threads wait on each other and a 2-thread
HistGradientBoosting fit ran 7-18x slower than a 1-thread one, so measure on a quiet machine.
"""

from __future__ import annotations

import math
import time
from typing import Any

from bench.harness import Context, Figure
from bench.plain import home_env

NAME = "training"
TITLE = "Model fit on the full year: HistGradientBoosting, PyTorch MLP on CPU and GPU"
YEAR = [f"2013-{m:02d}" for m in range(1, 13)]
MLP_EPOCHS = 5
GPU_TARGET = 10.0  # GPU at least this many times faster than CPU for the MLP


def _training_frame(ctx: Context, months: list[str]) -> tuple[Any, Any, dict[str, float]]:
    """(train split, holdout split, seconds per step) over `months`, built in the workdir."""
    from flywheel import ingest, landing, training_set
    from flywheel.config import load_config
    from flywheel.paths import Home

    cfg = load_config()
    home = Home(ctx.path("training_home"))
    steps = {"land_build": 0.0}
    with home_env(home):
        for month in months:
            began = time.perf_counter()
            landing.land(cfg, month, home)
            ingest.build_and_store(cfg, home, month)
            steps["land_build"] += time.perf_counter() - began
        began = time.perf_counter()
        ingest.apply_repo(cfg, home)
        steps["apply"] = time.perf_counter() - began
        began = time.perf_counter()
        ts = training_set.build(cfg, home, training_set.Window(months[0], months[-1]))
        steps["retrieve"] = time.perf_counter() - began
    return ts.split("train"), ts.split("holdout"), steps


def _fit(
    model_type: str, params: dict[str, Any], train: Any, device: str = "auto"
) -> tuple[Any, float]:
    """The entrypoint's fit (flywheel.train): same frame preparation, builder and seed."""
    from flywheel.config import load_config
    from flywheel.models import build_model, prepare_frame

    cfg = load_config()
    categorical = list(cfg.training.categorical)
    numeric = [f for f in cfg.feature_names() if f not in categorical]
    x_train = prepare_frame(train, numeric, categorical)
    model = build_model(cfg.task, model_type, params, numeric, categorical, seed=0, device=device)
    began = time.perf_counter()
    model.fit(x_train, train[cfg.label.name])
    return model, time.perf_counter() - began


def _warm_up(model_type: str, params: dict[str, Any], train: Any, device: str = "auto") -> float:
    """A tiny fit first: the libraries' one-off imports and set-up (torch's optimizer pulls
    in torch._dynamo, CUDA initialises its context) are not the fit's cost per row."""
    return round(_fit(model_type, params, train[:2048], device)[1], 2)


def _scored(model: Any, holdout: Any) -> dict[str, float]:
    """Holdout ROC AUC and prediction throughput (rows/s) of a fitted model."""
    from flywheel.config import load_config
    from flywheel.metrics import evaluate

    cfg = load_config()
    began = time.perf_counter()
    proba = model.predict_proba(holdout)
    seconds = time.perf_counter() - began
    auc = evaluate(cfg.task, holdout[cfg.label.name], proba)["roc_auc"]
    return {"holdout_roc_auc": round(float(auc), 4), "predict_rows_per_s": len(holdout) / seconds}


def run(ctx: Context) -> list[Figure]:
    import torch

    from flywheel.config import load_config
    from flywheel.models import fit_summary
    from flywheel.train import cpu_threads

    cfg = load_config()
    months = YEAR[:1] if ctx.quick else YEAR
    epochs = 1 if ctx.quick else MLP_EPOCHS
    threads = cpu_threads()
    torch.set_num_threads(threads)  # as the entrypoint does for torch_mlp

    ctx.log(f"training frame over {months[0]}..{months[-1]}")
    train, holdout, steps = _training_frame(ctx, months)
    size = {
        "months": len(months),
        "train_rows": len(train),
        "holdout_rows": len(holdout),
        "cpu_threads": threads,
        "frame_build_s": {k: round(v, 1) for k, v in steps.items()},
    }
    ctx.log(f"{len(train):,} training rows; fitting hist_gbm")

    gbm_params = dict(cfg.training.model.params) if cfg.training.model.type == "hist_gbm" else {}
    if ctx.quick:
        gbm_params["max_iter"] = 20
    warm_gbm = _warm_up("hist_gbm", {"max_iter": 2}, train)
    gbm, gbm_s = _fit("hist_gbm", gbm_params, train)
    figures = [
        Figure(
            name="HistGradientBoosting fit",
            value=gbm_s,
            unit="s",
            target="record",
            met=None,
            stat="one fit",
            detail={
                **size,
                "params": gbm_params,
                "warm_up_s": warm_gbm,
                **fit_summary(gbm),
                **_scored(gbm, holdout),
            },
        )
    ]

    # Early stopping off: CPU and GPU must run the same number of epochs to compare.
    mlp_params = {"max_epochs": epochs, "patience": epochs + 1}
    ctx.log(f"fitting torch_mlp on cpu, {epochs} epoch(s)")
    warm_cpu = _warm_up("torch_mlp", {"max_epochs": 1}, train, device="cpu")
    mlp, cpu_s = _fit("torch_mlp", mlp_params, train, device="cpu")
    cpu_detail = {"warm_up_s": warm_cpu, **fit_summary(mlp), **_scored(mlp, holdout)}
    figures.append(
        Figure(
            name="PyTorch MLP fit, CPU",
            value=cpu_s,
            unit="s",
            target="record",
            met=None,
            stat="one fit",
            detail={**size, "params": mlp_params, "s_per_epoch": cpu_s / epochs, **cpu_detail},
        )
    )

    if torch.cuda.is_available():
        ctx.log("fitting torch_mlp on cuda")
        warm_gpu = _warm_up("torch_mlp", {"max_epochs": 1}, train, device="cuda")
        mlp, gpu_s = _fit("torch_mlp", mlp_params, train, device="cuda")
        speedup = cpu_s / gpu_s
        figures.append(
            Figure(
                name="PyTorch MLP fit, GPU",
                value=gpu_s,
                unit="s",
                target=f"GPU ≥ {GPU_TARGET:g}× CPU",
                met=speedup >= GPU_TARGET,
                baseline=cpu_s,
                baseline_name="the same fit on CPU",
                stat="one fit",
                detail={
                    **size,
                    "params": mlp_params,
                    "gpu": torch.cuda.get_device_name(0),
                    "speedup": round(speedup, 2),
                    "warm_up_s": warm_gpu,
                    "s_per_epoch": gpu_s / epochs,
                    **fit_summary(mlp),
                    **_scored(mlp, holdout),
                },
            )
        )
    else:
        figures.append(
            Figure(
                name="PyTorch MLP fit, GPU",
                value=math.nan,
                unit="s",
                target=f"GPU ≥ {GPU_TARGET:g}× CPU",
                met=None,
                stat="one fit",
                detail={"torch": torch.__version__, "cuda_available": False, "cpu_s": cpu_s},
                note="no GPU on this machine: torch sees no CUDA device, the target is unchecked",
            )
        )
    return figures
