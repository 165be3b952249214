"""Every published checkpoint gives the committed predictions on this CPU (tests/fingerprints.py; run under the
emulated CPUs of tests/test_emulated_cpus.py too)."""

from __future__ import annotations

import json

import pytest
import torch
from fingerprints import PATH, logits_of

import psn_zoo

COMMITTED = json.loads(PATH.read_text())


def test_every_published_entry_has_a_fingerprint():
    assert sorted(COMMITTED["entries"]) == sorted(psn_zoo.list_pretrained())


@pytest.mark.parametrize("name", sorted(COMMITTED["entries"]))
def test_predictions_and_logits_match_the_committed_fingerprint(name):
    expected = COMMITTED["entries"][name]
    logits, spec = logits_of(name)
    assert spec == expected["input"]
    assert logits.argmax(1).tolist() == expected["predictions"]
    reference = torch.tensor(expected["logits"])
    scale = float(reference.abs().max())
    torch.testing.assert_close(logits, reference, rtol=COMMITTED["rtol"], atol=COMMITTED["rtol"] * scale)
