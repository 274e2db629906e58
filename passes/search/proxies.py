"""Training-free scores of an untrained student (higher is better for every proxy).

DisWOT (Dong, Li, Wei, CVPR 2023; formulas and released-code bugs: shared/reference/diswot.md):
- relation term M_r: row-normalised batch Gram matrices (B x B) of the pre-global-pool feature
  maps of teacher and student, compared row by row. Width-agnostic by construction.
- semantic term M_s: the class-conditional gradients of the classifier weights, g = dCE/dW_fc
  (K x C: row k is the Grad-CAM channel weighting of class k). The paper compares their C x C
  channel correlations, which needs equal teacher/student widths and compares channels by
  position (meaningless between different networks). Here each side's K x K class-relation
  Gram g g^T is compared instead: width-agnostic and invariant to channel order.
- Both terms are the mean squared distance between matching unit rows (= 2 - 2 mean cosine),
  so both lie in [0, 4] and add on one scale. The paper's M_r is ours / B; its unweighted sum
  is dominated by M_s by 100-1000x (diswot.md §1.4).
- Score = -(M_s + M_r). The teacher's Grams are computed once per search on one fixed batch
  (the released code accumulated the teacher gradient across candidates and changed batch per
  candidate); gradients are taken with autograd.grad, never read from weights.
- The semantic term uses the temperature-softened CE (T = the distillation temperature, 4): a
  trained teacher is ~100% confident on held-out digits (mean L1 |p - y| = 0.02 at T = 1 vs
  0.59 at T = 4), so at T = 1 its class gradients come from a handful of uncertain samples.

Baselines, at their reference settings (PyTorch default init, not DisWOT's N(0,1) re-init):
NWOT (NASWOT v2 hamming kernel, log|det K|), SynFlow (log of the sum; float64, |weights|,
all-ones input, BN in eval = identity for fresh networks), SNIP, grad-norm, ZiCo and MeCo
(zero_cost.py), params, MACs.
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from squeeze.measure.analysis import count_macs, count_params
from squeeze.errors import UserInputError
from squeeze.passes.search import zero_cost

DISWOT_PROXIES = ("diswot", "diswot-semantic", "diswot-relation")
PROXIES = (*DISWOT_PROXIES, "nwot", "synflow", "snip", "grad-norm", "zico", "meco", "params", "macs")
NEEDS_LOGITS = ("diswot", "diswot-semantic", "snip", "grad-norm", "zico")  # CE on class logits [B, C]
NEEDS_TEACHER = DISWOT_PROXIES
NEEDS_DATA = ("diswot", "diswot-semantic", "diswot-relation", "nwot", "snip", "grad-norm", "zico", "meco")
TEACHER_INITS = ("trained", "random")
_GLOBAL_POOLS = (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)


def check_proxy(name: str) -> str:
    if name not in PROXIES:
        raise UserInputError(f"unknown proxy {name!r}; choose from {', '.join(PROXIES)}")
    return name


@contextlib.contextmanager
def deterministic() -> Iterator[None]:
    """Deterministic kernels for the block (scores must not depend on scheduling), then the previous setting."""
    previous, warn_only = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(previous, warn_only=warn_only)


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Score on one intra-op thread, then restore. Batch-64 passes of small students gain nothing from
    more, and on a busy machine two spinning OpenMP threads made each score 10-20x slower (431 vs 18 ms)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


class _PreGapTap:
    """Captures the last 4-D activation that is not a global pool's output: the map before global pooling.

    Hooks fire when a module finishes, so after a forward pass the last 4-D output recorded is the
    outermost module producing the final feature map (e.g. the last stage), found without names.
    """

    def __init__(self, module: nn.Module):
        self.value: torch.Tensor | None = None
        self._hooks = [m.register_forward_hook(self._hook) for name, m in module.named_modules()
                       if name and not isinstance(m, _GLOBAL_POOLS)]

    def _hook(self, _m: nn.Module, _inp: Any, out: Any) -> None:
        if isinstance(out, torch.Tensor) and out.ndim == 4:
            self.value = out

    def close(self) -> None:
        for h in self._hooks:
            h.remove()


def classifier(module: nn.Module) -> nn.Linear:
    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise UserInputError(f"DisWOT's semantic term needs a final nn.Linear classifier; {type(module).__name__} has none")
    return linears[-1]


def _row_unit_gram(features: torch.Tensor) -> torch.Tensor:
    f = features.flatten(1).double()
    return F.normalize(f @ f.t(), p=2, dim=1)


def _row_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean squared distance between matching rows of two row-normalised matrices (in [0, 4])."""
    return float((a - b).pow(2).sum() / a.shape[0])


