"""Training scenarios: a line, a start state, a timeline of injected events, the actions trainees
may take and how a run is scored (``docs/scenarios.md``).

* :mod:`twin.scenario.spec`: the scenario and actions files (parse, with located errors).
* :mod:`twin.scenario.line`: :class:`ScenarioLine`, a simulated line that plays the timeline,
  takes trainee actions as commands, keeps checkpoints and records everything.
* :mod:`twin.scenario.score`: the score of a recorded run.
* :mod:`twin.scenario.report`: the score report as JSON and as a self-contained HTML page.
* :mod:`twin.scenario.headless`: a scenario run to its end as fast as it can, with scripted
  actions.

Heavy modules (JAX, matplotlib) are imported by the submodules that need them, not here.
"""
