"""The verdict engine: every report (lab, precision, TruthfulQA, detection) judges a claim here.

Why these tests: with the 3–5 runs a CPU affords, a percentile bootstrap of a mean difference covers its nominal
95% only about 87% of the time, so a verdict rests on Welch's t-test (a one-sided p in the claimed direction) and
its t-based confidence interval with Welch–Satterthwaite degrees of freedom; ratios get a Fieller interval, which
exists exactly when the denominator's mean is significantly non-zero. Mann-Whitney U is reported beside it; a
bootstrap may be shown by a report but never decides. A claim over several arms is a family: Holm-adjusted.

The interval is the two-sided ``1 − 2α`` one (90% for α = 0.05): its ends are the one-sided 95% bounds, so
"adjusted p < α in the claimed direction" and "the interval excludes no effect" agree.

Rules (the project's verdict rules):
- ``too few runs``: n < 3 in an arm. ``not measured``: no runs speak to the claim.
- ``holds``: adjusted p < α in the claimed direction, and the interval reaches the claimed magnitude if one is
  claimed. ``does not hold``: the interval excludes the claimed magnitude (or lies on the opposite side of no
  effect). ``inconclusive``: neither.
- ``not specific to KSS``: a claim about KSS whose effect appears equally in dense LoRA at the same γ.

Functions take the data first and options by keyword; the array cores (:func:`welch_arrays`) are vectorised so
the null simulations in the tests go through the very code that judges the published claims.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
from scipy import stats as sps

HOLDS = "holds"
DOES_NOT_HOLD = "does not hold"
INCONCLUSIVE = "inconclusive"
TOO_FEW_RUNS = "too few runs"
NOT_SPECIFIC = "not specific to KSS"
NOT_MEASURED = "not measured"
VERDICTS = (HOLDS, DOES_NOT_HOLD, INCONCLUSIVE, TOO_FEW_RUNS, NOT_SPECIFIC, NOT_MEASURED)

ALPHA = 0.05
MIN_RUNS = 3
CI_LEVEL = 1 - 2 * ALPHA
# The columns of claims.csv, in order (the machine-readable verdict).
CLAIM_COLUMNS = (
    "claim",
    "verdict",
    "metric",
    "treatment",
    "control",
    "n_treatment",
    "n_control",
    "effect",
    "ci_low",
    "ci_high",
    "test",
    "p_value",
    "p_adjusted",
)
EXTRA_COLUMNS = ("claim_verdict", "role", "direction", "scale", "claimed", "ratio", "ratio_low", "ratio_high", "p_mwu")


def finite(values: Any) -> np.ndarray:
    """The finite values of a sequence, as floats."""
    a = np.asarray(values, dtype=float).ravel()
    return a[np.isfinite(a)]


# ----------------------------------------------------------------------------- the tests


def welch_arrays(
    a: np.ndarray, b: np.ndarray, *, alternative: str = "two-sided", level: float = CI_LEVEL
) -> dict[str, np.ndarray]:
    """Welch's t-test of ``mean(a) − mean(b)`` along the last axis (one comparison per row of 2-D input).

    Returns the difference, the t-based interval at ``level`` with Welch–Satterthwaite df, the df and the p-value
    for ``alternative`` ("less": a below b). NaN where an arm has fewer than 2 values or neither has spread.
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    na, nb = a.shape[-1], b.shape[-1]
    diff = a.mean(axis=-1) - b.mean(axis=-1)
    nan = np.full(np.shape(diff), np.nan)
    if na < 2 or nb < 2:
        return {"effect": diff, "ci_low": nan, "ci_high": nan, "df": nan, "p": nan}
    va, vb = a.var(axis=-1, ddof=1) / na, b.var(axis=-1, ddof=1) / nb
    se = np.sqrt(va + vb)
    with np.errstate(divide="ignore", invalid="ignore"):
        df = (va + vb) ** 2 / (va**2 / (na - 1) + vb**2 / (nb - 1))
        t = diff / se
    p = {"two-sided": 2 * sps.t.sf(np.abs(t), df), "less": sps.t.cdf(t, df), "greater": sps.t.sf(t, df)}[alternative]
    half = sps.t.ppf(0.5 + level / 2, df) * se
    bad = ~(se > 0)
    return {
        "effect": diff,
        "ci_low": np.where(bad, np.nan, diff - half),
        "ci_high": np.where(bad, np.nan, diff + half),
        "df": np.where(bad, np.nan, df),
        "p": np.where(bad, np.nan, p),
    }


