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


# --- issue 19: a profile is data, a cache file is data, a tampered dataset stops the book ---

PAYLOAD = '1x12"+str(__import__("os").system("touch {canary}"))+"'


def evil_profile(tmp_path: Path) -> tuple[Path, Path]:
    """A profile someone could send: fig2a_model as !!binary bytes that papermill would
    write into the notebook unescaped, running ``touch canary``."""
    import base64

    canary = tmp_path / "canary"
    blob = base64.b64encode(PAYLOAD.format(canary=canary).encode()).decode()
    prof = tmp_path / "evil.yaml"
    prof.write_text(f"chapters:\n  fcdnn-capacity:\n    fig2a_model: !!binary {blob}\n")
    return prof, canary


def test_code_in_a_profile_never_runs(tmp_path):
    from .conftest import run_capq

    prof, canary = evil_profile(tmp_path)
    for args in (("build", "--profile", str(prof), "--output", str(tmp_path / "out")),
                 ("params", "fcdnn-capacity", "--profile", str(prof))):
        proc = run_capq(*args, results=tmp_path / "results")
        assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
        err = proc.stderr.strip().splitlines()
        assert len(err) == 1 and "fcdnn-capacity.fig2a_model" in err[0], proc.stderr
        assert "!!binary" not in proc.stdout and not canary.exists()
    assert not (tmp_path / "out" / "_build" / "stage").exists()


def test_code_in_a_papermill_parameter_file_never_runs(tmp_path):
    """The same value in a file for ``papermill -f`` (or inline with ``-y``): papermill
    writes it into the notebook as code, and the notebook's guard refuses that cell before
    it runs, naming the parameter."""
    prof, canary = evil_profile(tmp_path)
    flat = tmp_path / "params.yaml"
    flat.write_text(prof.read_text().split("fcdnn-capacity:\n", 1)[1].strip() + "\n")
    papermill = Path(sys.executable).parent / "papermill"
    for how in (["-f", str(flat)], ["-y", flat.read_text()]):
        proc = subprocess.run([str(papermill), str(ROOT / "book" / "fcdnn-capacity.ipynb"),
                               str(tmp_path / "out.ipynb"), *how, "--cwd", str(tmp_path)],
                              capture_output=True, text=True, timeout=300,
                              env={**os.environ, "CAPQ_RESULTS_DIR": str(tmp_path / "r")})
        assert proc.returncode != 0
        assert "parameter fig2a_model: papermill wrote code, not a value" in proc.stderr, \
            proc.stderr[-3000:]
        assert not canary.exists()
        assert not (tmp_path / "r").exists()  # nothing computed


def test_the_guard_of_the_injected_cell_passes_values_and_stops_code():
    from capq_lib.report.chapters import _guard, injected_problem

    ok = '# Parameters\nwidths = [16, 32]\nfig2a_model = "1x32"\nrecipes = {"fc": {"lr": 0.3}}\n'
    assert injected_problem(ok) is None and _guard(ok.splitlines(True)) == ok.splitlines(True)
    for cell, name in (('# Parameters\nfig2a_model = "b\'1x12"+str(1)+"\'"\n', "fig2a_model"),
                       ("# Parameters\nx = b'bytes'\n", "x"),
                       ("# Parameters\nimport os\n", "assigns no parameter"),
                       ("# Parameters\nx = y = 1\n", "assigns no parameter"),
                       ("# Parameters\nx = [1, (2).bit_length()]\n", "x")):
        assert name in injected_problem(cell)
        guarded = "".join(_guard(cell.splitlines(True)))
        assert "raise ConfigError" in guarded and "import os\n" not in guarded.split("\n", 1)[0]
    assert _guard(["x = 1\n"]) == ["x = 1\n"]  # a cell papermill did not inject


def test_a_notebook_refuses_a_device_the_machine_lacks(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    papermill = Path(sys.executable).parent / "papermill"
    proc = subprocess.run([str(papermill), str(ROOT / "book" / "intro.ipynb"),
                           str(tmp_path / "out.ipynb"), "-p", "device", "cuda", "--cwd",
                           str(tmp_path)], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "CAPQ_RESULTS_DIR": str(tmp_path / "r")})
    assert proc.returncode != 0 and "torch sees no CUDA GPU" in proc.stderr, proc.stderr[-2000:]


