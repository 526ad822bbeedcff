"""Real-data loaders (real file formats), checksums, task models and loss surfaces."""

import gzip
import hashlib
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from capq_lib import realdata
from capq_lib.realdata import DataError, Remote
from capq_lib.surface import (
    SurfaceConfig,
    classification_evaluator,
    filter_normalized_direction,
    lm_evaluator,
    loss_surface,
)
from capq_lib.taskmodels import CIFARCNN, MNISTFCDNN, CIFARResNet, WordLM, count_parameters

from .conftest import ROOT

SHARED = Path(os.environ.get("CAPQ_TEST_DATA_DIR", ROOT.parent / "shared" / "data"))
needs_shared = pytest.mark.skipif(not (SHARED / "mnist").is_dir(),
                                  reason=f"no offline dataset copy at {SHARED}")


def write_idx(path: Path, array: np.ndarray) -> None:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as fh:
        fh.write(header + array.astype(np.uint8).tobytes())


def test_idx_reader_round_trips_a_written_file(tmp_path):
    imgs = np.random.default_rng(0).integers(0, 256, (7, 28, 28))
    write_idx(tmp_path / "x.gz", imgs)
    assert np.array_equal(realdata.read_idx(tmp_path / "x.gz"), imgs)
    (tmp_path / "bad").write_bytes(b"\x00\x00\x0d\x01" + b"\x00" * 8)
    with pytest.raises(DataError, match="not an unsigned-byte IDX file"):
        realdata.read_idx(tmp_path / "bad")


@needs_shared
def test_mnist_test_set_from_the_offline_copy():
    x, y = realdata.mnist("test", SHARED, online=False)
    assert x.shape == (10000, 1, 28, 28) and y.shape == (10000,)
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    counts = torch.bincount(y, minlength=10)
    assert counts.sum() == 10000 and counts.min() > 800  # every digit, roughly balanced
    with pytest.raises(DataError, match="downloads are off"):
        realdata.mnist("train", SHARED, online=False)


@needs_shared
def test_ptb_splits_vocabulary_and_batchify():
    valid = realdata.ptb_tokens("valid", SHARED, online=False)
    test = realdata.ptb_tokens("test", SHARED, online=False)
    assert len(valid) == 73760 and len(test) == 82430  # incl. one <eos> per sentence
    vocab = realdata.Vocabulary(valid, test)
    assert len(vocab) <= 10000 and "<unk>" in vocab.ids and realdata.EOS in vocab.ids
    ids = vocab.encode(valid)
    batches = realdata.batchify(ids, 20)
    assert batches.shape == (73760 // 20, 20)
    assert torch.equal(batches[:, 1], ids[3688:2 * 3688])  # columns are contiguous text


def write_cifar(folder: Path, n: int = 6) -> None:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for name in [*realdata.CIFAR_BATCHES["train"], "test_batch"]:
        batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                 b"labels": rng.integers(0, 10, n).tolist()}
        with open(folder / name, "wb") as fh:
            pickle.dump(batch, fh)


def test_cifar_reader_reads_pickled_batches(tmp_path):
    write_cifar(tmp_path / "cifar10" / "cifar-10-batches-py")
    x, y = realdata.cifar10("train", tmp_path, online=False)
    assert x.shape == (30, 3, 32, 32) and y.shape == (30,)
    with open(tmp_path / "cifar10/cifar-10-batches-py/data_batch_1", "rb") as fh:
        raw = pickle.load(fh, encoding="bytes")
    assert torch.equal((x[0] * 255).round().to(torch.uint8).flatten(),
                       torch.from_numpy(raw[b"data"][0]))
    xt, _ = realdata.cifar10("test", tmp_path, online=False)
    assert xt.shape == (6, 3, 32, 32)