def one_sample_arrays(
    a: np.ndarray, *, value: float = 0.0, alternative: str = "two-sided", level: float = CI_LEVEL
) -> dict[str, np.ndarray]:
    """One-sample t-test of ``mean(a) − value`` along the last axis; the interval is of ``mean(a) − value``."""
    a = np.asarray(a, dtype=float)
    n = a.shape[-1]
    diff = a.mean(axis=-1) - value
    if n < 2:
        nan = np.full(np.shape(diff), np.nan)
        return {"effect": diff, "ci_low": nan, "ci_high": nan, "df": nan, "p": nan}
    se = a.std(axis=-1, ddof=1) / math.sqrt(n)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = diff / se
    df = float(n - 1)
    p = {"two-sided": 2 * sps.t.sf(np.abs(t), df), "less": sps.t.cdf(t, df), "greater": sps.t.sf(t, df)}[alternative]
    half = sps.t.ppf(0.5 + level / 2, df) * se
    bad = ~(se > 0)
    return {
        "effect": diff,
        "ci_low": np.where(bad, np.nan, diff - half),
        "ci_high": np.where(bad, np.nan, diff + half),
        "df": np.full(np.shape(diff), df),
        "p": np.where(bad, np.nan, p),
    }


def fieller_ratio(a: Any, b: Any, *, level: float = CI_LEVEL) -> tuple[float, float, float]:
    """``mean(a) / mean(b)`` and its Fieller interval (independent arms, Welch–Satterthwaite df).

    NaN ends when the interval is unbounded, i.e. when mean(b) is not significantly non-zero at ``level``: then
    the ratio is undefined (a κ_rel whose baseline gap's interval reaches 0) and a report uses differences.
    """
    a, b = finite(a), finite(b)
    if len(a) < 2 or len(b) < 2 or b.mean() == 0:
        return (float(a.mean() / b.mean()) if len(a) and len(b) and b.mean() else math.nan), math.nan, math.nan
    ma, mb = a.mean(), b.mean()
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    point = ma / mb
    denom_df = (va + point**2 * vb) ** 2 / (va**2 / (len(a) - 1) + (point**2 * vb) ** 2 / (len(b) - 1) or math.inf)
    df = denom_df if math.isfinite(denom_df) and denom_df > 0 else float(len(a) + len(b) - 2)
    t2 = sps.t.ppf(0.5 + level / 2, df) ** 2
    qa = mb**2 - t2 * vb
    if qa <= 0:
        return float(point), math.nan, math.nan
    qb = -2 * ma * mb
    qc = ma**2 - t2 * va
    disc = qb**2 - 4 * qa * qc
    if disc < 0:
        return float(point), math.nan, math.nan
    r1, r2 = (-qb - math.sqrt(disc)) / (2 * qa), (-qb + math.sqrt(disc)) / (2 * qa)
    return float(point), float(min(r1, r2)), float(max(r1, r2))


