import pytest

from capq_lib.experiments.results import ResultsCache, config_key


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
