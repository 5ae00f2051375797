"""Run a job function over a batch of videos: plan, skip what is done, dispatch, report.

    result = run_batch(["clips/", "more/*.mov"], Path("out"), defaults, run_rerender_job,
                       executor=ProcessExecutor(workers=2, devices=["cuda:0", "cuda:1"]))
    result.raise_for_failures()   # PartialFailure, exit code 7, when any video failed

Guarantees: outputs are named by `assign_outputs` (no collisions, stable across runs); a finished
output is skipped unless `overwrite`; one bad video never stops the batch (its failure is a report
line); every outcome is appended to `OUTDIR/report.jsonl` as soon as it is known, so an interrupted
batch keeps what it finished and the next run resumes after it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nvsvideo.batch.executors import Executor, JobOutcome, SequentialExecutor, failed_outcome
from nvsvideo.batch.inputs import VIDEO_EXTENSIONS, BatchItem, coerce_options, expand_inputs
from nvsvideo.batch.jobs import FrameRange, JobSpec, ProcessFn
from nvsvideo.batch.naming import assign_outputs
from nvsvideo.batch.report import (
    REPORT_NAME,
    BatchResult,
    ItemResult,
    Status,
    append_record,
    merge_stage_times,
    read_report,
)
from nvsvideo.console import Reporter, plural
from nvsvideo.errors import InputError, UsageError
from nvsvideo.files import remove_stale_temps, wait_for_writers

PARTS_DIR = ".parts"
"""Folder in OUTDIR for the chunk files of videos being processed in chunks (hidden: never an input)."""
PARTS_STAMP = "chunking.json"
"""File in a video's parts folder naming the input, options and chunk size its parts were made with."""


@dataclass(frozen=True)
class Chunking:
    """How to process long videos as chunks of frames, each its own job (e.g. its own Ray task).

    The job function receives `spec.frames` and writes only those frames to `spec.output` (a part
    file). When all parts of a video exist, `merge` joins them into the final output on the driver.
    Parts are kept until the merge succeeds, so an interrupted video resumes at its first missing part.
    `count_frames` and `merge` receive the video's whole-video `JobSpec` (input, final output, options).
    """

    frames: int
    """Frames per chunk (`--chunk-frames`)."""
    count_frames: Callable[[JobSpec], int]
    """Frames in a video, read on the driver after `prepare` (raise `InputError` for an unreadable one)."""
    merge: Callable[[Sequence[Path], JobSpec], None]
    """Write the final output `spec.output` (atomically) from the part files, given in frame order."""
    prepare: ProcessFn | None = None
    """Per-video work every chunk needs (e.g. face tracking and smoothing over the whole video): run
    once per video, as a job with `frames=None`, before that batch's chunks. It must not write `spec.output`."""

    def __post_init__(self) -> None:
        if self.frames < 1:
            raise UsageError(f"--chunk-frames must be at least 1, got {self.frames}")


@dataclass
class _Video:
    """A video being processed: its jobs and what came back."""

    item: BatchItem
    output: Path
    options: dict[str, Any]
    key: str
    jobs: list[JobSpec] = field(default_factory=list)
    outcomes: list[JobOutcome] = field(default_factory=list)
    prepared: JobOutcome | None = None  # outcome of `Chunking.prepare`
    reused_frames: int = 0  # frames in chunk parts finished by an earlier run
    parts: list[Path] = field(default_factory=list)  # every chunk's part file, in frame order


