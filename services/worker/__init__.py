"""The worker: what a job is (``jobs.py``), the runner and the scheduler that run the jobs they are given, and job
health. The list of jobs is composed on the top floor (services.app.jobs)."""
