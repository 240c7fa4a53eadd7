"""python -m service.simulator: serve the simulated OpenAI API under uvicorn (uvloop, httptools)."""

from __future__ import annotations

import argparse
import dataclasses
import os
from pathlib import Path

import orjson
import uvicorn
from starlette.applications import Starlette

from service.simulator.app import create_app
from service.simulator.config import SimulatorConfig

_CONFIG_ENV = "FAREBOX_SIM_CONFIG"  # hands the parsed config to worker processes


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, SimulatorConfig]:
    p = argparse.ArgumentParser(prog="python -m service.simulator", description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=9100)
    p.add_argument(
        "--workers", type=int, default=1, help="processes; each keeps its own files and jobs"
    )
    p.add_argument("--api-key", help="accept only this key (default: any sk-... key)")
    p.add_argument("--latency-ms", type=float, default=0.0)
    p.add_argument(
        "--chunk-delay-ms", type=float, default=0.0, help="pause before each stream chunk"
    )
    p.add_argument(
        "--error-rate", type=float, default=0.0, help="fraction of requests answered with a fault"
    )
    p.add_argument(
        "--error-kinds", default="500", help="comma list: statuses, quota, garbage, timeout"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--completion-tokens", type=int, default=16)
    p.add_argument("--fast", action="store_true", help="benchmark mode: fixed usage, no tokenizer")
    p.add_argument("--job-phase-s", type=float, default=1.0)
    p.add_argument("--data-dir", type=Path)
    p.add_argument("--webhook-url")
    p.add_argument("--webhook-secret")
    p.add_argument(
        "--null-partial-trained-tokens",
        action="store_true",
        help="failed/cancelled jobs report trained_tokens null",
    )
    p.add_argument("--log-level", default="warning")
    args = p.parse_args(argv)
    config = SimulatorConfig(
        api_key=args.api_key,
        latency_ms=args.latency_ms,
        stream_chunk_delay_ms=args.chunk_delay_ms,
        error_rate=args.error_rate,
        error_kinds=tuple(k.strip() for k in args.error_kinds.split(",") if k.strip()),
        seed=args.seed,
        completion_tokens=args.completion_tokens,
        fast=args.fast,
        job_phase_s=args.job_phase_s,
        data_dir=args.data_dir,
        webhook_url=args.webhook_url,
        webhook_secret=args.webhook_secret,
        partial_trained_tokens=not args.null_partial_trained_tokens,
    )
    return args, config


def app_from_env() -> Starlette:
    """Factory for worker processes: rebuild the config the parent parsed."""
    fields = orjson.loads(os.environ[_CONFIG_ENV])
    fields["error_kinds"] = tuple(fields["error_kinds"])
    if fields.get("data_dir"):
        fields["data_dir"] = Path(fields["data_dir"])
    return create_app(SimulatorConfig(**fields))


def main(argv: list[str] | None = None) -> None:
    args, config = parse_args(argv)
    common = {
        "host": args.host,
        "port": args.port,
        "loop": "uvloop",
        "http": "httptools",
        "log_level": args.log_level,
        "access_log": False,
    }
    if args.workers > 1:
        os.environ[_CONFIG_ENV] = orjson.dumps(dataclasses.asdict(config), default=str).decode()
        uvicorn.run(
            "service.simulator.__main__:app_from_env", factory=True, workers=args.workers, **common
        )
    else:
        uvicorn.run(create_app(config), **common)


if __name__ == "__main__":
    main()
