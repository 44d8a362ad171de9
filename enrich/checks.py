"""Data checks run after publishing: they prove that every transaction was processed.

Critical checks (a failure sends the SMS and fails the run):

* ``accounting``: rows read = rows loaded + rows rejected + rows duplicate;
* ``control_total``: the sum of the batch's amounts in the file equals the sum stored for them;
* ``annotations_complete`` / ``tags_complete``: over the *whole database*, every transaction has
  exactly the annotation and the tag row the rules give (none missing, wrong or stale), so
  results lost or altered after an earlier run are caught by the next one;
* ``referential_integrity``: no tag or annotation without its transaction;
* ``reject_ratio``: rejected rows / rows read at most the threshold (default 1%).

Warnings (reported in the card and the metrics):

* ``volume``: rows read within ±50% of the median of the last 7 succeeded runs;
* ``drift_annotations`` / ``drift_tagging``: population stability index of this run's shares
  against the recent succeeded runs at most 0.2;
* ``amount_outliers``: amounts beyond median ± 10·MAD of the batch, listed in ``anomalies``.
"""
from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:  # numpy, Arrow and the tag matcher are imported by the two scans that use them
    import pyarrow as pa

    from enrich.taglists import TagList

Severity = Literal["critical", "warning", "info"]


@dataclass(frozen=True)
class CheckSettings:
    """Thresholds of the checks."""

    reject_threshold: float = 0.01
    volume_tolerance: float = 0.5
    history_runs: int = 7
    psi_threshold: float = 0.2
    mad_factor: float = 10.0
    anomalies_listed: int = 1000


@dataclass(frozen=True)
class CheckResult:
    """One check's verdict, as stored in ``check_results``."""

    check_name: str
    severity: Severity
    passed: bool
    observed: str
    expected: str
    message: str

    def as_row(self) -> dict[str, object]:
        return asdict(self)

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> "CheckResult":
        """A verdict read back from ``check_results``."""
        return cls(check_name=row["check_name"], severity=row["severity"], passed=bool(row["passed"]),
                   observed=row.get("observed") or "", expected=row.get("expected") or "", message=row["message"])


def _result(name: str, severity: Severity, passed: bool, observed: object, expected: object,
            ok: str, failed: str) -> CheckResult:
    return CheckResult(name, severity, bool(passed), str(observed), str(expected), ok if passed else failed)


# --------------------------------------------------------------------------- batch accounting
def check_accounting(read: int, loaded: int, rejected: int, duplicate: int) -> CheckResult:
    """Every row read is accounted for: loaded, rejected or a duplicate."""
    total = loaded + rejected + duplicate
    return _result("accounting", "critical", read == total, read, f"{loaded}+{rejected}+{duplicate}={total}",
                   f"all {read} rows accounted for",
                   f"{read} rows read but {total} accounted for ({read - total:+d}): rows were lost")


def check_control_total(cents_in_file: int, cents_stored: int) -> CheckResult:
    """The batch's amounts, summed as read from the file and as stored, agree to the cent."""
    return _result("control_total", "critical", cents_in_file == cents_stored, _eur(cents_stored),
                   _eur(cents_in_file), f"stored amounts sum to the file's {_eur(cents_in_file)}",
                   f"stored amounts sum to {_eur(cents_stored)}, the file's to {_eur(cents_in_file)}")


def check_reject_ratio(read: int, rejected: int, threshold: float) -> CheckResult:
    """Too many rejected rows means a broken export, not a few bad lines."""
    ratio = rejected / read if read else 0.0
    return _result("reject_ratio", "critical", ratio <= threshold, f"{ratio:.4%}", f"<= {threshold:.2%}",
                   f"{rejected} of {read} rows rejected",
                   f"{rejected} of {read} rows rejected ({ratio:.2%} > {threshold:.2%}): see rejected_rows")


# --------------------------------------------------------------------------- whole database
def check_annotations_complete(discrepancies: Mapping[str, int], repaired: bool = False) -> CheckResult:
    """Every non-zero transaction has exactly its rule's annotation; zero amounts have none.

    ``repaired``: the discrepancies were found in a table changed outside the pipeline,
    which this run then re-derived whole; the check still fails, so that someone looks.
    """
    bad = {k: v for k, v in discrepancies.items() if k != "checked" and v}
    return _result("annotations_complete", "critical", not bad, _counts(bad), "0 missing, 0 wrong",
                   f"all {discrepancies.get('checked', 0)} transactions annotated by the rules",
                   f"annotations differ from the rules: {_counts(bad)}" + (_REPAIRED if repaired else ""))


_REPAIRED = ("; the table had been changed outside the pipeline and this run re-derived it whole: "
             "find out who or what changed it")


def tag_discrepancies(tables: Iterable[pa.Table], tags: TagList) -> dict[str, int]:
    """Compare stored tags (tables of id, wording, tag) with what the rules give for each wording."""
    import numpy as np

    from enrich import tagging

    counts = {"missing": 0, "stale": 0, "wrong": 0, "checked": 0}
    for table in tables:
        matches, expected = tagging.match_tags(table.column("wording"), tags)
        stored = np.array(table.column("tag").to_pylist(), dtype=object)
        has_expected = matches == 1
        has_stored = np.array([value is not None for value in stored], dtype=bool) if len(stored) else \
            np.zeros(0, dtype=bool)
        both = has_expected & has_stored
        counts["missing"] += int((has_expected & ~has_stored).sum())
        counts["stale"] += int((~has_expected & has_stored).sum())
        counts["wrong"] += int((expected[both] != stored[both]).sum())
        counts["checked"] += table.num_rows
    return counts


