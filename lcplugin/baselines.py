"""Baselines and the regression gate.

``baselines/<model>.json`` holds, per ``<benchmark>/<ctx>``, the counts a statistical test needs
(n, correct, nulls) besides the rates. A test fails only when its accuracy is lower, or its null rate
higher, than the baseline's by more than chance explains: one-sided Fisher exact test at level
``alpha`` (default 0.05). A fixed tolerance would be flaky at small n and blind at large n.
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

from .contexts import ctx_label
from .errors import LcError
from .stats import fisher_greater, fisher_less, mcnemar_worse
from .store import atomic_write_json

FORMAT = "lcplugin-baseline"
VERSION = 1
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


@dataclass
class Verdict:
    baseline: str  # path, for messages
    entry: Mapping[str, Any] | None
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures

    current_accuracy: float | None = None

    @property
    def delta_accuracy(self) -> float | None:
        if not self.entry or self.entry.get("accuracy") is None or self.current_accuracy is None:
            return None
        return self.current_accuracy - self.entry["accuracy"]


def _counts(entry: Mapping[str, Any], key: str, path: Path, which: str) -> tuple[int, int]:
    try:
        n, k = int(entry["n"]), int(entry[which])
    except (KeyError, TypeError, ValueError):
        raise LcError(f"baseline {path}: entry {key!r} needs integer fields 'n' and {which!r}; "
                      "re-record it with --lc-update-baselines") from None
    if not 0 <= k <= n:
        raise LcError(f"baseline {path}: entry {key!r} has {which}={k} outside 0..n={n}")
    return k, n


def paired_counts(base_items: Mapping[str, Any], records: list[Mapping[str, Any]], flag: int,
                  key: str) -> tuple[int, int, int]:
    """(b, c, n) on the items both runs scored: b = went bad (correct->wrong, or answered->null), c = reverse."""
    b = c = n = 0
    for r in records:
        old = base_items.get(str(r["id"]))
        if old is None or r.get(key) is None:
            continue
        n += 1
        before, now = bool(old[flag]), bool(r[key])
        if flag == 0:  # accuracy: right before, wrong now
            b += before and not now
            c += now and not before
        else:  # null: answered before, null now
            b += now and not before
            c += before and not now
    return b, c, n


EFFICIENCY = {"prefill_tok_s": "fall", "decode_tok_s": "fall", "peak_mem_gb": "grow"}


def parse_tolerances(text: str | None) -> dict[str, float]:
    """``prefill_tok_s=10,decode_tok_s=10,peak_mem_gb=5`` -> percentages per figure."""
    out: dict[str, float] = {}
    for part in (text or "").split(","):
        if not part.strip():
            continue
        key, sep, value = part.partition("=")
        if not sep or key.strip() not in EFFICIENCY:
            raise LcError(f"--lc-efficiency-tolerance {text!r}: write FIGURE=PERCENT,... with FIGURE one of "
                          f"{', '.join(EFFICIENCY)}")
        try:
            out[key.strip()] = float(value)
        except ValueError:
            raise LcError(f"--lc-efficiency-tolerance: {value!r} is not a percentage") from None
    return out


def judge_efficiency(entry: Mapping[str, Any], summary: Mapping[str, Any], path: Path, key: str) -> list[str]:
    """Efficiency gates: a figure may not fall (speed) or grow (memory) beyond its tolerance in the file.

    Timings belong to a machine: tolerances are recorded only on request (``--lc-efficiency-tolerance``)
    and only gate where the baseline has them."""
    failures = []
    base = entry.get("efficiency") or {}
    for figure, pct in (entry.get("tolerance_pct") or {}).items():
        old, new = base.get(figure), summary.get(figure)
        if old is None or new is None or figure not in EFFICIENCY:
            continue
        if EFFICIENCY[figure] == "fall" and new < old * (1 - pct / 100):
            failures.append(f"{figure} fell from {old:.4g} to {new:.4g} (baseline {path}, {key}): more than the "
                            f"{pct:g} % the baseline allows")
        if EFFICIENCY[figure] == "grow" and new > old * (1 + pct / 100):
            failures.append(f"{figure} grew from {old:.4g} to {new:.4g} (baseline {path}, {key}): more than the "
                            f"{pct:g} % the baseline allows")
    return failures


def judge(folder: Path, model: str, benchmark: str, ctx: int, summary: Mapping[str, Any],
          alpha: float = DEFAULT_ALPHA, records: list[Mapping[str, Any]] | None = None) -> Verdict:
    """Compare one test's summary with its baseline entry.

    With per-item outcomes in the baseline, accuracy and null rate are judged item by item on the
    items both runs scored (exact McNemar test on the discordant pairs); otherwise on the aggregates
    (one-sided Fisher exact test)."""
    path = baseline_path(folder, model)
    doc = load(path)
    key = entry_key(benchmark, ctx)
    if doc is None or key not in doc["entries"]:
        return Verdict(baseline=str(path), entry=None, notes=[f"no baseline for {key} in {path}"])
    entry = doc["entries"][key]
    v = Verdict(baseline=str(path), entry=entry, current_accuracy=summary.get("accuracy"))
    v.failures.extend(judge_efficiency(entry, summary, path, key))
    n_new = summary["n"]
    if n_new == 0 or summary.get("correct") is None or entry.get("correct") is None:
        v.notes.append("no accuracy to gate (no items, or a perplexity benchmark)")
        return v
    items = entry.get("items")
    if isinstance(items, dict) and items and records:
        for flag, what, field in ((0, "accuracy", "correct"), (1, "null rate", "null")):
            b, c, n = paired_counts(items, [r for r in records if not r.get("skipped")], flag, field)
            p = mcnemar_worse(b, c)
            if p < alpha:
                verb = "fell" if flag == 0 else "rose"
                v.failures.append(
                    f"{what} {verb} against baseline {path} ({key}) on {n} paired items: {b} went worse, {c} went "
                    f"better: exact McNemar p = {p:.2g} < alpha = {alpha}")
        v.notes.append("paired (McNemar) on per-item outcomes")
        return v
    k_base, n_base = _counts(entry, key, path, "correct")
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
    return v


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
           machine: str, settings_hash: str, records: list[Mapping[str, Any]] | None = None,
           tolerances: Mapping[str, float] | None = None) -> Path:
    """Write this test's figures, and its per-item outcomes for paired gates, into the model's
    baseline (other entries kept)."""
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
            "machine": machine, "settings_hash": settings_hash,
            "efficiency": {k: summary.get(k) for k in EFFICIENCY}, "tolerance_pct": dict(tolerances or {}),
            **({"items": {str(r["id"]): [int(bool(r.get("correct"))), int(bool(r.get("null")))]
                          for r in records if not r.get("skipped") and "correct" in r}} if records else {}),
            "recorded": _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        doc["entries"] = dict(sorted(doc["entries"].items()))
        atomic_write_json(path, doc)
    return path
