"""Turn benchmark results into the markdown tables of ``docs/benchmarks.md``.

    python benchmarks/summarize.py results.json [--references torch.fft.rfft,torch.fft.rfft+irfft,nn.Linear]
    python benchmarks/summarize.py bars.jsonl --bars          # the lines `python benchmarks/bench_acdc.py` prints
    python benchmarks/summarize.py scaling.json --scaling     # `python benchmarks/bench_scaling.py --out ...`

For a pytest-benchmark JSON file every row gives the median time and its ratio to the group's reference: the first
of ``--references`` measured in that group (same run, same tensor). ``--bars`` gives one row per bar (the median
per-round ratio of each variant measured); ``--scaling`` one row per ``(rows, N)`` with each kind's ratio to
``nn.Linear`` and its saved bytes as a multiple of ``nn.Linear``'s.
"""

import argparse
import json
import re
from collections import defaultdict


def _impl(bench) -> str:
    return (bench.get("params") or {}).get("impl") or bench["name"]


def table(data: dict, references: list[str]) -> str:
    groups = defaultdict(dict)
    for bench in data["benchmarks"]:
        groups[bench["group"]][_impl(bench)] = bench["stats"]["median"]
    lines = ["| group | implementation | median (ms) | ratio | reference |", "|---|---|---:|---:|---|"]

    def order(group):
        size = re.search(r"N=(\d+)", group)
        return (re.sub(r"N=\d+", "", group), int(size.group(1)) if size else 0)

    for group in sorted(groups, key=order):
        medians = groups[group]
        reference = next((r for r in references if r in medians), None)
        for impl, median in sorted(medians.items(), key=lambda kv: kv[1]):
            ratio = f"{median / medians[reference]:.2f}" if reference else "–"
            lines.append(f"| {group} | {impl} | {median * 1e3:.3f} | {ratio} | {reference or '–'} |")
    return "\n".join(lines)


def bars_table(lines: list[dict]) -> str:
    """The bars measured by ``bench_acdc.py`` as a script: ratio of each variant to ``nn.Linear``."""
    variants = [k for k in lines[0] if isinstance(lines[0][k], dict)]
    header = "| N | depth | rows | busy | nn.Linear (ms) | " + " | ".join(variants) + " | bar | met |"
    out = [header, "|" + "---:|" * 5 + "---:|" * len(variants) + "---:|---|"]
    for r in lines:
        busy = "yes" if r.get("busy") else "no"
        cells = [str(r["n"]), str(r["depth"]), str(r["rows"]), busy, f"{r['linear_ms']:.2f}"]
        cells += [f"{r[v]['ratio']:.3f}" for v in variants]
        cells += [f"≤ {r['bar']:.3f}", "yes" if r["met"] == "met" else "**no**"]
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def scaling_table(data: dict) -> str:
    """``bench_scaling.py``'s results: per (rows, N), each kind's time ratio and saved-bytes ratio to nn.Linear."""
    results = data["results"]
    kinds = list(dict.fromkeys(r["kind"] for r in results))
    out = ["| rows | N | nn.Linear (ms) | " + " | ".join(kinds) + " |", "|---:|---:|---:|" + "---:|" * len(kinds)]
    for rows, n in sorted({(r["rows"], r["n"]) for r in results}):
        by_kind = {r["kind"]: r for r in results if (r["rows"], r["n"]) == (rows, n)}
        linear = next(iter(by_kind.values()))["linear_ms"]
        cells = [f"{by_kind[k]['ratio']:.2f} ({by_kind[k]['saved_bytes'] / by_kind[k]['linear_saved_bytes']:.2g}×)"
                 if k in by_kind else "–" for k in kinds]
        out.append(f"| {rows} | {n} | {linear:.2f} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json_file")
    parser.add_argument("--references", default="torch.fft.rfft,torch.fft.rfft+irfft,nn.Linear")
    parser.add_argument("--bars", action="store_true", help="the JSON lines of bench_acdc.py run as a script")
    parser.add_argument("--scaling", action="store_true", help="the scaling.json of bench_scaling.py")
    args = parser.parse_args()
    if args.bars:
        with open(args.json_file) as f:
            print(bars_table([json.loads(line) for line in f if line.strip().startswith("{")]))
        return
    with open(args.json_file) as f:
        data = json.load(f)
    if args.scaling:
        print(scaling_table(data))
        return
    machine = data.get("machine_info", {})
    print(f"<!-- {machine.get('cpu', {}).get('brand_raw', '')}; {data.get('datetime', '')} -->")
    print(table(data, args.references.split(",")))


if __name__ == "__main__":
    main()
