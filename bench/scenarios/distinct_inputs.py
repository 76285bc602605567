"""Scenario: distinct inputs (issue 24): a catalog whose every row is its own photo, re-run
every night, where the cost that grows with distinct photos shows.

Part 1, 2,000 distinct ~0.9 MB noisy JPEGs (background replacer, a CSV items file):

- the first ``validate`` (an empty state folder): bytes read beside the catalog's bytes;
- ``validate`` again (nothing changed): bytes read, and no photo opened;
- the first ``run`` (another empty folder, the report on): the bytes read from the photos
  (preflight's glance at each header and end, the upload's one read, which also gives the
  digest, the full check and the report's thumbnail), their opens, and storage reads;
- the no-op re-run (everything done, ``--emulator``): bytes read, wall time beside the same
  re-run of a one-photo catalog (the start-up), photos opened (none);
- one photo replaced in place (new bytes renamed over it): the re-run buys that job only.

Part 2, distinct small photos (~3 KB) at two sizes (50,000 and 200,000): the first validate
fills the state folder's stat cache, a ledger of every job done is written (the content keys
the pipeline computes), then the no-op nightly re-run with ``--emulator`` is timed to its exit,
with its peak memory; the two sizes scale the figures to 1,000,000 (linear fit). The ledger
part (read and folded whole today; issue 24 item 2 makes it proportional to change) is read
from the probe's ledger events and given apart. Then the same no-op once more after the kernel
dropped its caches (as root): the warm figures are the easy regime, a night after a busy day
is the cold one (every photo's stat and every look at an output wait on the disk).

**Bytes read** come from ``/proc/<pid>/io`` of the child: ``rchar`` (the bytes its read calls
returned, from files, the page cache and sockets alike) is the honest count of what the
pipeline *asked* for, whatever the cache held, so it is the figure for ``validate`` and the
no-op runs (no socket traffic there). A run that buys also reads its answers from sockets, so
for the first run the bytes read from the photos are counted directly (the probe's counting
files under ``BENCH_OPENS_UNDER``, with an audit hook for the opens) and ``read_bytes``
(storage reads) is given after the photos were dropped from the page cache
(``posix_fadvise(DONTNEED)``).

Photos are generated once and kept under the system's temporary folder
(``onemin-bench-cache``) across suite runs. A catalog's files are linked into the scratch
folder a moment before the first pass; the scenario then waits ``statcache.RACY_WINDOW_NS`` so
no file looks "modified in the instant it was read" (a nightly catalog was written hours
before its run).
"""

from __future__ import annotations

import contextlib
import io
import os
import random
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import orjson
from PIL import Image

from bench.common import Figure, ScenarioResult, log, scratch
from bench.fixtures import DONE_FILES
from bench.probe import OPENS_ENV
from bench.procs import ChildResult, probe_args, run_child
from bench.scenarios.preflight import bare_csv
from pipeline.manifest import load_manifest
from pipeline.models import PlannedJob
from pipeline.plan.prepare import scan
from pipeline.preflight import Preflight
from pipeline.preflight.statcache import RACY_WINDOW_NS, StatCache

TITLE = "Distinct inputs (every row its own photo; nightly re-runs)"
CACHE_ROOT = Path(tempfile.gettempdir()) / "onemin-bench-cache" / "distinct-v1"
LARGE_SIDE, LARGE_QUALITY = 1024, 90  # noise at q90: ~0.9 MB a photo
SMALL_SIDE, SMALL_QUALITY = 48, 90  # ~2.7 KB a photo
PER_FOLDER = 1000
TIMEOUT = 1800.0
FIRST_READ_TARGET = 1.1  # x the catalog's bytes (issue 24)
NOOP_READ_TARGET = 0.01  # of the catalog's bytes
NOOP_SECONDS_TARGET = 1.0  # beyond start-up
NIGHTLY_TARGETS = {200_000: (5.0, 120.0), 1_000_000: (10.0, 150.0)}  # seconds, MB
PER_ROW_TARGET_US = 15.0  # the no-op nightly preflight pass, a row, beyond a bare csv.reader pass
PROMPT = "on a white marble countertop, soft daylight"
WEBP_TITLE = "Distinct WebP photos (a first run: the glance at chunk headers)"
WEBP_PHOTOS = 200
WEBP_QUALITY = 80  # noise at q80: ~1 MB a 1024x1024 photo


