"""What the engines that run Wan VACE (diffusers ``WanVACEPipeline``) share: loading the pipeline
with a check that the checkpoint is a VACE one, and the masked-video input it takes.

VACE's masked video-to-video task (VACE paper, §3; diffusers ``WanVACEPipeline``): the input
``video`` holds the given frames and neutral grey placeholders where frames are to be made, the
``mask`` is 0 on given frames and 1 (255 as an 8-bit image) on frames to generate. The film stage
(:mod:`~wan_pipeline.engines.vace_film`) regenerates the frames around a seam this way; the clip
stage (:mod:`~wan_pipeline.engines.wan_clip`) extends a long FLF2V scene segment by segment.
"""

from __future__ import annotations

import numpy as np

from wan_pipeline.errors import InputError
from wan_pipeline.models.model_files import vace_configs_problem, vace_file_problem

GREY = 127
"""Value of the placeholder pixels of frames to generate (the VACE reference code fills them with 0
in [-1, 1], i.e. mid grey)."""


def vace_video_and_mask(video: np.ndarray, given: np.ndarray) -> tuple[list, list]:
    """The ``video`` and ``mask`` lists of a ``WanVACEPipeline`` call.

    video: uint8 (T, H, W, 3), the frames where ``given`` (bool (T,)) is True (the others are
    replaced by :data:`GREY` placeholders). Returns ``(frames, masks)``: T RGB PIL images and T
    single-channel PIL images, 0 where a frame is given, 255 where it is generated.
    """
    from PIL import Image

    given = np.asarray(given, dtype=bool)
    if video.ndim != 4 or len(given) != len(video):
        raise ValueError(f"video must be (T, H, W, 3) with one flag per frame, got {video.shape} and {len(given)} flags")
    h, w = video.shape[1:3]
    frames = [Image.fromarray(f if g else np.full((h, w, 3), GREY, np.uint8)) for f, g in zip(video, given)]
    masks = [Image.fromarray(np.full((h, w), 0 if g else 255, np.uint8)) for g in given]
    return frames, masks


def vace_checkpoint_problem(source: str, where: str, example: str = "Wan-AI/Wan2.1-VACE-14B-diffusers") -> str | None:
    """A problem line when the diffusers checkpoint at ``source`` (folder or cached repo id, read
    from its configs only) is no Wan VACE checkpoint; None when it is. ``where`` names the preset
    field (``stages.clip.extension_model``). Raises :class:`InputError` when the configs cannot be
    read (not downloaded, no ``model_index.json``)."""
    from wan_pipeline.models import identify, read_checkpoint

    info = identify(read_checkpoint(source))
    if "VACE" in info.capabilities:
        return None
    return f"{where}: {source} is a {info.variant or 'non-VACE'} checkpoint, not a Wan VACE one: give a VACE checkpoint (e.g. {example})"


def vace_files_problem(files, where: str) -> str | None:
    """A problem line when a resolved single-file set
    (:class:`~wan_pipeline.models.model_files.ModelFiles`) takes its configs from a ``components``
    folder of another model than VACE (they would build the wrong transformer); None otherwise."""
    if files.components is None or (files.info is not None and "VACE" in files.info.capabilities):
        return None
    variant = files.info.variant if files.info is not None else None
    return vace_configs_problem(where, files.transformer.name, f"the components folder {files.components}", variant)


class VacePipeline:
    """Mixin for a :class:`~wan_pipeline.engines.diffusers_support.DiffusersEngine` whose pipeline
    is ``WanVACEPipeline``, loaded on first use from ``params.model`` (``vace_field`` names that
    field in errors). Raises :class:`InputError` before any weight is read when the checkpoint is
    no VACE one (a single transformer file: from its tensor shapes when the engine is built, see
    :meth:`check_single_file`)."""

    vace_field = "model"

    def check_single_file(self, root):
        """The single-file model set must be VACE, checked when the engine is built from the file
        headers: the transformer file first (a non-VACE file is the one problem named, not the
        components it would then lack), then the configs it is given."""
        from wan_pipeline.models.model_files import find_model_file

        where = f"stages.{self.stage}.{self.vace_field}"
        path = find_model_file(self.params, root)
        problem = vace_file_problem(path, where) if path is not None and path.is_file() else None
        if problem:
            raise InputError(self.file, problem)
        files = super().check_single_file(root)
        problem = vace_files_problem(files, where)
        if problem:
            raise InputError(self.file, problem)
        return files

    @property
    def pipe(self):
        """The loaded ``WanVACEPipeline`` (loaded on first use)."""
        if self._pipe is None:
            from diffusers import WanVACEPipeline

            from wan_pipeline.engines.diffusers_support import resolve_model_source
            from wan_pipeline.models.model_files import uses_single_file

            where = f"stages.{self.stage}.{self.vace_field}"
            problem = None
            if not uses_single_file(self.params):  # a single file was checked when the engine was built
                try:
                    problem = vace_checkpoint_problem(resolve_model_source(self.params.model, self.preset.storage_root), where)
                except InputError:
                    pass  # unreadable configs: loading reports them with their fix
            if problem:
                raise InputError(self.file, problem)
            self._pipe = self._load(WanVACEPipeline)
        return self._pipe
