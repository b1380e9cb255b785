"""Is the Hugging Face hub reachable, and is a model already on disk?

Asked once per session, quickly: a TCP connect with a short timeout. Here (no network) an
unguarded hub call hangs 23-50 s before failing, once per file; so when the probe fails we switch
the whole session, worker processes included, to ``HF_HUB_OFFLINE=1``, and every later lookup goes
straight to the local cache.
"""

from __future__ import annotations

import functools
import os
import socket
import sys
from pathlib import Path
from urllib.parse import urlparse

_TRUE = ("1", "true", "yes", "on")


@functools.cache
def hub_status(timeout_s: float = 2.0) -> tuple[bool, str]:
    """(reachable, reason). Sets HF_HUB_OFFLINE=1 for this process and its children when unreachable."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in _TRUE:
        return False, "HF_HUB_OFFLINE is set"
    endpoint = os.environ.get("HF_ENDPOINT", "https://huggingface.co")
    url = urlparse(endpoint)
    host, port = url.hostname or "huggingface.co", url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True, f"{host} reachable"
    except OSError as exc:
        reason = f"cannot reach {host}:{port} within {timeout_s:.0f} s ({exc.__class__.__name__})"
    go_offline()
    return False, reason


def go_offline() -> None:
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    constants = sys.modules.get("huggingface_hub.constants")
    if constants is not None:
        constants.HF_HUB_OFFLINE = True


def is_local(source: str) -> bool:
    return source.startswith(("builtin:", "/", "./", "../", "~")) or Path(source).expanduser().exists()


def cached_folder(repo_id: str, revision: str | None = None) -> Path | None:
    """The snapshot folder holding the repo's config (``config.json``, or Mistral's ``params.json``) in the
    local Hugging Face cache; None when it is not there (or huggingface_hub is absent)."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    for filename in ("config.json", "params.json"):
        hit = try_to_load_from_cache(repo_id, filename, revision=revision)
        if isinstance(hit, str):
            return Path(hit).parent
    return None


def cached_on_disk(repo_id: str, revision: str | None = None) -> bool:
    """True when the repo's config is already in the local Hugging Face cache."""
    return cached_folder(repo_id, revision) is not None


def weights_unreachable(source: str, revision: str | None = None) -> str | None:
    """None when the weights can be loaded; otherwise the reason they cannot."""
    if is_local(source):
        if source.startswith("builtin:"):
            return None
        return None if Path(source).expanduser().exists() else f"local model folder {source} does not exist"
    reachable, why = hub_status()
    if reachable or cached_on_disk(source, revision):
        return None
    return f"weights of {source} are not in the local Hugging Face cache and the hub is unreachable ({why})"


def dataset_commit(repo_id: str, revision: str = "main") -> str | None:
    """The commit a hub dataset's ``revision`` points at, or None when it cannot be told.

    Asked of the hub when it is reachable, else read from the local hub cache's ``refs/<revision>``
    (written when the revision was last resolved on this machine). Results of a moved ``main`` must
    not be reused; a revision that cannot be resolved keys results by its name alone.
    """
    reachable, _ = hub_status()
    if reachable:
        try:
            from huggingface_hub import HfApi

            return HfApi().dataset_info(repo_id, revision=revision, timeout=10).sha
        except Exception:  # any failure (network, auth, missing repo) means: unknown
            return None
    try:
        from huggingface_hub import constants
    except ImportError:
        return None
    ref = Path(constants.HF_HUB_CACHE) / f"datasets--{repo_id.replace('/', '--')}" / "refs" / revision
    try:
        return ref.read_text(encoding="utf-8").strip() or None
    except OSError:
        return None
