"""A Wan pipeline assembled from the model files users already have (ComfyUI / Wan2GP layout).

Preset keys of a model stage (:class:`ModelFileFields`, on every model engine's parameters):

* ``model``: the denoiser as one ``.safetensors`` (Wan / ComfyUI / diffusers key layout; fp32,
  fp16, bf16, fp8 e4m3fn) or ``.gguf`` file; ``model_2``: the low-noise expert of a Wan2.2 A14B
  model (``model`` is then the high-noise one);
* ``vae``, ``text_encoder``, ``image_encoder``: a single ``.safetensors`` file or a diffusers
  folder (one holding that component, or a whole checkpoint whose subfolder is used);
* ``components``: a diffusers checkpoint folder or Hugging Face repo id that supplies whatever is
  not given as a file (tokenizer, text encoder, image encoder and processor, VAE, scheduler) and the
  configs; without it the shipped config of the identified variant is used
  (:data:`~wan_pipeline.models.single_file.CONFIGS_DIR`) and the tokenizer must come from a
  ``text_encoder`` folder;
* ``comfyui_models``: a ComfyUI ``models/`` folder; a bare file name in the keys above is looked up
  in its ``diffusion_models/`` (or ``unet/``), ``vae/``, ``text_encoders/`` (or ``clip/``) and
  ``clip_vision/`` subfolders.

The transformer goes through diffusers' ``from_single_file`` (GGUF through
``GGUFQuantizationConfig``) with ``config=`` a local folder, so nothing is fetched. Text and image
encoder files are loaded into the transformers class built from their folder's ``config.json``.
"""

from __future__ import annotations

import inspect
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from wan_pipeline.errors import InputError
from wan_pipeline.models.single_file import (
    CONFIGS_DIR,
    SINGLE_FILE_SUFFIXES,
    file_problems,
    is_single_file,
    pick_config,
    read_tensor_index,
    transformer_shape,
)
from wan_pipeline.models.variants import ModelInfo

COMFYUI_FOLDERS = {
    "model": ("diffusion_models", "unet"),
    "model_2": ("diffusion_models", "unet"),
    "vae": ("vae",),
    "text_encoder": ("text_encoders", "clip"),
    "image_encoder": ("clip_vision",),
}
"""Where ComfyUI keeps each kind of file under its ``models/`` folder."""


class ModelFileFields(BaseModel):
    """The preset keys that name model files (see the module doc); all optional."""

    model_config = ConfigDict(extra="forbid")

    model_2: str | None = Field(None, description="low-noise expert file of a Wan2.2 A14B model")
    vae: str | None = Field(None, description="VAE .safetensors file or diffusers folder")
    text_encoder: str | None = Field(None, description="UMT5 text encoder .safetensors file or diffusers folder")
    image_encoder: str | None = Field(None, description="CLIP vision .safetensors file or diffusers folder")
    components: str | None = Field(None, description="diffusers folder or repo id supplying the other components")
    comfyui_models: str | None = Field(None, description="a ComfyUI models/ folder to find bare file names in")


class ModelFiles(BaseModel):
    """Resolved, existing paths of a single-file model set; ``config_dir`` gives the configs
    (``components`` folder, else the shipped config of ``variant_config``)."""

    transformer: Path
    transformer_2: Path | None = None
    vae: Path | None = None
    text_encoder: Path | None = None
    image_encoder: Path | None = None
    components: Path | None = None
    config_dir: Path
    variant_config: str | None = None
    info: ModelInfo | None = None
    notes: list[str] = Field(default_factory=list)


EXTENSION_FILE_KEYS = ("vae", "text_encoder", "comfyui_models")
"""The clip section's single-file keys that a single-file ``extension_model`` (Wan VACE) shares with
its ``model``: the Wan2.1 VAE and UMT5 text encoder are the same for every Wan2.1 model. ``model_2``
and ``image_encoder`` are not carried (VACE has one expert and no CLIP image encoder), nor
``components`` (it holds the configs of ``model``): ``extension_components`` takes its place."""


