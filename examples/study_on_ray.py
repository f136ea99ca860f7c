"""A study across models and devices on a local two-node Ray cluster, one cross report.

    python examples/study_on_ray.py                          # SmolLM2-135M + a tiny model
    python examples/study_on_ray.py --models tiny --tokens 4 --out /tmp/study

Two Ray nodes are started on this machine (``ray.cluster_utils.Cluster``), each carrying its
own device resource and one ``greenllm_meter`` unit, the way two Jetsons join a real cluster
(docs/devices.md). The recipe has 2 models x (baseline + 2 variants) x 2 devices: each model
and variant is compressed once here, travels to the nodes as a greenllm checkpoint, and every
cell's results come back to this process, the only writer of the store. Both "devices" are
this CPU, so they carry the ``cpu`` profile: the point is the mechanics, not a comparison of
two boards. Needs the ``ray`` extra.
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

SMOLLM2 = "HuggingFaceTB/SmolLM2-135M-Instruct"


def _tiny_model(root: Path, seed: int) -> str:
    from greenllm.testing import tiny_model_and_tokenizer

    path = root / f"tiny{seed}"
    if not (path / "config.json").exists():
        model, tok = tiny_model_and_tokenizer(seed)
        model.save_pretrained(path)
        tok.save_pretrained(path)
    return str(path)


def study_recipe(models: list[dict], tokens: int, repeats: int) -> dict:
    return {
        "schema_version": 1,
        "name": "study-on-ray",
        "models": models,
        "variants": {
            "int8": [{"quantize": {"method": "int8_weight"}}],
            "mag30": [{"prune": {"method": "magnitude", "sparsity": 0.3}}],
        },
        "evals": [{"perplexity": {"data": "builtin:wiki-sample", "limit": 2, "max_length": 64}}],
        "workload": {
            "prompts": ["The capital of France is", "Energy is measured in"],
            "max_new_tokens": tokens,
            "warmup": 1,
            "repeats": repeats,
            "min_window_s": 0.2,
        },
        "meters": ["estimate"],
        "measure": {"on_disturbance": "flag"},
        "carbon": {"region": "FRA"},
        "devices": [
            {"name": "node-a", "profile": "cpu", "via": "ray:node-a"},
            {"name": "node-b", "profile": "cpu", "via": "ray:node-b"},
        ],
    }


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="smollm2,tiny", help="smollm2,tiny or tiny (two tiny)")
    ap.add_argument("--out", default="out/study-on-ray")
    ap.add_argument("--tokens", type=int, default=8, help="new tokens per request")
    ap.add_argument("--repeats", type=int, default=2, help="rounds per device")
    args = ap.parse_args(argv)

    import ray
    from ray.cluster_utils import Cluster

    import greenllm

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    names = args.models.split(",")
    models = []
    for i, n in enumerate(names if len(names) > 1 else names * 2):
        if n == "smollm2":
            models.append({"name": "smollm2", "id": SMOLLM2})
        else:
            models.append({"name": f"tiny{i}", "id": _tiny_model(out / "models", i)})
    recipe = study_recipe(models, args.tokens, args.repeats)
    (out / "study.yaml").write_text(json.dumps(recipe, indent=2))

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    nodes = {
        name: cluster.add_node(num_cpus=1, resources={name: 1, "greenllm_meter": 1})
        for name in ("node-a", "node-b")
    }
    ray.init(address=cluster.address, log_to_driver=False)
    try:
        # the nodes share this file system: artifacts go by path (--shared-out)
        summary = greenllm.run(out / "study.yaml", out, cluster="ray", shared_out=True)
    finally:
        ray.shutdown()
        cluster.shutdown()
    with open(out / "study.csv", newline="") as f:
        cells = list(csv.DictReader(f))
    print((out / "report.md").read_text().split("## Across devices and models")[1][:2500])
    return {
        "status": summary.status,
        "cells": cells,
        "report": str(out / "report.md"),
        "nodes": {k: v.node_id for k, v in nodes.items()},
    }


if __name__ == "__main__":
    main()
