"""Named pretrained models: export a checkpoint to safetensors + JSON, load by name or folder.

A model is ``NAME.safetensors`` (fp16 weights of the VAE) next to ``NAME.json`` (config, corpus,
steps, git commit, metrics, the sha256 of the weights file and ``encoder_sha256``). Loading checks the hash.

``encoder_sha256`` identifies the encoder alone (``encoder_sha256()`` documents its bytes), hence the
latents: two models whose encoders are bit-identical (a decoder fine-tuned with a frozen encoder) share
it. What consumes latents records it and is checked against it rather than against the whole weights:
the entropy model and the latent prior stored with a model (NAME.entropy / NAME.prior.safetensors; their
card entries also keep ``vae_sha256``, the weights they were fitted with), latent caches and prior
checkpoints (train/latents.py, train/prior.py) and classifier probes (classify/classifier.py). An entry written
before the encoder hash, with ``vae_sha256`` alone, is accepted when that equals the model's ``sha256``;
``copy_attachments`` moves a model's entropy model, prior and embedding head to another with the same encoder. Cards
written before the encoder hash get it computed on load. The .avae header names the whole weights'
sha256: the decoder matters there, so a model that takes over another's entropy model (same encoder, same
entropy model: the same bitstream) lists the earlier weights' sha256 under ``decodes_sha256`` and decodes their files.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle  # only for its exception type: checkpoints load with weights_only=True
import re
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from audiovae.config import ConfigError, ModelConfig, from_dict, to_dict
from audiovae.errors import AudioVAEError, shown
from audiovae.files import replaced, write_text
from audiovae.models.embedder import Embedder, EmbedderConfig
from audiovae.models.flow_prior import make_prior
from audiovae.models.prior import PriorConfig
from audiovae.models.vae import VAE

PRETRAINED_DIR = Path(__file__).parent / "pretrained"
EARLIER_DIR = PRETRAINED_DIR / "earlier"  # earlier versions of shipped models, kept to decode their .avae files
CARD_VERSION = 1


class ModelLoadError(AudioVAEError):
    """A model that cannot be found, is corrupted, or does not match its config."""


def list_models() -> list[str]:
    """Names of the models shipped with the package."""
    return sorted(p.stem for p in PRETRAINED_DIR.glob("*.json"))


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


ENCODER_PREFIX = "encoder."
# the config fields the encoder's output depends on beyond its tensors (rate and hop are not in any shape)
ENCODER_CONFIG = ("sample_rate", "hop_length", "enc_n_fft", "latent_dim", "enc_channels", "enc_blocks",
                  "expansion", "kernel")


def encoder_sha256(weights: Path, model_cfg: ModelConfig) -> str:
    """sha256 identifying the encoder stored in a safetensors ``weights`` file, read from the file's bytes
    (no torch arithmetic, so the same on every machine). The hashed bytes are ``audiovae-encoder-v1\n``,
    the JSON of the ``ENCODER_CONFIG`` fields of ``model_cfg`` (sorted keys, no spaces) and ``\n``, then
    per tensor whose name starts with ``encoder.``, in sorted name order: the line
    ``NAME DTYPE DIM,DIM,... NBYTES\n`` (DTYPE as safetensors spells it, e.g. F16) and the tensor's raw
    little-endian bytes as stored."""
    with weights.open("rb") as f:
        try:
            size = int.from_bytes(f.read(8), "little")
            header = json.loads(f.read(size))
            tensors = {k: v for k, v in header.items() if k.startswith(ENCODER_PREFIX)}
            offsets = {k: (int(v["data_offsets"][0]), int(v["data_offsets"][1])) for k, v in tensors.items()}
        except (ValueError, KeyError, TypeError, IndexError, AttributeError) as e:
            raise ModelLoadError(f"{weights}: unreadable safetensors header ({e})") from None
        if not tensors:
            raise ModelLoadError(f"{weights}: no encoder tensors")
        h = hashlib.sha256(b"audiovae-encoder-v1\n")
        fields = {k: getattr(model_cfg, k) for k in ENCODER_CONFIG}
        h.update(json.dumps(fields, sort_keys=True, separators=(",", ":")).encode() + b"\n")
        for name in sorted(tensors):
            start, end = offsets[name]
            f.seek(8 + size + start)
            data = f.read(end - start)
            if len(data) != end - start:
                raise ModelLoadError(f"{weights}: truncated tensor {name}")
            shape = ",".join(str(int(d)) for d in tensors[name]["shape"])
            h.update(f"{name} {tensors[name]['dtype']} {shape} {end - start}\n".encode())
            h.update(data)
    return h.hexdigest()


def latents_mismatch(model: VAE, recorded: dict, legacy_key: str = "vae_sha256",
                     required: bool = True) -> str | None:
    """None when something that recorded ``recorded`` (an attachment's card entry, a checkpoint's hparams,
    a cache's or a classifier's metadata) was made from ``model``'s latents: its ``encoder_sha256`` equals
    the model's, or, recorded before the encoder hash, its ``legacy_key`` equals the model's whole weights
    sha256 (with neither recorded: only when not ``required``). Otherwise a fragment for an error message,
    "another encoder (encoder_sha256 0123456789ab..., the model's 456789abcdef...)" (12 hex digits each), or
    "other weights (vae_sha256 ...)" for a legacy hash."""
    ours_enc, ours_full = model.card.get("encoder_sha256") or "", model.card.get("sha256") or ""
    what = "another encoder"
    if recorded.get("encoder_sha256"):
        key, theirs, ours = "encoder_sha256", str(recorded["encoder_sha256"]), ours_enc
    elif recorded.get(legacy_key):
        what, key, theirs, ours = "other weights", legacy_key, str(recorded[legacy_key]), ours_full
    elif not required:
        return None
    else:
        key, theirs, ours = "encoder_sha256", "none", ours_enc
    if theirs == ours:
        return None
    return f"{what} ({key} {theirs[:12]}..., the model's {ours[:12] or 'none'}...)"


def _resolve(name_or_path: str | os.PathLike) -> Path:
    p = Path(name_or_path)
    if p.is_dir():
        cards = sorted(p.glob("*.json"))
        if len(cards) != 1:
            raise ModelLoadError(f"{p}: expected one model card (NAME.json) in the folder, found {len(cards)}")
        return cards[0]
    if p.suffix in (".json", ".safetensors") and p.exists():
        return p.with_suffix(".json")
    shipped = PRETRAINED_DIR / f"{name_or_path}.json"
    if shipped.exists():
        return shipped
    available = ", ".join(list_models()) or "none shipped"
    raise ModelLoadError(f"unknown model '{name_or_path}' (available: {available}; or give a folder)")


def load_shipped(name: str) -> VAE:
    """A shipped model by its name alone, as a file names it (``model_id``): never a path."""
    if name not in list_models():
        raise ModelLoadError(f"unknown model {shown(name)} (shipped: {', '.join(list_models()) or 'none'}; a model "
                             "of your own must be given explicitly, e.g. --model FOLDER)")
    return load(PRETRAINED_DIR / f"{name}.json")


def load(name_or_path: str | os.PathLike = "speech16k") -> VAE:
    """A VAE in eval mode with frozen parameters (``requires_grad`` False: training copies its weights into a
    model of its own) from a shipped name or an exported folder; ``model.card`` holds its JSON."""
    card_path = _resolve(name_or_path)
    try:
        card = json.loads(card_path.read_text(encoding="utf-8"))
        cfg = from_dict(ModelConfig, card["model"])
        expected = card["sha256"]
    except (ValueError, OSError, KeyError, TypeError, ConfigError) as e:  # ValueError: not JSON, not UTF-8
        raise ModelLoadError(f"{card_path}: not a valid model card ({e})") from None
    weights = card_path.with_suffix(".safetensors")
    if not weights.exists():
        raise ModelLoadError(f"{weights}: weights file missing")
    actual = sha256(weights)
    if actual != expected:
        raise ModelLoadError(f"{weights}: sha256 mismatch (file is corrupted or was changed: "
                             f"expected {expected[:12]}..., got {actual[:12]}...)")
    try:
        state = load_file(str(weights))
    except SafetensorError as e:
        raise ModelLoadError(f"{weights}: unreadable safetensors file ({e})") from None
    model = VAE(cfg)
    _load_state(model, {k: v.float() for k, v in state.items()}, str(weights))
    encoder = encoder_sha256(weights, cfg)
    if card.get("encoder_sha256", encoder) != encoder:
        raise ModelLoadError(f"{card_path}: encoder_sha256 {str(card['encoder_sha256'])[:12]}... does not match "
                             f"the encoder of {weights.name} ({encoder[:12]}...)")
    card = _with_encoder_hash(card, encoder)
    model.eval().requires_grad_(False)
    model.card = card
    model.card_path = card_path
    model.name = card.get("name", card_path.stem)
    return model


def _with_encoder_hash(card: dict, encoder: str) -> dict:
    """The card with ``encoder_sha256`` right after ``sha256`` (cards written before it get it here)."""
    out = {}
    for k, v in card.items():
        if k != "encoder_sha256":
            out[k] = v
        if k == "sha256":
            out["encoder_sha256"] = encoder
    return out


def _write_card(card_path: Path, card: dict) -> None:
    write_text(card_path, json.dumps(card, indent=2) + "\n")


def save_attachment(model: VAE, key: str, tensors: dict[str, torch.Tensor], meta: dict) -> Path:
    """Store tensors next to ``model``'s weights (NAME.KEY.safetensors) and record them, with their sha256,
    under ``key`` in its card."""
    path = model.card_path.with_suffix(f".{key}.safetensors")
    with replaced(path) as tmp:
        save_file({k: v.contiguous() for k, v in tensors.items()}, tmp)
    model.card[key] = {**meta, "file": path.name, "sha256": sha256(path)}
    _write_card(model.card_path, model.card)
    return path


def load_attachment(model: VAE, key: str, hint: str) -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors, meta) stored under ``key`` with ``model``; checks the file's sha256 and refuses one fitted on
    the latents of another encoder (``latents_mismatch``). ``hint`` says how to make one."""
    meta = dict(model.card.get(key) or {})
    if not meta:
        raise ModelLoadError(f"model '{model.name}' has no {key} model: {hint}")
    path = model.card_path.with_name(meta.pop("file"))
    expected = meta.pop("sha256")
    if not path.exists() or sha256(path) != expected:
        raise ModelLoadError(f"{path}: {key} model missing or sha256 mismatch (file corrupted or changed)")
    bad = latents_mismatch(model, meta)
    if bad:
        raise ModelLoadError(f"{path}: the {key} model of '{model.name}' was fitted on the latents of {bad}; {hint}")
    return load_file(str(path)), meta