def extension_file_fields(section: dict) -> dict:
    """The :class:`ModelFileFields` of the clip stage's ``extension_model`` from its section
    (a dict of the preset's ``stages.clip``): for a single-file extension model
    :data:`EXTENSION_FILE_KEYS` as the section has them and ``components`` =
    ``extension_components``; for a diffusers folder / repo id none (it holds every component).
    Returns every key of :class:`ModelFileFields` (None where not set)."""
    out = dict.fromkeys(ModelFileFields.model_fields)
    if is_single_file(section.get("extension_model") or ""):
        out.update({k: section.get(k) for k in EXTENSION_FILE_KEYS}, components=section.get("extension_components"))
    return out


def vace_file_problem(path, where: str, example: str = "wan2.1_vace_14B_fp16.safetensors") -> str | None:
    """A problem line when the single transformer file ``path`` has no VACE blocks (read from its
    tensor shapes, nothing loaded), naming the variant it is; None when it is a VACE file or not a
    readable transformer file (the model-file checks report that). ``where`` names the preset field."""
    from wan_pipeline.models.single_file import checkpoint_for_shape
    from wan_pipeline.models.variants import identify

    try:
        shape = transformer_shape(read_tensor_index(path), str(path))
        if shape.vace_layers:
            return None
        variant = identify(checkpoint_for_shape(shape, path.name, pick_config(shape, path.name)[0])).variant
    except InputError:
        return None
    return f"{where}: {path.name} is a {variant or 'non-VACE'} transformer file (no VACE blocks), not a Wan VACE one: give a VACE file (e.g. {example})"


def vace_configs_problem(where: str, file_name: str, configs_from: str, variant: str | None) -> str:
    """The problem line for a VACE transformer file given the configs of another model.
    where: the preset field; file_name: the transformer file's name; configs_from: what holds the
    configs (e.g. ``extension_components`` or ``the components folder <path>``); variant: the model
    those configs describe (None: unknown)."""
    return (
        f"{where}: {file_name} is a VACE file but {configs_from} holds the configs of {variant or 'another model'}: "
        "give the configs and tokenizer of the VACE model (e.g. Wan-AI/Wan2.1-VACE-14B-diffusers without weights)"
    )


def uses_single_file(params_or_path) -> bool:
    """True when a stage's parameters (or a path) name a single-file transformer."""
    if isinstance(params_or_path, (str, Path)):
        return is_single_file(params_or_path)
    return is_single_file(getattr(params_or_path, "model", "") or "")


def vae_z_dim(vae: Path | None, components: Path | None) -> int | None:
    """Latent channels of the VAE a model set will use: from a VAE file's ``conv1`` /
    ``quant_conv`` weight (2·z_dim output channels), a folder's ``config.json``, or the
    ``components`` checkpoint's ``vae/config.json``; None when there is none."""
    import json

    if vae is not None and vae.is_file():
        index = read_tensor_index(vae)
        for key in ("conv1.weight", "quant_conv.weight"):
            if key in index:
                z = index[key].shape[0] // 2
                if z == 48 and any(k.startswith("decoder.upsamples.") for k in index):
                    raise InputError(
                        str(vae),
                        "the Wan2.2 VAE in its original key layout cannot be loaded: diffusers' Wan VAE conversion covers "
                        "the Wan2.1 VAE only; set `vae:` to the vae/ folder of Wan-AI/Wan2.2-TI2V-5B-Diffusers "
                        "(`hf download Wan-AI/Wan2.2-TI2V-5B-Diffusers --include 'vae/*'`, 1.4 GB)",
                    )
                return z
        raise InputError(str(vae), "not a Wan VAE file (no conv1 / quant_conv tensor): give the VAE file (ComfyUI: models/vae/)")
    folder = vae if vae is not None else (components / "vae" if components is not None else None)
    if folder is None:
        return None
    cfg = _subfolder(folder, "vae") / "config.json"
    return int(json.loads(cfg.read_text()).get("z_dim", 16)) if cfg.is_file() else None


