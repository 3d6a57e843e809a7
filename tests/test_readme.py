"""The README's reference parts, checked against the app so they cannot drift: the endpoint table against
view_api(), the flag list against `app.py --help`, and the layout table against the files."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_the_endpoint_table_lists_every_endpoint_with_its_inputs(live_app):
    from gradio_client import Client

    client = Client(live_app.url, verbose=False)
    try:
        api = client.view_api(return_format="dict", print_info=False)
    finally:
        client.close()
    rows = re.findall(r"^\| `(/\w+)`[^|]*\| ([^|]*) \|", README, flags=re.MULTILINE)
    assert sorted(name for name, _ in rows) == sorted(api["named_endpoints"]), "one row per endpoint"
    for name, inputs in rows:
        count = len(api["named_endpoints"][name]["parameters"])
        assert listed_inputs(inputs) == count, f"{name} takes {count} inputs; the README lists {inputs!r}"


def listed_inputs(cell: str) -> int:
    """How many inputs a table cell lists: its commas outside parentheses and `code`, plus one ("none": 0)."""
    if cell.startswith("none"):
        return 0
    depth, code, commas = 0, False, 0
    for ch in cell:
        code = not code if ch == "`" else code
        depth += (ch == "(") - (ch == ")") if not code else 0
        commas += ch == "," and depth == 0 and not code
    return commas + 1


def test_the_flag_list_is_app_py_help():
    help_text = subprocess.run([sys.executable, str(ROOT / "app.py"), "--help"], capture_output=True, text=True,
                               check=True, cwd=ROOT).stdout
    flags = set(re.findall(r"(--[a-z][a-z-]+)", help_text.split("options:")[1])) - {"--help"}
    listed = re.search(r"`python app.py --help` lists the flags \(([^)]*)\)", README)
    assert listed, "the README's sentence that lists the flags"
    assert set(re.findall(r"--[a-z][a-z-]+", listed.group(1))) == flags


def test_the_layout_table_names_files_that_exist():
    table = README.split("## What is inside")[1].split("\n## ")[0]
    named = re.findall(r"`((?:clipdiff|app|checkpoints|assets|tests|benchmarks)[\w/.]*)`", table)
    assert named, "the table names the files"
    for name in named:
        assert (ROOT / name).exists(), f"{name} is in the README but not in the repository"
    for module in (ROOT / "clipdiff" / "app" / "tabs").glob("[!_]*.py"):
        assert module.stem in table, f"the tab {module.stem} is missing from the README"


def test_the_room_table_is_its_measurements():
    """Every row of "Sizing the room" says what its JSON in benchmarks/room/ measured (rounded to 2 places)."""
    import json

    rows = re.findall(r"^\| (local|ray, 2 replicas x 1 core|local, fast mode \(4 steps\)|"
                      r"ray, 2 replicas x 1 core, fast mode \(4 steps\)) \| (\d+) \| ([\d.]+) \| "
                      r"([\d.]+) \| ([\d.]+) \| (\d+) \| `(benchmarks/room/[\w.-]+\.json)` \|$",
                      README.split("**Sizing the room.**")[1], re.M)
    assert len(rows) >= 9, "the room table's rows"
    for backend, users, made, p50, p95, errors, path in rows:
        report = json.loads((ROOT / path).read_text())
        assert (report["backend"], report["users"]) == (backend.split(",")[0], int(users)), path
        assert (report["sampler"] == "fast") == ("fast mode" in backend), path
        measured = [round(report[k], 2) for k in ("images_per_s", "p50_s", "p95_s")] + [report["errors"]]
        assert [float(made), float(p50), float(p95), int(errors)] == measured, path


def test_the_lone_click_sentence_is_benchs_measurement():
    """What the README says a lone click costs through the app and at the core is benchmarks/bench.json's."""
    import json

    bench = json.loads((ROOT / "benchmarks" / "bench.json").read_text())
    sentence = (f"A lone 4-image click takes {bench['app_generate_4_s']:.2f} s through the app against "
                f"{bench['generate_4_s']:.2f} s at the core (`front_ratio` {bench['front_ratio']:.2f}, `bench.json`")
    assert sentence in " ".join(README.split())


def test_the_rooms_busy_figures_are_their_measurements():
    """How busy the machine was in the rooms the README names is what their JSON files recorded."""
    import json

    def busy(name: str) -> tuple[float, float]:
        r = json.loads((ROOT / "benchmarks" / "room" / f"{name}.json").read_text())
        cpu = r["machine"]["cpu_count"] * r["wall_s"]
        return r["machine_cpu_s"] / cpu, r["clients_cpu_s"] / cpu

    exact, clients = busy("local-30")
    (fast_30, _), (fast_60, _) = busy("fast-local-30"), busy("fast-local-60")
    text = " ".join(README.split())
    assert f"at 30 attendees the machine was {exact:.0%} busy (`machine_cpu_s` in `local-30.json`), " \
           f"{clients:.0%} of it the simulated attendees" in text.replace(" %", "%")
    assert f"with the machine {fast_30:.0%} busy, and 60 got" in text.replace(" %", "%")
    assert f"at {fast_60:.0%} (`app.py --fast`" in text.replace(" %", "%")


def test_the_benchmark_readmes_figures_are_bench_json():
    """benchmarks/README.md's table of the shipped model's figures is benchmarks/bench.json's (bench.markdown_rows)."""
    import json

    from clipdiff.commands.bench import markdown_rows

    text = (ROOT / "benchmarks" / "README.md").read_text(encoding="utf-8")
    bench = json.loads((ROOT / "benchmarks" / "bench.json").read_text())
    assert [row for row in markdown_rows(bench) if row not in text] == []
