"""`jetson-*`: NVIDIA Jetson Orin modules. Engines are built and timed ON the device over SSH.

With `--device user@host` the runner: connects (host-key checking on), reads what the device is
(/proc/device-tree model + compatible SKU, L4T release, memory), reads and records the power mode
(`nvpmodel -q`) and clock state (`jetson_clocks --show`), sets `--power-mode` when sudo allows it,
probes trtexec (default /usr/src/tensorrt/bin/trtexec) for its TensorRT version, copies the ONNX
into a fresh work dir, builds the engine with a per-(device, TensorRT) timing cache kept in
~/.cache/squeeze on the device, measures it with version-correct flags, copies the engine and JSON
back and removes the work dir. Without a device it predicts (targets/predictor.py), labelled as
such, and prints the exact on-device commands.

Module figures: NVIDIA's Jetson Orin module data sheets - Jetson Orin Nano Series (DS-11105-001),
Jetson Orin NX Series (DS-10712-001), Jetson AGX Orin Series (DS-10662-001) and the AGX Orin
technical brief (16 SMs, 64 tensor cores -> 170 sparse INT8 TOPS from the GPU) - and the JetPack
6.2 "Super" announcement (Dec 2024: Orin Nano GPU 625 -> 1020 MHz, 68 -> 102 GB/s; NX GPU 918/765 ->
1173 MHz). The headline TOPS are SPARSE INT8 and include the DLAs (NX, AGX); the predictor uses
GPU-only DENSE peaks derived as tensor cores x clock x ops/clock (Ampere SM 8.7: 1024 INT8, 512 FP16,
256 TF32 ops per tensor core per clock), which reproduces the data sheets' GPU figures (Orin Nano
8GB: 20 dense / 40 sparse INT8 TOPS). Not re-checked against the PDFs from this network.
"""

from __future__ import annotations

import contextlib
import json
import re
import shlex
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from squeeze.io.artifacts import OnnxArtifact
from squeeze.errors import TargetUnavailableError, UserInputError
from squeeze.io.fsutil import sha256_file, write_json_atomic
from squeeze.targets.remote.transport import DeviceAddress, DiskFullError, RemoteCommandError, RemoteError, RemoteHost, SshOptions, parse_df_available, quote
from squeeze.targets.base import Availability, EngineArtifact, LatencyStats, ProfileSpec, TargetBase, TargetOptions
from squeeze.targets.predictor import predict_stats, raw_prediction_ms, record_measurement
from squeeze.targets.engine import engine_input_spec, manifest_path, new_manifest, read_manifest, refuse_mismatch
from squeeze.targets.tensorrt import ENGINE_SUFFIXES
from squeeze.targets.trtexec import (DEFAULT_TRTEXEC, TENSORRT_QUANT_RULES, EngineBuildOptions, TrtexecSession, TrtexecTiming, check_precision, onnx_companion_files, onnx_has_qdq, parse_trtexec_log, stats_from_trtexec,
                                     trtexec_build_args, trtexec_profile_args)


from squeeze.targets.jetson_modules import (  # noqa: F401 - the module table and parsers, re-exported
    JetsonModule,
    MODULES,
    JETSON_PROFILES,
    ALIAS,
    DEFAULT_MODULE,
    DEFAULT_TRT_FOR_COMMANDS,
    detect_module,
    jetpack_from_l4t,
    parse_tegra_release,
    parse_nvpmodel_query,
    parse_nvpmodel_conf,
    parse_clocks,
)