def test_an_edited_copy_of_a_profile_finds_the_records_it_reuses(tmp_path, smoke_book):
    """cp smoke.yaml mysmoke.yaml, one loss-surface value changed, on a results folder that
    holds the smoke build: real tasks are cache hits (no net is trained again) and the loss
    surfaces find those nets as mysmoke's own."""
    from .conftest import run_capq

    results = tmp_path / "results"
    shutil.copytree(smoke_book / "results", results)
    nets_before = sorted(p.name for p in (results / "real-tasks").glob("*.json"))
    text = (ROOT / "book" / "profiles" / "smoke.yaml").read_text()
    assert "    points: 3\n" in text
    mine = tmp_path / "mysmoke.yaml"
    mine.write_text(text.replace("    points: 3\n", "    points: 4\n"))
    proc = run_capq("build", "--profile", str(mine), "--only", "real-tasks", "--only",
                    "loss-surfaces", "--execute-only", "--output", str(tmp_path / "out"),
                    "--jobs", "1", results=results)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert sorted(p.name for p in (results / "real-tasks").glob("*.json")) == nets_before
    for kind in ("real-tasks", "loss-surfaces"):
        rows = json.loads(run_capq("results", kind, "--profile", "mysmoke",
                                   results=results).stdout)
        assert rows and {r["profile"].split("@")[0] for r in rows} == {"mysmoke"}, kind
    shipped = json.loads(run_capq("results", "real-tasks", "--profile", "smoke",
                                  results=results).stdout)
    assert {r["profile"].split("@")[0] for r in shipped} == {"smoke"}  # still smoke's too


def odd_cache(tmp_path: Path) -> tuple[ResultsCache, dict]:
    cache = ResultsCache(tmp_path / "results")
    good = cache.put("quantization", {"n": 1}, {"profile": "p@1", "rows": [{"a": 1}]},
                     "cpu", 0.0)
    return cache, good


@pytest.mark.parametrize("oddity", ["folder", "nested", "rows-not-a-list", "key-of-another",
                                    "a-link"])
def test_one_odd_file_in_the_cache_is_set_aside_and_never_stops_a_reader(tmp_path, oddity):
    from capq_lib.experiments import records
    from capq_lib.experiments.results import config_key

    cache, good = odd_cache(tmp_path)
    folder = cache.root / "quantization"
    if oddity == "folder":
        (folder / f"{config_key('quantization', {'n': 2})}.json").mkdir()
    elif oddity == "nested":
        (folder / "x.json").write_text("[" * 100_000 + "]" * 100_000)
    elif oddity == "rows-not-a-list":  # keys and name match: only the shape is wrong
        cfg = {"n": 3}
        key = config_key("quantization", cfg)
        (folder / f"{key}.json").write_text(json.dumps(
            {"kind": "quantization", "key": key, "config": cfg,
             "result": {"profile": "p@1", "rows": 7}, "provenance": {}}))
    elif oddity == "key-of-another":  # a copy of a good record under another name
        (folder / f"{'0' * 20}.json").write_text(json.dumps({**good, "key": "0" * 20}))
    else:
        outside = tmp_path / "outside.json"
        outside.write_text(json.dumps(good))
        (folder / f"{'1' * 20}.json").symlink_to(outside)
    with pytest.warns(CacheWarning, match="moved to"):
        found = cache.records("quantization")
    assert [r["key"] for r in found] == [good["key"]]
    assert records.rows("quantization", "p", cache) == [{"a": 1, "profile": "p@1"}]
    assert len(list((cache.root / "quarantine").rglob("*"))) >= 1
    if oddity == "a-link":
        assert (tmp_path / "outside.json").is_file()  # the link is moved, not its target


