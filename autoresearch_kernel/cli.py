"""`autoresearch` / `python -m autoresearch_kernel`: thin sub-commands over the package's functions.

Each sub-command parses its options and calls one function; no logic lives here. Errors the user can
cause (`AutoresearchError`) print as one line and exit with status 2.
"""
from __future__ import annotations

import argparse
import sys

from autoresearch_kernel.agent.cli import add_agent_commands
from autoresearch_kernel.errors import AutoresearchError
from autoresearch_kernel.text import one_line


def _add_data_dir(parser: argparse.ArgumentParser) -> None:
    from autoresearch_kernel.loop.settings import BY_NAME

    parser.add_argument("--data-dir", default=None, help=BY_NAME["data_dir"].help)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="autoresearch", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    prepare = commands.add_parser("prepare", help="prepare data and tokenizer (one time)")
    prepare.add_argument("--source", default="embedded", help="embedded | climbmix | PATH to a folder")
    prepare.add_argument("--profile", default="cpu", help="cpu | gpu")
    prepare.add_argument("--num-shards", type=int, default=10, help="climbmix training shards")
    prepare.add_argument("--base-url", default=None, help="climbmix download base URL (mirrors, tests)")
    _add_data_dir(prepare)
    prepare.set_defaults(handler=_prepare)
    _add_loop_commands(commands)
    _add_run_once(commands)
    _add_init(commands)
    add_agent_commands(commands)  # agent-init, step, status: agent_cli.py
    doctor = commands.add_parser("doctor", help="what confines an experiment here: the jail, its uid, its limits")
    doctor.add_argument("--profile", default="cpu", help="cpu | gpu: whose limits to show")
    doctor.set_defaults(handler=_doctor)
    return parser


def _doctor(args: argparse.Namespace) -> None:
    from autoresearch_kernel.integrity.doctor import report

    print(report(args.profile))


def _prepare(args: argparse.Namespace) -> None:
    from autoresearch_kernel.harness.prepare import prepare

    manifest = prepare(
        source=args.source,
        profile=args.profile,
        data_dir=args.data_dir,
        num_shards=args.num_shards,
        base_url=args.base_url,
    )
    print(manifest.summary_line())


def _add_loop_commands(commands) -> None:
    """`loop` and `report`: the keep/revert loop over the sandbox notebook, and its results."""
    from autoresearch_kernel.loop import settings

    loop = commands.add_parser(
        "loop", help="run the experiment loop on a run tag until stopped",
        description="Run the experiment loop on a run tag until stopped. A resumed tag keeps the settings it "
                    "was started with (runs/TAG/config.json): options not given come from there, and a "
                    "different budget, profile, data folder or number of baseline seeds is refused.")
    loop.add_argument("--tag", required=True, help="run tag: branch autoresearch/TAG, folder runs/TAG")
    loop.add_argument("--resume", action="store_true", help="continue an existing tag (after a stop or a kill)")
    loop.add_argument("--repo", default=".", help="the project's git repository (default: here)")
    settings.add_options(loop)
    loop.set_defaults(handler=_loop)

    report = commands.add_parser("report", help="progress.png, baseline -> best and the kept changes of a run")
    report.add_argument("--tag", default=None, help="run tag (or --results)")
    report.add_argument("--repo", default=".", help="the project's git repository (default: here)")
    report.add_argument("--results", default=None, help="a results.tsv to read instead (e.g. the reference's)")
    report.set_defaults(handler=_report)


def _loop(args: argparse.Namespace) -> None:
    import signal

    from autoresearch_kernel.journal import results
    from autoresearch_kernel.loop import settings
    from autoresearch_kernel.loop.loop import Loop, LoopConfig

    given = settings.given(args)
    if args.resume:
        config = LoopConfig.resumed(args.repo, args.tag, **given)
    else:
        config = LoopConfig(repo=args.repo, tag=args.tag, **given)

    def show(event) -> None:
        for row in event.rows:
            print(results.console_line(row), flush=True)
        if event.invalid is not None:
            said = "" if event.invalid.status == "duplicate" else "invalid: "  # a duplicate's failure says so
            print(f"   -  -------  {said}{one_line(event.invalid.failure, 150)}", flush=True)
        if event.phase == "paused":
            print(f"paused: {event.status.message}", flush=True)

    # A terminate from a process manager (or the dashboard) ends the run like Ctrl-C: cleanly, resumable. SIGINT
    # too, even where it was inherited as ignored (a job started with `&` by a non-interactive shell).
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    with Loop(config, on_event=show) as loop:
        if loop.sandbox_warning:
            print(f"warning: {loop.sandbox_warning}", file=sys.stderr, flush=True)
        print(f"run {args.tag}: branch {loop.workspace.branch}, worktree {loop.workspace.worktree}")
        print(f"results: {loop.results_path}")
        print(f"notebooks: {loop.notebooks}")
        if loop.status.message.startswith("resumed with"):
            print(loop.status.message)
        why = loop.run()
    print(f"stopped: {why}. Continue with: python -m autoresearch_kernel loop --tag {args.tag} --resume"
          f"{'' if args.repo == '.' else ' --repo ' + args.repo}; report: python -m autoresearch_kernel report "
          f"--tag {args.tag}")