@dataclass(frozen=True)
class JetsonConfig:
    """Where things are on the device; defaults are JetPack's. Tests point them at a fake device."""

    power_mode: str | None = None  # name (MAXN, MAXN_SUPER, 15W, ...) or id; None: leave as is and record it
    trtexec: str = DEFAULT_TRTEXEC
    device_tree: str = "/proc/device-tree"
    release_file: str = "/etc/nv_tegra_release"
    nvpmodel: str = "/usr/sbin/nvpmodel"  # absolute: a non-interactive SSH session's PATH has no /usr/sbin
    nvpmodel_conf: str = "/etc/nvpmodel.conf"
    jetson_clocks: str = "/usr/bin/jetson_clocks"
    sudo: str = "sudo -n"  # never prompts: a password-protected sudo fails fast and we say so
    work_base: str = "/tmp"
    cache_dir: str | None = None  # None: $HOME/.cache/squeeze on the device
    min_free_mb: int = 64
    build: EngineBuildOptions = field(default_factory=EngineBuildOptions)
    timing: TrtexecTiming = field(default_factory=TrtexecTiming)
    build_timeout_s: float = 1800.0  # an engine build on an Orin Nano can take many minutes
    calibration_file: str | None = None  # predictor's store; None: its default
    ssh: SshOptions = field(default_factory=SshOptions)

    def __post_init__(self) -> None:
        if self.min_free_mb < 0 or self.build_timeout_s <= 0:
            raise UserInputError("--min-free-mb must be >= 0 and the build timeout > 0")


