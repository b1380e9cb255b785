"""The results store: one JSONL file of records per test, and the run's summary as it is written.

Records are appended and flushed item by item, so an interrupted run keeps everything it scored.
``summary.json`` is rewritten atomically after every test (write to a temporary file, then rename),
so a reader never sees half a file and a killed session still leaves the tests it finished. Which
folder a run writes, its lock, and every read of a summary belong to ``runfolder.RunFolder``.
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import DataError

SUMMARY = "summary.json"


def atomic_write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2, sort_keys=False, default=str)
        fh.write("\n")
    os.replace(tmp, path)


def summary_name(part: str | None) -> str:
    """``summary.json``, or a pytest-xdist worker's own part, ``summary.<worker>.json``."""
    return f"summary.{part}.json" if part else SUMMARY


def slot_of(test: Mapping[str, Any]) -> str:
    """A test's place in a summary, ``benchmark/model/ctx``: one entry per place."""
    return f"{test['benchmark']}/{test['model']}/{test['ctx']}"


@dataclass(frozen=True)
class Summary:
    """What a ``summary.json`` holds: the run's metadata and one entry per test."""

    run: Mapping[str, Any] = field(default_factory=dict)
    tests: Sequence[Mapping[str, Any]] = ()


class RunStore:
    """One open run directory: ``records/<benchmark>/<model>-<ctx>.jsonl`` and its summary file.

    Made by ``RunFolder.open`` (or its merges), which reads the ``earlier`` summary a resumed run
    continues: that run keeps its first metadata and what it summarized before.
    """

    def __init__(self, folder: Path, meta: Mapping[str, Any], part: str | None = None,
                 earlier: Summary | None = None) -> None:
        self.dir = folder
        # a pytest-xdist worker writes its own summary part; the controller merges the parts
        self.summary_name = summary_name(part)
        self.run_id = folder.name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.meta = dict(meta, run_id=self.run_id)
        self.tests: dict[str, dict[str, Any]] = {}
        self.resumed = earlier is not None
        self._repaired: set[Path] = set()
        if earlier is not None:
            self.meta = {**earlier.run, "resumed_at": self.meta.get("started")}
            self.meta.pop("finished", None)
            self.tests = {slot_of(t): dict(t) for t in earlier.tests}

    def records_path(self, benchmark: str, model: str, ctx: int) -> Path:
        return self.dir / "records" / benchmark / f"{model}-{ctx}.jsonl"

    def append(self, benchmark: str, model: str, ctx: int, record: Mapping[str, Any]) -> None:
        path = self.records_path(benchmark, model, ctx)
        path.parent.mkdir(parents=True, exist_ok=True)
        if path not in self._repaired:
            _drop_torn_tail(path)
            self._repaired.add(path)
        with path.open("a", encoding="utf-8") as fh:
            fh.write(json.dumps(record, ensure_ascii=False, default=str) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def resume_records(self, benchmark: str, model: str, ctx: int, key: str) -> list[dict[str, Any]]:
        """Records a killed run already wrote for this test, if made with the same ``key``.

        Records made with another key (another model revision, protocol, data file) are moved aside
        to ``*.stale-N.jsonl`` and the test starts over: stale records are never reused.
        """
        path = self.records_path(benchmark, model, ctx)
        rows = list(iter_records(path))
        if rows and any(r.get("test_key") != key for r in rows):
            n = 1
            while path.with_suffix(f".stale-{n}.jsonl").exists():
                n += 1
            path.rename(path.with_suffix(f".stale-{n}.jsonl"))
            return []
        latest: dict[str, dict[str, Any]] = {}
        for r in rows:
            latest[str(r["id"])] = r
        return list(latest.values())

    def finish(self) -> None:
        import time

        self.meta["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        self.write_summary()

    def put_test(self, summary: Mapping[str, Any]) -> None:
        self.tests[slot_of(summary)] = dict(summary)
        self.write_summary()

    def write_summary(self) -> None:
        atomic_write_json(self.dir / self.summary_name, {"run": self.meta, "tests": list(self.tests.values())})


class RunLock:
    """An OS lock on ``RUN_DIR/.lock``, held by the one session that writes the run folder.

    ``flock`` ties the lock to the open file, so the kernel drops it when the holder dies however it
    dies (SIGKILL, a lost node's process): a killed run is resumable at once, a running one never
    joined. The holder's pid is written into the file for the message of whoever is refused.
    pytest-xdist workers write into their controller's folder under the controller's lock.
    """

    def __init__(self, fd: int) -> None:
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, folder: Path) -> RunLock | None:
        """The lock of ``folder``, or None when another session holds it."""
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        return cls(fd)

    @staticmethod
    def holder(folder: Path) -> str | None:
        """The pid the holder wrote, if any."""
        try:
            return (folder / ".lock").read_text(encoding="utf-8").strip() or None
        except OSError:
            return None

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def _drop_torn_tail(path: Path) -> None:
    """A kill mid-write can leave half a line; cut it before appending, or the next record fuses with it."""
    if not path.exists() or path.stat().st_size == 0:
        return
    with path.open("rb+") as fh:
        fh.seek(-1, os.SEEK_END)
        if fh.read(1) == b"\n":
            return
        fh.seek(0)
        data = fh.read()
        fh.truncate(data.rfind(b"\n") + 1)


def iter_records(path: Path) -> Iterator[dict[str, Any]]:
    """Records of one file; a torn last line (a kill mid-write) is skipped, any other bad line named."""
    if not path.exists():
        return
    lines = path.read_text(encoding="utf-8").splitlines()
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            yield json.loads(line)
        except json.JSONDecodeError:
            if lineno == len(lines):
                continue
            raise DataError(f"{path}:{lineno}: corrupt record (not valid JSON); delete that line and rerun "
                            "to recompute the item") from None


def record_load(store_of: Callable[[], RunStore]) -> Callable[[dict[str, Any]], None]:
    """An ``EngineManager`` callback: each load into the run's metadata, ``run.engine_loads``."""

    def on_load(load: dict[str, Any]) -> None:
        store = store_of()
        store.meta.setdefault("engine_loads", []).append(load)
        store.write_summary()

    return on_load
