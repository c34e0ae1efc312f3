"""The bad-input sweep: every CLI (synth, prepare, train, extract, generate, evaluate, the contact sheet,
convert_diffae, the app) against bad inputs.
Each case must exit with status 2, end with one `error: ...` line naming the problem (the expected words
below), show no traceback of ours, and leave no output behind. Add a case to CASES whenever a new way to fail is found.

The argparse CLIs run in this process through `run_cli` (what `python -m` calls), so the sweep stays
fast; `train` (absl flags) runs as a subprocess."""

from __future__ import annotations

import importlib
import re
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from conftest import first_test_clip, write_audio
from daetalker_jax.errors import run_cli

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Inputs:
    """Good and bad things the cases combine; `out` is where each case's output would go."""
    tmp: Path
    dae: Path
    s2l: Path
    data: Path                                   # a prepared 32 px dataset without latents
    speech: np.ndarray                           # 16 kHz float32 speech
    good_wav: Path
    clip: Path                                   # a held-out clip of the corpus `data` was prepared from
    out: Path

    def file(self, name: str, content: bytes | str) -> Path:
        path = self.tmp / name
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
        return path

    def wav(self, name: str, audio: np.ndarray) -> Path:
        return write_audio(self.tmp / name, np.asarray(audio, np.float32), 16000, "pcm_s16le")


@dataclass
class Case:
    cli: str                                     # daetalker_jax.<cli>
    args: Callable[[Inputs], list]
    message: str                                 # words the error must contain
    absent: Callable[[Inputs], Path]             # must not exist afterwards


def _gen(i: Inputs, **kw) -> list:
    args = {"--audio": i.good_wav, "--dae": i.dae, "--s2l": i.s2l, "--out": i.out / "o.mp4", **kw}
    return [x for kv in args.items() for x in kv]


def _eval(i: Inputs, **kw) -> list:
    args = {"--dae": i.dae, "--s2l": i.s2l, "--data": i.data, "--out": i.out / "report", "--no-fvd": None, **kw}
    return [x for kv in args.items() for x in kv if x is not None]


def _sheet(i: Inputs, **kw) -> list:
    args = {"--video": i.clip, "--clip": i.clip, "--data": i.data, "--out": i.out / "sheet.png", **kw}
    return [x for kv in args.items() for x in kv]


def _renamed_clip(i: Inputs) -> Path:
    """The clip and its sidecar under a name the dataset does not hold."""
    for suffix in (".mp4", ".json"):
        shutil.copy(i.clip.with_suffix(suffix), (i.tmp / "elsewhere").with_suffix(suffix))
    return i.tmp / "elsewhere.mp4"


def _short_video(i: Inputs) -> Path:
    from daetalker_jax.media import read_mp4, write_mp4

    write_mp4(i.tmp / "short.mp4", read_mp4(i.clip).frames[:10], None)
    return i.tmp / "short.mp4"


def _convert(i: Inputs, ckpt, *extra: str) -> list:
    return ["--ckpt", ckpt, "--out", i.out / "converted", *extra]


def _zip(i: Inputs) -> Path:
    import zipfile

    with zipfile.ZipFile(i.tmp / "other.ckpt", "w") as z:
        z.writestr("notes.txt", "not a checkpoint")
    return i.tmp / "other.ckpt"


def _train(i: Inputs, *extra: str, data: Path | None = None) -> list:
    return ["--config", "configs/dae.py:tiny", "--workdir", i.out / "run", f"--config.data_dir={data or i.data}",
            *extra]


VIDEO = lambda i: i.out / "o.mp4"          # noqa: E731
REPORT = lambda i: i.out / "report" / "report.json"   # noqa: E731
RUN = lambda i: i.out / "run" / "checkpoints"          # noqa: E731
BAD_POSE_CSV = "yaw,pitch,roll\n1,2,3\n4,five,6\n"
LATENTS = lambda i: i.data / "daetalker_data" / "derived" / "latents"   # noqa: E731
SHEET = lambda i: i.out / "sheet.png"                  # noqa: E731
CONVERTED = lambda i: i.out / "converted"              # noqa: E731
DATA = ROOT / "tests" / "data"

