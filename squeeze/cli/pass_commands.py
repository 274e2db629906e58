"""`squeeze distill|prune|quantize|search`: each is a one-step recipe through compress's runner, and
its options are generated from the pass's typed config (squeeze/cli/options.py). What a command adds
on top of its config (the student, a separate teacher, budgets written as text) is listed here."""

from __future__ import annotations

import contextlib
import inspect
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import typer

from squeeze.cli import render
from squeeze.cli.app import PASS_SUMMARIES, ArchOpt, DataOpt, JsonOpt, OutputOpt, ShapeOpt, TrustOpt, _emit_json, _progress, app, handled, stderr
from squeeze.cli.options import config_values, parameters, with_signature


@dataclass(frozen=True)
class PassCommand:
    name: str
    model_help: str
    summary: str  # the command's help text
    show: Callable[[dict[str, Any], Path], None]  # human output of the result
    extra: tuple[inspect.Parameter, ...] = ()  # options beyond the config
    skip: tuple[str, ...] = ()  # config fields the extras replace
    to_config: Callable[[dict[str, Any]], dict[str, Any]] = field(default=lambda extras: {})  # extras -> config values
    exit_code: Callable[[dict[str, Any]], int] = field(default=lambda result: 0)
    warning: Callable[[dict[str, Any], Path], str | None] = field(default=lambda result, out: None)  # on stderr, --json or not


def _opt(name: str, default: Any, *flags: str, annotation: Any = Optional[str], help: str = "") -> inspect.Parameter:
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=typer.Option(default, *flags, help=help), annotation=annotation)


def _prune_budget(extras: dict[str, Any]) -> dict[str, Any]:
    from squeeze.options import parse_latency_budget

    ms, ratio = parse_latency_budget(extras.get("latency_budget"))
    return {"latency_budget_ms": ms, "latency_budget_ratio": ratio}


def _search_budgets(extras: dict[str, Any]) -> dict[str, Any]:
    from squeeze.options import parse_count, parse_duration_ms

    return {"latency_budget_ms": parse_duration_ms(extras.get("latency_budget")),
            "params_budget": parse_count(extras.get("params_budget"), "--params-budget"),
            "macs_budget": parse_count(extras.get("macs_budget"), "--macs-budget")}


def _budget_warning(result: dict[str, Any], out: Path) -> str | None:
    if result.get("budget_met") is not False:
        return None
    lat = result["latency"]
    return (f"latency budget not met: reached {lat['pruned_ms']:.3f} ms ({lat['ratio']:.3f}x of the input), budget {result['budget_ms']:.3f} ms; "
            f"the best model reached is in {out}")


TEACHER = _opt("teacher", None, "--teacher", annotation=Optional[Path], help="the teacher for the distillation losses (default: the model itself)")
COMMANDS = (
    PassCommand("distill", "the trained teacher", PASS_SUMMARIES["distill"] + "\n\nExample: squeeze distill samples/teachers/resnet_mnist.pt --student student.json --data mnist --epochs 5 "
                "--loss kd+dist --out distill/", render.distill_result,
                extra=(_opt("student", ..., "--student", annotation=str, help="student spec JSON ({\"arch\": ..., \"kwargs\": {...}}) or pkg.mod:factory"),)),
    PassCommand("prune", "the float model to prune (squeeze checkpoint, or state_dict + --arch)", PASS_SUMMARIES["prune"] + "\n\nExample: squeeze prune samples/teachers/resnet_mnist.pt "
                "--data mnist --target cpu --latency-budget 0.5x --depth --out prune/", render.prune_result,
                extra=(TEACHER, _opt("latency_budget", None, "--latency-budget", help="median latency to reach, e.g. 1ms, or 0.5x of the input's")),
                skip=("latency_budget_ms", "latency_budget_ratio"), to_config=_prune_budget,
                exit_code=lambda result: 1 if result.get("budget_met") is False else 0, warning=_budget_warning),
    PassCommand("quantize", "the float model to quantize", PASS_SUMMARIES["quantize"] + "\n\nExample: squeeze quantize samples/teachers/resnet_mnist.pt --data mnist --target cpu --epochs 2 "
                "--out quant/ --json", render.quantize_result, extra=(TEACHER,)),
    PassCommand("search", "the trained teacher", PASS_SUMMARIES["search"] + "\n\nExample: squeeze search "
                "samples/teachers/resnet_mnist.pt --data mnist --target cpu --space resnet --latency-budget 0.3ms --out search/",
                render.search_result,
                extra=(_opt("latency_budget", None, "--latency-budget", help="e.g. 2ms or 500us: bounds the --latency-metric of every candidate"),
                       _opt("params_budget", None, "--params-budget", help="e.g. 200k"),
                       _opt("macs_budget", None, "--macs-budget", help="e.g. 5M (default: the teacher's MACs)")),
                skip=("latency_budget_ms", "params_budget", "macs_budget"), to_config=_search_budgets),
)


