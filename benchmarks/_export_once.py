"""One export in a fresh process (run by export_messages.py): prints a JSON line of measurements."""

from __future__ import annotations

import json
import os
import resource
import sys
import tempfile
import time
from typing import Any

T0 = time.perf_counter()


def main() -> None:
    url, date_from, date_to, concurrency, kind = sys.argv[1:6]
    os.environ.setdefault("AIRFLOW_HOME", tempfile.mkdtemp(prefix="auralytik-bench-"))
    os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    os.environ["AIRFLOW_CONN_AURALYTIK_DEFAULT"] = json.dumps(
        {"conn_type": "auralytik", "host": url, "password": "sandbox-key"}
    )
    import logging

    if os.environ.get("AURALYTIK_BENCH_NO_SLOW_START"):  # benchmarks/rate_limit.py: what slow start costs
        from airflow_provider_auralytik.hooks import pacing

        pacing.INITIAL_IN_FLIGHT = 1 << 30  # at any max_concurrency, all of it from the first request
        pacing.INITIAL_SHARE = 1.0

    from airflow_provider_auralytik.operators.export import (
        AuralytikExportConversationsOperator,
        AuralytikExportMessagesOperator,
    )

    logging.disable(logging.INFO)  # keep the benchmark's own output to the JSON line
    imported = time.perf_counter()
    with tempfile.TemporaryDirectory() as out:
        common: dict[str, Any] = {"task_id": "bench", "destination": out, "date_from": date_from, "date_to": date_to}
        operator = (
            AuralytikExportMessagesOperator(max_concurrency=int(concurrency), **common)
            if kind == "messages"
            else AuralytikExportConversationsOperator(**common)
        )
        cpu0 = time.process_time()
        start = time.perf_counter()
        summary = operator.execute(context={})  # type: ignore[arg-type,unused-ignore]  # no task context outside a DAG run
        export_wall = time.perf_counter() - start
        export_cpu = time.process_time() - cpu0
    print(
        json.dumps(
            {
                "export_wall_s": export_wall,
                "export_cpu_s": export_cpu,
                "import_s": imported - T0,
                "requests": operator.manifest["api_requests"],
                "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                **{k: v for k, v in summary.items() if isinstance(v, int)},
            }
        )
    )


if __name__ == "__main__":
    main()
