"""A small Gradio web app around `Talker`: upload or record speech, choose the head pose and DDIM steps, get the video.

The checkpoints are loaded once at start; every request then only runs speech2latent and the DDIM decoder, so a
clip takes as long as `python -m daetalker_jax.generate` minus the start-up. Input problems (silence, too short,
a malformed pose file) are shown in the page as the same messages the CLI prints.
"""

from __future__ import annotations

import argparse
import functools
import signal
import tempfile
import uuid
from pathlib import Path
from typing import TYPE_CHECKING

from daetalker_jax.errors import HelpFormatter

if TYPE_CHECKING:
    import gradio as gr

    from daetalker_jax.talker import Talker

POSE_MODES = ("predicted", "constant angles", "pose file")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m daetalker_jax.app", description=__doc__,
                                formatter_class=HelpFormatter)
    p.add_argument("--dae", type=Path, required=True, help="the DiffAE training run (its --workdir)")
    p.add_argument("--s2l", type=Path, required=True, help="the speech2latent training run (its --workdir)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 for every interface)")
    p.add_argument("--port", type=int, default=7860, help="port to listen on")
    p.add_argument("--steps", type=int, default=20, help="default DDIM steps per frame (the page can change it)")
    p.add_argument("--share", action="store_true", help="also open a public gradio.live link (needs internet)")
    return p.parse_args(argv)


def pose_spec(mode: str, yaw: float, pitch: float, roll: float, pose_file: str | None) -> str:
    """The page's pose controls as a `--pose` value, so the CLI's parser (and its messages) does the rest."""
    from daetalker_jax.errors import UserError

    if mode == "constant angles":
        return f"yaw={yaw:.3f},pitch={pitch:.3f},roll={roll:.3f}"   # fixed-point: parse_pose reads no exponents
    if mode == "pose file":
        if not pose_file:
            raise UserError("pose mode 'pose file' needs a CSV of yaw,pitch,roll per frame; upload one")
        return f"file:{pose_file}"
    if mode == "predicted":
        return "predicted"
    raise UserError(f"unknown pose mode {mode!r}; choose one of {', '.join(POSE_MODES)}")


def build(dae: Path, s2l: Path, steps: int) -> gr.Blocks:
    """Loads both checkpoints once and wires the page to them."""
    import gradio as gr

    from daetalker_jax.errors import UserError
    from daetalker_jax.generation.pose import parse_pose
    from daetalker_jax.media import load_audio
    from daetalker_jax.talker import Talker, check_speech
    from daetalker_jax.trainers.base import load_trained

    models = load_trained(dae), load_trained(s2l)

    @functools.lru_cache(maxsize=4)
    def talker(n_steps: int) -> Talker:
        # Talker fixes its DDIM steps when its decoder is compiled; one per steps value shares the loaded models.
        return Talker(*models, steps=n_steps)

    talker(steps)                               # checkpoint mismatches fail at start, not on the first request
    out_dir = tempfile.TemporaryDirectory(prefix="daetalker-app-")   # removed at exit (Ctrl-C or SIGTERM)

    def generate(audio: str | None, mode: str, yaw: float, pitch: float, roll: float, pose_file: str | None,
                 n_steps: float, seed: float, progress: gr.Progress = gr.Progress(track_tqdm=True)) -> str:
        """Speech file -> path of the mp4; UserError becomes gr.Error so the page shows the CLI's message."""
        try:
            if not audio:
                raise UserError("no speech given: upload a recording or record one with the microphone")
            speech = check_speech(load_audio(audio))
            pose = parse_pose(pose_spec(mode, yaw, pitch, roll, pose_file))
            out = Path(out_dir.name) / f"{uuid.uuid4().hex}.mp4"
            return talker(int(n_steps)).generate(speech, out, pose=pose, seed=int(seed))["out"]
        except UserError as e:
            raise gr.Error(str(e)) from e

    with gr.Blocks(title="DAE-Talker (JAX)", analytics_enabled=False) as demo:
        gr.Markdown("## DAE-Talker\nSpeech in, talking-head video out (25 fps, the speech muxed in).")
        with gr.Row():
            with gr.Column():
                audio = gr.Audio(sources=["upload", "microphone"], type="filepath", label="speech")
                mode = gr.Radio(list(POSE_MODES), value="predicted", label="head pose")
                angles = [gr.Slider(-30, 30, value=0, step=0.5, label=f"{a} (degrees, constant angles)")
                          for a in ("yaw", "pitch", "roll")]
                pose_file = gr.File(file_types=[".csv", ".txt"], type="filepath",
                                    label="pose file: yaw,pitch,roll per 25 fps frame")
                n_steps = gr.Slider(1, 100, value=steps, step=1, label="DDIM steps (more: sharper, slower)")
                seed = gr.Number(value=0, precision=0, label="seed of the shared x_T")
                button = gr.Button("Generate", variant="primary")
            video = gr.Video(label="talking head")
        button.click(generate, [audio, mode, *angles, pose_file, n_steps, seed], video, api_name="generate")
    return demo


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from daetalker_jax.xla_cache import enable_compilation_cache

    enable_compilation_cache()
    from daetalker_jax.errors import UserError, require_run

    if not 1 <= args.steps <= 100:
        raise UserError(f"--steps must be between 1 and 100 (the page's slider), got {args.steps}")
    require_run("--dae", args.dae)
    require_run("--s2l", args.s2l)
    demo = build(args.dae, args.s2l, args.steps)
    signal.signal(signal.SIGTERM, signal.default_int_handler)   # stop as on Ctrl-C: close, clean up the videos
    demo.launch(server_name=args.host, server_port=args.port, share=args.share)
    return 0


if __name__ == "__main__":
    from daetalker_jax.errors import run_cli

    run_cli(main)
