"""Runs that cannot mix: a running session's folder is locked, and data is keyed by its content.

A second session with the same settings must not join the run folder of one still running (both
would rewrite summary.json), and a data folder whose files change must not reuse old records.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest

from lcplugin.config.session import LcSession
from lcplugin.config.settings import Settings

pytest_plugins = ["pytester"]

TESTS = """
import fcntl, os, pytest

@pytest.mark.lc_benchmark("longbench_v2")
def test_lb2(lc_case, lc_run):
    lc_run(lc_case)

def test_run_folder_is_locked_by_this_session(lc_run_folder):
    lock = lc_run_folder.path / ".lock"
    if os.environ.get("LC_TEST_STOP"):
        pytest.exit("interrupted, as a killed session would be", returncode=2)
    assert lock.read_text().strip() == str(os.getpid())
    with open(lock) as fh, pytest.raises(BlockingIOError):
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
"""

# another process holding a run folder's lock: a session still running in another terminal or job
HOLDER = """
import fcntl, os, sys
fh = open(sys.argv[1], "a+")
fcntl.flock(fh, fcntl.LOCK_EX)
fh.truncate(0); fh.write(str(os.getpid())); fh.flush()
print("held", flush=True)
sys.stdin.read()
"""


def run(pytester: pytest.Pytester, *args: str) -> pytest.RunResult:
    # in a subprocess: an in-process run would drop torch from sys.modules afterwards and the next
    # run's import of it crashes the interpreter
    return pytester.runpytest_subprocess("-p", "no:cacheprovider", "--lc-results", str(pytester.path / "results"),
                              "--lc-baselines", str(pytester.path / "baselines"), "--lc-models", "tiny-llama",
                              "--lc-ctx", "1k", "--lc-limit", "1", *args, timeout=300)


def run_folders(pytester: pytest.Pytester) -> list[Path]:
    return sorted(p for p in (pytester.path / "results").iterdir() if p.is_dir())


@pytest.mark.slow
def test_a_second_session_does_not_join_a_running_one(pytester: pytest.Pytester,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import fcntl

    pytester.makepyfile(test_lb2=TESTS)
    monkeypatch.setenv("LC_TEST_STOP", "1")
    first = run(pytester)  # leaves an unfinished run, which a later session would continue
    assert first.ret == pytest.ExitCode.INTERRUPTED
    monkeypatch.delenv("LC_TEST_STOP")
    [unfinished] = run_folders(pytester)
    before = (unfinished / "summary.json").read_text()
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(unfinished / ".lock")],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        second = run(pytester)  # same settings, while the other session holds the folder
        folders = run_folders(pytester)
        assert len(folders) == 2, folders
        second.assert_outcomes(passed=2)
        assert (unfinished / "summary.json").read_text() == before
        [own] = [f for f in folders if f != unfinished]
        assert (own / "records" / "longbench_v2" / "tiny-llama-1024.jsonl").is_file()
        explicit = run(pytester, "--lc-resume", unfinished.name)
        assert explicit.ret == pytest.ExitCode.USAGE_ERROR
        explicit.stderr.fnmatch_lines([f"ERROR: --lc-resume {unfinished.name}: another session (pid {holder.pid}) "
                                       "holds that run folder*"])
    finally:
        holder.communicate("", timeout=30)
    with open(own / ".lock") as fh:  # the second session let go of its folder when it ended
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    again = run(pytester)  # nobody holds the unfinished run now: it is continued
    again.assert_outcomes(passed=2)
    assert run_folders(pytester) == folders


def _session(tmp_path: Path, **data: Path) -> LcSession:
    return LcSession(Settings(data={k: str(v) for k, v in data.items()}), tmp_path)


def _digest(tmp_path: Path, benchmark: str, key: str, folder: Path) -> str:
    session = _session(tmp_path, **{key: folder})  # a new session: no digest remembered
    spec = next(s for s in session.specs.values() if s.name == "tiny-llama")
    return session.data_source(benchmark, spec).digest


def test_a_data_folder_is_keyed_by_the_content_of_the_files_read(tmp_path: Path) -> None:
    books = tmp_path / "books"
    books.mkdir()
    (books / "a.txt").write_text("It was a dark and stormy night.")
    first = _digest(tmp_path, "pg19", "pg19", books)
    (books / "a.txt").write_text("It was a bright cold day in April.")
    changed = _digest(tmp_path, "pg19", "pg19", books)
    assert changed != first
    (books / "a.txt").write_text("It was a dark and stormy night.")
    os.utime(books / "a.txt", (1, 1))
    assert _digest(tmp_path, "pg19", "pg19", books) == first  # content, not time stamps
    (books / "notes.md").write_text("not a book: PG-19 reads *.txt only")
    assert _digest(tmp_path, "pg19", "pg19", books) == first
    (books / "a.txt").rename(books / "b.txt")
    assert _digest(tmp_path, "pg19", "pg19", books) != first  # names count: they are the item ids


def test_ada_leval_tasks_are_keyed_by_their_own_files(tmp_path: Path) -> None:
    ada = tmp_path / "ada"
    ada.mkdir()
    (ada / "stackselect_1k.json").write_text("[]")
    (ada / "textsort_1k.json").write_text("[]")
    best = _digest(tmp_path, "ada_leval_bestanswer", "ada_leval", ada)
    tsort = _digest(tmp_path, "ada_leval_tsort", "ada_leval", ada)
    (ada / "stackselect_2k.json").write_text("[]")
    assert _digest(tmp_path, "ada_leval_bestanswer", "ada_leval", ada) != best
    assert _digest(tmp_path, "ada_leval_tsort", "ada_leval", ada) == tsort


def test_hub_data_is_keyed_by_the_revision_it_resolves_to(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    refs = tmp_path / "hub" / "datasets--THUDM--LongBench-v2" / "refs"
    refs.mkdir(parents=True)

    def digest() -> str:
        session = _session(tmp_path)
        spec = dataclasses.replace(next(s for s in session.specs.values() if s.name == "tiny-llama"),
                                   default_data="hub")
        return session.data_source("longbench_v2", spec).digest

    unresolved = digest()  # offline, nothing cached: the requested revision alone
    assert unresolved == "hub:THUDM/LongBench-v2@main"
    (refs / "main").write_text("a" * 40)
    old = digest()
    assert old == "hub:THUDM/LongBench-v2@main:" + "a" * 40
    (refs / "main").write_text("b" * 40)  # main moved on the hub, and the cache followed
    assert digest() != old


def test_a_generated_benchmark_needs_no_data_for_a_real_model(tmp_path: Path) -> None:
    # RULER generates its items: on a model whose data default is the hub (every real spec) its noise
    # tasks ran nowhere ("pass --lc-data ruler_niah_single_1=PATH ... needs the datasets package"), a key
    # --lc-data refuses; the essay tasks read the shared texts by default, or say how to give a haystack
    from lcplugin.config.session import Case
    from lcplugin.plugin.caches import SessionCaches
    from lcplugin.plugin.runner import skip_reason

    session = _session(tmp_path)
    spec = dataclasses.replace(next(s for s in session.specs.values() if s.name == "tiny-llama"), default_data="hub")
    source = session.data_source("ruler_niah_single_1", spec)
    assert source.kind == "generated" and "hub" not in source.digest
    assert skip_reason(Case("ruler_niah_single_1", spec, 1024), session, SessionCaches()) is None
    essay = skip_reason(Case("ruler_niah_single_2", spec, 1024), session, SessionCaches())
    assert essay is None or "--lc-data ruler_haystack=PATH" in essay
    # data a benchmark does read names the key --lc-data takes (both Ada-LEval tasks read one folder)
    ada = skip_reason(Case("ada_leval_tsort", spec, 1024), session, SessionCaches())
    assert ada is not None and "--lc-data ada_leval=" in ada


def test_the_run_names_a_revision_whose_tracked_files_changed_as_dirty(tmp_path: Path) -> None:
    # the H200 runs of 2026-12-01 recorded git_revision dce49ee while the working tree the device received carried
    # four later commits' code: a run must not name code it did not run
    from lcplugin.config.session import _git_revision

    def git(*args: str) -> None:
        subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=tmp_path, check=True,
                       capture_output=True)

    git("init", "-q")
    (tmp_path / "code.py").write_text("x = 1\n")
    git("add", "code.py")
    git("commit", "-qm", "one")
    clean = _git_revision(tmp_path)
    assert clean and not clean.endswith("-dirty")
    (tmp_path / "notes.txt").write_text("untracked files are not the code that ran\n")
    assert _git_revision(tmp_path) == clean
    (tmp_path / "code.py").write_text("x = 2\n")
    assert _git_revision(tmp_path) == f"{clean}-dirty"
