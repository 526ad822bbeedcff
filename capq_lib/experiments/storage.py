"""Where sweeps keep their trials: an Optuna storage, a lock to claim work, and heartbeats.

The default is an embedded journal file under data/ (no server). Any SQLAlchemy URL
(``postgresql://user@host/db``, ``sqlite:///file.db``, ...) given with ``--storage`` or
``$CAPQ_STORAGE`` lets workers on many machines share one study. Workers claim trials
under a storage-wide lock (a file lock, or a PostgreSQL advisory lock), so two workers
never run the same planned trial and a trial budget is never overshot; each claimed trial
carries its owner and a heartbeat, so the trials of a killed worker are found and failed
by the next worker instead of blocking the study forever.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import hashlib
import json
import os
import socket
import threading
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import optuna
import sqlalchemy
from optuna.trial import TrialState
from sqlalchemy.engine import make_url

from capq_lib.core.validate import ConfigError
from capq_lib.experiments.results import refuse_link_out, results_dir

JOURNAL_SCHEME = "journal://"
SQL_SCHEMES = ("sqlite", "postgresql", "mysql", "mariadb", "oracle", "mssql")
OWNER_KEY, BEAT_KEY = "capq:owner", "capq:heartbeat"

optuna.logging.set_verbosity(optuna.logging.WARNING)


def default_url() -> str:
    """``$CAPQ_STORAGE`` if set, else a journal file beside the results cache."""
    env = os.environ.get("CAPQ_STORAGE")
    if env:
        return env
    return JOURNAL_SCHEME + str(results_dir() / "studies.journal")


def heartbeat_grace_s() -> float:
    """How long a trial may go without a heartbeat before it counts as abandoned
    (``$CAPQ_HEARTBEAT_GRACE_S`` seconds, 300 by default)."""
    raw = os.environ.get("CAPQ_HEARTBEAT_GRACE_S", "300")
    try:
        grace = float(raw)
    except ValueError:
        grace = float("nan")
    if not 1 <= grace <= 7 * 86400:
        raise ConfigError(f"CAPQ_HEARTBEAT_GRACE_S must be a number of seconds in [1, 604800]; "
                          f"got {raw!r}")
    return grace


class JournalWarning(UserWarning):
    """The journal had to be repaired or set aside."""


def _aside(path: Path) -> Path:
    return path.with_name(f"{path.name}.{dt.datetime.now(dt.timezone.utc):%Y%m%dT%H%M%S%f}"
                          f".bad")


def repair_journal(path: Path) -> str:
    """Make ``path`` a journal Optuna can read and append to, before anyone appends: a torn
    last line (a worker killed mid-write) is cut off, a corrupt line inside is unrecoverable
    (the log is replayed in order), so the journal is moved aside and a new one starts.
    Either way the old file is kept beside it and a warning names both. Returns what was done:
    "ok", "cut" or "set aside"."""
    if not path.is_file() or path.stat().st_size == 0:
        return "ok"
    lock = optuna.storages.journal.JournalFileSymlinkLock(str(path))
    lock.acquire()  # Optuna's own append lock: no worker is in the middle of a line now
    try:
        raw = path.read_bytes()
        lines = raw.split(b"\n")
        tail = lines.pop()  # what follows the last newline: empty when the file is whole
        bad = []
        for number, line in enumerate(lines):
            try:
                json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError):
                bad.append(number)
        if not bad and not tail:
            return "ok"
        kept = _aside(path)
        torn_last = (not bad and tail) or (bad == [len(lines) - 1] and not tail)
        if not torn_last:
            os.replace(path, kept)
            warnings.warn(f"capq: the journal {path} has a corrupt line ({bad[0] + 1}) that "
                          f"is not its last; it was moved to {kept} and a new journal "
                          f"started (trials not in the results cache are run again)",
                          JournalWarning, stacklevel=3)
            return "set aside"
        good = b"".join(line + b"\n" for line in (lines[:-1] if bad else lines))
        with open(kept, "wb") as fh:
            fh.write(raw)
        tmp = path.with_name(path.name + ".repair")
        tmp.write_bytes(good)
        os.replace(tmp, path)
        warnings.warn(f"capq: the journal {path} ended in a torn line (a worker stopped while "
                      f"writing it); it was cut off, the whole file kept as {kept}",
                      JournalWarning, stacklevel=3)
        return "cut"
    finally:
        lock.release()


def journal_path(url: str) -> Path:
    """The file of a ``journal://`` storage URL."""
    return Path(url[len(JOURNAL_SCHEME):]).expanduser()


