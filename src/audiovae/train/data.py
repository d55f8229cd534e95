"""Training data: random crops of manifest clips, or of WebDataset shards streamed on a cluster.

Items are ``{"audio": FloatTensor (channels, samples), "label": int}`` (label -1 when unknown).
``ClipDataset`` reads each crop straight from the source file; ``write_shards`` packs a split into
tar shards (FLAC + JSON per clip) that ``ShardDataset`` streams, split by node and worker.
"""

from __future__ import annotations

import io
import itertools
import json
import logging
import os
import random
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path

import lightning as L
import numpy as np
import soundfile as sf
import torch
import webdataset as wds
from torch.utils.data import (
    DataLoader,
    Dataset,
    IterableDataset,
    RandomSampler,
    Sampler,
    WeightedRandomSampler,
)
from tqdm import tqdm

from audiovae import audio
from audiovae.audio import AudioError
from audiovae.config import ConfigError
from audiovae.data.manifest import SPLITS, Entry, read_manifest
from audiovae.errors import AudioVAEError
from audiovae.files import write_text
from audiovae.train.augment import AugmentConfig, augment, draw_speed

log = logging.getLogger(__name__)

FREE_TEXT_LABELS = frozenset({"text"})  # label keys left out of the shard index's vocabularies


class DataError(AudioVAEError):
    """Training data that cannot be loaded or written."""


@dataclass
class DataConfig:
    """Where training audio comes from, and how it is cropped and augmented."""

    manifests: list[str] = field(default_factory=list)  # JSONL manifests (all splits)
    shards: list[str] = field(default_factory=list)  # train shards: tar paths, URLs or brace patterns
    valid_shards: list[str] = field(default_factory=list)  # else validation reads the manifests
    crop_seconds: float = 0.5
    eval_seconds: float = 4.0  # validation/test crops are longer (PESQ needs whole utterances)
    batch_size: int = 8
    num_workers: int = 1
    sample_rate: int = 16000
    channels: int = 1  # mix down to mono, or repeat mono
    gain_db: list[float] = field(default_factory=lambda: [-12.0, 0.0])  # uniform random gain range
    polarity_flip: bool = True  # invert half of the training crops
    label_key: str | None = None  # labels[key] -> "label" index (sorted vocabulary)
    weights_by: str | None = None  # balance sampling over this label's values (manifests only)
    eval_crop: str = "center"  # validation/test crop: "start" or "center" of each clip
    min_seconds: float = 0.1  # shorter manifest entries are dropped
    shuffle_buffer: int = 1000  # samples held for shuffling a shard stream
    preload: bool = False  # decode each split's files into memory once (small corpora, fast accelerators)
    seed: int = 0
    augment: AugmentConfig = field(default_factory=AugmentConfig)  # training crops only

    def validate(self) -> None:
        self.augment.validate()
        if self.crop_seconds <= 0 or self.eval_seconds <= 0 or self.min_seconds < 0:
            raise ConfigError("data: crop_seconds and eval_seconds must be > 0, min_seconds >= 0")
        if len(self.gain_db) != 2 or self.gain_db[0] > self.gain_db[1]:
            raise ConfigError(f"data: gain_db must be [low, high] with low <= high, got {self.gain_db}")
        if not 1 <= self.channels <= audio.MAX_CHANNELS:
            raise ConfigError(f"data: channels must be 1 to {audio.MAX_CHANNELS}, got {self.channels}")
        if self.eval_crop not in ("start", "center"):
            raise ConfigError(f"data: eval_crop must be 'start' or 'center', got {self.eval_crop!r}")
        if self.batch_size < 1 or self.num_workers < 0 or self.sample_rate <= 0:
            raise ConfigError("data: batch_size and sample_rate must be positive, num_workers >= 0")

    def seconds(self, train: bool) -> float:
        return self.crop_seconds if train else self.eval_seconds


def load_entries(manifests: Sequence[str | os.PathLike]) -> list[Entry]:
    """All entries of the manifests, with paths made absolute; malformed lines are logged."""
    entries = []
    for m in manifests:
        found, malformed = read_manifest(m)
        if malformed:
            log.warning("%s: skipped %d malformed lines", m, malformed)
        root = Path(m).parent
        entries += [replace(e, path=str(e.audio_path(root))) for e in found]
    return entries


