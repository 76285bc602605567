"""Random but reproducible ledgers, and what every fold of one must agree on.

``random_ledger(seed, jobs)`` writes the lines a run writes, in the shapes the pipeline and
older versions of it left: sha256 keys and short ones, canonical and odd uuids, outputs named by
the store's rule and otherwise, float and huge credits, retries, failures, records still
processing, re-fetches, gone results, content changes, uploads, a job's product group, the
marketplace checks of stored outputs (and lines older than them); the live API's lines: answers
lost after sending (``unknown_outcome``), jobs bought one call per image (``submitted`` with a
``part``, ``succeeded`` with each output's record), ``partial`` jobs, a job failed on lost
answers; and damage: a line that is not JSON, one that breaks the schema.
"""

from __future__ import annotations

import hashlib
import random
from pathlib import Path
from typing import Any

import orjson

from pipeline.ledger.compact import updated_millis
from pipeline.ledger.extras import Extras
from pipeline.ledger.fold import FoldedJob

JOB_FIELDS = (
    "job_id",
    "status",
    "key",
    "order",
    "outputs",
    "error",
    "attempts",
    "credits",
    "uuid",
    "result_gone",
)
ERROR = {"kind": "server_error", "message": "HTTP 503", "http_status": 503}
LOST = {"kind": "answer_lost", "message": "HTTP 524", "http_status": 524, "transient": True}
GAVE_UP = {"kind": "outcome_unknown", "message": "the answers of 2 calls were lost"}
FETCH_FAILED = {"kind": "download_failed", "message": "403: AccessDenied", "http_status": 403}
LIVE_SHARE = 0.25  # jobs whose run meets the live API's edges


def job_fields(job: FoldedJob) -> dict[str, Any]:
    """Everything a fold keeps per job, comparable across the two states."""
    fields = {name: getattr(job, name) for name in JOB_FIELDS}
    submitted = job.submitted
    fields["submitted"] = None if submitted is None else orjson.loads(_encoded(submitted))
    fields["updated"] = updated_millis(job.updated) or job.updated
    return fields


def extras_fields(extras: Extras) -> dict[str, Any]:
    """The few jobs' extras (``ledger.extras``), comparable across states and checkpoints."""
    return {job_id: orjson.loads(_encoded(found)) for job_id, found in sorted(extras.items())}


def _encoded(record: Any) -> bytes:
    import msgspec

    return msgspec.json.encode(record)


