"""Scale-out on Ray (docs/delivery.md#scale-out): a rate-budget actor, shard actors, and the driver
loop.

Nothing here imports Ray at import time: ``pipeline`` without ``--ray`` must never load it.
Import ``pipeline.distributed.driver`` (which imports Ray) only once ``--ray`` was given.
"""

from __future__ import annotations