@dataclass(frozen=True)
class Catalog:
    manifest: Path
    photos: list[Path]
    catalog_bytes: int


def run(quick: bool) -> ScenarioResult:
    result = ScenarioResult("distinct_inputs", TITLE)
    photos = 200 if quick else 2_000
    sizes = (5_000, 20_000) if quick else (50_000, 200_000)
    result.params = {"large_photos": photos, "small_catalogs": list(sizes)}
    start_load = _load()
    with scratch("distinct") as folder:
        _large(result, folder, photos)
        _nightly(result, folder, sizes)
    result.notes.append(
        f"load average (1, 5, 15 min) at the start {start_load}, at the end {_load()}, on "
        f"{os.cpu_count()} CPUs: wall figures grow with it"
    )
    result.notes.append(
        "bytes read are rchar after imports (end - ready readings) unless said: what the "
        "pipeline asked for, page cache or not; the first run's photo reads are counted by "
        "the probe"
    )
    return result


def run_webp(quick: bool) -> ScenarioResult:
    """Scenario ``distinct_webp``: a first run over distinct ~1 MB WebP photos (see
    ``_webp``), apart from ``run`` so it can be measured alone."""
    result = ScenarioResult("distinct_webp", WEBP_TITLE)
    count = 40 if quick else WEBP_PHOTOS
    result.params = {"webp_photos": count}
    start_load = _load()
    with scratch("distinct-webp") as folder:
        _webp(result, folder, count)
    result.notes.append(
        f"load average (1, 5, 15 min) at the start {start_load}, at the end {_load()}, on "
        f"{os.cpu_count()} CPUs: wall figures grow with it"
    )
    return result


# -- part 1: 2,000 photos of ~0.9 MB ------------------------------------------------------------


