"""The chain section of a robustness sweep: flips counted by hand (the in-process evaluate with a chain and a
certified calibration is in test_calibration.py, which has the tiny model at hand)."""

from __future__ import annotations

import pytest

from synerdetect.engine.metrics import ScoreRecord
from synerdetect.engine.robustness import chain_section, chains_markdown, flips


def rec(path, gen, label, logit, verdict):
    return ScoreRecord(path, gen, label, 0.0, logit, logit, 0.5, verdict=verdict)


def test_flips_counted_by_hand():
    clean = [
        rec("a", "g", 1, 0.3, "fake"),
        rec("b", "g", 1, 0.2, "fake"),
        rec("c", "g", 0, 0.1, "fake"),
        rec("d", "h", 0, -0.2, "real"),
        rec("e", "h", 1, 0.4, "fake"),
    ]
    after = [
        rec("a", "g", 1, -0.1, "real"),
        rec("b", "g", 1, 0.01, "uncertain"),
        rec("c", "g", 0, 0.2, "fake"),
        rec("d", "h", 0, 0.3, "fake"),
        rec("e", "h", 1, 0.5, "fake"),
    ]
    f = flips(clean, after)
    # four clean fake verdicts (a, b, c, e): a -> real, b -> uncertain; d's real -> fake is not a flip of a fake
    assert f == {"n_fake_verdicts": 4, "to_real": 0.25, "to_uncertain": 0.25, "flipped": 0.5}
    sec = chain_section(clean, {"x": ("resize:0.5+jpeg:85", after)})
    assert sec["x"]["generators"]["g"]["flips"]["flipped"] == pytest.approx(2 / 3)
    assert sec["x"]["generators"]["h"]["flips"]["flipped"] == 0.0
    # generator g after the chain: a wrong (logit < 0 for a fake), b right, c wrong -> acc 1/3
    assert sec["x"]["generators"]["g"]["acc"] == pytest.approx(1 / 3)
    # AP of g after the chain: ranked c (real, 0.2), b (fake), a (fake): precisions 1/2 and 2/3 -> 58.3
    assert "| x | resize:0.5+jpeg:85 | g | 33.3 | 58.3 | 3 | 33.3 | 33.3 |" in chains_markdown(sec)