def _class_gradients(module: nn.Module, x: torch.Tensor, y: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dCE/dW_fc [K, C], pooled features [B, C], pre-global-pool features) from one forward pass.

    The body runs without autograd; only the classifier is re-applied with gradients, so the cost
    is one forward pass. autograd.grad returns a fresh gradient: nothing accumulates in .grad.
    """
    fc = classifier(module)
    captured: dict[str, torch.Tensor] = {}
    pre = fc.register_forward_pre_hook(lambda _m, inp: captured.__setitem__("h", inp[0]))
    tap = _PreGapTap(module)
    try:
        with torch.no_grad():
            module(x)
    finally:
        pre.remove()
        tap.close()
    if tap.value is None:
        raise UserInputError(f"{type(module).__name__} produces no 4-D feature map; DisWOT's relation term needs a CNN")
    h = captured["h"].detach()
    weight = fc.weight.detach().requires_grad_(True)
    logits = F.linear(h, weight, None if fc.bias is None else fc.bias.detach())
    loss = F.cross_entropy(logits / temperature, y)
    (grad,) = torch.autograd.grad(loss, weight)
    return grad.detach(), h, tap.value.detach()


@dataclass
class TeacherReference:
    """The teacher's side of DisWOT on the fixed batch, computed once per search."""

    semantic: torch.Tensor  # K x K row-normalised class-relation Gram of dCE/dW_fc
    relation: torch.Tensor  # B x B row-normalised batch Gram of the pre-pool feature map
    init: str
    temperature: float
    relation_pooled: torch.Tensor | None = None  # the same Gram on the pooled embedding (the NB201 scripts' choice)


def random_teacher(teacher: nn.Module, seed: int) -> nn.Module:
    """The teacher's architecture with fresh PyTorch-default weights (the paper's random-init teacher)."""
    module = copy.deepcopy(teacher)
    torch.manual_seed(seed)
    reset = 0
    for m in module.modules():
        if hasattr(m, "reset_parameters"):
            m.reset_parameters()
            reset += 1
    if reset == 0:
        raise UserInputError("--teacher-init random needs the teacher as an nn.Module with layers (a squeeze checkpoint or state_dict + --arch)")
    return module


def teacher_form_problem(teacher: nn.Module, init: str = "trained") -> str | None:
    """Why DisWOT cannot use this teacher's form (checked before any work), else None."""
    if isinstance(teacher, torch.jit.ScriptModule):
        return ("DisWOT cannot tap a TorchScript teacher's layers: use its .pt2 (torch.export), a squeeze checkpoint or "
                "state_dict + --arch, or --proxy params")
    if isinstance(teacher, torch.fx.GraphModule) and init == "random":
        return ("--teacher-init random needs the teacher as an nn.Module with layers (a squeeze checkpoint or state_dict + --arch), "
                "not a .pt2 graph")
    return None


def teacher_reference(teacher: nn.Module, x: torch.Tensor, y: torch.Tensor, init: str = "trained", seed: int = 0,
                      temperature: float = 4.0) -> TeacherReference:
    if init not in TEACHER_INITS:
        raise UserInputError(f"--teacher-init must be one of {', '.join(TEACHER_INITS)}, got {init!r}")
    problem = teacher_form_problem(teacher, init)
    if problem:
        raise UserInputError(problem)
    if isinstance(teacher, torch.fx.GraphModule):  # a .pt2: its graph is read node by node (_graph_class_gradients)
        with deterministic():
            grad, pooled, feats = _graph_class_gradients(teacher, x, y, temperature)
        return TeacherReference(_row_unit_gram(grad), _row_unit_gram(feats), init, temperature, _row_unit_gram(pooled))
    if not list(teacher.named_modules())[1:]:
        raise UserInputError("DisWOT needs the teacher's layers: a squeeze checkpoint, state_dict + --arch, or a .pt2")
    module = random_teacher(teacher, seed) if init == "random" else teacher
    # A trained teacher runs as it will during distillation (running BN statistics); a random one
    # has no statistics yet, so it uses batch statistics like the fresh students do.
    return reference_from(module, x, y, temperature, batch_statistics=init == "random", init=init)


