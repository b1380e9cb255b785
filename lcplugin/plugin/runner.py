"""One test's body: check it can run here, evaluate, record, summarize, gate.

Pytest-facing only at the edges (skip, fail, the ``benchmark`` fixture, ``record_property``); the
flow in between is config -> items -> prompts -> engine -> records -> summary -> verdict.
"""

from __future__ import annotations

import contextlib
import time
import warnings
from pathlib import Path
from typing import Any

import pytest

from ..benchmarks.base import Benchmark, EvalSession, get_benchmark
from ..config.contexts import ctx_label
from ..config.inputs import quality_settings, result_inputs, test_key
from ..config.session import Case, LcSession
from ..engines import telemetry
from ..engines.base import EngineConfig
from ..engines.manager import EngineManager
from ..engines.registry import engine_entry, registered_engines
from ..errors import EngineError, LcError, WorkerDied
from ..models.hub import hub_status, weights_unreachable
from ..results import baselines, figures
from ..results.runfolder import RunFolder
from . import preflight
from .caches import SessionCaches

SYNTHETIC_DEFAULT_LIMIT = 8


def skip_reason(case: Case, session: LcSession, caches: SessionCaches) -> str | None:
    """Why this test cannot run here, in one line; None when it can."""
    spec = case.spec
    if spec.hard_limit is not None and case.ctx > spec.hard_limit:
        how = ("max_context, read as a hard limit; write trained_window instead to run past it"
               if spec.legacy_max_context else "hard_limit: the architecture is undefined beyond it")
        return (f"{spec.name}: context {ctx_label(case.ctx)} is past the model's hard limit "
                f"{ctx_label(spec.hard_limit)} (spec {Path(spec.path).name} field {how})")
    if spec.trust_remote_code and not session.settings.allow_remote_code:
        return (f"{spec.name}: spec {Path(spec.path).name} sets trust_remote_code, which runs the model "
                "repository's own Python code; pass --lc-allow-remote-code to allow it")
    engine = session.engine_of(spec)
    if engine not in registered_engines():
        return f"{spec.name}: engine {engine!r} is not available in this lcplugin (have: {', '.join(registered_engines())})"
    if spec.requires_gpu and not telemetry.cuda_available():
        return f"{spec.name}: needs a CUDA GPU (spec {Path(spec.path).name} sets requires_gpu) and none is visible"
    for source in {spec.source, spec.tokenizer or spec.source}:
        why = weights_unreachable(source, spec.revision)
        if why:
            return f"{spec.name}: {why}"
    source = session.data_source(case.benchmark, spec, caches.digests)
    why = get_benchmark(case.benchmark, session.settings.bench).skip_reason(source, case.ctx)
    if why:
        return why
    if source.kind == "hub":
        try:
            import datasets  # noqa: F401
        except ImportError:
            return (f"{case.benchmark} data: pass --lc-data {case.benchmark}=PATH (loading from the hub needs "
                    "the datasets package: pip install 'lcplugin[hub]')")
        reachable, why = hub_status()
        if not reachable:
            return f"{case.benchmark} data: the hub is unreachable ({why}); pass --lc-data {case.benchmark}=PATH"
    return None


def _resolve(source: str) -> str:
    if source.startswith("builtin:"):
        from ..models.tiny import materialize

        return str(materialize(source.removeprefix("builtin:")))
    return source


def engine_config(case: Case, session: LcSession) -> EngineConfig:
    spec = case.spec
    model_path = _resolve(spec.source)
    config_engine = session.engine_of(spec)
    args = session.engine_args_for(spec)
    return EngineConfig(
        engine=config_engine, model=spec.name, source=model_path,
        tokenizer=_resolve(spec.tokenizer) if spec.tokenizer else model_path, dtype=spec.dtype,
        revision=spec.revision, trust_remote_code=spec.trust_remote_code and session.settings.allow_remote_code,
        rope=spec.rope_for(case.ctx),
        # engines sized at load (vLLM) get the longest prompt + generation this benchmark sends; others load once
        # unless the user fixed it (engine arg max_model_len): then one load serves every context up to it
        max_model_len=get_benchmark(case.benchmark, session.settings.bench).context_window(
            case.ctx, spec.window_at(case.ctx))
        if engine_entry(config_engine).sized_by_context and "max_model_len" not in args else None,
        engine_args=args)


