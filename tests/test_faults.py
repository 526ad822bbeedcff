"""Faults a user or a machine can cause, and what survives them.

After each fault the next run either completes with the figures of an undisturbed run, or
stops with an error that names the file; nothing that was complete is lost.
"""

import gzip
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from capq_lib.experiments.results import CacheWarning, ResultsCache
from capq_lib.experiments.search import FCDNNCapacityStudy, run_worker, study_trials
from capq_lib.experiments.storage import JournalWarning, repair_journal
from capq_lib.nets import realdata
from capq_lib.nets.realdata import DataError

from .conftest import ROOT, SHARED_DATA

TINY = dict(widths=[10], depths=[1], epochs=10, population=4, stage1_n_per_param=[0.5, 1, 2],
            stage2_lrs=[0.1], stage2_momenta=[0.9], stage2_n_factors=[1.0],
            stage3_trials=2, bracket_trials=0, replicates=2, profile="faults")
CONFIG = {"what": "a unit", "n": 3}


def compute_counting(cache: ResultsCache, calls: list[int], value: int = 7, **kw):
    def fn():
        calls.append(1)
        return {"value": value}
    return cache.compute("unit", CONFIG, fn, "cpu", **kw)


# --- the results cache ---------------------------------------------------------------------

def test_a_kill_during_a_cache_write_leaves_no_record_and_the_rerun_computes(tmp_path):
    root = tmp_path / "results"
    code = textwrap.dedent(f"""
        import json, time
        from capq_lib.experiments.results import ResultsCache
        real = json.dump
        def slow(obj, fh, **kw):
            fh.write('{{"kind": "unit", "key"')  # half a record, then stuck
            fh.flush()
            print("writing", flush=True)
            time.sleep(60)
        json.dump = slow
        ResultsCache({str(root)!r}).compute("unit", {CONFIG!r}, lambda: {{"value": 7}}, "cpu")
    """)
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                         cwd=ROOT)
    assert p.stdout.readline().strip() == "writing"
    os.kill(p.pid, signal.SIGKILL)
    p.wait()
    left = list((root / "unit").iterdir())
    assert [f.name.startswith(".tmp-") for f in left] == [True]  # only the temporary file
    cache, calls = ResultsCache(root), []
    assert cache.records("unit") == []  # the temporary file is never read
    record, hit = compute_counting(cache, calls)
    assert not hit and calls == [1] and record["result"] == {"value": 7}
    assert compute_counting(cache, calls)[1] is True and calls == [1]