def check_url(url: object) -> str:
    """``url`` if it names a storage a sweep can use (its form only: nothing is opened), else
    a ConfigError saying what is allowed. A notebook's ``storage`` parameter is checked with
    this when its chapter is configured, before any training."""
    if not isinstance(url, str) or not url.strip():
        raise ConfigError(f"storage must be a SQLAlchemy URL (postgresql://user@host/db, "
                          f"sqlite:///path.db, ...) or journal:///path, or None; got {url!r}")
    if url.startswith(JOURNAL_SCHEME):
        if not journal_path(url).name:
            raise ConfigError(f"storage {url!r}: a journal URL needs a file path, "
                              f"e.g. journal:///abs/path/capq.journal")
        return url
    try:
        parsed = make_url(url)
    except Exception as err:  # noqa: BLE001 - sqlalchemy raises several kinds
        raise ConfigError(
            f"storage must be a SQLAlchemy URL (postgresql://user@host/db, "
            f"sqlite:///path.db, ...) or journal:///path; got {url!r}") from err
    if parsed.get_backend_name() not in SQL_SCHEMES:
        raise ConfigError(f"storage must be a SQLAlchemy URL of one of "
                          f"{', '.join(SQL_SCHEMES)}, or journal:///path; got {url!r}")
    if parsed.get_backend_name() == "sqlite" and parsed.database in (None, "", ":memory:"):
        raise ConfigError(f"storage {url!r} is an in-memory database: a sweep would "
                          f"keep nothing; name a file (sqlite:///path/capq.db)")
    return url


def replayable(path: Path, backend: optuna.storages.journal.JournalFileBackend
               ) -> optuna.storages.JournalStorage:
    """The journal's storage, once Optuna has replayed every line. A line that is valid JSON
    but no operation Optuna knows (or one it cannot apply) stops the replay; such a journal
    cannot be mended line by line (each operation builds on those before it), so it is set
    aside (kept) with a warning and a new one starts: the search then runs again, to the same
    figures, and nothing needs editing by hand."""
    try:
        return optuna.storages.JournalStorage(backend)
    except Exception as err:  # noqa: BLE001 - Optuna's replay asserts, indexes, looks up
        kept = _aside(path)
        os.replace(path, kept)
        warnings.warn(f"capq: the journal {path} holds a line that is no Optuna operation "
                      f"({type(err).__name__}: {str(err)[:80]}); it was moved to {kept} and a "
                      f"new journal started (trials not in the results cache are run again)",
                      JournalWarning, stacklevel=3)
        return optuna.storages.JournalStorage(
            optuna.storages.journal.JournalFileBackend(str(path)))


