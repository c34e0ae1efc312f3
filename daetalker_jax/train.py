"""`python -m daetalker_jax.train --config configs/dae.py --workdir runs/dae`: train a stage.

The config file's `task` picks the stage. Overrides: `--config.batch_size=128`, variants:
`--config configs/dae.py:256`. Launched on several hosts, every process runs this same command
(daetalker_jax/distributed.py: how they find each other). Rerun to resume.
`--compile_only` compiles the train step from the config alone (no data needed; DiffAE configs, and speech2latent
on log-mel with `--config.latent_dim` given) and prints its device memory; with $JAX_COMPILATION_CACHE_DIR set,
the training run that follows skips the compilation.
"""

from __future__ import annotations

import sys

import jax
from absl import app, flags, logging
from ml_collections import config_flags

from daetalker_jax import distributed
from daetalker_jax.errors import UserError

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", None, "Run folder: checkpoints, tensorboard, metrics.jsonl, samples.")
flags.DEFINE_bool("compile_only", False, "Compile the train step from the config's shapes (no data, no workdir), "
                  "print its device memory and exit; with $JAX_COMPILATION_CACHE_DIR set, training then loads it.")
flags.DEFINE_bool("show_config", False, "Print the config (variant and --config.x=y overrides applied), i.e. every "
                  "field you can override, and exit.")
config_flags.DEFINE_config_file("config", None, "Config file, e.g. configs/dae.py or configs/dae.py:tiny.",
                                lock_config=True)
HELP_FLAGS = ("-h", "--help", "-?", "--helpshort", "--helpfull")


def catalogue() -> str:
    """The configs, their variants and stages, for --help (read from configs/, so it stays true)."""
    import importlib.util
    from pathlib import Path

    lines = ["Configs (--config FILE[:VARIANT]; the first variant is the default):"]
    for path in sorted((Path(__file__).resolve().parents[1] / "configs").glob("[!_]*.py")):
        spec = importlib.util.spec_from_file_location(f"config_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        first = " ".join((module.__doc__ or "").split()).split(". ")[0].rstrip(".")
        lines.append(f"  configs/{path.name} ({', '.join(module.VARIANTS)}): {first}.")
    lines.append("Every field of one, with its value: --config configs/s2l.py:ref --show_config")
    return "\n".join(lines)


def main(argv: list[str]) -> None:
    del argv
    logging.set_verbosity(logging.WARNING)   # orbax logs every checkpoint step at INFO
    from daetalker_jax.trainers import make_task
    from daetalker_jax.trainers.base import Trainer

    try:
        distributed.initialize()
        if FLAGS.config is None:
            raise UserError("--config is required, e.g. --config configs/dae.py:tiny")
        if FLAGS.show_config:
            print(FLAGS.config)
            return
        if FLAGS.compile_only:
            _compile_only()
            return
        if FLAGS.workdir is None:
            raise UserError("--workdir is required: the run folder (checkpoints, logs); rerun with it to resume")
        final = Trainer(FLAGS.config, FLAGS.workdir, make_task(FLAGS.config)).run()
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    if jax.process_index() == 0 and final:
        print("final: " + ", ".join(f"{k}={v:.4g}" for k, v in final.items()))


def _compile_only() -> None:
    import time

    from daetalker_jax.trainers import make_task
    from daetalker_jax.trainers.base import compile_step, make_mesh

    c = FLAGS.config
    if c.task not in ("dae", "s2l"):   # the sync expert's shapes (and set-up) come from its data
        raise UserError(f"--compile_only needs batch shapes known from the config; the {c.task!r} task takes them "
                        "from its data (supported: configs/dae.py, configs/s2l.py)")
    if c.task == "s2l" and not (c.features == "mel" and c.latent_dim):
        raise UserError("--compile_only needs batch shapes known from the config; for speech2latent give "
                        "--config.latent_dim=<the DiffAE's z_channels> (log-mel features only)")
    start = time.perf_counter()
    compiled = compile_step(make_task(c), c, make_mesh())
    memory = compiled.memory_analysis()
    if jax.process_index() == 0:
        usage = "" if memory is None else (
            f"; per device: arguments {memory.argument_size_in_bytes / 2**30:.2f} GiB, temporaries "
            f"{memory.temp_size_in_bytes / 2**30:.2f} GiB")
        print(f"compiled the train step in {time.perf_counter() - start:.1f} s{usage}")


def parse_flags(argv: list[str]) -> list[str]:
    """absl's parsing, with a bad `--config.x=y` override (unknown field, wrong type) reported as one clear
    message and exit status 2 instead of a traceback; --help prints the flags and the configs and exits 0."""
    if any(arg in HELP_FLAGS for arg in argv[1:]):
        print(__doc__.strip(), "\n\nFlags:", sep="")
        print(FLAGS.module_help(sys.modules[__name__]) if "--helpfull" not in argv else FLAGS.get_help())
        print("\n" + catalogue())
        sys.exit(0)
    try:
        return FLAGS(argv)
    except flags.Error as e:
        message = str(e)
    except (AttributeError, KeyError, TypeError, ValueError) as e:   # raised by ml_collections' overrides
        message = str(e).strip("'\"").replace("\\n", " ").replace("\\'", "'")
    print(f"error: bad command-line flag: {message} (see --helpfull)", file=sys.stderr)
    sys.exit(2)


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
