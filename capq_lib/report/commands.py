"""The commands that rerun the book, listed once: the intro's "Rerunning it" block and the
README's are both this list (a test compares the README with it), and a test runs every
command in its smoke-sized form, so no page can show a command that no longer works.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Command:
    """One command as a reader types it, what it does, and the same command sized for a
    test on the smoke profile (CPU, seconds)."""

    line: str
    comment: str
    smoke: str


RERUN: tuple[Command, ...] = (
    Command("make book", "the quick profile, then open _build/html/index.html",
            "capq build --profile smoke --jobs 2"),
    Command("capq build --profile paper --device cuda", "the paper's scale on a GPU box",
            "capq build --profile smoke --device cpu --execute-only"),
    Command("capq build --only fcdnn-capacity", "one chapter; others keep their last output",
            "capq build --profile smoke --only fcdnn-capacity --execute-only"),
    Command("capq build --jobs 2", "chapters side by side (see Scaling out)",
            "capq build --profile smoke --jobs 2 --execute-only"),
    Command("capq build --profile my-profile.yaml", "your own parameter set",
            "capq build --profile my-profile.yaml --execute-only"),
    Command("capq params fcdnn-capacity --profile quick > fc.yaml",
            "one chapter's values, flat YAML",
            "capq params fcdnn-capacity --profile smoke > fc.yaml"),
    Command('papermill book/fcdnn-capacity.ipynb out.ipynb -f fc.yaml '
            '-y "{widths: [32, 64], fig1b_width: 32, fig2a_model: 2x32}" '
            '-p profile wide -p device cuda',
            "a notebook with changed values, labelled apart",
            'papermill book/fcdnn-capacity.ipynb out.ipynb -f fc.yaml '
            '-y "{widths: [32, 64], fig1b_width: 32, fig2a_model: 2x32}" '
            '-p profile wide -p device cpu'),
    Command("capq results fcdnn-capacity --profile quick --format json", "or --format csv",
            "capq results fcdnn-capacity --profile smoke --format json"),
    Command("capq results quantization --profile quick --format csv",
            "one row per net and bit width",
            "capq results quantization --profile smoke --format csv"),
    Command("capq results real-tasks --profile quick", "train/test per net, seed and width",
            "capq results real-tasks --profile smoke"),
    Command("capq results loss-surfaces --profile quick", "f(alpha) points per net and width",
            "capq results loss-surfaces --profile smoke"),
    Command("capq results transformer-capacity --profile quick --format json",
            "both measures, and their quantization",
            "capq results transformer-capacity --profile smoke --format json"),
    Command("capq advise --family fc --params 1122 --samples 1400",
            "bits per weight, with evidence",
            "capq advise --family fc --params 130 --samples 10 --profile smoke"),
    Command("capq sweep fcdnn-capacity --profile paper --device cuda",
            "a search worker (see Scaling out)",
            "capq sweep fcdnn-capacity --profile smoke --device cpu"),
)


def block(commands: tuple[Command, ...] = RERUN) -> str:
    """The commands as one bash block, comments aligned."""
    width = max(len(c.line) for c in commands if len(c.line) <= 60)
    lines = [f"{c.line:<{width}}  # {c.comment}" if len(c.line) <= 60 else
             f"{c.line}  # {c.comment}" for c in commands]
    return "```bash\n" + "\n".join(lines) + "\n```"
