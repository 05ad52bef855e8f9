"""Job health over HTTP (admin only)."""

from __future__ import annotations

from fastapi import APIRouter

from services.api.deps import AdminKey, SessionDep
from services.api.pages import Page
from services.core.errors import NotFound
from services.worker import health
from services.worker.deps import JobsDep
from services.worker.schemas import JobHealthOut

router = APIRouter(prefix="/v1/admin/jobs", tags=["admin"])


class JobNotFound(NotFound):
    code = "job_not_found"


@router.get("")
def list_jobs(session: SessionDep, jobs: JobsDep, _admin: AdminKey) -> Page[JobHealthOut]:
    """Every job's health: last start, last success, last error and its message, items processed (one page: there
    are as many as the worker registers)."""
    views = health.list_job_health(session, jobs)
    return Page[JobHealthOut](data=views, has_more=False)


@router.get("/{job}")
def get_job(job: str, session: SessionDep, jobs: JobsDep, _admin: AdminKey) -> JobHealthOut:
    found = health.get_job_health(session, job, jobs)
    if found is None:
        raise JobNotFound(f"no job named {job!r}", job=job)
    return found