def _components_gaps(found: dict, components: Path | None, needs_image_encoder: bool) -> list[str]:
    """What the ``components`` folder must supply (a component not given as a file or folder:
    its weights; always a tokenizer unless the ``text_encoder`` folder has one) and lacks."""
    te = found["text_encoder"]
    out = []
    has_tok = te is not None and te.is_dir() and (_has_tokenizer(te) or _has_tokenizer(te / "tokenizer"))
    if not has_tok and not (components is not None and _has_tokenizer(components / "tokenizer")):
        out.append(
            "tokenizer: none found: set `components:` to a diffusers Wan folder with tokenizer/ (a few MB: "
            "`hf download Wan-AI/Wan2.1-T2V-1.3B-Diffusers --include 'tokenizer/*' 'text_encoder/config.json' --local-dir models/wan-components`)"
        )
    roles = [("vae", "vae"), ("text_encoder", "text_encoder")] + ([("image_encoder", "image_encoder")] if needs_image_encoder else [])
    for role, sub in roles:
        if found[role] is not None:
            continue
        if components is None:
            if role != "vae":  # the missing VAE is reported on its own
                out.append(f"{role}: not given: set `{role}:` to its file or folder, or `components:` to a diffusers folder holding {sub}/")
        elif not any((components / sub).glob("*.safetensors")) and not any((components / sub).glob("*.safetensors.index.json")):
            out.append(
                f"{role}: {components}/{sub}/ has no .safetensors weights: set `{role}:` to its file, or download {sub}/ into that folder"
            )
    if needs_image_encoder and components is not None and not (components / "image_processor").is_dir():
        out.append(f"image_processor: {components}/image_processor/ is missing: download it (`--include 'image_processor/*'`, a few kB)")
    return out


def _find(role: str, ref: str, params, root: Path | None) -> tuple[Path | None, list[str]]:
    """The path ``ref`` names for ``role`` and the places looked at."""
    p = Path(ref).expanduser()
    looked = []
    if p.is_absolute():
        return (p if p.exists() else None), [str(p)]
    if params.comfyui_models:
        base = Path(params.comfyui_models).expanduser()
        if not base.is_absolute() and root is not None:
            base = root / base
        for sub in COMFYUI_FOLDERS[role]:
            cand = base / sub / ref
            looked.append(str(cand))
            if cand.exists():
                return cand, looked
    for base in [root, Path.cwd()]:
        if base is None:
            continue
        cand = base / p
        looked.append(str(cand))
        if cand.exists():
            return cand, looked
    return None, looked


def find_model_file(params, root: Path | None = None) -> Path | None:
    """The existing path a stage's ``model`` key names (looked up as :func:`resolve_model_files`
    does: absolute, ``comfyui_models``, ``root``, the working folder), or None."""
    return _find("model", params.model, params, root)[0]


