"""Generative design: sweeps of line variants, Pareto fronts, gradient refinement, Ray scale-out.

One module per job, imported where used (nothing heavy is imported here):

    space       the design-space file (``docs/design-space.md``): parse, validate, apply a variant
    generators  grid, random, Latin hypercube and NSGA-II proposals of variants
    cost        the cost model, floor area from the scene graph's footprints (trimesh)
    evaluate    batches of variants through the process core, common random numbers, local or Ray
    pareto      non-dominated sorting and crowding distance
    gradient    IPA refinement of processing-time targets on serial lines
    results     the results table (Parquet or CSV), the Pareto front as data and as a PNG
    linefile    a :class:`scenes.spec.LineSpec` written back as a line file
    sweep       the driver that chains them (what ``twin sweep`` runs)
"""
