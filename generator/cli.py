"""The `specstack` command line (also `python -m generator`)."""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path

EXIT_OK, EXIT_DRIFT, EXIT_INVALID, EXIT_FAILED = 0, 1, 2, 3


def _err(msg: str) -> None:
    print(msg, file=sys.stderr)


def cmd_validate(args: argparse.Namespace) -> int:
    from generator.pipeline.build_ir import build_ir
    from generator.pipeline.validate import load_and_validate

    spec_dir = Path(args.spec_dir)
    spec, diags = load_and_validate(spec_dir)
    if diags:
        for d in diags:
            _err(str(d))
        _err(f"{len(diags)} problem{'s' if len(diags) != 1 else ''} in {spec_dir}/")
        return EXIT_INVALID
    ir = build_ir(spec)
    ops = sum(len(a.operations) for a in ir.apis)
    steps = sum(len(s.steps) for s in ir.sequences)
    print(
        f"{spec_dir}/ is valid: {len(ir.components)} components, {ops} operations in "
        f"{len(ir.apis)} APIs, {len(ir.messages)} messages, {steps} steps in "
        f"{len(ir.sequences)} sequences"
    )
    return EXIT_OK


def cmd_generate(args: argparse.Namespace) -> int:
    from generator.pipeline import DEFAULT_TEMPLATES, generate

    started = time.perf_counter()
    out = Path(args.output)
    try:
        result = generate(
            Path(args.spec),
            out,
            templates=Path(args.templates) if args.templates else DEFAULT_TEMPLATES,
            check=args.check,
            force=args.force,
            spec_label=Path(args.spec).as_posix().rstrip("/") or ".",
        )
    except Exception as exc:
        from generator.pipeline.render.models import ModelGenerationError
        from generator.pipeline.render.plantuml import RenderError

        if not isinstance(exc, ModelGenerationError | RenderError | RuntimeError):
            raise
        # a tool failed on a valid spec (model generator, PlantUML, ruff)
        _err(f"generate failed: {exc}")
        _err(f"nothing written to {out}/")
        return EXIT_FAILED
    took = time.perf_counter() - started
    for w in result.warnings:
        _err(f"warning: {w}")
    if result.status == "invalid":
        for d in result.diagnostics:
            _err(str(d))
        _err(f"{len(result.diagnostics)} problem(s); nothing written to {out}/")
        return EXIT_INVALID
    if result.status == "drift":
        _err(f"{out}/ is out of date with {args.spec}/ ({len(result.drift)} files):")
        for line in result.drift:
            _err(f"  {line}")
        _err("run `specstack generate` and commit the result")
        return EXIT_DRIFT
    verb = {
        "clean": "is up to date",
        "unchanged": "is up to date; nothing to do",
        "written": "written",
    }[result.status]
    print(f"{out}/ {verb} ({result.files} files, {took:.2f} s)")
    return EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    from generator.commands.run import main as run_main

    return run_main(args)


def cmd_clouds(args: argparse.Namespace) -> int:
    from generator.commands.clouds import main as clouds_main

    return clouds_main(args.identity, Path(args.output), args.config)


def cmd_trace(args: argparse.Namespace) -> int:
    from generator.commands.trace import main as trace_main

    return trace_main(args.request_id, Path(args.data_dir), args.format)


def cmd_conform(args: argparse.Namespace) -> int:
    from generator.commands.conform import main as conform_main

    return conform_main(
        args.target,
        args.pytest_args,
        None if args.no_report else Path(args.report),
        cloud=args.cloud,
        admin_cloud=args.admin_cloud,
        timeout=args.timeout,
        osprofiler=args.osprofiler_trace,
    )


def cmd_diagram(args: argparse.Namespace) -> int:
    from generator.commands.diagram import main as diagram_main

    return diagram_main(args.sequence, args.format, args.diff, Path(args.data_dir))


def cmd_bench(args: argparse.Namespace) -> int:
    from generator.bench import run_bench

    if args.pairs and not args.baseline:
        _err("--pairs needs --baseline REV")
        return EXIT_INVALID
    try:
        if args.baseline:
            from generator.bench.baseline import side_by_side

            compared = side_by_side(
                args.baseline,
                pairs=args.pairs or 3,
                boots=args.boots,
                say=lambda m: print(m, file=sys.stderr, flush=True),
            )
            print(json.dumps(compared, indent=1))
            return 0
        if args.rounds:
            from generator.bench.stack import rss_rounds

            print(json.dumps(rss_rounds(args.rounds, args.boots), indent=1))
            return 0
        if args.profile:
            from generator.bench.profile import profile_figures

            figures = profile_figures(args.profile, top=args.top, profiled=not args.unprofiled)
            print(json.dumps(figures, indent=1))
            return 0
        return run_bench(
            as_json=args.json,
            runs=args.runs,
            boots=args.boots,
            stack=not args.generation_only,
            hosts=args.hosts,
            plot=args.plot,
        )
    except RuntimeError as exc:  # a measured run failed: say which and why
        _err(f"bench failed: {exc}")
        return EXIT_FAILED