def check_tags_complete(discrepancies: Mapping[str, int], method: str = "every transaction re-tagged",
                        repaired: bool = False) -> CheckResult:
    """Every transaction's tag row matches the rules for its wording: none missing, stale or wrong.

    ``repaired``: as for :func:`check_annotations_complete`.
    """
    bad = {k: v for k, v in discrepancies.items() if k != "checked" and v}
    return _result("tags_complete", "critical", not bad, _counts(bad), "0 missing, 0 stale, 0 wrong",
                   f"all {discrepancies.get('checked', 0)} transactions tagged by the rules ({method})",
                   f"tags differ from the rules: {_counts(bad)}" + (_REPAIRED if repaired else ""))


def check_referential_integrity(orphans: Mapping[str, int]) -> CheckResult:
    """No tag or annotation refers to a transaction that does not exist."""
    bad = {k: v for k, v in orphans.items() if v}
    return _result("referential_integrity", "critical", not bad, _counts(bad), "no orphan rows",
                   "every tag and annotation has its transaction", f"orphan rows: {_counts(bad)}")


# --------------------------------------------------------------------------- trends
def check_volume(read: int, history: Sequence[int], tolerance: float) -> CheckResult:
    """Rows read within ±tolerance of the median of recent succeeded runs."""
    if not history:
        return _result("volume", "warning", True, read, "no history", "no earlier run to compare with", "")
    median = float(statistics.median(history))
    low, high = median * (1 - tolerance), median * (1 + tolerance)
    return _result("volume", "warning", low <= read <= high, read, f"{low:.0f}..{high:.0f}",
                   f"{read} rows, median of last {len(history)} runs {median:.0f}",
                   f"{read} rows read, outside ±{tolerance:.0%} of the recent median {median:.0f}")


def population_stability_index(current: Mapping[str, int], baseline: Mapping[str, int],
                               floor: float = 1e-4) -> float:
    """PSI = Σ (p − q)·ln(p / q) over categories, shares floored at ``floor``."""
    categories = sorted(set(current) | set(baseline))
    cur_total, base_total = sum(current.values()), sum(baseline.values())
    psi = 0.0
    for category in categories:
        p = max(current.get(category, 0) / cur_total, floor)
        q = max(baseline.get(category, 0) / base_total, floor)
        psi += (p - q) * math.log(p / q)
    return psi


def check_drift(dimension: str, current: Mapping[str, int], baseline: Mapping[str, int],
                threshold: float) -> CheckResult:
    """This run's shares of a dimension against the recent runs' (warning above ``threshold``)."""
    name = f"drift_{dimension}"
    if not sum(current.values()) or not sum(baseline.values()):
        return _result(name, "warning", True, "n/a", f"PSI <= {threshold}",
                       "nothing to compare (no new rows or no history)", "")
    psi = population_stability_index(current, baseline)
    return _result(name, "warning", psi <= threshold, f"PSI {psi:.3f}", f"<= {threshold}",
                   f"{dimension} shares stable (PSI {psi:.3f})",
                   f"{dimension} shares drifted (PSI {psi:.3f} > {threshold}): {_shares(current)} "
                   f"vs {_shares(baseline)}")


def amount_outliers(amounts: pa.Table, factor: float) -> tuple[pa.Table, tuple[int, int] | None]:
    """Transactions (id, amount_cents) beyond median ± factor·MAD, farthest first; the bounds, or
    None when undefined."""
    import numpy as np
    import pyarrow as pa

    ANOMALY_SCHEMA = pa.schema([("transaction_id", pa.int64()), ("kind", pa.string()),  # noqa: N806
                                ("amount_cents", pa.int64()), ("detail", pa.string())])
    cents = amounts.column("amount_cents").to_numpy().astype(np.int64)
    if len(cents) == 0:
        return ANOMALY_SCHEMA.empty_table(), None
    median = float(np.median(cents))
    mad = float(np.median(np.abs(cents - median)))
    if mad == 0:
        return ANOMALY_SCHEMA.empty_table(), None
    low, high = math.floor(median - factor * mad), math.ceil(median + factor * mad)
    outside = (cents < low) | (cents > high)
    found_cents = cents[outside]
    order = np.argsort(-np.abs(found_cents - median), kind="stable")
    detail = f"outside {_eur(low)}..{_eur(high)} (median ± {factor:g}·MAD)"
    table = pa.table([pa.array(amounts.column("id").to_numpy().astype(np.int64)[outside][order]),
                      pa.array(["amount_outlier"] * len(order), pa.string()), pa.array(found_cents[order]),
                      pa.array([detail] * len(order), pa.string())], schema=ANOMALY_SCHEMA)
    return table, (low, high)


def check_outliers(found: int, listed: int, bounds: tuple[int, int] | None) -> CheckResult:
    """Warn when some amounts of the batch are far outside its usual range."""
    expected = f"{_eur(bounds[0])}..{_eur(bounds[1])}" if bounds else "n/a"
    return _result("amount_outliers", "warning", found == 0, found, expected,
                   "no amount outside the robust bound",
                   f"{found} amounts outside {expected} ({listed} listed in anomalies)")


def critical_failures(results: Iterable[CheckResult]) -> list[CheckResult]:
    """The failed critical checks (what alerts and fails the run)."""
    return [r for r in results if r.severity == "critical" and not r.passed]


def _eur(cents: int) -> str:
    sign = "-" if cents < 0 else ""
    return f"{sign}{abs(int(cents)) // 100}.{abs(int(cents)) % 100:02d} EUR"


def _counts(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{v} {k}" for k, v in counts.items()) or "none"


def _shares(counts: Mapping[str, int]) -> str:
    total = sum(counts.values()) or 1
    return "{" + ", ".join(f"{k}: {v / total:.1%}" for k, v in sorted(counts.items())) + "}"