def run_case(case: Case, session: LcSession, run: RunFolder, caches: SessionCaches, engines: EngineManager,
             benchmark_fixture: Any, record_property: Any, node: pytest.Item | None = None) -> dict[str, Any]:
    """Run one test's case; user-facing errors become one clean failure, engine detail its own section."""
    reason = skip_reason(case, session, caches)
    if reason:
        pytest.skip(reason)
    pytest_config = node.config if node is not None else None
    try:
        config = engine_config(case, session)
        current = engines.current
        memory = preflight.check(case, session, config, {current.pid} if current is not None and current.alive else set())
        if memory.skip:  # before the model loads: one line naming the figures, not an out-of-memory error
            pytest.skip(memory.skip)
        return _run(case, session, run, caches, engines, benchmark_fixture, record_property, pytest_config, config,
                    memory)
    except WorkerDied as exc:
        engines.discard()
        message, detail = str(exc), exc.detail
    except EngineError as exc:
        message, detail = str(exc), exc.detail
    except LcError as exc:
        message, detail = str(exc), ""
    if detail and node is not None:
        # Shown under the failure as "Captured lcplugin engine call"; kept out of the message, which
        # pytest repeats whole in the short summary when it runs on CI.
        node.add_report_section("call", "lcplugin engine", detail)
    elif detail:
        message = f"{message}\n{detail}"
    pytest.fail(message, pytrace=False)  # outside the except: no "during handling" echo


