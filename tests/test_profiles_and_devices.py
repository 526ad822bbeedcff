import pytest
import torch

from capq_lib.core.devices import resolve_device
from capq_lib.core.validate import ConfigError
from capq_lib.report import profiles
from capq_lib.report.runner import build, notebook_parameters, toc_notebooks

from .conftest import ROOT


def test_shipped_profiles_load_and_match_the_notebooks():
    params = {nb.stem: notebook_parameters(ROOT / nb) for nb in toc_notebooks()}
    assert set(profiles.available()) >= {"smoke", "quick", "paper"}
    for name in profiles.available():
        prof = profiles.load(name)
        profiles.check_against(prof, params)
        assert set(prof.chapters) <= set(params)


def test_quick_profile_has_the_fcdnn_architectures_its_verdicts_need():
    """Width doubling needs two widths at a depth, the depth claim two depths at a width:
    at least 2 x 2 architectures (issue 20 dropped 3x16, which no verdict used)."""
    fc = profiles.load("quick").chapters["fcdnn-capacity"]
    archs = {(w, d) for w in fc["widths"] for d in fc["depths"]} - {tuple(s) for s in fc["skip"]}
    assert len(archs) >= 4
    assert len({w for w, _ in archs}) >= 2 and len({d for _, d in archs}) >= 2


def test_every_notebook_has_profile_and_device_parameters():
    for nb in toc_notebooks():
        assert {"profile", "device"} <= notebook_parameters(ROOT / nb), nb


def test_unknown_profile_names_the_parameter():
    with pytest.raises(ConfigError, match=r"^profile must be one of .*quick.*; got 'huge'"):
        profiles.load("huge")


@pytest.mark.parametrize("text,match", [
    ("chapters: [1, 2\n", "not valid YAML"),
    ("- a list\n", "must be a mapping"),
    ("timeout_s: -3\n", "timeout_s must be an integer >= 1"),
    ("colour: red\n", r"unknown key\(s\) \['colour'\]"),
    ("chapters:\n  fcdnn-capacity: 7\n", "chapters.fcdnn-capacity must be a mapping"),
    ("chapters:\n  fcdnn-capacity:\n    device: cuda\n", "set by the runner"),
])
def test_malformed_profile_file_is_refused(tmp_path, text, match):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=match):
        profiles.load(str(path))


@pytest.mark.parametrize("text,match", [
    ("chapters:\n  nonexistent: {}\n", "chapter 'nonexistent' is not in the book"),
    ("chapters:\n  fcdnn-capacity:\n    widht: [3]\n", r"unknown parameter\(s\) \['widht'\]"),
])
def test_profile_names_checked_against_notebooks_before_running(tmp_path, text, match):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=match):
        build(str(path), "cpu", output=tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing staged, nothing executed


def test_cuda_without_a_gpu_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match=r"device='cuda' was asked for.*'auto' or 'cpu'"):
        resolve_device("cuda")
    assert resolve_device("auto").type == "cpu"
    with pytest.raises(ConfigError, match=r"^device must be one of"):
        resolve_device("tpu")


def test_build_refuses_cuda_without_gpu_before_running(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="device='cuda'"):
        build("smoke", "cuda", output=tmp_path)
    assert not any(tmp_path.iterdir())


def test_only_must_name_a_chapter(tmp_path):
    with pytest.raises(ConfigError, match=r"^only must name chapters of the book"):
        build("smoke", "cpu", only=["chapter-9"], output=tmp_path)


def test_launch_buttons_point_at_the_repository_or_a_fork(tmp_path, monkeypatch):
    import yaml

    from capq_lib.report.runner import stage_sources

    monkeypatch.delenv("CAPQ_REPOSITORY_URL", raising=False)
    stage_sources(tmp_path / "a")
    plain = yaml.safe_load((tmp_path / "a" / "_config.yml").read_text())
    assert plain["launch_buttons"]["binderhub_url"] == "https://mybinder.org"
    assert plain["launch_buttons"]["colab_url"] == "https://colab.research.google.com"
    assert plain["repository"]["url"].startswith("https://github.com/")
    monkeypatch.setenv("CAPQ_REPOSITORY_URL", "https://github.com/someone/capq")
    stage_sources(tmp_path / "b")
    conf = yaml.safe_load((tmp_path / "b" / "_config.yml").read_text())
    assert conf["repository"]["url"] == "https://github.com/someone/capq"
    assert conf["launch_buttons"]["binderhub_url"] == "https://mybinder.org"
    assert (tmp_path / "b" / "book" / "fcdnn-capacity.ipynb").is_file()


def test_the_longest_chain_of_waiting_chapters_starts_first():
    from capq_lib.report.runner import chapter_costs, chapter_needs, critical_paths, toc_notebooks

    needs = {"intro": {"a", "b", "q"}, "a": set(), "b": set(), "q": {"a", "b"}}
    paths = critical_paths(needs, {"a": 2, "b": 5, "q": 4, "intro": 0.5})
    assert paths == {"b": 9.5, "a": 6.5, "q": 4.5, "intro": 0.5}
    # the book (the quick profile's costs): real tasks, which the loss surfaces wait for,
    # go first; with CNNs to quantize, quantization waits for the CNN search too
    notebooks = toc_notebooks()
    paths = critical_paths(chapter_needs(notebooks), chapter_costs(notebooks))
    assert max(paths, key=paths.get) == "real-tasks"
    assert "cnn-capacity" not in chapter_needs(notebooks)["quantization"]
