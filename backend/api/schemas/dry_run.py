"""The body of a dry run (``POST /assessments?dry_run=true``): what the scan set can detect, no job made."""

from __future__ import annotations

from pydantic import BaseModel, Field

from worker.engine.report_verdict import PowerStatement


class AssessmentDryRun(BaseModel):
    """The power statement of an assessment that was checked but not started."""

    dry_run: bool = Field(True, description="Always true: no job was created.")
    model_id: str
    scan_set_id: str
    power: PowerStatement = Field(description="The smallest AUC and TPR at 1% FPR the scan set detects at 80% "
                                              "power, and warnings where they are above the policy's medium thresholds.")