CASES: dict[str, Case] = {
    # synth
    "synth: size out of range": Case("synth", lambda i: ["--out", i.out, "--size", "32"], "--size must be within",
                                     lambda i: i.out / "manifest.json"),
    "synth: zero minutes": Case("synth", lambda i: ["--out", i.out, "--minutes", "0"], "--minutes must be > 0",
                                lambda i: i.out / "manifest.json"),
    "synth: missing sentence file": Case("synth", lambda i: ["--out", i.out, "--sentences", i.tmp / "none.txt"],
                                         "does not exist", lambda i: i.out / "manifest.json"),
    # prepare
    "prepare: missing videos": Case("prepare", lambda i: ["--videos", i.tmp / "none", "--out", i.out],
                                    "does not exist", lambda i: i.out / "daetalker_data"),
    "prepare: a text file named .mp4": Case(
        "prepare", lambda i: ["--videos", i.file("v.mp4", "not a video\n" * 20), "--out", i.out],
        "no usable clips", lambda i: i.out / "daetalker_data"),
    "prepare: crop nonsense": Case("prepare", lambda i: ["--videos", i.tmp, "--out", i.out, "--crop", "left"],
                                   "--crop must be", lambda i: i.out / "daetalker_data"),
    # train
    "train: data folder that is not a dataset": Case(
        "train", lambda i: _train(i, data=i.tmp / "none"), "is not a prepared dataset",
        RUN),
    "train: frames of another size than the config's": Case(
        "train", lambda i: _train(i, "--config.model.image_size=64"), "32px frames but this DiffAE config is 64px",
        RUN),
    "train: override of a missing field": Case("train", lambda i: _train(i, "--config.batchsize=4"),
                                               'Did you mean "batch_size"', RUN),
    "train: more sample steps than the diffusion has": Case(
        "train", lambda i: _train(i, "--config.sample_steps=1001"), "--config.sample_steps must be", RUN),
    "train: no workdir": Case("train", lambda i: ["--config", "configs/dae.py:tiny"], "--workdir", RUN),
    "train: override of the wrong type": Case("train", lambda i: _train(i, "--config.batch_size=many"),
                                              "--config.batch_size=many: invalid literal", RUN),
    "train: batch not divisible by the devices": Case("train", lambda i: _train(i, "--config.batch_size=7"),
                                                      "not divisible", RUN),
    "train: unwritable workdir": Case(
        "train", lambda i: ["--config", "configs/dae.py:tiny", "--workdir", i.file("a_file", "x") / "run",
                            f"--config.data_dir={i.data}"], "not writable", lambda i: i.tmp / "a_file" / "run"),
    "train: a checkpoint of another config": Case(
        "train", lambda i: ["--config", "configs/dae.py:tiny", "--workdir", shutil.copytree(i.dae, i.out / "run"),
                            f"--config.data_dir={i.data}", "--config.model.z_channels=16", "--config.num_steps=9"],
        "does not fit this config", lambda i: i.out / "run" / "checkpoints" / "9"),   # see the test below
    # extract
    "extract: nothing asked": Case("extract", lambda i: ["--data", i.data], "nothing to extract",
                                   LATENTS),
    "extract: not a training run": Case("extract", lambda i: ["--data", i.data, "--dae", i.tmp],
                                        "not a training run", LATENTS),
    "extract: a speech2latent run as --dae": Case("extract", lambda i: ["--data", i.data, "--dae", i.s2l],
                                                  "not a DiffAE run", LATENTS),
    "extract: zero batch": Case("extract", lambda i: ["--data", i.data, "--dae", i.dae, "--batch-size", "0"],
                                "must be positive", LATENTS),
    # generate
    "generate: empty audio file": Case("generate", lambda i: _gen(i, **{"--audio": i.file("e.wav", b"")}),
                                       "empty", VIDEO),
    "generate: text, not audio": Case("generate", lambda i: _gen(i, **{"--audio": i.file("t.wav", "hi\n" * 99)}),
                                      "t.wav as audio", VIDEO),
    "generate: silence": Case("generate", lambda i: _gen(i, **{"--audio": i.wav("s.wav", np.zeros(16000))}),
                              "silent", VIDEO),
    "generate: shorter than a frame": Case(
        "generate", lambda i: _gen(i, **{"--audio": i.wav("short.wav", i.speech[:320])}), "0.1 s", VIDEO),
    "generate: malformed pose file": Case(
        "generate", lambda i: _gen(i, **{"--pose": "file:" + str(i.file("p.csv", BAD_POSE_CSV))}),
        "line 3", VIDEO),
    "generate: bad constant pose": Case("generate", lambda i: _gen(i, **{"--pose": "yaw=ten"}), "yaw=10", VIDEO),
    "generate: checkpoints that do not belong together": Case("generate", lambda i: _gen(i, **{"--s2l": i.dae}),
                                                              "speech2latent run", VIDEO),
    "generate: missing speech2latent run": Case("generate", lambda i: _gen(i, **{"--s2l": i.tmp / "no_run"}),
                                                "--s2l", VIDEO),
    "generate: missing reference frame": Case("generate", lambda i: _gen(i, **{"--ref-frame": i.tmp / "none.png"}),
                                              "--ref-frame", VIDEO),
    "generate: video size out of range": Case("generate", lambda i: _gen(i, **{"--video-size": "8"}), "--video-size",
                                              VIDEO),
    "generate: zero DDIM steps": Case("generate", lambda i: _gen(i, **{"--steps": "0"}), "--steps must be", VIDEO),
    "generate: unwritable output": Case("generate", lambda i: _gen(i, **{"--out": i.file("f", "x") / "o.mp4"}),
                                        "not writable", lambda i: i.tmp / "f" / "o.mp4"),
    # evaluate
    "evaluate: not a training run": Case("evaluate", lambda i: _eval(i, **{"--dae": i.tmp}), "not a training run",
                                         REPORT),
    "evaluate: not a dataset": Case("evaluate", lambda i: _eval(i, **{"--data": i.tmp}), "not a prepared dataset",
                                    REPORT),
    "evaluate: not a sync expert": Case("evaluate", lambda i: _eval(i, **{"--sync": i.dae}), "not a sync expert",
                                        REPORT),
    "evaluate: corpus that is not a folder": Case("evaluate", lambda i: _eval(i, **{"--corpus": i.tmp / "none"}),
                                                  "not a folder", REPORT),
    "evaluate: zero inversion steps": Case(
        "evaluate", lambda i: _eval(i, **{"--invert-steps": "0"}),
        "--invert-steps must be a whole number of DDIM steps from 1 to 1000", REPORT),
    "evaluate: more steps than the diffusion has": Case("evaluate", lambda i: _eval(i, **{"--steps": "1001"}),
                                                        "from 1 to 1000", REPORT),
    # the contact sheet
    "sheet: missing video": Case("generation.sheet", lambda i: _sheet(i, **{"--video": i.tmp / "none.mp4"}),
                                 "none.mp4 does not exist", SHEET),
    "sheet: not a dataset": Case("generation.sheet", lambda i: _sheet(i, **{"--data": i.tmp}),
                                 "not a prepared dataset", SHEET),
    "sheet: a clip of another corpus": Case("generation.sheet", lambda i: _sheet(i, **{"--clip": _renamed_clip(i)}),
                                            "clip elsewhere is not in the prepared dataset", SHEET),
    "sheet: a video too short to show": Case("generation.sheet", lambda i: _sheet(i, **{"--video": _short_video(i)}),
                                             "needs at least 30", SHEET),
    # convert_diffae
    "convert_diffae: text as a checkpoint": Case(
        "convert_diffae", lambda i: _convert(i, i.file("last.ckpt", "hello\n" * 99)), "not a zip-format PyTorch",
        CONVERTED),
    "convert_diffae: a zip torch did not write": Case("convert_diffae", lambda i: _convert(i, _zip(i)),
                                                      "no single data.pkl", CONVERTED),
    "convert_diffae: a state dict of another model": Case(
        "convert_diffae", lambda i: _convert(i, DATA / "hubert_tiny" / "pytorch_model.bin"),
        "no 'ema_model.*' tensors", CONVERTED),
    "convert_diffae: a checkpoint of another size": Case(
        "convert_diffae", lambda i: _convert(i, DATA / "diffae_tiny.ckpt", "--preset", "ffhq128"),
        "official DiffAE autoencoder of this size", CONVERTED),
    # the app
    "app: steps off the page's slider": Case("app", lambda i: ["--dae", i.dae, "--s2l", i.s2l, "--steps", "0"],
                                             "--steps must be between 1 and 100", lambda i: i.out),
    "app: missing DiffAE run": Case("app", lambda i: ["--dae", i.tmp / "none", "--s2l", i.s2l], "--dae",
                                    lambda i: i.out),
}


