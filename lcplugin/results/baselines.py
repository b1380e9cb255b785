"""Baselines and the regression gate.

``baselines/<model>.json`` holds, per ``<benchmark>/<ctx>``, the counts a statistical test needs
(n, correct, nulls), each item's outcome as its benchmark gives it (``Benchmark.outcomes``: right or
wrong, or a number such as PG-19's per-window bits per byte), the machine, and the settings that
decide quality. A test fails only when its figure is worse than the baseline's by more
than chance explains at level ``alpha`` (default 0.05), one-sided. A fixed tolerance would be flaky
at small n and blind at large n. Runs made under other quality settings are not compared at all:
the gate refuses, naming each difference, because a test could only measure the settings' effect.
Baselines are parsed as JSON data, never executed or unpickled.
"""

from __future__ import annotations

import datetime as _dt
import fcntl
import json
from collections.abc import Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..benchmarks.base import Measure, Outcome
from ..config.contexts import ctx_label
from ..errors import LcError
from . import figures
from .stats import fisher_greater, fisher_less, mcnemar_worse, paired_t_greater, welch_t_greater
from .store import atomic_write_json

FORMAT = "lcplugin-baseline"
VERSION = 2  # 2: one "outcomes" object per entry (1 had "items", or PG-19's "windows", and a settings hash)
DEFAULT_ALPHA = 0.05


def entry_key(benchmark: str, ctx: int) -> str:
    return f"{benchmark}/{ctx_label(ctx)}"


def baseline_path(folder: Path, model: str) -> Path:
    return folder / f"{model}.json"


def load(path: Path) -> dict[str, Any] | None:
    """The baseline document, None if absent; an old or foreign format is a clear error."""
    if not path.exists():
        return None
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise LcError(f"baseline {path}: not valid JSON (line {exc.lineno}: {exc.msg}); fix it or re-record "
                      "with --lc-update-baselines") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise LcError(f"baseline {path}: not an lcplugin baseline (field 'format' should be {FORMAT!r}); "
                      "re-record it with --lc-update-baselines")
    if doc.get("version") != VERSION:
        raise LcError(f"baseline {path}: format version {doc.get('version')!r} is not supported (expected "
                      f"{VERSION}); re-record it with --lc-update-baselines")
    if not isinstance(doc.get("entries"), dict):
        raise LcError(f"baseline {path}: field 'entries' is missing or not an object; re-record it with "
                      "--lc-update-baselines")
    return doc


class BaselineMachineWarning(UserWarning):
    """The baseline was recorded on another machine: its efficiency figures were not compared."""


@dataclass
class Verdict:
    baseline: str  # path, for messages
    entry: Mapping[str, Any] | None
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # shown as pytest warnings; never fail a test
    refused: bool = False  # the baseline was recorded under other settings: nothing was compared
    current_accuracy: float | None = None

    @property
    def ok(self) -> bool:
        return not self.failures

    @property
    def status(self) -> str:
        if self.entry is None:
            return "none"
        return "refused" if self.refused else ("ok" if self.ok else "regressed")

    @property
    def delta_accuracy(self) -> float | None:
        if self.refused or not self.entry or self.entry.get("accuracy") is None or self.current_accuracy is None:
            return None
        return self.current_accuracy - self.entry["accuracy"]


_ABSENT = object()
# settings that come from the model spec rather than an option (for the hint in a refusal)
SPEC_FIELDS = frozenset({"source", "revision", "tokenizer", "dtype", "chat_template", "rope", "engine_args"})


def _plain(settings: Mapping[str, Any]) -> dict[str, Any]:
    """Settings as they read back from JSON (tuples become lists), so stored and current compare equal."""
    return json.loads(json.dumps(dict(settings), sort_keys=True, default=str))


def _show(value: Any) -> str:
    if value is _ABSENT:
        return "absent"
    return repr(value) if isinstance(value, str) else json.dumps(value, sort_keys=True)