def mann_whitney_p(a: Any, b: Any) -> float:
    """Two-sided Mann-Whitney U p-value (exact for small samples without ties); NaN for an empty arm."""
    a, b = finite(a), finite(b)
    if len(a) == 0 or len(b) == 0:
        return math.nan
    return float(sps.mannwhitneyu(a, b, alternative="two-sided").pvalue)


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment; NaN p-values stay NaN and do not count towards the family size."""
    p = np.asarray(p_values, dtype=float)
    out = np.full(len(p), np.nan)
    idx = np.flatnonzero(np.isfinite(p))
    m = len(idx)
    order = idx[np.argsort(p[idx], kind="stable")]
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out.tolist()


# ----------------------------------------------------------------------------- one comparison


@dataclass(frozen=True)
class Comparison:
    """One arm against another (or one arm against a fixed value) on one metric, judged against a claim.

    ``direction`` is the claimed sign of ``treatment − control`` ("less" or "greater"); ``claimed`` the claimed
    magnitude on ``scale`` ("difference", "ratio" of means, or "mean" for a one-arm claim), None for "any".
    """

    claim: str
    metric: str
    treatment: str
    control: str
    n_treatment: int
    n_control: int
    effect: float
    ci_low: float
    ci_high: float
    test: str
    p_value: float
    direction: str
    scale: str = "difference"
    claimed: float | None = None
    ratio: float = math.nan
    ratio_low: float = math.nan
    ratio_high: float = math.nan
    p_mwu: float = math.nan
    p_adjusted: float = math.nan
    role: str = "claim"
    verdict: str = NOT_MEASURED
    claim_verdict: str = ""
    note: str = ""

    def row(self) -> dict[str, Any]:
        """The claims.csv row: the required columns, then the extras a reader needs to recompute the verdict."""
        d = asdict(self)
        return {k: d[k] for k in (*CLAIM_COLUMNS, *EXTRA_COLUMNS)}


def compare(
    treatment: Any,
    control: Any,
    *,
    claim: str,
    metric: str,
    treatment_label: str,
    control_label: str,
    direction: str,
    scale: str = "difference",
    claimed: float | None = None,
    role: str = "claim",
) -> Comparison:
    """Welch's t-test of treatment − control (one-sided in ``direction``), its interval, Fieller for a ratio, MWU."""
    if direction not in ("less", "greater"):
        raise ValueError(f"direction must be 'less' or 'greater', got {direction!r}")
    t, c = finite(treatment), finite(control)
    w = welch_arrays(t, c, alternative=direction) if len(t) and len(c) else None
    ratio = fieller_ratio(t, c) if scale == "ratio" else (math.nan, math.nan, math.nan)
    return Comparison(
        claim=claim,
        metric=metric,
        treatment=treatment_label,
        control=control_label,
        n_treatment=len(t),
        n_control=len(c),
        **_test_fields(w),
        test=f"Welch t, one-sided ({direction})",
        direction=direction,
        scale=scale,
        claimed=claimed,
        ratio=ratio[0],
        ratio_low=ratio[1],
        ratio_high=ratio[2],
        p_mwu=mann_whitney_p(t, c),
        role=role,
    )


def _test_fields(result: dict[str, Any] | None) -> dict[str, float]:
    """A test's effect, interval and p as Comparison fields (all NaN when an arm had no finite value)."""
    keys = {"effect": "effect", "ci_low": "ci_low", "ci_high": "ci_high", "p_value": "p"}
    return {field: float(result[key]) if result else math.nan for field, key in keys.items()}


def compare_to_value(
    values: Any,
    *,
    claim: str,
    metric: str,
    label: str,
    value: float = 0.0,
    direction: str,
    role: str = "claim",
) -> Comparison:
    """A one-arm claim ("the gap is negative"): one-sample t-test of mean − ``value`` in ``direction``."""
    v = finite(values)
    s = one_sample_arrays(v, value=value, alternative=direction) if len(v) else None
    return Comparison(
        claim=claim,
        metric=metric,
        treatment=label,
        control="",
        n_treatment=len(v),
        n_control=0,
        **_test_fields(s),
        test=f"one-sample t vs {value:.12g}, one-sided ({direction})",
        direction=direction,
        scale="mean",
        role=role,
    )


def compare_paired(
    treatment: Any,
    control: Any,
    *,
    claim: str,
    metric: str,
    treatment_label: str,
    control_label: str,
    direction: str,
    pair: str,
    role: str = "claim",
) -> Comparison:
    """Two arms measured on the same units (questions, seeds): one-sample t on the paired differences.

    ``treatment`` and ``control`` are aligned arrays (unit i in both); pairs with a missing value are dropped.
    Wilcoxon's signed-rank p is reported beside it (in ``p_mwu``, the rank test's column).
    """
    t, c = np.asarray(treatment, dtype=float), np.asarray(control, dtype=float)
    keep = np.isfinite(t) & np.isfinite(c)
    d = t[keep] - c[keep]
    s = one_sample_arrays(d, alternative=direction) if len(d) else None
    rank_p = float(sps.wilcoxon(d).pvalue) if len(d) and np.any(d != 0) else math.nan
    return Comparison(
        claim=claim,
        metric=metric,
        treatment=treatment_label,
        control=control_label,
        n_treatment=len(d),
        n_control=len(d),
        **_test_fields(s),
        test=f"paired t over {pair}, one-sided ({direction})",
        direction=direction,
        p_mwu=rank_p,
        role=role,
    )


