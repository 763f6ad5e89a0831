"""Find a diffusers checkpoint (local folder or Hugging Face repo id) and read its configs.

Nothing here downloads or opens a weight file: a repo id is looked up in the normal Hugging Face
cache with offline calls only, and a checkpoint is described by ``model_index.json`` and each
component's ``config.json`` / ``scheduler_config.json``. Problems that would make loading fail
(a missing component, a pickle weight file, a custom-code component) are raised here as
:class:`~wan_pipeline.errors.InputError` naming the component and the fix.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from wan_pipeline.errors import InputError
from wan_pipeline.models.configs import ModelIndex, SchedulerConfig, TransformerConfig, VaeConfig

REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle")
"""Weight formats that unpickle (and may run code) when loaded: never loaded here."""
TRUSTED_LIBRARIES = ("diffusers", "transformers")
"""Component libraries loadable without ``trust_remote_code``."""
WEIGHTED_LIBRARY_CLASSES = ("Model", "Autoencoder", "Encoder", "Transformer")


def download_command(repo_id: str, local_dir: str | None = None) -> str:
    """The shell command that fetches ``repo_id`` into the HF cache (or ``local_dir``)."""
    cmd = f"hf download {repo_id}"
    return cmd + (f" --local-dir {local_dir}" if local_dir else "")


def hf_cache_dir() -> str:
    from huggingface_hub import constants

    return str(constants.HF_HUB_CACHE)


def is_repo_id(ref: str) -> bool:
    """True for an ``owner/name`` string that is not an existing local path."""
    return bool(REPO_ID.match(ref)) and not Path(ref).expanduser().exists()


def find_cached_snapshot(repo_id: str) -> Path | None:
    """The HF-cache snapshot folder of ``repo_id`` holding its ``model_index.json``, or None.

    Offline only (``try_to_load_from_cache``, then ``snapshot_download(local_files_only=True)``);
    never touches the network.
    """
    from huggingface_hub import snapshot_download, try_to_load_from_cache

    try:
        hit = try_to_load_from_cache(repo_id, "model_index.json")
    except Exception:  # malformed id or unreadable cache: treat as not cached
        hit = None
    if isinstance(hit, str):
        return Path(hit).parent
    try:
        folder = Path(snapshot_download(repo_id, local_files_only=True))
    except Exception:  # LocalEntryNotFoundError, HFValidationError, offline errors
        return None
    return folder if (folder / "model_index.json").is_file() else None


def resolve_model(ref: str | Path) -> Path:
    """A model reference → the local diffusers folder that holds its ``model_index.json``.

    ref: a local folder, or a Hugging Face repo id (``Wan-AI/Wan2.2-TI2V-5B-Diffusers``) already in
    the HF cache. Raises :class:`InputError` naming the exact download command when the repo is not
    cached, or the folder when it does not exist. Never downloads.
    """
    text = str(ref)
    path = Path(text).expanduser()
    if path.exists():
        if not path.is_dir():
            raise InputError(text, "a diffusers checkpoint is a folder holding model_index.json, not a file")
        return path.resolve()
    if REPO_ID.match(text):
        snapshot = find_cached_snapshot(text)
        if snapshot is None:
            raise InputError(
                text,
                f"model not in the Hugging Face cache ({hf_cache_dir()}); download it with "
                f"`{download_command(text)}` (or `huggingface-cli download {text}`), or set `model:` "
                f"to a local diffusers folder (`{download_command(text, 'models/' + text.split('/')[1])}`)",
            )
        return snapshot
    raise InputError(text, "no such folder, and not a Hugging Face repo id of the form owner/name")


class ComponentInfo(BaseModel):
    """One component of a checkpoint as found on disk.

    weights: safetensors files of the component (relative to the checkpoint); has_config: its
    ``config.json`` / ``scheduler_config.json`` (or tokenizer/processor files) exists.
    """

    model_config = ConfigDict(frozen=True)

    name: str
    library: str | None
    class_name: str | None
    folder_exists: bool
    has_config: bool
    weights: list[str] = Field(default_factory=list)
    config: dict | None = None

    @property
    def needs_weights(self) -> bool:
        return (
            bool(self.class_name)
            and any(s in self.class_name for s in WEIGHTED_LIBRARY_CLASSES)
            and "Processor" not in self.class_name
            and "Tokenizer" not in self.class_name
        )


class Checkpoint(BaseModel):
    """What is known of a diffusers checkpoint without its weights.

    source: the folder path (or ``catalogue:<repo>`` for a published model described from the
    built-in catalogue); ref: the reference the user gave. ``transformer_2`` is None for
    single-expert models.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    ref: str
    source: str
    index: ModelIndex
    components: dict[str, ComponentInfo]
    transformer: TransformerConfig | None = None
    transformer_2: TransformerConfig | None = None
    vae: VaeConfig | None = None
    scheduler: SchedulerConfig | None = None

    @property
    def name_hint(self) -> str:
        """The folder / repo name (used only to tell apart configs that are identical, e.g. I2V 480P vs 720P)."""
        return self.ref.rstrip("/").split("/")[-1]

    def missing_components(self) -> list[str]:
        """Components listed in model_index.json whose folder, config or weights are absent."""
        out = []
        for c in self.components.values():
            if not c.folder_exists:
                out.append(f"{c.name} (folder)")
            elif not c.has_config:
                out.append(f"{c.name} (config)")
            elif c.needs_weights and not c.weights:
                out.append(f"{c.name} (weights)")
        return out