def _host_counts(text: str) -> tuple[int, ...]:
    try:
        counts = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of host counts: {text!r}") from None
    if not counts or min(counts) < 1:
        raise argparse.ArgumentTypeError(f"host counts are at least 1: {text!r}")
    return counts


def _int(text: str) -> int:
    """The number (argparse's own message for a ValueError names the function)."""
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None


def _whole(text: str) -> int:
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is not a whole number at least 0")
    return value


def _port(text: str) -> int:
    value = _int(text)
    if not 1024 <= value <= 65000:
        raise argparse.ArgumentTypeError(f"{value} is not a port in 1024..65000")
    return value


def _positive(text: str) -> int:
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not a positive number")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"{text} is not a number of seconds at least 0")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="specstack",
        description="Validate the stack spec and render it into a runnable stack.",
    )
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    v = sub.add_parser("validate", help="check the spec and report every problem")
    v.add_argument("spec_dir", nargs="?", default="spec", help="spec directory (default: spec)")
    v.set_defaults(func=cmd_validate)

    g = sub.add_parser("generate", help="render the spec into generated/")
    g.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 and list files that differ, are missing or extra",
    )
    g.add_argument("--spec", default="spec", help="spec directory (default: spec)")
    g.add_argument("--output", default="generated", help="output directory (default: generated)")
    g.add_argument("--templates", default=None, help="templates directory (default: templates/)")
    g.add_argument("--force", action="store_true", help="render even if nothing changed")
    g.set_defaults(func=cmd_generate)

    r = sub.add_parser("run", help="regenerate, start the stack, seed it and boot a demo VM")
    r.add_argument(
        "--mode",
        choices=["embedded", "distributed"],
        default=None,
        help="embedded: one process (default); distributed: a process per component per node",
    )
    r.add_argument(
        "--config",
        default=None,
        metavar="FILE",
        help="TOML config file (default: $SPECSTACK_CONFIG, else ./specstack.toml if present)",
    )
    r.add_argument(
        "--once", action="store_true", help="exit after the demo boot: 0 if every step passed"
    )
    r.add_argument("--data-dir", default=None, help="state directory (default .specstack)")
    r.add_argument(
        "--port",
        type=_port,
        default=None,
        help="first API port; the APIs take N, N+1, ... (default: the spec's ports)",
    )
    r.add_argument(
        "--computes",
        type=_positive,
        default=None,
        help="number of compute nodes (default: the topology's count)",
    )
    r.add_argument("--driver", default=None, help="hypervisor driver (default: the topology's)")
    r.add_argument(
        "--driver-option",
        action="append",
        default=[],
        metavar="DRIVER.KEY=VALUE",
        help="keyword argument of a driver, e.g. libvirt.uri=qemu:///session (repeatable)",
    )
    r.add_argument(
        "--nodes",
        default=None,
        metavar="NODE[,NODE...]",
        help="distributed mode: start only these node instances' processes on this host "
        "(a topology node such as controller, or compute-1..compute-40), listening on "
        "host_address; no demo boot",
    )
    r.add_argument("--no-generate", action="store_true", help="use generated/ as it is")
    r.set_defaults(func=cmd_run)

    c = sub.add_parser("clouds", help="write a clouds.yaml for a running stack's identity API")
    c.add_argument(
        "--identity",
        required=True,
        metavar="URL",
        help="the identity API's URL, e.g. http://10.0.0.2:5000 (as the catalog has it)",
    )
    c.add_argument(
        "--config",
        default=None,
        metavar="FILE",
        help="TOML config file with the stack's passwords and region (as for run)",
    )
    c.add_argument(
        "--output",
        default="clouds.yaml",
        metavar="FILE",
        help="where to write it (default ./clouds.yaml; readable by its owner only)",
    )
    c.set_defaults(func=cmd_clouds)

    t = sub.add_parser("trace", help="print the observed steps of one flow")
    t.add_argument(
        "request_id",
        metavar="REQUEST_ID",
        help="the flow's id, or the x-openstack-request-id nova-api answered with",
    )
    t.add_argument(
        "--format",
        choices=["table", "json", "mermaid", "plantuml"],
        default="table",
        help="mermaid/plantuml: the observed sequence diagram, with the time each step took",
    )
    t.add_argument(
        "--data-dir",
        default=".specstack",
        help="the running stack's data directory (for its clouds.yaml)",
    )
    t.set_defaults(func=cmd_trace)

    k = sub.add_parser("conform", help="run the generated conformance suite")
    k.add_argument(
        "--target",
        default=None,
        help="identity URL of a running stack or cloud, as clients write it (`.../v3` or not); "
        "default: the --cloud's, else start an embedded stack",
    )
    k.add_argument(
        "--cloud",
        default=None,
        help="a cloud of clouds.yaml (OS_CLIENT_CONFIG_FILE, ./, ~/.config/openstack/, "
        "/etc/openstack/): the member user the suite tests as",
    )
    k.add_argument(
        "--admin-cloud",
        default=None,
        help="a cloud of clouds.yaml with an admin user; without it the tests that need an "
        "admin skip, saying so",
    )
    k.add_argument(
        "--timeout",
        type=_seconds,
        default=300.0,
        help="seconds one test may take before it fails (default 300; 0: no limit)",
    )
    k.add_argument(
        "--report",
        default=".specstack/conform-report.html",
        help="where to write the HTML report (default: .specstack/conform-report.html)",
    )
    k.add_argument(
        "--osprofiler-trace",
        action="append",
        default=[],
        metavar="SEQUENCE=FILE",
        help="check the steps of SEQUENCE in this OSProfiler trace of the target "
        "(`osprofiler trace show --json`) instead of running it (repeatable)",
    )
    k.add_argument("--no-report", action="store_true", help="write no HTML report")
    k.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    k.set_defaults(func=cmd_conform)

    d = sub.add_parser(
        "diagram",
        help="print a declared sequence diagram, or compare an observed flow with it (--diff)",
    )
    d.add_argument(
        "sequence",
        nargs="?",
        default="boot-vm",
        metavar="SEQUENCE",
        help="a sequence of the spec, or `topology` (default: boot-vm)",
    )
    d.add_argument("--format", choices=["mermaid", "plantuml"], default="mermaid")
    d.add_argument(
        "--diff",
        metavar="REQUEST_ID|TRACE.json",
        default=None,
        help="mark the steps of this observed flow (a request id of the stack, or the file "
        "`osprofiler trace show --json` wrote for any OpenStack cloud) that are missing, "
        "extra, out of order or not as declared; exit 1 if any",
    )
    d.add_argument(
        "--data-dir",
        default=".specstack",
        help="the stack's data directory (its clouds.yaml, or trace.sqlite when it is stopped)",
    )
    d.set_defaults(func=cmd_diagram)

    b = sub.add_parser(
        "bench", help="measure generation, the embedded and distributed stacks, and real guests"
    )
    b.add_argument("--json", action="store_true", help="print one JSON object of figures")
    b.add_argument(
        "--runs", type=_positive, default=5, help="generation runs per figure (default: 5)"
    )
    b.add_argument(
        "--boots",
        type=_positive,
        default=200,
        help="sequential boots for boot_p50_ms/boot_p95_ms (default: 200)",
    )
    b.add_argument(
        "--generation-only",
        action="store_true",
        help="measure generation only, not the running stack",
    )
    b.add_argument(
        "--hosts",
        type=_host_counts,
        default=(),
        help="only the scale sweep: start-up and host selection at each of these host "
        "counts, e.g. 100,1000,3000,10000 (one JSON object)",
    )
    b.add_argument(
        "--plot", type=Path, default=None, help="with --hosts: draw the sweep into this PNG"
    )
    b.add_argument(
        "--profile",
        type=_positive,
        default=0,
        metavar="N",
        help="only count what N embedded boots cost: function calls, HTTP requests, "
        "messages, trace events, CEL evaluations per boot (cProfile; repeatable under load)",
    )
    b.add_argument(
        "--rounds",
        type=_positive,
        default=0,
        metavar="R",
        help="only the embedded stack over time: its RSS after each of R rounds of --boots "
        "boots and deletes, its growth a round, and each round's boot median and server "
        "list time (one JSON object)",
    )
    b.add_argument(
        "--baseline",
        default="",
        metavar="REV",
        help="only the embedded stack's figures, of this tree and of the git revision REV, "
        "side by side: --pairs alternating runs of each (REV measured by its own bench), "
        "their medians and ratios (one JSON object)",
    )
    b.add_argument(
        "--pairs",
        type=_positive,
        default=0,
        metavar="N",
        help="with --baseline: runs of each side (default: 3)",
    )
    b.add_argument(
        "--top",
        type=_whole,
        default=0,
        help="with --profile: also list this many functions by cumulative time",
    )
    b.add_argument(
        "--unprofiled",
        action="store_true",
        help="with --profile: only the CPU milliseconds per boot and, of them, those in "
        "the stores' transactions and in CEL programs, the boots run without the profiler "
        "(its cost is most of a profiled figure; compare side by side only)",
    )
    b.set_defaults(func=cmd_bench)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except KeyboardInterrupt:
        _err("interrupted")
        return 130
    return code


def run() -> None:
    """The `specstack` command."""
    raise SystemExit(main())


if __name__ == "__main__":
    run()
