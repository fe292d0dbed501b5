"""``python -m airflow_provider_auralytik.sandbox``: run the API sandbox until SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import errno
import signal
import sys
import threading
from collections.abc import Sequence
from datetime import date
from types import FrameType

from airflow_provider_auralytik.sandbox.data import TOTAL_COUNT_MODES, SandboxConfig
from airflow_provider_auralytik.sandbox.server import Sandbox

#: Not 8080 (Airflow's api-server), 8793/8794 (its log servers), 5555 (Flower), 5000 (Marquez,
#: moto), 8000/8888/3000/9000/9090 (dev servers, Jupyter, Grafana, MinIO, Prometheus).
DEFAULT_PORT = 7431


def _fraction(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be within [0, 1], got {text}")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    defaults = SandboxConfig()
    p = argparse.ArgumentParser(
        prog="python -m airflow_provider_auralytik.sandbox",
        description="Serve a local fake of the Auralytik Conversations API (base path /v1) "
        "with deterministic synthetic data and optional fault injection.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="port to bind (0 picks a free one)")
    p.add_argument("--seed", type=int, default=defaults.seed, help="seed of all synthetic data and faults")
    p.add_argument(
        "--start",
        type=date.fromisoformat,
        default=None,
        help="first day of data, YYYY-MM-DD (default: DAYS days before today, UTC)",
    )
    p.add_argument("--days", type=int, default=defaults.days, help="number of days of data")
    p.add_argument("--per-day", type=int, default=defaults.per_day, help="conversations per day")
    p.add_argument("--max-messages", type=int, default=defaults.max_messages, help="max messages per conversation")
    p.add_argument("--api-key", default=defaults.api_key, help="the only accepted Bearer API key")
    p.add_argument("--latency-ms", type=_non_negative_float, default=0.0, help="delay added to every request (ms)")
    p.add_argument("--rate-429", type=_fraction, default=0.0, help="share of requests answered 429")
    p.add_argument(
        "--rate-limit",
        type=_non_negative_float,
        default=0.0,
        help="per-key limit, requests/s (token bucket of one second's requests; 429 with Retry-After "
        "in whole seconds over it); 0: none",
    )
    p.add_argument(
        "--trickle-every",
        type=_non_negative_float,
        default=0.0,
        help="if > 0, send every answer's body one byte every this many seconds",
    )
    p.add_argument("--retry-after", type=int, default=defaults.retry_after, help="Retry-After of the 429s, seconds")
    p.add_argument(
        "--retry-after-http-date",
        action="store_true",
        help="send Retry-After as an HTTP date instead of seconds",
    )
    p.add_argument("--rate-5xx", type=_fraction, default=0.0, help="share of requests answered 502/503 with HTML")
    p.add_argument(
        "--rate-drop", type=_fraction, default=0.0, help="share of requests whose socket is closed unanswered"
    )
    p.add_argument(
        "--rate-malformed",
        type=_fraction,
        default=0.0,
        help="share of requests answered 200 with a truncated JSON body",
    )
    p.add_argument(
        "--pii-leak-rate",
        type=_fraction,
        default=0.0,
        help="share of messages left unmasked even with X-Exclude-PII: true",
    )
    p.add_argument(
        "--complete-within",
        type=_non_negative_float,
        default=0.0,
        help="if > 0, every conversation completes within this many seconds of server start (0: at its natural end)",
    )
    p.add_argument(
        "--insert-during-listing",
        type=int,
        default=0,
        help="conversations inserted at random times after each listing request",
    )
    p.add_argument(
        "--total-count-mode",
        choices=TOTAL_COUNT_MODES,
        default=defaults.total_count_mode,
        help="what totalCount says: the truth, or a lie (0, the page's item count, half, triple, +1000, stale)",
    )
    p.add_argument(
        "--crowded-second",
        type=int,
        default=0,
        help="conversations added at one single createdAt (noon of the first day)",
    )
    p.add_argument(
        "--delete-during-listing",
        type=int,
        default=0,
        help="conversations deleted, one after each of the next listing answers (from the page just served)",
    )
    p.add_argument(
        "--hold-active",
        type=int,
        default=0,
        help="conversations of each day kept active (its last-created ones; half their messages served)",
    )
    p.add_argument(
        "--hold-for",
        type=_non_negative_float,
        default=0.0,
        help="seconds after start at which the held conversations complete; 0: never (until the sandbox stops)",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = SandboxConfig(
            seed=args.seed,
            start=args.start,
            days=args.days,
            per_day=args.per_day,
            max_messages=args.max_messages,
            api_key=args.api_key,
            latency_ms=args.latency_ms,
            rate_429=args.rate_429,
            rate_limit=args.rate_limit,
            trickle_every=args.trickle_every,
            retry_after=args.retry_after,
            retry_after_http_date=args.retry_after_http_date,
            rate_5xx=args.rate_5xx,
            rate_drop=args.rate_drop,
            rate_malformed=args.rate_malformed,
            pii_leak_rate=args.pii_leak_rate,
            complete_within=args.complete_within,
            insert_during_listing=args.insert_during_listing,
            total_count_mode=args.total_count_mode,
            crowded_second=args.crowded_second,
            delete_during_listing=args.delete_during_listing,
            hold_active=args.hold_active,
            hold_for=args.hold_for,
        )
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    stop = threading.Event()

    def _on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, _on_signal)
    signal.signal(signal.SIGTERM, _on_signal)

    try:
        sandbox = Sandbox(config, host=args.host, port=args.port).start()
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            print(
                f"error: port {args.port} on {args.host} is already in use (another sandbox or server?): "
                "pass --port <free port>, or --port 0 to pick one.",
                file=sys.stderr,
            )
        else:
            print(f"error: cannot listen on {args.host}:{args.port} ({exc}): check --host and --port.", file=sys.stderr)
        return 1
    try:
        print(f"Auralytik sandbox listening on {sandbox.url} (API key: {sandbox.api_key})", flush=True)
        while not stop.wait(0.2):
            pass
    finally:
        sandbox.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
