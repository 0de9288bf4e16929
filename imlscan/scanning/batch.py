"""Scanning a folder of thousands of photos: resumable, shardable, failure-tolerant.

Design: worker processes read, hash and decode files ahead of the model (a bounded window, so
memory stays flat); the main process batches inference and writes each image's outputs
atomically, its JSON report last. That JSON (with the file's sha256 and a key of the settings)
is the resume record: a re-run skips an image only when the bytes and the settings match and
every requested output exists. Shards are chosen by a hash of the relative path, so N jobs
split a folder without talking to each other and an image keeps its shard when files are added.
"""

from __future__ import annotations

import contextlib
import csv
import fnmatch
import hashlib
import io
import json
import os
import re
import stat
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from imlscan.defaults import DEFAULT_MAX_PIXELS
from imlscan.errors import ImlscanError, UsageError
from imlscan.fsutil import (
    FolderLock,
    acquire_lock,
    atomic_write_text,
    check_unlocked,
    ensure_folder,
    name_max,
    sha256_bytes,
    temp_prefix,
    temporary_prefix,
    write_error,
)
from imlscan.imageio import IMAGE_EXTENSIONS, decode_bytes, read_file
from imlscan.safetext import csv_cell, dumps_json
from imlscan.scanning.provenance import provenance_tags, read_provenance, summary_fields
from imlscan.scanning.report import (
    OUTPUT_SUFFIXES,
    output_base,
    output_paths,
    render_contact_sheet,
    write_outputs,
)
from imlscan.scanning.workers import InlineExecutor, decoding_pool

if TYPE_CHECKING:
    from imlscan.scanning.predict import Predictor

SUMMARY_COLUMNS = [
    "rank",
    "relpath",
    "status",
    "score",
    "authentic_percent_lower",
    "mask_fraction",
    "regions",
    "width",
    "height",
    "sha256",
    "software",
    "camera",
    "c2pa",
    "thumbnail_mismatch",
    "json",
    "overlay",
    "error",
]


@dataclass
class BatchOptions:
    """What a batch run writes and how it splits the work (the CLI's options)."""

    out_dir: Path
    globs: list[str] = field(default_factory=list)
    overwrite: bool = False
    shard: tuple[int, int] | None = None
    batch_size: int = 4
    workers: int = 2
    top: int = 50
    overlay: bool = True
    mask: bool = False
    prob: bool = False
    html: bool = False
    threshold: float = 0.5
    max_pixels: int | None = DEFAULT_MAX_PIXELS

    def kinds(self) -> list[str]:
        on = (("overlay", self.overlay), ("mask", self.mask), ("prob", self.prob), ("html", self.html))
        return [k for k, v in on if v] + ["thumbnail"]


@dataclass
class BatchSummary:
    found: int
    selected: int
    processed: int = 0
    skipped: int = 0
    failed: int = 0
    small: int = 0
    interrupted: bool = False
    results_path: Path | None = None
    summary_path: Path | None = None
    index_path: Path | None = None

    @property
    def exit_code(self) -> int:
        return 1 if self.failed else 0