def run_batch(
    inputs: Sequence[str | os.PathLike[str]],
    outdir: Path,
    options: Mapping[str, Any],
    process_fn: ProcessFn,
    *,
    executor: Executor | None = None,
    overwrite: bool = False,
    recursive: bool = False,
    extensions: Iterable[str] = VIDEO_EXTENSIONS,
    suffix: str = ".mp4",
    chunking: Chunking | None = None,
    reporter: Reporter | None = None,
    on_result: Callable[[ItemResult], None] | None = None,
) -> BatchResult:
    """Process every video of INPUTS with `process_fn`, writing the outputs and the report into `outdir`.

    Args:
        inputs: files, folders, glob patterns and manifests (see `nvsvideo.batch.inputs`).
        outdir: output folder (on a cluster: a path every node can reach).
        options: batch-wide pipeline options; a manifest row may override these names only.
        process_fn: the job function (see `nvsvideo.batch.jobs`).
        executor: where jobs run; default: one after another in this process on the CPU.
        overwrite: redo videos whose output already exists.
        recursive: descend into sub-folders of folder inputs.
        extensions: suffixes that folders and patterns select.
        suffix: suffix of derived output names.
        chunking: process videos as chunks of frames (see `Chunking`).
        reporter: progress bars; default: a quiet one.
        on_result: called with each video's result as soon as it is known (e.g. to print a JSON line).

    Returns:
        The results in input order; `exit_code` is 0 when none failed, 7 otherwise.

    Raises:
        UsageError, InputError: INPUTS or a manifest that cannot be used; nothing has run then.
    """
    start = time.perf_counter()
    reporter = reporter or Reporter(quiet=True)
    executor = executor or SequentialExecutor()
    report_path = outdir / REPORT_NAME
    videos = _plan(inputs, outdir, options, recursive=recursive, extensions=extensions, suffix=suffix)
    by_key = {video.key: video for video in videos}
    results: dict[str, ItemResult] = {}

    def record(video: _Video, result: ItemResult) -> None:
        results[video.key] = result
        append_record(report_path, result.to_dict())
        if on_result is not None:
            on_result(result)

    made_with = {line["output"]: line.get("options") for line in read_report(report_path)
                 if line.get("status") == Status.OK.value}
    todo = []
    for video in videos:
        early = _skip_or_missing(video, overwrite=overwrite, made_with=made_with.get(str(video.output)))
        if early is not None:
            record(video, early)
        else:
            todo.append(video)

    with _removing_temps_on_interrupt(todo), executor:
        if chunking is not None and chunking.prepare is not None:
            prepared = [_whole_job(v) for v in todo]
            for spec, outcome in _with_progress(executor, chunking.prepare, prepared, reporter, "preparing"):
                video = by_key[spec.key]
                video.prepared = outcome
                if not outcome.ok:
                    record(video, _failed(video, outcome.error, outcome))
            todo = [v for v in todo if v.key not in results]
        for video in todo:
            if chunking is None:
                video.jobs = [_whole_job(video)]
                continue
            failure = _on_driver(lambda v=video: _chunk_jobs(v, chunking, overwrite=overwrite))
            if failure is not None:
                record(video, _failed(video, failure.error, failure))
        todo = [v for v in todo if v.key not in results]
        for video in todo:
            if not video.jobs:  # every chunk already finished by an earlier run: only the merge is left
                record(video, _finish(video, chunking))
        specs = [spec for video in todo for spec in video.jobs]
        label = processing_label(len(specs), len(todo), len(videos), chunked=chunking is not None)
        for spec, outcome in _with_progress(executor, process_fn, specs, reporter, label):
            video = by_key[spec.key]
            video.outcomes.append(outcome)
            if not outcome.ok and video.key not in results:
                where = "" if spec.frames is None else f"frames {spec.frames.start}-{spec.frames.stop - 1}: "
                record(video, _failed(video, where + outcome.error, outcome))
            elif len(video.outcomes) == len(video.jobs) and video.key not in results:
                record(video, _finish(video, chunking))
    return BatchResult(
        items=[results[v.key] for v in videos], report_path=report_path, seconds=time.perf_counter() - start
    )


#: How long an interrupted batch waits for its workers' own clean-up before removing what they left.
WORKER_EXIT_SECONDS = 10.0


@contextlib.contextmanager
def _removing_temps_on_interrupt(videos: Sequence[_Video]) -> Iterator[None]:
    """On Ctrl-C or SIGTERM, once the executor has stopped its workers, remove the temporary outputs that
    workers killed before their own clean-up left (Ray actors are killed outright)."""
    try:
        yield
    except KeyboardInterrupt:
        for video in videos:
            for output in {video.output, *(spec.output for spec in video.jobs)}:
                wait_for_writers(output, WORKER_EXIT_SECONDS)
                remove_stale_temps(output)
        raise


