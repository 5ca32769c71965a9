"""The page in real headless Chromium (Debian's, driven by playwright-core): choose attributes, noise and
a seed through the UI, and find on the canvas the image onnxruntime computes in Python for the same noise
and attributes; honest controls (untrained tags disabled, agreement shown), tri-state tags, fixed /
perturbed / imported noise, the transition, history and favourites across a reload, downloads, and a
shared URL reproducing the pixels."""

from __future__ import annotations

import base64
import io
import json
import math
import urllib.parse

import numpy as np
import pytest
from PIL import Image

from tasks.artifacts.tags import MGM_TAGS
from tasks.export.noise import perturb, seed_to_z, slerp, variation_seeds
from tasks.export.parity import run_onnx, session, to_uint8
from tasks.export.run import run_export
from tasks.tools.webserve import serve_in_thread
from tests.support.export import export_config, make_generator_file, make_training_files
from tests.support.web import BrowserUnavailable, build_page, drive, ensure_browser, rgb

TRAINED = ["long_hair", "twintails", "blush", "open_mouth", "ribbon"]  # + every colour
UNTRAINED = "this model was trained without this tag"
TAGS = ["pink_hair", "twintails", "blush", "open_mouth", "ribbon", "green_eyes"]
SEED = 3141592653
# the generator's tag frequencies (its metadata): long hair always, twintails never, blush half the time
SAMPLER = {"n_tags": 34, "groups": [[0, 13, [1 / 13] * 13], [24, 34, [0.1] * 10]],
           "independent": {"13": 1.0, "15": 0.0, "18": 0.5, "20": 0.5, "22": 0.5}}
MAX_PIXEL_DIFF = 2  # WASM and native kernels round differently: a level or two, on a few pixels (here: none)
MAX_MEAN_DIFF = 0.02  # another eye colour on the tiny test model already moves the mean by ~0.2


@pytest.fixture(scope="module")
def chromium():
    try:
        return ensure_browser()
    except BrowserUnavailable as e:
        pytest.skip(str(e))


@pytest.fixture(scope="module")
def site(chromium, tmp_path_factory):
    """The built page plus a tiny exported generator (fp16 web variant) with its training tags and
    measured agreement, served with COOP/COEP."""
    root = tmp_path_factory.mktemp("web")
    dist = build_page(root / "dist")
    src = make_generator_file(root / "train/generator.safetensors", sampler=SAMPLER)
    data, attributes = make_training_files(root, trained=TRAINED, known_off=["hat"])
    run_export(export_config(root, variant="fp16"), src, data, attributes)
    server, url = serve_in_thread(dist, mounts={"/model/": root / "model"})
    yield url, root / "model/generator.onnx"
    server.shutdown()
    server.server_close()


def vec(tags: list[str]) -> list[float]:
    return [1.0 if t in tags else 0.0 for t in MGM_TAGS]


def render(model, zs: list[list[float]], tags: list[list[float]]) -> np.ndarray:
    return to_uint8(run_onnx(session(model), np.asarray(zs, np.float32), np.asarray(tags, np.float32)))


def reference(model, seeds: list[int], tags: list[str]) -> np.ndarray:
    return render(model, [seed_to_z(s, 128) for s in seeds], [vec(tags)] * len(seeds))


def assert_same_image(got: np.ndarray, want: np.ndarray) -> None:
    assert got.shape == want.shape
    diff = np.abs(got.astype(int) - want.astype(int))
    assert diff.max() <= MAX_PIXEL_DIFF and diff.mean() < MAX_MEAN_DIFF, (diff.max(), diff.mean())


def on_tags(character: dict) -> list[str]:
    return [t for t, v in zip(MGM_TAGS, character["tags"]) if v == 1]


def test_page_generates_what_python_generates(site, tmp_path):
    url, model = site
    r = drive(url + "?ep=wasm", seed=SEED, tags=TAGS, variation_pixels=True, screenshot=str(tmp_path / "page.png"),
              steps=[{"read": "main"}])
    assert r["console"] == [] and r["errors"] == []
    assert r["first"]["backend"] == "wasm" and r["first"]["crossOriginIsolated"] is True
    assert r["first"]["firstImageMs"] > 0
    assert r["key"] == f"{SEED}:{','.join(TAGS)}"  # exactly the chosen attributes, in MGM_TAGS order
    q = urllib.parse.parse_qs(urllib.parse.urlsplit(r["url"]).query)
    assert q["seed"] == [str(SEED)] and q["on"] == ["pink_hair,twintails,blush,open_mouth,ribbon,green_eyes"]
    assert q["off"] == ["long_hair"]  # every other trained tag off; untrained ones are never in a link
    assert_same_image(rgb(r["pixels"]), reference(model, [SEED], TAGS)[0])
    # the strip: the noise perturbed by the amount (50%) towards each variation seed's
    vseeds = variation_seeds(SEED, len(r["variation_seeds"]))
    assert r["variation_seeds"] == vseeds and len(vseeds) == 6
    z = perturb(seed_to_z(SEED, 128), seed_to_z(vseeds[0], 128), 0.5)
    assert_same_image(rgb(r["variation"]), render(model, [z], [vec(TAGS)])[0])
    assert (tmp_path / "page.png").stat().st_size > 10_000


