"""Running a planned job: the only package that starts, joins or talks to Ray.

- `start.py`      start_run / resume_run: check, settle the settings, plan (or load) the run
- `prepare.py`    the run-start checks of a job: custom steps import, patterns, faults
- `settings.py`   what [execution] means for this run on this machine, resolved once
- `run.py`        execute a run: reconcile, schedule, unique keys, publish, final state
- `scheduler.py`  the driver loop over a worker pool: dispatch, retries, timeouts, drain,
                  commits (no Ray import)
- `pool.py`       the WorkerPool protocol, typed task outcomes, InlinePool (in-process)
- `ray_pool.py`   RayActorPool: one actor per worker; every Ray call of the scheduler
- `admission.py`  the concurrency limits (global, per source, bytes, rate, breaker)
- `ray_session.py` connect to (or start) Ray
- `stopping.py`   SIGINT/SIGTERM as a stop request
"""