LATENT_ATTACHMENTS = ("entropy", "prior", "embed")


def copy_attachments(src: VAE, dst: VAE, keys: tuple[str, ...] = LATENT_ATTACHMENTS) -> list[Path]:
    """Copy ``src``'s entropy model, prior and embedding head (those it has) unchanged to ``dst``, a model with the same
    encoder (its decoder fine-tuned with the encoder frozen, say); dst's card entries keep the ``vae_sha256``
    they were fitted with and record the shared ``encoder_sha256``; with the entropy model, dst's ``decodes_sha256``
    lists src's weights (and those src decodes). Returns the written paths."""
    ours, theirs = src.card.get("encoder_sha256") or "", dst.card.get("encoder_sha256") or ""
    if ours != theirs:
        raise ModelLoadError(f"{dst.card_path}: model '{dst.name}' has another encoder than '{src.name}' "
                             f"(encoder_sha256 {theirs[:12]}..., '{src.name}' {ours[:12]}...): its latents differ")
    if src.card_path.resolve() == dst.card_path.resolve():
        raise ModelLoadError(f"{dst.card_path}: copying the attachments of model '{src.name}' onto itself")
    written = []
    for key in keys:
        if not src.card.get(key):
            continue
        _, meta = load_attachment(src, key, "")  # checks the file's sha256 and its encoder
        source, path = src.card_path.with_name(src.card[key]["file"]), dst.card_path.with_suffix(f".{key}.safetensors")
        with replaced(path) as tmp:
            shutil.copyfile(source, tmp)
        dst.card[key] = {**meta, "encoder_sha256": ours, "file": path.name, "sha256": src.card[key]["sha256"]}
        written.append(path)
    if "entropy" in keys and src.card.get("entropy"):  # the same bitstream: dst decodes src's files
        earlier = dict.fromkeys(decoded_weights(src))
        dst.card["decodes_sha256"] = [s for s in earlier if s != dst.card["sha256"]]
    _write_card(dst.card_path, dst.card)
    return written


