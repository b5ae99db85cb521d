"""Physics: the JAX process core (``physics.process``) and rigid-body robot cells (``physics.rigid``).

Arrows point down: physics imports ``scenes`` only, never ``twin``, ``streaming`` or ``viewer``.
"""