def _hint(name: str) -> str:
    """Where a setting comes from: a model spec field, else the option named after it."""
    if name in SPEC_FIELDS:
        return f"the spec's {name}"
    if name == "engine":
        return "--lc-engine or the spec's engine"
    if name == "items_version":
        return "the benchmark's items_version: its generator or templates changed, so the items differ"
    return "--lc-" + name.replace("_", "-")


def compare_settings(stored: Any, now: Mapping[str, Any], path: Path, key: str) -> str | None:
    """Why this run cannot be judged against the entry (one line per differing setting), or None.

    Field by field over both sides' keys, so a setting added later (a new protocol option) is
    covered without a change here: present on one side only, it differs."""
    if not isinstance(stored, dict):
        return (f"baseline {path} ({key}): settings unknown (the entry was recorded before baselines stored their "
                "settings), so this run cannot be compared with it; re-record it with --lc-update-baselines")
    now = _plain(now)
    lines = [f"  {name}: {_show(stored.get(name, _ABSENT))} in the baseline, {_show(now.get(name, _ABSENT))} now "
             f"({_hint(name)})" for name in sorted(set(stored) | set(now))
             if stored.get(name, _ABSENT) != now.get(name, _ABSENT)]
    if not lines:
        return None
    return "\n".join([f"baseline {path} ({key}) was recorded under other settings; the runs are not comparable:",
                      *lines, "re-record the baseline with --lc-update-baselines, or run with the baseline's settings"])


def _counts(entry: Mapping[str, Any], key: str, path: Path, which: str) -> tuple[int, int]:
    try:
        n, k = int(entry["n"]), int(entry[which])
    except (KeyError, TypeError, ValueError):
        raise LcError(f"baseline {path}: entry {key!r} needs integer fields 'n' and {which!r}; "
                      "re-record it with --lc-update-baselines") from None
    if not 0 <= k <= n:
        raise LcError(f"baseline {path}: entry {key!r} has {which}={k} outside 0..n={n}")
    return k, n


def paired_counts(base: Mapping[str, Any], current: Mapping[str, Outcome], flag: int) -> tuple[int, int, int]:
    """(b, c, n) on the items both runs scored: b = went bad (correct->wrong, or answered->null), c = reverse."""
    b = c = n = 0
    for item, outcome in current.items():
        old = base.get(item)
        if old is None:
            continue
        n += 1
        before, now = bool(old[flag]), bool(outcome[flag])  # type: ignore[index]
        if flag == 0:  # accuracy: right before, wrong now
            b += before and not now
            c += now and not before
        else:  # null: answered before, null now
            b += now and not before
            c += before and not now
    return b, c, n


def parse_tolerances(text: str | None) -> dict[str, float]:
    """``prefill_tok_s=10,decode_tok_s=10,peak_mem_gb=5`` -> percentages per gated figure (figures.py)."""
    out: dict[str, float] = {}
    gated = [f.key for f in figures.reaching("gated")]
    for part in (text or "").split(","):
        if not part.strip():
            continue
        key, sep, value = part.partition("=")
        if not sep or key.strip() not in gated:
            raise LcError(f"--lc-efficiency-tolerance {text!r}: write FIGURE=PERCENT,... with FIGURE one of "
                          f"{', '.join(gated)}")
        try:
            out[key.strip()] = float(value)
        except ValueError:
            raise LcError(f"--lc-efficiency-tolerance: {value!r} is not a percentage") from None
    return out


def judge_efficiency(entry: Mapping[str, Any], summary: Mapping[str, Any], path: Path, key: str) -> list[str]:
    """Efficiency gates: a figure may not fall (speed) or grow (memory) beyond its tolerance in the file.

    Timings belong to a machine: tolerances are recorded only on request (``--lc-efficiency-tolerance``),
    gate only where the baseline has them, and ``judge`` calls this only on the machine that recorded them."""
    failures = []
    base = entry.get("efficiency") or {}
    for name, pct in (entry.get("tolerance_pct") or {}).items():
        old, new, figure = base.get(name), summary.get(name), figures.get(name)
        if old is None or new is None or figure is None or not figure.gated:
            continue
        if figure.beyond(old, new, pct):
            failures.append(f"{name} {figure.worse} from {old:.4g} to {new:.4g} (baseline {path}, {key}): more "
                            f"than the {pct:g} % the baseline allows")
    return failures


