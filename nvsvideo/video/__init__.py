"""Video I/O: probe a file, stream its frames, encode new ones with the source's timing and audio.

Typical pipeline use:

    info = probe(src)
    reader = VideoReader(src, batch_size=16, info=info)
    with VideoWriter(dst, width=info.width, height=info.height, fps=info.fps,
                     time_base=info.time_base, colour=info.colour, audio_from=src) as writer:
        for batch in reader:
            writer.write(process(batch.frames), batch.pts)
    if reader.warning:
        reporter.warn(reader.warning)

A long video can also be processed in parts: read a `FrameSpan` (the reader seeks to it), encode
each part with its source timestamps, then `join_videos` the parts with the source's audio.
"""

from nvsvideo.video.extract import ExtractResult, extract_frames
from nvsvideo.video.join import join_videos
from nvsvideo.video.probe import AudioStreamInfo, VideoInfo, probe
from nvsvideo.video.reader import FrameBatch, FrameSpan, TruncatedVideoWarning, VideoReader, read_frames
from nvsvideo.video.writer import VideoWriter

__all__ = [
    "AudioStreamInfo",
    "ExtractResult",
    "FrameBatch",
    "FrameSpan",
    "TruncatedVideoWarning",
    "VideoInfo",
    "VideoReader",
    "VideoWriter",
    "extract_frames",
    "join_videos",
    "probe",
    "read_frames",
]
