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
    # issue 19: values checked late or never before
    (chapter("fcdnn-capacity", 'fig2a_model: "9x9"'), "fig2a_model must be one of"),
    (chapter("fcdnn-capacity", 'fig1a_depth: "deep"'), "fig1a_depth must be one of"),
    (chapter("fcdnn-capacity", "fig1b_width: 48"), "fig1b_width must be one of"),
    (chapter("rnn-capacity", "fig_units: 999"), "fig_units must be one of"),
    (chapter("rnn-capacity", "epochs: 1.0e+15"), "epochs must be an integer in [1, 1000000]"),
    (chapter("real-tasks", 'online: "no"'), "online must be true or false"),
    (chapter("real-tasks", 'direct: "yes"'), "direct must be true or false"),
    ("chapters: []\n", "chapters must map chapter names"),
    ("description: [1]\n", "description must be text"),
    (chapter("loss-surfaces", 'cnn_models: ["huge"]'), "cnn_models must be one of"),
    (chapter("loss-surfaces", 'widths: ["float", "bogus"]'), "widths must be 'float' or a bit"),
    (chapter("loss-surfaces", 'widths: ["float", "40"]'), "bits must be"),
    (chapter("cnn-capacity", 'storage: "garbage"'), "storage must be a SQLAlchemy URL"),
    (chapter("fcdnn-capacity", 'storage: "sqlite://"'), "in-memory database"),
    (chapter("mutual-information", "repeats: .nan"), "must be a finite number"),
    # plain values only: no tags that build other things, no aliases, bounded nesting
    (chapter("fcdnn-capacity", "fig2a_model: !!binary MXgxMg=="), "fcdnn-capacity.fig2a_model"),
    (chapter("fcdnn-capacity", "widths: !!set {16, 32}"), "fcdnn-capacity.widths: the tag"),
    (chapter("real-tasks", "lr: !!python/object/apply:os.getpid []"), "real-tasks.lr: the tag"),
    (chapter("mutual-information", "seed: 2024-01-01"), "must be text, a number"),
    ("a: &a [*a]\n", "anchors and aliases"),
    ('a: &a ["x","x","x","x","x","x","x","x","x"]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]\n'
     'c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: [*c,*c,*c,*c,*c,*c,*c,*c,*c]\n',
     "anchors and aliases"),
    ("chapters: " + "[" * 5000 + "]" * 5000 + "\n", "nested deeper than 16 levels"),
    ("? [1, 2]\n: 3\n", "keys must be text"),
    # the command line: where the book goes, downloads, quiet answers
    (["build", "--profile", "../../../etc/x"], "is a path (it has a separator) but not a .yaml"),
    (["build", "--profile", "smoke", "--output", "/proc/self/capq"], "--output"),
    (["data", "fetch", "ptb", "--mirror", "garbage"], "mirror must be a URL"),
    (["results", "fcdnn-capacity", "--profile", "paper"], "matches no records of fcdnn"),
    (["results", "fcdnn-capacity", "--profile", "quick@0000000000"], "matches no records"),
    (["advise", "--family", "fc", "--params", "100", "--samples", "10", "--profile", "nosuch"],
     "--profile 'nosuch' has no quantization records"),
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
    assert not (tmp_path / "data").exists()  # no download folder made


