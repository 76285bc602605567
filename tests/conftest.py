"""Fixtures every test folder may use, registered once: the local servers of
``tests.helpers.servers`` (``moto_endpoint``, ``s3_server``: S3 on moto; ``image_host``: an
HTTP host of input images) and of ``tests.helpers.stores`` (``gcs_endpoint``,
``azurite_endpoint`` and the ``store`` parametrised over S3, GCS and Azure). Markers are
registered in ``pyproject.toml`` only."""

pytest_plugins = ("tests.helpers.servers", "tests.helpers.stores")
