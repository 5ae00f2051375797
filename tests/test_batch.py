"""Batch machinery in one process: INPUTS expansion, output names, the report, skipping, chunking.

The job is `batch_jobs.blur_job` (tests/batch_jobs.py): it reads `.npy` frame stacks, blurs them and writes
the result atomically, so every check below is about real files written and read back.
"""

from __future__ import annotations

import io
import json
import threading
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from nvsvideo.batch import (
    BatchArgs,
    BatchItem,
    Chunking,
    FrameRange,
    JobSpec,
    ProcessExecutor,
    SequentialExecutor,
    Status,
    WorkerContext,
    assign_outputs,
    coerce_options,
    expand_inputs,
    frame_chunks,
    make_executor,
    read_report,
    results_table,
    run_batch,
    run_from_args,
    worker_devices,
)
from nvsvideo.batch.report import ItemResult, append_record, reason_lines, summary_line
from nvsvideo.batch.runner import processing_label
from nvsvideo.console import Reporter
from nvsvideo.errors import DeviceError, InputError, PartialFailure, UsageError

import batch_jobs as syn

NPY = {".npy"}
OPTIONS = {"work": 2}


def make_video(path: Path, frames: int = 6, seed: int = 0) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    syn.write_frames(path, np.random.default_rng(seed).integers(0, 256, (frames, 8, 10, 3), dtype=np.uint8))
    return path


def make_corrupt(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"this is not a frame file")
    return path


def batch(inputs: list, outdir: Path, fn=syn.blur_job, **kwargs):
    kwargs.setdefault("extensions", NPY)
    kwargs.setdefault("suffix", ".npy")
    return run_batch([str(i) for i in inputs], outdir, kwargs.pop("options", OPTIONS), fn, **kwargs)


# --- INPUTS --------------------------------------------------------------------------------------


