"""The benchmark suite: the pipeline's own cost beside the bare minimum (``make bench``).

``python -m bench`` runs every scenario against the emulator in a separate process on
127.0.0.1 and writes ``bench/results/latest.json`` and ``latest.md``. ``--quick`` is a smoke
run (fewer jobs, one run each); ``--only NAME`` runs some scenarios. See ``bench/README.md``.
"""
