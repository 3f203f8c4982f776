"""How often things happen in the synthetic data: the distribution targets the generator draws with.

The rates follow the source reports (see ``generator.py``); they are shares of all cases unless said otherwise.
"""

OPEN_SHARE = 0.09  # drawn open at --to; cases whose planned completion falls after --to add ~1% more
OPEN_SPLIT = (("open_pending", 0.68), ("open_overdue_promised", 0.20), ("open_overdue_legal", 0.12))
EARLY_TARGET = 0.79  # of completed cases (Guangzhou 2007: 78.8%)
ON_TIME_SHARE, LATE_PROMISED_SHARE, LATE_LEGAL_SHARE = 0.155, 0.04, 0.015  # the rest, in these proportions
INSTANT_LATE_SHARE = 0.03  # instant cases completed on a later day than accepted
PROCEDURE_SHARE = 0.03
RUNNING_PROCEDURE_SHARE = 0.10  # of open pending cases: a clock stop still running at --to
SUPPLEMENT_SHARE = 0.10  # of non-instant cases; with the second ones ~8% end with one request, ~1% with two
SECOND_SUPPLEMENT_SHARE = 0.11  # of cases with a supplement request: ~1% of all cases
RETURN_SHARE = 0.045  # some returned cases are still open before their return step at --to
RETURN_ENDS_CASE_SHARE = 0.5  # of returned cases: returned to the applicant and concluded (不予受理)
REFUSAL_SHARE = 0.02
NO_REASON_SHARE = 0.08  # of refusals and returns: no reason given (the refusal-without-reason rule)
FEE_ABOVE_STANDARD_SHARE = 0.02  # of payments on fee items
FEE_ON_FREE_ITEM_SHARE = 0.005  # of completed cases on items that charge nothing
EVALUATION_SHARE = 0.60  # of completed cases
COMPLAINT_SHARE_LATE, COMPLAINT_SHARE_OTHER = 0.02, 0.0008  # with the unlinked ones: ~0.2% of cases
UNLINKED_COMPLAINT_SHARE = 0.0006  # complaints about service in general, not about one case
LATE_ENTRY_SHARE = 0.01  # of finished steps of walk-in cases: entered days after they ended
STEP_OVERRUN_SHARE = 0.02  # of cases: one step takes longer than its own limit, even when the case is on time
ONLINE_SHARE = 0.25
WEEKEND_SHARE = 0.03  # online applications accepted on a weekend or holiday
ITEM_SUBSET_SHARE = 0.85  # of the catalogue items eligible at the node's level
ENTERPRISE_SHARE_LICENCE, ENTERPRISE_SHARE_OTHER = 0.65, 0.15
SATISFACTION_WEIGHTS = (0.72, 0.18, 0.06, 0.03, 0.01)  # codes 1..5 (1 very satisfied)
SATISFACTION_WEIGHTS_LATE = (0.35, 0.25, 0.15, 0.15, 0.10)
MAX_STOP_WORKDAYS = 12  # longest special procedure (clock stop) drawn, in working days

# The outcome classes a case is drawn into; the late ones draw more complaints and worse evaluations.
COMPLETED_CLASSES = ("early", "on_time", "late_promised", "late_legal")
LATE_CLASSES = frozenset({"late_promised", "late_legal", "open_overdue_promised", "open_overdue_legal"})
