"""The ledger: quota reservations and rate limits shared by every edge (Redis, or in-process)."""

from .base import (
    Admission,
    AdmissionResult,
    Ledger,
    Release,
    Settlement,
    Verdict,
    from_ledger_units,
    ledger_period,
    to_ledger_units,
)

__all__ = [
    "Admission",
    "AdmissionResult",
    "Ledger",
    "Release",
    "Settlement",
    "Verdict",
    "from_ledger_units",
    "ledger_period",
    "to_ledger_units",
]