def resolve_model_files(params, file: str | None, root: Path | None = None) -> ModelFiles:
    """Resolve a stage's model-file keys to existing paths and pick the config folder.

    root: folder relative paths are read against (the storage root) before the working folder.
    Raises :class:`InputError` naming ``file`` (the preset), the key, where it looked and the fix.
    """
    from wan_pipeline.models.checkpoint import read_checkpoint, resolve_model
    from wan_pipeline.models.single_file import checkpoint_for_shape
    from wan_pipeline.models.variants import identify

    problems: list[str] = []
    found: dict[str, Path | None] = {}
    for role in ("model", "model_2", "vae", "text_encoder", "image_encoder"):
        ref = getattr(params, role, None)
        if not ref:
            found[role] = None
            continue
        path, looked = _find(role, ref, params, root)
        if path is None:
            hint = f" (ComfyUI: models/{COMFYUI_FOLDERS[role][0]}/)" if params.comfyui_models else ""
            problems.append(f"{role}: {ref} not found; looked at {', '.join(looked)}{hint}")
        elif role.startswith("model") and not (path.is_file() and path.suffix.lower() in SINGLE_FILE_SUFFIXES):
            problems.append(f"{role}: {path} is not a .safetensors or .gguf file")
        elif path.is_file() and path.suffix.lower() != ".safetensors" and role not in ("model", "model_2"):
            problems.append(f"{role}: {path.name}: only .safetensors files (or diffusers folders) are loaded, never pickles")
        found[role] = path
    components = None
    if params.components:
        ref = params.components
        local = Path(ref).expanduser()
        if not local.is_absolute() and root is not None and (root / local).exists():
            local = root / local
        try:
            components = resolve_model(str(local) if local.exists() else ref)
        except InputError as exc:
            problems.append(f"components: {exc}")
    if problems:
        raise InputError(file, problems)

    shape = transformer_shape(read_tensor_index(found["model"]), str(found["model"]))
    config, notes = pick_config(shape, found["model"].name)
    problems = [f"model: {p}" for p in file_problems(shape, found["model"])]
    if components is not None:
        config_dir = components
    elif config is not None:
        config_dir = CONFIGS_DIR / config
    else:
        problems.append(
            f"model: {found['model'].name} has dims that match no published Wan checkpoint "
            f"({shape.num_layers} layers, hidden {shape.hidden_dim}, in_channels {shape.in_channels}): "
            "set `components:` to a diffusers folder of the same model (it gives the configs)"
        )
        config_dir = CONFIGS_DIR
    two_experts = (config_dir / "transformer_2" / "config.json").is_file()
    if two_experts and found["model_2"] is None:
        notes.append("a two-expert model given one file: only that expert runs (set model_2: for the low-noise expert)")
    if found["model_2"] is not None and not two_experts and config_dir != CONFIGS_DIR:
        problems.append(f"model_2: {config_dir.name} is a one-expert model (no transformer_2 config); model_2 is for Wan2.2 A14B")
    if found["vae"] is None and components is None:
        problems.append("vae: no VAE given: set `vae:` to the VAE file (ComfyUI: models/vae/wan_2.1_vae.safetensors) or `components:`")
    try:
        z = vae_z_dim(found["vae"], components)
    except InputError as exc:
        problems.append(f"vae: {exc}")
        z = None
    if z is not None and z != shape.out_channels:
        problems.append(
            f"vae: latent channels (z_dim) {z} do not match the transformer's {shape.out_channels}: "
            + (
                "Wan2.2 TI2V-5B needs the Wan2.2 VAE (the vae/ folder of Wan-AI/Wan2.2-TI2V-5B-Diffusers)"
                if shape.out_channels == 48
                else "use the Wan2.1 VAE (wan_2.1_vae.safetensors)"
            )
        )
    problems += _components_gaps(found, components, shape.image_dim is not None)
    if problems:
        raise InputError(file, problems)
    try:
        ckpt = read_checkpoint(components) if components is not None else checkpoint_for_shape(shape, found["model"].name, config)
        info = identify(ckpt)
    except InputError:
        info = None
    return ModelFiles(
        transformer=found["model"],
        transformer_2=found["model_2"],
        vae=found["vae"],
        text_encoder=found["text_encoder"],
        image_encoder=found["image_encoder"],
        components=components,
        config_dir=config_dir,
        variant_config=config,
        info=info,
        notes=notes,
    )


# -- loading ----------------------------------------------------------------------------------


def _transformer_class(config_dir: Path, sub: str):
    import json

    import diffusers

    cfg = json.loads((config_dir / sub / "config.json").read_text())
    name = cfg.get("_class_name", "WanTransformer3DModel")
    return getattr(diffusers, name)


