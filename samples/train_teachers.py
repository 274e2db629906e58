"""Re-create the bundled sample teachers, deterministically, on this CPU.

    python samples/train_teachers.py                 # train all, then package
    python samples/train_teachers.py --only resnet_mnist
    python samples/train_teachers.py --package-only  # re-write .pt/.pt2 files from the trained weights
    SQUEEZE_DATA=/path/to/data python samples/train_teachers.py --only resnet20_cifar   # resumable per epoch

Each teacher is trained on the *train* split of its dataset (squeeze's default split, seed 0) and
its accuracy is measured once, at the end, on the held-out *eval* split (no model selection on it).
Datasets with a given split (CIFAR-10) train on the official train set minus the calibration
split and are measured once on the official test set. Their training saves its state after every
epoch (samples/teachers/.work/<name>.state/): re-running the same command resumes.
Outputs in samples/teachers/: <name>.pt (squeeze checkpoint: safe to load, rebuilds the nn.Module),
<name>.pt2 (torch.export program, dynamic batch) and teachers.json (accuracy, MACs, params, recipe).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from squeeze import zoo  # noqa: E402
from squeeze.io.augment import random_shift  # noqa: E402
from squeeze.io.data import SplitConfig, load_data  # noqa: E402

OUT = ROOT / "samples" / "teachers"
WORK = OUT / ".work"  # raw trained weights (ignored by git); packaging reads them


@dataclass(frozen=True)
class Recipe:
    name: str
    factory: str  # zoo function name
    dataset: str
    epochs: int
    batch_size: int = 128
    lr: float = 0.1
    weight_decay: float = 5e-4
    max_shift: int = 2  # random translation augmentation, in pixels
    seed: int = 0
    # given-split datasets (CIFAR): one-cycle LR, batch augmentation by name, optional torch.compile
    schedule: str = "cosine"  # cosine (one warm-up epoch) | onecycle
    augment: str = "shift"
    label_smoothing: float = 0.0
    compile: bool = False
    # further one-cycle phases (epochs, peak lr), each from the weights the one before left: a restart trains an
    # under-fitted model on (SGDR-style) instead of starting again
    restarts: tuple[tuple[int, float], ...] = ()
    autocast: str = "none"  # bf16: mixed precision where the CPU has native bf16 (the airbench schedule)
    cutout: int = 0  # side of the square zeroed in each training image (the airbench schedule)

    def phases(self) -> list[tuple[int, float]]:
        return [(self.epochs, self.lr), *self.restarts]


RECIPES = {
    r.name: r
    for r in (
        Recipe("resnet_mnist", "resnet_teacher", "mnist", epochs=12),
        Recipe("mobilenetv2_mnist", "mobilenetv2_teacher", "mnist", epochs=10),
        Recipe("resnet_digits", "resnet_teacher", "digits", epochs=40, batch_size=64, max_shift=1),
        # No label smoothing: it makes teachers worse distillers (Mueller et al., 2019), and KD is
        # what this teacher is for. One-cycle, about 62 s an epoch compiled on 2 quiet threads. 50 epochs
        # left it under-fitted (train loss 0.25, 87.8 % on the test set), a second cycle of 40 reached 88.45 %
        # (train loss 0.14), a third of 70 at 0.08 only 88.54 % (train loss 0.08): restarts are exhausted.
        Recipe("resnet20_cifar", "resnet20_cifar", "cifar10", epochs=50, lr=0.2, schedule="onecycle", augment="crop-flip", compile=True,
               restarts=((40, 0.1), (70, 0.08))),
        # samples/fast_cifar.py: lr and weight decay in airbench's decoupled form (per 1024 examples). Test-set
        # accuracy of the earlier schedules (each read once, at its end): 15 epochs with flip + 2-px translation
        # 89.36 %, 30 epochs 89.89 % (train loss 0.05: over-fitted), hence 4-px translation + 12-px cutout
        Recipe("airbench_cifar", "airbench_cifar", "cifar10", epochs=40, batch_size=1024, lr=11.5, weight_decay=0.0153,
               max_shift=4, schedule="airbench", augment="crop-flip", compile=True, autocast="bf16", cutout=12),
    )
}


@torch.no_grad()
def accuracy(model: torch.nn.Module, loader) -> float:
    model.eval()
    correct = total = 0
    for x, y in loader:
        correct += int((model(x).argmax(1) == y).sum())
        total += len(y)
    return correct / total


def train(recipe: Recipe, warm_start: bool = False) -> dict:
    if recipe.schedule == "onecycle":
        return train_resumable(recipe, warm_start)
    if recipe.schedule == "airbench":
        return train_airbench(recipe)
    torch.manual_seed(recipe.seed)
    data = load_data(recipe.dataset, SplitConfig(seed=0))
    model = getattr(zoo, recipe.factory)(in_channels=data.sample_shape[0], num_classes=data.num_classes)
    loader = data.loader("train", batch_size=recipe.batch_size, shuffle=True, seed=recipe.seed)
    steps = recipe.epochs * len(loader)
    warmup = len(loader)  # one epoch of linear warm-up, then cosine
    opt = torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=0.9, nesterov=True, weight_decay=recipe.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warmup if s < warmup else 0.5 * (1 + math.cos(math.pi * (s - warmup) / (steps - warmup)))
    )
    aug = torch.Generator().manual_seed(recipe.seed + 1)
    start = time.time()
    for epoch in range(recipe.epochs):
        model.train()
        running = 0.0
        for x, y in loader:
            loss = F.cross_entropy(model(random_shift(x, recipe.max_shift, aug)), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            running += loss.item()
        print(f"[{recipe.name}] epoch {epoch + 1}/{recipe.epochs} loss {running / len(loader):.4f} ({time.time() - start:.0f}s)", flush=True)
    eval_acc = accuracy(model, data.loader("eval"))
    print(f"[{recipe.name}] held-out eval accuracy {eval_acc:.4f} on {len(data.eval)} images", flush=True)
    WORK.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), WORK / f"{recipe.name}.state.pt")
    result = {"eval_accuracy": eval_acc, "train_seconds": round(time.time() - start, 1), "threads": torch.get_num_threads()}
    (WORK / f"{recipe.name}.result.json").write_text(json.dumps(result))
    return result


def _onecycle(step: int, total: int, warm_fraction: float = 0.15) -> float:
    """Linear warm-up to the peak over the first 15 % of steps, then linear decay to zero."""
    warm = max(1, int(total * warm_fraction))
    return (step + 1) / warm if step < warm else max(0.0, (total - step) / (total - warm))


def _phase_of(phases: list[tuple[int, float]], epoch: int) -> tuple[int, float, int]:
    """(epochs, peak lr, first epoch) of the phase a global epoch index falls in."""
    first = 0
    for n, lr in phases:
        if epoch < first + n:
            return n, lr, first
        first += n
    raise ValueError(f"epoch {epoch} is past the last phase")


def _warm_start(recipe: Recipe, model: torch.nn.Module) -> tuple[int, float]:
    """Seed the remaining restarts from the packaged teacher when it is this recipe's first k phases,
    finished: the lost per-epoch state then costs only the optimiser's momentum, not those phases' hours."""
    from squeeze.io.modelio import load_model

    entry = json.loads((OUT / "teachers.json").read_text()).get(recipe.name, {})
    recorded = dict(entry.get("recipe") or {})  # no entry: nothing matches, so it refuses below
    done = [(recorded.pop("epochs", None), recorded.pop("lr", None)), *(tuple(p) for p in recorded.pop("restarts", []))]
    ours = {k: v for k, v in asdict(recipe).items() if k not in ("epochs", "lr", "restarts")}
    phases = recipe.phases()
    if recorded != ours or len(done) >= len(phases) or phases[: len(done)] != done:
        raise SystemExit(f"[{recipe.name}] --warm-start needs the packaged teacher to be this recipe's first phases, finished")
    model.load_state_dict(load_model(OUT / f"{recipe.name}.pt").module.state_dict())
    epochs = sum(n for n, _ in done)
    print(f"[{recipe.name}] warm start from the packaged first {len(done)} phase(s) ({epochs} epochs, eval {entry['eval_accuracy']:.4f})", flush=True)
    return epochs, float(entry["train_seconds"])


def train_resumable(recipe: Recipe, warm_start: bool = False) -> dict:
    """In-memory batches (no DataLoader), an epoch's order and augmentation seeded by the epoch
    number, and the whole state saved atomically after each epoch, so a killed run resumes."""
    from squeeze.io.augment import apply_augment
    from squeeze.io.data import split_tensors
    from squeeze.io.fsutil import atomic_path

    data = load_data(recipe.dataset, SplitConfig(seed=0))
    x_train, y_train = split_tensors(data, "train")
    model = getattr(zoo, recipe.factory)(in_channels=data.sample_shape[0], num_classes=data.num_classes)
    opt = torch.optim.SGD(model.parameters(), lr=recipe.lr, momentum=0.9, nesterov=True, weight_decay=recipe.weight_decay)
    per_epoch = len(x_train) // recipe.batch_size
    phases = recipe.phases()
    epochs = sum(n for n, _ in phases)
    state_path = WORK / f"{recipe.name}.state.ckpt"
    start_epoch, elapsed, warmed = 0, 0.0, False
    if state_path.exists():
        state = torch.load(state_path, weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        start_epoch, elapsed, warmed = state["epoch"], state["elapsed"], state.get("warm_start", False)
        print(f"[{recipe.name}] resuming after epoch {start_epoch}", flush=True)
    elif warm_start:
        start_epoch, elapsed = _warm_start(recipe, model)
        warmed = True
    step_model = torch.compile(model) if recipe.compile else model
    for epoch in range(start_epoch, epochs):
        phase_epochs, peak, first = _phase_of(phases, epoch)
        began = time.time()
        model.train()
        gen = torch.Generator().manual_seed(recipe.seed * 100_003 + epoch)
        order = torch.randperm(len(x_train), generator=gen)
        running = 0.0
        for b in range(per_epoch):
            idx = order[b * recipe.batch_size : (b + 1) * recipe.batch_size]
            x = apply_augment(recipe.augment, x_train[idx], gen)
            loss = F.cross_entropy(step_model(x), y_train[idx], label_smoothing=recipe.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            for group in opt.param_groups:  # the phase's one-cycle, by step within the phase
                group["lr"] = peak * _onecycle((epoch - first) * per_epoch + b, phase_epochs * per_epoch)
            opt.step()
            running += loss.item()
        elapsed += time.time() - began
        cal = accuracy(model, data.loader("calibration"))  # progress only; the eval split is read once, at the end
        WORK.mkdir(parents=True, exist_ok=True)
        with atomic_path(state_path) as tmp:
            torch.save({"model": model.state_dict(), "opt": opt.state_dict(), "epoch": epoch + 1, "elapsed": elapsed,
                        "warm_start": warmed}, tmp)
        rate = per_epoch * recipe.batch_size / max(time.time() - began, 1e-9)
        print(f"[{recipe.name}] epoch {epoch + 1}/{epochs} loss {running / per_epoch:.4f} cal acc {cal:.4f} "
              f"{rate:.0f} img/s ({elapsed:.0f}s)", flush=True)
    return _finish(recipe, model, data, {"train_seconds": round(elapsed, 1), "threads": torch.get_num_threads(), "warm_start": warmed})


def train_airbench(recipe: Recipe) -> dict:
    import fast_cifar
    from squeeze.io.data import split_tensors

    data = load_data(recipe.dataset, SplitConfig(seed=0))
    model = getattr(zoo, recipe.factory)(in_channels=data.sample_shape[0], num_classes=data.num_classes)
    WORK.mkdir(parents=True, exist_ok=True)
    figures = fast_cifar.train(recipe, model, split_tensors(data, "train"), split_tensors(data, "calibration"),
                               WORK / f"{recipe.name}.state.ckpt")
    return _finish(recipe, model, data, figures)


def _finish(recipe: Recipe, model: torch.nn.Module, data, figures: dict) -> dict:
    """Measure the held-out eval split once, and keep the weights and figures for packaging."""
    eval_acc = accuracy(model, data.loader("eval"))
    print(f"[{recipe.name}] held-out eval accuracy {eval_acc:.4f} on {len(data.eval)} images", flush=True)
    torch.save(model.state_dict(), WORK / f"{recipe.name}.state.pt")
    result = {"eval_accuracy": eval_acc, **figures}
    (WORK / f"{recipe.name}.result.json").write_text(json.dumps(result))
    return result


def package(recipe: Recipe) -> dict:
    from squeeze.measure.analysis import count_macs, count_params
    from squeeze.io.artifacts import InputSpec
    from squeeze.io.modelio import save_checkpoint, save_exported_program

    data = load_data(recipe.dataset, SplitConfig(seed=0))
    kwargs = {"in_channels": data.sample_shape[0], "num_classes": data.num_classes}
    model = getattr(zoo, recipe.factory)(**kwargs)
    model.load_state_dict(torch.load(WORK / f"{recipe.name}.state.pt", weights_only=True))
    model.eval()
    result = json.loads((WORK / f"{recipe.name}.result.json").read_text())
    spec = InputSpec(shape=(1, *data.sample_shape), normalization=data.normalization)
    eval_acc = accuracy(model, data.loader("eval"))  # re-measured from the saved weights
    meta = {
        "dataset": recipe.dataset,
        "split": asdict(data.split),
        "eval_accuracy": eval_acc,
        "eval_samples": len(data.eval),
        "recipe": asdict(recipe),
        "train_seconds": result["train_seconds"],
        "train_threads": result["threads"],
        **({"autocast": result["autocast"]} if "autocast" in result else {}),
        # the restarts began from the packaged first phase, without its optimiser momentum
        **({"warm_start": True} if result.get("warm_start") else {}),
        "torch": torch.__version__,
    }
    save_checkpoint(model, OUT / f"{recipe.name}.pt", arch=f"squeeze.zoo:{recipe.factory}", arch_kwargs=kwargs, input_spec=spec, metadata=meta)
    save_exported_program(model, OUT / f"{recipe.name}.pt2", spec, metadata=meta)
    return {
        **meta,
        "params": count_params(model),
        "macs": count_macs(model, spec.example()),
        "files": [f"{recipe.name}.pt", f"{recipe.name}.pt2"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=sorted(RECIPES), action="append")
    parser.add_argument("--package-only", action="store_true")
    parser.add_argument("--warm-start", action="store_true", help="with no saved state, begin a recipe's restarts from its packaged first phase")
    parser.add_argument("--threads", type=int, default=2, help="fixed so re-runs reproduce bit-for-bit on the same machine")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    names = args.only or list(RECIPES)
    if not args.package_only:
        for name in names:
            train(RECIPES[name], args.warm_start)
    index_path = OUT / "teachers.json"
    index = json.loads(index_path.read_text()) if index_path.exists() else {}
    for name in names:
        index[name] = package(RECIPES[name])
        print(f"[{name}] packaged: eval accuracy {index[name]['eval_accuracy']:.4f}, {index[name]['macs'] / 1e6:.1f} MMACs, {index[name]['params']} params")
    index_path.write_text(json.dumps(dict(sorted(index.items())), indent=2) + "\n")


if __name__ == "__main__":
    main()