def log_ratio_change(
    treatment_num: Any,
    treatment_den: Any,
    control_num: Any,
    control_den: Any,
    *,
    claim: str,
    metric: str,
    treatment_label: str,
    control_label: str,
    direction: str,
    claimed: float | None = None,
    level: float = CI_LEVEL,
) -> Comparison:
    """``log(mean tn / mean td) − log(mean cn / mean cd)``: does a ratio (κ_rel, a degradation) change between settings?

    Delta-method t on the four independent arms (Welch–Satterthwaite df). Undefined (NaN interval, so
    ``inconclusive``) unless every arm's mean is clearly above 0: a ratio of gaps whose interval reaches 0 means
    nothing, and a report then uses differences.
    """
    arms = [finite(x) for x in (treatment_num, treatment_den, control_num, control_den)]
    nan = math.nan
    n_t, n_c = min(len(arms[0]), len(arms[1])), min(len(arms[2]), len(arms[3]))
    effect, lo, hi, p = nan, nan, nan, nan
    if all(len(a) >= 2 for a in arms):
        means = [a.mean() for a in arms]
        v = [a.var(ddof=1) / len(a) for a in arms]
        lower = [m - sps.t.ppf(0.5 + level / 2, len(a) - 1) * math.sqrt(vi) for a, m, vi in zip(arms, means, v)]
        if all(m > 0 for m in means):
            effect = math.log(means[0] / means[1]) - math.log(means[2] / means[3])
        if all(x > 0 for x in lower):
            rel = [vi / m**2 for vi, m in zip(v, means)]
            se = math.sqrt(sum(rel))
            df = sum(rel) ** 2 / sum(r**2 / (len(a) - 1) for r, a in zip(rel, arms)) if se > 0 else nan
            if se > 0:
                half = sps.t.ppf(0.5 + level / 2, df) * se
                lo, hi = effect - half, effect + half
                t = effect / se
                p = float(sps.t.cdf(t, df) if direction == "less" else sps.t.sf(t, df))
    return Comparison(
        claim=claim,
        metric=metric,
        treatment=treatment_label,
        control=control_label,
        n_treatment=n_t,
        n_control=n_c,
        effect=effect,
        ci_low=lo,
        ci_high=hi,
        test=f"delta-method t on the log-ratio change, one-sided ({direction})",
        p_value=p,
        direction=direction,
        scale="log-ratio change",
        claimed=claimed,
    )


def not_measured(claim: str, metric: str = "", *, note: str = "") -> Comparison:
    """The row of a claim no runs speak to."""
    nan = math.nan
    return Comparison(claim, metric, "", "", 0, 0, nan, nan, nan, "", nan, "less", note=note)


# ----------------------------------------------------------------------------- verdicts


def _too_few(c: Comparison) -> bool:
    return c.n_treatment < MIN_RUNS or (c.scale != "mean" and c.n_control < MIN_RUNS)


def holds_rule(p: Any, lo: Any, hi: Any, *, direction: str, target: float) -> Any:
    """``holds``: p < α in the claimed direction and the interval reaching ``target`` (vectorised)."""
    reaches = np.asarray(lo) <= target if direction == "less" else np.asarray(hi) >= target
    return (np.asarray(p) < ALPHA) & reaches


def excluded_rule(lo: Any, hi: Any, *, direction: str, target: float) -> Any:
    """``does not hold``: the interval lies wholly on the far side of ``target`` (vectorised)."""
    return np.asarray(lo) > target if direction == "less" else np.asarray(hi) < target


def judge(c: Comparison) -> str:
    """The verdict of one comparison from its (adjusted, if in a family) p-value and its interval."""
    if c.n_treatment == 0:
        return NOT_MEASURED
    if _too_few(c):
        return TOO_FEW_RUNS
    p = c.p_adjusted if math.isfinite(c.p_adjusted) else c.p_value
    if c.scale == "ratio" and c.claimed is not None:
        lo, hi, null = c.ratio_low, c.ratio_high, 1.0
    else:
        lo, hi, null = c.ci_low, c.ci_high, 0.0
    if not (math.isfinite(lo) and math.isfinite(hi) and math.isfinite(p)):
        return INCONCLUSIVE
    target = c.claimed if c.claimed is not None else null
    if holds_rule(p, lo, hi, direction=c.direction, target=target):
        return HOLDS
    return DOES_NOT_HOLD if excluded_rule(lo, hi, direction=c.direction, target=target) else INCONCLUSIVE


