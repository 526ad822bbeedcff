"""Real-data loaders (real file formats), checksums, task models and loss surfaces."""

import gzip
import hashlib
import math
import os
import pickle
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from capq_lib.core.validate import ConfigError
from capq_lib.engine.surface import (
    SurfaceConfig,
    basin_rise,
    classification_evaluator,
    filter_normalized_direction,
    findings,
    lm_evaluator,
    loss_surface,
)
from capq_lib.experiments import realtasks
from capq_lib.nets import realdata
from capq_lib.nets.models import count_parameters
from capq_lib.nets.realdata import DataError, Remote
from capq_lib.nets.taskmodels import CIFARCNN, MNISTFCDNN, CIFARResNet, WordLM

from .conftest import SHARED_DATA as SHARED

needs_shared = pytest.mark.skipif(not (SHARED / "mnist").is_dir(),
                                  reason=f"no offline dataset copy at {SHARED}")
#: whether the offline copy is the whole one (MNIST training set, PTB training split)
FULL = (SHARED / "mnist" / "train-images-idx3-ubyte.gz").exists()


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
def test_mnist_from_the_offline_copy():
    x, y = realdata.mnist("test", SHARED, online=False)
    assert x.shape == (10000, 1, 28, 28) and y.shape == (10000,)
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    counts = torch.bincount(y, minlength=10)
    assert counts.sum() == 10000 and counts.min() > 800  # every digit, roughly balanced
    if FULL:
        x, y = realdata.mnist("train", SHARED, online=False)
        assert x.shape == (60000, 1, 28, 28) and torch.bincount(y).min() > 5000
    else:
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
    if FULL:
        train = realdata.ptb_tokens("train", SHARED, online=False)
        assert len(train) == 929589
        assert len(realdata.Vocabulary(train)) == len(realdata.Vocabulary(train, valid, test))


def write_cifar(folder: Path, n: int = 6) -> None:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for name in [*realdata.CIFAR_BATCHES["train"], "test_batch"]:
        batch = {b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                 b"labels": rng.integers(0, 10, n).tolist()}
        with open(folder / name, "wb") as fh:
            pickle.dump(batch, fh)


def test_cifar_reader_reads_pickled_batches(tmp_path, monkeypatch):
    write_cifar(tmp_path / "cifar10" / "cifar-10-batches-py")
    with pytest.raises(DataError, match="data_batch_1 fails its checksum"):
        realdata.cifar10("train", tmp_path, online=False)  # not the real batches
    trust(tmp_path, monkeypatch)
    x, y = realdata.cifar10("train", tmp_path, online=False)
    assert x.shape == (30, 3, 32, 32) and y.shape == (30,)
    with open(tmp_path / "cifar10/cifar-10-batches-py/data_batch_1", "rb") as fh:
        raw = pickle.load(fh, encoding="bytes")
    assert torch.equal((x[0] * 255).round().to(torch.uint8).flatten(),
                       torch.from_numpy(raw[b"data"][0]))
    xt, _ = realdata.cifar10("test", tmp_path, online=False)
    assert xt.shape == (6, 3, 32, 32)


