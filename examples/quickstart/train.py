"""A small, real training script: logistic regression by gradient descent.

Pure Python (no numpy), deterministic. It reads its settings from config.json
and its data from ``--data DIR/blobs.csv`` (a run input; without it the same
data is generated here), logs loss and accuracy per epoch as run metrics
(``runyard.Run.get_context()``; outside runyard they are printed instead),
writes a line per epoch to stdout and ./logs/train.log, and writes the
trained model to ./outputs/model.json, the folders runyard keeps for a run,
and to ``--model-dir`` (a declared output) when given.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import random

import runyard


def make_data(n: int, seed: int) -> list[tuple[list[float], int]]:
    """Two Gaussian blobs in 2-D, labelled 0 and 1."""
    rng = random.Random(seed)
    data = []
    for i in range(n):
        label = i % 2
        cx, cy = (1.5, 1.0) if label else (-1.0, -1.5)
        data.append(([rng.gauss(cx, 1.0), rng.gauss(cy, 1.0)], label))
    rng.shuffle(data)
    return data


def read_data(path: str) -> list[tuple[list[float], int]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return [([float(r["x1"]), float(r["x2"])], int(r["label"])) for r in csv.DictReader(fh)]


def write_data(path: str, data: list[tuple[list[float], int]]) -> None:
    with open(path, "w", newline="", encoding="utf-8") as fh:
        out = csv.writer(fh)
        out.writerow(["x1", "x2", "label"])
        out.writerows([f"{x[0]:.6f}", f"{x[1]:.6f}", y] for x, y in data)


def sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z)) if z >= 0 else math.exp(z) / (1.0 + math.exp(z))


def main() -> int:
    with open("config.json", encoding="utf-8") as fh:
        cfg = json.load(fh)
    parser = argparse.ArgumentParser()
    parser.add_argument("epochs", nargs="?", type=int, default=int(cfg["epochs"]))
    parser.add_argument("--data", help="a folder with blobs.csv (a run input)")
    parser.add_argument("--model-dir", help="a folder to write the model to (a declared output)")
    args = parser.parse_args()
    epochs = args.epochs
    if args.data:
        data = read_data(os.path.join(args.data, "blobs.csv"))
        print(f"read {len(data)} samples from {args.data}")
    else:
        data = make_data(cfg["samples"], cfg["seed"])
    split = int(0.8 * len(data))
    train, test = data[:split], data[split:]
    run = runyard.Run.get_context()
    run.log("samples", len(data))
    w, b, lr = [0.0, 0.0], 0.0, cfg["learning_rate"]
    os.makedirs("outputs", exist_ok=True)
    os.makedirs("logs", exist_ok=True)
    with open("logs/train.log", "w", encoding="utf-8") as log:
        for epoch in range(1, epochs + 1):
            loss = 0.0
            for x, y in train:
                p = sigmoid(w[0] * x[0] + w[1] * x[1] + b)
                loss -= y * math.log(p + 1e-12) + (1 - y) * math.log(1 - p + 1e-12)
                g = p - y
                w[0] -= lr * g * x[0]
                w[1] -= lr * g * x[1]
                b -= lr * g
            acc = sum((sigmoid(w[0] * x[0] + w[1] * x[1] + b) > 0.5) == bool(y) for x, y in test) / len(test)
            run.log("loss", loss / len(train), step=epoch)
            run.log("accuracy", acc, step=epoch)
            line = f"epoch={epoch} loss={loss / len(train):.4f} accuracy={acc:.3f}"
            print(line, flush=True)
            log.write(line + "\n")
            log.flush()
    model = {"weights": w, "bias": b, "test_accuracy": acc}
    for folder in ["outputs", *([args.model_dir] if args.model_dir else [])]:
        with open(os.path.join(folder, "model.json"), "w", encoding="utf-8") as fh:
            json.dump(model, fh, indent=2)
        print(f"wrote {os.path.join(folder, 'model.json')} (test accuracy {acc:.3f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