def vocabulary(entries: Sequence[Entry], key: str) -> list[str]:
    """Sorted distinct values (as strings) of ``labels[key]``; the label index is the position."""
    return sorted({str(e.labels[key]) for e in entries if e.labels.get(key) is not None})


def balanced_weights(entries: Sequence[Entry], key: str) -> list[float]:
    """Sampling weights giving each value of ``labels[key]`` (missing = one more value) an equal share."""
    values = [e.labels.get(key) for e in entries]
    counts = Counter(values)
    return [1.0 / counts[v] for v in values]


def _window(region: int, want: int, rng: np.random.Generator | None, eval_crop: str) -> tuple[int, int]:
    """(start, length) of a crop of ``want`` frames inside ``region`` frames: random, or per eval_crop."""
    n = min(want, region)
    if rng is not None:
        return int(rng.integers(0, region - n + 1)), n
    return (0 if eval_crop == "start" else (region - n) // 2), n


def _speed(c: DataConfig, rng: np.random.Generator | None) -> float:
    """A training crop's speed factor (``augment.draw_speed``; 1.0 for evaluation crops)."""
    return draw_speed(c.augment, rng) if rng is not None and c.augment.speed else 1.0


def _finish(x: np.ndarray, sr: int, c: DataConfig, rng: np.random.Generator | None,
            speed: float = 1.0) -> torch.Tensor:
    """Resample, set channels, (training) augment, cut or zero-pad to the crop length, then (training) gain and
    polarity; ``x`` holds ``speed`` times the crop's duration."""
    frames = int(round(c.seconds(rng is not None) * c.sample_rate))
    x = audio.to_channels(audio.resample(x, sr, c.sample_rate), c.channels)
    if rng is not None and c.augment.active:
        x = augment(x, c.sample_rate, c.augment, rng, speed)
    x = x[:, :frames]
    if x.shape[1] < frames:
        x = np.pad(x, ((0, 0), (0, frames - x.shape[1])))
    if rng is not None:
        x = x * np.float32(10.0 ** (rng.uniform(*c.gain_db) / 20.0))
        if c.polarity_flip and rng.random() < 0.5:
            x = -x
    return torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))


def _label(labels: dict, c: DataConfig, index: dict[str, int]) -> int:
    if c.label_key is None or labels.get(c.label_key) is None:
        return -1
    return index.get(str(labels[c.label_key]), -1)