@dataclass
class BatchProfile:
    """Where a batch run's time went, as the run itself recorded it (``run_batch(profile=...)``).

    Why: ``batch`` overlaps the decoding processes (read, decode, traces, provenance; the keypoint
    detector where it runs there) with the main process (network, dense matcher, fusion,
    writing), so its speed is set by the busier side, not by the sum of the stages. ``stages``
    sums each stage's wall-clock seconds over the photos; ``worker_busy_s`` is the decoding side's
    time spent working (summed over its processes; with ``--workers 0`` that work runs in the
    main process and counts in both), ``main_wait_s`` the main process's time blocked waiting for
    a decoded photo, so ``wall_s - main_wait_s`` is its busy time. CPU seconds count every thread
    of the main process, so on a full machine they show whether the cores, not the overlap, limit."""

    images: int = 0
    wall_s: float = 0.0
    main_wait_s: float = 0.0
    main_cpu_s: float = 0.0
    first_photo_s: float | None = None
    worker_busy_s: float = 0.0
    worker_cpu_s: float = 0.0
    stages: dict[str, float] = field(default_factory=dict)
    side: dict[str, str] = field(default_factory=dict)

    @property
    def main_busy_s(self) -> float:
        return self.wall_s - self.main_wait_s

    def add(self, side: str, seconds: dict[str, float]) -> None:
        """Add a photo's (or a batch's) stage seconds done on ``side`` ("main" or "workers")."""
        for stage, v in seconds.items():
            self.stages[stage] = self.stages.get(stage, 0.0) + v
            self.side[stage] = side if self.side.get(stage, side) == side else "both"

    def to_dict(self) -> dict[str, Any]:
        total = sum(self.stages.values())
        return {
            "images": self.images,
            "wall_s": self.wall_s,
            "first_photo_s": self.first_photo_s,
            "main_busy_s": self.main_busy_s,
            "main_wait_s": self.main_wait_s,
            "main_cpu_s": self.main_cpu_s,
            "worker_busy_s": self.worker_busy_s,
            "worker_cpu_s": self.worker_cpu_s,
            "seconds": dict(self.stages),
            "share": {k: (v / total if total > 0 else 0.0) for k, v in self.stages.items()},
            "side": dict(self.side),
        }


# --- which files ----------------------------------------------------------------------------------


@dataclass
class Discovery:
    """What a walk of the input folder found: the images, and the folders it could not open
    (``(relpath, error)``: recorded as failures, never skipped silently)."""

    images: list[str]
    unreadable: list[tuple[str, str]] = field(default_factory=list)


_AGGREGATE = re.compile(r"^(results|summary|index)(\.shard-\d+-of-\d+)?\.(jsonl|csv|html)$")


def _folder_id(path: str | os.PathLike) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_dev, st.st_ino) if stat.S_ISDIR(st.st_mode) else None


def _own_output(folder: Path, name: str, siblings: set[str]) -> bool:
    """Whether ``name`` is an output imlscan wrote next to its input (``--out`` is the input
    folder, or holds it): ``a.jpg.overlay.png`` beside ``a.jpg``, or any file that the report
    beside it lists among its outputs."""
    for suffix in OUTPUT_SUFFIXES.values():
        if not name.endswith(suffix) or len(name) == len(suffix):
            continue
        base = name[: -len(suffix)]
        if base in siblings:
            return True
        report = base + OUTPUT_SUFFIXES["json"]
        if report in siblings:
            try:
                outputs = json.loads((folder / report).read_text(encoding="utf-8")).get("outputs")
            except (OSError, ValueError, AttributeError):
                continue
            if isinstance(outputs, dict) and name in outputs.values():
                return True
    return False


def discover(root: str | os.PathLike, globs: Iterable[str] = (), exclude: str | os.PathLike | None = None) -> Discovery:
    """The images under ``root`` (relative POSIX paths, sorted) and the folders that could not
    be opened. Hidden files and folders are left out, and so is every output of imlscan: the
    ``exclude`` folder (the output folder) with everything under it, and, when the output folder
    is the input folder or above it, the reports, pictures and results files beside the photos,
    so a re-run never scans the previous run's outputs as photos.

    Without ``globs``, files with an image extension; with them, files whose name (or, for a
    pattern with ``/``, whose relative path) matches any pattern, case-insensitively.

    Raises:
        ImlscanError: ``root`` itself cannot be read.
    """
    root = Path(root)
    globs = [g.lower() for g in globs]
    skip = _folder_id(exclude) if exclude is not None else None
    images: list[str] = []
    unreadable: list[tuple[str, str]] = []
    stack = [""]
    while stack:
        rel_dir = stack.pop()
        here = root / rel_dir if rel_dir else root
        try:
            with os.scandir(here) as it:
                entries = list(it)
        except OSError as e:
            if not rel_dir:
                raise ImlscanError(f"{root}: cannot read this folder ({e.strerror or e})") from None
            unreadable.append(
                (rel_dir, f"{here}: cannot read this folder ({e.strerror or e}); its photos were not scanned")
            )
            continue
        siblings = {e.name for e in entries}
        is_out = skip is not None and _folder_id(here) == skip
        for entry in entries:
            name = entry.name
            if name.startswith("."):
                continue
            rel = f"{rel_dir}/{name}" if rel_dir else name
            try:
                is_dir = entry.is_dir()
            except OSError:
                is_dir = False
            if is_dir:
                if not entry.is_symlink() and (skip is None or _folder_id(entry.path) != skip):
                    stack.append(rel)
                continue
            if is_out and _AGGREGATE.match(name):
                continue
            if globs:
                ok = any(fnmatch.fnmatchcase(rel.lower() if "/" in g else name.lower(), g) for g in globs)
            else:
                ok = Path(name).suffix.lower() in IMAGE_EXTENSIONS
            if ok and not _own_output(here, name, siblings):
                images.append(rel)
    return Discovery(sorted(images), sorted(unreadable))