class JetsonTarget(TargetBase):
    quant_rules = TENSORRT_QUANT_RULES
    channel_multiple = 16

    def __init__(self, name: str = DEFAULT_MODULE, device: str | None = None, config: JetsonConfig | None = None):
        if name != ALIAS and name not in MODULES:
            raise UserInputError(f"unknown Jetson target {name!r}; known: {', '.join([ALIAS, *MODULES])}")
        self.requested = name
        self.name = name
        self.device = DeviceAddress.parse(device) if device else None
        self.config = config or JetsonConfig()
        self.module = MODULES[name if name != ALIAS else DEFAULT_MODULE]
        self.description = (f"NVIDIA Jetson {self.module.module} (SM {self.module.sm}), TensorRT on the device over SSH"
                            if name != ALIAS else "any Jetson Orin: the module is detected on --device (Orin Nano 8GB without one)")

    engine_suffixes = ENGINE_SUFFIXES

    @classmethod
    def from_options(cls, name: str, options: TargetOptions) -> JetsonTarget:
        options.refuse(name, ("remote_python",), "--remote-python is for ssh:// targets; Jetson targets run trtexec")
        ssh = options.ssh_options()
        config = JetsonConfig(power_mode=options.power_mode, build=EngineBuildOptions(precision=options.precision or "strongly-typed"),
                              **({"ssh": ssh} if ssh else {}), **({"trtexec": options.trtexec} if options.trtexec else {}))
        return cls(name, options.device, config)

    def can_predict(self) -> bool:
        return True  # the roofline predictor knows every Orin module

    # -- availability & prediction ------------------------------------------------------

    def available(self) -> Availability:
        details = {"module": self.module.module, "sm": self.module.sm, "int8_sparse_tops": self.module.int8_sparse_tops,
                   "int8_sparse_tops_super": self.module.int8_sparse_tops_super, "memory_bandwidth_gbs": self.module.bandwidth_gbs,
                   "dla_cores": self.module.dla_cores, "software": self.module.default_software}
        if self.device is None:
            assumed = " (assuming Orin Nano 8GB for --target jetson)" if self.requested == ALIAS else ""
            return Availability(False, f"no --device user@host: offline prediction only{assumed}", details)
        return Availability(True, f"will build and measure on {self.device} with {self.config.trtexec}", details)

    def preflight(self) -> None:
        """One connection before any work: an unreachable --device fails in seconds, not after the teacher's export."""
        if self.device is not None:
            RemoteHost(self.device, self.config.ssh).connect().close()

    def _assumed_note(self) -> str | None:
        return "no --device: assumed Jetson Orin Nano 8GB for --target jetson" if self.requested == ALIAS and self.device is None else None

    def predict(self, art: OnnxArtifact, spec: ProfileSpec) -> LatencyStats:
        hw = self.module.hardware(self.config.power_mode)
        extra = {"on_device_commands": self.on_device_commands(art, spec),
                 "measure_with": f"squeeze profile {art.path} --target {self.module.key} --device user@jetson"}
        if self._assumed_note():
            extra["assumed"] = self._assumed_note()
        stats = predict_stats(self.module.key, art, spec, hw, self.config.build.precision, self.config.calibration_file,
                              match={"hardware": self.module.key, "precision": self.config.build.precision,
                                     "power_mode": self.config.power_mode}, extra=extra)
        stats.host.update({"module": self.module.module, "power_mode": self.config.power_mode or "unspecified (non-Super figures)"})
        return stats

    def on_device_commands(self, art: OnnxArtifact, spec: ProfileSpec) -> list[str]:
        """What to run on the device by hand (TensorRT 10.x / JetPack 6 flags) - or let squeeze do it with --device."""
        v = DEFAULT_TRT_FOR_COMMANDS
        trtexec = self.config.trtexec
        name = Path(art.path).name
        build = trtexec_build_args(v, name, "model.engine", art.input_spec, self.config.build, spec.batch_size, "timing.cache", None)
        prof = trtexec_profile_args(v, "model.engine", art.input_spec, spec.batch_size, spec.iterations, self.config.timing,
                                    "times.json", "profile.json")
        return [f"scp {art.path} user@jetson:", f"{trtexec} {quote(build)}", f"{trtexec} {quote(prof)}",
                f"# or from here: squeeze build {art.path} --target {self.module.key} --device user@jetson --out model.engine"]

    def build(self, onnx: OnnxArtifact, out: Path, batch: int = 1) -> EngineArtifact:
        if self.device is None:
            raise TargetUnavailableError(
                f"building a TensorRT engine for {self.name} needs the device: an engine only runs on the TensorRT version and GPU "
                f"that built it. Pass --device user@host, or run on the Jetson: {self.on_device_commands(onnx, ProfileSpec(batch_size=batch))[1]}")
        with self._session() as (host, facts, session):
            engine_remote = self._build_remote(host, facts, session, onnx, batch)
            with tempfile.TemporaryDirectory(prefix="squeeze-engine-", dir=out.resolve().parent) as tmp:
                staged = Path(tmp) / out.name
                host.get(engine_remote, staged)
                extra: dict[str, Any] = {"device": str(host), "build_log_tail": session.runs[-1].log.strip().splitlines()[-20:],
                                         "clocks": facts.get("clocks")}
                layer_info = Path(tmp) / "layers.json"
                try:
                    host.get(f"{session.workdir}/layers.json", layer_info)
                    extra["layer_info"] = json.loads(layer_info.read_text())
                except (RemoteCommandError, ValueError):
                    pass
                manifest = new_manifest(staged, onnx, facts, facts["target"], self.config.build, batch, quote(session.runs[-1].argv), extra)
                manifest["engine"] = out.name
                staged.replace(out)
                write_json_atomic(manifest_path(out), manifest)
        return EngineArtifact(out, sha256_file(out), manifest, self.name)

    def profile(self, art: OnnxArtifact | Path, spec: ProfileSpec) -> LatencyStats:
        """Measure an ONNX (built on the device first) or a squeeze-built engine (manifest checked first)."""
        if self.device is None:
            raise TargetUnavailableError(f"target {self.name} is unavailable here: {self.available().reason}")
        engine_manifest = read_manifest(Path(art)) if not isinstance(art, OnnxArtifact) else None
        if engine_manifest is not None:
            input_spec = engine_input_spec(engine_manifest, Path(art), spec.batch_size)
        else:
            input_spec = art.input_spec
            if not input_spec.dynamic_batch and spec.batch_size != input_spec.shape[0]:
                raise TargetUnavailableError(f"the model has a static batch of {input_spec.shape[0]}; cannot profile batch {spec.batch_size}")
        with self._session() as (host, facts, session):
            if engine_manifest is not None:
                engine = Path(art)
                refuse_mismatch(engine, engine_manifest, facts,
                                f"squeeze build {engine_manifest['onnx']} --target {facts['target']} --device {self.device} --out {engine}")
                engine_remote = f"{session.workdir}/{engine.name}"
                _check_space(host, facts, engine.stat().st_size + self.config.min_free_mb * 2**20, f"copying {engine.name}")
                host.put(engine, engine_remote)
            else:
                engine_remote = self._build_remote(host, facts, session, art, spec.batch_size)
            run, times_remote, profile_remote = session.profile(engine_remote, input_spec, spec.batch_size, spec.iterations,
                                                                self.config.timing, timeout_s=self.config.build_timeout_s)
            with tempfile.TemporaryDirectory(prefix="squeeze-jetson-") as tmp:
                host.get(times_remote, Path(tmp) / "times.json")
                host.get(profile_remote, Path(tmp) / "profile.json")
                times_text, profile_text = (Path(tmp) / "times.json").read_text(), (Path(tmp) / "profile.json").read_text()
        options: dict[str, Any] = {"build_command": quote(session.runs[0].argv) if engine_manifest is None else None,
                                   "profile_command": quote(run.argv), "trtexec": self.config.trtexec, "precision": self.config.build.precision,
                                   "connect_attempts": host.attempts}
        if engine_manifest is not None:
            options["engine"] = {"file": str(art), "built_utc": engine_manifest.get("built_utc")}
        if not (facts.get("clocks") or {}).get("locked"):
            options["clock_warning"] = "GPU clocks not locked (sudo jetson_clocks on the device gives stabler numbers)"
        stats = stats_from_trtexec(facts["target"], session.version, times_text, profile_text, run.log, spec,
                                   [spec.batch_size, *input_spec.shape[1:]], self.config.timing, options, _public_facts(facts))
        if isinstance(art, OnnxArtifact):
            stats.options["calibration_recorded"] = str(self._record(art, spec, facts, stats))
        return stats

    # -- the device session --------------------------------------------------------------

    @contextlib.contextmanager
    def _session(self) -> Iterator[tuple[RemoteHost, dict[str, Any], TrtexecSession]]:
        """Connected host, the device's facts, and a trtexec session in a fresh work dir that is always removed."""
        host = RemoteHost(self.device, self.config.ssh).connect()
        workdir = ""
        try:
            facts, sections = self._facts(host)
            workdir = facts.pop("workdir")
            session = TrtexecSession(host, self.config.trtexec, workdir)
            facts["tensorrt_version"] = str(session.probe(sections.get("trtexec", "")))
            self._apply_power_mode(host, facts)
            yield host, facts, session
        finally:
            try:
                if workdir:
                    host.remove_tree(workdir)
            except RemoteError:
                pass  # best effort: the error that got us here matters more than a leftover temp dir
            finally:
                host.close()

    def _facts(self, host: RemoteHost) -> tuple[dict[str, Any], dict[str, str]]:
        """Everything about the device in ONE remote command (each SSH exec costs a round trip and a shell)."""
        c = self.config
        q = shlex.quote
        cache = q(c.cache_dir) if c.cache_dir else '"$HOME/.cache/squeeze"'
        script = "; ".join([
            f"echo '##model'; cat {q(c.device_tree + '/model')} 2>/dev/null | tr '\\0' '\\n'",
            f"echo '##compatible'; cat {q(c.device_tree + '/compatible')} 2>/dev/null | tr '\\0' '\\n'",
            f"echo '##release'; head -1 {q(c.release_file)} 2>/dev/null",
            "echo '##meminfo'; head -1 /proc/meminfo",
            f"echo '##nvpmodel'; {c.nvpmodel} -q 2>&1 || {c.sudo} {c.nvpmodel} -q 2>&1",
            f"echo '##clocks'; {c.sudo} {c.jetson_clocks} --show 2>&1 | head -40",
            f"echo '##cache'; mkdir -p {cache} && echo {cache}",
            f"echo '##workdir'; mktemp -d {q(c.work_base.rstrip('/') + '/squeeze.XXXXXX')}",
            f"echo '##df'; df -Pk {q(c.work_base)}",
            f"echo '##trtexec'; {TrtexecSession(host, c.trtexec, '').probe_command()}",
        ])
        sections = _sections(host.run(script, check=False, what="reading the device's facts").stdout)
        workdir = sections.get("workdir", "").strip()
        if not workdir:
            raise RemoteCommandError(f"could not create a work directory under {c.work_base} on {host}")
        model = sections.get("model", "").strip().splitlines()[0] if sections.get("model", "").strip() else ""
        compatible = [s for s in sections.get("compatible", "").split() if s]
        mem = re.search(r"MemTotal:\s+(\d+)", sections.get("meminfo", ""))
        detected = detect_module(model, compatible, int(mem.group(1)) if mem else None)
        try:
            if detected is None:
                raise TargetUnavailableError(f"{host} does not look like a Jetson Orin: {c.device_tree}/model is "
                                             f"{model or 'missing'!r}. Use --target ssh://{self.device} for a plain CPU board")
            if self.requested != ALIAS and detected != self.requested:
                raise UserInputError(f"{host} is a Jetson {MODULES[detected].module} ({model}), not the {self.module.module} that "
                                     f"--target {self.requested} asks for: use --target {detected} (or --target jetson to detect it)")
        except UserInputError:
            host.remove_tree(workdir)
            raise
        self.module = MODULES[detected]
        l4t = parse_tegra_release(sections.get("release"))
        facts = {
            "target": detected, "module": self.module.module, "model": model, "compatible": compatible, "l4t": l4t,
            "jetpack": jetpack_from_l4t(l4t), "memory_total_kb": int(mem.group(1)) if mem else None, "sm": self.module.sm,
            "gpu": None,  # trtexec's "Selected Device" (filled in by the build)
            "power_mode": parse_nvpmodel_query(sections.get("nvpmodel")), "nvpmodel_q": sections.get("nvpmodel", "").strip()[-400:],
            "clocks": parse_clocks(sections.get("clocks")), "jetson_clocks_show": sections.get("clocks", "").strip()[-2000:],
            "cache_dir": sections.get("cache", "").strip() or None, "device": str(host), "workdir": workdir,
            "free_bytes": parse_df_available(sections.get("df", "")), "work_base": c.work_base,
        }
        return facts, sections

    def _apply_power_mode(self, host: RemoteHost, facts: dict[str, Any]) -> None:
        want = self.config.power_mode
        if not want:
            return
        c = self.config
        modes = parse_nvpmodel_conf(host.read_text(c.nvpmodel_conf))
        if want.isdigit():
            ident = int(want)
        else:
            ident = next((i for i, n in modes.items() if n.upper() == want.upper()), None)
        if ident is None or (modes and ident not in modes):
            listed = ", ".join(f"{i}={n}" for i, n in sorted(modes.items())) or f"none found in {c.nvpmodel_conf}"
            raise UserInputError(f"power mode {want!r} is not defined on {host}; its modes: {listed}")
        current = facts.get("power_mode") or {}
        if current.get("id") == ident:
            return
        # set and read back in one round trip; stdin closed so a reboot prompt cannot hang
        result = host.run(f"{c.sudo} {c.nvpmodel} -m {ident} < /dev/null 2>&1; code=$?; echo '##query'; "
                          f"{c.nvpmodel} -q 2>&1 || {c.sudo} {c.nvpmodel} -q 2>&1; exit $code", check=False, what=f"nvpmodel -m {ident}")
        text = result.stdout.split("##query")[0]
        if "reboot" in text.lower():
            raise RemoteCommandError(f"switching {host} to power mode {modes.get(ident, ident)} needs a reboot: run "
                                     f"'sudo nvpmodel -m {ident}' on the device, reboot, then re-run")
        if result.returncode != 0:
            why = "sudo needs a password there" if "password" in text else text.strip().splitlines()[-1] if text.strip() else f"exit {result.returncode}"
            raise RemoteCommandError(f"cannot set power mode {modes.get(ident, want)} on {host} ({why}): set it on the device "
                                     f"(sudo nvpmodel -m {ident}) or allow passwordless sudo for nvpmodel, then re-run")
        now = parse_nvpmodel_query(result.stdout.split("##query")[-1])
        if not now or now.get("id") != ident:
            raise RemoteCommandError(f"nvpmodel -m {ident} ran on {host} but the power mode reads {now}: not measuring in an unknown mode")
        facts["power_mode_before"] = facts.get("power_mode")
        facts["power_mode"] = now

    def _build_remote(self, host: RemoteHost, facts: dict[str, Any], session: TrtexecSession, onnx: OnnxArtifact, batch: int) -> str:
        c = self.config
        check_precision(session.version, c.build.precision, onnx_has_qdq(onnx.path))
        files = [Path(onnx.path), *onnx_companion_files(Path(onnx.path))]
        size = sum(f.stat().st_size for f in files)
        # the ONNX, an engine of about the same size, and the builder's scratch files
        _check_space(host, facts, 3 * size + c.min_free_mb * 2**20, f"building an engine from {Path(onnx.path).name}")
        for f in files:
            host.put(f, f"{session.workdir}/{'model.onnx' if f == Path(onnx.path) else f.name}")
        # one timing cache per (device, TensorRT version): it is only valid there (deploy.md §1.3)
        cache = f"{facts['cache_dir']}/timing-{facts['target']}-trt{session.version}.cache" if facts.get("cache_dir") else None
        engine = f"{session.workdir}/model.engine"
        run = session.build(f"{session.workdir}/model.onnx", engine, onnx.input_spec, c.build, batch, cache, timeout_s=c.build_timeout_s)
        parsed = parse_trtexec_log(run.log)
        facts["gpu"] = parsed.get("gpu") or facts.get("gpu")
        if parsed.get("sm"):
            facts["sm"] = parsed["sm"]
        facts["timing_cache"] = cache
        return engine

    def _record(self, art: OnnxArtifact, spec: ProfileSpec, facts: dict[str, Any], stats: LatencyStats) -> Path:
        """Store measured vs raw-predicted so later predictions for this module are calibrated."""
        power = (facts.get("power_mode") or {}).get("name")
        raw = raw_prediction_ms(art, spec.batch_size, self.module.hardware(power), self.config.build.precision)
        return record_measurement({"hardware": facts["target"], "precision": self.config.build.precision, "power_mode": power},
                                  art.sha256, spec.batch_size, raw, stats.p50_ms,
                                  {"tensorrt": str(stats.runtime_version), "device": facts.get("device"), "l4t": facts.get("l4t")},
                                  self.config.calibration_file)


def _check_space(host: RemoteHost, facts: dict[str, Any], needed: int, what: str) -> None:
    free = facts.get("free_bytes")
    if free is not None and free < needed:
        raise DiskFullError(f"disk full on {host}: {what} needs about {needed / 1e6:.1f} MB in {facts.get('work_base', 'the work dir')}, "
                            f"only {free / 1e6:.1f} MB free")


def _sections(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    current = None
    for line in text.splitlines():
        if line.startswith("##"):
            current = line[2:].strip()
            out[current] = ""
        elif current:
            out[current] += line + "\n"
    return out


def _public_facts(facts: dict[str, Any]) -> dict[str, Any]:
    keep = ("device", "target", "module", "model", "compatible", "l4t", "jetpack", "tensorrt_version", "gpu", "sm", "memory_total_kb",
            "power_mode", "power_mode_before", "clocks", "nvpmodel_q", "jetson_clocks_show", "timing_cache")
    return {k: facts.get(k) for k in keep if k in facts}