class ClipDataset(Dataset):
    """Crops of the entries of one split, read from their files (only the crop is decoded).

    ``dataset[i]`` gives a crop of entry i; ``dataset[(i, draw)]`` (what ``ClipSampler`` yields)
    draws it from a generator seeded by (seed, draw, i), so crops are reproducible whatever the
    worker count. With ``train=False`` crops are deterministic (``eval_crop``) and unaugmented.
    An entry that cannot be read is logged once, marked bad (across workers) and replaced by the
    next readable one; ``skipped`` counts them. Entries under ``min_seconds`` are dropped up front
    and counted in ``filtered``.
    """

    def __init__(
        self,
        source: str | os.PathLike | Sequence[Entry],
        config: DataConfig | None = None,
        split: str | None = "train",
        *,
        train: bool = True,
        vocab: Sequence[str] | None = None,
        root: str | os.PathLike | None = None,
    ) -> None:
        self.config = c = config or DataConfig()
        c.validate()
        if isinstance(source, str | os.PathLike):
            everything = load_entries([source])
        else:
            base = Path(root) if root is not None else Path.cwd()
            everything = [replace(e, path=str(e.audio_path(base))) for e in source]
        if vocab is None and c.label_key is not None:
            vocab = vocabulary(everything, c.label_key)
        self.vocab = list(vocab or [])
        chosen = [e for e in everything if split is None or e.split == split]
        self.entries = [e for e in chosen if e.duration >= c.min_seconds]
        self.filtered = len(chosen) - len(self.entries)
        index = {v: i for i, v in enumerate(self.vocab)}
        self.labels = [_label(e.labels, c, index) for e in self.entries]
        self.train = train
        self._bad = torch.zeros(len(self.entries), dtype=torch.uint8).share_memory_()
        self._cache: dict[str, np.ndarray] = {}
        if c.preload:
            self._preload()

    def _preload(self) -> None:
        """Decode every file of the split once, before workers fork (they share the arrays);
        a file that fails is left to ``__getitem__``, which skips and counts its entries."""
        paths = sorted({e.path for e in self.entries})
        for path in tqdm(paths, desc="preload", unit="file", disable=len(paths) < 100):
            try:
                self._cache[path], _ = audio.load(path, mono=self.config.channels == 1)
            except AudioError as e:
                log.warning("preload: %s", e)

    def __len__(self) -> int:
        return len(self.entries)

    @property
    def skipped(self) -> int:
        """Entries found unreadable so far (by any worker)."""
        return int(self._bad.sum())

    def __getitem__(self, key: int | tuple[int, int]) -> dict[str, torch.Tensor | int]:
        index, draw = key if isinstance(key, tuple) else (key, 0)
        n = len(self.entries)
        for i in ((index + k) % n for k in range(n)):
            if self._bad[i]:
                continue
            rng = np.random.default_rng((self.config.seed, draw, i)) if self.train else None
            try:
                x = self._crop(self.entries[i], rng)
            except (AudioError, OSError) as e:
                self._bad[i] = 1
                log.warning("skipping unreadable entry %s: %s", self.entries[i].id, e)
                continue
            return {"audio": x, "label": self.labels[i]}
        raise DataError(f"no readable entries left (all {n} failed to load)")

    def _crop(self, e: Entry, rng: np.random.Generator | None) -> torch.Tensor:
        c, sr = self.config, e.sample_rate
        first = int(round(e.offset * sr))
        region = int(round((e.offset + e.duration) * sr)) - first
        speed = _speed(c, rng)
        start, n = _window(region, int(round(c.seconds(rng is not None) * sr * speed)), rng, c.eval_crop)
        if e.path in self._cache:
            return _finish(self._cache[e.path][:, first + start : first + start + n], sr, c, rng, speed)
        x, _ = audio.load(e.path, mono=c.channels == 1, offset=(first + start) / sr, duration=n / sr)
        return _finish(x, sr, c, rng, speed)


class ClipSampler(Sampler[tuple[int, int]]):
    """Yields ``(index, draw)`` keys for ``ClipDataset``: a permutation, or weighted draws with
    replacement, seeded by (seed, epoch); ``draw = epoch * size + position`` numbers every draw, so
    an entry drawn twice gets two crops. Each pass is a new epoch unless ``set_epoch`` (which
    Lightning calls) says otherwise, so persistent workers still see fresh crops every epoch."""

    def __init__(self, size: int, weights: Sequence[float] | None = None, seed: int = 0) -> None:
        self.size, self.weights, self.seed, self.epoch = size, weights, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[tuple[int, int]]:
        epoch, self.epoch = self.epoch, self.epoch + 1
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        if self.weights is None:
            order = RandomSampler(range(self.size), generator=g)
        else:
            order = WeightedRandomSampler(self.weights, self.size, replacement=True, generator=g)
        return ((int(i), epoch * self.size + k) for k, i in enumerate(order))


def _expand(urls: Sequence[str]) -> list[str]:
    return [u for pattern in urls for u in wds.shardlists.expand_urls(pattern)]


def _shard_stream(urls: list[str], rng: random.Random | None, repeat: bool) -> Iterator[dict]:
    """Shard URLs for webdataset, reshuffled on each pass when given ``rng``; endless with ``repeat``."""
    while True:
        order = list(urls)
        if rng is not None:
            rng.shuffle(order)
        yield from ({"url": u} for u in order)
        if not repeat:
            return