def load_transformer(path: Path, config_dir: Path, subfolder: str, dtype, keep_fp8: bool = False):
    """One Wan denoiser from a single file through ``from_single_file`` (``config=`` the local
    ``config_dir``, never the Hub); ``.gguf`` keeps its quantized weights
    (``GGUFQuantizationConfig(compute_dtype=dtype)``). keep_fp8: for a file whose weights are
    mostly fp8, store the layers in that fp8 type and compute in ``dtype`` (diffusers'
    ``enable_layerwise_casting``; half the memory of bf16; norms and embeddings stay in ``dtype``).

    diffusers 0.42's Wan key conversion has no rule for FLF2V's ``img_emb.emb_pos`` (it would be
    left uninitialised), so that one tensor is renamed here before the conversion.
    """
    from diffusers import GGUFQuantizationConfig
    from diffusers.loaders.single_file_utils import load_single_file_checkpoint

    cls = _transformer_class(config_dir, subfolder)
    checkpoint = load_single_file_checkpoint(str(path), local_files_only=True)
    for key in ("img_emb.emb_pos", "model.diffusion_model.img_emb.emb_pos"):
        if key in checkpoint:
            checkpoint["condition_embedder.image_embedder.pos_embed"] = checkpoint.pop(key)
    kwargs = {}
    if path.suffix.lower() == ".gguf":
        kwargs["quantization_config"] = GGUFQuantizationConfig(compute_dtype=dtype)
    model = cls.from_single_file(
        checkpoint, config=str(config_dir), subfolder=subfolder, torch_dtype=dtype, local_files_only=True, **kwargs
    )
    meta = [n for n, p in model.named_parameters() if p.device.type == "meta"]
    if meta:
        raise InputError(
            str(path), f"{len(meta)} transformer weights are missing from this file (e.g. {meta[0]}): a partial or foreign export"
        )
    import torch

    file_dtype = transformer_shape(read_tensor_index(path), str(path)).dtype if keep_fp8 else ""
    if file_dtype.startswith("float8"):
        model.enable_layerwise_casting(storage_dtype=getattr(torch, file_dtype), compute_dtype=dtype)
    return model.eval()


def _subfolder(folder: Path, name: str) -> Path:
    """``folder/name`` when ``folder`` is a whole checkpoint, else ``folder`` (a component folder)."""
    return folder / name if (folder / name).is_dir() else folder


def load_vae(files: ModelFiles, dtype):
    from diffusers import AutoencoderKLWan

    if files.vae is not None and files.vae.is_file():
        return AutoencoderKLWan.from_single_file(
            str(files.vae), config=str(files.config_dir), subfolder="vae", torch_dtype=dtype, local_files_only=True
        )
    folder = files.vae or (files.components and files.components / "vae")
    if folder is None:
        raise InputError(
            str(files.transformer), "no VAE: set `vae:` to the VAE file (ComfyUI: models/vae/wan_2.1_vae.safetensors) or `components:`"
        )
    return AutoencoderKLWan.from_pretrained(str(_subfolder(Path(folder), "vae")), torch_dtype=dtype)


def _encoder_from_file(cls, weights: Path, config_folder: Path | None, what: str, dtype):
    """A transformers encoder ``cls`` from a single safetensors file, its config from ``config_folder``."""
    from safetensors.torch import load_file
    from transformers import AutoConfig

    if config_folder is None or not (config_folder / "config.json").is_file():
        raise InputError(
            str(weights), f"{what} file given but no config.json for it: set `components:` to a diffusers folder holding {what}/config.json"
        )
    import torch

    config = AutoConfig.from_pretrained(str(config_folder))
    with torch.device("meta"):
        expected = set(cls(config).state_dict())
    state = load_file(str(weights))
    if any(k.endswith(("scale_weight", "scaled_fp8")) for k in state):
        raise InputError(
            str(weights),
            f"a ComfyUI 'fp8_scaled' {what} file (per-tensor scales) cannot be loaded: use the fp16 / bf16 file or a diffusers folder",
        )
    missing = sorted(expected - set(state) - {"encoder.embed_tokens.weight"})  # tied to shared.weight in T5
    if missing:
        raise InputError(
            str(weights),
            f"{len(missing)} of the {what}'s {len(expected)} weights are not in this file (e.g. {missing[0]}; the file has "
            f"{next(iter(state), 'no tensors')} …): it is in another key layout or for another model; give a {cls.__name__} "
            f"file in transformers' layout, or a diffusers folder",
        )
    return cls.from_pretrained(None, config=config, state_dict=state, torch_dtype=dtype)