def _large(result: ScenarioResult, folder: Path, count: int) -> None:
    source = _photos(CACHE_ROOT / f"large-{count}", count, LARGE_SIDE, LARGE_QUALITY)
    catalog = _linked_catalog(folder / "large", source, "large")
    one = _linked_catalog(folder / "one", source[:1], "one")
    megabytes = catalog.catalog_bytes / 1e6
    result.params["large_catalog_mb"] = round(megabytes)
    _wait_out_racy_window()
    photos_dir = str(catalog.manifest.parent / "img")

    first = _child(folder / "v1", "validate", catalog.manifest, "--state", str(folder / "vstate"))
    again = _child(folder / "v2", "validate", catalog.manifest, "--state", str(folder / "vstate"))
    _read_share(result, "first validate: bytes read / catalog", first, catalog, FIRST_READ_TARGET)
    _per_photo(result, "first validate", first, count)
    _read_share(result, "validate again: bytes read / catalog", again, catalog, NOOP_READ_TARGET)
    result.add(Figure("validate again: wall", again.wall, "s"))

    out = folder / "out"
    _drop_from_page_cache(catalog.photos)
    bought = _child(
        folder / "r1", "run", catalog.manifest, "--out", str(out), "--emulator", opens=photos_dir
    )
    _first_run(result, bought, catalog, count)
    _succeeded(out, count)

    one_out = folder / "one-out"
    _child(folder / "o1", "run", one.manifest, "--out", str(one_out), "--emulator")
    start_up = _child(folder / "o2", "run", one.manifest, "--out", str(one_out), "--emulator")
    noop = _child(
        folder / "r2", "run", catalog.manifest, "--out", str(out), "--emulator", opens=photos_dir
    )
    _read_share(result, "no-op re-run: bytes read / catalog", noop, catalog, NOOP_READ_TARGET)
    result.add(Figure("no-op re-run: photos opened", noop.events["end"].get("opens"), ""))
    result.add(Figure("start-up: no-op re-run of a one-photo catalog", start_up.wall, "s"))
    beyond = noop.wall - start_up.wall
    result.add(
        Figure(
            "no-op re-run: wall beyond start-up",
            beyond,
            "s",
            ("<=", NOOP_SECONDS_TARGET),
            note=f"{noop.wall:.2f} s in all",
        )
    )

    replaced = catalog.photos[count // 2]
    _replace_in_place(replaced, count)
    lines_before = _ledger_lines(out)
    again_run = _child(
        folder / "r3", "run", catalog.manifest, "--out", str(out), "--emulator", opens=photos_dir
    )
    ran = _new_succeeded(out, lines_before)
    result.add(
        Figure(
            "one photo replaced in place: jobs run again",
            len(ran),
            "",
            ("<=", 1),
            note=f"ran {', '.join(ran) or 'nothing'}; expected {replaced.stem}",
        )
    )
    if ran != [replaced.stem]:
        raise RuntimeError(f"replacing {replaced.stem} ran {ran}")
    end = again_run.events["end"]
    result.add(
        Figure(
            "one photo replaced: photo opens",
            end.get("opens"),
            "",
            note=f"{end.get('opened_bytes', 0) / 1e6:.1f} MB opened; the photo is "
            f"{replaced.stat().st_size / 1e6:.2f} MB",
        )
    )


def _first_run(result: ScenarioResult, child: ChildResult, catalog: Catalog, count: int) -> None:
    end, ready = child.events["end"], child.events["ready"]
    opens, opened = end.get("opens", 0), end.get("opened_bytes", 0)
    result.add(
        Figure(
            "first run: photo bytes read / catalog",
            end.get("read_from", 0) / catalog.catalog_bytes,
            "x",
            ("<=", FIRST_READ_TARGET),
            note=f"{opens / count:.2f} opens a photo ({opened / catalog.catalog_bytes:.2f}x "
            "the catalog if each open read the whole file): preflight's glance at the header "
            "and end, then the upload's one read (digest, full check, thumbnail)",
        )
    )
    storage = (end.get("read_bytes", 0) - ready.get("read_bytes", 0)) / catalog.catalog_bytes
    result.add(
        Figure(
            "first run: storage reads (read_bytes) / catalog",
            storage,
            "x",
            note="photos dropped from the page cache first; later reads of a photo hit the cache",
        )
    )
    _per_photo(result, "first run", child, count)


def _read_share(
    result: ScenarioResult, name: str, child: ChildResult, catalog: Catalog, bound: float
) -> None:
    end, ready = child.events["end"], child.events["ready"]
    share = (end["rchar"] - ready["rchar"]) / catalog.catalog_bytes
    note = f"{(end['rchar'] - ready['rchar']) / 1e6:.1f} MB of {catalog.catalog_bytes / 1e6:.0f} MB"
    result.add(Figure(name, share, "x", ("<=", bound), note=note))


def _per_photo(result: ScenarioResult, name: str, child: ChildResult, count: int) -> None:
    cpu = child.events["end"]["cpu"] - child.events["ready"]["cpu"]
    result.add(
        Figure(f"{name}: wall", child.wall, "s", note=f"{cpu / count * 1e3:.2f} ms CPU a photo")
    )


# -- WebP: a first run over distinct WebP photos ------------------------------------------------


def _webp(result: ScenarioResult, folder: Path, count: int) -> None:
    """Pillow reads a WebP whole to open it, and decodes it to check it: a full check of a
    ~1 MB photo costs tens of ms of CPU. A first run's preflight glances at each new WebP's
    chunk headers instead (``preflight.webp``); ``validate`` still checks each in full, which
    is the baseline: what the first call waited for before."""
    source = _webp_photos(CACHE_ROOT / f"webp-{count}", count, LARGE_SIDE)
    catalog = _linked_catalog(folder / "webp", source, "webp")
    result.params["webp_catalog_mb"] = round(catalog.catalog_bytes / 1e6)
    _wait_out_racy_window()
    checked = _child(folder / "w1", "validate", catalog.manifest, "--state", str(folder / "ws"))
    full = checked.events["end"]["t"] - checked.events["ready"]["t"]
    out = folder / "wout"
    _drop_from_page_cache(catalog.photos)
    photos_dir = str(catalog.manifest.parent / "img")
    bought = _child(
        folder / "w2", "run", catalog.manifest, "--out", str(out), "--emulator", opens=photos_dir
    )
    _succeeded(out, count)
    end = bought.events["end"]
    result.add(
        Figure(
            "WebP first run: photo bytes read / catalog",
            end.get("read_from", 0) / catalog.catalog_bytes,
            "x",
            ("<=", FIRST_READ_TARGET),
            note="preflight reads each photo's chunk headers, the upload reads it once",
        )
    )
    to_first_call = bought.events["first_feature"]["t"] - bought.events["ready"]["t"]
    result.add(
        Figure(
            "WebP first run: start to the first call",
            to_first_call,
            "s",
            note="start-up included",
        )
    )
    result.add(
        Figure(
            "WebP validate (every photo checked in full; the first run before the glance)",
            full,
            "s",
            note=f"{full / count * 1e3:.1f} ms a photo",
        )
    )
    result.add(
        Figure(
            "WebP: first run's start to the first call / validate's full check",
            to_first_call / full,
            "x",
            note="both measured in this run",
        )
    )


def _webp_photos(folder: Path, count: int, side: int) -> list[Path]:
    """``count`` distinct noisy WebPs (each its own noise: a WebP has no cheap comment to
    make copies differ), made once and kept."""
    paths = [folder / "img" / f"{i // PER_FOLDER:04d}" / f"w{i:07d}.webp" for i in range(count)]
    marker = folder / "complete"
    if marker.exists():
        return paths
    started = time.monotonic()
    generator = random.Random(side)
    for index, path in enumerate(paths):
        if index % PER_FOLDER == 0:
            path.parent.mkdir(parents=True, exist_ok=True)
        noise = generator.randbytes(side * side * 3)
        Image.frombytes("RGB", (side, side), noise).save(path, "WEBP", quality=WEBP_QUALITY)
    marker.write_text("ok")
    log(f"  {count:,} WebP photos made in {time.monotonic() - started:.0f}s")
    return paths


# -- part 2: nightly no-op re-runs of many small photos ----------------------------------------


def _nightly(result: ScenarioResult, folder: Path, sizes: tuple[int, int]) -> None:
    measured: dict[int, tuple[ChildResult, float]] = {}
    for count in sizes:
        source = _photos(CACHE_ROOT / f"small-{count}", count, SMALL_SIDE, SMALL_QUALITY)
        catalog = _catalog_beside(CACHE_ROOT / f"small-{count}", source, f"nightly-{count}")
        out = folder / f"nightly-{count}"
        _wait_out_racy_window()
        first = _child(folder / f"n{count}-v", "validate", catalog.manifest, "--state", str(out))
        _per_photo(result, f"{count:,} small photos: first validate", first, count)
        started = time.monotonic()
        done = _write_done_ledger(catalog.manifest, out)
        log(f"  ledger of {done:,} done jobs written in {time.monotonic() - started:.1f}s")
        # The fabricated ledger has no checkpoint; a real nightly's has (each run writes one at
        # its end). A first no-op run folds the whole ledger and writes it: timed apart.
        unfolded = _child(
            folder / f"n{count}-r0", "run", catalog.manifest, "--out", str(out), "--emulator"
        )
        folded = _between(unfolded, "ledger_read_start", "ledger_read_end") or 0.0
        result.add(
            Figure(
                f"{count:,} small photos: no-op re-run with no checkpoint yet (once after an "
                "upgrade)",
                unfolded.wall,
                "s",
                note=f"ledger read {folded:.2f} s, peak {unfolded.maxrss_mb:.0f} MB",
            )
        )
        noop = _child(
            folder / f"n{count}-r", "run", catalog.manifest, "--out", str(out), "--emulator"
        )
        ledger = _between(noop, "ledger_read_start", "ledger_read_end") or 0.0
        preflight = _between(noop, "preflight_start", "preflight_end") or 0.0
        measured[count] = (noop, ledger)
        target = NIGHTLY_TARGETS.get(count)
        parts = _parts(noop)
        result.details[f"nightly_{count}"] = parts
        result.add(
            Figure(
                f"{count:,} small photos: no-op nightly re-run to its exit",
                noop.wall,
                "s",
                ("<=", target[0]) if target else None,
                note=f"ledger read {ledger:.2f} s (+{parts['ledger_mb']:.0f} MB), preflight "
                f"pass {preflight:.2f} s (+{parts['preflight_mb']:.0f} MB), "
                f"{noop.cpu:.1f} s CPU",
            )
        )
        csv_pass = bare_csv(catalog.manifest.with_suffix(".csv"), count, folder / f"n{count}-csv")
        beyond = (preflight - csv_pass.wall) / count * 1e6
        result.add(
            Figure(
                f"{count:,} small photos: preflight pass per row beyond csv.reader",
                beyond,
                "us",
                ("<=", PER_ROW_TARGET_US),
                note="a photo's stat and stat-cache lookup, its id, its content key (wall)",
            )
        )
        pass_cpu = noop.cpu_between("preflight_start", "preflight_end") or 0.0
        result.add(
            Figure(
                f"{count:,} small photos: preflight pass CPU per row beyond csv.reader",
                (pass_cpu - csv_pass.cpu) / count * 1e6,
                "us",
                note="CPU, which the machine's load changes less than the wall; the bare pass's "
                "CPU counts its interpreter's start too",
            )
        )
        result.add(
            Figure(
                f"{count:,} small photos: no-op re-run peak memory",
                noop.maxrss_mb,
                "MB",
                ("<=", target[1]) if target else None,
            )
        )
        _read_share(
            result, f"{count:,} small photos: no-op bytes read / catalog", noop, catalog, 1.0
        )
        _cold_noop(result, folder, catalog.manifest, out, count, noop)
    small, big = sizes
    _scaled(result, measured, small, big)


def _cold_noop(
    result: ScenarioResult, folder: Path, manifest: Path, out: Path, count: int, warm: ChildResult
) -> None:
    """The no-op again after the kernel dropped its caches (page cache, dentries, inodes): a
    night after a busy day, when every stat of a photo and every look at an output waits on
    the disk. Needs root (``/proc/sys/vm/drop_caches``); said so when not measured."""
    name = f"{count:,} small photos: no-op nightly re-run, caches dropped first"
    if not _drop_caches():
        result.notes.append(f"{name}: not measured (dropping the caches needs root)")
        return
    cold = _child(folder / f"n{count}-cold", "run", manifest, "--out", str(out), "--emulator")
    preflight = _between(cold, "preflight_start", "preflight_end") or 0.0
    beyond = _between(cold, "scheduler_start", "end") or 0.0
    result.add(
        Figure(
            name,
            cold.wall,
            "s",
            note=f"warm: {warm.wall:.2f} s; preflight pass {preflight:.2f} s, the look at each "
            f"done job's output and the end {beyond:.2f} s",
        )
    )


def _drop_caches() -> bool:
    """Write back, then drop the page cache, dentries and inodes; False if not allowed."""
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError:
        return False
    return True


def _parts(child: ChildResult) -> dict[str, float]:
    """What the ledger read and the preflight pass each added to the peak memory (MB)."""
    events = child.events
    mb = {name: event["maxrss_kb"] / 1024 for name, event in events.items() if "maxrss_kb" in event}
    return {
        "ledger_mb": mb.get("ledger_read_end", 0.0) - mb.get("ledger_read_start", 0.0),
        "preflight_mb": mb.get("preflight_end", 0.0) - mb.get("preflight_start", 0.0),
        "imports_mb": mb.get("ready", 0.0),
    }


def _scaled(
    result: ScenarioResult,
    measured: dict[int, tuple[ChildResult, float]],
    small: int,
    big: int,
) -> None:
    """A straight line through the two sizes, read at 1,000,000."""
    million = 1_000_000
    (a, ledger_a), (b, ledger_b) = measured[small], measured[big]
    pass_a = _between(a, "preflight_start", "preflight_end") or 0.0
    pass_b = _between(b, "preflight_start", "preflight_end") or 0.0
    ledger_mb_a, ledger_mb_b = _parts(a)["ledger_mb"], _parts(b)["ledger_mb"]
    pass_mb_a, pass_mb_b = _parts(a)["preflight_mb"], _parts(b)["preflight_mb"]
    for name, value_a, value_b, unit, index in (
        ("no-op nightly re-run", a.wall, b.wall, "s", 0),
        ("no-op re-run peak memory", a.maxrss_mb, b.maxrss_mb, "MB", 1),
        ("of which the ledger read", ledger_a, ledger_b, "s", None),
        ("of which the preflight pass", pass_a, pass_b, "s", None),
        ("memory the ledger read adds", ledger_mb_a, ledger_mb_b, "MB", None),
        ("memory the preflight pass adds", pass_mb_a, pass_mb_b, "MB", None),
    ):
        slope = (value_b - value_a) / (big - small)
        at_million = value_b + slope * (million - big)
        note = f"{slope * 1e6:.2f} {unit} per million beyond {big:,}"
        if slope < 0:
            # The smaller size cost more: the machine's load changed between the two runs and
            # there is no line to read. Scale the larger size whole instead: an upper bound (its
            # start-up is scaled too), never a figure below what was measured.
            at_million = value_b * million / big
            note = f"{big:,}'s figure x {million // big} (the {small:,} run cost more: load)"
        target = NIGHTLY_TARGETS[million][index] if index is not None else None
        result.add(
            Figure(
                f"1,000,000 photos (scaled): {name}",
                at_million,
                unit,
                ("<=", target) if target is not None else None,
                note=note,
            )
        )


def _write_done_ledger(manifest: Path, out: Path) -> int:
    """``out/ledger.jsonl`` with every job done, as a run leaves it (its content keys from the
    pipeline's own plan, read through the stat cache the first validate filled); each done
    job's output is where the store puts it (``<id>/0.png``) and is there, a hard link to one
    of ``DONE_FILES`` real files, so the fold keeps it as the store's rule (a name outside the
    rule is kept as text, about 200 bytes a job, which no real run's ledger holds)."""
    out.mkdir(parents=True, exist_ok=True)
    bases = out / ".bench-outputs"
    bases.mkdir(exist_ok=True)
    for number in range(DONE_FILES):
        (bases / f"{number:04d}.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    done = 0
    with StatCache.open(out) as cache, (out / "ledger.jsonl").open("wb") as sink:
        for item in scan(load_manifest(manifest), Preflight(stat_cache=cache)):
            if isinstance(item, PlannedJob):
                job_id = item.job.id
                (out / job_id).mkdir(exist_ok=True)
                with contextlib.suppress(FileExistsError):
                    os.link(bases / f"{done % DONE_FILES:04d}.png", out / job_id / "0.png")
                line = {
                    "ts": "2025-01-01T00:00:00.000Z",
                    "job_id": job_id,
                    "status": "succeeded",
                    "key": item.key,
                    "outputs": [f"{job_id}/0.png"],
                    "attempts": 1,
                    "credits": 1000,
                }
                sink.write(orjson.dumps(line) + b"\n")
                done += 1
    return done


# -- photos and catalogs -----------------------------------------------------------------------


def _photos(folder: Path, count: int, side: int, quality: int) -> list[Path]:
    """``count`` distinct noisy JPEGs (one encode; each gets its own comment segment), made
    once and kept."""
    paths = [folder / "img" / f"{i // PER_FOLDER:04d}" / f"p{i:07d}.jpg" for i in range(count)]
    marker = folder / "complete"
    if marker.exists():
        return paths
    started = time.monotonic()
    noise = random.Random(side).randbytes(side * side * 3)
    buffer = io.BytesIO()
    Image.frombytes("RGB", (side, side), noise).save(buffer, "JPEG", quality=quality)
    data = buffer.getvalue()
    for index, path in enumerate(paths):
        if index % PER_FOLDER == 0:
            path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(_with_comment(data, b"bench photo %d" % index))
    marker.write_text("ok")
    log(f"  {count:,} photos of {len(data) / 1e3:.0f} kB made in {time.monotonic() - started:.0f}s")
    return paths


def _with_comment(jpeg: bytes, text: bytes) -> bytes:
    segment = b"\xff\xfe" + (len(text) + 2).to_bytes(2, "big") + text
    return jpeg[:2] + segment + jpeg[2:]


def _linked_catalog(folder: Path, photos: list[Path], name: str) -> Catalog:
    """The photos hard-linked (copied across file systems) under ``folder``, and a catalog."""
    linked = []
    for photo in photos:
        target = folder / "img" / photo.parent.name / photo.name
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(photo, target)
        except OSError:
            target.write_bytes(photo.read_bytes())
        linked.append(target)
    return _catalog_beside(folder, linked, name)


def _catalog_beside(folder: Path, photos: list[Path], name: str) -> Catalog:
    rows = "".join(f"{p.stem},{p.relative_to(folder).as_posix()}\n" for p in photos)
    (folder / f"{name}.csv").write_text("id,image\n" + rows)
    manifest = folder / f"{name}.yaml"
    manifest.write_text(
        f"version: 1\nname: {name}\n"
        f"defaults: {{type: background, size: 1024x1024, quality: low, prompt: {PROMPT}}}\n"
        f"items: {name}.csv\n"
    )
    return Catalog(manifest, photos, sum(p.stat().st_size for p in photos))


def _replace_in_place(photo: Path, salt: int) -> None:
    """New bytes at the same path: written beside it, renamed over it (as an editor saves)."""
    fresh = photo.with_suffix(".new")
    fresh.write_bytes(_with_comment(photo.read_bytes(), b"retouched %d" % salt))
    os.replace(fresh, photo)
    _wait_out_racy_window()


def _wait_out_racy_window() -> None:
    time.sleep(RACY_WINDOW_NS / 1e9 + 0.1)


def _drop_from_page_cache(paths: list[Path]) -> None:
    """Written back first (dirty pages cannot be dropped), then dropped."""
    for path in paths:
        descriptor = os.open(path, os.O_RDONLY)
        try:
            os.fdatasync(descriptor)
            os.posix_fadvise(descriptor, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(descriptor)


# -- children ----------------------------------------------------------------------------------


def _load() -> str:
    return ", ".join(f"{value:.1f}" for value in os.getloadavg())


def _child(
    folder: Path, command: str, manifest: Path, *args: str, opens: str | None = None
) -> ChildResult:
    extra = ["--no-progress", "--rpm", "1000000", "--concurrency", "32"] if command == "run" else []
    env = {OPENS_ENV: opens} if opens else {}
    child = run_child(
        probe_args(command, str(manifest), *args, *extra), folder=folder, env=env, timeout=TIMEOUT
    )
    if child.code != 0:
        raise RuntimeError(f"pipeline {command} exited {child.code}: {child.tail()}")
    return child


def _between(child: ChildResult, first: str, last: str) -> float | None:
    a, b = child.events.get(first), child.events.get(last)
    return None if a is None or b is None else b["t"] - a["t"]


def _ledger_lines(out: Path) -> int:
    with (out / "ledger.jsonl").open("rb") as handle:
        return sum(1 for _ in handle)


def _new_succeeded(out: Path, after: int) -> list[str]:
    with (out / "ledger.jsonl").open("rb") as handle:
        lines = handle.readlines()[after:]
    return [orjson.loads(line)["job_id"] for line in lines if b'"status":"succeeded"' in line]


def _succeeded(out: Path, count: int) -> None:
    done = len(_new_succeeded(out, 0))
    if done != count:
        raise RuntimeError(f"the first run left {done} of {count} jobs succeeded")
