"""The sync expert: LSE conventions on a hand-built embedding model, the official syncnet_v2 converter
round trip (no torch needed), and a tiny expert trained on the tiny corpus with the shared trainer."""

from __future__ import annotations

import json

import numpy as np
import pytest
from flax import nnx

from daetalker_jax.data import pipeline
from daetalker_jax.errors import UserError
from daetalker_jax.metrics import syncnet
from daetalker_jax.trainers.base import load_trained
from daetalker_jax.trainers.sync import SyncTask


class KnownEmbeddings:
    """Stands in for SyncNet in `lse`: a video window embeds as its 5 frames' mean pixel, an audio window as
    its 5 frames' mean mel value, so the distance is 0 exactly where the audio belongs to the video."""

    def embed_video(self, x):
        return x.reshape(x.shape[0], 5, -1).mean(-1)

    def embed_audio(self, x):
        return x.reshape(x.shape[0], 5, -1).mean(-1)


def _known_clip(n: int, lag: int) -> tuple[np.ndarray, np.ndarray]:
    """Frame i of the video shows the mouth of audio frame i - lag (video lags audio by `lag`)."""
    signal = np.random.RandomState(0).randint(0, 255, n + 40).astype(np.float32)
    video = np.repeat(signal[20 - lag:20 - lag + n, None, None], 6, 1).repeat(6, 2)
    mel = np.repeat(signal[20:20 + n], syncnet.MELS_PER_FRAME)[:, None].repeat(80, 1)
    return video, mel


@pytest.mark.parametrize("lag", [0, 3, -7, 15])
def test_lse_offset_sign_and_scores_on_known_embeddings(lag, monkeypatch):
    monkeypatch.setattr(syncnet.nnx, "split", lambda m: (m, None))
    monkeypatch.setattr(syncnet.nnx, "merge", lambda g, s: g)
    r = syncnet.lse(KnownEmbeddings(), *_known_clip(60, lag), max_offset=15)
    assert r["offset"] == lag and r["lse_d"] == pytest.approx(0.0, abs=1e-4)
    assert r["lse_c"] == pytest.approx(np.median(r["distances"]) - r["lse_d"]) and r["lse_c"] > 1.0
    assert r["distances"].shape == (31,)


def test_official_syncnet_round_trip_without_torch():
    rng = np.random.RandomState(0)
    model = syncnet.SyncNetV2(rngs=nnx.Rngs(1))
    state = {k: (v + rng.rand(*v.shape).astype(np.float32) if "running_var" in k else v + 0.1 * rng.randn(*v.shape)
                 .astype(np.float32)) for k, v in syncnet.official_state_dict(model).items()}
    assert state["netcnnlip.0.weight"].shape == (96, 3, 5, 7, 7)
    assert state["netcnnaud.18.weight"].shape == (512, 256, 5, 4)
    assert state["netfclip.3.weight"].shape == (1024, 512) and len(state) == 88
    first = syncnet.syncnet_from_state_dict(state)
    again = syncnet.syncnet_from_state_dict({**syncnet.official_state_dict(first),
                                             "netcnnaud.1.num_batches_tracked": 0})
    for (key, a), b in zip(syncnet.official_state_dict(first).items(), syncnet.official_state_dict(again).values()):
        np.testing.assert_array_equal(a, b, err_msg=key)
        np.testing.assert_array_equal(a, state[key], err_msg=key)
    cc = syncnet.mfcc((rng.randn(16000) * 3000).astype(np.int16))
    assert cc.shape == (99, 13)
    x = np.swapaxes(cc[None, :20], 1, 2).astype(np.float32)
    out = np.asarray(first.embed_audio(x))
    assert out.shape == (1, 1024) and np.isfinite(out).all()
    np.testing.assert_array_equal(out, np.asarray(again.embed_audio(x)))
    with pytest.raises(UserError, match="netcnnaud.0.weight"):
        syncnet.syncnet_from_state_dict({k: v for k, v in state.items() if k != "netcnnaud.0.weight"})
    with pytest.raises(UserError, match="shape"):
        syncnet.syncnet_from_state_dict({**state, "netfcaud.0.weight": np.zeros((512, 256), np.float32)})
    with pytest.raises(UserError):   # torch is not installed here; with torch: no such file
        syncnet.load_syncnet_weights("/nonexistent/syncnet_v2.model")


def test_tiny_sync_expert_separates_in_sync_from_shifted(sync_run):
    losses = [m["loss"] for m in map(json.loads, (sync_run / "metrics.jsonl").read_text().splitlines()) if "loss" in m]
    assert losses and np.isfinite(losses[-1])
    config, model = load_trained(sync_run)
    task = SyncTask(config)   # its data_dir: the fixture's copy of the tiny dataset, with the mouth crops
    source = pipeline.data_source(config.data_dir, "clips", "train")
    results = []
    for i in range(len(source)):
        ex = source[i]
        mouths, mel = np.asarray(task.mouths[int(ex["clip"])]), np.asarray(ex["mel"])
        results.append((task.evaluate(model, mouths, mel), mouths, mel))
    acc = np.mean([r["accuracy"] for r, _, _ in results])
    # chance is 0.5 (aligned vs shifted audio, each equally likely nearer); over the thousands of (window,
    # shift) pairs of the train clips 0.6 is far outside chance; 150 CPU steps reach ~0.7 (in-sample: the
    # tiny corpus has ~9 s of video, too little to test generalisation)
    assert acc > 0.6, (acc, losses[-1])
    assert all(abs(r["offset"]) <= 1 for r, _, _ in results), [r["offset"] for r, _, _ in results]
    r, mouths, mel = max(results, key=lambda x: len(x[1]))
    k = 4   # video lags audio by k frames: video frame i now shows the mouth of audio frame i - k
    shifted = task.evaluate(model, mouths[:-k], mel[syncnet.MELS_PER_FRAME * k:])
    assert abs(shifted["offset"] - k) <= 1, shifted["offset"]
    assert shifted["lse_d"] < np.median(shifted["distances"])