def find_images(
    root: str | os.PathLike, globs: Iterable[str] = (), exclude: str | os.PathLike | None = None
) -> list[str]:
    """The images of ``discover`` (relative POSIX paths, sorted)."""
    return discover(root, globs, exclude).images


def parse_shard(spec: str) -> tuple[int, int]:
    """``"K/N"`` with 1 <= K <= N (K counts from 1, as most array-job schedulers can)."""
    m = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", spec or "")
    if not m:
        raise UsageError(f"invalid --shard {spec!r}", hint="use K/N, e.g. --shard 1/4 ... --shard 4/4")
    k, n = int(m.group(1)), int(m.group(2))
    if n < 1 or not 1 <= k <= n:
        raise UsageError(f"invalid --shard {spec!r}: K must be between 1 and N", hint="K counts from 1: 1/4 ... 4/4")
    return k, n


def shard_of(relpath: str, n: int) -> int:
    """The shard (1..n) of a relative path: a stable hash, the same on every machine and run."""
    digest = hashlib.sha256(relpath.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % n + 1


def select_shard(relpaths: Iterable[str], shard: tuple[int, int] | None) -> list[str]:
    if shard is None:
        return list(relpaths)
    k, n = shard
    return [r for r in relpaths if shard_of(r, n) == k]


def _shard_tag(shard: tuple[int, int] | None) -> str:
    return f".shard-{shard[0]}-of-{shard[1]}" if shard else ""


def aggregate_names(shard: tuple[int, int] | None) -> tuple[str, str, str]:
    """Per-shard names, so shards writing into one shared folder never overwrite each other."""
    tag = _shard_tag(shard)
    return f"results{tag}.jsonl", f"summary{tag}.csv", f"index{tag}.html"


def settings_key(predictor: Predictor, threshold: float) -> str:
    """A short hash of everything that changes an image's result (not where it runs)."""
    from imlscan.scanning.result import SCORE_VERSION
    from imlscan.scanning.traces import TRACE_VERSIONS

    info = predictor.weights_info
    settings = {
        "schema": "imlscan.batch/1",
        "score_version": SCORE_VERSION,
        "weights": (info.sha256 or info.name) if info is not None else type(predictor.model).__name__,
        "mode": predictor.mode,
        "size": predictor.size if predictor.mode == "resize" else None,
        "tile": [predictor.tile, predictor.overlap] if predictor.mode == "native" else None,
        "mean": predictor.mean,
        "std": predictor.std,
        "precision": predictor.precision,
        "threshold": float(threshold),
    }
    if predictor.copy_move is not None:  # only then, so records written before the fusion existed stay valid
        settings["copy_move"] = predictor.copy_move.settings()
    if predictor.traces:
        settings["traces"] = list(predictor.traces)
        settings["trace_versions"] = {n: TRACE_VERSIONS[n] for n in predictor.traces}
    if getattr(predictor, "fp32_parts", None):  # bf16 CPU scans made before the stem stayed fp32 differ
        settings["fp32_parts"] = predictor.fp32_parts
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]


# --- worker side ----------------------------------------------------------------------------------