def register(spec: PassCommand) -> None:
    from squeeze.run.recipe import pass_class

    config_cls = pass_class(spec.name).Config

    def command(**kwargs: Any) -> None:
        from squeeze import api

        extras = {p.name: kwargs.pop(p.name) for p in spec.extra}
        values = {**config_values(config_cls, kwargs), **spec.to_config(extras)}
        as_json = kwargs["as_json"]
        live: Any = _progress(True) if as_json else _live(spec.name)
        with contextlib.nullcontext() if as_json else live:
            result = api.run_pass(spec.name, kwargs["model"], out=kwargs["out"], values=values, data=kwargs["data"],
                                  target=kwargs["target"], arch=kwargs["arch"], input_shape=kwargs["input_shape"],
                                  trust_pickle=kwargs["trust_pickle"], output=kwargs["output"], teacher=extras.get("teacher"),
                                  student=extras.get("student"),
                                  resume=kwargs["resume"], cache_dir=kwargs["cache_dir"], progress=live, command=sys.argv)
        if as_json:
            _emit_json({k: v for k, v in result.items() if k not in ("history", "structure", "ptq_activation_scales")})
        else:
            spec.show(result, Path(kwargs["out"]))
        warning = spec.warning(result, Path(kwargs["out"]))
        if warning:
            stderr.print(warning, highlight=False, soft_wrap=True)
        code = spec.exit_code(result)
        if code:
            raise typer.Exit(code)

    common = [
        inspect.Parameter("model", inspect.Parameter.POSITIONAL_OR_KEYWORD, default=typer.Argument(..., help=spec.model_help), annotation=Path),
        _opt("data", None, "--data", help=DataOpt.help),
        _opt("target", "cpu", "--target", "-t", annotation=str, help="see `squeeze targets`; latency is measured there (or predicted, and labelled so)"),
        _opt("out", Path(f"{spec.name}-out"), "--out", "-o", annotation=Path, help="output directory (created when complete; re-running resumes)"),
        _opt("arch", None, "--arch", help=ArchOpt.help),
        _opt("input_shape", None, "--input-shape", help=ShapeOpt.help),
        _opt("trust_pickle", False, "--trust-pickle", annotation=bool, help=TrustOpt.help),
        _opt("output", None, "--output", help=OutputOpt.help),
        _opt("as_json", False, "--json", annotation=bool, help=JsonOpt.help),
        _opt("resume", True, "--resume/--no-resume", annotation=bool, help="reuse a finished run of the same pass from the pass cache, "
             "resume an unfinished one"),
        _opt("cache_dir", None, "--cache-dir", annotation=Optional[Path], help="pass cache (default $SQUEEZE_CACHE_DIR or ~/.cache/squeeze/runs)"),
    ]
    command.__doc__ = spec.summary
    command.__name__ = spec.name
    fn = with_signature(command, [*common, *spec.extra, *parameters(config_cls, skip=spec.skip)])
    app.command(name=spec.name, help=spec.summary)(handled(fn))


def _live(name: str) -> Any:
    from squeeze.run.progress import PipelineProgress

    return PipelineProgress(stderr, [name])


for _spec in COMMANDS:
    register(_spec)