def _plan(
    inputs: Sequence[str | os.PathLike[str]],
    outdir: Path,
    options: Mapping[str, Any],
    *,
    recursive: bool = False,
    extensions: Iterable[str] = VIDEO_EXTENSIONS,
    suffix: str = ".mp4",
) -> list[_Video]:
    """Expand INPUTS, assign output names and merge each item's options over the batch-wide ones."""
    items = expand_inputs(inputs, extensions=extensions, recursive=recursive, exclude=outdir)
    outputs = assign_outputs(items, outdir, suffix=suffix)
    videos = []
    for item, output in zip(items, outputs, strict=True):
        merged = {**options, **coerce_options(item.options, options, where=item.source or str(item.input))}
        videos.append(_Video(item=item, output=output, options=merged, key=_key(output, outdir)))
    return videos


def _key(output: Path, outdir: Path) -> str:
    """Output path relative to OUTDIR when inside it: unique, and readable in progress and errors."""
    try:
        return output.absolute().relative_to(outdir.absolute()).as_posix()
    except ValueError:
        return str(output.absolute())


def _skip_or_missing(video: _Video, *, overwrite: bool, made_with: Mapping[str, Any] | None = None
                     ) -> ItemResult | None:
    """Result for a video that needs no job: its output is finished, or its input does not exist.

    `made_with`: the options of the report's last ok line for this output, if any; a skip says when
    they differ from this run's, as a rerun with another camera path would otherwise look done.
    """
    if video.output.exists() and not overwrite:
        asked = json.loads(json.dumps(video.options, default=str))  # as the report holds them (tuples -> lists)
        changed = sorted(k for k in asked if made_with is not None and made_with.get(k) != asked[k])
        if changed:
            reason = (f"the output exists but was made with other options ({', '.join(changed)}); "
                      "use --overwrite to redo it with these")
        else:
            reason = "the output already exists; use --overwrite to redo it"
        return _result(video, Status.SKIPPED, reason=reason)
    if not video.item.input.is_file():
        return _failed(
            video,
            f"the input {video.item.input} does not exist or is not a file",
            JobOutcome(exit_code=InputError.exit_code),
        )
    return None


def _whole_job(video: _Video) -> JobSpec:
    return JobSpec(key=video.key, input=video.item.input, output=video.output, options=video.options)


def _parts_dir(video: _Video) -> Path:
    return video.output.parent / PARTS_DIR / video.output.name


def _chunk_jobs(video: _Video, chunking: Chunking, *, overwrite: bool) -> None:
    """Set the video's jobs: one per chunk of `chunking.frames` frames whose part is not finished yet."""
    parts = _parts_dir(video)
    # Parts of an earlier run are reused only if made from the same input, options and chunk size.
    stamp = json.dumps({"input": str(video.item.input.absolute()), "options": video.options,
                        "frames": chunking.frames}, sort_keys=True, default=str)
    stamp_file = parts / PARTS_STAMP
    if parts.exists() and (overwrite or not stamp_file.is_file() or stamp_file.read_text() != stamp):
        shutil.rmtree(parts)
    parts.mkdir(parents=True, exist_ok=True)
    stamp_file.write_text(stamp)
    for frames in frame_chunks(chunking.count_frames(_whole_job(video)), chunking.frames):
        part = parts / f"{frames.label()}{video.output.suffix}"
        video.parts.append(part)
        if part.exists():
            video.reused_frames += len(frames)
        else:
            video.jobs.append(
                JobSpec(
                    key=video.key,
                    input=video.item.input,
                    output=part,
                    options=video.options,
                    frames=frames,
                    final_output=video.output,
                )
            )


def frame_chunks(total: int, size: int) -> list[FrameRange]:
    """Consecutive ranges of `size` frames covering `[0, total)`; the last one may be shorter."""
    return [FrameRange(start, min(start + size, total)) for start in range(0, total, size)]