def prepare(task: dict[str, Any]) -> dict[str, Any]:
    """Read, hash and (unless already done) decode one file. Runs in a worker process, so it
    returns errors as values: one bad file never stops the run.

    Every answer carries ``stages`` (seconds per stage) and ``busy_s``/``cpu_s`` (wall-clock and
    CPU seconds of the whole call): a few clock reads that let ``bench`` show which side of the
    run, these processes or the main one, sets its pace."""
    t0, c0 = time.perf_counter(), time.process_time()
    stages: dict[str, float] = {}
    res = _prepare(task, stages)
    res.update(stages=stages, busy_s=time.perf_counter() - t0, cpu_s=time.process_time() - c0)
    return res


def _prepare(task: dict[str, Any], stages: dict[str, float]) -> dict[str, Any]:
    path = Path(task["path"])
    t = time.perf_counter()
    try:
        data = read_file(path)
    except ImlscanError as e:
        return {"kind": "error", "error": e.message}
    sha = sha256_bytes(data)
    if not task["overwrite"]:
        record = done_record(Path(task["json"]), sha, task["key"], [Path(p) for p in task["expected"]])
        if record is not None:
            return {"kind": "skip", "record": record}
    t0 = _lap(stages, "read", t)
    try:
        decoded = decode_bytes(data, name=str(path), max_pixels=task["max_pixels"])
    except ImlscanError as e:
        return {"kind": "error", "error": e.message, "sha256": sha}
    except Exception as e:  # noqa: BLE001 - a decoder bug on one file must not end the run
        return {"kind": "error", "error": f"{path}: unexpected {type(e).__name__}: {str(e)[:200]}", "sha256": sha}
    t = _lap(stages, "decode", t0)
    decode_s = t - t0
    kp = None
    if task["keypoints"] is not None:
        from imlscan.scanning.copymove_keypoints import map_ahead

        kp = map_ahead(task["keypoints"], decoded.rgb)
        t = _lap(stages, "keypoints", t)
    keypoints_s = t - t0 - decode_s
    t1 = t
    traces = {}
    if task.get("traces"):
        from imlscan.scanning.traces import Photo, compute_traces

        traces = compute_traces(Photo(data, decoded), task["traces"])
        t = _lap(stages, "trace_setup", t)
        for name, r in traces.items():  # each trace's own seconds; the rest is setup (imports)
            stages[f"trace:{name}"] = r.seconds
            stages["trace_setup"] -= r.seconds
    traces_s = t - t1
    provenance = read_provenance(data, decoded_rgb=decoded.rgb)  # a picklable dataclass
    _lap(stages, "provenance", t)
    return {
        "kind": "image",
        "decoded": decoded,
        "decode_s": decode_s,
        "keypoints": kp,
        "keypoints_s": keypoints_s,
        "traces": traces,
        "traces_s": traces_s,
        "provenance": provenance,
    }


def _lap(stages: dict[str, float], stage: str, t0: float) -> float:
    """Add the seconds since ``t0`` to ``stages[stage]``; the time now."""
    now = time.perf_counter()
    stages[stage] = stages.get(stage, 0.0) + now - t0
    return now


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not JSON")


def done_record(json_path: Path, sha256: str, key: str, expected: Iterable[Path]) -> dict[str, Any] | None:
    """The stored report if this image is complete for these bytes and settings, else None."""
    try:
        record = json.loads(json_path.read_text(encoding="utf-8"), parse_constant=_not_json)
    except (OSError, ValueError):  # a report with a bare NaN (older versions wrote them) is redone
        return None
    if not isinstance(record, dict) or record.get("status") != "ok" or record.get("settings_key") != key:
        return None
    if (record.get("input") or {}).get("sha256") != sha256:
        return None
    if not all(p.exists() for p in expected):
        return None
    return record


# --- main side ------------------------------------------------------------------------------------


def lock_name(shard: tuple[int, int] | None) -> str:
    """The lock file of a run in its output folder: one per shard, so shards share a folder."""
    return f".imlscan-batch{_shard_tag(shard)}.lock"


def lock_output(out: Path, shard: tuple[int, int] | None, log: Callable[[str], None]) -> FolderLock:
    """Give the output folder to this run: its own lock (a shard's, or the whole folder's),
    refused while a run without ``--shard`` holds the folder, or, for such a run, while any
    shard does (their results would mix)."""
    lock = acquire_lock(out / lock_name(shard), note=log)
    try:
        others = [out / lock_name(None)] if shard else sorted(out.glob(".imlscan-batch.shard-*.lock"))
        for other in others:
            check_unlocked(other)
    except BaseException:
        lock.release()
        raise
    return lock


