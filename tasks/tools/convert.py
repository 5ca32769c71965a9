"""Convert a published Illustration2Vec `.caffemodel` to safetensors, once; load the result.

    python -m tasks.tools.convert tag --caffemodel models/i2v/illust2vec_tag_ver200.caffemodel \\
        --tags models/i2v/tag_list.json.gz --out models/i2v/illust2vec_tag.safetensors
    python -m tasks.tools.convert feature --caffemodel models/i2v/illust2vec_ver200.caffemodel \\
        --out models/i2v/illust2vec.safetensors

The safetensors file holds the tensors plus, in its string metadata, the layer list
(`moeflow.layers`), the kind, the output blob, the mean and the source file's sha256, so
loading needs neither the caffemodel nor any pickle. `tag` also writes `tag_list.json`
(the 1,539 names, uncompressed) next to the output. models.illust2vec.load_converted loads it."""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from models.caffemodel import read_caffemodel
from models.illust2vec import (
    FEATURE_OUTPUT,
    FORMAT,
    MEAN_BGR,
    TAG_OUTPUT,
    Illust2Vec,
    layer_specs,
    specs_json,
    state_dict_from,
)
from tasks.fileio import atomic_path, atomic_write_text, sha256_file

log = logging.getLogger(__name__)


def read_tag_list(path: str | Path) -> list[str]:
    """tag_list.json or tag_list.json.gz: a JSON list of tag names."""
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    tags = json.loads(raw.decode("utf-8"))
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise ValueError(f"{path}: expected a JSON list of tag names")
    return tags


def convert(caffemodel: str | Path, out: str | Path, kind: str = "tag", output: str | None = None,
            tags: str | Path | None = None, tag_list_out: str | Path | None = None) -> dict:
    """caffemodel → safetensors (+ tag_list.json). Returns the metadata written."""
    caffemodel, out = Path(caffemodel), Path(out)
    output = output or (TAG_OUTPUT if kind == "tag" else FEATURE_OUTPUT)
    net = read_caffemodel(caffemodel)
    specs = layer_specs(net)
    model = Illust2Vec(specs, kind=kind, output=output)
    state = state_dict_from(net, model.net)
    missing = set(model.net.state_dict()) - set(state)
    if missing:
        raise ValueError(f"{caffemodel}: no blobs for {sorted(missing)}")
    model.net.load_state_dict(state)  # checks every shape
    n_out = None
    if kind == "tag":
        last = [s for s in model.net.specs if s["type"] in ("Convolution", "InnerProduct")][-1]
        n_out = last["params"]["num_output"]
    meta = {"format": FORMAT, "kind": kind, "output": output, "layers": specs_json(model.net.specs),
            "mean_bgr": json.dumps(list(MEAN_BGR)), "source": caffemodel.name, "source_sha256": sha256_file(caffemodel)}
    if tags is not None:
        names = read_tag_list(tags)
        if n_out is not None and len(names) != n_out:
            raise ValueError(f"{tags}: {len(names)} tag names, but {output} has {n_out} outputs")
        dest = Path(tag_list_out) if tag_list_out else out.parent / "tag_list.json"
        atomic_write_text(dest, json.dumps(names, ensure_ascii=False))
        meta["num_tags"] = str(len(names))
    tensors = {k: v.contiguous() for k, v in state.items()}
    with atomic_path(out) as tmp:
        save_file(tensors, tmp, metadata={f"moeflow.{k}": v for k, v in meta.items()})
    log.info("converted %s (%s, %d layers) -> %s", caffemodel, kind, len(model.net.specs), out)
    return meta


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tasks.tools.convert", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("kind", choices=["tag", "feature"])
    ap.add_argument("--caffemodel", required=True)
    ap.add_argument("--out", required=True, help="the .safetensors to write")
    ap.add_argument("--output", default=None, help=f"output blob (default {TAG_OUTPUT} / {FEATURE_OUTPUT})")
    ap.add_argument("--tags", default=None, help="tag_list.json(.gz) of the tag model")
    ap.add_argument("--tag-list-out", default=None, help="where to write tag_list.json (default: beside --out)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        with torch.no_grad():
            convert(args.caffemodel, args.out, args.kind, args.output, args.tags, args.tag_list_out)
    except (OSError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
