"""Training data: crops, augmentation, labels, bad entries, the data module, shards and `data shard`."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import soundfile as sf
import torch
import webdataset as wds
from typer.testing import CliRunner

from audiovae import audio, cli
from audiovae.config import ConfigError
from audiovae.data.manifest import Entry, write_manifest
from audiovae.train.data import (
    AudioDataModule,
    ClipDataset,
    ClipSampler,
    DataConfig,
    DataError,
    ShardDataset,
    balanced_weights,
    vocabulary,
    write_shards,
)

SR = 8000
CROP = 2000  # 0.25 s at SR


def _ramp(path, frames, sr=SR):
    """A 16-bit file whose sample i holds the value i (read back as i / 32768)."""
    sf.write(path, np.arange(frames, dtype=np.int16), sr, subtype="PCM_16")


def _entry(id, path, offset=0.0, duration=1.0, split="train", sr=SR, **labels):
    return Entry(id=id, path=path, offset=offset, duration=duration, sample_rate=sr, split=split,
                 source="test", license="CC0-1.0", labels=labels)


def _config(**kw) -> DataConfig:
    base = dict(sample_rate=SR, crop_seconds=CROP / SR, eval_seconds=CROP / SR, batch_size=2, num_workers=0,
                gain_db=[0.0, 0.0],
                polarity_flip=False)
    return DataConfig(**(base | kw))


def _index(x: torch.Tensor) -> np.ndarray:
    """Sample indices encoded by a ramp crop."""
    return np.round(x.numpy()[0] * 32768).astype(int)


@pytest.fixture
def corpus(tmp_path):
    (tmp_path / "audio").mkdir()
    _ramp(tmp_path / "audio/a.wav", 2 * SR)
    _ramp(tmp_path / "audio/b.flac", SR)
    _ramp(tmp_path / "audio/short.wav", SR // 10)
    entries = [
        _entry("a0", "audio/a.wav", 0.0, 1.0, lang="en", src="x"),
        _entry("a1", "audio/a.wav", 1.0, 1.0, lang="fr", src="x"),
        _entry("b0", "audio/b.flac", 0.0, 1.0, lang="en", src="y"),
        _entry("s0", "audio/short.wav", 0.0, 0.1, lang="de", src="x"),
        _entry("v0", "audio/a.wav", 0.5, 1.0, split="valid", lang="es", src="x"),
        _entry("t0", "audio/b.flac", 0.0, 1.0, split="test", lang="en", src="y", text="hello"),
    ]
    return write_manifest(tmp_path / "manifest.jsonl", entries)


def test_crops_have_the_crop_length_and_short_clips_are_zero_padded(corpus):
    ds = ClipDataset(corpus, _config())
    assert [e.id for e in ds.entries] == ["a0", "a1", "b0", "s0"]
    for i in range(len(ds)):
        item = ds[(i, 0)]
        assert item["audio"].dtype == torch.float32 and item["audio"].shape == (1, CROP)
    short = ds[3]["audio"]
    assert torch.count_nonzero(short[0, SR // 10 :]) == 0 and _index(short)[SR // 10 - 1] == SR // 10 - 1


def test_crops_never_leave_the_entry_region(tmp_path):
    _ramp(tmp_path / "r.wav", 2 * SR)
    m = write_manifest(tmp_path / "m.jsonl", [_entry("r", "r.wav", offset=0.5, duration=0.75)])
    ds = ClipDataset(m, _config())
    first, end = SR // 2, SR // 2 + 3 * SR // 4
    starts = set()
    for draw in range(40):
        idx = _index(ds[(0, draw)]["audio"])
        assert (np.diff(idx) == 1).all() and idx[0] >= first and idx[-1] < end
        starts.add(idx[0])
    assert len(starts) > 10
    assert _index(ClipDataset(m, _config(), train=False)[0]["audio"])[0] == first + (end - first - CROP) // 2
    assert _index(ClipDataset(m, _config(eval_crop="start"), train=False)[0]["audio"])[0] == first


def test_other_rates_are_resampled_and_channels_repeated(tmp_path):
    sf.write(tmp_path / "hi.wav", np.full(16000, 0.25, dtype=np.float32), 16000, subtype="PCM_16")
    m = write_manifest(tmp_path / "m.jsonl", [_entry("h", "hi.wav", sr=16000)])
    x = ClipDataset(m, _config(channels=2), train=False)[0]["audio"]
    assert x.shape == (2, CROP) and torch.allclose(x[:, 100:-100], torch.tensor(0.25), atol=1e-3)


def test_gain_and_polarity_are_random_within_the_range(tmp_path):
    sf.write(tmp_path / "c.wav", np.full(SR, 0.5, dtype=np.float32), SR, subtype="PCM_16")
    m = write_manifest(tmp_path / "c.jsonl", [_entry("c", "c.wav")])
    ds = ClipDataset(m, _config(gain_db=[-12.0, -3.0], polarity_flip=True))
    peaks = np.array([float(ds[(0, draw)]["audio"][0, 0]) for draw in range(60)])
    lo, hi = 0.5 * 10 ** (-12 / 20), 0.5 * 10 ** (-3 / 20)
    assert ((np.abs(peaks) >= lo - 1e-4) & (np.abs(peaks) <= hi + 1e-4)).all()
    assert (peaks > 0).any() and (peaks < 0).any() and np.abs(peaks).std() > 0.02
    plain = ClipDataset(m, _config(gain_db=[-12.0, -3.0], polarity_flip=True), train=False)[0]["audio"]
    assert torch.allclose(plain, torch.tensor(0.5))


def test_labels_come_from_a_sorted_vocabulary_of_all_splits(corpus):
    ds = ClipDataset(corpus, _config(label_key="lang"))
    assert ds.vocab == ["de", "en", "es", "fr"]
    assert ds.labels == [1, 3, 1, 0]
    assert ds[(1, 0)]["label"] == 3
    assert ClipDataset(corpus, _config())[0]["label"] == -1
    assert ClipDataset(corpus, _config(label_key="lang"), vocab=["fr"])[0]["label"] == -1
    assert vocabulary(ds.entries, "missing") == []


def test_crops_are_reproducible_from_the_seed(corpus):
    a, b = ClipDataset(corpus, _config(seed=3)), ClipDataset(corpus, _config(seed=3))
    assert torch.equal(a[(0, 5)]["audio"], b[(0, 5)]["audio"])
    assert not torch.equal(a[(0, 5)]["audio"], a[(0, 6)]["audio"])
    assert not torch.equal(a[(0, 5)]["audio"], ClipDataset(corpus, _config(seed=4))[(0, 5)]["audio"])


def test_preloaded_crops_equal_crops_read_from_files(corpus, tmp_path):
    plain, cached = ClipDataset(corpus, _config(seed=2)), ClipDataset(corpus, _config(seed=2, preload=True))
    assert len(cached._cache) == 3
    for key in [(0, 1), (1, 4), (2, 9), (3, 0)]:
        assert torch.equal(plain[key]["audio"], cached[key]["audio"])
    (tmp_path / "audio/b.flac").write_bytes(b"not flac")  # a file that fails to preload is skipped later
    broken = ClipDataset(corpus, _config(preload=True))
    assert len(broken._cache) == 2 and broken[2]["audio"].shape[-1] == CROP and broken.skipped == 1


def test_sampler_numbers_draws_across_epochs_and_weights():
    s = ClipSampler(10, seed=1)
    e0, e1 = list(s), list(s)
    assert e0 == list(ClipSampler(10, seed=1)) and sorted(i for i, _ in e0) == list(range(10))
    assert [d for _, d in e0] == list(range(10)) and [d for _, d in e1] == list(range(10, 20))
    assert [i for i, _ in e0] != [i for i, _ in e1]
    s.set_epoch(0)
    assert list(s) == e0
    w = ClipSampler(1000, weights=[1.0] + [0.0] * 999, seed=0)
    assert {i for i, _ in w} == {0} and len(w) == 1000
    ds_keys = list(w)
    assert len({d for _, d in ds_keys}) == 1000  # one entry drawn 1000 times: 1000 different crops


def test_balanced_weights_give_each_value_an_equal_share(corpus):
    entries = ClipDataset(corpus, _config()).entries
    w = balanced_weights(entries, "src")
    assert w == [1 / 3, 1 / 3, 1.0, 1 / 3]
    assert balanced_weights(entries, "none") == [0.25] * 4


def test_eval_crops_are_deterministic(corpus):
    ds = ClipDataset(corpus, _config(gain_db=[-12.0, 0.0], polarity_flip=True), "valid", train=False)
    assert [e.id for e in ds.entries] == ["v0"]
    a, b = ds[0]["audio"], ds[(0, 7)]["audio"]
    assert torch.equal(a, b) and _index(a)[0] == SR // 2 + (SR - CROP) // 2


def test_bad_entries_are_skipped_and_counted(tmp_path, caplog):
    _ramp(tmp_path / "good.wav", SR)
    (tmp_path / "corrupt.wav").write_bytes(b"RIFF this is not audio at all" * 10)
    (tmp_path / "empty.wav").write_bytes(b"")
    entries = [
        _entry("missing", "missing.wav"),
        _entry("corrupt", "corrupt.wav"),
        _entry("good", "good.wav"),
        _entry("empty", "empty.wav"),
        _entry("tiny", "good.wav", duration=0.05),
    ]
    ds = ClipDataset(write_manifest(tmp_path / "m.jsonl", entries), _config())
    assert ds.filtered == 1 and len(ds) == 4
    for draw in range(2):
        for i in range(len(ds)):
            assert _index(ds[(i, draw)]["audio"])[0] >= 0
    assert ds.skipped == 3
    assert sum("skipping unreadable entry" in r.message for r in caplog.records) == 3
    only_bad = ClipDataset(entries[:2], _config(), root=tmp_path)
    with pytest.raises(DataError, match="no readable entries"):
        only_bad[0]


def test_config_is_validated():
    with pytest.raises(ConfigError, match="gain_db"):
        _config(gain_db=[0.0, -6.0]).validate()
    with pytest.raises(ConfigError, match="eval_crop"):
        _config(eval_crop="end").validate()
    with pytest.raises(ConfigError, match="manifests or shards"):
        AudioDataModule(_config())


def test_datamodule_batches(corpus):
    dm = AudioDataModule(_config(manifests=[str(corpus)], batch_size=2, label_key="lang", weights_by="src"))
    dm.setup("fit")
    batches = list(dm.train_dataloader())
    assert len(batches) == 2
    for b in batches:
        assert b["audio"].shape == (2, 1, CROP) and b["label"].dtype == torch.int64
        assert b["label"].shape == (2,)
    (val,) = list(dm.val_dataloader())
    assert val["audio"].shape == (1, 1, CROP) and val["label"].tolist() == [dm.vocab.index("es")]
    (test,) = list(dm.test_dataloader())
    assert test["label"].tolist() == [dm.vocab.index("en")]


def test_datamodule_worker_sees_skips(tmp_path):
    _ramp(tmp_path / "good.wav", SR)
    entries = [_entry("missing", "missing.wav"), _entry("good", "good.wav")]
    m = write_manifest(tmp_path / "m.jsonl", entries)
    dm = AudioDataModule(_config(manifests=[str(m)], num_workers=1, batch_size=1))
    dm.setup("fit")
    assert len(list(dm.train_dataloader())) == 2
    assert dm._sets["train"].skipped == 1


def _shard_corpus(tmp_path, n=12):
    (tmp_path / "audio").mkdir()
    entries = []
    for i in range(n):
        frames = SR // 2 + 200 * i
        _ramp(tmp_path / f"audio/{i}.wav", frames)
        entries.append(_entry(f"clip.{i}", f"audio/{i}.wav", 0.0, frames / SR, lang=["en", "fr", "de"][i % 3],
                              text=f"clip {i}"))
    entries.append(_entry("valid", "audio/0.wav", 0.1, 0.2, split="valid", lang="it"))
    entries.append(_entry("gone", "audio/missing.wav"))
    return write_manifest(tmp_path / "manifest.jsonl", entries), entries[:n]


def test_shards_round_trip(tmp_path):
    manifest, entries = _shard_corpus(tmp_path)
    calls = []
    shards = write_shards(manifest, tmp_path / "shards", "train", shard_size_mb=0.005,
                          progress=lambda done, total: calls.append((done, total)))
    assert len(shards) > 1 and all(p.is_file() for p in shards)
    assert calls[-1] == (13, 13)
    index = json.loads((tmp_path / "shards/index.json").read_text())
    train = index["splits"]["train"]
    assert train["total_samples"] == 12 and sum(train["samples"]) == 12 and train["skipped"] == 1
    assert train["shards"] == [p.name for p in shards]
    assert index["labels"] == {"lang": ["de", "en", "fr", "it"]}
    assert abs(train["hours"] - sum(e.duration for e in entries) / 3600) < 1e-4

    c = _config(crop_seconds=2.0, eval_seconds=2.0, label_key="lang")
    items = list(ShardDataset([str(p) for p in shards], c, train=False, vocab=index["labels"]["lang"]))
    assert len(items) == 12
    assert [it["label"] for it in items] == [index["labels"]["lang"].index(e.labels["lang"]) for e in entries]
    for it, e in zip(items, entries, strict=True):
        want, _ = audio.load(tmp_path / e.path)
        got = it["audio"][0, : want.shape[1]].numpy()
        assert np.abs(got - want[0]).max() <= 1 / 32768
        assert torch.count_nonzero(it["audio"][0, want.shape[1] :]) == 0

    pattern = str(tmp_path / "shards" / f"train-{{000000..{len(shards) - 1:06d}}}.tar")
    crops = list(ShardDataset(pattern, _config(gain_db=[-6.0, 0.0], polarity_flip=True)))
    assert len(crops) == 12 and all(it["audio"].shape == (1, CROP) for it in crops)
    assert ShardDataset(pattern, _config()).urls == [str(p) for p in shards]

    with pytest.raises(DataError, match="already holds train shards"):
        write_shards(manifest, tmp_path / "shards", "train")
    write_shards(manifest, tmp_path / "shards", "valid")
    index = json.loads((tmp_path / "shards/index.json").read_text())
    assert set(index["splits"]) == {"train", "valid"} and index["splits"]["valid"]["total_samples"] == 1


def test_corrupt_shard_samples_are_skipped(tmp_path):
    manifest, _ = _shard_corpus(tmp_path)
    (shard,) = write_shards(manifest, tmp_path / "shards", "valid")
    bad = tmp_path / "bad.tar"
    with wds.TarWriter(str(bad)) as w:
        w.write({"__key__": "x", "flac": b"not flac", "json": b'{"labels": {}}'})
        w.write({"__key__": "y", "json": b'{"labels": {}}'})
    ds = ShardDataset([str(bad), str(shard)], _config(), train=False)
    assert len(list(ds)) == 1 and ds.skipped == 2


def test_shards_split_by_node_and_fill_equal_epochs(tmp_path, monkeypatch):
    manifest, _ = _shard_corpus(tmp_path)
    shards = [str(p) for p in write_shards(manifest, tmp_path / "shards", shard_size_mb=0.005)]
    c = _config(label_key="lang")
    vocab = ["de", "en", "fr"]
    seen = []
    monkeypatch.setenv("WORLD_SIZE", "2")
    for rank in (0, 1):
        monkeypatch.setenv("RANK", str(rank))
        seen.append(len(list(ShardDataset(shards, c, train=False, vocab=vocab))))
        assert len(list(ShardDataset(shards, c, vocab=vocab, epoch_samples=20))) == 10
    assert sum(seen) == 12 and min(seen) > 0


def test_datamodule_streams_shards(tmp_path):
    manifest, _ = _shard_corpus(tmp_path)
    shards = write_shards(manifest, tmp_path / "shards", shard_size_mb=0.005)
    valid = write_shards(manifest, tmp_path / "valid", "valid")
    dm = AudioDataModule(_config(shards=[str(p) for p in shards], valid_shards=[str(p) for p in valid],
                                 label_key="lang", batch_size=4))
    dm.setup("fit")
    assert dm.vocab == ["de", "en", "fr", "it"]
    batches = list(dm.train_dataloader())
    assert len(batches) == 3 and all(b["audio"].shape == (4, 1, CROP) for b in batches)
    (val,) = list(dm.val_dataloader())
    assert val["label"].tolist() == [3]
    with pytest.raises(DataError, match="no test data"):
        dm.test_dataloader()


def test_cli_data_shard(tmp_path, monkeypatch, capsys):
    manifest, _ = _shard_corpus(tmp_path)
    out = tmp_path / "out"
    result = CliRunner().invoke(cli.app, ["data", "shard", str(manifest), str(out), "--shard-mb", "1"])
    assert result.exit_code == 0, result.output
    assert (out / "train-000000.tar").is_file() and (out / "index.json").is_file()
    assert "wrote 1 train shards" in result.stderr

    monkeypatch.setattr(sys, "argv", ["audiovae", "data", "shard", str(tmp_path / "nope.jsonl"), str(out)])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == 1
    err = capsys.readouterr().err.strip().replace("\n", "")  # rich wraps at the captured width
    assert err == f"audiovae: error: {tmp_path / 'nope.jsonl'}: no such manifest file"


def test_spread_covers_the_whole_list_deterministically():
    from audiovae.data.manifest import spread

    items = [_entry(str(i), "x.wav") for i in range(10)]
    assert [e.id for e in spread(items, 4)] == ["0", "3", "6", "9"]
    assert [e.id for e in spread(items, 1)] == ["0"] and len(spread(items, 50)) == 10
