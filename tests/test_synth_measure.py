"""`measure` recovers mouth opening and head pose from rendered frames within the tolerances stated in
its docstring, across identities, poses and mouth shapes."""

from __future__ import annotations

import numpy as np
import pytest

from daetalker_jax.synth import measure
from daetalker_jax.synth.identity import Identity, background
from daetalker_jax.synth.render import FrameState, Renderer

# size -> (max opening error, max angle error, 95th-percentile angle error), as in the docstring
TOLERANCE = {256: (0.08, 2.5, 1.5), 128: (0.25, 5.0, 3.6)}


def _cases(n_identities: int, per_identity: int, seed: int):
    rng = np.random.default_rng(seed)
    for ident in range(n_identities):
        for _ in range(per_identity):
            yield ident, FrameState(
                yaw=rng.uniform(-20, 20), pitch=rng.uniform(-12, 12), roll=rng.uniform(-10, 10),
                opening=rng.uniform(0, 1), width=rng.uniform(0, 1), rounding=rng.uniform(0, 1),
                blink=rng.uniform(0, 0.3), shoulder=(rng.uniform(-0.05, 0.05), rng.uniform(-0.03, 0.03)))


@pytest.mark.parametrize("size", [256, 128])
def test_measure_recovers_pose_and_opening(size):
    errors = []
    for ident, state in _cases(6, 8, seed=size):
        frame = Renderer(Identity.from_seed(ident), size).render(state)
        m = measure(frame)
        errors.append([m.opening - state.opening, m.yaw - state.yaw, m.pitch - state.pitch, m.roll - state.roll])
    err = np.abs(np.array(errors))
    assert np.isfinite(err).all(), "measure returned NaN for an open-eyed face"
    max_open, max_angle, p95_angle = TOLERANCE[size]
    assert err[:, 0].max() < max_open, err[:, 0].max()
    assert err[:, 1:].max() < max_angle, err[:, 1:].max(0)
    assert np.percentile(err[:, 1:], 95) < p95_angle


def test_mouth_states_are_ordered_at_a_fixed_pose():
    renderer = Renderer(Identity.from_seed(2), 256)
    openings = np.linspace(0, 1, 6)
    got = [measure(renderer.render(FrameState(yaw=8, pitch=-5, opening=o))).opening for o in openings]
    assert np.all(np.diff(got) > 0.1)
    np.testing.assert_allclose(got, openings, atol=0.05)


def test_closed_eyes_and_empty_frames_give_nan():
    renderer = Renderer(Identity.from_seed(0), 256)
    closed = measure(renderer.render(FrameState(blink=1.0, opening=0.5)))
    assert np.isnan(closed.yaw) and np.isnan(closed.pitch)
    empty = measure(background(Identity.from_seed(0), 256))
    assert all(np.isnan([empty.opening, empty.yaw, empty.pitch, empty.roll]))


def test_pixel_work_in_worker_processes_equals_one_process(tmp_path):
    """The evaluation's pixel reader and per-clip fidelity/stability scores give exactly the same values in 2
    spawned workers as in this process."""
    from daetalker_jax.evaluation.pixels import map_in, pixel_scores, worker_pool
    from daetalker_jax.evaluation.suite import Reader
    from daetalker_jax.synth.measure import measure_frames

    videos = [np.stack([Renderer(Identity.from_seed(ident), 128).render(state)
                        for _, state in _cases(1, 3, seed=ident)]) for ident in range(3)]
    reals = videos[1:] + videos[:1]
    picks = [np.array([0, 2])] * 3
    reader = Reader(128, tmp_path, None)   # 128 px: `measure`, no probe to fit
    serial = [measure_frames(v) for v in videos]
    serial_scores = [pixel_scores(v, r, v[p], r[p], p) for v, r, p in zip(videos, reals, picks)]
    with worker_pool(2) as pool:
        parallel = reader.many(videos, pool)
        parallel_scores = map_in(pool, pixel_scores, videos, reals, [v[p] for v, p in zip(videos, picks)],
                                 [r[p] for r, p in zip(reals, picks)], picks)
    assert len(parallel) == 3
    for (so, sp), (po, pp) in zip(serial, parallel):
        assert so.shape == (3,) and sp.shape == (3, 3)
        np.testing.assert_array_equal(so, po)
        np.testing.assert_array_equal(sp, pp)
    assert np.isfinite(serial[0][0]).all()
    assert parallel_scores == serial_scores
    assert serial_scores[0]["frames"] == 3 and serial_scores[0]["recon/psnr_shared_xT"] == float("inf")
    assert 0 < serial_scores[0]["ssim"] < 1


def test_mouth_probe_primal_and_dual_ridge_agree():
    """More frames than features: the probe solves the (features, features) system; the weights are the
    dual-form ridge solution's (relative error < 1e-6)."""
    from daetalker_jax.synth.probe import RIDGE, MouthProbe, _features

    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (3200, 8, 8, 3), np.uint8)    # 3,200 frames > 32 x 32 x 3 = 3,072 features
    opening = rng.random(3200)
    probe = MouthProbe(frames, opening)
    x = _features(frames)
    x -= x.mean(0)
    dual = x.T @ np.linalg.solve(x @ x.T + RIDGE * np.eye(len(x)), opening - opening.mean())
    assert np.linalg.norm(probe.weights - dual) < 1e-6 * np.linalg.norm(dual)
