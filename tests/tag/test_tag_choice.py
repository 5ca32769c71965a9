"""Which tag backend runs and why (issue 16): a typo is an error naming the key, auto falls back to
colours only when the default weight files are absent, warns loudly once with the command that
fetches them, and tags.parquet, summary.json and the dataset card say which backend ran and why.
Also: the MGM prior column and its source, and tag.device through models.device."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from models.caffemodel import encode_net
from tasks.artifacts.tags import EYE_COLOR_SLICE, HAIR_COLOR_SLICE, MGM_TAGS
from tasks.errors import ConfigError, DataError
from tasks.params.tag import TagConfig
from tasks.tag.run import tag_faces
from tasks.tag.summary import MGM_PRIORS, card_section
from tasks.taggers import choice as choice_mod
from tasks.taggers.choice import choose_backend
from tasks.tools.convert import convert
from tasks.typed import build
from tests.support.tag import labelled_faces, png_bytes, synthetic_net, write_faces_dataset

I2V_DEFAULT = "models/i2v/illust2vec_tag.safetensors"
TAG_LIST_DEFAULT = "models/i2v/tag_list.json"


def cfg_of(out: Path, **over) -> TagConfig:
    return build(TagConfig, {"workers": 0, "threads": 1, "batch_size": 4,
                             "out": {"tags": str(out / "tags.parquet"), "summary": str(out / "summary.json"),
                                     "metrics": str(out / "metrics.json")}} | over, "tag")


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """cwd = tmp_path, where the default tagger paths are absent; a fresh once-per-process warning."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(choice_mod, "_warned", set())
    return tmp_path


@pytest.fixture(scope="module")
def faces(shared, tmp_path_factory):
    from tasks.artifacts.faces import read_faces

    items = [(f"{i:02d}" * 32, png_bytes(p)) for i, (p, _) in enumerate(labelled_faces(shared)[::40][:5])]
    path, crops = write_faces_dataset(tmp_path_factory.mktemp("faces"), items, shard_rows=4)
    return read_faces(path), str(crops)


def install_i2v(root: Path, weights: str = I2V_DEFAULT, tag_list: str = TAG_LIST_DEFAULT) -> None:
    """A small converted i2v tagger at (by default) the shipped paths under root."""
    names = [n.replace("_", " ") for n in MGM_TAGS]
    (root / "m.caffemodel").write_bytes(encode_net(synthetic_net(seed=2, num_tags=len(names))))
    (root / "tags.json").write_text(json.dumps(names))
    (root / weights).parent.mkdir(parents=True, exist_ok=True)
    convert(root / "m.caffemodel", root / weights, "tag", tags=root / "tags.json", tag_list_out=root / tag_list)


# --- a path the user set ----------------------------------------------------------------------------

@pytest.mark.parametrize("key", ["i2v.weights", "i2v.tag_list", "onnx.model", "onnx.tags_csv"])
def test_auto_with_a_user_set_path_that_does_not_exist_is_an_error_naming_the_key(in_tmp, key):
    section, name = key.split(".")
    cfg = cfg_of(in_tmp, backend="auto", **{section: {name: "models/typo/nothing-here.bin"}})
    with pytest.raises(ConfigError, match=rf"^tag\.{key}: models/typo/nothing-here\.bin does not exist \(you set it"):
        choose_backend(cfg)


def test_a_user_set_feature_path_counts_only_with_tag_feature(in_tmp):
    typo = {"feature_weights": "models/typo/feat.safetensors"}
    assert choose_backend(cfg_of(in_tmp, backend="auto", i2v=typo)).backend == "color"  # not used: not checked
    with pytest.raises(ConfigError, match=r"^tag\.i2v\.feature_weights: models/typo/feat\.safetensors does not exist"):
        choose_backend(cfg_of(in_tmp, backend="auto", feature=True, i2v=typo))


def test_auto_uses_i2v_at_a_user_set_path_that_exists(in_tmp):
    install_i2v(in_tmp, "mine/tag.safetensors", "mine/tag_list.json")
    c = choose_backend(cfg_of(in_tmp, backend="auto", i2v={"weights": "mine/tag.safetensors", "tag_list": "mine/tag_list.json"}))
    assert (c.backend, c.fallback) == ("i2v", False) and c.reason == "auto: the Illustration2Vec weights are present"


# --- the shipped defaults ---------------------------------------------------------------------------------