class ShardDataset(IterableDataset):
    """Crops streamed from ``write_shards`` tars: shards split by node, then by worker; in training
    shard order is shuffled (the same way on every rank), samples pass a shuffle buffer, and crops
    and gains are random (seeded by ``seed`` and torch's per-worker seed).

    ``epoch_samples`` (training) makes the shard list repeat and each worker stop after its share,
    so every DDP rank yields the same number of batches. Clips that fail to decode are logged and
    counted in ``skipped`` (per process); an unreadable shard raises.
    """

    def __init__(
        self,
        urls: str | Sequence[str],
        config: DataConfig | None = None,
        *,
        train: bool = True,
        vocab: Sequence[str] | None = None,
        epoch_samples: int | None = None,
    ) -> None:
        self.config = c = config or DataConfig()
        c.validate()
        self.urls = _expand([urls] if isinstance(urls, str) else urls)
        if not self.urls:
            raise DataError("no shards given")
        if c.label_key is not None and vocab is None:
            raise DataError(f"label_key {c.label_key!r} needs a vocabulary (from index.json or manifests)")
        self.vocab = list(vocab or [])
        self.train, self.epoch_samples = train, epoch_samples
        self.skipped = 0
        self._passes = 0

    def __iter__(self) -> Iterator[dict[str, torch.Tensor | int]]:
        c = self.config
        rank, world, worker, workers = wds.utils.pytorch_worker_info()
        info = torch.utils.data.get_worker_info()
        base = 0 if info is None else info.seed - info.id
        self._passes += 1
        shard_rng = random.Random(c.seed * 1_000_003 + self._passes) if self.train else None
        sample_rng = np.random.default_rng((c.seed, base, rank, worker, self._passes))
        stages = [
            partial(_shard_stream, self.urls, shard_rng, self.train and self.epoch_samples is not None),
            wds.split_by_node,
            wds.split_by_worker,
            wds.tarfile_to_samples(),
        ]
        if self.train:
            stages.append(wds.shuffle(c.shuffle_buffer, rng=random.Random(int(sample_rng.integers(2**62)))))
        samples = self._decode(wds.DataPipeline(*stages), sample_rng if self.train else None)
        if self.train and self.epoch_samples is not None:
            samples = itertools.islice(samples, max(1, self.epoch_samples // (world * workers)))
        return samples

    def _decode(self, stream, rng: np.random.Generator | None) -> Iterator[dict[str, torch.Tensor | int]]:
        c, index = self.config, {v: i for i, v in enumerate(self.vocab)}
        for s in stream:
            try:
                label = _label(json.loads(s["json"])["labels"], c, index)
                x, sr = sf.read(io.BytesIO(s["flac"]), dtype="float32", always_2d=True)
                audio.validate(x.T, name=s["__key__"])
            except (KeyError, ValueError, sf.LibsndfileError, AudioError) as e:
                self.skipped += 1
                log.warning("skipping shard sample %s (%s): %s", s.get("__key__"), s.get("__url__"), e)
                continue
            speed = _speed(c, rng)
            start, n = _window(x.shape[0], int(round(c.seconds(rng is not None) * sr * speed)), rng, c.eval_crop)
            yield {"audio": _finish(x[start : start + n].T, sr, c, rng, speed), "label": label}


def write_shards(
    manifest: str | os.PathLike,
    out_dir: str | os.PathLike,
    split: str = "train",
    *,
    shard_size_mb: float = 256,
    sample_rate: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[Path]:
    """Write one split as WebDataset shards ``OUT/SPLIT-NNNNNN.tar`` and update ``OUT/index.json``.

    Each sample is the entry's region as 16-bit FLAC (channels as stored, resampled to
    ``sample_rate`` if given) plus the entry as JSON. The index holds, per split, the shard names,
    sample counts, hours and skipped (unreadable) entries, and the label vocabularies of the whole
    manifest. ``progress(done, total)`` is called after each entry.
    """
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r} (one of {', '.join(SPLITS)})")
    entries, _ = read_manifest(manifest)
    chosen = [e for e in entries if e.split == split]
    if not chosen:
        raise DataError(f"{manifest}: no {split} entries")
    out, root = Path(out_dir), Path(manifest).parent
    out.mkdir(parents=True, exist_ok=True)
    if any(out.glob(f"{split}-*.tar")):
        raise DataError(f"{out}: already holds {split} shards (delete them or choose another folder)")
    counts: dict[str, int] = {}
    seconds, skipped = 0.0, 0
    writer = wds.ShardWriter(str(out / f"{split}-%06d.tar"), maxsize=shard_size_mb * 1e6, verbose=0,
                             post=lambda name: counts.__setitem__(Path(name).name, writer.count))
    try:
        for done, e in enumerate(chosen, 1):
            try:
                x, sr = audio.load(e.audio_path(root), sample_rate=sample_rate, offset=e.offset,
                                   duration=e.duration)
            except (AudioError, OSError) as err:
                skipped += 1
                log.warning("skipping unreadable entry %s: %s", e.id, err)
            else:
                buf = io.BytesIO()
                sf.write(buf, np.clip(x, -1.0, 1.0).T, sr, format="FLAC", subtype="PCM_16")
                meta = json.dumps(asdict(e), ensure_ascii=False, sort_keys=True).encode("utf-8")
                writer.write({"__key__": f"{writer.total:09d}", "flac": buf.getvalue(), "json": meta})
                seconds += x.shape[1] / sr
            if progress is not None:
                progress(done, len(chosen))
    finally:
        writer.close()
    index_path = out / "index.json"
    index = json.loads(index_path.read_text(encoding="utf-8")) if index_path.exists() else {}
    keys = sorted({k for e in entries for k in e.labels} - FREE_TEXT_LABELS)
    index["labels"] = {k: vocabulary(entries, k) for k in keys}
    index.setdefault("splits", {})[split] = {
        "shards": list(counts), "samples": list(counts.values()), "total_samples": sum(counts.values()),
        "hours": round(seconds / 3600, 4), "skipped": skipped, "sample_rate": sample_rate,
    }
    write_text(index_path, json.dumps(index, indent=1, ensure_ascii=False))
    return [out / name for name in counts]


def read_index(shard_url: str) -> dict | None:
    """The ``index.json`` next to a shard (local path or URL webdataset can open), or None."""
    base = shard_url.rsplit("/", 1)[0] if "/" in shard_url else "."
    try:
        with wds.gopen(f"{base}/index.json") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


class AudioDataModule(L.LightningDataModule):
    """Train / valid / test loaders from ``DataConfig``: manifests, or shards for training (and
    ``valid_shards`` for validation). ``vocab`` is the label vocabulary for ``label_key``."""

    def __init__(self, config: DataConfig) -> None:
        super().__init__()
        config.validate()
        if not config.manifests and not config.shards:
            raise ConfigError("data: give manifests or shards")
        if config.shards and config.weights_by:
            raise ConfigError("data: weights_by needs manifests (shards stream without sampling weights)")
        self.config = config
        self.vocab: list[str] = []
        self._entries: list[Entry] = []
        self._sets: dict[str, Dataset] = {}

    def setup(self, stage: str | None = None) -> None:
        c = self.config
        if self._sets:
            return
        self._entries = load_entries(c.manifests)
        index = read_index(_expand(c.shards)[0]) if c.shards else None
        if c.label_key is not None:
            if self._entries:
                self.vocab = vocabulary(self._entries, c.label_key)
            elif index is not None and c.label_key in index.get("labels", {}):
                self.vocab = index["labels"][c.label_key]
            else:
                raise DataError(f"no vocabulary for label_key {c.label_key!r} (no manifests, no index.json)")
        if c.shards:
            total = (index or {}).get("splits", {}).get("train", {}).get("total_samples")
            train: Dataset = ShardDataset(c.shards, c, vocab=self.vocab, epoch_samples=total)
        else:
            train = ClipDataset(self._entries, c, "train", vocab=self.vocab)
            if not len(train):
                raise DataError(f"no usable train entries in {', '.join(c.manifests)}")
        self._sets["train"] = train
        if c.valid_shards:
            self._sets["valid"] = ShardDataset(c.valid_shards, c, train=False, vocab=self.vocab)
        elif self._entries:
            self._sets["valid"] = ClipDataset(self._entries, c, "valid", train=False, vocab=self.vocab)
        if self._entries:
            self._sets["test"] = ClipDataset(self._entries, c, "test", train=False, vocab=self.vocab)

    def _loader(self, split: str, train: bool) -> DataLoader:
        if split not in self._sets:
            raise DataError(f"no {split} data: the config gives no manifests for it")
        c, ds = self.config, self._sets[split]
        sampler = None
        if train and isinstance(ds, ClipDataset):
            weights = balanced_weights(ds.entries, c.weights_by) if c.weights_by else None
            sampler = ClipSampler(len(ds), weights, seed=c.seed)
        return DataLoader(ds, batch_size=c.batch_size, sampler=sampler, num_workers=c.num_workers,
                          persistent_workers=c.num_workers > 0, drop_last=train)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("valid", False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", False)