def reference_from(module: nn.Module, x: torch.Tensor, y: torch.Tensor, temperature: float, batch_statistics: bool,
                   init: str = "trained") -> TeacherReference:
    """The teacher side of DisWOT for an already-initialised teacher module."""
    was_training = module.training
    module.train(batch_statistics)
    try:
        with deterministic():
            grad, pooled, feats = _class_gradients(module, x, y, temperature)
    finally:
        module.train(was_training)
    return TeacherReference(_row_unit_gram(grad), _row_unit_gram(feats), init, temperature, _row_unit_gram(pooled))


# Graph ops whose 4-D output is a pooled map, not the feature map DisWOT's relation term compares.
_GRAPH_POOLS = ("adaptive_avg_pool2d", "adaptive_max_pool2d", "avg_pool2d", "max_pool2d", "mean", "amax")


def _graph_class_gradients(graph: torch.fx.GraphModule, x: torch.Tensor, y: torch.Tensor,
                           temperature: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """_class_gradients for a torch.export graph (a .pt2 teacher, whose mode was fixed at export: running BN
    statistics). The classifier is the last aten.linear node; its input, weight and bias and the last 4-D
    activation that is not a pooling op's are read while the graph runs node by node."""
    linears = [n for n in graph.graph.nodes if n.op == "call_function" and getattr(n.target, "__name__", "").startswith("linear")]
    if not linears:
        raise UserInputError("DisWOT's semantic term needs a final linear classifier; the .pt2 graph has no aten.linear node")
    fc = linears[-1]
    wanted = {fc.args[0]: "h", fc.args[1]: "weight", **({fc.args[2]: "bias"} if len(fc.args) > 2 and fc.args[2] is not None else {})}
    values: dict[str, torch.Tensor] = {}

    class Reader(torch.fx.Interpreter):
        def run_node(self, node: torch.fx.Node) -> Any:
            out = super().run_node(node)
            if node in wanted:
                values[wanted[node]] = out
            op = getattr(node.target, "__name__", "").split(".")[0] if node.op == "call_function" else ""
            if isinstance(out, torch.Tensor) and out.ndim == 4 and op and op not in _GRAPH_POOLS and "h" not in values:
                values["feats"] = out
            return out

    with torch.no_grad():
        Reader(graph).run(x)
    if "feats" not in values:
        raise UserInputError("the .pt2 graph produces no 4-D feature map before its classifier; DisWOT's relation term needs a CNN")
    h = values["h"].detach()
    weight = values["weight"].detach().clone().requires_grad_(True)
    logits = F.linear(h, weight, values["bias"].detach() if "bias" in values else None)
    (grad,) = torch.autograd.grad(F.cross_entropy(logits / temperature, y), weight)
    return grad.detach(), h, values["feats"].detach()


def diswot_terms(student: nn.Module, x: torch.Tensor, y: torch.Tensor, ref: TeacherReference) -> dict[str, float]:
    """{'semantic': M_s, 'relation': M_r} distances (lower = more similar to the teacher), plus
    'relation_pooled' (M_r on the pooled embedding; reported, not scored)."""
    student.train()  # fresh network: batch statistics, as in the paper
    grad, pooled, feats = _class_gradients(student, x, y, ref.temperature)
    terms = {"semantic": _row_distance(_row_unit_gram(grad), ref.semantic), "relation": _row_distance(_row_unit_gram(feats), ref.relation)}
    if ref.relation_pooled is not None:
        terms["relation_pooled"] = _row_distance(_row_unit_gram(pooled), ref.relation_pooled)
    return terms


def gaussian_init(module: nn.Module) -> nn.Module:
    """The released DisWOT code's init (from Zen-NAS): conv/linear weights N(0, 1), biases 0, BN gamma 1, beta 0."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                m.weight.normal_(0.0, 1.0)
                if m.bias is not None:
                    m.bias.zero_()
            elif isinstance(m, nn.BatchNorm2d) and m.affine:
                m.weight.fill_(1.0)
                m.bias.zero_()
    return module


def _weights(module: nn.Module) -> list[torch.Tensor]:
    return [m.weight for m in module.modules() if isinstance(m, (nn.Conv2d, nn.Conv1d, nn.Linear)) and m.weight.requires_grad]


def nwot(student: nn.Module, x: torch.Tensor) -> float:
    """NASWOT (Mellor et al. v2): log|det K|, K = sum over ReLUs of the hamming-similarity of binary activation codes."""
    n = x.shape[0]
    kernel = torch.zeros(n, n, dtype=torch.float64)

    def hook(_m: nn.Module, _inp: Any, out: torch.Tensor) -> None:
        codes = (out.detach().flatten(1) > 0).double()
        kernel.add_(codes @ codes.t() + (1 - codes) @ (1 - codes).t())

    hooks = [m.register_forward_hook(hook) for m in student.modules() if isinstance(m, (nn.ReLU, nn.ReLU6))]
    if not hooks:
        raise UserInputError(f"NWOT needs nn.ReLU modules; {type(student).__name__} has none")
    student.train()
    try:
        with torch.no_grad():
            student(x)
    finally:
        for h in hooks:
            h.remove()
    return float(torch.linalg.slogdet(kernel)[1])


def synflow(student: nn.Module, input_shape: tuple[int, ...]) -> float:
    """log of sum |theta * dR/dtheta|, R = sum of outputs for an all-ones input through |weights| (float64, no data)."""
    model = copy.deepcopy(student).double().eval()  # fresh BN in eval (mean 0, var 1) is the identity: BN disabled, as in the paper
    with torch.no_grad():
        for p in model.parameters():
            p.abs_()
    weights = _weights(model)
    out = model(torch.ones((1, *input_shape[1:]), dtype=torch.float64))
    grads = torch.autograd.grad(out.sum(), weights)
    total = sum(float((w.detach() * g).abs().sum()) for w, g in zip(weights, grads))
    del model
    return math.log(total) if total > 0 else float("-inf")


def _ce_gradients(student: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    student.train()
    weights = _weights(student)
    loss = F.cross_entropy(student(x), y)
    return weights, list(torch.autograd.grad(loss, weights))


def snip(student: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """SNIP saliency summed over layers: sum |theta * dL/dtheta|."""
    weights, grads = _ce_gradients(student, x, y)
    return float(sum((w.detach() * g).abs().sum() for w, g in zip(weights, grads)))


def grad_norm(student: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Sum over layers of ||dL/dW||_2 (Abdelfattah et al.)."""
    _, grads = _ce_gradients(student, x, y)
    return float(sum(g.norm() for g in grads))


@dataclass
class ProxyInputs:
    """Everything a proxy reads besides the student: one fixed batch and the teacher's cached side."""

    x: torch.Tensor
    y: torch.Tensor
    input_shape: tuple[int, ...]  # with batch 1, for MACs and SynFlow
    reference: TeacherReference | None = None


def score(name: str, student: nn.Module, inputs: ProxyInputs) -> tuple[float, dict[str, float]]:
    """(score, terms) for one proxy on a freshly initialised student; higher score is better."""
    with deterministic(), one_thread():
        if name in DISWOT_PROXIES:
            if inputs.reference is None:
                raise UserInputError(f"proxy {name} needs the teacher's reference (computed by the search)")
            terms = diswot_terms(student, inputs.x, inputs.y, inputs.reference)
            value = {"diswot": terms["semantic"] + terms["relation"], "diswot-semantic": terms["semantic"],
                     "diswot-relation": terms["relation"]}[name]
            return -value, terms
        if name == "nwot":
            return nwot(student, inputs.x), {}
        if name == "synflow":
            return synflow(student, inputs.input_shape), {}
        if name == "snip":
            return snip(student, inputs.x, inputs.y), {}
        if name == "grad-norm":
            return grad_norm(student, inputs.x, inputs.y), {}
        if name == "zico":
            return zero_cost.zico(student, inputs.x, inputs.y), {}
        if name == "meco":
            return zero_cost.meco(student, inputs.x), {}
        if name == "params":
            return float(count_params(student)), {}
        if name == "macs":
            return float(count_macs(student, torch.zeros(inputs.input_shape))), {}
    raise UserInputError(f"unknown proxy {name!r}; choose from {', '.join(PROXIES)}")
