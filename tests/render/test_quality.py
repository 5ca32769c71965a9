"""The generator's quality metrics on fixtures that know the answer: a random generator is not
detectable, real crops are at the real rate, one fixed face has no diversity, a generator that
returns its training images is memorised; the tagger's agreement and its ceiling."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from models.dragan import Generator
from tasks.artifacts.tags import EYE_COLOR_SLICE, HAIR_COLOR_SLICE, MGM_TAGS
from tasks.detectors import LbpCascade, read_cascade
from tasks.params.train import ModelConfig
from tasks.render import quality as Q
from tasks.render.metrics import agreement, attribute_section
from tasks.render.sheets import generate

PX = 32


@pytest.fixture(scope="module")
def faces(shared) -> np.ndarray:
    """300 real 96-px crops brought to 32 px, as render brings real crops to a 32-px model."""
    files = sorted((shared / "data" / "faces_train").glob("*.jpg"))[:300]
    return np.stack([np.asarray(Image.open(f).convert("RGB").resize((PX, PX), Image.BICUBIC)) for f in files])


@pytest.fixture(scope="module")
def lbp(shared):
    xml, _ = read_cascade(shared / "models" / "lbpcascade_animeface.xml")
    return Q.NamedDetector("lbpcascade", LbpCascade(xml, 1.1, 5, 24).detect)


def random_generator_samples(n: int = 200) -> np.ndarray:
    torch.manual_seed(0)
    G = Generator(ModelConfig(image_size=PX, g_channels=16, g_blocks=1, d_channels=(16, 32, 64), d_blocks=1)).eval()
    return generate(G, torch.randn(n, 128), torch.zeros(n, 34))


def test_detectability_random_generator_scores_zero_and_real_crops_the_real_rate(faces, lbp):
    fake = random_generator_samples()
    d = Q.detectability(fake, faces, [lbp], 128, "lbpcascade")
    assert d["available"] and d["lbpcascade"] <= 0.01 and d["ratio"] <= 0.02
    assert 0.8 <= d["real_lbpcascade"] <= 0.98  # about 91% of 32-px real crops are still found at 128 px
    same = Q.detectability(faces[:150], faces[150:], [lbp], 128, "lbpcascade")
    assert 0.85 <= same["ratio"] <= 1.15  # real against real: about 1


def test_shuffled_pixels_are_not_faces(faces, lbp):
    rng = np.random.default_rng(0)
    flat = faces[:100].reshape(100, -1, 3)
    shuffled = np.stack([f[rng.permutation(len(f))] for f in flat]).reshape(faces[:100].shape)
    assert Q.detect_share(shuffled, lbp, 128) <= 0.02


def test_one_fixed_face_has_no_diversity_and_real_faces_do(faces):
    one = np.repeat(faces[:1], 200, axis=0)
    d = Q.diversity(one, faces[:200])
    assert d["samples"] == 0 and d["ratio"] == 0 and d["real"] > 0.1
    average = np.repeat(faces[:8].mean(0, keepdims=True).round().astype(np.uint8), 200, axis=0)
    assert Q.diversity(average, faces[:200])["ratio"] < 0.01  # the "average face": detectable, not diverse
    assert 0.9 <= Q.diversity(faces[:150], faces[150:])["ratio"] <= 1.1


def test_a_generator_that_returns_training_images_is_memorised(faces):
    train, held = faces[:200], faces[200:]
    copies = train[np.random.default_rng(0).integers(0, 200, 100)]
    m = Q.memorisation(copies, held, train)
    assert m["samples_median"] == 0 and m["ratio"] == 0 and m["near_copies"] == 1.0
    honest = Q.memorisation(held[:50], held[50:], train)  # unseen real faces: as far as held-out ones
    assert 0.8 <= honest["ratio"] <= 1.25 and honest["near_copies"] < 0.1


def test_nearest_distances_leave_the_image_itself_out():
    a = np.zeros((3, 8, 8, 3), np.uint8)
    a[1] += 255
    d = Q.nearest_distances(a)  # 0 and 2 are identical; 1 is white: 1.0 from both
    assert d.tolist() == pytest.approx([0.0, 1.0, 0.0])
    with pytest.raises(ValueError):
        Q.nearest_distances(a[:1])


def _attrs(hair: list[int], eye: list[int]) -> np.ndarray:
    a = np.full((len(hair), len(MGM_TAGS)), -1, np.int8)
    a[:, HAIR_COLOR_SLICE] = 0
    a[:, EYE_COLOR_SLICE] = 0
    a[np.arange(len(hair)), HAIR_COLOR_SLICE.start + np.array(hair)] = 1
    a[np.arange(len(eye)), EYE_COLOR_SLICE.start + np.array(eye)] = 1
    return a


def test_agreement_with_conditioning_and_the_tagger_ceiling():
    cond = _attrs([0] * 20 + [1] * 20, [2] * 40)
    pred = cond.copy()
    pred[:10, HAIR_COLOR_SLICE] = -1  # the tagger cannot read 10 of them
    pred[10:15, HAIR_COLOR_SLICE] = 0
    pred[10:15, HAIR_COLOR_SLICE.start + 5] = 1  # and reads 5 wrongly
    s = agreement(cond, pred)
    assert s["hair_color"] == {"known": 40, "read": 30, "agreement": 25 / 30}
    assert s["eye_color"]["agreement"] == 1.0 and s["blush"] == {"known": 0, "read": 0, "agreement": None}
    section, detail = attribute_section("color", s, agreement(cond, cond), PX, 40)
    assert section["available"] and section["hair_color"] == round(25 / 30, 4) and section["hair_color_ceiling"] == 1.0
    assert section["hair_color_read"] == 0.75 and section["scored"] == 2
    assert None not in section.values()
    assert "cannot say" in detail["attributes"]["blush"]["reason"]


def test_a_tagger_that_cannot_work_at_the_resolution_is_said_so():
    cond = _attrs([0] * 40, [1] * 40)
    blind = np.full_like(cond, -1)
    section, detail = attribute_section("color", agreement(cond, blind), agreement(cond, blind), PX, 40)
    assert section["available"] is False and "cannot work at this resolution" in section["reason"]
    assert "32 px" in detail["attributes"]["hair_color"]["reason"]
