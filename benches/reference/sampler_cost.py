"""What the NVML sampler costs the decode loop it measures, on any machine (a fake NVML on CPU).

The sampler is a thread inside the engine worker; on a GPU it wakes every 50 ms, reads NVML and
matches NVML's process entries against this process and its children. Here a fake NVML answers
like a card shared by ``--entries`` processes (this one among them), so the thread does all of its
real work except the driver calls. Decoding with the transformers engine on CPU is CPU-bound and,
for a tiny model, dominated by Python, so the sampler's share of CPU and of the GIL shows up in
full: the worst case. Rounds alternate off/on (off, on, on, off, ...), so drift of a shared
machine cancels; prints the median decode tokens/s of each and the sampler thread's own CPU time
as a share of the wall time it ran, as one JSON object.

    python benches/reference/sampler_cost.py --model tiny-llama --new-tokens 512 --rounds 12
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from types import SimpleNamespace
from typing import Any

from lcplugin.engines import telemetry
from lcplugin.engines.base import EngineConfig, SamplingSettings
from lcplugin.engines.hf import HFEngine


class FakeNvml:
    """pynvml's calls as the sampler makes them, for a card used by ``pids``."""

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids

    def nvmlInit(self) -> None:  # noqa: N802 - pynvml's names
        pass

    def nvmlDeviceGetHandleByIndex(self, index: int) -> int:  # noqa: N802
        return index

    def nvmlDeviceGetMemoryInfo(self, handle: int) -> Any:  # noqa: N802
        return SimpleNamespace(used=len(self.pids) * 1e9)

    def nvmlDeviceGetComputeRunningProcesses(self, handle: int) -> list[Any]:  # noqa: N802
        return [SimpleNamespace(pid=p, usedGpuMemory=int(1e9)) for p in self.pids]

    def nvmlDeviceGetTotalEnergyConsumption(self, handle: int) -> int:  # noqa: N802
        return int(time.monotonic() * 1e5)


def _sampler_on(entries: int, account: dict[str, float]) -> None:
    """Make telemetry believe in a GPU watched by the fake NVML; the sampler's CPU time goes to ``account``."""
    sys.modules["pynvml"] = FakeNvml([os.getpid(), *range(4_000_000, 4_000_000 + entries - 1)])  # type: ignore
    telemetry.cuda_available = lambda: True  # type: ignore[assignment]
    telemetry.reset_torch_peak = lambda: None  # type: ignore[assignment]
    telemetry.torch_peak_gb = lambda: (None, "fake GPU")  # type: ignore[assignment]
    telemetry.device_name = lambda: "fake GPU"  # type: ignore[assignment]

    def timed(self: Any) -> None:
        start = time.thread_time()  # CPU time of the sampler thread itself
        _SAMPLE(self)
        account["cpu_s"] += time.thread_time() - start
        account["samples"] += 1

    telemetry.NvmlSampler._sample = timed  # type: ignore[method-assign]


_SAMPLE = telemetry.NvmlSampler._sample
_REAL = (telemetry.cuda_available, telemetry.reset_torch_peak, telemetry.torch_peak_gb, telemetry.device_name)


def _sampler_off() -> None:
    telemetry.cuda_available, telemetry.reset_torch_peak, telemetry.torch_peak_gb, telemetry.device_name = _REAL
    telemetry.NvmlSampler._sample = _SAMPLE  # type: ignore[method-assign]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="tiny-llama", help="a built-in tiny model or a checkpoint folder")
    ap.add_argument("--new-tokens", type=int, default=512)
    ap.add_argument("--prompt-tokens", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=12, help="generations per setting")
    ap.add_argument("--entries", type=int, default=8, help="NVML process entries on the fake card")
    args = ap.parse_args()
    folder = args.model
    if not os.path.isdir(folder):
        from lcplugin.models.tiny import materialize

        folder = str(materialize(args.model))
    engine = HFEngine(EngineConfig(engine="hf", model=args.model, source=folder, tokenizer=folder, dtype="float32",
                                   engine_args={"ignore_eos": True}))
    prompt = [[(17 * i) % 200 + 40 for i in range(args.prompt_tokens)]]
    sampling = SamplingSettings(max_new_tokens=args.new_tokens)
    engine.generate(prompt, sampling)  # warm-up
    account = {"cpu_s": 0.0, "samples": 0}
    rates: dict[str, list[float]] = {"off": [], "on": []}
    wall_on_s = 0.0
    for r in range(args.rounds):
        for mode in (("off", "on") if r % 2 == 0 else ("on", "off")):
            if mode == "on":
                _sampler_on(args.entries, account)
            else:
                _sampler_off()
            start = time.perf_counter()
            engine.telemetry_begin()
            comp = engine.generate(prompt, sampling)[0]
            engine.telemetry_end()
            rates[mode].append((comp.output_tokens - 1) / comp.decode_s)
            if mode == "on":
                wall_on_s += time.perf_counter() - start
    off, on = statistics.median(rates["off"]), statistics.median(rates["on"])
    print(json.dumps({
        "model": args.model, "new_tokens": args.new_tokens, "rounds": args.rounds, "nvml_entries": args.entries,
        "torch_threads": telemetry.cpu_threads(), "decode_tok_s_off": round(off, 1), "decode_tok_s_on": round(on, 1),
        "slowdown_pct": round(100 * (1 - on / off), 2),
        "spread_off_pct": round(100 * (max(rates["off"]) - min(rates["off"])) / off, 1),
        "sampler_samples": account["samples"],
        "sampler_cpu_pct_of_wall": round(100 * account["cpu_s"] / wall_on_s, 3),
    }))


if __name__ == "__main__":
    main()