class LedgerMaker:
    """Lines of a ledger for ``jobs`` jobs, interleaved as concurrent workers write them."""

    def __init__(self, seed: int) -> None:
        self.random = random.Random(seed)
        # Fields later versions added (group, checks) draw from their own stream: the ledgers'
        # shapes stay those the seeds gave before.
        self.extra = random.Random(seed + 1)
        self.clock = 1_780_000_000.0
        self.lines: list[bytes] = []

    def ts(self) -> str:
        self.clock += self.random.choice((0.0, 0.0004, 0.3, 1.7))
        whole = int(self.clock)
        millis = int((self.clock - whole) * 1000)
        stamp = _iso(whole)
        form = self.random.random()
        if form < 0.05:
            return f"{stamp}.{millis:03d}+00:00"  # another writer's form of the same moment
        if form < 0.07:
            return stamp  # no zone: kept as written
        return f"{stamp}.{millis:03d}Z"

    def line(self, job_id: str, status: str, key: str, **fields: Any) -> None:
        record = {"ts": self.ts(), "job_id": job_id, "status": status, "key": key, **fields}
        self.lines.append(orjson.dumps(record) + b"\n")

    def key(self) -> str:
        if self.random.random() < 0.1:
            return f"k{self.random.randrange(3)}"  # an old or a test ledger's key
        return hashlib.sha256(str(self.random.random()).encode()).hexdigest()

    def uuid(self) -> str:
        kind = self.random.random()
        digits = f"{self.random.getrandbits(128):032x}"
        if kind < 0.5:
            return f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:]}"
        if kind < 0.8:
            return digits
        return f"rec-{self.random.randrange(1000)}"

    def job(self, job_id: str) -> list[tuple[str, str, dict[str, Any]]]:
        """One job's lines over one or two runs."""
        steps: list[tuple[str, str, dict[str, Any]]] = []
        for _ in range(self.random.choice((1, 1, 2))):
            key = self.key()
            steps += self._run(job_id, key)
        return steps

    def _run(self, job_id: str, key: str) -> list[tuple[str, str, dict[str, Any]]]:
        pick = self.random.random
        details: dict[str, Any] = {"feature": "IMAGE_INPAINTER", "image": "/i.png"}
        if self.extra.random() < 0.5:
            details["group"] = f"product-{self.extra.randrange(50)}"
        steps: list[tuple[str, str, dict[str, Any]]] = [("started", key, {"job": details})]
        if self.extra.random() < LIVE_SHARE:
            return steps + self._live(job_id, key)
        if pick() < 0.3:
            digest = hashlib.sha256(str(self.random.randrange(20)).encode()).hexdigest()
            if pick() < 0.2:
                digest = f"d{self.random.randrange(5)}"
            asset = {"image": {"digest": digest, "path": f"a/{self.random.randrange(99)}.png"}}
            steps.append(("uploaded", key, {"assets": asset}))
        if pick() < 0.2:
            steps.append(("retrying", key, {"step": "feature", "attempt": 1, "error": ERROR}))
        if pick() < 0.15:
            failure = {**ERROR, "transient": pick() < 0.5}
            steps.append(("failed", key, {"attempts": 3, "error": failure}))
            return steps
        uuid = self.uuid()
        credits: Any = self.random.choice((1000, 4000, 2.5, 5_000_000_000, None))
        submitted = {"attempt": 1, "credits": credits, "uuid": uuid, "result_paths": []}
        if pick() < 0.3:  # a record still processing, then finished: one purchase
            steps.append(("submitted", key, dict(submitted)))
        submitted["result_paths"] = ["r/0.png"]
        steps.append(("submitted", key, submitted))
        if pick() < 0.2:
            steps.append(("retrying", key, {"step": "download", "attempt": 1, "error": ERROR}))
            if pick() < 0.5:
                return steps  # killed while the paid result is pending
        count = self.random.choice((1, 1, 2, 3))
        ext = self.random.choice(("png", "webp", "jpg"))
        outputs = [f"{job_id}/{index}.{ext}" for index in range(count)]
        if pick() < 0.1:
            outputs = [f"elsewhere/{job_id}.{ext}"]
        attempts = self.random.choice((1, 2, 300))
        done = {"outputs": outputs, "attempts": attempts, "credits": credits, "uuid": uuid}
        steps.append(("succeeded", key, {**done, **self.checks(len(outputs))}))
        if pick() < 0.1:
            steps.append(("result_gone", key, {"reason": "404"}))
        elif pick() < 0.1:
            refetched = {"outputs": outputs, "uuid": uuid, **self.checks(len(outputs))}
            steps.append(("refetched", key, refetched))
        return steps

    def _live(self, job_id: str, key: str) -> list[tuple[str, str, dict[str, Any]]]:
        """A run against the live API: answers lost after sending, one call per image, some
        images paid and never fetched."""
        extra = self.extra
        credits: Any = extra.choice((1000, 2.5, None))
        steps: list[tuple[str, str, dict[str, Any]]] = []
        lost = {"step": "feature", "attempt": 1, "error": LOST, "http_status": 524}
        for _ in range(extra.choice((0, 0, 1, 2))):
            steps.append(("unknown_outcome", key, {**lost, "credits": credits}))
        if extra.random() < 0.15:
            steps.append(("failed", key, {"attempts": 2, "error": GAVE_UP}))
            return steps
        images = extra.choice((1, 2, 3))
        uuids = [f"{extra.getrandbits(128):032x}" for _ in range(images)]
        for part, uuid in enumerate(uuids):
            paid = {"attempt": 1, "credits": credits, "uuid": uuid, "part": part}
            if extra.random() < 0.2:  # still processing, then finished: one purchase
                steps.append(("submitted", key, {**paid, "result_paths": []}))
            steps.append(("submitted", key, {**paid, "result_paths": ["r/0.png"]}))
            if extra.random() < 0.1:
                steps.append(("unknown_outcome", key, {**lost, "credits": credits, "part": part}))
        ending = extra.random()
        if ending < 0.15:
            return steps  # killed with its parts paid and not fetched
        outputs = [f"{job_id}/{index}.png" for index in range(images)]
        if ending < 0.45 and images > 1:
            gone = extra.randrange(images)
            partial = {
                "outputs": [out for index, out in enumerate(outputs) if index != gone],
                "missing": [gone],
                "uuids": [uuid for index, uuid in enumerate(uuids) if index != gone],
                "uuid": uuids[0],
                "attempts": 1,
                "credits": credits,
                "error": FETCH_FAILED,
            }
            steps.append(("partial", key, partial))
            return steps
        done = {"outputs": outputs, "attempts": 1, "credits": credits, "uuid": uuids[0]}
        steps.append(("succeeded", key, {**done, "uuids": uuids, **self.checks(images)}))
        return steps

    def checks(self, outputs: int) -> dict[str, Any]:
        """A stored result's marketplace checks, one per output; none on an older line."""
        if self.extra.random() < 0.3:
            return {}
        width = self.extra.choice((1024, 1536))
        facts = {"width": width, "height": 1024, "file_bytes": 1000, "format": "png"}
        amazon = [["border_not_white", "border not pure white"]] if width > 1024 else []
        one = {"facts": {**facts, "mode": "RGB"}, "amazon": amazon}
        return {"checks": [one] * outputs}

    def interleave(self, jobs: int, workers: int = 4) -> list[bytes]:
        queues = [self.job(f"job-{number:04d}") for number in range(jobs)]
        ids = [f"job-{number:04d}" for number in range(jobs)]
        active: list[int] = []
        upcoming = 0
        while active or upcoming < jobs:
            while len(active) < workers and upcoming < jobs:
                active.append(upcoming)
                upcoming += 1
            number = self.random.choice(active)
            status, key, fields = queues[number].pop(0)
            self.line(ids[number], status, key, **fields)
            if not queues[number]:
                active.remove(number)
            if self.random.random() < 0.01:
                self.lines.append(b"not json at all\n")
            if self.random.random() < 0.01:
                self.lines.append(b'{"job_id": "x", "status": "succeeded", "outputs": 7}\n')
        return self.lines


def _iso(seconds: int) -> str:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")


def random_ledger(path: Path, seed: int, jobs: int) -> bytes:
    """Write a random ledger of ``jobs`` jobs at ``path``; its bytes."""
    data = b"".join(LedgerMaker(seed).interleave(jobs))
    path.write_bytes(data)
    return data
