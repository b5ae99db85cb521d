"""Rigid-body robot cells with pybullet (issue 6: not built yet)."""
