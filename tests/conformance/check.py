"""Checks Autobahn (kosoku) results strictly against the expected outcomes.

Every case must be OK, or INFORMATIONAL where expected.json says so; any
NON-STRICT, FAILED, UNIMPLEMENTED, missing or extra case fails the run. Writes
summary.md (counts per behaviour for each role and runtime) next to the reports.
"""

import collections
import json
import os
import pathlib
import sys

RUNS = [
    "server-tokio",
    "server-async-std",
    "client-tokio",
    "client-async-std",
    "server-event-loop",
    "server-blocking-echo",
    "server-event-loop-echo",
]
# The examples that embed the core without a runtime do not negotiate
# permessage-deflate: their runs leave out 12.* and 13.*.
WITHOUT_COMPRESSION = {"server-blocking-echo", "server-event-loop-echo"}


def main(expected_path: str, out_dir: str) -> int:
    expected = json.loads(pathlib.Path(expected_path).read_text())
    informational = set(expected["informational"])
    # Runs named in LIGHT_RUNS (set by run.sh) leave out the heavy compression cases;
    # those in HALF_RUNS take half of them each, between them all.
    light = set(os.environ.get("LIGHT_RUNS", "").split())
    half = set(os.environ.get("HALF_RUNS", "").split())
    ran_in_halves = set()
    out = pathlib.Path(out_dir)
    problems = []
    rows = []
    for run in RUNS:
        index = out / run / "index.json"
        if not index.exists():
            problems.append(f"{run}: no report at {index}")
            continue
        agents = json.loads(index.read_text())
        cases = {case: result for agent in agents.values() for case, result in agent.items()}
        if run in WITHOUT_COMPRESSION:
            total = expected["cases"] - expected["compression_cases"]
        elif run in light:
            total = expected["cases"] - expected["heavy_cases"]
        elif run in half:
            total = expected["cases"] - expected["heavy_cases"] // 2
            ran_in_halves.update(cases)
        else:
            total = expected["cases"]
        if len(cases) != total:
            problems.append(f"{run}: {len(cases)} cases reported, expected {total}")
        counts = collections.Counter()
        for case, result in sorted(cases.items(), key=lambda kv: [int(p) for p in kv[0].split(".")]):
            behavior, close = result["behavior"], result["behaviorClose"]
            counts[behavior] += 1
            allowed = {"OK", "INFORMATIONAL"} if case in informational else {"OK"}
            if behavior not in allowed or close not in allowed:
                problems.append(f"{run}: case {case} is {behavior} (close: {close}), expected {'/'.join(sorted(allowed))}")
        rows.append((run, counts))
    if half and len(ran_in_halves) != expected["cases"]:
        problems.append(
            f"{' and '.join(sorted(half))} ran {len(ran_in_halves)} different cases between them, expected every one of {expected['cases']}"
        )
    lines = ["| run | cases | OK | INFORMATIONAL | NON-STRICT | FAILED |", "|---|---|---|---|---|---|"]
    for run, c in rows:
        lines.append(
            f"| {run} | {sum(c.values())} | {c['OK']} | {c['INFORMATIONAL']} | {c['NON-STRICT']} | {c['FAILED']} |"
        )
    summary = "\n".join(lines) + "\n"
    (out / "summary.md").write_text(summary)
    print(summary)
    if problems:
        print("Autobahn conformance FAILED:", *problems, sep="\n  ")
        return 1
    print(f"Autobahn conformance: every case as expected in {len(rows)} runs"
          + (f" (the heavy compression cases split between {' and '.join(sorted(half))},"
             f" left out of {' and '.join(sorted(light))})" if half else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
