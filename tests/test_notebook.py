"""The Colab notebook runs the main job end to end, headless, on its `tiny` profile (a few seconds of corpus,
32 px, a few training steps), and leaves a talking video of held-out speech and its contact sheet."""

from __future__ import annotations

import json
from pathlib import Path

import nbclient
import nbformat

from daetalker_jax.data.pipeline import SAMPLES_PER_FRAME
from daetalker_jax.media import load_audio, read_mp4

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "daetalker_colab.ipynb"



def _held_out_clip(corpus: Path) -> Path:
    """The clip the notebook should have spoken, chosen here independently: the first test clip of the
    held-out voice."""
    manifest = json.loads((corpus / "manifest.json").read_text())
    test = [c for c in manifest["clips"] if c["split"] == "test"]
    held = [c for c in test if c["voice"] in manifest["held_out_voices"]]
    assert held, "the tiny corpus has no held-out-voice test clip"
    return corpus / held[0]["file"]


def test_notebook_is_committed_valid_and_without_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)
    assert "parameters" in code[0].metadata.get("tags", [])


def test_notebook_runs_the_tiny_main_job(tmp_path, monkeypatch):
    from PIL import Image

    work = tmp_path / "work"
    monkeypatch.setenv("DAETALKER_PROFILE", "tiny")
    monkeypatch.setenv("DAETALKER_WORK", str(work))
    monkeypatch.setenv("REPO_DIR", str(ROOT))
    # The kernel and the stages it starts inherit os.environ: XLA_FLAGS, JAX_PLATFORMS and the compilation
    # cache from conftest.
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=900, kernel_name="python3",
                                     resources={"metadata": {"path": str(ROOT)}})
    client.execute()   # raises CellExecutionError if any cell raised

    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert not errors

    clip = _held_out_clip(work / "corpus")
    video = read_mp4(work / "talking.mp4")
    speech = load_audio(clip)
    assert len(video.frames) == -(-len(speech) // SAMPLES_PER_FRAME)   # ceil(seconds * 25)
    assert video.fps == 25 and video.audio is not None and len(video.audio) > 0.9 * len(speech)
    assert video.frames.shape[1:] == (32, 32, 3)

    with Image.open(work / "talking.png") as sheet:
        sheet.verify()
        assert sheet.format == "PNG" and min(sheet.size) > 100
    shown = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "display_data"]
    assert any("text/html" in o.data and "video/mp4" in o.data["text/html"] for o in shown)
    assert sum("image/png" in o.data for o in shown) >= 2   # the corpus preview and the contact sheet
