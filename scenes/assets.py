"""Meshes: load with trimesh, normalize (units, up axis), simplify, publish as content-addressed GLB.

trimesh is imported inside the functions that need it, so ``import scenes`` stays light.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from scenes.errors import TwinError


class MeshLoadError(TwinError):
    """A mesh file exists but cannot be read as a triangle mesh."""


def load_mesh(path: str | Path) -> Any:
    """Load a mesh file as one ``trimesh.Trimesh`` (scenes are concatenated).

    Raises :class:`MeshLoadError` with trimesh's reason when the file is not a usable mesh.
    """
    import trimesh

    p = Path(path)
    try:
        loaded = trimesh.load(p, force="mesh", process=True)
    except Exception as exc:  # trimesh raises many types for bad files
        raise MeshLoadError(f"{p.name}: {exc}") from exc
    if not isinstance(loaded, trimesh.Trimesh) or len(loaded.faces) == 0:
        raise MeshLoadError(f"{p.name}: no triangles found")
    return loaded