def test_a_corrupted_download_fails_its_checksum_and_leaves_nothing(tmp_path, monkeypatch):
    src = tmp_path / "src.txt"
    src.write_text("hello world\n")
    good = hashlib.md5(src.read_bytes()).hexdigest()
    root = tmp_path / "data"
    monkeypatch.setitem(realdata.FILES, "toy/a.txt", Remote(src.as_uri(), ("0" * 32,)))
    with pytest.raises(DataError, match="failed its checksum"):
        realdata.fetch("toy/a.txt", root)
    assert list((root / "toy").iterdir()) == []  # no partial or renamed file
    monkeypatch.setitem(realdata.FILES, "toy/a.txt", Remote(src.as_uri(), (good,)))
    assert realdata.fetch("toy/a.txt", root).read_text() == "hello world\n"
    (root / "toy" / "a.txt").write_text("tampered\n")
    with pytest.raises(DataError, match="fails its checksum"):
        realdata.fetch("toy/a.txt", root)
    # a folder may declare the digest of its own copy (a mirror, test fixtures)
    tampered = hashlib.md5(b"tampered\n").hexdigest()
    (root / realdata.MANIFEST).write_text(f"{tampered}  toy/a.txt\n")
    assert realdata.fetch("toy/a.txt", root).read_text() == "tampered\n"
    monkeypatch.setitem(realdata.FILES, "toy/b.txt",
                        Remote((tmp_path / "nowhere").as_uri(), (good,)))
    with pytest.raises(DataError, match="could not be downloaded"):
        realdata.fetch("toy/b.txt", root)
    assert sorted(p.name for p in (root / "toy").iterdir()) == ["a.txt"]  # nothing partial


def test_task_model_parameter_counts():
    assert count_parameters(CIFARCNN("small")) == 221_082
    assert count_parameters(CIFARCNN("large")) == 3_510_858
    assert count_parameters(CIFARCNN("tiny")) == 35_986
    assert count_parameters(MNISTFCDNN(8)) == 784 * 8 + 8 + 8 * 8 + 8 + 8 * 10 + 10
    v, h = 100, 16
    assert count_parameters(WordLM(v, h)) == v * h + 2 * 4 * (2 * h * h + 2 * h) + h * v + v
    assert count_parameters(CIFARResNet(20)) == 272_474
    with pytest.raises(Exception, match="depth must be 6n"):
        CIFARResNet(21)


def test_filter_normalized_direction_matches_theta_norms_per_filter():
    net = CIFARCNN("tiny")
    d = filter_normalized_direction(net, torch.Generator().manual_seed(0))
    for name, p in net.named_parameters():
        if p.dim() == 1:
            assert torch.all(d[name] == 0), name
        else:
            torch.testing.assert_close(d[name].flatten(1).norm(dim=1),
                                       p.detach().flatten(1).norm(dim=1))
            assert not torch.allclose(d[name], p.detach())


def test_surface_at_zero_is_the_model_loss_and_leaves_the_model_alone():
    torch.manual_seed(0)
    net = MNISTFCDNN(8)
    x, y = torch.rand(64, 1, 28, 28), torch.randint(0, 10, (64,))
    before = {k: v.clone() for k, v in net.state_dict().items()}
    surf = loss_surface(net, classification_evaluator(x, y),
                        SurfaceConfig(-0.5, 0.5, points=4, directions=3))
    own = float(nn.functional.cross_entropy(net(x), y))
    at0 = surf[surf.alpha == 0.0]
    assert len(at0) == 1 and at0.loss.iloc[0] == pytest.approx(own, rel=1e-5)
    assert at0.loss_std.iloc[0] == pytest.approx(0.0, abs=1e-6)
    assert (surf[surf.alpha != 0].loss_std > 0).all()  # other alphas differ per direction
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())


def test_lm_surface_at_zero_is_its_cross_entropy():
    torch.manual_seed(0)
    lm = WordLM(30, 8).eval()
    data = torch.randint(0, 30, (50, 4))
    surf = loss_surface(lm, lm_evaluator(data, bptt=10),
                        SurfaceConfig(-0.2, 0.2, points=3, directions=2))
    with torch.no_grad():
        logits, _ = lm(data[:-1])
        own = float(nn.functional.cross_entropy(logits.flatten(0, 1), data[1:].flatten()))
    assert surf[surf.alpha == 0].loss.iloc[0] == pytest.approx(own, rel=1e-4)


def test_batched_alphas_give_the_same_surface():
    torch.manual_seed(0)
    net = CIFARResNet(8).eval()  # batch norm buffers ride along under vmap
    x, y = torch.rand(40, 3, 32, 32), torch.randint(0, 10, (40,))
    ev = classification_evaluator(x, y, batch=16)
    one = loss_surface(net, ev, SurfaceConfig(-0.5, 0.5, points=5, directions=2))
    many = loss_surface(net, ev, SurfaceConfig(-0.5, 0.5, points=5, directions=2,
                                               alpha_batch=3))
    assert len(one) == len(many) == 5
    assert (one.loss - many.loss).abs().max() < 1e-4
    assert (one.accuracy - many.accuracy).abs().max() < 1e-9
