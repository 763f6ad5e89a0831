"""Media types and I/O: :class:`Clip` (frames + rational fps), PyAV video files, PNG images."""

from wan_pipeline.media.clip import Clip
from wan_pipeline.media.image_io import fit_image, read_image, write_image
from wan_pipeline.media.video_io import VideoInfo, probe_video, read_video, write_video

__all__ = ["Clip", "VideoInfo", "probe_video", "read_video", "write_video", "read_image", "write_image", "fit_image"]