class Storage:
    """An Optuna storage plus the lock that serializes claims on it."""

    def __init__(self, url: str | None = None) -> None:
        self.url = check_url(url or default_url())
        heartbeat_grace_s()  # a bad $CAPQ_HEARTBEAT_GRACE_S stops a worker before it claims
        self._lock_path: Path | None = None
        self._engine = None
        if self.url.startswith(JOURNAL_SCHEME):
            path = journal_path(self.url)
            try:
                refuse_link_out(path, results_dir())
                path.parent.mkdir(parents=True, exist_ok=True)
                repair_journal(path)
                backend = optuna.storages.journal.JournalFileBackend(str(path))
                self.optuna = replayable(path, backend)
            except OSError as err:
                raise ConfigError(f"storage {self.url!r} is unreachable: {err}") from err
            self._lock_path = path.with_name(path.name + ".claim-lock")  # not Optuna's .lock
            return
        self.optuna = self._rdb()

    def _rdb(self) -> optuna.storages.RDBStorage:
        parsed = make_url(self.url)
        storage = None
        for attempt in range(5):  # workers starting together race to create the schema
            try:
                with self._schema_lock(parsed):
                    storage = optuna.storages.RDBStorage(
                        self.url, engine_kwargs={"pool_pre_ping": True})
                break
            except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError):
                time.sleep(0.5 * (attempt + 1))
            except (sqlalchemy.exc.SQLAlchemyError, ImportError, OSError) as err:
                reason = str(err).strip().splitlines()[0] if str(err).strip() else repr(err)
                raise ConfigError(f"storage {self.url!r} is unreachable: {reason}") from err
        if storage is None:
            raise ConfigError(f"storage {self.url!r}: could not create Optuna's tables")
        if parsed.get_backend_name() == "sqlite":
            self._lock_path = Path((parsed.database or "capq.db") + ".claim-lock")
        else:
            self._engine = storage.engine
        return storage

    @contextlib.contextmanager
    def _schema_lock(self, parsed) -> Iterator[None]:
        """On PostgreSQL, one worker at a time creates or checks Optuna's tables."""
        if parsed.get_backend_name() != "postgresql":
            yield
            return
        engine = sqlalchemy.create_engine(self.url, poolclass=sqlalchemy.pool.NullPool)
        try:
            with engine.connect() as conn:
                conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(7702413)"))
                try:
                    yield
                finally:
                    conn.execute(sqlalchemy.text("SELECT pg_advisory_unlock(7702413)"))
        finally:
            engine.dispose()

    @contextlib.contextmanager
    def lock(self, name: str = "capq-claim") -> Iterator[None]:
        """Hold the storage-wide claim lock (released even if the process dies)."""
        if self._lock_path is not None:
            self._lock_path.parent.mkdir(parents=True, exist_ok=True)
            with open(self._lock_path, "a") as fh:
                fcntl.flock(fh, fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(fh, fcntl.LOCK_UN)
            return
        key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)
        with self._engine.connect() as conn:
            dialect = self._engine.dialect.name
            if dialect == "postgresql":
                conn.execute(sqlalchemy.text("SELECT pg_advisory_lock(:k)"), {"k": key})
                release = sqlalchemy.text("SELECT pg_advisory_unlock(:k)")
            elif dialect in ("mysql", "mariadb"):
                conn.execute(sqlalchemy.text("SELECT GET_LOCK(:k, -1)"), {"k": name})
                release = sqlalchemy.text("SELECT RELEASE_LOCK(:k)")
            else:
                raise ConfigError(f"storage {self.url!r}: claims need PostgreSQL, MySQL, "
                                  f"SQLite or a journal file")
            try:
                yield
            finally:
                conn.execute(release, {"k": key if dialect == "postgresql" else name})
                conn.commit()


def owner() -> dict:
    return {"host": socket.gethostname(), "pid": os.getpid()}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def is_abandoned(trial: optuna.trial.FrozenTrial, now: float | None = None) -> bool:
    """A RUNNING trial whose worker died: its process is gone, or its heartbeat is stale."""
    if trial.state != TrialState.RUNNING:
        return False
    who = trial.system_attrs.get(OWNER_KEY)
    beat = trial.system_attrs.get(BEAT_KEY)
    if who is None or beat is None:
        return False
    if who["host"] == socket.gethostname() and not _pid_alive(int(who["pid"])):
        return True
    return (now or time.time()) - float(beat) > heartbeat_grace_s()


def fail_abandoned(study: optuna.Study) -> list[int]:
    """Mark the trials of dead workers FAIL so that their work is claimed again."""
    failed = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if is_abandoned(t):
            study.tell(t.number, state=TrialState.FAIL)
            failed.append(t.number)
    return failed


def mark_claimed(study: optuna.Study, trial: optuna.trial.Trial) -> None:
    study._storage.set_trial_system_attr(trial._trial_id, OWNER_KEY, owner())
    study._storage.set_trial_system_attr(trial._trial_id, BEAT_KEY, time.time())


class Heartbeat:
    """Refreshes the heartbeat of the trials this worker is running, from a thread."""

    def __init__(self, storage: optuna.storages.BaseStorage, trial_ids: list[int],
                 interval_s: float | None = None) -> None:
        self.storage, self.trial_ids = storage, trial_ids
        self.interval = interval_s or max(0.5, min(30.0, heartbeat_grace_s() / 4))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            for tid in self.trial_ids:
                with contextlib.suppress(Exception):  # a finished trial refuses updates
                    self.storage.set_trial_system_attr(tid, BEAT_KEY, time.time())

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
