"""Real-task quantization end to end on the offline data (small settings)."""

import json

import pytest

from capq_lib import realtasks
from capq_lib.realtasks import RealTaskStudy, measure_real_tasks, rebuild, robustness
from capq_lib.surface import SurfaceConfig
from capq_lib.validate import ConfigError

from .conftest import run_capq
from .test_realdata import SHARED, needs_shared

SMALL = dict(mnist_widths=[8], cifar_sizes=["tiny"], resnet_depths=[8], lm_units=[4],
             bits=[8, 2], epochs={"mnist": 2, "cifar": 1, "resnet": 1, "lm": 1},
             max_train=400, max_test=200, max_tokens=3000, profile="unit")


@needs_shared
def test_rows_cover_every_net_width_and_split_and_resume(cache, monkeypatch):
    study = RealTaskStudy(**SMALL)
    rows = measure_real_tasks(study, "cpu", cache, SHARED, progress=False)
    assert set(rows.task) == {"mnist", "cifar", "resnet", "lm"}
    assert set(rows.split) == {"train", "test"}
    assert set(rows.bits.dropna()) == {8, 2}
    lm = rows[rows.task == "lm"]
    assert (lm.perplexity > 1).all() and "validation split as training data" in lm.data.iloc[0]
    cifar = rows[rows.task == "cifar"]
    assert "stand-in" in cifar.data.iloc[0]
    mnist = rows[(rows.task == "mnist") & rows.bits.isna()]
    assert "MNIST test set only" in mnist.data.iloc[0]
    assert (mnist.accuracy > 0.2).all()  # above chance (0.1) after two short epochs
    # the saved 2-bit weights have at most 3 levels per quantized tensor
    key = rows[rows.task == "mnist"].key.iloc[0]
    net = rebuild(realtasks.load_states(key, cache), "2")
    w = dict(net.named_parameters())["hidden.1.weight"]
    assert w.unique().numel() <= 3
    assert set(robustness(rows).split) == {"train", "test"}

    def refuse(*a, **k):
        raise AssertionError("a cached net was retrained")

    monkeypatch.setattr(realtasks, "run_unit", refuse)
    again = measure_real_tasks(study, "cpu", cache, SHARED, progress=False)
    assert len(again) == len(rows)

    config = SurfaceConfig(-0.5, 0.5, points=3, directions=1)
    surf = realtasks.measure_surfaces("unit", [("cifar", "tiny"), ("lm", 4)], ["float", "2"],
                                      config, 50, cache, SHARED, progress=False)
    assert set(surf.width) == {"float", "2 bits"} and set(surf.split) == {"train", "test"}
    assert set(surf.model) == {"tiny", "2x4 LSTM"}
    with pytest.raises(ConfigError, match="width '5' was not measured"):
        realtasks.measure_surfaces("unit", [("cifar", "tiny")], ["5"], config, 50, cache, SHARED)
    with pytest.raises(ConfigError, match="build the real-tasks chapter first"):
        realtasks.measure_surfaces("unit", [("cifar", "large")], ["float"], config, 50, cache)
    for name in ("real-tasks", "loss-surfaces"):
        proc = run_capq("results", name, "--profile", "unit", results=cache.root)
        assert proc.returncode == 0, proc.stderr
        records = json.loads(proc.stdout)
        assert records and {"task", "model", "split"} <= set(records[0])


def test_bad_settings_fail_early():
    with pytest.raises(ConfigError, match="resnet_depths must be 6n"):
        RealTaskStudy(resnet_depths=[21])
    with pytest.raises(ConfigError, match="cifar_sizes must be one of"):
        RealTaskStudy(cifar_sizes=["huge"])
    with pytest.raises(ConfigError, match="bits must be an integer in"):
        RealTaskStudy(bits=[8, 40])


def synthetic_rows():
    import pandas as pd

    rows = []
    spec = {("mnist", "2x8", 6442): {"train": [0.95, 0.95, 0.94, 0.80], "test": [0.93, 0.93,
                                                                              0.93, 0.85]},
            ("mnist", "2x16", 13002): {"train": [0.97, 0.97, 0.97, 0.90], "test": [0.95, 0.95,
                                                                                 0.95, 0.94]},
            ("resnet", "ResNet-8", 78042): {"train": [0.9, 0.9, 0.7, 0.5],
                                            "test": [0.88, 0.88, 0.8, 0.6]}}
    for (task, model, params), splits in spec.items():
        for split, accs in splits.items():
            for bits, acc in zip([None, 8, 4, 2], accs, strict=True):
                rows.append({"task": task, "model": model, "params": params, "split": split,
                             "bits": bits, "retrained": bits is not None, "accuracy": acc,
                             "loss": 1 - acc})
    return pd.DataFrame(rows)


def test_real_task_scorecard_verdicts_follow_the_numbers():
    from capq_lib.scorecard import real_task_rows

    rows = {r["claim"]: r for r in real_task_rows(synthetic_rows())}
    test_vs_train = rows["the test set is more robust to quantization than the training set"]
    assert test_vs_train["verdict"] == "agrees"  # test needs 4/2/8 bits, train 4/4/8
    assert "3 of 3 nets" in test_vs_train["we measured"]
    mnist8 = rows["a 2-layer MNIST FCDNN of width 8 at 4 bits matches float"]
    assert mnist8["verdict"] == "agrees" and "0.9300" in mnist8["we measured"]
    resnet = rows["ResNets keep their test performance down to"]
    assert resnet["verdict"] == "differs" and resnet["we measured"].startswith("8 bits")
    larger = rows["larger nets are more robust"]
    assert larger["verdict"] == "agrees"  # 2x16 needs 2 bits on test, 2x8 needs 4