def _report(args: argparse.Namespace) -> None:
    from pathlib import Path

    from autoresearch_kernel import report
    from autoresearch_kernel.errors import WorkspaceError
    from autoresearch_kernel.workspace.runfolder import RunFolder

    if not (args.tag or args.results):
        raise WorkspaceError("name the run: --tag TAG (or --results PATH to a results.tsv)")
    path = Path(args.results) if args.results else RunFolder.of(Path(args.repo).resolve(), args.tag).results
    if not path.exists():
        raise WorkspaceError(f"no results at {path}: check --tag and --repo (runs live in <repo>/runs/<tag>/)")
    png, lines = report.write_report(path)  # progress.png next to the results.tsv it reads
    print("\n".join(lines))
    print(f"chart: {png}")


def _add_run_once(commands) -> None:
    once = commands.add_parser("run-once", help="run the training notebook once and print its summary")
    budget = once.add_mutually_exclusive_group()
    budget.add_argument("--budget-seconds", type=float, default=0.0, help="training seconds (default: the profile's)")
    budget.add_argument("--budget-tokens", type=int, default=0, help="a fixed number of training tokens instead")
    budget.add_argument("--budget-flops", type=float, default=0.0, help="training FLOPs instead, counted by the "
                        "harness (the cpu profile's default budget: 1.25e12)")
    once.add_argument("--profile", default="cpu", help="cpu | gpu")
    once.add_argument("--device", default="auto", help="auto | cuda | mps | cpu")
    once.add_argument("--seed", type=int, default=0)
    once.add_argument("--out", default="runs/once", help="folder for the executed notebook, metrics and checkpoint")
    once.add_argument("--notebook", default=None, help="the notebook to run (default: notebooks/train_template.ipynb)")
    _add_data_dir(once)
    once.set_defaults(handler=_run_once)


def _run_once(args: argparse.Namespace) -> None:
    from autoresearch_kernel.execution.run_once import TEMPLATE, run_once, summary_of

    result = run_once(
        notebook=args.notebook or TEMPLATE,
        out_dir=args.out,
        profile=args.profile,
        data_dir=args.data_dir,
        device=args.device,
        seed=args.seed,
        budget_seconds=args.budget_seconds,
        budget_tokens=args.budget_tokens,
        budget_flops=args.budget_flops,
    )
    print(f"executed notebook: {result.output_path}")
    print(summary_of(result))


def _add_init(commands) -> None:
    init = commands.add_parser(
        "init", help="make a task of your own notebook: fixed cells, tunable constants, metric, scorer",
        description="Make a task of your own notebook (task_init.py). What is not given is asked on a terminal; "
                    "with --no-input the notebook's tags and the defaults are taken.")
    init.add_argument("--notebook", required=True, help="your notebook, in the repository")
    init.add_argument("--task", dest="name", default=None, help="the task's name (default: the notebook's)")
    init.add_argument("--metric", default=None, help="the metric's name, e.g. accuracy")
    init.add_argument("--direction", choices=("lower", "higher"), default=None, help="which way is better")
    init.add_argument("--scorer", default=None, help="file.py:function, score(artifact, data) -> float, run "
                      "outside the experiment in a jail of its own")
    init.add_argument("--artifact", default=None, help="the file the notebook writes for the scorer")
    init.add_argument("--scored-by", choices=("outside", "kernel"), default="outside",
                      help="kernel: trust the metric the notebook writes to METRICS_PATH (rows say so)")
    init.add_argument("--fixed", default=None, help="cells the agent may not edit: 0-based indexes, e.g. 1,5")
    init.add_argument("--tunable", default=None, help="constants mutate and optuna may move, e.g. LR,HIDDEN")
    init.add_argument("--prepare", default="", help="file.py:function(public, private): writes the data once")
    init.add_argument("--budget-kind", default="evaluations", help="seconds | tokens | flops | evaluations")
    init.add_argument("--budget", type=float, default=0.0, help="the budget per experiment (BUDGET)")
    init.add_argument("--noise", type=float, default=0.0, help="the metric's seed-to-seed sd; 0: deterministic")
    init.add_argument("--baseline-seeds", type=int, default=None, help="default: 1 if deterministic, else 3")
    init.add_argument("--repo", default=".", help="the project's git repository (default: here)")
    init.add_argument("--no-commit", action="store_true", help="write the files, commit nothing")
    init.add_argument("--no-input", action="store_true", help="ask nothing (scripts, tests)")
    init.set_defaults(handler=_init)


def _init(args: argparse.Namespace) -> None:
    from autoresearch_kernel.tasks.init import Answers, ask_on_terminal, init_task

    answers = Answers(
        notebook=args.notebook, name=args.name, metric=args.metric, direction=args.direction, scorer=args.scorer,
        artifact=args.artifact, scored_by=args.scored_by,
        fixed=None if args.fixed is None else tuple(int(i) for i in args.fixed.split(",") if i.strip()),
        tunable=None if args.tunable is None else tuple(n.strip() for n in args.tunable.split(",") if n.strip()),
        prepare=args.prepare, budget_kind=args.budget_kind, budget=args.budget, noise=args.noise,
        baseline_seeds=args.baseline_seeds)
    ask = None if args.no_input or not sys.stdin.isatty() else ask_on_terminal
    _, lines = init_task(args.repo, answers, ask=ask, commit=not args.no_commit)
    print("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code = args.handler(args)  # the agent's commands return their exit codes (agent_cli.py)
    except AutoresearchError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return code or 0
