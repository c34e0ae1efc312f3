"""XLA's persistent compilation cache for the single-process commands (evaluate, generate, app). Why: a
second evaluation or generation compiles the same programs again (a tiny 4-step training run with the cache:
28 s instead of 62 s on a 2-core CPU the second time). Not in train and extract, which may run as several
processes: enabled there before `jax.distributed.initialize()`, a warm cache made the two processes of the
CPU multi-process test reach their first collective too far apart (Gloo's 30-s timeout); JAX's own
JAX_COMPILATION_CACHE_DIR still works for them.

Location: $JAX_COMPILATION_CACHE_DIR if set (JAX's own variable), else $DAETALKER_XLA_CACHE, else
~/.cache/daetalker_jax/xla; DAETALKER_XLA_CACHE=off disables it. Entries are keyed by the program, the
JAX/XLA versions and the device, so a stale entry is never used; delete the folder to reclaim the disk.
"""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT = Path.home() / ".cache" / "daetalker_jax" / "xla"


def enable_compilation_cache() -> str | None:
    """Points JAX at the cache folder (call before the first compilation); returns it, or None when off."""
    import jax

    path = os.environ.get("JAX_COMPILATION_CACHE_DIR") or os.environ.get("DAETALKER_XLA_CACHE") or str(DEFAULT)
    if path.lower() in ("off", "0", "none"):
        return None
    jax.config.update("jax_compilation_cache_dir", path)
    # every program, also the many small ones of a model's initialisation (~0.2 s each, 145 for the DiffAE)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path