def decodes_sha256(model: VAE) -> list[str]:
    """The sha256 of earlier weights whose .avae files ``model`` decodes (its card's ``decodes_sha256``: same
    encoder and entropy model, another decoder)."""
    listed = model.card.get("decodes_sha256", [])
    if not isinstance(listed, list) or not all(isinstance(s, str) and re.fullmatch("[0-9a-f]{64}", s) for s in listed):
        raise ModelLoadError(f"{model.card_path}: decodes_sha256 must be a list of sha256 hex digests")
    return listed


def decoded_weights(model: VAE) -> list[str]:
    """The sha256 of the weights whose .avae files ``model`` decodes: its own, then its ``decodes_sha256``."""
    return [model.card["sha256"], *decodes_sha256(model)]


def copy_model(name_or_path: str | os.PathLike | VAE, out_dir: str | os.PathLike,
               keys: tuple[str, ...] = LATENT_ATTACHMENTS, stem: str | None = None) -> list[Path]:
    """Copy a model (a shipped one by name, a folder, or one loaded) into ``out_dir``: its card, its weights and
    those of the attachments ``keys`` its card names, each checked against its sha256 first, as STEM.json,
    STEM.safetensors and STEM.KEY.safetensors (default: the model's own stem); the card names the attachments
    copied. Returns the written paths, the card last; ``load`` of it loads the copy."""
    model = name_or_path if isinstance(name_or_path, VAE) else load(name_or_path)
    stem = stem or model.card_path.stem
    card = {k: v for k, v in model.card.items() if k not in LATENT_ATTACHMENTS or (k in keys and v)}
    files = {model.card_path.with_suffix(".safetensors"): f"{stem}.safetensors"}
    for key in LATENT_ATTACHMENTS:
        if key in card:
            load_attachment(model, key, "")  # checks the file's sha256 and its encoder
            files[model.card_path.with_name(card[key]["file"])] = f"{stem}.{key}.safetensors"
            card[key] = {**card[key], "file": f"{stem}.{key}.safetensors"}
    out = Path(out_dir)
    if out.resolve() == model.card_path.parent.resolve():
        raise ModelLoadError(f"{out}: the folder of model '{model.name}' itself")
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for path, name in files.items():
        with replaced(out / name) as tmp:
            shutil.copyfile(path, tmp)
        written.append(out / name)
    _write_card(out / f"{stem}.json", card)
    return written + [out / f"{stem}.json"]