def judge(folder: Path, model: str, benchmark: str, ctx: int, summary: Mapping[str, Any],
          alpha: float = DEFAULT_ALPHA, outcomes: Mapping[str, Outcome] | None = None, *,
          settings: Mapping[str, Any], measure: Measure | None = None) -> Verdict:
    """Compare one test's summary and per-item ``outcomes`` with its baseline entry.

    Nothing is compared when the entry was recorded under other quality settings (or under unknown
    ones): the verdict is a refusal naming each difference. Right-or-wrong items (``measure`` None):
    accuracy and null rate item by item on the items both runs scored (exact McNemar), else on the
    aggregates (one-sided Fisher). A measure (PG-19's bits per byte): item by item (one-sided paired
    t-test), else unpaired (Welch). Efficiency tolerances gate only on the machine that recorded them."""
    path = baseline_path(folder, model)
    doc = load(path)
    key = entry_key(benchmark, ctx)
    if doc is None or key not in doc["entries"]:
        return Verdict(baseline=str(path), entry=None, notes=[f"no baseline for {key} in {path}"])
    entry = doc["entries"][key]
    v = Verdict(baseline=str(path), entry=entry, current_accuracy=summary.get("accuracy"))
    refusal = compare_settings(entry.get("settings"), settings, path, key)
    if refusal:
        v.refused = True
        v.failures.append(refusal)
        return v
    then, now = entry.get("machine"), str(summary.get("device"))
    if then == now:
        v.failures.extend(judge_efficiency(entry, summary, path, key))
    else:
        v.notes.append(f"efficiency not compared (other machine: baseline on {then!r}, this run on {now!r})")
        v.warnings.append(f"baseline {path} ({key}) was recorded on {then!r}, this run is on {now!r}: efficiency "
                          "not compared (other machine); quality is compared")
    now = dict(outcomes or {})
    if measure is not None:
        _judge_measure(v, entry, summary, now, measure, path, key, alpha)
    elif summary["n"] == 0 or summary.get("correct") is None or entry.get("correct") is None:
        v.notes.append("no accuracy to gate (no items)")
    else:
        _judge_accuracy(v, entry, summary, now, path, key, alpha)
    return v


def _judge_accuracy(v: Verdict, entry: Mapping[str, Any], summary: Mapping[str, Any],
                    now: Mapping[str, Outcome], path: Path, key: str, alpha: float) -> None:
    items = entry.get("outcomes")
    if isinstance(items, dict) and items and now:
        if any(i in items for i in now):
            for flag, what in ((0, "accuracy"), (1, "null rate")):
                b, c, n = paired_counts(items, now, flag)
                p = mcnemar_worse(b, c)
                if p < alpha:
                    verb = "fell" if flag == 0 else "rose"
                    v.failures.append(
                        f"{what} {verb} against baseline {path} ({key}) on {n} paired items: {b} went worse, {c} went "
                        f"better: exact McNemar p = {p:.2g} < alpha = {alpha}")
            v.notes.append("paired (McNemar) on per-item outcomes")
            return
        # pairing on nothing would pass with p = 1 whatever happened: compare the aggregates instead
        v.notes.append(f"no items in common with the baseline ({len(items)} there, {len(now)} here): "
                       "no paired test; unpaired (Fisher) on aggregates")
    k_base, n_base = _counts(entry, key, path, "correct")
    n_new = summary["n"]
    p = fisher_less(k_base, n_base, summary["correct"], n_new)
    if p < alpha:
        v.failures.append(
            f"accuracy fell from {k_base}/{n_base} = {k_base / n_base:.3f} (baseline {path}, {key}) to "
            f"{summary['correct']}/{n_new} = {summary['accuracy']:.3f}: one-sided Fisher exact p = {p:.2g} < alpha = {alpha}")
    m_base, _ = _counts(entry, key, path, "nulls")
    p = fisher_greater(m_base, n_base, summary["nulls"], n_new)
    if p < alpha:
        v.failures.append(
            f"null rate rose from {m_base}/{n_base} = {m_base / n_base:.3f} (baseline {path}, {key}) to "
            f"{summary['nulls']}/{n_new} = {summary['null_rate']:.3f}: one-sided Fisher exact p = {p:.2g} < alpha = {alpha}")
    v.notes.append("unpaired (Fisher) on aggregates")