def test_folder_selects_videos_sorted_and_skips_hidden_other_and_outdir(tmp_path: Path) -> None:
    for name in ["b.mp4", "a.MOV", ".a.part.mp4", "notes.txt", "out/old.mp4", "sub/c.mkv"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    flat = expand_inputs([tmp_path], exclude=tmp_path / "out")
    assert [i.input.name for i in flat] == ["a.MOV", "b.mp4"]
    deep = expand_inputs([tmp_path], recursive=True, exclude=tmp_path / "out")
    assert [i.input.relative_to(tmp_path).as_posix() for i in deep] == ["a.MOV", "b.mp4", "sub/c.mkv"]


def test_glob_explicit_missing_file_and_duplicates(tmp_path: Path) -> None:
    for name in ["x/1.mp4", "y/2.mp4", "y/3.txt"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    items = expand_inputs(
        [f"{tmp_path}/*/*", tmp_path / "x/1.mp4", tmp_path / "gone.avi", tmp_path / "y/3.txt"]
    )
    # The pattern selects videos only; a named file is taken as given (even missing, even .txt);
    # x/1.mp4 named twice is processed once.
    assert [i.input.name for i in items] == ["1.mp4", "2.mp4", "gone.avi", "3.txt"]
    with pytest.raises(UsageError, match="matches no video"):
        expand_inputs([f"{tmp_path}/*.webm"])
    with pytest.raises(UsageError, match="no INPUTS"):
        expand_inputs([])


def test_csv_manifest_paths_options_and_errors(tmp_path: Path) -> None:
    manifest = tmp_path / "jobs" / "list.csv"
    manifest.parent.mkdir()
    manifest.write_text("input,output,work,camera\nclips/a.mp4,,3,\n/abs/b.mp4,b_orbit.mp4,,orbit\n")
    first, second = expand_inputs([manifest])
    assert first.input == manifest.parent / "clips/a.mp4" and first.output is None
    assert dict(first.options) == {"work": "3"}  # empty cells mean "batch-wide value"
    assert second.input == Path("/abs/b.mp4") and second.output == Path("b_orbit.mp4")
    assert dict(second.options) == {"camera": "orbit"}
    assert second.source == "list.csv line 3"
    (tmp_path / "bad.csv").write_text("video,work\na.mp4,1\n")
    with pytest.raises(InputError, match="'input' column"):
        expand_inputs([tmp_path / "bad.csv"])
    with pytest.raises(InputError, match="cannot read the manifest"):
        expand_inputs([tmp_path / "absent.csv"])


def test_jsonl_manifest_keeps_json_types_and_reports_bad_lines(tmp_path: Path) -> None:
    manifest = tmp_path / "list.jsonl"
    manifest.write_text(
        '{"input": "a.mp4", "work": 0, "yaw": -0.3}\n\n{"input": "b.mp4", "output": "x.mp4"}\n'
    )
    first, second = expand_inputs([manifest])
    assert dict(first.options) == {"work": 0, "yaw": -0.3} and second.output == Path("x.mp4")
    manifest.write_text('{"input": "a.mp4"}\n{"input": "b.mp4",\n')
    with pytest.raises(InputError, match="line 2 is not valid JSON"):
        expand_inputs([manifest])
    manifest.write_text('{"output": "a.mp4"}\n')
    with pytest.raises(InputError, match="line 1 has no 'input'"):
        expand_inputs([manifest])


def test_coerce_options_converts_to_default_types_and_rejects_typos() -> None:
    defaults = {"work": 1, "strength": 0.1, "audio": True, "camera": "orbit"}
    raw = {"work": "4", "strength": "0.5", "audio": "no", "camera": "yaw"}
    assert coerce_options(raw, defaults, where="row") == {
        "work": 4,
        "strength": 0.5,
        "audio": False,
        "camera": "yaw",
    }
    assert coerce_options({"work": 7}, defaults, where="row") == {"work": 7}  # JSON values are kept
    with pytest.raises(UsageError, match="unknown option 'camra'"):
        coerce_options({"camra": "x"}, defaults, where="row")
    with pytest.raises(UsageError, match="option 'work' expects a int"):
        coerce_options({"work": "many"}, defaults, where="row")


# --- output names ---------------------------------------------------------------------------------


def names(items: list[BatchItem], outdir: Path = Path("/out")) -> list[str]:
    return [p.name for p in assign_outputs(items, outdir)]


def test_same_stem_in_different_folders_gets_the_fewest_parent_names() -> None:
    items = [BatchItem(Path(p)) for p in ["/d/day1/take.mp4", "/d/day2/take.mov", "/d/solo.mp4"]]
    assert names(items) == ["day1_take.mp4", "day2_take.mp4", "solo.mp4"]
    deeper = [BatchItem(Path(p)) for p in ["/x/cam/Take.mp4", "/y/cam/take.mp4"]]  # case-insensitive clash
    assert names(deeper) == ["x_cam_Take.mp4", "y_cam_take.mp4"]
    # Names depend on the set of inputs, not their order, so a re-run finds the same outputs.
    assert names(list(reversed(items))) == list(reversed(names(items)))


def test_same_input_with_different_options_gets_stable_hashes() -> None:
    items = [
        BatchItem(Path("/v/a.mp4"), options={"camera": "orbit"}),
        BatchItem(Path("/v/a.mp4"), options={"camera": "yaw"}),
    ]
    first = names(items)
    assert first[0] != first[1] and all(n.startswith("a-") and n.endswith(".mp4") for n in first)
    assert names(items) == first


def test_explicit_outputs_clashes_and_self_overwrite() -> None:
    explicit = [
        BatchItem(Path("/v/a.mp4"), output=Path("same.mp4")),
        BatchItem(Path("/v/b.mp4"), output=Path("same.mp4")),
    ]
    with pytest.raises(UsageError, match="already used"):
        assign_outputs(explicit, Path("/out"))
    # A derived name that equals a manifest's explicit output is moved aside with a hash.
    clash = [BatchItem(Path("/v/a.mp4")), BatchItem(Path("/v/b.mp4"), output=Path("a.mp4"))]
    derived, given = names(clash)
    assert given == "a.mp4" and derived.startswith("a-") and derived != "a.mp4"
    with pytest.raises(UsageError, match="overwrite the input"):
        assign_outputs([BatchItem(Path("/v/a.mp4"))], Path("/v"))


# --- report ---------------------------------------------------------------------------------------


def test_report_lines_are_whole_under_concurrent_appends(tmp_path: Path) -> None:
    report = tmp_path / "report.jsonl"

    def writer(n: int) -> None:
        for i in range(100):
            append_record(report, {"writer": n, "i": i, "pad": "x" * 500})

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    records = read_report(report)
    assert len(records) == 300 and sorted((r["writer"], r["i"]) for r in records)[-1] == (2, 99)


# --- run_batch in this process --------------------------------------------------------------------


def test_three_videos_one_corrupt_then_resume_and_overwrite(tmp_path: Path) -> None:
    a, b = make_video(tmp_path / "in/a.npy", seed=1), make_video(tmp_path / "in/b.npy", seed=2)
    make_corrupt(tmp_path / "in/c.npy")
    out = tmp_path / "out"
    result = batch([tmp_path / "in"], out)
    assert [i.status for i in result.items] == [Status.OK, Status.OK, Status.FAILED]
    assert result.exit_code == 7
    with pytest.raises(PartialFailure, match="1 of 3 videos failed") as err:
        result.raise_for_failures()
    assert err.value.exit_code == 7
    failed = result.items[2]
    assert failed.exit_code == InputError.exit_code and "c.npy is not a readable frame file" in failed.reason
    expected = syn.box_blur(syn.read_frames(a), np.full((3, 3), 1 / 9, np.float32), repeats=2)
    assert np.array_equal(syn.read_frames(out / "a.npy"), expected)
    assert result.items[0].frames == 6 and set(result.items[0].stages) == {"read", "blur", "write"}
    assert [r["status"] for r in read_report(out / "report.jsonl")] == ["ok", "ok", "failed"]
    assert sorted(p.name for p in out.iterdir()) == ["a.npy", "b.npy", "report.jsonl"]  # no temporaries

    before = (out / "b.npy").stat().st_mtime_ns
    again = batch([tmp_path / "in"], out)
    assert [i.status for i in again.items] == [Status.SKIPPED, Status.SKIPPED, Status.FAILED]
    assert (out / "b.npy").stat().st_mtime_ns == before
    assert len(read_report(out / "report.jsonl")) == 6  # runs append

    b.unlink()
    make_video(b, seed=3)
    redo = batch([tmp_path / "in/b.npy"], out, overwrite=True)
    assert redo.exit_code == 0 and redo.items[0].status is Status.OK
    assert not np.array_equal(syn.read_frames(out / "b.npy"), syn.read_frames(out / "a.npy"))


def test_a_crashing_job_or_missing_input_does_not_stop_the_batch(tmp_path: Path) -> None:
    make_video(tmp_path / "one.npy")
    make_video(tmp_path / "two.npy")

    def buggy(spec: JobSpec, ctx: WorkerContext) -> dict:
        if spec.input.stem == "one":
            raise ZeroDivisionError("division by zero")
        return syn.blur_job(spec, ctx)

    result = batch(
        [tmp_path / "one.npy", tmp_path / "gone.npy", tmp_path / "two.npy"], tmp_path / "out", fn=buggy
    )
    bug, missing, ok = result.items
    assert bug.status is Status.FAILED and bug.exit_code == 1
    assert bug.reason == "internal error: ZeroDivisionError: division by zero"
    assert "ZeroDivisionError" in bug.details["traceback"]
    assert missing.status is Status.FAILED and missing.exit_code == 3 and "does not exist" in missing.reason
    assert ok.status is Status.OK and (tmp_path / "out/two.npy").exists()


def test_manifest_options_reach_the_job_and_typos_stop_before_any_work(tmp_path: Path) -> None:
    make_video(tmp_path / "a.npy")
    manifest = tmp_path / "jobs.csv"
    manifest.write_text("input,output,work\na.npy,plain.npy,0\na.npy,blurred.npy,\n")
    result = batch([manifest], tmp_path / "out")
    assert result.exit_code == 0
    assert np.array_equal(syn.read_frames(tmp_path / "out/plain.npy"), syn.read_frames(tmp_path / "a.npy"))
    assert not np.array_equal(
        syn.read_frames(tmp_path / "out/blurred.npy"), syn.read_frames(tmp_path / "a.npy")
    )
    manifest.write_text("input,wrok\na.npy,1\n")
    with pytest.raises(UsageError, match="unknown option 'wrok'"):
        batch([manifest], tmp_path / "typo")
    assert not (tmp_path / "typo").exists()


def test_chunks_give_the_same_output_and_resume_at_the_first_missing_chunk(tmp_path: Path) -> None:
    video = make_video(tmp_path / "long.npy", frames=7)
    whole = batch([video], tmp_path / "whole")
    started: list[FrameRange | None] = []

    def fails_on_second_chunk(spec: JobSpec, ctx: WorkerContext) -> dict:
        started.append(spec.frames)
        if spec.frames == FrameRange(3, 6):
            raise InputError("frame 4 could not be decoded")
        return syn.blur_job(spec, ctx)

    chunking = Chunking(frames=3, count_frames=syn.count_frames, merge=syn.merge_parts)
    first = batch([video], tmp_path / "chunked", fn=fails_on_second_chunk, chunking=chunking)
    assert first.items[0].status is Status.FAILED
    assert first.items[0].reason == "frames 3-5: frame 4 could not be decoded"
    assert len(list((tmp_path / "chunked/.parts/long.npy").glob("*.npy"))) == 2  # finished chunks are kept

    started.clear()
    resumed = batch(
        [video],
        tmp_path / "chunked",
        fn=lambda s, c: started.append(s.frames) or syn.blur_job(s, c),
        chunking=chunking,
    )
    assert started == [FrameRange(3, 6)]
    item = resumed.items[0]
    assert (
        item.status is Status.OK
        and item.frames == 7
        and item.details["chunks"] == 3
        and "merge" in item.stages
    )
    assert (tmp_path / "chunked/long.npy").read_bytes() == (tmp_path / "whole/long.npy").read_bytes()
    assert not (tmp_path / "chunked/.parts/long.npy").exists()
    assert whole.items[0].frames == 7


def test_parts_made_with_other_options_or_chunk_sizes_are_not_reused(tmp_path: Path) -> None:
    video = make_video(tmp_path / "long.npy", frames=7)

    def fails_on_last_chunk(spec: JobSpec, ctx: WorkerContext) -> dict:
        if spec.frames is not None and spec.frames.stop == 7:
            raise InputError("interrupted")
        return syn.blur_job(spec, ctx)

    def chunking(frames: int) -> Chunking:
        return Chunking(frames=frames, count_frames=syn.count_frames, merge=syn.merge_parts)

    out = tmp_path / "out"
    batch([video], out, fn=fails_on_last_chunk, chunking=chunking(3))  # leaves parts 0-3 and 3-6, blurred once
    started: list[FrameRange | None] = []

    def job(spec: JobSpec, ctx: WorkerContext) -> dict:
        started.append(spec.frames)
        return syn.blur_job(spec, ctx)

    stronger = {**OPTIONS, "work": 3}
    result = batch([video], out, fn=job, chunking=chunking(3), options=stronger)
    assert result.items[0].status is Status.OK and len(started) == 3  # other options: every chunk again
    expected = batch([video], tmp_path / "whole", options=stronger)
    assert expected.items[0].status is Status.OK
    assert (out / "long.npy").read_bytes() == (tmp_path / "whole/long.npy").read_bytes()

    (out / "long.npy").unlink()
    batch([video], out, fn=fails_on_last_chunk, chunking=chunking(2), options=stronger)
    started.clear()
    result = batch([video], out, fn=job, chunking=chunking(3), options=stronger)
    assert len(started) == 3  # the 2-frame parts do not fit 3-frame chunks
    assert (out / "long.npy").read_bytes() == (tmp_path / "whole/long.npy").read_bytes()
    assert not (out / ".parts").exists()


def test_prepare_runs_once_per_video_before_its_chunks(tmp_path: Path) -> None:
    make_video(tmp_path / "a.npy", frames=4)
    make_video(tmp_path / "b.npy", frames=4)
    events: list[str] = []

    def prepare(spec: JobSpec, ctx: WorkerContext) -> dict:
        events.append(f"prepare {spec.input.stem}")
        if spec.input.stem == "b":
            raise InputError("no face was found in b.npy")
        return {"stages": {"track": 0.5}}

    def job(spec: JobSpec, ctx: WorkerContext) -> dict:
        events.append(f"chunk {spec.input.stem}")
        return syn.blur_job(spec, ctx)

    chunking = Chunking(frames=2, count_frames=syn.count_frames, merge=syn.merge_parts, prepare=prepare)
    result = batch([tmp_path / "a.npy", tmp_path / "b.npy"], tmp_path / "out", fn=job, chunking=chunking)
    assert events == ["prepare a", "prepare b", "chunk a", "chunk a"]
    ok, failed = result.items
    assert ok.status is Status.OK and ok.stages["track"] == 0.5
    assert failed.status is Status.FAILED and failed.reason == "no face was found in b.npy"


def test_frame_chunks_cover_the_video_exactly() -> None:
    assert frame_chunks(7, 3) == [FrameRange(0, 3), FrameRange(3, 6), FrameRange(6, 7)]
    assert frame_chunks(3, 3) == [FrameRange(0, 3)]
    with pytest.raises(ValueError):
        FrameRange(2, 2)
    with pytest.raises(UsageError, match="chunk-frames"):
        Chunking(frames=0, count_frames=syn.count_frames, merge=syn.merge_parts)


# --- the CLI-facing layer -------------------------------------------------------------------------


def test_run_from_args_prints_one_json_line_per_video_and_a_table(tmp_path: Path) -> None:
    make_video(tmp_path / "a.npy")
    make_corrupt(tmp_path / "b.npy")
    stdout = io.StringIO()
    args = BatchArgs(
        inputs=[str(tmp_path / "a.npy"), str(tmp_path / "b.npy")],
        outdir=tmp_path / "out",
        json_lines=True,
        quiet=True,
    )
    result = run_from_args(args, syn.blur_job, OPTIONS, suffix=".npy", stdout=stdout)
    lines = [json.loads(line) for line in stdout.getvalue().splitlines()]
    assert [(r["status"], Path(r["output"]).name) for r in lines] == [("ok", "a.npy"), ("failed", "b.npy")]
    assert lines[1]["exit_code"] == 3 and result.exit_code == 7
    console = Console(record=True, width=80)
    console.print(results_table(result.items))
    assert "failed" in console.export_text()
    [reason] = reason_lines(result.items)
    assert reason.startswith("b.npy: ") and "b.npy is not a readable frame file" in reason
    with pytest.raises(UsageError, match="--chunk-frames is not supported"):
        run_from_args(
            BatchArgs(inputs=[str(tmp_path / "a.npy")], outdir=tmp_path / "o2", chunk_frames=2),
            syn.blur_job,
            OPTIONS,
        )


def test_make_executor_follows_the_options(monkeypatch: pytest.MonkeyPatch) -> None:
    base = {"inputs": ["x.mp4"], "outdir": Path("out")}
    assert isinstance(make_executor(BatchArgs(**base, device="cpu")), SequentialExecutor)
    pool = make_executor(BatchArgs(**base, device="cpu", workers=3, retries=2))
    assert isinstance(pool, ProcessExecutor) and list(pool.devices) == ["cpu"] * 3 and pool.retries == 2
    with pytest.raises(UsageError, match="--workers"):
        make_executor(BatchArgs(**base, workers=0))
    monkeypatch.setitem(__import__("sys").modules, "ray", None)  # as if Ray were not installed
    with pytest.raises(UsageError, match=r"pip install 'nvsvideo\[ray\]'"):
        make_executor(BatchArgs(**base, ray=""))


def test_worker_devices_spread_lists_and_refuse_missing_gpus() -> None:
    assert worker_devices("cpu", 2) == ["cpu", "cpu"]
    assert worker_devices("cpu, cpu", 3) == ["cpu", "cpu", "cpu"]
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(DeviceError):
            worker_devices("cuda:0,cuda:1", 2)
    else:
        assert worker_devices("cuda", 2)[0] == "cuda:0"


def test_chunk_frames_option_sets_the_chunk_size(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_video(tmp_path / "a.npy", frames=6)
    sizes: list[int] = []

    def chunking(frames: int) -> Chunking:
        sizes.append(frames)
        return Chunking(frames=frames, count_frames=syn.count_frames, merge=syn.merge_parts)

    args = BatchArgs(
        inputs=[str(tmp_path / "a.npy")], outdir=tmp_path / "out", chunk_frames=4, quiet=True, device="cpu"
    )
    result = run_from_args(args, syn.blur_job, OPTIONS, chunking=chunking, suffix=".npy")
    assert sizes == [4]
    assert "with one, the chunks run one after another" in capsys.readouterr().err
    assert summary_line(result).startswith("1 video: 1 ok in ")
    assert result.items[0].details["chunks"] == 2 and result.items[0].frames == 6


def test_progress_says_what_it_counts() -> None:
    # Two videos of which one failed before processing: the counter's 1/1 is one video of two.
    assert processing_label(1, 1, 2, chunked=False) == "processing 1 video (1 of 2 already failed or skipped)"
    assert processing_label(3, 2, 2, chunked=True) == "processing 3 chunks of 2 videos"


def test_tables_in_a_log_have_no_boxes_and_no_trailing_spaces(tmp_path: Path) -> None:
    item = ItemResult(input=str(tmp_path / "a.mp4"), output=str(tmp_path / "out/a.mp4"), status=Status.FAILED,
                      reason="a reason " * 20, stages={"align": 1.25, "render": 12.5})
    log = io.StringIO()
    reporter = Reporter(console=Console(file=log, width=80))
    assert not reporter.console.is_terminal
    reporter.table(results_table([item]))
    text = log.getvalue()
    assert "a.mp4" in text and text.isascii()
    assert all(line == line.rstrip() for line in text.splitlines())