def _run(case: Case, session: LcSession, run: RunFolder, caches: SessionCaches, engines: EngineManager,
         benchmark_fixture: Any, record_property: Any, pytest_config: Any, config: EngineConfig,
         memory: preflight.Preflight) -> dict[str, Any]:
    bench = get_benchmark(case.benchmark, session.settings.bench)
    sampling = bench.sampling(session.settings.sampling == "greedy")
    tokenizer = caches.tokenizer(config)
    source = session.data_source(case.benchmark, case.spec, caches.digests)
    limit = session.settings.limit
    if limit is None and source.kind == "synthetic":
        limit = SYNTHETIC_DEFAULT_LIMIT
    key = (case.benchmark, source.digest, source.location, limit, bench.items_key(case.ctx))
    items = caches.items_for(key, lambda: bench.load_items(source, case.ctx, limit))
    store = run.store
    worker = engines.get(config)
    load_s = engines.last_load_s  # paid by this test (its model's first), never counted in wall_s
    worker.call("telemetry_begin")
    inputs = result_inputs(case, session, caches.digests)
    test_key_ = test_key(inputs)
    wanted = {it.id for it in items}
    records = [r for r in store.resume_records(case.benchmark, case.spec.name, case.ctx, test_key_)
               if r["id"] in wanted or str(r["id"]).split("@")[0] in wanted]
    resumed = len(records)  # items a killed run already did: not part of this wall time
    batch_prefix = f"{worker.pid}-{time.time_ns()}"  # batch ids are unique within one worker's life

    beyond = case.spec.beyond_window(case.ctx)

    def emit(record: dict[str, Any]) -> None:
        record = {"model": case.spec.name, **record, "test_key": test_key_, "beyond_window": beyond,
                  "batch_key": f"{batch_prefix}:{record.get('batch_id')}"}
        store.append(case.benchmark, case.spec.name, case.ctx, record)
        records.append(record)

    cache = caches.token_cache(tokenizer)
    eval_session = EvalSession(
        generate=lambda prompts, s: _generate(worker, prompts, s, _batch_cap(config, memory)), tokenizer=tokenizer,
        ctx=case.ctx,
        chat_mode=case.spec.chat_template, sampling=sampling, emit=emit,
        chunk_size=engine_entry(config.engine).max_batch(config.engine_args) * 4,
        window=case.spec.window_at(case.ctx), data_key=source.digest, content_ids=cache.content_ids,
        done_ids=frozenset(str(r["id"]) for r in records),
        loglikelihood=lambda tokens, k: worker.call("loglikelihood", tokens, k))
    if pytest_config is not None:
        from .progress import for_pytest, known_rates

        passes = getattr(bench, "passes", 1)
        total = bench.progress_total(items, eval_session.done_ids)
        rates = known_rates(store.dir.parent, session.baselines_dir(), case.spec.name, case.ctx, store.meta.get("device"))
        progress = for_pytest(pytest_config, f"{case.benchmark}[{case.id}]", total,
                              lambda: sum(r.get("prompt_tokens", 0) + r.get("output_tokens", 0) for r in records),
                              unit="items" if passes == 1 else f"passes ({passes} per item)",
                              plan=bench.cost_plan(total, case.ctx, sampling), rates=rates)
        eval_session.progress = progress.advance
    started = time.perf_counter()
    try:
        benchmark_fixture.pedantic(bench.evaluate, args=(items, eval_session), rounds=1, iterations=1)
    except BaseException as exc:
        if not isinstance(exc, KeyboardInterrupt):  # after Ctrl-C the worker may still be busy
            _stop_telemetry(worker)
        raise
    finally:
        if pytest_config is not None:
            progress.close()
    wall = time.perf_counter() - started
    ran = len([r for r in records[resumed:] if not r.get("skipped")])  # the items this session's figures cover
    tele = worker.call("telemetry_end")
    warmup = tele.get("warmup_s") or 0.0  # compile and warm-up the engine set aside: not the items' time
    wall = max(0.0, wall - warmup)
    engine_settings = worker.call("describe")
    from ..results.store import slot_of
    from ..results.summary import carry_resumed, summarize

    summary = summarize(records, {
        "benchmark": case.benchmark, "model": case.spec.name, "ctx": case.ctx, "ctx_label": ctx_label(case.ctx),
        "family": case.spec.family, "engine": config.engine, "test": case.id, "wall_s": wall,
        "trained_window": case.spec.trained_window, "beyond_window": beyond,
        "items_run": ran, "test_key": test_key_,
        "worker": engines.worker, "engine_load_s": load_s,
        # peak_mem_gb is the torch allocator's peak, and peak_mem_what says what it holds under this engine
        # (under vLLM its whole KV-cache pool). NVML's device figure includes other processes and, under
        # vLLM, its pre-allocation; its process figure too.
        "peak_mem_gb": tele.get("torch_peak_gb"), "peak_mem_what": tele.get("peak_mem_what"),
        # any figure an engine measures under its own key (vLLM's mem_used_gb) reaches the summary as it is
        **{f.key: tele[f.key] for f in figures.FIGURES if f.key in tele},
        "nvml_device_gb": tele.get("nvml_device_gb"),
        "nvml_process_gb": tele.get("nvml_process_gb"), "energy_j": tele.get("energy_j"),
        "peak_rss_gb": tele.get("rss_peak_gb"), "device": tele.get("device"),
        "cpu_threads": tele.get("cpu_threads"), "engine_settings": engine_settings,
        "unmeasured": {**tele.get("why", {}), **({"mem_estimate_gb": memory.why} if memory.why else {})},
        # the preflight's estimate beside the measured peak, with its parts (engines/memory.py)
        "mem_estimate_gb": memory.cell.total / 1e9 if memory.cell else None,
        "mem_estimate": memory.cell.as_summary() if memory.cell else None,
        "data": source.describe(), "data_digest": source.digest,
        "sampling": {"temperature": sampling.temperature, "max_new_tokens": sampling.max_new_tokens},
        "rope": dict(config.rope) if config.rope else None, "protocol": session.settings.bench.as_dict(),
        **bench.aggregate(records),
    })
    # a resumed test's session figures: from the session that ran its items, never this one's telemetry
    carry_resumed(summary, resumed, run.earlier_test(slot_of(summary)), [f.key for f in figures.FIGURES if f.session])
    late = preflight.compare(summary)  # every run checks the estimate against what it measured
    if late:
        warnings.warn(preflight.MemoryEstimateWarning(late), stacklevel=2)
    for figure in figures.FIGURES:  # every figure in every summary: None where this test measured none
        summary.setdefault(figure.key, None)
    return _finish(case, session, run, summary, benchmark_fixture, record_property, bench, records,
                   quality_settings(inputs))


