#!/usr/bin/env python3
"""Median time of one MiLaN training step in PyTorch, for the side-by-side comparison with
`cargo bench --bench train_step` (docs/training.md, "Speed").

A port of the reference trainer's step (docs/method.md): dense 2048 -> 1024 -> 512 -> K
with LeakyReLU(0.2) and a sigmoid, rows L2-normalised, the batch in thirds (anchors, positives,
negatives), loss = triplet(margin 0.2) - 0.001 * push / K + 1 * balance (per code), Adam(1e-4,
0.5, 0.9), the reference's uniform initialisation. The same fixed batch as the Rust bench
(batch 90, input non-negative), so both time the same arithmetic.

    pip install torch numpy        # not needed by milan itself
    python3 benches/torch_step.py [THREADS] [STEPS]     # defaults: 2 threads, 200 timed steps
"""

import math
import sys
import time

import torch


def main() -> None:
    threads = int(sys.argv[1]) if len(sys.argv) > 1 else 2
    steps = int(sys.argv[2]) if len(sys.argv) > 2 else 200
    torch.set_num_threads(threads)
    torch.manual_seed(1)
    dim, batch, bits = 2048, 90, 64
    widths = [dim, 1024, 512, bits]
    layers = []
    for fan_in, fan_out in zip(widths, widths[1:]):
        layer = torch.nn.Linear(fan_in, fan_out)
        limit = math.sqrt(3.0) * math.sqrt(4.0 / (fan_in + fan_out))
        torch.nn.init.uniform_(layer.weight, -limit, limit)
        torch.nn.init.zeros_(layer.bias)
        layers.append(layer)
    params = [p for layer in layers for p in layer.parameters()]
    optimiser = torch.optim.Adam(params, lr=1e-4, betas=(0.5, 0.9), eps=1e-8)
    features = torch.rand(batch, dim) * 0.8
    third = batch // 3

    def step() -> float:
        x = features
        for i, layer in enumerate(layers):
            x = layer(x)
            x = torch.nn.functional.leaky_relu(x, 0.2) if i + 1 < len(layers) else torch.sigmoid(x)
        s = x
        e = s / s.norm(dim=1, keepdim=True)
        a, p, n = e[:third], e[third : 2 * third], e[2 * third :]
        triplet = torch.clamp(((a - p) ** 2).sum(1) - ((a - n) ** 2).sum(1) + 0.2, min=0).mean()
        push = ((s - 0.5) ** 2).sum(1).mean()
        balance = ((s.mean(1) - 0.5) ** 2).mean()
        loss = triplet - 0.001 * push / bits + 1.0 * balance
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        return float(loss.detach())

    times = []
    for i in range(steps + 20):
        start = time.perf_counter()
        step()
        if i >= 20:
            times.append(time.perf_counter() - start)
    times.sort()
    pick = lambda q: times[round((len(times) - 1) * q)] * 1e3
    print(
        f"torch {torch.__version__} threads {threads}, {steps} timed steps: "
        f"median {pick(0.5):.2f} ms (p10 {pick(0.1):.2f}, p90 {pick(0.9):.2f})"
    )


if __name__ == "__main__":
    main()
