"""Reliability and security suite (issue 6): the real CLI against the emulator on 127.0.0.1.

- ``test_fault_matrix``: each fault alone and all together; whole outputs, one payment per
  edit, retries by reason equal to what the emulator's log says it injected; Retry-After.
- ``test_crash_resume``: SIGKILL at exact points (``crashing_cli``) and at seeded random
  moments, then the same command: nothing lost, partial, or sent again after success.
- ``test_storage_faults``: damaged ledgers, a full disk (/dev/full), unwritable output folders.
- ``test_signals``: SIGINT / SIGTERM once (settle, exit 130) and twice (exit at once).
- ``test_hostile_manifests`` / ``test_hostile_ledger`` (hypothesis) and ``test_hostile_files``:
  hostile manifests, items files, ledgers, images, masks, links and servers.
- ``test_secrets``: the API key in no file under OUT and no stream, even when echoed back.
- ``test_lock``: a second run on one OUT refuses; a killed run's lock is taken over.

``harness`` holds the shared tools; ``figures`` the suite-wide tallies printed at the end.
"""
