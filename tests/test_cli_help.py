"""Every command-line entry point's --help: exit status 0, a help text for every flag, and each default shown
once (none for required flags or flags without one)."""

from __future__ import annotations

import importlib
import re

import pytest

from daetalker_jax.errors import run_cli

CLIS = ("synth.__main__", "synth.recordings", "prepare", "extract", "generate", "evaluate", "app", "convert_diffae",
        "generation.sheet")


@pytest.mark.parametrize("name", CLIS)
def test_help(name, capsys):
    module = importlib.import_module(f"daetalker_jax.{name}")
    with pytest.raises(SystemExit) as exit_info:
        run_cli(module.main, ["--help"])
    out = capsys.readouterr().out
    assert exit_info.value.code == 0 and out.startswith("usage: python -m daetalker_jax."), out[:300]
    assert "(default: None)" not in out
    entries = re.split(r"\n  (?=-)", out.split("options:", 1)[1])[1:]   # one per flag
    assert entries
    for entry in entries:
        first, _, rest = entry.strip().partition("\n")
        flag, _, text = first.partition("  ")                      # help beside the flag, or on the next lines
        assert (text + rest).strip(), f"{name}: {flag} has no help text"
        assert entry.count("(default:") <= 1, entry