def load_text_encoder(files: ModelFiles, dtype):
    """(text_encoder, tokenizer): UMT5 from a file (config and tokenizer from ``components``) or a folder."""
    from transformers import AutoTokenizer, UMT5EncoderModel

    folder = files.text_encoder if files.text_encoder is not None and files.text_encoder.is_dir() else None
    base = files.components
    tok_dir = next(
        (d for d in (folder and _subfolder(folder, "tokenizer"), folder, base and base / "tokenizer") if d and _has_tokenizer(d)), None
    )
    if tok_dir is None:
        raise InputError(
            str(files.text_encoder or files.transformer),
            "no tokenizer: set `components:` to a diffusers Wan folder (`hf download Wan-AI/Wan2.1-T2V-1.3B-Diffusers --include 'tokenizer/*'` is a few MB)",
        )
    tokenizer = AutoTokenizer.from_pretrained(str(tok_dir))
    return _load_encoder(UMT5EncoderModel, "text_encoder", files, folder, dtype), tokenizer


def _load_encoder(cls, role: str, files: ModelFiles, folder: Path | None, dtype):
    """The encoder ``role`` (``text_encoder`` / ``image_encoder``) as ``cls``: from its single file
    (config from ``components/<role>``), else from its folder or ``components/<role>``. Raises
    :class:`InputError` when neither is given."""
    given, base = getattr(files, role), files.components
    if given is not None and given.is_file():
        cfg = base / role if base is not None else None
        return _encoder_from_file(cls, given, cfg, role, dtype)
    src = folder or (base and base / role)
    if src is None:
        raise InputError(str(files.transformer), f"no {role.replace('_', ' ')}: set `{role}:` (file or folder) or `components:`")
    return cls.from_pretrained(str(_subfolder(Path(src), role)), torch_dtype=dtype)


def _has_tokenizer(folder: Path) -> bool:
    return any((folder / n).is_file() for n in ("tokenizer.json", "spiece.model", "tokenizer_config.json"))


def load_image_encoder(files: ModelFiles, dtype):
    """(image_encoder, image_processor) for Wan2.1 I2V / FLF2V, from a file or a folder."""
    from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

    base = files.components
    folder = files.image_encoder if files.image_encoder is not None and files.image_encoder.is_dir() else None
    proc_dir = next(
        (d for d in (folder and _subfolder(folder, "image_processor"), base and base / "image_processor") if d and d.is_dir()), None
    )
    if proc_dir is None:
        raise InputError(str(files.transformer), "no image_processor config: set `components:` to a diffusers Wan I2V folder")
    processor = CLIPImageProcessor.from_pretrained(str(proc_dir))
    return _load_encoder(CLIPVisionModelWithProjection, "image_encoder", files, folder, dtype), processor


