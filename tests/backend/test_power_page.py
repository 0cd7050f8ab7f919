"""The new-assessment page states what each scan set can detect and offers the inconclusive gate."""

from __future__ import annotations

import re
from typing import Any

from tests.backend.job_fixtures import job_cohort, job_inputs, job_model_file  # noqa: F401
from tests.backend.test_web_pages import browser


def test_new_assessment_page_states_power_and_the_inconclusive_gate(
        app: Any, tokens: dict[str, str], job_inputs: dict[str, str]) -> None:  # noqa: F811
    page = browser(app, tokens["alice"]).get("/assessments/new").text
    power = page[page.index('data-role="power"'):]
    power = power[:power.index("</details>")]
    assert "What each scan set can detect" in power
    assert f'data-scan-set="{job_inputs["scan_set_id"]}"' in power
    assert "80% power" in power and "Warning" in power  # the tiny test scan set cannot see medium leakage
    assert re.search(r'<input id="fail_on_inconclusive" name="fail_on_inconclusive" type="checkbox" checked>', page)
