"""What the tests share: whole runs through the CLI (``e2e``), the emulator on a thread
(``emulator``), fakes of the client and clock (``fakes``), generated images (``images``), local
servers (``servers``: S3 on moto, an image host; ``stores``: GCS and Azure beside S3), a probe
of the files a run opens (``file_opens``) and random but reproducible ledgers with what every
fold of one must agree on (``ledgers``). Fixtures are registered once, in ``tests/conftest.py``.
"""