@pytest.mark.parametrize("damage", ["truncate", "empty", "garbage", "not-a-record"])
def test_a_damaged_record_is_moved_aside_and_recomputed(tmp_path, damage):
    cache, calls = ResultsCache(tmp_path), []
    first, _ = compute_counting(cache, calls)
    path = cache.path("unit", CONFIG)
    text = path.read_text()
    path.write_text({"truncate": text[:len(text) // 2], "empty": "",
                     "garbage": "\x00\xff binary", "not-a-record": "[1, 2]"}[damage])
    with pytest.warns(CacheWarning, match=f"{path.name}.*moved to"):
        assert cache.records("unit") == []
    kept = list((tmp_path / "quarantine" / "unit").iterdir())
    assert len(kept) == 1  # kept, not deleted
    again, hit = compute_counting(cache, calls)
    assert not hit and again["result"] == first["result"] and len(calls) == 2


def test_a_stray_temporary_file_is_never_read(tmp_path):
    cache, calls = ResultsCache(tmp_path), []
    compute_counting(cache, calls)
    (tmp_path / "unit" / ".tmp-abc123.json").write_text('{"kind": "unit", "ke')
    assert len(cache.records("unit")) == 1
    assert compute_counting(cache, calls)[1] is True


def test_records_are_readable_like_any_file_the_user_makes(tmp_path):
    cache, calls = ResultsCache(tmp_path), []
    compute_counting(cache, calls, artifact=False)
    mask = os.umask(0)
    os.umask(mask)
    assert cache.path("unit", CONFIG).stat().st_mode & 0o777 == 0o666 & ~mask


def test_a_record_whose_saved_nets_are_lost_is_a_miss(tmp_path):
    cache, calls = ResultsCache(tmp_path), []

    def fn():
        calls.append(1)
        return {"value": 1}, {"w": [1.0, 2.0]}

    record, _ = cache.compute("unit", CONFIG, fn, "cpu", artifact=True)
    pt = cache.artifact_path(record["key"])
    assert cache.load_artifact("unit", record["key"], "rebuild") == {"w": [1.0, 2.0]}
    pt.unlink()
    with pytest.raises(FileNotFoundError, match="no saved nets.*rebuild"):
        cache.load_artifact("unit", record["key"], "rebuild")
    _, hit = cache.compute("unit", CONFIG, fn, "cpu", artifact=True)
    assert not hit and len(calls) == 2 and pt.is_file()  # trained and saved again
    pt.write_bytes(b"tampered")
    with pytest.raises(ValueError, match="does not match the digest"):
        cache.load_artifact("unit", record["key"], "rebuild")
    assert cache.compute("unit", CONFIG, fn, "cpu", artifact=True)[1] is False


# --- the Optuna journal --------------------------------------------------------------------

def search_once(url: str):
    run_worker(FCDNNCapacityStudy(**TINY), "cpu", url, progress=False)
    return study_trials(FCDNNCapacityStudy(**TINY), url)


@pytest.fixture(scope="module")
def undisturbed(tmp_path_factory):
    path = tmp_path_factory.mktemp("journal") / "s.journal"
    trials = search_once(f"journal:///{path}")
    return path, trials


def same_figures(a, b) -> None:
    cols = ["stage", "n_samples", "lr", "accuracy", "mutual_info"]

    def key(t):
        return t[cols].sort_values(cols).reset_index(drop=True)
    assert key(a).equals(key(b))


def test_a_torn_last_journal_line_is_cut_off_and_nothing_finished_is_redone(
        tmp_path, undisturbed):
    source, trials = undisturbed
    path = tmp_path / "s.journal"
    shutil.copy(source, path)
    with open(path, "ab") as fh:
        fh.write(b'{"op_code": 5, "worker_id": "x", "trial_id": 3, "para')  # a kill mid-line
    with pytest.warns(JournalWarning, match="torn line"):
        report = run_worker(FCDNNCapacityStudy(**TINY), "cpu", f"journal:///{path}",
                            progress=False)
    assert report.trials_run == 0  # every finished trial is still there
    same_figures(study_trials(FCDNNCapacityStudy(**TINY), f"journal:///{path}")
                 , trials)
    assert len(list(tmp_path.glob("s.journal.*.bad"))) == 1  # the torn file is kept


def test_a_garbage_journal_line_sets_the_journal_aside_and_the_search_reruns(
        tmp_path, undisturbed):
    source, trials = undisturbed
    path = tmp_path / "s.journal"
    lines = source.read_bytes().split(b"\n")
    lines.insert(len(lines) // 2, b"\x00garbage{")
    path.write_bytes(b"\n".join(lines))
    with pytest.warns(JournalWarning, match="corrupt line"):
        again = search_once(f"journal:///{path}")
    same_figures(again, trials)  # the same figures as the undisturbed run
    assert len(list(tmp_path.glob("s.journal.*.bad"))) == 1


def test_a_whole_journal_is_left_alone(tmp_path, undisturbed):
    path = tmp_path / "s.journal"
    shutil.copy(undisturbed[0], path)
    assert repair_journal(path) == "ok" and path.read_bytes() == undisturbed[0].read_bytes()


# --- data files ----------------------------------------------------------------------------

class Boom:
    def __reduce__(self):
        return (os.system, (f"touch {Boom.marker}",))


def test_a_crafted_cifar_pickle_is_refused_and_runs_no_code(tmp_path, monkeypatch):
    folder = tmp_path / "data" / realdata.CIFAR_DIR
    folder.mkdir(parents=True)
    Boom.marker = tmp_path / "pwned"
    for name in [*realdata.CIFAR_BATCHES["train"], "test_batch"]:
        (folder / name).write_bytes(pickle.dumps({b"data": Boom(), b"labels": [1]}))
    with pytest.raises(DataError, match="data_batch_1 fails its checksum.*not read"):
        realdata.cifar10("train", tmp_path / "data", online=False)
    assert not Boom.marker.exists()
    # a data folder cannot bless its own files
    (tmp_path / "data" / "capq-checksums.txt").write_text(
        "".join(f"{realdata.md5(p)}  {realdata.CIFAR_DIR}/{p.name}\n" for p in folder.iterdir()))
    with pytest.raises(DataError, match="fails its checksum"):
        realdata.cifar10("train", tmp_path / "data", online=False)
    # even a digest the user trusts explicitly does not make the unpickler run code
    listing = tmp_path / "trusted.txt"
    listing.write_text((tmp_path / "data" / "capq-checksums.txt").read_text())
    monkeypatch.setenv(realdata.TRUSTED_ENV, str(listing))
    with pytest.raises(DataError, match="refused to build"):
        realdata.cifar10("train", tmp_path / "data", online=False)
    assert not Boom.marker.exists()


def test_a_tampered_mnist_file_is_refused_before_it_is_parsed(tmp_path):
    src = SHARED_DATA / "mnist" / "t10k-labels-idx1-ubyte.gz"
    if not src.is_file():
        pytest.skip("no offline MNIST copy here")
    (tmp_path / "mnist").mkdir()
    raw = bytearray(gzip.decompress(src.read_bytes()))
    raw[100] = (raw[100] + 1) % 10  # one label changed
    (tmp_path / "mnist" / src.name).write_bytes(gzip.compress(bytes(raw)))
    shutil.copy(src.with_name("t10k-images-idx3-ubyte.gz"), tmp_path / "mnist")
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte.gz fails its checksum"):
        realdata.mnist("test", tmp_path, online=False)
    shutil.copy(src, tmp_path / "mnist" / src.name)
    x, y = realdata.mnist("test", tmp_path, online=False)
    assert len(x) == len(y) == 10000


# --- profiles and the command line ---------------------------------------------------------

def test_a_profile_of_another_folder_with_a_shipped_name_does_not_mix(tmp_path):
    from capq_lib.report import profiles

    shipped = profiles.load("smoke")
    mine = tmp_path / "smoke.yaml"
    text = (ROOT / "book" / "profiles" / "smoke.yaml").read_text()
    mine.write_text(text.replace("repeats: 5", "repeats: 6"))
    other = profiles.load(str(mine))
    assert other.name == shipped.name and other.identity != shipped.identity
    same = tmp_path / "same" / "smoke.yaml"
    same.parent.mkdir()
    same.write_text(text.replace("description: >-", "description: >-\n  another copy;"))
    assert profiles.load(str(same)).identity == shipped.identity  # content, not the file
    cache = ResultsCache(tmp_path / "results")
    for label, value in ((shipped.identity, 1), (other.identity, 2)):
        cache.put("mi-check", {"p": label}, {"profile": label, "value": value}, "cpu", 0.0)
    from capq_lib.experiments.records import other_configurations, profile_matches

    mine_only = [r["result"]["value"] for r in cache.records("mi-check")
                 if profile_matches(r["result"]["profile"], shipped.identity)]
    assert mine_only == [1]
    assert other_configurations(shipped.identity, cache) == [other.identity]


def test_a_binary_profile_file_is_a_clear_error(tmp_path):
    from capq_lib.core.validate import ConfigError
    from capq_lib.report import profiles

    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(ConfigError, match="is not text"):
        profiles.load(str(bad))


def test_an_in_memory_sqlite_storage_is_refused(tmp_path):
    from capq_lib.core.validate import ConfigError
    from capq_lib.experiments.storage import Storage

    for url in ("sqlite://", "sqlite:///:memory:"):
        with pytest.raises(ConfigError, match="in-memory database: a sweep would keep nothing"):
            Storage(url)
    assert not list(Path.cwd().glob("*.claim-lock"))


def test_results_for_an_unknown_profile_is_an_error(tmp_path):
    from .conftest import run_capq

    proc = run_capq("results", "cnn-capacity", "--profile", "nope", results=tmp_path)
    assert proc.returncode == 2 and "--profile 'nope' matches no records" in proc.stderr


def test_build_checks_every_value_before_running_any_notebook(tmp_path):
    from .conftest import run_capq

    prof = tmp_path / "bad.yaml"
    prof.write_text("chapters:\n  rnn-capacity:\n    epochs: -3\n")
    start = time.time()
    proc = run_capq("build", "--profile", str(prof), "--output", str(tmp_path / "out"),
                    results=tmp_path / "results")
    assert proc.returncode == 2, proc.stdout[-2000:]
    assert "rnn-capacity" in proc.stderr and "epochs must be" in proc.stderr
    assert not (tmp_path / "out" / "_build" / "stage").exists()  # nothing ran
    assert time.time() - start < 120
    prof.write_text("chapters:\n  fcdnn-capacity:\n    widths: '[32, 64]'\n")
    proc = run_capq("build", "--profile", str(prof), "--output", str(tmp_path / "out"),
                    results=tmp_path / "results")
    assert proc.returncode == 2 and "widths" in proc.stderr, proc.stderr


def test_notebook_refuses_unknown_parameters_before_computing():
    from capq_lib.core.validate import ConfigError
    from capq_lib.report.chapters import check_parameters

    params = 'profile = "notebook"\ndevice = "auto"\nwidths = [16]\n'
    check_parameters({"In": ["", params, "x = 1"]})  # no injected cell: nothing to check
    check_parameters({"In": ["", params, '# Parameters\nwidths = [32]\n']})
    with pytest.raises(ConfigError, match=r"unknown parameter\(s\) widthz; this notebook's "
                                          r"parameters: device, profile, widths"):
        check_parameters({"In": ["", params, '# Parameters\nwidthz = [32]\n']})


def test_cli_json_rows_survive_a_quarantined_record(tmp_path):
    from .conftest import run_capq

    cache = ResultsCache(tmp_path)
    cache.put("mi-check", {"a": 1}, {"profile": "smoke@x", "v": 1}, "cpu", 0.0)
    bad = cache.put("mi-check", {"a": 2}, {"profile": "smoke@x", "v": 2}, "cpu", 0.0)
    cache.path("mi-check", {"a": 2}).write_text(json.dumps(bad)[:40])
    proc = run_capq("results", "mi-check", "--profile", "smoke", results=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert [r["v"] for r in json.loads(proc.stdout)] == [1]
    assert "moved to" in proc.stderr