@pytest.mark.parametrize("why", ["read-only", "quarantine-is-a-file"])
def test_a_bad_record_that_cannot_be_moved_is_skipped_with_one_warning(tmp_path, why,
                                                                       monkeypatch):
    cache, good = odd_cache(tmp_path)
    bad = cache.root / "quantization" / f"{'2' * 20}.json"
    bad.write_text("{torn")
    if why == "quarantine-is-a-file":
        (cache.root / "quarantine").write_text("not a folder")
    else:  # root may write anywhere; a read-only folder refuses the move like this
        def refuse(src, dst):
            raise PermissionError(30, "Read-only file system", str(src))
        monkeypatch.setattr(os, "replace", refuse)
    with pytest.warns(CacheWarning, match="could not be moved aside.*skipped") as seen:
        assert [r["key"] for r in cache.records("quantization")] == [good["key"]]
        assert [r["key"] for r in cache.records("quantization")] == [good["key"]]
    assert len(seen) == 1 and bad.is_file()  # one warning, the file left where it was


def test_a_journal_line_that_is_no_optuna_operation_sets_the_journal_aside(tmp_path,
                                                                          undisturbed):
    source, trials = undisturbed
    for where in ("middle", "end"):
        path = tmp_path / where / "s.journal"
        path.parent.mkdir()
        lines = source.read_bytes().rstrip(b"\n").split(b"\n")
        lines.insert(len(lines) // 2 if where == "middle" else len(lines), b'{"op_code": 99}')
        path.write_bytes(b"\n".join(lines) + b"\n")
        with pytest.warns(JournalWarning, match="no Optuna operation"):
            again = search_once(f"journal:///{path}")
        same_figures(again, trials)
        assert len(list(path.parent.glob("s.journal.*.bad"))) == 1


def fake_mnist(root: Path, monkeypatch, tamper: str | None = None) -> None:
    """MNIST-format files (random digits), trusted by a checksum file the user names; the
    file ``tamper`` is then changed after it was listed."""
    import numpy as np

    rng = np.random.default_rng(0)
    (root / "mnist").mkdir(parents=True)
    for stem, n in (("train", 300), ("t10k", 100)):
        for kind, arr in (("images-idx3", rng.integers(0, 256, (n, 28, 28))),
                          ("labels-idx1", rng.integers(0, 10, n))):
            head = bytes([0, 0, 8, arr.ndim]) + b"".join(int(d).to_bytes(4, "big")
                                                        for d in arr.shape)
            with gzip.open(root / "mnist" / f"{stem}-{kind}-ubyte.gz", "wb") as fh:
                fh.write(head + arr.astype("uint8").tobytes())
    listing = root.parent / "trusted.txt"
    listing.write_text("".join(f"{realdata.md5(p)}  {p.relative_to(root)}\n"
                               for p in (root / "mnist").iterdir()))
    monkeypatch.setenv(realdata.TRUSTED_ENV, str(listing))
    if tamper:
        with gzip.open(root / "mnist" / tamper, "ab") as fh:
            fh.write(b"\x00")


def test_a_tampered_training_file_stops_the_real_task_chapter(tmp_path, monkeypatch):
    from capq_lib.experiments.realtasks import image_data

    root = tmp_path / "data"
    fake_mnist(root, monkeypatch)
    data = image_data("mnist", root, False, None, None)
    assert "MNIST training set" in data.source  # untouched files: the real training split
    shutil.rmtree(root)
    fake_mnist(root, monkeypatch, tamper="train-images-idx3-ubyte.gz")
    for kind in ("mnist", "cifar"):
        with pytest.raises(realdata.Tampered, match="train-images-idx3-ubyte.gz fails its "
                                                    "checksum.*delete it"):
            image_data(kind, root, False, None, None)
    # a crafted CIFAR batch stops the CIFAR task, it does not make MNIST stand in
    (root / "mnist" / "train-images-idx3-ubyte.gz").unlink()
    folder = root / realdata.CIFAR_DIR
    folder.mkdir(parents=True)
    (folder / "data_batch_1").write_bytes(pickle.dumps({b"data": [1], b"labels": [1]}))
    with pytest.raises(realdata.Tampered, match="data_batch_1 fails its checksum"):
        image_data("cifar", root, False, None, None)
    shutil.rmtree(folder)  # absent: MNIST (here its test set split in two) stands in
    assert "stand-in" in image_data("cifar", root, False, None, None).source


def test_a_relative_results_folder_is_one_folder_for_the_book_and_capq_results(tmp_path):
    from .conftest import run_capq

    proc = run_capq("build", "--profile", "smoke", "--only", "mutual-information",
                    "--execute-only", "--output", "out", results=Path("rel/results"),
                    cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    rows = json.loads(run_capq("results", "mi-check", "--profile", "smoke",
                               results=Path("rel/results"), cwd=tmp_path).stdout)
    assert rows and (tmp_path / "rel" / "results" / "mi-check").is_dir()
    assert not list((tmp_path / "out").rglob("rel"))  # nothing written under the stage


def test_a_killed_download_leaves_nothing_for_long(tmp_path, monkeypatch):
    import fcntl
    import hashlib

    src = tmp_path / "src.txt"
    src.write_text("hello\n")
    good = hashlib.md5(src.read_bytes()).hexdigest()
    root = tmp_path / "data"
    (root / "toy").mkdir(parents=True)
    stale = root / "toy" / ".a.txt.k1ll3d.part"  # what kill -9 left
    stale.write_bytes(b"half")
    live = root / "toy" / ".a.txt.running.part"  # another process's download, in progress
    live.write_bytes(b"part")
    monkeypatch.setitem(realdata.FILES, "toy/a.txt",
                        realdata.Remote(src.as_uri(), (good,)))
    with open(live, "rb") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        assert realdata.fetch("toy/a.txt", root).read_text() == "hello\n"
        assert not stale.exists() and live.exists()
    assert sorted(p.name for p in (root / "toy").iterdir()) == [live.name, "a.txt"]


def test_saved_nets_that_cannot_be_loaded_or_saved_are_named(tmp_path, monkeypatch):
    import torch

    from capq_lib.experiments.results import CacheError, sha256

    cache = ResultsCache(tmp_path / "results")
    record, _ = cache.compute("unit", CONFIG, lambda: ({"v": 1}, {"w": torch.ones(2)}), "cpu",
                              artifact=True)
    path = cache.artifact_path(record["key"])
    path.write_bytes(b"not a torch file")
    record["artifact"]["sha256"] = sha256(path)  # digest matches: only loading can tell
    cache.path("unit", CONFIG).write_text(json.dumps(record))
    with pytest.raises(ValueError, match=rf"{path.name} \(the saved nets of unit record .*"
                                         r"cannot be loaded.*rebuild"):
        cache.load_artifact("unit", record["key"], "rebuild")

    def full_disk(obj, fh):
        fh.write(b"x" * 10)
        raise RuntimeError("[enforce fail at inline_container.cc:595] . unexpected pos 3776 "
                           "vs 3696")
    monkeypatch.setattr(torch, "save", full_disk)
    other = ResultsCache(tmp_path / "other")
    with pytest.raises(CacheError, match=r"could not write .*\.pt .*MiB free there.*nothing "
                                         r"was kept"):
        other.compute("unit", CONFIG, lambda: ({"v": 1}, {"w": torch.ones(2)}), "cpu",
                      artifact=True)
    assert not [p for p in other.root.rglob("*") if p.is_file()]


def test_links_out_of_the_results_folder_are_not_written_through(tmp_path, monkeypatch):
    from capq_lib.core.validate import ConfigError
    from capq_lib.experiments.storage import Storage

    outside = tmp_path / "outside"
    outside.mkdir()
    victim = outside / "notes.txt"
    victim.write_text("mine\n")
    results = tmp_path / "results"
    results.mkdir()
    monkeypatch.setenv("CAPQ_RESULTS_DIR", str(results))
    (results / "studies.journal").symlink_to(victim)
    with pytest.raises(ConfigError, match="studies.journal is a symbolic link to .*outside "
                                          "the results folder"):
        Storage()
    (results / "unit").symlink_to(outside, target_is_directory=True)
    with pytest.raises(ConfigError, match="unit is a symbolic link"):
        ResultsCache(results).compute("unit", CONFIG, lambda: {"v": 1}, "cpu")
    assert victim.read_text() == "mine\n" and sorted(os.listdir(outside)) == ["notes.txt"]
    # a link that stays inside the results folder is the user's own arrangement
    (results / "elsewhere").mkdir()
    (results / "unit2").symlink_to(results / "elsewhere", target_is_directory=True)
    ResultsCache(results).compute("unit2", CONFIG, lambda: {"v": 1}, "cpu")