def test_auto_takes_i2v_when_the_default_files_are_present(in_tmp, faces, caplog):
    install_i2v(in_tmp)
    cfg = cfg_of(in_tmp, backend="auto")
    with caplog.at_level(logging.WARNING, logger="tasks"):
        s = tag_faces(cfg, *faces)
    assert s.backend == "i2v" and "NO TAGGER WEIGHTS" not in caplog.text
    meta = pq.read_schema(cfg.out.tags).metadata
    assert meta[b"moeflow.backend_reason"] == b"auto: the Illustration2Vec weights are present"


def test_a_partial_default_install_is_an_error_naming_the_missing_file(in_tmp):
    install_i2v(in_tmp)
    Path(TAG_LIST_DEFAULT).unlink()
    with pytest.raises(DataError, match=r"^tag\.i2v\.tag_list: models/i2v/tag_list\.json not found, but "
                                        r"models/i2v/illust2vec_tag\.safetensors is there.*python -m tasks\.tools\.convert tag"):
        choose_backend(cfg_of(in_tmp, backend="auto"))
    install_i2v(in_tmp)  # complete, but the feature model is asked for and absent
    with pytest.raises(DataError, match=r"^tag\.i2v\.feature_weights: models/i2v/illust2vec\.safetensors not found"):
        choose_backend(cfg_of(in_tmp, backend="auto", feature=True))


def test_auto_falls_back_to_colour_loudly_once_and_records_why(in_tmp, faces, caplog):
    cfg = cfg_of(in_tmp, backend="auto")
    with caplog.at_level(logging.INFO, logger="tasks"):
        s = tag_faces(cfg, *faces)
        tag_faces(cfg, *faces)  # a second run in the same process: no second warning
    loud = [r for r in caplog.records if r.levelno == logging.WARNING and "NO TAGGER WEIGHTS" in r.getMessage()]
    assert len(loud) == 1
    msg = loud[0].getMessage()
    assert "11 hair-style, expression and accessory tags will be unknown" in msg
    release = "https://github.com/rezoo/illustration2vec/releases/download/v2.0.0"
    assert (f"`dvc import-url {release}/illust2vec_tag_ver200.caffemodel models/i2v/ && "
            f"dvc import-url {release}/tag_list.json.gz models/i2v/ && "
            "python -m tasks.tools.convert tag --caffemodel models/i2v/illust2vec_tag_ver200.caffemodel "
            "--tags models/i2v/tag_list.json.gz --out models/i2v/illust2vec_tag.safetensors "
            "--tag-list-out models/i2v/tag_list.json`, then `dvc repro -f tag`") in msg
    reason = "auto: no tagger weights (models/i2v/illust2vec_tag.safetensors, models/wd-tagger/model.onnx absent), " \
             "hair and eye colour only"
    assert s.backend == "color" and s.reason == reason
    assert pq.read_schema(cfg.out.tags).metadata[b"moeflow.backend_reason"].decode() == reason
    summary = json.loads(Path(cfg.out.summary).read_text())
    assert summary["backend"] == "color" and summary["backend_reason"] == reason
    card = card_section(summary)
    assert "**Backend: `color`**" in card and reason in card


def test_the_fetch_command_updates_existing_import_records(in_tmp):
    from tasks.taggers.choice import i2v_fetch_command

    Path("models/i2v").mkdir(parents=True)
    for name in ("illust2vec_tag_ver200.caffemodel", "tag_list.json.gz"):
        Path(f"models/i2v/{name}.dvc").write_text("frozen: true\n")
    assert i2v_fetch_command(cfg_of(in_tmp)).startswith(
        "dvc update models/i2v/illust2vec_tag_ver200.caffemodel.dvc models/i2v/tag_list.json.gz.dvc && python -m tasks.tools.convert tag")
    cmd = i2v_fetch_command(cfg_of(in_tmp, feature=True))  # the feature model has no record here: imported
    assert "dvc import-url https://github.com/rezoo/illustration2vec/releases/download/v2.0.0/illust2vec_ver200.caffemodel" in cmd
    assert cmd.endswith("python -m tasks.tools.convert feature --caffemodel models/i2v/illust2vec_ver200.caffemodel "
                        "--out models/i2v/illust2vec.safetensors")


def test_color_on_purpose_does_not_warn(in_tmp, faces, caplog):
    with caplog.at_level(logging.WARNING, logger="tasks"):
        s = tag_faces(cfg_of(in_tmp, backend="color"), *faces)
    assert s.reason == "set in params (tag.backend: color)" and "NO TAGGER WEIGHTS" not in caplog.text