def keep_for_decoding(name: str) -> Path:
    """Keep the shipped model ``name``'s weights and entropy model as ``NAME-SHA12.*`` in pretrained/earlier before a
    model with another encoder ships under its name, so that the .avae files it wrote still decode
    (``load_version``). Returns the card's path."""
    model = load_shipped(name)
    if not model.card.get("entropy"):
        raise ModelLoadError(f"model '{name}' has no entropy model: it wrote no .avae files to keep decoding")
    return copy_model(model, EARLIER_DIR, ("entropy",), f"{name}-{model.card['sha256'][:12]}")[-1]


def load_version(name: str, decodes) -> VAE:
    """The shipped model ``name``, or else the earlier version of it kept in pretrained/earlier for which
    ``decodes(model)`` holds (the one that wrote a file); the current model when none does. ``decodes`` sees an
    earlier version's card alone (``.card``, ``.card_path``), and only the one it picks is loaded. ``name`` must
    be a shipped name: a file's ``model_id`` never becomes a path."""
    current = load_shipped(name)
    if decodes(current):
        return current
    for path in sorted(EARLIER_DIR.glob(f"{name}-*.json"), reverse=True):
        if decodes(SimpleNamespace(card=json.loads(path.read_text(encoding="utf-8")), card_path=path)):
            return load(path)
    return current


