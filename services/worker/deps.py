"""The jobs of this install, for a request: the app is composed with the job list (services.app.jobs puts its
``default_jobs`` on ``app.state.jobs_for``), so the job health API and readiness read it without importing the top
floor."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from services.worker.jobs import JobSpec


def get_jobs(request: Request) -> list[JobSpec]:
    """The jobs this install runs, built from the app's settings."""
    jobs: list[JobSpec] = request.app.state.jobs_for(request.app.state.settings)
    return jobs


JobsDep = Annotated[list[JobSpec], Depends(get_jobs)]