def sweep_temporaries(out: Path, own: set[tuple[str, str]] | None = None) -> int:
    """Remove the temporaries a killed run left under ``out`` (``fsutil.atomic_path``'s hidden
    ``.NAME.*.part*`` files, the index's included). ``own`` limits it to ``(folder, temp_prefix)``
    pairs of this run's outputs: a shard must not touch the files other shards are writing.

    Returns:
        How many files were removed.
    """
    removed = 0
    for dirpath, dirnames, filenames in os.walk(out):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        folder = Path(dirpath).relative_to(out).as_posix()
        for name in filenames:
            prefix = temporary_prefix(name)
            if prefix is not None and (own is None or (folder, prefix) in own):
                try:
                    os.unlink(os.path.join(dirpath, name))
                    removed += 1
                except FileNotFoundError:
                    pass
    return removed


@contextlib.contextmanager
def _output_folder(
    out: Path,
    shard: tuple[int, int] | None,
    selected: list[str],
    base_of: Callable[[str], str],
    log: Callable[[str], None],
) -> Iterator[None]:
    """Hold the output folder for the run (``lock_output``, released however the run ends),
    after removing what a killed run left there: every temporary for a run with the whole
    folder, only its own outputs' for a shard."""
    lock = lock_output(out, shard, log)
    try:
        own = None
        if shard is not None:
            own = {(".", temp_prefix(n)) for n in aggregate_names(shard)}
            for rel in selected:
                parent, base = Path(rel).parent.as_posix(), base_of(rel)
                own.update((parent, temp_prefix(base + suffix)) for suffix in OUTPUT_SUFFIXES.values())
        sweep_temporaries(out, own)
        yield
    finally:
        lock.release()