ENTROPY_HINT = "fit one with `audiovae codec fit`"


def _latent_hashes(model: VAE) -> dict:
    """What an attachment fitted on ``model``'s latents records: its weights' and its encoder's sha256."""
    return {"vae_sha256": model.card.get("sha256"), "encoder_sha256": model.card.get("encoder_sha256")}


def save_entropy_model(model: VAE, arrays: dict, meta: dict) -> Path:
    """Store an entropy model's integer tables next to ``model``'s weights and record it in its card, with
    the sha256 of the VAE weights and of the encoder whose latents it was fitted on."""
    return save_attachment(model, "entropy", {k: torch.from_numpy(v) for k, v in arrays.items()},
                           {**meta, **_latent_hashes(model)})


def load_entropy_state(model: VAE) -> tuple[dict, dict]:
    """(arrays, meta) of the entropy model stored with ``model``; checks its sha256 and refuses one fitted
    on the latents of another encoder."""
    tensors, meta = load_attachment(model, "entropy", ENTROPY_HINT)
    return {k: v.numpy() for k, v in tensors.items()}, meta


def _load_state(model: torch.nn.Module, state: dict, origin: str) -> None:
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    bad = [k for k in own if k in state and own[k].shape != state[k].shape]
    if missing or extra or bad:
        detail = (missing[:1] and f"missing {missing[0]}") or (extra[:1] and f"unexpected {extra[0]}") or \
            f"shape of {bad[0]} is {tuple(state[bad[0]].shape)}, expected {tuple(own[bad[0]].shape)}"
        raise ModelLoadError(f"{origin}: weights do not match the model architecture ({detail})")
    model.load_state_dict(state)


def _git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).parent, timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _open_checkpoint(path: str | os.PathLike) -> tuple[dict, dict, int]:
    """(train config dict, whole state dict, generator updates) of a Lightning checkpoint, read once."""
    p = Path(path)
    if not p.is_file():
        raise ModelLoadError(f"{p}: no such checkpoint")
    try:
        ckpt = torch.load(p, map_location="cpu", weights_only=True)
        return ckpt["hyper_parameters"]["config"], dict(ckpt["state_dict"]), int(ckpt.get("global_step", 0))
    except (KeyError, TypeError, RuntimeError, EOFError, pickle.UnpicklingError) as e:
        raise ModelLoadError(f"{p}: not an audiovae training checkpoint ({str(e).splitlines()[0]})") from None


