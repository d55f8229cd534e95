"""Supervised fine-tuning of the embedding head (``classify fit --finetune``): the model's learned head
(``models/embedder.py``) plus a linear layer, trained with cross-entropy on random crops of the labelled
clips' posterior means, the encoder frozen. The crops are augmented in latent space as in the head's
self-supervised training (``train/embedder.py``). Only the head is kept: a probe is then fitted on its
embeddings like on any other pooling.
"""

from __future__ import annotations

import copy
import logging
import warnings
from dataclasses import dataclass, field

import lightning as L
import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torch.utils.data import DataLoader, RandomSampler, WeightedRandomSampler

from audiovae.classify.embed import head_embedding, learned_embedder
from audiovae.models.embedder import Embedder
from audiovae.registry import stored_state
from audiovae.train.embedder import AugmentConfig, augment
from audiovae.train.latents import CropDataset, collate


@dataclass
class FinetuneConfig:
    steps: int = 2000
    batch_size: int = 32  # crops per step
    crop: float = 3.0  # seconds, at most (shorter clips are taken whole)
    lr: float = 3e-4  # the head
    lr_linear: float = 1e-3  # the linear layer on top
    weight_decay: float = 0.05
    label_smoothing: float = 0.1
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    seed: int = 0


class HeadModule(L.LightningModule):
    def __init__(self, embedder: Embedder, classes: int, cfg: FinetuneConfig):
        super().__init__()
        self.cfg = cfg
        self.embedder = embedder
        self.linear = nn.Linear(embedder.config.dim, classes)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        e, mask = self.embedder, batch["mask"].bool()
        x = augment(e.standardize(batch["x"].transpose(1, 2)), mask, self.cfg.augment)
        loss = F.cross_entropy(self.linear(e.pool(x, mask)), batch["label"], label_smoothing=self.cfg.label_smoothing)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(x))
        return loss

    def configure_optimizers(self):
        c = self.cfg
        return torch.optim.AdamW([{"params": self.embedder.parameters(), "lr": c.lr},
                                  {"params": self.linear.parameters(), "lr": c.lr_linear}], weight_decay=c.weight_decay)


def finetune_head(embedder: Embedder, clips: list[Tensor], labels: list[int], frame_rate: float,
                  cfg: FinetuneConfig | None = None, accelerator: str = "cpu", devices: int | str = 1,
                  progress: bool = True, weights: list[float] | None = None) -> Embedder:
    """A copy of ``embedder`` (a learned head, or any module with its interface such as ``SeqHead``) fine-tuned
    to tell ``labels`` (class indices) apart from ``clips`` (raw posterior means, each (frames, latent_dim)),
    drawing clips uniformly or in proportion to ``weights``; the input is left unchanged."""
    return finetune_classifier(embedder, clips, labels, frame_rate, cfg, accelerator, devices, progress, weights)[0]


def finetune_classifier(embedder: Embedder, clips: list[Tensor], labels: list[int], frame_rate: float,
                        cfg: FinetuneConfig | None = None, accelerator: str = "cpu", devices: int | str = 1,
                        progress: bool = True, weights: list[float] | None = None) -> tuple[Embedder, nn.Linear]:
    """``finetune_head``, also returning the linear layer trained on top of the head (class logits)."""
    cfg = cfg or FinetuneConfig()
    torch.manual_seed(cfg.seed)
    module = HeadModule(copy.deepcopy(embedder).train().requires_grad_(True), max(labels) + 1, cfg)
    data = CropDataset(clips, labels, max(1, round(cfg.crop * frame_rate)), train=True, seed=cfg.seed)
    draw = {"num_samples": cfg.steps * cfg.batch_size, "generator": torch.Generator().manual_seed(cfg.seed)}
    sampler = RandomSampler(data, replacement=True, **draw) if weights is None else \
        WeightedRandomSampler(weights, replacement=True, **draw)
    quiet = logging.getLogger("lightning.pytorch")  # its device report and tips, at every fit
    level = quiet.level
    quiet.setLevel(logging.WARNING)
    try:
        trainer = L.Trainer(accelerator=accelerator, devices=devices, max_steps=cfg.steps, logger=False,
                            enable_checkpointing=False, enable_progress_bar=progress, enable_model_summary=False,
                            num_sanity_val_steps=0, use_distributed_sampler=False)
        with warnings.catch_warnings():  # few workers by design; Lightning's own use of a deprecated torch API
            warnings.filterwarnings("ignore", ".*does not have many workers.*")
            warnings.filterwarnings("ignore", ".*LeafSpec.*")
            trainer.fit(module, DataLoader(data, cfg.batch_size, sampler=sampler, collate_fn=collate,
                                           drop_last=True))
    finally:
        quiet.setLevel(level)
    return module.embedder.cpu().eval(), module.linear.cpu().eval()


def finetuned_embeddings(model, means: list[np.ndarray], labels, cfg: FinetuneConfig | None = None,
                         progress: bool = False, head=None, weights=None, **trainer) -> tuple[Embedder, np.ndarray]:
    """Fine-tune ``model``'s learned head with a linear layer on labelled clips: ``means`` are each clip's
    posterior means (channels, latent_dim, frames), every channel a training clip. Returns the head, rounded to
    its stored precision (fp16 weights), and the clips' embeddings (N, dim) by it. ``head``: the head to start
    from (default: the model's learned head); ``weights``: per clip, see ``finetune_head``; ``trainer``:
    accelerator, devices."""
    _, idx = np.unique(np.asarray(labels).astype(str), return_inverse=True)
    clips = [torch.from_numpy(ch.T).float() for mu in means for ch in mu]
    targets = [int(c) for mu, c in zip(means, idx, strict=True) for _ in mu]
    per_channel = None if weights is None else [float(w) for mu, w in zip(means, weights, strict=True) for _ in mu]
    head = finetune_head(learned_embedder(model) if head is None else head, clips, targets,
                         model.sample_rate / model.hop_length, cfg, progress=progress, weights=per_channel, **trainer)
    head.load_state_dict(stored_state(head))
    return head, np.stack([head_embedding(head, mu) for mu in means])
