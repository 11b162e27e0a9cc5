"""Commands for the embedded LLM: llm fetch, serve, status, stop."""

from __future__ import annotations

import argparse
import time

from testbed.cli.output import json_option, print_json
from testbed.llm_server import (
    DEFAULT_MODEL,
    DEFAULT_PORT,
    DEFAULT_THREADS,
    MODELS,
    fetch_model,
    is_fetched,
    model_path,
    model_spec,
    server_status,
    start_server,
    stop_server,
)


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    llm = commands.add_parser("llm", help="the embedded local LLM: fetch, serve, status, stop")
    actions = llm.add_subparsers(dest="llm_command", required=True, metavar="ACTION")
    fetch = actions.add_parser("fetch", help="download and verify model weights (fast when already there)")
    fetch.add_argument("--model", choices=tuple(MODELS), action="append",
                       help="a model to fetch (repeatable; default: all)")
    fetch.set_defaults(handler=fetch_command)
    serve = actions.add_parser("serve", help="start a background server and print its base URL")
    _model_option(serve)
    serve.add_argument("--port", type=int, default=DEFAULT_PORT, help="preferred port (a free one if taken)")
    serve.add_argument("--threads", type=int, default=DEFAULT_THREADS)
    serve.set_defaults(handler=serve_command)
    status = actions.add_parser("status", help="which models are fetched and which servers run")
    json_option(status)
    status.set_defaults(handler=status_command)
    stop = actions.add_parser("stop", help="stop a background server")
    _model_option(stop)
    stop.set_defaults(handler=stop_command)


def _model_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", choices=tuple(MODELS), default=DEFAULT_MODEL)


def fetch_command(args: argparse.Namespace) -> int:
    for name in args.model or MODELS:
        spec = model_spec(name)
        if is_fetched(spec):
            print(f"{name}: {model_path(spec)} (verified)")
            continue
        started = time.monotonic()
        path = fetch_model(spec)
        print(f"{name}: {path} (fetched and verified in {time.monotonic() - started:.0f} s)")
    return 0


def serve_command(args: argparse.Namespace) -> int:
    state = start_server(args.model, args.port, args.threads)
    print(state.base_url)
    return 0


def status_command(args: argparse.Namespace) -> int:
    if args.json:
        print_json({name: {"fetched": is_fetched(spec), "server": server_status(name)}
                    for name, spec in MODELS.items()})
        return 0
    for name, spec in MODELS.items():
        weights = "fetched" if is_fetched(spec) else "not fetched (llamas llm fetch)"
        state = server_status(name)
        serving = f"serving at {state.base_url} (pid {state.pid}, {state.threads} thread(s))" if state else "stopped"
        print(f"{name}: {weights}, {serving}")
    return 0


def stop_command(args: argparse.Namespace) -> int:
    print(f"{args.model}: {'stopped' if stop_server(args.model) else 'was not running'}")
    return 0