def trust(root: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Name a checksum file (outside ``root``) that accepts the files now under ``root``."""
    listing = root.parent / f"{root.name}-checksums.txt"
    before = os.environ.get(realdata.TRUSTED_ENV)  # earlier fixtures stay trusted
    lines = [f"{realdata.md5(p)}  {p.relative_to(root)}\n"
             for p in sorted(root.rglob("*")) if p.is_file()]
    listing.write_text((Path(before).read_text() if before else "") + "".join(lines))
    monkeypatch.setenv(realdata.TRUSTED_ENV, str(listing))
    return listing


def test_a_corrupted_download_fails_its_checksum_and_leaves_nothing(tmp_path, monkeypatch):
    src = tmp_path / "src.txt"
    src.write_text("hello world\n")
    good = hashlib.md5(src.read_bytes()).hexdigest()
    root = tmp_path / "data"
    monkeypatch.setitem(realdata.FILES, "toy/a.txt", Remote(src.as_uri(), ("0" * 32,)))
    with pytest.raises(DataError, match="failed its checksum"):
        realdata.fetch("toy/a.txt", root)
    assert not (root / "toy").exists()  # no partial or renamed file, no folder made for it
    monkeypatch.setitem(realdata.FILES, "toy/a.txt", Remote(src.as_uri(), (good,)))
    assert realdata.fetch("toy/a.txt", root).read_text() == "hello world\n"
    (root / "toy" / "a.txt").write_text("tampered\n")
    with pytest.raises(DataError, match="fails its checksum"):
        realdata.fetch("toy/a.txt", root)
    # a checksum file inside the data folder blesses nothing
    tampered = hashlib.md5(b"tampered\n").hexdigest()
    (root / "capq-checksums.txt").write_text(f"{tampered}  toy/a.txt\n")
    with pytest.raises(DataError, match="fails its checksum"):
        realdata.fetch("toy/a.txt", root)
    # one the user names explicitly does (a mirror, test fixtures)
    listing = tmp_path / "mine.txt"
    listing.write_text(f"{tampered}  toy/a.txt\n")
    monkeypatch.setenv(realdata.TRUSTED_ENV, str(listing))
    assert realdata.fetch("toy/a.txt", root).read_text() == "tampered\n"
    listing.write_text("not-a-digest toy/a.txt\n")
    with pytest.raises(DataError, match=r"mine.txt, line 1: expected"):
        realdata.fetch("toy/a.txt", root)
    monkeypatch.delenv(realdata.TRUSTED_ENV)
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


def fake_datasets(root: Path, train_splits: bool = True,
                  monkeypatch: pytest.MonkeyPatch | None = None) -> Path:
    """Small MNIST and PTB files in the real formats; the MNIST training set and the PTB
    training split only when ``train_splits``."""
    rng = np.random.default_rng(0)
    (root / "mnist").mkdir(parents=True)
    for stem, n in [("t10k", 50)] + ([("train", 120)] if train_splits else []):
        write_idx(root / "mnist" / f"{stem}-images-idx3-ubyte.gz",
                  rng.integers(0, 256, (n, 28, 28)))
        write_idx(root / "mnist" / f"{stem}-labels-idx1-ubyte.gz", rng.integers(0, 10, n))
    (root / "ptb").mkdir()
    words = [f"w{i}" for i in range(30)]
    for split in (["train"] if train_splits else []) + ["valid", "test"]:
        lines = [" " + " ".join(rng.choice(words, 9)) + " " for _ in range(40)]
        (root / "ptb" / f"ptb.{split}.txt").write_text("\n".join(lines) + "\n")
    if monkeypatch is not None:
        trust(root, monkeypatch)
    return root


def test_image_data_trains_on_the_training_split_and_says_what_it_used(tmp_path, monkeypatch):
    root = fake_datasets(tmp_path, monkeypatch=monkeypatch)
    d = realtasks.image_data("mnist", root, False, max_train=100, max_test=40)
    assert d.source == ("Trained on the MNIST training set, first 100 of its 120 images; "
                        "tested on the MNIST test set, first 40 of its 50 images; training "
                        "performance measured on the first 40 of the 100 training images")
    assert d.sizes() == {"train_items": 100, "test_items": 40, "train_eval_items": 40,
                         "val_items": 0}
    held = realtasks.image_data("mnist", root, False, max_train=100, max_test=40,
                                val_fraction=0.1)
    assert held.sizes()["train_items"] == 90 and held.sizes()["val_items"] == 10
    assert "the last 10% of the training images (10) held out" in held.source
    assert torch.equal(d.train_eval[0], d.train[0][:40])
    # standardized with the training images' own mean and spread
    assert abs(float(d.train[0].mean())) < 1e-5
    assert float(d.train[0].std()) == pytest.approx(1, rel=1e-3)
    c = realtasks.image_data("cifar", root, False, None, None)
    assert c.train[0].shape == (120, 3, 32, 32) and c.test[0].shape == (50, 3, 32, 32)
    assert c.source.startswith("CIFAR-10 is not available here; stand-in: MNIST digits")
    assert "all 120 images" in c.source and "measured on" in c.source


def test_image_data_without_the_training_split_splits_the_test_set(tmp_path, monkeypatch):
    root = fake_datasets(tmp_path, train_splits=False, monkeypatch=monkeypatch)
    d = realtasks.image_data("mnist", root, False, None, None)
    assert d.source.startswith("The MNIST training split is not available here: the 50 MNIST "
                               "test images are split at random into 40 for training and 10 "
                               "for testing. Trained on the training part, all 40 images; "
                               "tested on the test part, all 10 images")
    assert len(d.train[0]) + len(d.test[0]) == 50 and len(d.test[0]) == 10


def test_unigram_perplexity_is_add_one_smoothed_word_frequencies():
    # counts 2, 1, 0 over three words -> (3, 2, 1) / 6; targets 0 and 1
    got = realtasks.unigram_perplexity(torch.tensor([0, 0, 1]), torch.tensor([0, 1]), 3)
    assert got == pytest.approx(math.exp(-(math.log(3 / 6) + math.log(2 / 6)) / 2))


def test_lm_data_trains_on_the_ptb_training_split_with_a_unigram_baseline(tmp_path, monkeypatch):
    root = fake_datasets(tmp_path, monkeypatch=monkeypatch)
    d = realtasks.lm_data(root, False, batch=4, max_train=200, max_test=120)
    assert d.source.startswith("Trained on the PTB training split, first 200 of its 400 tokens;"
                               " tested on the PTB test split, first 120 of its 400 tokens")
    assert d.train.shape == (50, 4) and d.test.shape == (30, 4) and d.train_eval.shape[0] == 30
    want = realtasks.unigram_perplexity(d.train, d.test[1:], d.vocab)
    assert d.unigram_perplexity == pytest.approx(want) and 1 < want < 2 * d.vocab
    offline = realtasks.lm_data(fake_datasets(tmp_path / "partial", train_splits=False,
                                                       monkeypatch=monkeypatch), False)
    assert "PTB validation split (the training split is not available here)" in offline.source


def curve(model: str, width: str, split: str, k: float, bottom: float) -> pd.DataFrame:
    """A parabola f(alpha) = bottom + k alpha^2 as loss_surface would give it."""
    alphas = np.linspace(-1, 1, 11)
    return pd.DataFrame({"alpha": alphas, "loss": bottom + k * alphas ** 2,
                         "accuracy": 1 - k * alphas ** 2, "model": model, "width": width,
                         "split": split})


def test_basin_rise_is_the_largest_rise_within_the_range():
    rise = basin_rise(curve("a", "float", "train", 2.0, 0.1), 0.4)
    assert rise.rise.iloc[0] == pytest.approx(2.0 * 0.16) and rise.at_zero.iloc[0] == 0.1
    drop = basin_rise(curve("a", "float", "train", 2.0, 0.1), 0.4, "accuracy")
    assert drop.rise.iloc[0] == pytest.approx(2.0 * 0.16)  # accuracy falls by as much
    with pytest.raises(ConfigError, match="within=0.1 holds no alpha but 0"):
        basin_rise(curve("a", "float", "train", 2.0, 0.1), 0.1)


def test_findings_say_what_the_curves_show_either_way():
    # the paper's picture: training data in the sharper basin; 2 bits flatter but higher
    paper = pd.concat([curve(m, "float", "train", 2.0, 0.1) for m in "ab"]
                      + [curve(m, "float", "test", 1.0, 0.3) for m in "ab"]
                      + [curve(m, "2 bits", "train", 1.0, 0.5) for m in "ab"]
                      + [curve(m, "2 bits", "test", 0.5, 0.6) for m in "ab"])
    train_test, precision = findings(paper, 0.4, family="CNNs")
    assert train_test.startswith("CNNs, training against test data: within |alpha| <= 0.4")
    assert "in 4 of 4 (net, precision) pairs and less in 0" in train_test
    assert train_test.endswith("as the paper reads it.")
    assert "rises less than the float one in 4 of 4 (net, data split) pairs and more in 0" \
        in precision
    assert "so the basin is flatter at 2 bits;" in precision
    assert "sits higher at 2 bits in 4 and lower in 0" in precision
    # the opposite: test data in the sharper basin, 2 bits steeper and no higher
    flip = paper.assign(split=paper.split.map({"train": "test", "test": "train"}),
                        width=paper.width.map({"float": "2 bits", "2 bits": "float"}))
    train_test, precision = findings(flip, 0.4)
    assert "in 0 of 4 (net, precision) pairs and less in 4" in train_test
    assert "the opposite of the paper's reading" in train_test
    assert "steeper at 2 bits, not flatter" in precision
    assert "higher at 2 bits in 0 and lower in 4" in precision
    even = pd.concat([curve("a", w, s, 1.0, 0.2) for w in ("float", "2 bits")
                      for s in ("train", "test")])
    train_test, precision = findings(even, 0.4)
    assert "no consistent difference" in train_test
    assert "neither flatter nor steeper at 2 bits overall" in precision