@pytest.fixture
def inputs(dae_run, s2l_run, tiny_dataset32, tiny_corpus, speech, tmp_path) -> Inputs:
    good = write_audio(tmp_path / "good.wav", speech, 16000, "pcm_s16le")
    return Inputs(tmp_path, dae_run, s2l_run, tiny_dataset32, speech, good, first_test_clip(tiny_corpus),
                  tmp_path / "out")


def _run(case: Case, argv: list[str], capsys) -> tuple[int, str]:
    if case.cli == "train":
        proc = subprocess.run([sys.executable, "-m", "daetalker_jax.train", *argv], cwd=ROOT, capture_output=True,
                              text=True, timeout=300)
        return proc.returncode, proc.stderr
    name = "daetalker_jax.synth.__main__" if case.cli == "synth" else f"daetalker_jax.{case.cli}"
    module = importlib.import_module(name)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        run_cli(module.main, argv)
    return exit_info.value.code, capsys.readouterr().err


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input(name, inputs, capsys):
    case = CASES[name]
    argv = [str(a) for a in case.args(inputs)]
    code, err = _run(case, argv, capsys)
    assert code == 2, (code, err[-2000:])
    last = re.split(r"[\r\n]+", err.strip())[-1]   # what the user reads last: our one-line message
    assert last.startswith("error: ") and case.message in last, err[-2000:]
    # A subprocess may show orbax's own logged traceback (a refused restore) above that line; ours never do.
    assert case.cli == "train" or "Traceback" not in err, err[-2000:]
    assert not case.absent(inputs).exists()


def test_a_refused_resume_leaves_the_run_as_it_was(inputs, capsys):
    """The mismatched-config case again, checking the run folder: its config.json (what generation and
    extraction rebuild the model from) and its checkpoints are untouched."""
    case = CASES["train: a checkpoint of another config"]
    argv = [str(a) for a in case.args(inputs)]
    run = inputs.out / "run"
    before = {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()}
    code, _ = _run(case, argv, capsys)
    after = {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()}
    assert code == 2 and after == before
