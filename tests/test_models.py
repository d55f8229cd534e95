import math
import random

import pytest
import torch

from audiovae.config import ConfigError, LossConfig, ModelConfig, from_dict
from audiovae.losses import ReconstructionLoss, kl_loss, kl_weight
from audiovae.models.vae import VAE, phase_noise

TINY = ModelConfig(enc_channels=16, enc_blocks=1, dec_channels=16, dec_blocks=2, latent_dim=4)


def tiny_vae(seed=0, **kw):
    torch.manual_seed(seed)
    return VAE(ModelConfig(**{**TINY.__dict__, **kw})).eval()


def test_shapes_and_rates():
    m = tiny_vae()
    x = torch.randn(2, 16000) * 0.1
    post = m.encode(x)
    assert post.mean.shape == (2, 4, 16000 // 320)
    assert m.decode(post.mean).shape == (2, 16000)
    assert m.reconstruct(x[:, :12345]).shape == (2, 12345)
    assert (m.sample_rate, m.hop_length, m.latent_dim) == (16000, 320, 4)
    assert (post.kl() >= 0).all()


@pytest.mark.parametrize("seed,noise_bands", [(0, 0), (1, 0), (2, 0), (3, 4)])
def test_streaming_equals_whole(seed, noise_bands):
    m = tiny_vae(seed, noise_bands=noise_bands)
    if noise_bands:
        torch.nn.init.constant_(m.decoder.noise.bias, 2.0)  # gate mostly open: the phase noise matters
    rng = random.Random(seed)
    x = torch.randn(1, 16000 * 2) * 0.1
    with torch.no_grad():
        z = m.encode(x).mean
        whole = m.decode(z)
        enc, dec = m.stream_encoder(), m.stream_decoder()
        parts, pos = [], 0
        while pos < x.shape[1]:
            n = rng.randint(1, 2500)
            parts.append(enc(x[:, pos : pos + n]))
            pos += n
        zs = torch.cat(parts, -1)
        outs, t = [], 0
        while t < z.shape[-1]:
            n = rng.randint(1, 9)
            outs.append(dec(z[..., t : t + n]))
            t += n
        outs.append(dec.flush())
        y = torch.cat(outs, -1)
    assert zs.shape == z.shape and torch.allclose(zs, z, atol=1e-4)
    assert y.shape == whole.shape and torch.allclose(y, whole, atol=1e-4)


def test_phase_noise_is_a_fixed_hash_of_frame_and_bin():
    a = phase_noise(0, 50, 321)
    assert a.shape == (321, 50) and a.min() >= -math.pi and a.max() < math.pi
    assert torch.equal(torch.cat([phase_noise(0, 20, 321), phase_noise(20, 30, 321)], -1), a)
    assert abs(float(a.mean())) < 0.05 and float(a.std()) == pytest.approx(math.pi / math.sqrt(3), rel=0.02)
    assert float(a[0, 7]) == pytest.approx(float(phase_noise(7, 1, 321)[0, 0]))  # any block split, same value


def test_noise_gate_adds_phase_noise_to_a_trained_decoder():
    plain, gated = tiny_vae(0), tiny_vae(0, noise_bands=4)
    missing, unexpected = gated.load_state_dict(plain.state_dict(), strict=False)
    assert set(missing) == {"decoder.noise.weight", "decoder.noise.bias"} and not unexpected
    z = torch.randn(1, 4, 40)
    with torch.no_grad():
        assert not torch.allclose(gated.decode(z), plain.decode(z), atol=1e-3)  # starts half open
        torch.nn.init.constant_(gated.decoder.noise.bias, -30.0)  # closed: the decoder it was added to
        assert torch.allclose(gated.decode(z), plain.decode(z), atol=1e-5)


def test_model_is_causal():
    m = tiny_vae()
    x = torch.randn(1, 8000) * 0.1
    x2 = x.clone()
    x2[:, 6400:] = 0.5
    with torch.no_grad():
        a, b = m.encode(x).mean, m.encode(x2).mean
    assert torch.equal(a[..., :20], b[..., :20])  # frames before sample 6400 are unchanged


def test_config_errors():
    with pytest.raises(ConfigError, match="latent_dimm"):
        from_dict(ModelConfig, {"latent_dimm": 3})
    with pytest.raises(ConfigError, match="'latent_dim': expected int"):
        from_dict(ModelConfig, {"latent_dim": "three"})
    with pytest.raises(ConfigError, match="n_fft"):
        VAE(ModelConfig(n_fft=500))


def test_losses_are_zero_for_identity_and_positive_otherwise():
    loss = ReconstructionLoss(LossConfig(), 16000)
    x = torch.randn(2, 8000) * 0.1
    same, _ = loss(x, x)
    other, parts = loss(x * 0.5, x)
    assert float(same) < 1e-5 and float(other) > 0.1 and set(parts) == {"mel", "wave", "complex"}


def test_the_log_magnitude_term_sees_a_frame_rate_comb_that_log_mel_averages_away():
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(1, 16000, generator=g) * 0.1
    comb = noise[:, :320].repeat(1, 50)  # periodic at 50 Hz: a line spectrum with the same envelope
    other = torch.randn(1, 16000, generator=g) * 0.1  # another noise: the same smooth spectrum
    loss = ReconstructionLoss(LossConfig(logmag_n_ffts=[2048]), 16000)
    _, to_comb = loss(comb, noise)
    _, to_noise = loss(other, noise)
    assert set(to_comb) == {"mel", "wave", "complex", "logmag"}
    gap = {k: float(to_comb[k] / to_noise[k]) for k in ("mel", "logmag")}
    assert gap["logmag"] > 2 and gap["mel"] < 1.2, gap  # measured: 2.8 and 1.09
    with pytest.raises(ConfigError, match="logmag_n_ffts"):
        LossConfig(logmag_n_ffts=[0])


def test_kl_free_bits_and_warmup():
    m = tiny_vae()
    post = m.encode(torch.randn(1, 3200) * 0.1)
    assert float(kl_loss(post, free_bits=100.0)) == pytest.approx(100.0 * 4)
    cfg = LossConfig(kl_weight=1e-2, kl_start_weight=1e-6, kl_warmup_steps=100)
    assert kl_weight(0, cfg) == pytest.approx(1e-6)
    assert kl_weight(50, cfg) == pytest.approx(1e-4)
    assert kl_weight(1000, cfg) == pytest.approx(1e-2)
