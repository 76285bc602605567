"""The floor: the same requests as the pipeline, by a bare aiohttp loop. ``python -m bench.bare``.

Per job: read the input file, upload it, call the feature, stream the result into a file. The
shared mask is uploaded once, as the pipeline does with a file many jobs share. Nothing else: no
limiter, no ledger, no preflight, no checks beyond the HTTP status, no temp-and-rename.

Arguments: a JSON file ``{"images": [...], "mask": ..., "out": ..., "concurrency": N}``; the
API base, asset base and key come from the same environment variables the pipeline reads.
Appends its readings to ``$BENCH_EVENTS`` like ``bench.probe`` (``ready`` and ``end``).
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path
from typing import Any

import aiohttp
import orjson

from bench.readings import EVENTS_ENV, Events

CHUNK = 256 * 1024
MODEL = "gpt-image-1-mini"


class Api:
    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.session = session
        self.base = os.environ["ONEMIN_API_BASE"]
        self.headers = {"API-KEY": os.environ["ONEMIN_API_KEY"]}

    async def upload(self, path: Path) -> str:
        form = aiohttp.FormData()
        form.add_field("asset", path.read_bytes(), filename=path.name, content_type="image/png")
        url = f"{self.base}/api/assets"
        async with self.session.post(url, data=form, headers=self.headers) as response:
            response.raise_for_status()
            return orjson.loads(await response.read())["fileContent"]["path"]

    async def inpaint(self, image: str, mask: str) -> str:
        body = {
            "type": "IMAGE_INPAINTER",
            "model": MODEL,
            "promptObject": {
                "imageUrl": image,
                "maskUrl": mask,
                "prompt": "studio shot, soft daylight",
                "size": "1024x1024",
                "n": 1,
                "quality": "low",  # every seed parameter, as the live API requires
                "output_format": "png",
                "output_compression": 85,
            },
        }
        url = f"{self.base}/api/features"
        async with self.session.post(url, json=body, headers=self.headers) as response:
            response.raise_for_status()
            return orjson.loads(await response.read())["aiRecord"]["temporaryUrl"]

    async def download(self, url: str, dest: Path) -> None:
        async with self.session.get(url) as response:
            response.raise_for_status()
            with dest.open("wb") as sink:
                async for chunk in response.content.iter_chunked(CHUNK):
                    sink.write(chunk)


async def run(config: dict[str, Any]) -> int:
    images = [Path(p) for p in config["images"]]
    out = Path(config["out"])
    out.mkdir(parents=True, exist_ok=True)
    pending = iter(enumerate(images))
    async with aiohttp.ClientSession() as session:
        api = Api(session)
        mask = await api.upload(Path(config["mask"]))

        async def worker() -> None:
            for index, image in pending:  # shared iterator: each job is taken once
                url = await api.inpaint(await api.upload(image), mask)
                await api.download(url, out / f"{index}.png")

        await asyncio.gather(*(worker() for _ in range(config["concurrency"])))
    return len(images)


def main(argv: list[str]) -> int:
    config = orjson.loads(Path(argv[0]).read_bytes())
    events = Events(os.environ.get(EVENTS_ENV))
    events.note("ready")
    done = asyncio.run(run(config))
    events.note("end", code=0, jobs=done)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
