#!/usr/bin/env python3
"""Markdown tables of medians and ratios from a bench suite's samples.

usage: report.py --raw SUITE.raw.tsv --cmds SUITE.cmds.tsv [--aim SPEC]... [--note TEXT]...

SUITE.raw.tsv has one sample per line: group, subject, round, milliseconds (tab-separated), as
bench/lib.sh's `timed` writes them. SUITE.cmds.tsv: group, subject, command. For every group (in
order of first appearance) a table lists each subject's median, min-max and sample count, and,
when the group has a subject whose name starts with "carrel", the ratio carrel ÷ subject of the
medians and the difference carrel - subject (ms). Then the timed commands, and the aims.

An aim is "LABEL::KIND::ARGS" with KIND one of
    ratio::G1::S1::G2::S2::OP::LIMIT   median(G1,S1) / median(G2,S2) OP LIMIT
    diff::G1::S1::G2::S2::OP::LIMIT    median(G1,S1) - median(G2,S2) OP LIMIT (ms)
    pdiff::G1::S1::G2::S2::OP::LIMIT   median over rounds of (G1,S1) - (G2,S2) in the same round
                                       OP LIMIT (ms): paired, so that the VM's drift between
                                       rounds cancels out; shown with its distribution-free 95%
                                       confidence interval, and met only when the whole interval
                                       is on the aim's side of LIMIT
    abs::G::S::OP::LIMIT               median(G,S) OP LIMIT (ms)
with OP one of < <= > >=. An aim whose samples are missing is reported as "not measured".
Adapted in spirit from /work/shared/bench/report.py (side-by-side medians), rewritten for
per-group ratios.
"""
import argparse
import collections
import operator
import statistics
import sys

OPS = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}


def fmt_ms(x):
    """Milliseconds with about three significant digits (sub-millisecond server times too)."""
    if abs(x) < 1:
        return f"{x:.3f}"
    if abs(x) < 10:
        return f"{x:.2f}"
    return f"{x:.1f}" if abs(x) < 1000 else f"{x:.0f}"


def median_interval(values):
    """The distribution-free 95% confidence interval of the median of sorted `values`: the order
    statistics whose ranks are n/2 -+ 1.96 sqrt(n)/2 (the sign test's normal approximation)."""
    n = len(values)
    if n == 0:
        return (float("nan"), float("nan"))
    k = max(0, int((n - 1.96 * n**0.5) // 2))
    return (values[k], values[n - 1 - k])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--raw", required=True)
    ap.add_argument("--cmds", required=True)
    ap.add_argument("--aim", action="append", default=[])
    ap.add_argument("--note", action="append", default=[])
    a = ap.parse_args()

    samples = collections.OrderedDict()  # group -> OrderedDict(subject -> [ms])
    by_round = {}  # (group, subject) -> {round: ms}
    with open(a.raw) as f:
        for line in f:
            p = line.rstrip("\n").split("\t")
            if len(p) != 4:
                continue
            g, s, r, ms = p
            samples.setdefault(g, collections.OrderedDict()).setdefault(s, []).append(float(ms))
            by_round.setdefault((g, s), {})[r] = float(ms)
    cmds = {}
    try:
        with open(a.cmds) as f:
            for line in f:
                p = line.rstrip("\n").split("\t")
                if len(p) == 3:
                    cmds.setdefault((p[0], p[1]), p[2])
    except FileNotFoundError:
        pass

    def med(g, s):
        v = samples.get(g, {}).get(s)
        return statistics.median(v) if v else None

    out = []
    for g, subs in samples.items():
        ref = next((s for s in subs if s.startswith("carrel")), None)
        out.append(f"### {g}\n")
        if ref:
            out.append(f"| subject | median ms | min–max ms | n | {ref} ÷ subject | {ref} − subject (ms) |")
            out.append("|---|---:|---:|---:|---:|---:|")
        else:
            out.append("| subject | median ms | min–max ms | n |")
            out.append("|---|---:|---:|---:|")
        rm = med(g, ref) if ref else None
        for s, v in subs.items():
            m = statistics.median(v)
            row = f"| {s} | {fmt_ms(m)} | {fmt_ms(min(v))}–{fmt_ms(max(v))} | {len(v)} |"
            if ref:
                if s == ref:
                    row += " — | — |"
                else:
                    ratio = f"{rm / m:.2f}" if m else "—"
                    row += f" {ratio} | {'+' if rm >= m else '-'}{fmt_ms(abs(rm - m))} |"
            out.append(row)
        out.append("")
    # the commands, once per (group, subject)
    if cmds:
        out.append("### Timed commands\n")
        out.append("| group | subject | command |")
        out.append("|---|---|---|")
        for (g, s), c in cmds.items():
            if g in samples and s in samples[g]:
                out.append(f"| {g} | {s} | `{c.replace('|', chr(92) + '|')}` |")
        out.append("")
    if a.aim:
        out.append("### Aims\n")
        out.append("| aim | measured | met |")
        out.append("|---|---:|---|")
        for spec in a.aim:
            label, kind, *args = spec.split("::")
            if kind in ("ratio", "diff"):
                g1, s1, g2, s2, op, lim = args
                x, y = med(g1, s1), med(g2, s2)
                if x is None or y is None:
                    val = None
                else:
                    val = x / y if kind == "ratio" else x - y
            elif kind == "pdiff":
                g1, s1, g2, s2, op, lim = args
                x, y = by_round.get((g1, s1), {}), by_round.get((g2, s2), {})
                paired = sorted(x[r] - y[r] for r in x if r in y)
                val = statistics.median(paired) if paired else None
                ci = median_interval(paired)
            elif kind == "abs":
                g1, s1, op, lim = args
                val = med(g1, s1)
            else:
                sys.exit(f"report.py: unknown aim kind {kind!r}")
            if val is None:
                out.append(f"| {label} | not measured | — |")
                continue
            shown = f"{val:.2f}×" if kind == "ratio" else f"{val:.1f} ms"
            ok = OPS[op](val, float(lim))
            if kind == "pdiff":
                lo, hi = ci
                shown = f"{val:+.2f} ms (95% CI {lo:+.2f} to {hi:+.2f}, {len(paired)} rounds)"
                ok = OPS[op](hi if op in ("<", "<=") else lo, float(lim))
            out.append(f"| {label} ({op} {lim}{'×' if kind == 'ratio' else ' ms'}) | {shown} | {'yes' if ok else '**no**'} |")
        out.append("")
    for n in a.note:
        out.append(n + "\n")
    print("\n".join(out))


if __name__ == "__main__":
    main()