def _judge_measure(v: Verdict, entry: Mapping[str, Any], summary: Mapping[str, Any], now: Mapping[str, Outcome],
                   measure: Measure, path: Path, key: str, alpha: float) -> None:
    base = entry.get("outcomes") if isinstance(entry.get("outcomes"), dict) else {}
    one, label, figure = measure.unit, measure.label, measure.figures[0]
    unit = one + "s"
    if not base or not now:
        v.notes.append(f"no per-{one} {label} to gate (none in the baseline or in this run)")
        return
    headline = (f"{label} rose from {_num(entry.get(figure))} (baseline {path}, {key}) to "
               f"{_num(summary.get(figure))}")
    common = [i for i in now if i in base]
    if len(common) >= 2:
        diffs = [float(now[i]) - float(base[i]) for i in common]  # type: ignore[arg-type]
        p = paired_t_greater(diffs)
        v.notes.append(f"paired t-test on {len(common)} {unit}")
        if p < alpha:
            worse, better = sum(d > 0 for d in diffs), sum(d < 0 for d in diffs)
            v.failures.append(f"{headline} on {len(common)} paired {unit} ({worse} worse, {better} better; mean "
                              f"{sum(diffs) / len(diffs):+.4f} per {one}): one-sided paired t-test p = {p:.2g} "
                              f"< alpha = {alpha}")
        return
    v.notes.append(f"no {unit} in common with the baseline ({len(common)} common, {len(base)} there, {len(now)} "
                   f"here): no paired test; unpaired (Welch t-test) on per-{one} {label}")
    if len(base) < 2 or len(now) < 2:
        v.notes.append(f"too few {unit} for an unpaired test: {label} not gated")
        return
    p = welch_t_greater([float(x) for x in base.values()], [float(x) for x in now.values()])  # type: ignore[arg-type]
    if p < alpha:
        v.failures.append(f"{headline} on {len(base)} and {len(now)} unpaired {unit}: one-sided Welch t-test "
                          f"p = {p:.2g} < alpha = {alpha}")


def _num(x: Any) -> str:
    return "-" if x is None else f"{x:.4f}"


@contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with (path.parent / f".{path.name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def record(folder: Path, model: str, benchmark: str, ctx: int, summary: Mapping[str, Any],
           machine: str, outcomes: Mapping[str, Outcome] | None = None,
           tolerances: Mapping[str, float] | None = None, *, settings: Mapping[str, Any],
           measure: Measure | None = None) -> Path:
    """Write this test's figures (a measure's as well), the settings that decide its quality, and its
    per-item outcomes for the paired gates into the model's baseline (other entries kept)."""
    path = baseline_path(folder, model)
    with _locked(path):
        try:
            doc = load(path)
        except LcError:
            doc = None  # re-recording replaces a broken or old-format file
        doc = doc or {"format": FORMAT, "version": VERSION, "model": model, "entries": {}}
        doc["entries"][entry_key(benchmark, ctx)] = {
            "n": summary["n"], "correct": summary["correct"], "nulls": summary["nulls"],
            "accuracy": summary["accuracy"], "null_rate": summary["null_rate"],
            **{name: summary.get(name) for name in (measure.figures if measure else ())},
            "machine": machine, "settings": _plain(settings),
            "efficiency": {f.key: summary.get(f.key) for f in figures.reaching("gated")},
            "tolerance_pct": dict(tolerances or {}),
            **({"outcomes": dict(outcomes)} if outcomes else {}),
            "recorded": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        doc["entries"] = dict(sorted(doc["entries"].items()))
        atomic_write_json(path, doc)
    return path
