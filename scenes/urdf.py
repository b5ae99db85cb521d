"""Robot visuals from a URDF: one GLB asset per link, in the link's own frame.

A viewer draws a robot as one mesh per link placed at the link's world pose (the URDF link
frame, as ``physics.rigid.Cell.link_poses`` reports it), so each link's visuals are merged, their
``<origin>`` offsets and ``scale`` baked in, and published by content hash like any other asset
(:mod:`scenes.assets`). Mesh files (OBJ, STL, DAE where trimesh reads them) are resolved relative
to the URDF; boxes, cylinders and spheres are built. A URDF named like ``kuka_iiwa/model.urdf``
that is not a file is looked up in ``pybullet_data``.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .assets import AssetStore, load_mesh, mesh_size, to_glb
from .errors import ConfigError


@dataclass(frozen=True, slots=True, kw_only=True)
class LinkVisual:
    """A link's published visual: its GLB ``asset`` (sha256) and bounding-box ``size`` (m)."""

    link: str
    asset: str
    size: tuple[float, float, float]


def resolve_urdf(urdf: str) -> Path:
    """The URDF file: a path, or a name inside ``pybullet_data``. ConfigError if neither."""
    path = Path(urdf)
    if path.is_file():
        return path
    try:
        import pybullet_data
    except ImportError as exc:
        raise ConfigError(
            f"URDF {urdf!r} is not a file, and pybullet_data is not installed"
        ) from exc
    candidate = Path(pybullet_data.getDataPath()) / urdf
    if candidate.is_file():
        return candidate
    raise ConfigError(f"URDF {urdf!r}: no such file, here or in pybullet_data")


def _origin(el: ET.Element | None) -> Any:
    """The 4x4 transform of a URDF ``<origin xyz rpy>`` (fixed-axis roll, pitch, yaw)."""
    import numpy as np

    m = np.eye(4)
    if el is None:
        return m
    xyz = [float(v) for v in el.get("xyz", "0 0 0").split()]
    r, p, y = (float(v) for v in el.get("rpy", "0 0 0").split())
    cr, sr, cp, sp, cy, sy = (
        math.cos(r),
        math.sin(r),
        math.cos(p),
        math.sin(p),
        math.cos(y),
        math.sin(y),
    )
    m[:3, :3] = [  # Rz(yaw) @ Ry(pitch) @ Rx(roll)
        [cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
        [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
        [-sp, cp * sr, cp * cr],
    ]
    m[:3, 3] = xyz
    return m


def _geometry(geom: ET.Element, base: Path) -> Any:
    import trimesh

    mesh_el = geom.find("mesh")
    if mesh_el is not None:
        name = mesh_el.get("filename", "")
        if name.startswith("package://"):
            name = name.split("/", 3)[-1]
        mesh = load_mesh(base / name)
        scale = [float(v) for v in mesh_el.get("scale", "1 1 1").split()]
        mesh.apply_scale(scale if len(scale) == 3 else scale[0])
        return mesh
    box = geom.find("box")
    if box is not None:
        return trimesh.creation.box(extents=[float(v) for v in box.get("size", "0 0 0").split()])
    cyl = geom.find("cylinder")
    if cyl is not None:
        return trimesh.creation.cylinder(
            radius=float(cyl.get("radius", "0")), height=float(cyl.get("length", "0"))
        )
    sphere = geom.find("sphere")
    if sphere is not None:
        return trimesh.creation.icosphere(radius=float(sphere.get("radius", "0")))
    return None


def publish_urdf_links(urdf: str, store: AssetStore) -> dict[str, LinkVisual]:
    """Publish every link's visual of ``urdf`` into ``store``; links without visuals are left
    out. Raises ConfigError naming the file for an unreadable URDF."""
    import trimesh

    path = resolve_urdf(urdf)
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise ConfigError(f"{path}: not a URDF: {exc}") from exc
    out: dict[str, LinkVisual] = {}
    for link in root.iter("link"):
        name = link.get("name", "")
        parts = []
        for visual in link.findall("visual"):
            geom = visual.find("geometry")
            mesh = None if geom is None else _geometry(geom, path.parent)
            if mesh is None:
                continue
            mesh = mesh.copy()
            mesh.apply_transform(_origin(visual.find("origin")))
            parts.append(mesh)
        if not parts:
            continue
        merged = trimesh.util.concatenate(parts) if len(parts) > 1 else parts[0]
        size = mesh_size(merged)
        if not all(math.isfinite(v) for v in size):
            continue
        out[name] = LinkVisual(link=name, asset=store.put(to_glb(merged)), size=size)
    return out
