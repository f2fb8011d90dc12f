"""Writing results: JSON (with the machine description), Markdown tables, PNG plots."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

if TYPE_CHECKING:
    from loadtests.loadgen import StepResult


def parse_cpus(spec: str) -> set[int]:
    """``"0"``, ``"0,1"`` or ``"0-3"`` -> a set of CPU numbers; ``""`` -> empty (any)."""
    cpus: set[int] = set()
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part:
            lo, hi = part.split("-", 1)
            cpus.update(range(int(lo), int(hi) + 1))
        else:
            cpus.add(int(part))
    return cpus


def fmt(v: object, nd: int = 1) -> str:
    """A table cell: numbers rounded, None as an em dash."""
    if v is None:
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return f"{v:.{nd}f}"
    return str(v)


def md_table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(fmt(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write(out: Path, name: str, result: Any, markdown: str) -> tuple[Path, Path]:
    """``out/name.json`` (indented) and ``out/name.md``; returns their paths."""
    out.mkdir(parents=True, exist_ok=True)
    jpath = out / f"{name}.json"
    mpath = out / f"{name}.md"
    jpath.write_bytes(msgspec.json.format(msgspec.json.encode(result), indent=2) + b"\n")
    mpath.write_text(markdown)
    return jpath, mpath


def machine_line(m: Any) -> str:
    return (
        f"{m.cpu_model}, {m.cores} cores ({m.usable_cores} usable), "
        f"{m.mem_total_mib} MiB, Python {m.python}, {m.libopus}, "
        f"load average at start {m.loadavg_start[0]:.2f}, commit {m.commit}"
    )


# ---------------------------------------------------------------------------- load steps

STEP_HEADERS = (
    "N",
    "failed",
    "turns",
    "audio s",
    "TTFA p50 ms",
    "TTFA p99 ms",
    "late p50 ms",
    "late p99 ms",
    "late max ms",
    "underruns",
    "streams",
    "server CPU",
    "CPU ms/audio s",
    "client CPU",
    "other CPU",
    "pass",
)


def step_row(r: StepResult) -> list[object]:
    return [
        r.sessions,
        r.sessions_failed,
        r.turns,
        r.audio_s,
        r.ttfa_ms["p50"],
        r.ttfa_ms["p99"],
        r.lateness_ms["p50"],
        r.lateness_ms["p99"],
        r.lateness_ms["max"],
        r.underrun_episodes,
        r.stream_rate,
        f"{r.server_cpu:.2f}",
        r.server_cpu_ms_per_audio_s,
        f"{r.client_cpu:.2f}",
        f"{r.other_cpu:.2f}",
        r.passed,
    ]


def steps_table(steps: Sequence[StepResult], jitter_ms: float) -> str:
    headers: Sequence[str] = STEP_HEADERS
    rows = [step_row(r) for r in steps]
    if any(r.label for r in steps):  # a comparison: say which server each row is
        headers = ("server", *STEP_HEADERS)
        rows = [[r.label, *row] for r, row in zip(steps, rows, strict=True)]
    note = (
        f"\nLateness: arrival minus the frame's play deadline (first frame's arrival + "
        f"{jitter_ms:g} ms jitter buffer + k × frame); negative = early. Underruns: runs of "
        "late frames. Streams: audio seconds received per second in the hold window. CPU in "
        "cores over the hold window (1.00 = one core busy); CPU ms/audio s: server CPU per "
        "second of audio delivered.\n"
    )
    return md_table(headers, rows) + note


def step_line(r: StepResult) -> str:
    lat = r.lateness_ms
    return (
        f"N={r.sessions:4d} failed={r.sessions_failed} turns={r.turns} "
        f"ttfa p50={fmt(r.ttfa_ms['p50'])} p99={fmt(r.ttfa_ms['p99'])} ms "
        f"late p99={fmt(lat['p99'])} max={fmt(lat['max'])} ms underruns={r.underrun_episodes} "
        f"streams={r.stream_rate:.1f} ms/audio-s={fmt(r.server_cpu_ms_per_audio_s, 2)} "
        f"cpu server={r.server_cpu:.2f} (loop {r.server_loop_cpu:.2f}) "
        f"client={r.client_cpu:.2f} other={r.other_cpu:.2f} "
        f"errors={r.errors or '-'} pass={fmt(r.passed)}"
    )


def plot_steps(
    steps: Sequence[StepResult], path: Path, title: str, limit: float | None = None
) -> Path:
    """Latency percentiles and underruns against N (matplotlib, no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    steps = sorted(steps, key=lambda r: r.sessions)
    n = [r.sessions for r in steps]

    def series(attr: str, key: str) -> list[float]:
        vals = [getattr(r, attr)[key] for r in steps]
        return [float("nan") if v is None else float(v) for v in vals]

    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(8, 7), sharex=True)
    # Frames mostly come seconds early; a symmetric log scale keeps 0-20 ms readable.
    for key, style in (("p99", "-s"), ("p999", "-d"), ("max", ":^")):
        ax1.plot(n, series("lateness_ms", key), style, label=f"frame lateness {key}")
    for key, style in (("p50", "--o"), ("p99", "--v")):
        ax1.plot(n, series("ttfa_ms", key), style, label=f"time to first audio {key}")
    ax1.set_yscale("symlog", linthresh=10)
    ax1.axhline(0, color="grey", lw=0.8)
    ax1.axhline(20, color="red", lw=0.8, ls=":", label="20 ms (capacity criterion)")
    ax1.set_ylabel("ms (symlog)")
    ax1.set_title(title)
    ax1.legend(fontsize=7, loc="best")
    ax1.grid(alpha=0.3)
    width = max(1.0, (max(n) - min(n)) / 40) if n else 1.0
    ax2.bar(n, [r.underrun_episodes for r in steps], width=width, color="tab:red", alpha=0.7)
    ax2.set_ylim(bottom=0, top=max([1, *(r.underrun_episodes for r in steps)]) * 1.1)
    ax2.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax2.set_ylabel("underrun episodes (bars)")
    ax2.set_xlabel("concurrent sessions N")
    ax2.grid(alpha=0.3)
    ax3 = ax2.twinx()
    ax3.plot(n, [r.server_cpu for r in steps], "g-x", label="server CPU")
    ax3.set_ylim(0, max([1.05, *(r.server_cpu * 1.1 for r in steps)]))
    ax3.set_ylabel("server CPU, cores (line)", color="g")
    if limit is not None:
        for ax in (ax1, ax2):
            ax.axvline(limit, color="purple", ls="--", lw=1)
        ax2.annotate("codec limit", (limit, 0), color="purple", fontsize=8, ha="right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def plot_memory(samples: Sequence[tuple[float, float]], settle_s: float, path: Path) -> Path:
    """Server RSS over a soak, with the warm-up part marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4))
    ax.plot([t for t, _ in samples], [m for _, m in samples], "-", lw=1)
    ax.axvspan(0, settle_s, color="grey", alpha=0.15, label="warm-up (not fitted)")
    ax.set_xlabel("s")
    ax.set_ylabel("server RSS, MiB")
    ax.set_title("voxwire soak: resident memory at steady load")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