def test_the_output_may_not_be_a_file(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CAPQ_RESULTS_DIR", str(tmp_path / "results"))
    afile = tmp_path / "afile"
    afile.write_text("mine\n")
    assert main(["build", "--profile", "smoke", "--output", str(afile)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("capq: error: --output") and "is a file" in err, err
    assert len(err.strip().splitlines()) == 1 and afile.read_text() == "mine\n"


def test_an_output_folder_that_cannot_be_written_is_one_line(tmp_path, monkeypatch, capsys):
    """As root every folder is writable, so the write itself is made to fail as it does in a
    read-only folder; the error names --output before any notebook runs."""
    from capq_lib.report import runner

    monkeypatch.setenv("CAPQ_RESULTS_DIR", str(tmp_path / "results"))

    def read_only(stage):
        raise PermissionError(13, "Permission denied", str(stage))

    monkeypatch.setattr(runner, "stage_sources", read_only)
    assert main(["build", "--profile", "smoke", "--output", str(tmp_path / "ro")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("capq: error: --output") and "Permission denied" in err, err
    assert len(err.strip().splitlines()) == 1


def test_a_bad_heartbeat_grace_stops_a_worker_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CAPQ_RESULTS_DIR", str(tmp_path / "results"))
    monkeypatch.setenv("CAPQ_HEARTBEAT_GRACE_S", "soon")
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "studies.journal").write_text("")  # the journal exists already
    assert main(["sweep", "fcdnn-capacity", "--profile", "smoke"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("capq: error: CAPQ_HEARTBEAT_GRACE_S must be a number"), err
    assert len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("profile", ["smoke", "quick", "paper"])
def test_every_notebook_parameter_is_checked_by_its_chapters_configuration(profile):
    """A parameter the configuration never reads is a parameter nobody checks: each one of
    every notebook's parameters cell is read (and so validated) when the chapter is
    configured, which capq build does for every chapter before running any."""
    from capq_lib.core.paths import BOOK_ROOT
    from capq_lib.report import profiles
    from capq_lib.report.chapters import Reads, configure
    from capq_lib.report.runner import notebook_defaults, toc_notebooks

    prof = profiles.load(profile)
    for nb in toc_notebooks():
        ns = Reads({**notebook_defaults(BOOK_ROOT / nb), **prof.parameters(nb.stem, "cpu")})
        configure(nb.stem, ns)
        assert set(ns) - ns.read == set(), nb.stem


def test_papermill_reads_every_name_of_every_parameters_cell():
    """Papermill parses a parameters cell line by line and skips (with only a log line) one
    it cannot read, e.g. a comment with '=' in it; such a parameter would escape every
    check, so each cell's assigned names must be exactly what papermill reports."""
    import nbformat

    from capq_lib.core.paths import BOOK_ROOT
    from capq_lib.report.chapters import _assigned
    from capq_lib.report.runner import notebook_parameters, toc_notebooks

    for nb in toc_notebooks():
        cell = next(c for c in nbformat.read(BOOK_ROOT / nb, as_version=4).cells
                    if "parameters" in c.metadata.get("tags", []))
        assert set(_assigned(cell.source)) == notebook_parameters(BOOK_ROOT / nb), nb


def test_every_notebooks_defaults_are_the_quick_profiles_values():
    """A reader who opens a notebook and runs it gets the published page's study: the
    parameters cell holds the quick profile's values (the book is built with them)."""
    from capq_lib.core.paths import BOOK_ROOT
    from capq_lib.report import profiles
    from capq_lib.report.runner import notebook_defaults, toc_notebooks

    quick = profiles.load("quick")
    for nb in toc_notebooks():
        have = notebook_defaults(BOOK_ROOT / nb)
        assert have["profile"] == "quick", nb
        for key, value in quick.chapters.get(nb.stem, {}).items():
            assert have[key] == value, (nb.stem, key, have[key], value)


def test_a_notebook_run_by_hand_labels_its_records_by_what_it_computes(capsys):
    from capq_lib.core.paths import BOOK_ROOT
    from capq_lib.report import profiles
    from capq_lib.report.chapters import resolve_profile
    from capq_lib.report.runner import notebook_defaults

    ns = notebook_defaults(BOOK_ROOT / "book" / "rnn-capacity.ipynb")
    resolve_profile(ns, "rnn-capacity")
    assert ns["profile"] == profiles.load("quick").identity  # the page's own records
    edited = {**notebook_defaults(BOOK_ROOT / "book" / "rnn-capacity.ipynb"), "epochs": 10}
    resolve_profile(edited, "rnn-capacity")
    assert edited["profile"] == "notebook"
    assert "epochs differ from profile 'quick'" in capsys.readouterr().out
    other = {"profile": "wide", "epochs": 10}
    resolve_profile(other, "rnn-capacity")
    assert other["profile"] == "wide"  # a label of the user's own stays