def _batch_cap(config: EngineConfig, memory: preflight.Preflight) -> int | None:
    """The most prompts the engine may read together in this test: the batch the memory preflight priced, where
    it is below the spec's (a context read in chunks: one; a token budget that cuts the batch), for an engine that
    batches within a call (``EngineEntry.batching``); None: no cap beyond the engine's own."""
    entry = engine_entry(config.engine)
    if memory.cell is None or entry.batching is None or memory.cell.batch >= entry.max_batch(config.engine_args):
        return None
    return memory.cell.batch


def _generate(worker: Any, prompts: list[Any], sampling: Any, cap: int | None) -> list[Any]:
    """The worker's generate over ``prompts``, in calls of at most ``cap`` prompts, so that short prompts of a
    context read in chunks are never read together past the preflight's estimate."""
    if cap is None or len(prompts) <= cap:
        return worker.call("generate", prompts, sampling)
    return [done for i in range(0, len(prompts), cap) for done in worker.call("generate", prompts[i:i + cap], sampling)]


def _stop_telemetry(worker: Any) -> None:
    """A failed (or skipped) test still stops the worker's sampler thread, so threads never pile up."""
    if worker.alive:
        with contextlib.suppress(EngineError):
            worker.call("telemetry_end", timeout_s=120)


def _finish(case: Case, session: LcSession, run: RunFolder, summary: dict[str, Any], benchmark_fixture: Any,
            record_property: Any, bench: Benchmark, records: list[dict[str, Any]],
            quality: dict[str, Any]) -> dict[str, Any]:
    folder = session.baselines_dir()
    settings = session.settings
    outcomes = bench.outcomes(records)
    if settings.update_baselines:
        path = baselines.record(folder, case.spec.name, case.benchmark, case.ctx, summary,
                                machine=str(summary.get("device")), outcomes=outcomes,
                                tolerances=settings.tolerances, settings=quality, measure=bench.measure)
        summary["baseline"] = {"path": str(path), "status": "recorded"}
        verdict = None
    else:
        verdict = baselines.judge(folder, case.spec.name, case.benchmark, case.ctx, summary, settings.alpha, outcomes,
                                  settings=quality, measure=bench.measure)
        summary["baseline"] = {
            "path": verdict.baseline, "status": verdict.status,
            "accuracy": verdict.entry.get("accuracy") if verdict.entry else None,
            "delta_accuracy": verdict.delta_accuracy, "failures": verdict.failures, "test": verdict.notes,
        }
        for message in verdict.warnings:  # like pytest-benchmark's when a comparison crosses machines
            warnings.warn(baselines.BaselineMachineWarning(message), stacklevel=2)
    run.put_test(summary)
    record_property("lc_beyond_window", summary.get("beyond_window", False))  # past the trained window: marked everywhere
    benchmark_fixture.extra_info["beyond_window"] = summary.get("beyond_window", False)
    for figure in figures.reaching("recorded"):  # JUnit properties lc_<key> and pytest-benchmark's extra_info
        record_property(f"lc_{figure.key}", summary.get(figure.key))
        benchmark_fixture.extra_info[figure.key] = summary.get(figure.key)
    if verdict is not None and not verdict.ok:
        pytest.fail("\n".join(verdict.failures), pytrace=False)
    return summary
