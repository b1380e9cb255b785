"""The results store: one folder per run, one JSONL file of records per test, one summary.

Records are appended and flushed item by item, so an interrupted run keeps everything it scored.
``summary.json`` is rewritten atomically after every test (write to a temporary file, then rename),
so a reader never sees half a file and a killed session still leaves the tests it finished.
"""

from __future__ import annotations

import fcntl
import json
import os
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from ..errors import DataError


def atomic_write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=2, sort_keys=False, default=str)
        fh.write("\n")
    os.replace(tmp, path)


def summary_slot(benchmark: str, model: str, ctx: int) -> str:
    """A test's place in ``summary.json`` (one summary per benchmark, model and context); not the test key
    of its records, which is what its result depends on (config/inputs.py)."""
    return f"{benchmark}/{model}/{ctx}"


class RunStore:
    """One run directory: ``records/<benchmark>/<model>-<ctx>.jsonl`` and ``summary.json``."""

    def __init__(self, root: Path, run_id: str, meta: Mapping[str, Any], part: str | None = None) -> None:
        self.dir = root / run_id
        # a pytest-xdist worker writes its own summary part; the controller merges the parts
        self.summary_name = f"summary.{part}.json" if part else "summary.json"
        self.run_id = run_id
        self.dir.mkdir(parents=True, exist_ok=True)
        self.meta = dict(meta, run_id=run_id)
        self.tests: dict[str, dict[str, Any]] = {}
        self.resumed = False
        self._repaired: set[Path] = set()
        summary = self.dir / self.summary_name
        if summary.exists():  # a resumed run keeps its first metadata and what it summarized before
            try:
                old = json.loads(summary.read_text(encoding="utf-8"))
                self.meta = {**old.get("run", {}), "resumed_at": self.meta.get("started")}
                self.meta.pop("finished", None)
                for t in old.get("tests", []):
                    self.tests[summary_slot(t["benchmark"], t["model"], t["ctx"])] = t
                self.resumed = True
            except (json.JSONDecodeError, KeyError, TypeError):
                pass
        self.write_summary()  # an unfinished run is findable (and resumable) from its first moment

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
        self.tests[summary_slot(summary["benchmark"], summary["model"], summary["ctx"])] = dict(summary)
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
