import csv
import io
import json

import pytest

from capq_lib.experiments.capacity import measure_capacity
from capq_lib.experiments.search import FCDNNCapacityStudy

from .conftest import run_capq


def test_results_json_lists_one_record_per_architecture(cache):
    study = FCDNNCapacityStudy(widths=[10, 12], depths=[1], stage1_n_per_param=[0.5, 1.0],
                               stage2_lrs=[0.3], stage2_momenta=[0.9], stage2_n_factors=[1.0],
                               stage3_trials=1, epochs=10, profile="unit")
    measure_capacity(study, device="cpu", cache=cache, progress=False)
    proc = run_capq("results", "fcdnn-capacity", "--format", "json", "--profile", "unit",
                    results=cache.root)
    assert proc.returncode == 0, proc.stderr
    records = json.loads(proc.stdout)
    assert sorted(r["model"] for r in records) == ["1x10", "1x12"]
    for r in records:
        for field in ("width", "depth", "params", "capacity_bits", "bits_per_param",
                      "n_at_max", "p_at_max"):
            assert field in r
        assert r["bits_per_param"] == r["capacity_bits"] / r["params"]
        assert r["provenance"]["device"].startswith("cpu")
    # a profile without records of it is refused, naming the profiles that have some
    other = run_capq("results", "fcdnn-capacity", "--profile", "quick", results=cache.root)
    assert other.returncode == 2 and "matches no records" in other.stderr
    assert "unit" in other.stderr and other.stdout == ""
    rows = list(csv.DictReader(io.StringIO(run_capq(
        "results", "fcdnn-capacity", "--format", "csv", results=cache.root).stdout)))
    assert len(rows) == 2 and "provenance.git_commit" in rows[0]


def test_unknown_experiment_names_the_parameter(cache):
    proc = run_capq("results", "cnn-capacityy", results=cache.root)
    assert proc.returncode == 2
    assert "NAME must be one of fcdnn-capacity" in proc.stderr


def test_unknown_profile_on_the_command_line(cache, tmp_path):
    proc = run_capq("build", "--profile", "enormous", "--output", str(tmp_path),
                    results=cache.root)
    assert proc.returncode == 2
    assert "profile must be one of" in proc.stderr


def test_cnn_and_rnn_results_carry_their_fields(cache):
    from capq_lib.experiments.search import CNNCapacityStudy, RNNCapacityStudy

    small = dict(epochs=2, population=2, stage2_lrs=[0.003], stage2_momenta=[0.9],
                 stage2_n_factors=[1.0], stage3_trials=0, profile="unit")
    measure_capacity(CNNCapacityStudy(models=["A"], stage1_n_per_param=[0.02, 0.05],
                                      **small), device="cpu", cache=cache, progress=False)
    measure_capacity(RNNCapacityStudy(units=[4], stage1_n_per_param=[0.2, 0.5], **small),
                     device="cpu", cache=cache, progress=False)
    for name, fields in (("cnn-capacity", ("params_conv", "conv_bits_per_param")),
                         ("rnn-capacity", ("units",))):
        proc = run_capq("results", name, "--profile", "unit", results=cache.root)
        assert proc.returncode == 0, proc.stderr
        (record,) = json.loads(proc.stdout)
        for field in ("model", "params", "capacity_bits", "bits_per_param", "n_at_max",
                      "p_at_max", *fields):
            assert field in record
    cnn = json.loads(run_capq("results", "cnn-capacity", results=cache.root).stdout)[0]
    assert cnn["model"] == "A" and cnn["params"] == 2018 and cnn["params_conv"] == 1504
    assert cnn["conv_bits_per_param"] == pytest.approx(
        (cnn["capacity_bits"] - 2.3 * 514) / 1504)