def run_batch(
    input_dir: str | os.PathLike,
    predictor: Predictor,
    options: BatchOptions,
    *,
    progress: Callable[..., None] | None = None,
    on_result: Callable[[dict[str, Any]], None] | None = None,
    log: Callable[[str], None] | None = None,
    before_inference: Callable[[], None] | None = None,
    profile: BatchProfile | None = None,
) -> BatchSummary:
    """Scan every image under ``input_dir`` into ``options.out_dir``; see the module docstring.

    ``progress(done, total)`` and ``on_result(record)`` are called after each image (done, skipped
    or failed), and
    ``before_inference()`` once, before the first image that needs the model (never when every
    image is already done: the CLI's cost note waits for it). The results files are written at
    the end, and also when the run is interrupted (Ctrl-C; the CLI turns SIGTERM into the same).

    The output folder belongs to this run while it works (a lock file in it, released however
    the run ends); temporaries of an earlier killed run are removed first; folders that cannot
    be read are recorded as failures. ``profile``, when given, receives where the time went
    (``BatchProfile``; ``imlscan bench --folder`` reads it).

    Raises:
        ImlscanError: another run holds the output folder, or it cannot be written (the path and
            the OS reason are named).
    """
    from imlscan.scanning.predict import check_threshold

    start, cpu_start = time.perf_counter(), time.process_time()
    check_threshold(options.threshold)
    root = Path(input_dir)
    if not root.is_dir():
        raise UsageError(f"{root}: not a folder" if root.exists() else f"{root}: folder not found")
    if options.batch_size < 1 or options.workers < 0 or options.top < 0:
        raise UsageError("--batch-size must be >= 1, --workers >= 0 and --top >= 0")
    out = Path(options.out_dir)
    found = discover(root, options.globs, exclude=out)
    if not found.images and not found.unreadable:
        pattern = f" matching {', '.join(options.globs)}" if options.globs else ""
        raise UsageError(f"no images found in {root}{pattern}")
    unreadable = dict(found.unreadable)
    selected = select_shard(sorted([*found.images, *unreadable]), options.shard)
    summary = BatchSummary(found=len(found.images) + len(unreadable), selected=len(selected))
    key = settings_key(predictor, options.threshold)
    kinds = options.kinds()
    records: dict[str, dict[str, Any]] = {}
    log = log or (lambda _msg: None)
    ensure_folder(out)
    limit = name_max(out)

    def base_of(rel: str) -> str:
        return output_base(out, Path(rel).name, limit)

    def finish(rel: str, record: dict[str, Any]) -> None:
        records[rel] = record
        if record["status"] == "error":
            summary.failed += 1
            log(f"failed: {record['error']}")
        elif record.get("resumed"):
            summary.skipped += 1
        else:
            summary.processed += 1
        if progress:
            progress(len(records), len(selected))
        if on_result is not None:
            on_result(record)

    keypoint_job = predictor.keypoint_job()

    def task(rel: str) -> dict[str, Any]:
        paths = output_paths(out / Path(rel).parent, base_of(rel), kinds)
        return {
            "path": str(root / rel),
            "json": str(paths["json"]),
            "expected": [str(p) for p in paths.values()],
            "key": key,
            "overwrite": options.overwrite,
            "max_pixels": options.max_pixels,
            "keypoints": keypoint_job,
            "traces": predictor.traces,
        }

    announce = before_inference

    def flush(items: list[tuple[str, dict[str, Any]]]) -> None:
        nonlocal announce
        if items and announce is not None:
            announce()
            announce = None
        for rel, record in _infer_and_write(items, predictor, options, root, out, key, kinds, base_of, profile):
            finish(rel, record)

    with _output_folder(out, options.shard, selected, base_of, log):
        images = [r for r in selected if r not in unreadable]
        executor: Any = decoding_pool(options.workers, len(images))
        if progress:
            progress(0, len(selected))
        window = max(2, 2 * options.workers + options.batch_size)
        todo = iter(images)
        pending: deque[tuple[str, Future]] = deque()
        batch: list[tuple[str, dict[str, Any]]] = []
        try:
            for rel in selected:
                if rel in unreadable:
                    finish(rel, _error_record(rel, root, key, unreadable[rel], None))
            for rel in todo:
                pending.append((rel, executor.submit(prepare, task(rel))))
                if len(pending) >= window:
                    break
            while pending:
                rel, fut = pending.popleft()
                nxt = next(todo, None)
                if nxt is not None:
                    pending.append((nxt, executor.submit(prepare, task(nxt))))
                waited = time.perf_counter()
                try:
                    res = fut.result()
                except Exception as e:  # noqa: BLE001 - e.g. a worker killed by the OS
                    res = {
                        "kind": "error",
                        "error": f"{root / rel}: decoder process failed ({type(e).__name__}: {e})"[:300],
                    }
                if profile is not None:
                    _profile_prepared(profile, res, waited, start, inline=isinstance(executor, InlineExecutor))
                if res["kind"] == "skip":
                    finish(rel, {**res["record"], "relpath": rel, "resumed": True})
                elif res["kind"] == "error":
                    finish(rel, _error_record(rel, root, key, res["error"], res.get("sha256")))
                else:
                    batch.append((rel, res))
                    if len(batch) >= options.batch_size:
                        flush(batch)
                        batch = []
            flush(batch)
            batch = []
        except BaseException as e:
            summary.interrupted = True
            executor.shutdown(wait=False, cancel_futures=True)
            try:
                _write_aggregates(summary, [records[r] for r in selected if r in records], out, options, predictor)
            except (ImlscanError, OSError) as again:  # the first error is the one to report
                if not isinstance(e, ImlscanError):
                    log(f"the results files were not written: {getattr(again, 'message', again)}")
            raise
        else:
            t0 = time.perf_counter()
            _write_aggregates(summary, [records[r] for r in selected if r in records], out, options, predictor)
            if profile is not None:
                profile.add("main", {"aggregates": time.perf_counter() - t0})
        finally:
            executor.shutdown(wait=True)
            if profile is not None:
                profile.wall_s = time.perf_counter() - start
                profile.main_cpu_s = time.process_time() - cpu_start
    return summary


