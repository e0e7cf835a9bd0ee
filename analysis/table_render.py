"""A table of mean ± std statistics and its rendering: a :class:`Table` is a DataFrame with one row
per row key, plus which columns are statistics (``<col>_mean``, ``<col>_std``) and which direction
is best, so it can be written as Markdown, LaTeX and CSV (:func:`write_tables`) with the best entry
of each column marked.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import pandas as pd


@dataclass
class Table:
    """``frame`` has the key columns, ``n`` and ``<stat>_mean``/``<stat>_std`` per statistic."""

    dataset: str
    title: str
    frame: pd.DataFrame
    keys: list[str]
    stats: list[str]
    headers: dict[str, str]
    best: dict[str, str] = field(default_factory=dict)
    """Statistic -> ``"max"`` or ``"min"``: which entry is marked as best. Absent: none."""
    digits: int = 2
    block: str = ""
    """What sets this table's rows apart from the dataset's other tables of its kind ("" if none)."""

    def best_rows(self, stat: str) -> set[int]:
        direction = self.best.get(stat)
        means = self.frame[f"{stat}_mean"]
        if direction is None or means.isna().all():
            return set()
        target = means.max() if direction == "max" else means.min()
        return {i for i, v in enumerate(means) if not math.isnan(v) and abs(v - target) <= 1e-9 * max(1.0, abs(target))}

    def cell(self, row: int, stat: str) -> tuple[str, str]:
        mean, std = self.frame[f"{stat}_mean"].iloc[row], self.frame[f"{stat}_std"].iloc[row]
        if math.isnan(mean):
            return "–", ""
        return f"{mean:.{self.digits}f}", ("" if math.isnan(std) else f"{std:.{self.digits}f}")

    def with_best_flags(self) -> pd.DataFrame:
        out = self.frame.copy()
        for stat in self.stats:
            if stat in self.best:
                rows = self.best_rows(stat)
                out[f"{stat}_best"] = [i in rows for i in range(len(out))]
        return out

    def markdown(self) -> str:
        heads = [self.headers.get(k, k) for k in self.keys] + ["n"] + [self.headers.get(s, s) for s in self.stats]
        lines = [
            "| " + " | ".join(heads) + " |",
            "|" + "|".join(["---"] * len(self.keys) + ["--:"] * (1 + len(self.stats))) + "|",
        ]
        best = {s: self.best_rows(s) for s in self.stats}
        for i in range(len(self.frame)):
            cells = [str(self.frame[k].iloc[i]) for k in self.keys] + [str(int(self.frame["n"].iloc[i]))]
            for stat in self.stats:
                mean, std = self.cell(i, stat)
                text = f"{mean} ± {std}" if std else mean
                cells.append(f"**{text}**" if i in best[stat] else text)
            lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
        return "\n".join(lines)

    def latex(self) -> str:
        best = {s: self.best_rows(s) for s in self.stats}
        spec = "l" * len(self.keys) + "r" * (1 + len(self.stats))
        heads = [latex_escape(self.headers.get(k, k)) for k in self.keys] + ["$n$"]
        heads += [latex_escape(self.headers.get(s, s)) for s in self.stats]
        lines = [
            "\\begin{table}[t]",
            "\\centering",
            f"\\caption{{{latex_escape(self.title)}}}",
            f"\\begin{{tabular}}{{{spec}}}",
            "\\toprule",
            " & ".join(heads) + " \\\\",
            "\\midrule",
        ]
        for i in range(len(self.frame)):
            cells = [latex_escape(str(self.frame[k].iloc[i])) for k in self.keys] + [str(int(self.frame["n"].iloc[i]))]
            for stat in self.stats:
                mean, std = self.cell(i, stat)
                text = f"{mean} $\\pm$ {std}" if std else latex_escape(mean)
                cells.append(f"\\textbf{{{text}}}" if i in best[stat] else text)
            lines.append(" & ".join(cells) + " \\\\")
        lines += ["\\bottomrule", "\\end{tabular}", "\\end{table}"]
        return "\n".join(lines)


def latex_escape(text: str) -> str:
    replace = {"\\": "\\textbackslash{}", "&": "\\&", "%": "\\%", "$": "\\$", "#": "\\#", "_": "\\_",
               "{": "\\{", "}": "\\}", "~": "\\textasciitilde{}", "^": "\\textasciicircum{}",
               "±": "$\\pm$", "–": "--", "Δ": "$\\Delta$"}  # fmt: skip
    return "".join(replace.get(c, c) for c in text)


def write_tables(tables: Sequence[Table], stem: str) -> dict[str, str]:
    """``<stem>.md``, ``<stem>.tex`` and ``<stem>.csv`` for tables of several datasets."""
    md = "\n\n".join(f"**{t.title}**\n\n{t.markdown()}" for t in tables)
    tex = "\n\n".join(t.latex() for t in tables)
    frames = []
    for t in tables:
        frame = t.with_best_flags()
        frame.insert(0, "dataset", t.dataset)
        if any(u.block for u in tables):
            frame.insert(1, "block", t.block)
        frames.append(frame)
    csv = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    paths = {"md": f"{stem}.md", "tex": f"{stem}.tex", "csv": f"{stem}.csv"}
    with open(paths["md"], "w") as f:
        f.write(md + "\n")
    with open(paths["tex"], "w") as f:
        f.write("% needs \\usepackage{booktabs}\n" + tex + "\n")
    csv.to_csv(paths["csv"], index=False, float_format="%.6g")
    return paths
