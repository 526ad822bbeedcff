import json

import pytest

from capq_lib import capacity
from capq_lib.capacity import MemorizationTrial, run_trials
from capq_lib.models import FCDNNSpec
from capq_lib.results import ResultsCache, config_key
from capq_lib.train import TrainConfig


def test_miss_then_hit_with_provenance(cache: ResultsCache):
    calls = []
    fn = lambda: calls.append(1) or {"value": 42}  # noqa: E731
    rec, hit = cache.compute("thing", {"a": 1}, fn, "cpu")
    assert not hit and rec["result"] == {"value": 42}
    rec2, hit2 = cache.compute("thing", {"a": 1}, fn, "cpu")
    assert hit2 and rec2 == rec and calls == [1]
    _, hit3 = cache.compute("thing", {"a": 2}, fn, "cpu")
    assert not hit3 and calls == [1, 1]
    prov = rec["provenance"]
    for field in ("capq_version", "git_commit", "torch_version", "device", "wall_time_s",
                  "date"):
        assert field in prov
    assert prov["device"] == "cpu"


def test_key_depends_on_config_not_on_key_order():
    assert config_key("k", {"a": 1, "b": 2}) == config_key("k", {"b": 2, "a": 1})
    assert config_key("k", {"a": 1}) != config_key("k", {"a": 2})
    assert config_key("k", {"a": 1}) != config_key("j", {"a": 1})


def test_a_failed_computation_leaves_no_entry(cache: ResultsCache):
    def boom():
        raise RuntimeError("died mid-training")

    with pytest.raises(RuntimeError):
        cache.compute("thing", {"a": 1}, boom, "cpu")
    assert cache.get("thing", {"a": 1}) is None
    assert not list(cache.root.rglob("*.json"))


def test_an_interrupted_sweep_keeps_finished_trials_and_nothing_partial(cache, monkeypatch):
    trials = [MemorizationTrial(FCDNNSpec(12, 1), n, TrainConfig(epochs=20, lr=0.3))
              for n in (90, 180, 360)]
    real, done = capacity.memorize, []

    def dies_on_third(*args, **kwargs):
        if len(done) == 2:
            raise KeyboardInterrupt
        done.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(capacity, "memorize", dies_on_third)
    with pytest.raises(KeyboardInterrupt):
        run_trials(trials, "cpu", cache, progress=False)
    files = list((cache.root / "memorization-trial").iterdir())
    assert len(files) == 2 and all(f.suffix == ".json" for f in files)
    for f in files:
        json.loads(f.read_text())  # whole records only
    monkeypatch.setattr(capacity, "memorize", real)
    result = run_trials(trials, "cpu", cache, progress=False)
    assert result.cached.tolist() == [True, True, False]