def _profile_prepared(profile: BatchProfile, res: dict[str, Any], waited: float, start: float, inline: bool) -> None:
    """Account for one answer of the decoding side: the main process's wait for it, and the work
    it took (done in the main process itself when there are no worker processes)."""
    now = time.perf_counter()
    if not inline:
        profile.main_wait_s += now - waited
    if profile.first_photo_s is None and res.get("kind") == "image":
        profile.first_photo_s = now - start
    profile.worker_busy_s += res.get("busy_s", 0.0)
    if not inline:  # inline, the main process's CPU seconds hold it already
        profile.worker_cpu_s += res.get("cpu_s", 0.0)
    if res.get("kind") == "image":
        profile.add("main" if inline else "workers", res.get("stages") or {})


def _infer_and_write(
    items: list[tuple[str, dict[str, Any]]],
    predictor: Predictor,
    options: BatchOptions,
    root: Path,
    out: Path,
    key: str,
    kinds: list[str],
    base_of: Callable[[str], str],
    profile: BatchProfile | None = None,
) -> Iterable[tuple[str, dict[str, Any]]]:
    """Run the model on decoded images (one batch; one by one if the batch fails, so a single
    image that breaks inference, e.g. out of memory, fails alone) and write their outputs."""
    from imlscan.scanning.predict import build_result

    if not items:
        return
    rgbs = [res["decoded"].rgb for _, res in items]
    kps = [res.get("keypoints") for _, res in items]
    seconds: dict[str, float] | None = {} if profile is not None else None
    t0 = time.perf_counter()
    try:
        parts: list[Any] = predictor.predict_parts(rgbs, kps, seconds=seconds)
        per_image = [(time.perf_counter() - t0) / len(items)] * len(items)
    except Exception:  # noqa: BLE001 - retried one by one below to find the culprit
        parts, per_image = [], []
        for rgb, kp in zip(rgbs, kps):
            t1 = time.perf_counter()
            try:
                parts.append(predictor.predict_parts([rgb], [kp], seconds=seconds)[0])
            except Exception as e:  # noqa: BLE001
                parts.append(e)
            per_image.append(time.perf_counter() - t1)
    if profile is not None:
        profile.add("main", seconds or {})
    for (rel, res), part, inf_s in zip(items, parts, per_image):
        decoded = res["decoded"]
        if isinstance(part, Exception):
            msg = f"{root / rel}: inference failed ({type(part).__name__}: {str(part).strip()[:200]})"
            yield rel, _error_record(rel, root, key, msg, decoded.sha256)
            continue
        prob, copy_move = part
        traces = res.get("traces") or {}
        fusion = None
        t0 = time.perf_counter()
        if traces:
            prob, fusion = predictor.apply_fusion(prob, traces)
        t1 = time.perf_counter()
        result = build_result(
            decoded,
            prob,
            predictor,
            threshold=options.threshold,
            decode_s=res["decode_s"],
            inference_s=inf_s + res.get("keypoints_s", 0.0),  # the map's time, wherever it was computed
            copy_move=copy_move,
            traces=traces,
            fusion=fusion,
            traces_s=res.get("traces_s", 0.0),
            provenance=res.get("provenance"),
        )
        t2 = time.perf_counter()
        folder, name = out / Path(rel).parent, base_of(rel)
        try:
            (folder / f"{name}{OUTPUT_SUFFIXES['json']}").unlink(missing_ok=True)  # a crash now marks it undone
            report = write_outputs(
                result,
                folder,
                name,
                overlay=options.overlay,
                mask=options.mask,
                prob=options.prob,
                html=options.html,
                thumbnail="thumbnail" in kinds,
                extra={"relpath": rel, "status": "ok", "settings_key": key},
            )
        except OSError as e:  # disk full, no permission: every next image would fail too
            raise write_error(e, folder) from None
        except ImlscanError as e:  # e.g. a non-finite number: this image alone
            yield rel, _error_record(rel, root, key, f"{root / rel}: {e.message}", decoded.sha256)
            continue
        if profile is not None:
            profile.images += 1
            profile.add("main", {"fusion": t1 - t0, "result": t2 - t1, "write": time.perf_counter() - t2})
        yield rel, {**report, "resumed": False}


