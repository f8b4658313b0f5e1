"""Turn a pytest-benchmark JSON file into the markdown ratio table of ``docs/benchmarks.md``.

    python benchmarks/summarize.py results.json [--references torch.fft.rfft,torch.fft.rfft+irfft,nn.Linear]

Every row gives the median time and its ratio to the group's reference: the first of ``--references`` measured
in that group (same run, same tensor).
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json_file")
    parser.add_argument("--references", default="torch.fft.rfft,torch.fft.rfft+irfft,nn.Linear")
    args = parser.parse_args()
    with open(args.json_file) as f:
        data = json.load(f)
    machine = data.get("machine_info", {})
    print(f"<!-- {machine.get('cpu', {}).get('brand_raw', '')}; {data.get('datetime', '')} -->")
    print(table(data, args.references.split(",")))


if __name__ == "__main__":
    main()