def load_files_pipeline(pipeline_cls, files: ModelFiles, dtype, keep_fp8: bool = False):
    """Build ``pipeline_cls`` (a diffusers Wan pipeline class) from resolved files; float weights
    in ``dtype`` (fp8 transformer files stay fp8 in memory with ``keep_fp8``, see
    :func:`load_transformer`). Returns the pipeline; its ``config`` carries ``boundary_ratio`` /
    ``expand_timesteps`` from the config folder's ``model_index.json``."""
    import json

    from diffusers import UniPCMultistepScheduler

    index = json.loads((files.config_dir / "model_index.json").read_text())
    wanted = set(inspect.signature(pipeline_cls.__init__).parameters)
    parts: dict = {"transformer": load_transformer(files.transformer, files.config_dir, "transformer", dtype, keep_fp8)}
    if "transformer_2" in wanted:
        parts["transformer_2"] = None
        if files.transformer_2 is not None:
            sub = "transformer_2" if (files.config_dir / "transformer_2").is_dir() else "transformer"
            parts["transformer_2"] = load_transformer(files.transformer_2, files.config_dir, sub, dtype, keep_fp8)
    parts["vae"] = load_vae(files, dtype)
    parts["text_encoder"], parts["tokenizer"] = load_text_encoder(files, dtype)
    parts["scheduler"] = UniPCMultistepScheduler.from_pretrained(str(files.config_dir), subfolder="scheduler")
    if "image_encoder" in wanted:
        parts["image_encoder"] = parts["image_processor"] = None
        if parts["transformer"].config.get("image_dim") is not None:
            parts["image_encoder"], parts["image_processor"] = load_image_encoder(files, dtype)
    for key in ("boundary_ratio", "expand_timesteps"):
        if key in wanted and index.get(key) is not None:
            parts[key] = index[key]
    if "expand_timesteps" in wanted and parts["transformer"].config.get("in_channels") == 48:
        parts["expand_timesteps"] = True  # Wan2.2 TI2V-5B (its model_index says so; a components folder may predate the key)
    if "boundary_ratio" in wanted and parts.get("transformer_2") is None:
        parts.pop("boundary_ratio", None)
    return pipeline_cls(**{k: v for k, v in parts.items() if k in wanted})


def files_checkpoint(section: dict, file: str | None):
    """``(Checkpoint or None, facts, problems)`` for a preset stage section naming a single-file
    model, for the doctor: the checkpoint whose configs describe the model (``components``, else
    the shipped config the file matches, else one built from the file's shapes; for the memory
    planner and :func:`~wan_pipeline.models.variants.identify`), the facts (``kind``, ``source``,
    ``layout``, ``file_dtype``, ``config``, ``notes``) and what keeps the set from loading (the
    problems of :func:`resolve_model_files`). The model file is identified even when the set is
    incomplete; the checkpoint is None only when the model file itself cannot be read."""
    from wan_pipeline.models.checkpoint import read_checkpoint
    from wan_pipeline.models.single_file import checkpoint_for_shape
    from wan_pipeline.storage import storage_root

    class _Section(ModelFileFields):
        model: str

    params = _Section.model_validate({**{k: section.get(k) for k in ModelFileFields.model_fields}, "model": section["model"]})
    facts: dict = {"kind": "single file", "notes": []}
    problems: list[str] = []
    components = None
    try:
        files = resolve_model_files(params, file, storage_root())
        path, components, facts["notes"] = files.transformer, files.components, files.notes
    except InputError as exc:
        problems = list(exc.problems)
        path, _ = _find("model", params.model, params, storage_root())
        if path is None or not path.is_file():
            return None, facts, problems
    try:
        shape = transformer_shape(read_tensor_index(path), str(path))
        config, notes = pick_config(shape, path.name)
        if components is not None:
            ckpt = read_checkpoint(components)
        elif config is not None:
            ckpt = read_checkpoint(CONFIGS_DIR / config)
        else:
            ckpt = checkpoint_for_shape(shape, path.name, None)
    except InputError as exc:
        return None, facts, problems or list(exc.problems)
    facts.update(
        source=str(path),
        downloaded=True,
        layout=shape.layout,
        file_dtype=shape.dtype,
        config=config or (str(components) if components else None),
        notes=facts["notes"] or notes,
    )
    return ckpt, facts, problems
