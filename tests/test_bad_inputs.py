"""Bad input, as a hostile but fair user gives it: every case ends in one clear line that
names the parameter (or file) and what is allowed, exit status 2, no traceback, and nothing
computed or written."""

import pytest

from capq_lib.report.cli import main

from .conftest import ROOT

SMOKE = (ROOT / "book" / "profiles" / "smoke.yaml").read_text()


def profile_with(tmp_path, text: str, binary: bytes | None = None) -> str:
    path = tmp_path / "p.yaml"
    if binary is not None:
        path.write_bytes(binary)
    else:
        path.write_text(text)
    return str(path)


def chapter(name: str, body: str) -> str:
    return f"chapters:\n  {name}:\n" + "".join(f"    {line}\n" for line in body.splitlines())


#: (argv, or a profile text for `capq build --profile FILE`, and what the error must name)
CASES = [
    (["build", "--profile", "nope"], "profile must be one of"),
    (["build", "--device", "tpu"], "device"),
    (["build", "--only", "nochapter"], "only must name chapters"),
    (["build", "--jobs", "0"], "jobs must be an integer"),
    (chapter("rnn-capacity", "epochs: -3"), "epochs must be"),
    (chapter("fcdnn-capacity", "widths: '[32, 64]'"), "widths must be a list"),
    (chapter("fcdnn-capacity", "widths: [0]"), "widths must be an integer"),
    (chapter("fcdnn-capacity", "stage1_n_per_param: []"), "stage1_n_per_param"),
    (chapter("fcdnn-capacity", "population: 0"), "population must be an integer"),
    (chapter("fcdnn-capacity", "bracket_factor: 0.5"), "bracket_factor"),
    (chapter("fcdnn-capacity", "replicates: -1"), "replicates"),
    (chapter("fcdnn-capacity", "widthz: [16]"), "unknown parameter(s) ['widthz']"),
    (chapter("cnn-capacity", "models: ['Z']"), "model"),
    (chapter("cnn-capacity", "length_factors: [0]"), "length_factors"),
    (chapter("quantization", "capacity_fractions: [0]"), "capacity_fractions must be"),
    (chapter("quantization", "step_rule: mean"), "step_rule must be one of"),
    (chapter("quantization", "schedule: [2, 4, 8]"), "schedule must go from more bits"),
    (chapter("real-tasks", "bits: [0]"), "bits must be an integer"),
    (chapter("loss-surfaces", "points: 0"), "points"),
    (chapter("mutual-information", "repeats: 0"), "repeats"),
    ("chapters:\n  nochapter: {}\n", "chapter 'nochapter' is not in the book"),
    ("timeout_s: -1\n", "timeout_s must be an integer >= 1"),
    ("- a list\n", "must be a mapping"),
    ("chapters: [1, 2\n", "not valid YAML"),
    (b"\xff\xfe\x00binary", "is not text"),
    (["results", "nothing"], "NAME must be one of"),
    (["results", "cnn-capacity", "--profile", "nope"], "--profile 'nope' matches no records"),
    (["advise", "--family", "gru", "--params", "100", "--samples", "10"], "family must be"),
    (["advise", "--family", "fc", "--params", "-3", "--samples", "10"], "params must be"),
    (["advise", "--family", "fc", "--params", "100", "--samples", "0"], "samples must be"),
    (["sweep", "nothing"], "EXPERIMENT must be one of"),
    (["sweep", "fcdnn-capacity", "--profile", "smoke", "--population", "0"],
     "population must be an integer"),
    (["sweep", "fcdnn-capacity", "--profile", "smoke", "--storage", "sqlite://"],
     "in-memory database"),
    (["sweep", "fcdnn-capacity", "--profile", "smoke", "--storage", "foo://x"],
     "storage must be a SQLAlchemy URL"),
    (["params", "nochapter"], "CHAPTER must be one of"),
    (["params", "fcdnn-capacity", "--profile", "nope"], "profile must be one of"),
]


@pytest.mark.parametrize("case,names", CASES, ids=[str(i) for i in range(len(CASES))])
def test_bad_input_gets_one_clear_line(case, names, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CAPQ_RESULTS_DIR", str(tmp_path / "results"))
    if isinstance(case, list):
        argv = case
    else:
        path = profile_with(tmp_path, case if isinstance(case, str) else "",
                            case if isinstance(case, bytes) else None)
        argv = ["build", "--profile", path, "--device", "cpu", "--output", str(tmp_path)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("capq: error: ") and names in err, err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "_build" / "stage").exists()  # no notebook ran
    assert not list((tmp_path / "results").rglob("*.json"))  # nothing computed
