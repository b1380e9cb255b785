"""The run folder, owned by one class: which folder a session writes, its lock, xdist workers'
adoption of it, every read of a summary, and the one rule that merges summaries.

A run folder is ``<results>/<run-id>/``: ``records/`` and the summary (``store.RunStore``),
``logs/``, ``.lock`` while a session holds it, and under pytest-xdist one ``summary.<worker>.json``
per worker until the controller folds them into ``summary.json``.
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import LcError
from .store import SUMMARY, RunLock, RunStore, Summary, slot_of, summary_name


class SummaryUnreadable(LcError):
    """A summary file that is missing, cannot be read, or holds no run summary; names the file."""

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"{path} {problem}")
        self.path = path


class DuplicateTest(LcError):
    """Two parts or shards both hold one test (``merge_tests``)."""

    def __init__(self, slot: str, first: str, second: str) -> None:
        super().__init__(f"test {slot} is in both {first} and {second}")
        self.slot, self.first, self.second = slot, first, second


def merge_tests(earlier: Iterable[Mapping[str, Any]],
                sources: Iterable[tuple[str, Iterable[Mapping[str, Any]]]]) -> dict[str, dict[str, Any]]:
    """The one merge rule, for xdist workers' parts (``RunFolder.merge_parts``) and for shards
    (``RunFolder.join``, ``python -m lcplugin merge``).

    Each test has one source: two parts or shards that both hold a test are refused (``DuplicateTest``,
    naming both), since one of them would silently win and which one would be chance. Entries the
    run's own ``summary.json`` already held (``earlier``: an earlier session of a resumed run) are
    replaced, in place, by a source's newer summary of the same test.
    """
    tests = {slot_of(t): dict(t) for t in earlier}
    owner: dict[str, str] = {}
    for name, entries in sources:
        for t in entries:
            slot = slot_of(t)
            if slot in owner:
                raise DuplicateTest(slot, owner[slot], name)
            tests[slot], owner[slot] = dict(t), name
    return tests


def _read(path: Path) -> Summary:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise SummaryUnreadable(path, f"cannot be read ({exc.strerror or exc})") from None
    except ValueError as exc:
        raise SummaryUnreadable(path, f"is not valid JSON ({getattr(exc, 'msg', exc)})") from None
    run, tests = (doc.get("run", {}), doc.get("tests", [])) if isinstance(doc, dict) else (None, None)
    if not isinstance(run, dict) or not isinstance(tests, list) or not all(isinstance(t, dict) for t in tests):
        raise SummaryUnreadable(path, "is not a run summary (an object with run and tests)")
    return Summary(run, tuple(tests))


def _unfinished(run: Mapping[str, Any], settings_hash: str) -> bool:
    return run.get("settings_hash") == settings_hash and not run.get("finished")


class RunFolder:
    """This session's run folder, chosen, locked, written and merged here; and the one reader of
    any run folder's summary (``read``, ``summaries_under``, ``unfinished``).

    The folder is chosen without being created (a session that runs no lcplugin test leaves none):
    an xdist worker adopts its controller's; else ``--lc-resume RUN_ID``; else the newest unfinished
    run with these settings that no live session holds (locked as it is chosen); else a new name.
    The session that writes it holds its lock (``RunLock``) from then to its end; workers write
    their own summary part under their controller's lock.
    """

    def __init__(self, root: Path, settings_hash: str, *, resume: str | None = None,
                 adopt: tuple[str, str] | None = None) -> None:
        """``adopt``: (run id, worker id) handed to a pytest-xdist worker by its controller."""
        self.root = root
        self.settings_hash = settings_hash
        self.resume = resume
        self.worker: str | None = adopt[1] if adopt else None
        self.summaries: list[dict[str, Any]] = []  # this session's tests, as the terminal shows them
        self._run_id: str | None = adopt[0] if adopt else None
        self._lock: RunLock | None = None
        self._store: RunStore | None = None
        self._folded = False

    @property
    def adopted(self) -> bool:
        """An xdist worker's: it writes into its controller's folder and never locks it."""
        return self.worker is not None

    # -- choose and lock -------------------------------------------------------------------------

    def claim_resume(self) -> None:
        """``--lc-resume RUN_ID``: take that folder's lock now, at configure time, so that a missing
        folder or one another session holds is a usage error before anything runs."""
        run_id = self.resume
        if not run_id or self._lock is not None or self.adopted:
            return
        folder = self.root / run_id
        if not folder.is_dir():
            raise LcError(f"--lc-resume {run_id}: no such run folder under {self.root}")
        self._lock = RunLock.acquire(folder)
        if self._lock is None:
            pid = RunLock.holder(folder)
            raise LcError(f"--lc-resume {run_id}: another session{f' (pid {pid})' if pid else ''} holds that run "
                          f"folder ({folder / '.lock'}); wait for it to end, or drop --lc-resume to start a new run")

    @property
    def run_id(self) -> str:
        """The run's folder name, chosen on first use (see the class)."""
        if self._run_id is None:
            if self.resume:
                self.claim_resume()
                self._run_id = self.resume
            else:
                self._run_id = self._claim_unfinished() or self._new_run_id()
        return self._run_id

    @property
    def path(self) -> Path:
        return self.root / self.run_id

    def _claim_unfinished(self) -> str | None:
        for run_id in self.unfinished(self.root, self.settings_hash):
            self._lock = RunLock.acquire(self.root / run_id)
            if self._lock is not None and self._still_unfinished(run_id):
                return run_id  # (its holder may have finished it between the look and the lock)
            if self._lock is not None:
                self._lock.release()
                self._lock = None
        return None

    def _new_run_id(self) -> str:
        base = time.strftime("%Y%m%d-%H%M%S") + "-" + self.settings_hash[:6]
        run_id, n = base, 1
        while (self.root / run_id).exists():  # two sessions started in the same second get two folders
            n += 1
            run_id = f"{base}-{n}"
        return run_id

    def hold(self) -> None:
        """Create this run's folder and lock it for the session's life: at the first test that records
        something, or (pytest-xdist) in the controller once its workers are known to run lcplugin tests.
        Summary parts a killed xdist session left are folded into ``summary.json`` now, under the lock,
        so that a worker's part holds only what that worker ran in this session."""
        if self.adopted:
            return
        folder = self.path  # chosen first: choosing an unfinished run takes its lock
        if self._lock is None:
            folder.mkdir(parents=True, exist_ok=True)
            self._lock = RunLock.acquire(folder)
            if self._lock is None:
                raise LcError(f"run folder {folder}: another session took it at the same moment; run again")
        if not self._folded:
            self._folded = True
            if self._parts():
                self._fold()

    def release(self) -> None:
        """Let go of the run folder (the session is over): another session may continue it now."""
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    # -- write -----------------------------------------------------------------------------------

    def open(self, meta: Callable[[], Mapping[str, Any]]) -> RunStore:
        """The run's store, made on first use (the first test that records something): the folder
        chosen, held, and its summary written at once, so an unfinished run is findable (and
        resumable) from its first moment. ``meta``: a new run's metadata; a resumed run keeps its own."""
        if self._store is None:
            self.hold()
            part = summary_name(self.worker)
            store = RunStore(self.path, meta(), part=self.worker, earlier=self._earlier(part))
            if store.resumed and store.meta.get("settings_hash") not in (None, self.settings_hash):
                raise LcError(f"--lc-resume {self.run_id}: that run was made with other settings "
                              f"(hash {store.meta.get('settings_hash')}, now {self.settings_hash}); "
                              "resume it with the same options, or start a new run")
            store.write_summary()
            self._store = store
        return self._store

    @property
    def opened(self) -> bool:
        return self._store is not None

    @property
    def store(self) -> RunStore:
        if self._store is None:
            raise RuntimeError("RunFolder.store before open() or merge_parts()")
        return self._store

    def put_test(self, summary: dict[str, Any]) -> None:
        """A test's summary, into the run's summary file and this session's list."""
        self.store.put_test(summary)
        self.summaries.append(summary)

    def finish(self) -> None:
        """The session went through (passed or failed): the run is finished, never continued."""
        if self._store is not None:
            self._store.finish()

    # -- merge -----------------------------------------------------------------------------------

    def merge_parts(self) -> RunStore | None:
        """The xdist controller, at the session's end: fold the workers' parts into ``summary.json``,
        as if one process had run; None when no worker made the folder."""
        if not self.path.is_dir():
            return None
        self._store = self._fold()
        self.summaries.extend(self._store.tests.values())
        return self._store

    def _parts(self) -> list[Path]:
        return sorted(self.path.glob("summary.*.json"))

    def _fold(self) -> RunStore:
        """Parts into ``summary.json`` under ``merge_tests``: their tests, their engine loads, and (for a
        new run) the first worker's metadata. A part that cannot be read is left in place."""
        parts: list[tuple[Path, Summary]] = []
        for path in self._parts():
            try:
                parts.append((path, _read(path)))
            except SummaryUnreadable:
                continue
        first = min((s.run for _, s in parts), key=lambda m: str(m.get("started")), default={})
        store = RunStore(self.path, {k: v for k, v in first.items() if k != "engine_loads"},
                         earlier=self._earlier(SUMMARY))
        try:
            store.tests = merge_tests(store.tests.values(), [(p.name, s.tests) for p, s in parts])
        except DuplicateTest as exc:
            raise LcError(f"run folder {self.path}: {exc} (two workers summarized it); both parts are kept: "
                          f"delete the one to drop, then continue with --lc-resume {self.path.name}") from None
        loads = store.meta.setdefault("engine_loads", [])
        for _, s in parts:
            loads.extend(s.run.get("engine_loads", []))
        store.write_summary()
        for path, _ in parts:
            path.unlink()
        return store

    def earlier_test(self, slot: str) -> Mapping[str, Any] | None:
        """What an earlier session of this run summarized for ``slot``: the store's copy, else the folder's
        ``summary.json`` (an xdist worker's store holds its own part only; the controller folded the earlier
        parts into ``summary.json`` before the workers started). A resumed test's session figures come from it."""
        if self._store is not None and slot in self._store.tests:
            return self._store.tests[slot]
        earlier = self._earlier(SUMMARY)
        return next((t for t in earlier.tests if slot_of(t) == slot), None) if earlier else None

    def _earlier(self, name: str) -> Summary | None:
        """The summary a resumed run continues, if this folder has a readable one."""
        try:
            earlier = _read(self.path / name)
            for t in earlier.tests:
                slot_of(t)
        except (SummaryUnreadable, KeyError):
            return None
        return earlier

    @classmethod
    def join(cls, shards: Sequence[Path], out: Path) -> Summary:
        """Shards (run folders made on different nodes, one model each, say) into one run at ``out``.

        Runs whose settings differ are refused (their figures are not comparable), and so is a test
        present in two shards (``merge_tests``). Records and logs are copied; the shards are kept."""
        docs = []
        for run in shards:
            try:
                docs.append((run, cls.read(run)))
            except SummaryUnreadable as exc:
                raise LcError(f"merge: {exc}; pass run folders (results/<run-id>)") from None
        hashes = {s.run.get("settings_hash") for _, s in docs}
        if len(hashes) != 1:
            detail = ", ".join(f"{run.name}: {s.run.get('settings_hash')}" for run, s in docs)
            raise LcError(f"merge: the runs were made with different settings ({detail}); merge only shards of one run")
        try:
            tests = merge_tests((), [(str(run), s.tests) for run, s in docs])
        except DuplicateTest as exc:
            raise LcError(f"merge: {exc}; remove it from one shard") from None
        out.mkdir(parents=True, exist_ok=True)
        for run, _ in docs:
            for sub in ("records", "logs"):
                if (run / sub).is_dir():
                    shutil.copytree(run / sub, out / sub, dirs_exist_ok=True)
        store = RunStore(out, {**docs[0][1].run, "merged_from": [str(run) for run, _ in docs],
                               "merged": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
        store.tests = tests
        store.write_summary()
        return Summary(store.meta, tuple(tests.values()))

    # -- read any run folder ---------------------------------------------------------------------

    @staticmethod
    def read(folder: Path) -> Summary:
        """A run folder's summary; ``SummaryUnreadable`` (one line naming the file) when it is missing,
        unreadable or not a summary."""
        return _read(folder / SUMMARY)

    @staticmethod
    def summaries_under(root: Path) -> Iterator[tuple[Path, Summary]]:
        """Each run folder under ``root`` with a readable summary, newest first (run ids begin with
        their time); folders without one (being made, or not a run) are passed over."""
        if not root.is_dir():
            return
        for folder in sorted((p for p in root.iterdir() if p.is_dir()), reverse=True):
            try:
                yield folder, RunFolder.read(folder)
            except SummaryUnreadable:
                continue

    @staticmethod
    def unfinished(root: Path, settings_hash: str) -> list[str]:
        """Runs under ``root`` with these settings that did not finish (killed, interrupted, or still
        running: the caller tells those apart by their lock), newest first."""
        return [folder.name for folder, s in RunFolder.summaries_under(root) if _unfinished(s.run, settings_hash)]

    def _still_unfinished(self, run_id: str) -> bool:
        try:
            return _unfinished(self.read(self.root / run_id).run, self.settings_hash)
        except SummaryUnreadable:
            return False