def test_the_dataset_card_has_the_tag_section(in_tmp, faces):
    from tasks.params.all import Params
    from tasks.tools.card import build_card

    cfg = cfg_of(in_tmp, backend="auto")
    tag_faces(cfg, *faces)
    card = build_card(build(Params, {"tag": {"out": {"summary": cfg.out.summary, "tags": cfg.out.tags}}}), in_tmp)
    section = card.split("## Tag frequencies\n", 1)[1].split("\n## ", 1)[0]
    assert "**Backend: `color`**, because: auto: no tagger weights" in section
    assert "| blonde_hair |" in section and "| 0.1597 |" in section and "makegirlsmoe_web src/Config.js @154fdcf" in section


# --- the MGM priors ---------------------------------------------------------------------------------------

def test_mgm_priors_are_the_config_js_values():
    assert tuple(MGM_PRIORS) == MGM_TAGS
    # Config.js's colour groups are distributions; a mistyped digit would show here
    for sl in (HAIR_COLOR_SLICE, EYE_COLOR_SLICE):
        assert sum(list(MGM_PRIORS.values())[sl]) == pytest.approx(1.0, abs=1e-6)
    assert (MGM_PRIORS["long_hair"], MGM_PRIORS["blue_eyes"], MGM_PRIORS["glasses"]) == (0.52989922, 0.28350664, 0.05384738)
    assert MGM_PRIORS["twintails"] == 0.12567589 and MGM_PRIORS["blush"] == 0.33405855


# --- tag.device ------------------------------------------------------------------------------------------

@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_tag_device_cuda_without_a_gpu_names_tag_device(tmp_path):
    from tasks.taggers.backends import resolve_device

    with pytest.raises(DataError, match=r"^tag\.device: cuda requested but torch sees no GPU \(set tag\.device: auto or cpu\)$"):
        resolve_device(cfg_of(tmp_path, device="cuda"))
    assert resolve_device(cfg_of(tmp_path, device="auto")) == "cpu" == resolve_device(cfg_of(tmp_path, device="cpu"))


def test_tag_uses_the_one_device_policy(monkeypatch, tmp_path):
    """tag.device goes through models.device.resolve_device (the policy train and render use)."""
    import models.device
    from tasks.taggers import backends

    assert backends.resolve_device_of is models.device.resolve_device
    seen = []
    monkeypatch.setattr(backends, "resolve_device_of", lambda name, local_rank=0, key="device": seen.append((name, key))
                        or torch.device("cpu"))
    assert backends.resolve_device(cfg_of(tmp_path, device="auto")) == "cpu" and seen == [("auto", "tag.device")]


def test_renders_tagger_takes_the_same_choice_without_a_second_warning(in_tmp, caplog):
    """render loads the tag stage's backend for generated images: same choice, logged, not warned."""
    from tasks.taggers.backends import load_tagger

    with caplog.at_level(logging.INFO, logger="tasks"):
        tagger = load_tagger(build(TagConfig, {}, "tag"))
    assert tagger.name == "color" and "tagger for arrays: color (auto: no tagger weights" in caplog.text
    assert "NO TAGGER WEIGHTS" not in caplog.text
    images = np.full((2, 64, 64, 3), 255, np.uint8)
    p = tagger.probabilities(images)
    assert p.shape == (2, len(MGM_TAGS)) and np.isnan(p).all()  # animeface finds no face in a blank image
    with pytest.raises(ConfigError, match=r"^tag\.i2v\.weights: "):
        load_tagger(build(TagConfig, {"i2v": {"weights": "typo.safetensors"}}, "tag"))


def test_the_stage_stops_on_a_typo_with_one_line_before_reading_data(in_tmp):
    import subprocess
    import sys

    import yaml

    from tests.conftest import ROOT

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["tag"]["i2v"]["weights"] = "models/i2v/ilust2vec_tag.safetensors"  # the typo; no faces.parquet here either
    (in_tmp / "p.yaml").write_text(yaml.safe_dump(params))
    res = subprocess.run([sys.executable, "-m", "tasks.tag", "--params", "p.yaml", "--faces", "reviewed.parquet",
                          "--crops", "crops"], cwd=in_tmp, capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and res.stdout == ""
    assert res.stderr.strip().splitlines() == [
        "error: tag.i2v.weights: models/i2v/ilust2vec_tag.safetensors does not exist (you set it; the shipped default "
        "is models/i2v/illust2vec_tag.safetensors); fix the path, or remove the key to use the default"]
