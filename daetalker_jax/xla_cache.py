"""XLA's persistent compilation cache for every JAX command. Why: compiling dominates short jobs (the
reference DiffAE's train step compiles for ~90 s on an H200, speech2latent's for ~30-40 s), and a rerun, a
resume or a second evaluation compiles the same programs again; with the cache a tiny 4-step training run
took 28 s instead of 62 s on a 2-core CPU the second time.

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
