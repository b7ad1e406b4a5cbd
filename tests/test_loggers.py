"""Loggers: TensorBoard's HPARAMS and the plot; CSV skips the plot; W&B (offline) and MLflow (file
store) when the optional extra is installed (pip install -e ".[loggers]"); bad logger names."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.conftest import TINY, assert_names, read_results, run_cli, run_entry
from vit_rope.errors import ConfigError
from vit_rope.report.loggers import hparam_metrics, log_figure, log_report

RUN = {"pos_embed": "rope_axial", "model": "vit_micro", "data": "shapes", "train_resolution": 32, "seed": 3,
       "overrides": ["pos_embed=rope_axial", "optim.lr=0.003", "+trainer.precision=bf16-mixed"]}  # fmt: skip
ROWS = [
    {"resolution": 32, "strategy": "extrapolate", "logn": False, "top1": 71.5},
    {"resolution": 64, "strategy": "extrapolate", "logn": False, "top1": 52.25},
    {"resolution": 64, "strategy": "interpolate", "logn": True, "top1": 60.0},
    {"resolution": 64, "strategy": "ntk", "logn": False, "top1": None, "note": "n/a"},
]
# a run of two resolutions and one strategy, small enough for seconds of CPU
SHORT_RUN = [*TINY, "data.num_train=128", "data.num_val=64", "trainer.max_epochs=1", "eval.resolutions=[32,48]",
             "eval.strategies=[extrapolate]", "eval.logn=[false]", "eval.diagnostics_images=0"]  # fmt: skip


def small_figure():
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(2, 2))
    FigureCanvasAgg(fig)
    fig.subplots().plot([32, 64], [71.5, 52.25])
    return fig


def tensorboard_hparams(tb_dir: Path) -> tuple[dict, set[str], dict[str, float], list[str]]:
    """(hparams, HPARAMS metric tags, scalar values at their last step, image tags) of an event file."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    acc = EventAccumulator(str(tb_dir), size_guidance={"images": 0, "scalars": 0, "tensors": 0})
    acc.Reload()
    content = acc.PluginTagToContent("hparams")
    start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
    experiment = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"])
    hparams = {k: v.WhichOneof("kind") and getattr(v, v.WhichOneof("kind")) for k, v in start.session_start_info.hparams.items()}  # fmt: skip
    tags = {m.name.tag for m in experiment.experiment.metric_infos}
    scalars = {tag: acc.Scalars(tag)[-1].value for tag in acc.Tags()["scalars"]}
    return hparams, tags, scalars, acc.Tags()["images"]


def test_tensorboard_gets_hparams_with_top1_and_the_plot(tmp_path: Path) -> None:
    from lightning.pytorch.loggers import TensorBoardLogger

    logger = TensorBoardLogger(tmp_path, name="tb", version="", default_hp_metric=False)
    log_report([logger], RUN, ROWS, small_figure())
    hparams, tags, scalars, images = tensorboard_hparams(tmp_path / "tb")
    assert hparams["pos_embed"] == "rope_axial" and hparams["seed"] == 3 and hparams["train_resolution"] == 32
    assert hparams["optim.lr"] == pytest.approx(0.003)  # a number, so that HPARAMS sorts and plots it
    assert hparams["trainer.precision"] == "bf16-mixed"
    assert tags == {"hp/top1_32/extrapolate", "hp/top1_64/extrapolate", "hp/top1_64/interpolate_logn"}
    assert scalars["hp/top1_64/extrapolate"] == pytest.approx(52.25)
    assert "hp_metric" not in scalars  # default_hp_metric=False: no placeholder
    assert images == ["eval/comparison"]


def test_loggers_without_images_skip_the_plot(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from lightning.pytorch.loggers import CSVLogger

    logger = CSVLogger(tmp_path, name="csv", version="")
    assert log_figure([logger], small_figure()) == []
    log_report([logger], RUN, ROWS, small_figure())  # no HPARAMS call that CSV cannot take
    assert caplog.text == ""
    assert hparam_metrics(ROWS)["hp/top1_64/interpolate_logn"] == 60.0


def test_an_unknown_logger_is_one_sentence(tmp_path: Path) -> None:
    proc = run_entry("train.py", "logger=wandbb", f"hydra.run.dir={tmp_path / 'run'}", check=False)
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()  # one sentence, no traceback
    assert_names(line, "logger", "wandbb", "csv, many, mlflow, none, tensorboard, wandb")
    assert not (tmp_path / "run").exists()  # refused before anything was written
    from vit_rope.cli import check_group_options

    with pytest.raises(ConfigError) as err:
        check_group_options("eval", ["-m", "logger=csv,nope", "ckpt_path=x.ckpt"])  # also inside a sweep list
    assert_names(str(err.value), "logger", "nope", "csv, many")
    with pytest.raises(ConfigError) as err:
        check_group_options("train", ["pos_embed=rope2d"])  # every group of the config, the same way
    assert_names(str(err.value), "pos_embed", "rope2d", "ape, none, rope1d")
    check_group_options("train", ["logger=null", "~callbacks.progress_bar", "+experiment=shapes_cpu", "optim.lr=1"])


@pytest.mark.parametrize(("module", "target"), [("wandb", "wandb_logger"), ("mlflow", "mlflow_logger")])
def test_a_missing_logger_package_is_one_sentence(monkeypatch: pytest.MonkeyPatch, module: str, target: str) -> None:
    import vit_rope.report.loggers as loggers

    monkeypatch.setitem(sys.modules, module, None)  # import fails as if it were not installed
    with pytest.raises(ConfigError) as err:
        getattr(loggers, target)(save_dir=".")
    assert_names(str(err.value), f"logger={module}", f"'{module}' package", 'pip install -e ".[loggers]"')


def test_wandb_runs_offline_with_metrics_and_plot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("wandb", reason='needs pip install -e ".[loggers]"')
    run_dir = tmp_path / "run"
    # an unreachable server: were the logger online, it could not reach the network anyway
    monkeypatch.setenv("WANDB_BASE_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    run_cli("train.py", *SHORT_RUN, "logger=wandb", f"hydra.run.dir={run_dir}", timeout=240)
    (offline,) = (run_dir / "wandb").glob("offline-run-*")  # offline, as no project was set
    assert list((offline / "files" / "media" / "images" / "eval").glob("comparison_*.png"))
    (data,) = offline.glob("run-*.wandb")
    assert b"eval_top1/extrapolate" in data.read_bytes()  # the metric went into the run's record
    assert read_results(run_dir)["metrics"]


def test_mlflow_writes_a_file_store_in_the_run_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("mlflow", reason='needs pip install -e ".[loggers]"')
    from mlflow.tracking import MlflowClient

    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)  # the logger sets it for its process

    run_dir = tmp_path / "run"
    run_cli("train.py", *SHORT_RUN, "logger=mlflow", "optim.lr=0.002", f"hydra.run.dir={run_dir}", timeout=240)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # for this reader
    client = MlflowClient(tracking_uri=(run_dir / "mlruns").as_uri())
    (experiment,) = [e for e in client.search_experiments() if e.name == "vit_rope"]
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.run_name == "rope_axial" and float(run.data.params["optim/lr"]) == 0.002
    history = {m.step: m.value for m in client.get_metric_history(run.info.run_id, "eval_top1/extrapolate")}
    expected = {m["resolution"]: m["top1"] for m in read_results(run_dir)["metrics"]}
    assert history == pytest.approx(expected)
    assert "eval_comparison.png" in [a.path for a in client.list_artifacts(run.info.run_id)]
