from __future__ import annotations

import pytest
import torch

from audit import metrics


def test_greedy_hits_respect_the_mask() -> None:
    preds = torch.tensor([[1, 0, 2], [0, 0, 0]])  # the argmax of the logits at each position
    targets = torch.tensor([[1, 1, 2], [0, 2, 0]])
    mask = torch.tensor([[1, 1, 1], [0, 1, 1]])
    hits = metrics.greedy_hits(preds, targets, mask)
    assert hits.tolist() == [[True, False, True], [False, False, True]]


def test_ngrams_and_hit_rate() -> None:
    assert metrics.ngrams([1, 2, 3, 4], 3) == [(1, 2, 3), (2, 3, 4)]
    assert metrics.ngrams([1, 2], 3) == []
    truth = [1, 2, 3, 4, 5]
    assert metrics.ngram_hit_rate(truth, truth, 3) == 1.0
    # decoded 3-grams: (1,2,3) hit, (2,3,9) miss, (3,9,5) miss -> 1 of 3 true 3-grams
    assert metrics.ngram_hit_rate([1, 2, 3, 9, 5], truth, 3) == pytest.approx(1 / 3)
    # a true n-gram found at another position still counts (set membership, Jang et al.)
    assert metrics.ngram_hit_rate([3, 4, 5, 0, 0], truth, 3) == pytest.approx(1 / 3)
    assert metrics.ngram_hit_rate([1, 2], [1, 2], 3) == 0.0


def test_extraction_likelihood_by_hand() -> None:
    secret = [10, 11, 12, 13]  # m = 4, n = 2: i = 0, 1, 2
    decodes = {
        0: [10, 11, 99, 13],  # true 2-grams (10,11) (11,12) (12,13): decoded hits (10,11) -> 1/3
        1: [11, 12, 13],  # secret[1:] exactly -> 1
        2: [0, 0],  # -> 0
    }
    assert metrics.extraction_likelihood(secret, decodes, 2) == pytest.approx((1 / 3 + 1 + 0) / 3)
    assert list(metrics.el_offsets(4, (2, 3))) == [0, 1, 2]
    assert list(metrics.el_offsets(2, (3,))) == [0]


def test_extraction_likelihood_for_a_secret_shorter_than_n() -> None:
    assert metrics.extraction_likelihood([5, 6], {0: [5, 6, 7]}, 3) == 1.0
    assert metrics.extraction_likelihood([5, 6], {0: [5, 7, 6]}, 3) == 0.0


def test_verbatim_and_leaked_prefix() -> None:
    secret = "AKIAXYZ"
    assert metrics.verbatim_extracted('x = "AKIAXYZ"', secret)
    assert not metrics.verbatim_extracted("AKIAXY", secret)
    assert not metrics.verbatim_extracted("anything", "")
    assert metrics.leaked_prefix_chars("AKIAQQQ", "", secret) == 4
    assert metrics.leaked_prefix_chars(" AKIAX", " ", secret) == 5
    assert metrics.leaked_prefix_chars("AKIAX", " ", secret) == 0  # not in place
    assert metrics.leaked_prefix_chars("zz AKIAXYZ", " ", secret) == len(secret)