def test_untrained_tags_are_disabled_and_trained_ones_show_their_agreement(site):
    url, _ = site
    r = drive(url + "?ep=wasm&seed=5")
    controls = {c["id"][4:]: c for c in r["controls"]}
    for tag in MGM_TAGS[13:24]:
        c = controls[tag]
        if tag in TRAINED:
            assert not c["disabled"] and c["title"] == "" and c["agree"] == "81%", c
        else:
            assert c["disabled"] and c["title"].startswith(UNTRAINED) and c["state"] == "off", c
    assert "on for 0 of 20 training faces; known for 20" in controls["hat"]["title"]  # known, never on
    assert "known for 0" in controls["smile"]["title"]
    assert not any(controls[t]["disabled"] for t in MGM_TAGS[:13] + MGM_TAGS[24:])  # every colour was trained
    assert [x for x in r["legends"] if x.startswith(("Hair colour", "Eye colour"))] == ["Hair colour 81%", "Eye colour 2/2"]
    # a link naming an untrained tag cannot switch it on
    r = drive(url + "?" + urllib.parse.urlencode({"ep": "wasm", "seed": 5, "on": "smile,hat,blush"}),
              steps=[{"read": "c"}])
    assert "smile" not in on_tags(r["reads"]["c"]["character"]) and "blush" in on_tags(r["reads"]["c"]["character"])


def test_tri_state_tags_and_random_draws_as_the_training_data(site):
    url, model = site
    steps = [{"set": {}}, {"read": "random"},  # everything random: long hair always, twintails never (SAMPLER)
             {"set": {"on": ["twintails"], "off": ["long_hair"]}}, {"read": "chosen"}]
    steps += [s for seed in range(1, 9) for s in ({"seed": seed}, {"read": f"seed{seed}"})]
    r = drive(url + "?ep=wasm&seed=11", steps=steps)
    random = on_tags(r["reads"]["random"]["character"])
    assert "long_hair" in random and "twintails" not in random
    chosen = r["reads"]["chosen"]["character"]
    assert "twintails" in on_tags(chosen) and "long_hair" not in on_tags(chosen)
    assert_same_image(rgb(r["reads"]["chosen"]["pixels"]), render(model, [chosen["z"]], [chosen["tags"]])[0])
    drawn = [on_tags(r["reads"][f"seed{s}"]["character"]) for s in range(1, 9)]
    assert all("twintails" in d and "long_hair" not in d for d in drawn)  # chosen tags stay chosen
    assert 0 < sum("blush" in d for d in drawn) < 8  # a random tag (p = 0.5) varies with the seed
    assert all(sum(t.endswith("_hair") and MGM_TAGS.index(t) < 13 for t in d) == 1 for d in drawn)  # one colour


def test_noise_fixed_perturbed_exported_and_imported(site):
    url, model = site
    imported = json.dumps({"z": seed_to_z(99, 128)})
    r = drive(url + "?ep=wasm&seed=21", steps=[
        {"read": "start"},
        {"click": "fixnoise", "wait": False}, {"click": "random"}, {"read": "fixed"},
        {"fill": ["amount", "0.3"]}, {"click": "perturb"}, {"read": "perturbed"},
        {"click": "noise-export", "wait": False}, {"eval": "exported", "expr": "document.getElementById('noise-text').value"},
        {"fill": ["noise-text", imported]}, {"click": "noise-import"}, {"read": "imported"},
        {"fill": ["noise-text", '{"z": [1, 2]}']}, {"click": "noise-import", "wait": False},
        {"eval": "refused", "expr": "document.getElementById('status').textContent"},
    ])
    assert r["reads"]["refused"] == "Error: noise: 2 values, the model takes 128"
    assert r["errors"] == []
    start, fixed, pert, imp = (r["reads"][k]["character"] for k in ("start", "fixed", "perturbed", "imported"))
    assert start["z"] == seed_to_z(21, 128)
    assert fixed["seed"] != 21 and fixed["z"] == start["z"]  # Random with the noise fixed: new tags, same noise
    cos = np.dot(pert["z"], fixed["z"]) / np.linalg.norm(pert["z"]) / np.linalg.norm(fixed["z"])
    assert abs(cos - math.sqrt(1 - 0.3 ** 2)) < 0.1 and pert["noiseSeed"] is None  # moved by 30%
    assert json.loads(r["reads"]["exported"])["z"] == pert["z"]
    assert imp["z"] == seed_to_z(99, 128)
    assert_same_image(rgb(r["reads"]["imported"]["pixels"]), render(model, [imp["z"]], [imp["tags"]])[0])
    # the link carries the noise: the same link gives the same pixels
    q = urllib.parse.parse_qs(urllib.parse.urlsplit(r["reads"]["perturbed"]["url"]).query)
    assert "noise" in q
    again = drive(r["reads"]["perturbed"]["url"], steps=[{"read": "c"}])
    assert again["reads"]["c"]["character"]["z"] == pert["z"]
    assert np.array_equal(rgb(again["pixels"]), rgb(r["reads"]["perturbed"]["pixels"]))