def _under(state: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def read_checkpoint(path: str | os.PathLike, prefix: str = "vae.") -> tuple[dict, dict, int]:
    """(train config dict, state dict of the module under ``prefix`` (the VAE; ``rd.`` the rate-distortion
    steps), generator updates) from a Lightning checkpoint."""
    config, state, steps = _open_checkpoint(path)
    return config, _under(state, prefix), steps


def step_scales(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The centered parameters of ``train.rd.RateDistortion.scales`` (as a model card's ``step_scales`` holds them):
    geometric mean 1 keeps the rate of uniform steps where every channel's rate is high."""
    return a - a.mean(), b - b.mean()


def read_model_checkpoint(path: str | os.PathLike) -> tuple[dict, dict, dict | None, int]:
    """(train config dict, VAE state dict, per-channel step parameters {a, b} as a card's ``step_scales``
    holds them (None unless a rate-distortion run), generator updates) from one read of a checkpoint."""
    config, state, steps = _open_checkpoint(path)
    rd, scales = _under(state, "rd."), None
    if rd:
        scales = dict(zip("ab", (x.double().tolist() for x in step_scales(rd["a"], rd["b"])), strict=True))
    return config, _under(state, "vae."), scales, steps


def export(ckpt: str | os.PathLike, out_dir: str | os.PathLike, name: str | None = None,
           metrics: dict | None = None, corpus: str | None = None) -> Path:
    """Write NAME.safetensors (fp16) and NAME.json into ``out_dir``; returns the JSON path. A rate-distortion
    fine-tuning's per-channel steps (train/rd.py) go into the card as ``step_scales`` {a, b}: ``codec fit``
    gives the entropy model multipliers ``exp(a + b ln step)``."""
    config, state, scales, steps = read_model_checkpoint(ckpt)
    model_cfg = from_dict(ModelConfig, config["model"])
    _load_state(VAE(model_cfg), state, str(ckpt))  # refuse a checkpoint of another architecture
    return save(model_cfg, state, out_dir, name or config.get("name", "model"), steps=steps, metrics=metrics,
                corpus=corpus or config.get("data", {}).get("manifests", None), step_scales=scales)


def save(model_cfg: ModelConfig, state: dict, out_dir: str | os.PathLike, name: str, steps: int = 0,
         metrics: dict | None = None, corpus=None, step_scales: dict | None = None) -> Path:
    """Write weights (fp16 safetensors) and the JSON card with their sha256; returns the card path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    weights = out / f"{name}.safetensors"
    with replaced(weights) as tmp:
        save_file({k: v.half().contiguous() for k, v in state.items()}, tmp)
    card = {
        "name": name,
        "card_version": CARD_VERSION,
        "model": to_dict(model_cfg),
        "corpus": corpus,
        "steps": steps,
        "git_commit": _git_commit(),
        "metrics": metrics or {},
        "sha256": sha256(weights),
        **({"step_scales": step_scales} if step_scales else {}),
    }
    card_path = out / f"{name}.json"
    _write_card(card_path, _with_encoder_hash(card, encoder_sha256(weights, model_cfg)))
    return card_path


def stored_state(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A latent network's tensors as they are stored: fp16 weights, the latent statistics (``latent_*``) as they
    are (fp32)."""
    return {k: v if k.startswith("latent_") else v.half() for k, v in net.state_dict().items()}


def restore_state(net: torch.nn.Module, state: dict[str, torch.Tensor], origin: str) -> torch.nn.Module:
    """``net`` in eval mode, parameters frozen, with stored tensors (``stored_state``) loaded as fp32, checked
    against its architecture (an error naming ``origin`` otherwise)."""
    _load_state(net, {k: v.float() for k, v in state.items()}, origin)
    return net.eval().requires_grad_(False)


def save_net(model: VAE, key: str, net: torch.nn.Module, meta: dict) -> Path:
    """Store a network trained on ``model``'s latents with it: fp16 weights (fp32 latent statistics), its config
    and the VAE's and encoder's sha256 in the card under ``key``."""
    return save_attachment(model, key, stored_state(net), {**meta, "config": to_dict(net.config),
                                                          **_latent_hashes(model)})


def load_net(model: VAE, key: str, net_cls, config_cls, hint: str):
    """(network in eval mode, card entry) stored under ``key`` with ``model``; refuses one trained on the latents
    of another encoder. ``hint`` says how to make one."""
    state, meta = load_attachment(model, key, hint)
    try:
        net = net_cls(from_dict(config_cls, meta["config"]))
    except (KeyError, ConfigError) as e:
        raise ModelLoadError(f"model '{model.name}': not a valid {key} entry in its card ({e})") from None
    return restore_state(net, state, f"{model.name} {key}"), meta


PRIOR_HINT = "train one with `audiovae train-prior` (and --export, or `audiovae export-prior`)"
EMBED_HINT = "train one with `audiovae train-embedder` (and --export, or `audiovae export-embedder`)"


def save_prior(model: VAE, prior, meta: dict) -> Path:
    """Store a latent prior with ``model`` (NAME.prior.safetensors)."""
    return save_net(model, "prior", prior, meta)


def load_prior(model: VAE):
    """(prior of its kind in eval mode, card entry) stored with ``model``."""
    return load_net(model, "prior", make_prior, PriorConfig, PRIOR_HINT)


def save_embedder(model: VAE, embedder, meta: dict) -> Path:
    """Store a learned embedding head with ``model`` (NAME.embed.safetensors)."""
    return save_net(model, "embed", embedder, meta)


def load_embedder(model: VAE):
    """(Embedder in eval mode, card entry) stored with ``model``."""
    return load_net(model, "embed", Embedder, EmbedderConfig, EMBED_HINT)
