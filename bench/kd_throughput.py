"""KD training throughput on this CPU: what makes a distillation epoch faster.

    python bench/kd_throughput.py [--data cifar10-mini] [--steps 20] [--student-width 12 --student-depth 14] [--teacher PATH]

One KD step = teacher forward (no grad) + student forward/backward + SGD step, on real images
with the dataset's augmentation. Variants run interleaved (A B C ... then again) so machine
noise hits them alike; the table gives images/s (median over rounds) and the ratio to the
baseline. Data loading is timed alone too: if it is far above the training rate, moving it off
the training thread cannot help.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from squeeze import zoo  # noqa: E402
from squeeze.io.augment import apply_augment, default_augment  # noqa: E402
from squeeze.io.data import load_data, split_tensors  # noqa: E402
from squeeze.train.losses import kd_loss  # noqa: E402
from squeeze.io.modelio import load_model  # noqa: E402
from squeeze.train.precision import native_bf16  # noqa: E402

TEACHER = Path(__file__).resolve().parent.parent / "samples" / "teachers" / "airbench_cifar.pt"


def make_step(teacher, student, batch, channels_last, compiled, bf16=False):
    if channels_last:
        teacher, student = teacher.to(memory_format=torch.channels_last), student.to(memory_format=torch.channels_last)
    t_fn = torch.compile(teacher) if compiled else teacher
    s_fn = torch.compile(student) if compiled else student
    opt = torch.optim.SGD(student.parameters(), lr=0.05, momentum=0.9)

    def step(x, y):
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            with torch.no_grad():
                t_logits = t_fn(x).float()
            logits = s_fn(x).float()
        loss = 0.9 * kd_loss(logits, t_logits, 4.0) + 0.1 * F.cross_entropy(logits, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="cifar10-mini")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--student-depth", type=int, default=14)
    parser.add_argument("--student-width", type=int, default=12)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--teacher", type=Path, default=TEACHER)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = load_data(args.data)
    x_all, y_all = split_tensors(data, "train")
    teacher = load_model(args.teacher).module.eval()
    augment = default_augment(data.name)
    gen = torch.Generator().manual_seed(0)

    started = time.perf_counter()
    seen = 0
    for x, _ in data.loader("train", batch_size=128, shuffle=True, seed=0):
        seen += len(apply_augment(augment, x, gen))
        if seen >= 4096:
            break
    print(f"data loading + {augment} augmentation alone: {seen / (time.perf_counter() - started):.0f} images/s")

    variants = {}
    for name, batch, cl, comp, bf16 in (("baseline (batch 128)", 128, False, False, False), ("batch 256", 256, False, False, False),
                                        ("channels-last", 128, True, False, False), ("torch.compile", 128, False, True, False),
                                        ("bf16 autocast", 128, False, False, True), ("bf16 + compile", 128, False, True, True)):
        if bf16 and not native_bf16():
            print(f"{name}: skipped (no native bf16 on this CPU)")
            continue
        torch.manual_seed(0)
        student = zoo.cifar_resnet(3, 10, depth=args.student_depth, width=args.student_width)
        t0 = time.perf_counter()
        step = make_step(copy.deepcopy(teacher), student, batch, cl, comp, bf16)
        x, y = apply_augment(augment, x_all[:batch], gen), y_all[:batch]
        step(x, y)  # warm-up (and compilation)
        variants[name] = {"step": step, "batch": batch, "setup_s": time.perf_counter() - t0, "rates": []}
    for _ in range(args.rounds):
        for v in variants.values():
            perm = torch.randperm(len(x_all), generator=gen)
            t0 = time.perf_counter()
            for s in range(args.steps):
                idx = perm[(s * v["batch"]) % (len(x_all) - v["batch"]):][: v["batch"]]
                v["step"](apply_augment(augment, x_all[idx], gen), y_all[idx])
            v["rates"].append(args.steps * v["batch"] / (time.perf_counter() - t0))
    base = statistics.median(next(iter(variants.values()))["rates"])
    print(f"\nKD step throughput, student ResNet-{args.student_depth} width {args.student_width}, teacher {args.teacher.name}, "
          f"{args.threads} threads, {args.rounds} interleaved rounds of {args.steps} steps")
    print(f"{'variant':<24}{'images/s':>10}{'vs base':>9}{'setup s':>9}")
    for name, v in variants.items():
        rate = statistics.median(v["rates"])
        print(f"{name:<24}{rate:>10.0f}{rate / base:>8.2f}x{v['setup_s']:>9.1f}")


if __name__ == "__main__":
    main()
