"""``Fingerprints``: distinct 64-bit values counted in 8 bytes each (the plan's ids and its
uploads over a million rows), exact whatever the filter lets through."""

from __future__ import annotations

import random

import pytest

from pipeline.preflight.fields import Fingerprints, IdSet, id_fingerprint


@pytest.mark.parametrize("filter_bits", [8, 1 << 12, 1 << 20], ids=["crowded", "some", "roomy"])
def test_distinct_and_duplicates_are_exact_whatever_the_filter(filter_bits: int) -> None:
    """A filter of 8 bits sends nearly every value to the candidates: the answers stay exact."""
    draw = random.Random(filter_bits)
    values = [draw.getrandbits(64) for _ in range(3000)]
    values += draw.sample(values, 500) + values[:5] * 3  # repeats, some many times
    draw.shuffle(values)
    fingerprints = Fingerprints(filter_bits)
    for value in values:
        fingerprints.add_fingerprint(value)
    counted = {value: values.count(value) for value in set(values)}
    assert fingerprints.distinct() == len(counted)
    assert fingerprints.duplicates() == {value for value, times in counted.items() if times > 1}
    assert len(fingerprints) == len(values) and list(fingerprints) == values


def test_an_id_set_finds_ids_repeated_in_another_case() -> None:
    ids = IdSet(filter_bits=16)
    for job_id in ("sku-1", "sku-2", "SKU-1", "sku-3", "Sku-2", "sku-1"):
        ids.add(job_id)
    assert ids.duplicates() == {id_fingerprint("sku-1"), id_fingerprint("sku-2")}
    assert ids.distinct() == 3