def _with_repo(problems: list[str], ref: str) -> list[str]:
    """Fill the ``<repo>`` placeholder of download commands when the reference is a repo id."""
    if REPO_ID.match(ref) and not Path(ref).exists():
        return [p.replace("<repo>", ref) for p in problems]
    return problems


def _read_json(path: Path, checkpoint: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(
            str(path), f"JSON syntax error at line {exc.lineno}, column {exc.colno}: {exc.msg}; re-download this file of {checkpoint.name}"
        ) from None
    if not isinstance(data, dict):
        raise InputError(str(path), "a config file must hold a JSON object")
    return data


def _config_file(folder: Path) -> Path | None:
    names = ["config.json", "scheduler_config.json", "preprocessor_config.json", "tokenizer_config.json", "tokenizer.json", "spiece.model"]
    for n in names:
        if (folder / n).is_file():
            return folder / n
    return None


def _weight_files(folder: Path, root: Path) -> tuple[list[str], list[str]]:
    """(safetensors files, pickle files) under ``folder``, as paths relative to ``root``."""
    safe, pickles = [], []
    for p in sorted(folder.rglob("*")):
        if not p.is_file():
            continue
        name = p.name.lower()
        rel = str(p.relative_to(root))
        if name.endswith(".safetensors"):
            safe.append(rel)
        elif name.endswith(PICKLE_SUFFIXES) or any(name.endswith(s + ".index.json") for s in PICKLE_SUFFIXES):
            pickles.append(rel)
    return safe, pickles


def _sharded_missing(folder: Path) -> list[str]:
    """Shards named by ``*.safetensors.index.json`` files in ``folder`` that are not on disk."""
    missing = []
    for index in folder.glob("*.safetensors.index.json"):
        try:
            shards = set(json.loads(index.read_text()).get("weight_map", {}).values())
        except (json.JSONDecodeError, AttributeError):
            missing.append(f"{index.name} (unreadable)")
            continue
        missing += sorted(s for s in shards if not (folder / s).is_file())
    return missing


def _validate(cls, data: dict, where: Path, component: str):
    try:
        return cls.model_validate(data)
    except ValidationError as err:
        problems = [f"{component}: field {'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors()]
        raise InputError(str(where), problems + ["fix: re-download the checkpoint's configs"]) from None


def read_checkpoint(ref: str | Path) -> Checkpoint:
    """Read a checkpoint's ``model_index.json`` and component configs (never its weights).

    Raises :class:`InputError` before anything is loaded when: the model is not found (download
    command given); ``model_index.json`` is missing; a denoiser/VAE/scheduler is not listed, or its
    folder or config is missing; any component holds pickle weights (``.bin .pt .pth .ckpt``: only
    safetensors are loaded); a component comes from a library other than diffusers/transformers
    (that would need ``trust_remote_code``, which is never used); the VAE latent channels do not
    match the transformer. Missing text-encoder / tokenizer / image-encoder folders and missing
    weights are reported by :meth:`Checkpoint.missing_components` and rejected by
    :func:`check_loadable`, so configs-only folders can still be inspected.
    """
    root = resolve_model(ref)
    index_path = root / "model_index.json"
    if not index_path.is_file():
        hint = f"; download it with `{download_command(str(ref))}`" if REPO_ID.match(str(ref)) else ""
        raise InputError(
            str(root),
            "no model_index.json: not a diffusers checkpoint folder (give the folder that "
            f"holds model_index.json, transformer/, vae/ …){hint}",
        )
    raw_index = _read_json(index_path, root)
    try:
        index = ModelIndex.from_json(raw_index)
    except ValidationError:
        raise InputError(str(index_path), "model_index.json has no `_class_name`: not a diffusers pipeline file") from None

    problems: list[str] = []
    components: dict[str, ComponentInfo] = {}
    for name, entry in index.components.items():
        if not entry.present:
            continue
        if entry.library not in TRUSTED_LIBRARIES:
            problems.append(
                f"component {name!r}: library {entry.library!r} is custom code (needs trust_remote_code, "
                f"which is never used); use a checkpoint whose components come from diffusers or transformers"
            )
        folder = root / name
        cfg_file = _config_file(folder) if folder.is_dir() else None
        safe, pickles = _weight_files(folder, root) if folder.is_dir() else ([], [])
        for p in pickles:
            problems.append(
                f"component {name!r}: {p} is a pickle weight file; only .safetensors are loaded "
                f"(pickles can run code): delete it and download the safetensors files "
                f"(`hf download <repo> --include '{name}/*.safetensors*'`)"
            )
        config = None
        if cfg_file is not None and cfg_file.name in ("config.json", "scheduler_config.json"):
            config = _read_json(cfg_file, root)
        components[name] = ComponentInfo(
            name=name,
            library=entry.library,
            class_name=entry.class_name,
            folder_exists=folder.is_dir(),
            has_config=cfg_file is not None,
            weights=safe,
            config=config,
        )

    is_wan = index.class_name.startswith("Wan")
    required = ("transformer", "vae", "scheduler") if is_wan else ("scheduler",)
    for name in required:
        if name == "transformer" and not index.has("transformer") and index.has("transformer_2"):
            continue  # diffusers allows one expert saved as None
        if not index.has(name):
            problems.append(
                f"component {name!r}: not listed in model_index.json; a {index.class_name} needs "
                f"{', '.join(required)}: re-download the checkpoint's model_index.json"
            )
    for name, info in components.items():
        if info.library == "diffusers" and not info.folder_exists:
            problems.append(
                f"component {name!r}: folder {name}/ is missing; download it "
                f"(`hf download <repo> --include '{name}/*'`) or remove it from model_index.json"
            )
        elif info.library == "diffusers" and info.config is None:
            problems.append(
                f"component {name!r}: {name}/config.json (or scheduler_config.json) is missing; "
                f"download it (`hf download <repo> --include '{name}/*'`)"
            )
    if problems:
        raise InputError(str(root), _with_repo(problems, str(ref)))

    ckpt = Checkpoint(ref=str(ref), source=str(root), index=index, components=components)
    return parse_component_configs(ckpt, root)


def parse_component_configs(ckpt: Checkpoint, where: Path | str) -> Checkpoint:
    """Validate the Wan component configs into pydantic models and check VAE/transformer channels."""
    comps = ckpt.components
    where = Path(str(where))
    update = {}
    for name in ("transformer", "transformer_2"):
        if name in comps and comps[name].config is not None and ckpt.index.class_name.startswith("Wan"):
            update[name] = _validate(TransformerConfig, comps[name].config, where / name / "config.json", name)
    if "vae" in comps and comps["vae"].config is not None and comps["vae"].class_name == "AutoencoderKLWan":
        update["vae"] = _validate(VaeConfig, comps["vae"].config, where / "vae" / "config.json", "vae")
    if "scheduler" in comps and comps["scheduler"].config is not None:
        update["scheduler"] = _validate(
            SchedulerConfig, comps["scheduler"].config, where / "scheduler" / "scheduler_config.json", "scheduler"
        )
    ckpt = ckpt.model_copy(update=update)
    problems = channel_problems(ckpt)
    if problems:
        raise InputError(str(where), problems)
    return ckpt


def channel_problems(ckpt: Checkpoint) -> list[str]:
    """Mismatches between the VAE latent channels (``z_dim``) and each transformer.

    Valid: ``out_channels == z_dim`` and ``in_channels`` either ``z_dim`` (text-to-video, TI2V,
    VACE) or ``2 × z_dim + scale_factor_temporal`` (image-to-video: noise + mask + condition latents).
    """
    if ckpt.vae is None:
        return []
    z = ckpt.vae.z_dim
    i2v = 2 * z + ckpt.vae.temporal_factor
    out = []
    for name in ("transformer", "transformer_2"):
        t = getattr(ckpt, name)
        if t is None:
            continue
        if t.out_channels != z:
            out.append(
                f"component {name!r}: out_channels {t.out_channels} does not match the VAE's z_dim {z}; "
                f"the transformer and vae/ come from different models: use the vae/ of the same checkpoint"
            )
        if t.in_channels not in (z, i2v):
            out.append(
                f"component {name!r}: in_channels {t.in_channels} fits neither text-to-video ({z} = VAE z_dim) "
                f"nor image-to-video ({i2v} = 2×{z}+{ckpt.vae.temporal_factor}); use the vae/ of the same checkpoint"
            )
    return out


def check_loadable(ckpt: Checkpoint) -> None:
    """Raise :class:`InputError` unless every listed component has its folder, config and
    safetensors weights on disk (sharded indexes included), so loading cannot fail half-way."""
    problems = []
    root = Path(ckpt.source)
    for c in ckpt.components.values():
        if not c.folder_exists:
            problems.append(f"component {c.name!r}: folder {c.name}/ is missing; download it (`hf download <repo> --include '{c.name}/*'`)")
        elif not c.has_config:
            problems.append(f"component {c.name!r}: no config file in {c.name}/; download it")
        elif c.needs_weights and not c.weights:
            problems.append(
                f"component {c.name!r}: no .safetensors weights in {c.name}/; download them (`hf download <repo> --include '{c.name}/*'`)"
            )
        elif c.folder_exists:
            for shard in _sharded_missing(root / c.name):
                problems.append(f"component {c.name!r}: shard {shard} named by its index file is missing; download it")
    if problems:
        raise InputError(ckpt.source, _with_repo(problems, ckpt.ref))
