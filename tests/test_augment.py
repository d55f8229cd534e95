"""Training-time augmentation: deterministic for a seed, shapes kept, never clipped, each effect does something."""

from __future__ import annotations

import numpy as np
import pytest

from audiovae.config import ConfigError
from audiovae.train.augment import AugmentConfig, augment, draw_speed
from audiovae.train.data import ClipDataset, DataConfig

SR = 16000
EFFECTS = ("pitch", "eq", "bandlimit", "telephone", "reverb", "noise")


def loud(n: int = 8000, seed: int = 0) -> np.ndarray:
    """A near-full-scale mix of tones and noise (channels, samples)."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / SR
    x = 0.5 * np.sin(2 * np.pi * 220 * t) + 0.3 * np.sin(2 * np.pi * 3100 * t) + 0.15 * rng.standard_normal(n)
    return (0.98 * x / np.abs(x).max())[None].astype(np.float32)


def run(cfg: AugmentConfig, x: np.ndarray, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return augment(x, SR, cfg, rng, draw_speed(cfg, rng))


@pytest.mark.parametrize("effect", EFFECTS)
def test_each_effect_changes_the_crop_keeps_its_shape_and_never_clips(effect):
    x = loud()
    y = run(AugmentConfig(**{effect: 1.0}), x, seed=3)
    assert y.shape == x.shape and y.dtype == np.float32
    assert np.isfinite(y).all() and np.abs(y).max() <= 0.99 + 1e-6
    assert not np.allclose(y, x, atol=1e-3)


def test_all_effects_are_deterministic_for_a_seed():
    cfg, x = AugmentConfig(**{e: 1.0 for e in (*EFFECTS, "speed")}), loud(seed=1)
    a, b, c = run(cfg, x, 7), run(cfg, x, 7), run(cfg, x, 8)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert np.abs(a).max() <= 0.99 + 1e-6


def test_speed_resamples_to_the_crop_length_the_caller_asked_for():
    cfg = AugmentConfig(speed=1.0, speed_range=[1.1, 1.1])
    rng = np.random.default_rng(0)
    speed = draw_speed(cfg, rng)
    assert speed == pytest.approx(1.1)
    y = augment(loud(int(8000 * speed)), SR, cfg, rng, speed)  # read 1.1x the crop, get the crop back
    assert y.shape == (1, 8000)
    assert draw_speed(AugmentConfig(), np.random.default_rng(0)) == 1.0


def test_off_by_default_and_validated():
    assert not AugmentConfig().active
    with pytest.raises(ConfigError, match="probability"):
        AugmentConfig(noise=1.5).validate()
    with pytest.raises(ConfigError, match="lowpass_hz"):
        AugmentConfig(lowpass_hz=[5000.0]).validate()
    with pytest.raises(ConfigError, match="max_peak"):
        DataConfig(augment=AugmentConfig(max_peak=2.0)).validate()


def test_clip_dataset_augments_training_crops_only(tmp_path):
    import soundfile as sf

    from audiovae.data.manifest import Entry

    sf.write(tmp_path / "a.flac", loud(3 * SR)[0], SR)
    e = Entry(id="a#0", path=str(tmp_path / "a.flac"), offset=0.0, duration=3.0, sample_rate=SR, split="train",
              source="s", license="x", labels={})
    aug = AugmentConfig(speed=1.0, eq=1.0, noise=1.0)
    plain = DataConfig(sample_rate=SR, gain_db=[0.0, 0.0], polarity_flip=False)
    cfg = DataConfig(sample_rate=SR, gain_db=[0.0, 0.0], polarity_flip=False, augment=aug)
    with_aug, without = ClipDataset([e], cfg, root=tmp_path), ClipDataset([e], plain, root=tmp_path)
    a, b = with_aug[(0, 5)]["audio"], with_aug[(0, 5)]["audio"]
    assert a.shape == (1, SR // 2) and (a == b).all()  # same draw, same crop
    assert not np.allclose(a.numpy(), without[(0, 5)]["audio"].numpy(), atol=1e-3)
    ev = ClipDataset([e], cfg, root=tmp_path, train=False)  # evaluation crops are never augmented
    assert (ev[0]["audio"] == ClipDataset([e], plain, root=tmp_path, train=False)[0]["audio"]).all()
