"""``sirtjax verify STUDY -o DIR``: the verification workflow (90Y PET) compared with the plan of the same study."""

from __future__ import annotations

from sirtjax.cli._app import app
from sirtjax.cli.plan import workflow_command


def _summary(result) -> str:
    """The line ``verify`` prints: the liver's mean dose planned and verified, and where the report is."""
    liver = next(r for r in result.verification.comparison if r.name == "liver")["mean_gy"]
    return (f"liver mean dose: plan {liver.plan:.1f} Gy, verification {liver.verification:.1f} Gy; "
            f"report: {result.report_html}")


verify = app.command("verify", help="""Verify a SIRT treatment: dose from the 90Y PET per VOI and its differences from the plan.

Plans first (into OUT/plan/), or compares with the earlier plan in --plan PLAN_DIR.""")(
    workflow_command(True, _summary))