def test_transition_runs_from_one_character_to_the_other(site):
    url, model = site
    r = drive(url + "?ep=wasm", seed=1, tags=["blonde_hair", "long_hair", "blue_eyes"], steps=[
        {"read": "a"}, {"click": "set-a", "wait": False},
        {"set": {"on": ["red_hair", "twintails", "red_eyes"], "off": ["long_hair"]}}, {"seed": 2}, {"read": "b"},
        {"click": "set-b", "wait": False}, {"fill": ["frames", "5"]},
        {"click": "make-transition", "wait": "transition"}, {"frames": "frames"},
        {"download": "save-sheet", "as": "sheet"}])
    a, b = r["reads"]["a"]["character"], r["reads"]["b"]["character"]
    frames = [rgb(f) for f in r["reads"]["frames"]]
    assert len(frames) == 5
    assert_same_image(frames[0], rgb(r["reads"]["a"]["pixels"]))
    assert_same_image(frames[-1], rgb(r["reads"]["b"]["pixels"]))
    mid = render(model, [slerp(a["z"], b["z"], 0.5)], [[(x + y) / 2 for x, y in zip(a["tags"], b["tags"])]])[0]
    assert_same_image(frames[2], mid)
    assert np.abs(frames[2].astype(int) - frames[0]).mean() > 1 and np.abs(frames[2].astype(int) - frames[4]).mean() > 1
    sheet = Image.open(io.BytesIO(base64.b64decode(r["reads"]["sheet"]["png"])))
    assert sheet.size == (32 * 3, 32 * 2) and r["reads"]["sheet"]["name"].endswith("-5f.png")


def test_history_favourites_and_downloads(site):
    """History and favourites survive a reload and clear in one click; PNG downloads at model size and x4."""
    url, model = site
    count = "[+document.getElementById('history').dataset.count, +document.getElementById('favourites').dataset.count]"
    r = drive(url + "?ep=wasm&seed=3", steps=[
        {"seed": 4}, {"click": "favourite", "wait": False}, {"seed": 5}, {"eval": "before", "expr": count},
        {"reload": True}, {"eval": "after", "expr": count},
        {"click": "clear-history", "wait": False}, {"eval": "cleared", "expr": count},
        {"click": "clear-favourites", "wait": False}, {"reload": True}, {"eval": "reloaded", "expr": count},
        {"eval": "restore", "expr": "document.querySelector('#history img').dataset.query"},
        {"set": {"on": ["blue_hair", "twintails", "green_eyes"], "off": TRAINED[:1] + TRAINED[2:]}}, {"seed": 8},
        {"download": "png", "as": "small"}, {"download": "png-large", "as": "large"}])
    assert r["reads"]["before"] == [3, 1]
    assert r["reads"]["after"] == [3, 1]  # the reload shows seed 5 again: it moves to the front, no duplicate
    assert r["reads"]["cleared"] == [0, 1] and r["reads"]["reloaded"] == [1, 0]
    assert "seed=5" in r["reads"]["restore"]
    small, large = r["reads"]["small"], r["reads"]["large"]
    assert small["name"] == "moeflow-8-blue_hair+twintails+green_eyes.png"
    assert large["name"] == "moeflow-8-blue_hair+twintails+green_eyes-x4.png"
    img = np.asarray(Image.open(io.BytesIO(base64.b64decode(small["png"]))).convert("RGB"))
    assert_same_image(img, reference(model, [8], ["blue_hair", "twintails", "green_eyes"])[0])
    assert Image.open(io.BytesIO(base64.b64decode(large["png"]))).size == (128, 128)


def test_shared_url_reproduces_the_character(site):
    url, model = site
    on, off = ["silver_hair", "short_hair", "red_eyes"], ["long_hair", "twintails", "blush", "open_mouth", "ribbon"]
    link = url + "?" + urllib.parse.urlencode({"ep": "wasm", "threads": 1, "seed": 7, "on": ",".join(on),
                                               "off": ",".join(off)})
    r = drive(link)  # (the same link twice, same pixels: test_noise_fixed_perturbed_exported_and_imported)
    assert r["errors"] == []
    assert_same_image(rgb(r["pixels"]), reference(model, [7], ["silver_hair", "red_eyes"])[0])


def test_webgpu_backend_draws_the_same_image(site):
    """The WebGPU path (on the CPU, through SwiftShader: this checks correctness, not speed)."""
    url, model = site
    r = drive(url + "?ep=webgpu", seed=SEED, tags=TAGS, webgpu=True)
    assert r["first"]["backend"] == "webgpu" and r["errors"] == []
    assert_same_image(rgb(r["pixels"]), reference(model, [SEED], TAGS)[0])


def test_no_backend_is_a_clear_message(site):
    url, _ = site
    r = drive(url, no_wasm=True, expect_error=True)
    assert r["status"].startswith("Error: This browser can run neither WebGPU nor WebAssembly")