def _error_record(rel: str, root: Path, key: str, error: str, sha256: str | None) -> dict[str, Any]:
    return {
        "relpath": rel,
        "status": "error",
        "error": error,
        "input": {"path": str(root / rel), "sha256": sha256},
        "settings_key": key,
        "resumed": False,
    }


def _write_aggregates(
    summary: BatchSummary,
    records: list[dict[str, Any]],
    out: Path,
    options: BatchOptions,
    predictor: Predictor,
) -> None:
    """results.jsonl, summary.csv (ranked by score) and index.html, each written atomically."""
    results_name, summary_name, index_name = aggregate_names(options.shard)
    summary.results_path, summary.summary_path, summary.index_path = (
        out / results_name,
        out / summary_name,
        out / index_name,
    )
    _write(summary.results_path, "".join(dumps_json(r, default=str) + "\n" for r in records))
    ok = sorted((r for r in records if r["status"] == "ok"), key=lambda r: (-float(r["score"]), r["relpath"]))
    failed = [r for r in records if r["status"] != "ok"]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=SUMMARY_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for rank, r in enumerate(ok + failed, 1):
        writer.writerow({k: csv_cell(v) for k, v in _summary_row(rank if r["status"] == "ok" else "", r).items()})
    _write(summary.summary_path, buf.getvalue())
    entries = []
    for r in ok[: options.top]:
        folder = Path(r["relpath"]).parent
        outputs = r.get("outputs") or {}
        thumb = out / folder / outputs["thumbnail"] if outputs.get("thumbnail") else None
        link = next((outputs[k] for k in ("html", "overlay", "json") if outputs.get(k)), None)
        entries.append(
            {
                "relpath": r["relpath"],
                "score": float(r["score"]),
                "mask_fraction": float(r.get("mask_fraction", 0.0)),
                "thumb": _read_or_none(thumb),
                "link": (folder / link).as_posix() if link else None,
                "tags": provenance_tags(r.get("provenance")),
            }
        )
    from imlscan.scanning.predict import SMALL_IMAGE_WARNING, UNTRAINED_WARNING

    counts = Counter(w for r in ok for w in set(r.get("warnings", [])))
    summary.small = counts[SMALL_IMAGE_WARNING]
    warnings = [w if n == len(ok) else f"{n} of {len(ok)} photos: {w}" for w, n in sorted(counts.items())]
    if not ok and predictor.weights_info is not None and not predictor.weights_info.trained:
        warnings = [UNTRAINED_WARNING]
    shard = f" (shard {options.shard[0]}/{options.shard[1]})" if options.shard else ""
    title = f"imlscan batch{shard}: top {len(entries)} of {len(ok)} by score"
    page = render_contact_sheet(entries, title=title, total=len(records), failed=failed, warnings=warnings)
    _write(summary.index_path, page)


def _read_or_none(path: Path | None) -> bytes | None:
    try:
        return path.read_bytes() if path is not None else None
    except OSError:  # a missing thumbnail leaves a card without a picture
        return None


def _write(path: Path, text: str) -> None:
    try:
        atomic_write_text(path, text)
    except OSError as e:
        raise write_error(e, path) from None


def _summary_row(rank: int | str, r: dict[str, Any]) -> dict[str, Any]:
    inp = r.get("input") or {}
    outputs = r.get("outputs") or {}
    folder = Path(r["relpath"]).parent

    def rel(k: str) -> str:
        return (folder / outputs[k]).as_posix() if outputs.get(k) else ""

    ok = r["status"] == "ok"
    return {
        "rank": rank,
        "relpath": r["relpath"],
        "status": r["status"],
        "score": f"{float(r['score']):.6f}" if ok else "",
        "authentic_percent_lower": (r.get("score_vs_authentic") or {}).get("percent_lower", "") if ok else "",
        "mask_fraction": f"{float(r.get('mask_fraction', 0.0)):.6f}" if ok else "",
        "regions": r.get("regions_total", "") if ok else "",
        "width": inp.get("width", ""),
        "height": inp.get("height", ""),
        "sha256": inp.get("sha256") or "",
        **summary_fields(r.get("provenance") if ok else None),
        "json": rel("json"),
        "overlay": rel("overlay"),
        "error": r.get("error", ""),
    }