def judge_bound(c: Comparison, *, bound: float) -> str:
    """A non-inferiority claim ("treatment − control is at most ``bound``", on ``c.scale``): the interval decides.

    holds: the upper end is at most the bound (the one-sided test of "above the bound" rejects at α);
    does not hold: the lower end is above it.
    """
    if c.n_treatment == 0:
        return NOT_MEASURED
    if _too_few(c):
        return TOO_FEW_RUNS
    lo, hi = (c.ratio_low, c.ratio_high) if c.scale == "ratio" else (c.ci_low, c.ci_high)
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return INCONCLUSIVE
    return HOLDS if hi <= bound else DOES_NOT_HOLD if lo > bound else INCONCLUSIVE


def judge_family(comparisons: Sequence[Comparison]) -> list[Comparison]:
    """Holm-adjust the p-values of a claim's comparisons (one family) and judge each."""
    adjusted = holm([c.p_value if not _too_few(c) else math.nan for c in comparisons])
    out = []
    for c, p in zip(comparisons, adjusted):
        c = replace(c, p_adjusted=p)
        out.append(replace(c, verdict=judge(c)))
    return out


def combine(verdicts: Sequence[str], *, expected: int | None = None) -> str:
    """A claim over several parts ("every preset …"): every part must be measured and hold.

    A missing part (fewer measured than ``expected``) leaves the claim inconclusive, whatever the measured parts
    say; otherwise one part that does not hold refutes "every", and a part with too few runs leaves it unjudged.
    """
    if not verdicts or all(v == NOT_MEASURED for v in verdicts):
        return NOT_MEASURED
    measured = [v for v in verdicts if v != NOT_MEASURED]
    if (expected is not None and len(measured) < expected) or len(measured) < len(verdicts):
        return INCONCLUSIVE  # "every preset …" cannot be judged, either way, from some of them
    if any(v == DOES_NOT_HOLD for v in verdicts):
        return DOES_NOT_HOLD
    if any(v == TOO_FEW_RUNS for v in measured):
        return TOO_FEW_RUNS
    if all(v == HOLDS for v in measured):
        return HOLDS
    if all(v in (HOLDS, NOT_SPECIFIC) for v in measured):
        return NOT_SPECIFIC  # the effect is there, but some of it is γ's, not the mask's
    return INCONCLUSIVE


def matched_gamma(verdict: str, *, control_shows_effect: str, kss_beyond_control: str) -> str:
    """The matched-γ rule for a claim about KSS.

    ``verdict``: the claim's verdict against its baseline. ``control_shows_effect``: the same claim judged for dense
    LoRA at the same γ against the same baseline. ``kss_beyond_control``: KSS against that dense arm, in the
    claimed direction. Where the dense arm shows the effect and KSS does not add to it, the effect is γ's.
    """
    if verdict != HOLDS:
        return verdict
    if control_shows_effect == HOLDS and kss_beyond_control != HOLDS:
        return NOT_SPECIFIC
    return verdict


@dataclass
class ClaimVerdict:
    """A judged claim: its comparisons (claims.csv rows) and the one verdict the prose states."""

    id: str
    text: str
    published: str  # the published number(s) and setting
    measured: str  # our number(s) with their interval, in words
    verdict: str
    note: str = ""
    comparisons: list[Comparison] = field(default_factory=list)

    def rows(self) -> list[dict[str, Any]]:
        if not self.comparisons:
            return [replace(not_measured(self.id), verdict=self.verdict, claim_verdict=self.verdict).row()]
        # A comparison judged alone is a family of one: its adjusted p is its p.
        return [
            replace(
                c,
                claim=self.id,
                claim_verdict=self.verdict,
                p_adjusted=c.p_adjusted if math.isfinite(c.p_adjusted) else c.p_value,
            ).row()
            for c in self.comparisons
        ]

    def as_dict(self) -> dict[str, str]:
        return {
            "claim": self.text,
            "published": self.published,
            "measured here": self.measured,
            "verdict": self.verdict,
            "note": self.note,
        }