def _finish(video: _Video, chunking: Chunking | None) -> ItemResult:
    """The ok result of a video whose jobs all succeeded; for chunks, merge the parts first."""
    summaries = [o.summary or {} for o in video.outcomes]
    frames = [s.get("frames") for s in summaries]
    prepared = [video.prepared.summary or {}] if video.prepared is not None else []
    stages = merge_stage_times(s.get("stages", {}) for s in [*prepared, *summaries])
    if chunking is not None:
        parts = video.parts
        start = time.perf_counter()
        failure = _on_driver(lambda: chunking.merge(parts, _whole_job(video)))
        if failure is not None:
            return _failed(video, f"joining the chunks failed: {failure.error}", failure)
        stages["merge"] = time.perf_counter() - start
        shutil.rmtree(_parts_dir(video))
        with contextlib.suppress(OSError):  # other videos' parts may still be there
            _parts_dir(video).parent.rmdir()
        details = _chunk_details(prepared, summaries)
        details["chunks"] = len(parts)
    else:
        details = {k: v for k, v in summaries[0].items() if k not in {"frames", "stages"}}
    return _result(
        video,
        Status.OK,
        frames=None if None in frames else sum(frames) + video.reused_frames,
        stages=stages,
        details=details,
    )


def _chunk_details(prepared: list[Mapping[str, Any]], chunks: list[Mapping[str, Any]]) -> dict[str, Any]:
    """A chunked video's details: what its preparation reported, then the chunks' counts, summed.

    Only whole numbers (frames rendered, inverted, ...) add up over chunks; other values are left out
    because no one chunk speaks for the video. Chunks finished by an earlier run are not counted.
    """
    skip = {"frames", "stages"}
    details = {k: v for summary in prepared for k, v in summary.items() if k not in skip}
    for summary in chunks:
        for key, value in summary.items():
            if key not in skip and isinstance(value, int) and not isinstance(value, bool):
                details[key] = details.get(key, 0) + value
    return details


def _failed(video: _Video, reason: str, outcome: JobOutcome) -> ItemResult:
    details = {"traceback": outcome.traceback} if outcome.traceback else {}
    return _result(video, Status.FAILED, reason=reason, exit_code=outcome.exit_code, details=details)


def _on_driver(call: Callable[[], object]) -> JobOutcome | None:
    """Run pipeline code on the driver under the jobs' error rule: an exception fails only this video."""
    try:
        call()
    except Exception as err:  # noqa: BLE001 - reported as this video's failure
        return failed_outcome(err)
    return None


def _result(video: _Video, status: Status, **fields: Any) -> ItemResult:
    outcomes = [*video.outcomes, *([video.prepared] if video.prepared is not None else [])]
    return ItemResult(
        input=str(video.item.input),
        output=str(video.output),
        status=status,
        seconds=sum(o.seconds for o in outcomes),
        attempts=max((o.attempts for o in outcomes), default=0),
        worker=",".join(sorted({o.worker for o in outcomes if o.worker})),
        options=dict(video.options),
        **fields,
    )


def processing_label(jobs: int, videos: int, total: int, *, chunked: bool) -> str:
    """What the progress counter counts, e.g. "processing 1 video (1 of 2 already failed or skipped)"."""
    label = f"processing {plural(jobs, 'chunk')} of {plural(videos, 'video')}" if chunked else \
        f"processing {plural(videos, 'video')}"
    settled = total - videos
    return label + (f" ({settled} of {total} already failed or skipped)" if settled else "")


def _with_progress(
    executor: Executor, fn: ProcessFn, specs: Sequence[JobSpec], reporter: Reporter, label: str
) -> Iterator[tuple[JobSpec, JobOutcome]]:
    """`executor.run` with a progress bar over the jobs (drawn on the driver, whatever the executor)."""
    if not specs:
        return
    with reporter.progress(label, total=len(specs)) as advance:
        for spec, outcome in executor.run(fn, specs):
            advance(1)
            yield spec, outcome
