"""Meshes: load with trimesh, normalize (units, up axis), simplify, publish as content-addressed GLB.

trimesh is imported inside the functions that need it, so ``import scenes`` stays light.

A published asset is a GLB file named by the sha256 of its bytes (``<sha>.glb``): the same
geometry always gets the same name, so a server can let browsers cache it forever
(:func:`cache_headers`). GLBs are written in the engine frame (metres, **Z up**), like the scene
graph that places them, not in glTF's usual Y-up convention; see ``docs/scene-graph.md``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from scenes.errors import TwinError
from scenes.graph import BoxGeometry, SceneGraph, Vec3, build_graph, station_id, with_assets
from scenes.spec import LineSpec

log = logging.getLogger(__name__)


class MeshLoadError(TwinError):
    """A mesh file exists but cannot be read as a triangle mesh."""


class SimplifyUnavailableError(TwinError):
    """Quadric decimation was asked for but its package (fast-simplification) is not installed."""


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


# -- normalization -----------------------------------------------------------------------------


class UpAxis(StrEnum):
    """The axis a mesh file treats as up."""

    Y = "y"
    Z = "z"


#: Up axis by file suffix: glTF is Y-up by its specification and OBJ by habit; STL and PLY
#: mostly come from CAD and scanners, which are Z-up.
UP_AXIS_BY_SUFFIX: Mapping[str, UpAxis] = {
    ".glb": UpAxis.Y,
    ".gltf": UpAxis.Y,
    ".obj": UpAxis.Y,
    ".stl": UpAxis.Z,
    ".ply": UpAxis.Z,
}


def up_axis_for(path: str | Path) -> UpAxis:
    """The up axis assumed for a mesh file, from its suffix (Z for unknown suffixes)."""
    return UP_AXIS_BY_SUFFIX.get(Path(path).suffix.lower(), UpAxis.Z)


def normalize_mesh(mesh: Any, *, scale: float = 1.0, up: UpAxis = UpAxis.Z) -> Any:
    """A normalized copy of ``mesh`` (a ``trimesh.Trimesh``) in the engine frame.

    Scales by ``scale`` (file units to metres), turns a Y-up mesh Z-up (+90° about x: +y becomes
    +z, and a glTF model's front, +z, faces -y), then moves it so its footprint (the xy
    bounding box) is centred on the origin and its lowest point is at z = 0.
    Metadata (file names and the like) is dropped so it cannot change the published bytes.
    """
    import numpy as np
    import trimesh

    if not scale > 0:
        raise ValueError(f"scale must be > 0, got {scale}")
    out = trimesh.Trimesh(
        vertices=np.asarray(mesh.vertices, dtype=np.float64),
        faces=np.asarray(mesh.faces, dtype=np.int64),
        visual=mesh.visual.copy() if getattr(mesh, "visual", None) is not None else None,
        process=False,
    )
    matrix = np.eye(4) * scale
    matrix[3, 3] = 1.0
    if up is UpAxis.Y:
        y_to_z = np.array(
            [
                [1.0, 0.0, 0.0, 0.0],
                [0.0, 0.0, -1.0, 0.0],
                [0.0, 1.0, 0.0, 0.0],
                [0.0, 0.0, 0.0, 1.0],
            ]
        )
        matrix = y_to_z @ matrix
    out.apply_transform(matrix)
    lo, hi = out.bounds
    out.apply_translation((-(lo[0] + hi[0]) / 2.0, -(lo[1] + hi[1]) / 2.0, -lo[2]))
    out.metadata = {}
    return out


def mesh_size(mesh: Any) -> Vec3:
    """Bounding-box size (x, y, z) of a mesh in metres."""
    ext = mesh.extents
    return (float(ext[0]), float(ext[1]), float(ext[2]))


# -- simplification ----------------------------------------------------------------------------


class SimplifyMethod(StrEnum):
    """``quadric``: trimesh's quadric decimation (needs the fast-simplification package).
    ``cluster``: vertex clustering on a uniform grid (numpy only; coarser, but always there)."""

    QUADRIC = "quadric"
    CLUSTER = "cluster"


def quadric_available() -> bool:
    """Whether trimesh's quadric decimation can run here."""
    import importlib.util

    return importlib.util.find_spec("fast_simplification") is not None


@dataclass(frozen=True, slots=True, kw_only=True)
class Simplified:
    """The result of :func:`simplify_mesh`: the mesh, the method used (``None`` when the mesh
    was already small enough) and the face counts before and after."""

    mesh: Any
    method: SimplifyMethod | None
    faces_before: int
    faces_after: int


def simplify_mesh(mesh: Any, max_faces: int, *, method: SimplifyMethod | None = None) -> Simplified:
    """Reduce ``mesh`` to at most about ``max_faces`` triangles.

    ``method=None`` uses quadric decimation when fast-simplification is installed and vertex
    clustering otherwise (logged at INFO, and reported in the result). Asking for ``QUADRIC``
    without the package raises :class:`SimplifyUnavailableError`. Vertex clustering drops
    texture coordinates and colours. A mesh at or under ``max_faces`` is returned unchanged.
    """
    if max_faces < 4:
        raise ValueError(f"max_faces must be >= 4, got {max_faces}")
    before = len(mesh.faces)
    if before <= max_faces:
        return Simplified(mesh=mesh, method=None, faces_before=before, faces_after=before)
    if method is None:
        method = SimplifyMethod.QUADRIC if quadric_available() else SimplifyMethod.CLUSTER
        if method is SimplifyMethod.CLUSTER:
            log.info("fast-simplification is not installed: simplifying by vertex clustering")
    if method is SimplifyMethod.QUADRIC:
        if not quadric_available():
            raise SimplifyUnavailableError(
                "quadric decimation needs the fast-simplification package "
                "(pip install fast-simplification), or use method='cluster'"
            )
        out = mesh.simplify_quadric_decimation(face_count=max_faces)
    else:
        out = _cluster_decimate(mesh, max_faces)
    return Simplified(mesh=out, method=method, faces_before=before, faces_after=len(out.faces))


def _cluster_decimate(mesh: Any, max_faces: int) -> Any:
    """Vertex clustering: merge the vertices in each cell of a grid over the bounding box into
    their mean, drop collapsed and duplicate faces; the cell size is found by bisection so
    the face count lands at or under ``max_faces`` (the finest such grid)."""
    import numpy as np
    import trimesh

    verts = np.asarray(mesh.vertices, dtype=np.float64)
    faces = np.asarray(mesh.faces, dtype=np.int64)
    lo = verts.min(axis=0)
    span = float(np.max(verts.max(axis=0) - lo)) or 1.0

    def cluster(cells: int) -> tuple[Any, Any]:
        size = span / cells
        keys = np.floor((verts - lo) / size).astype(np.int64)
        keys = np.minimum(keys, cells - 1)
        _, inverse = np.unique(keys, axis=0, return_inverse=True)
        inverse = inverse.reshape(-1)
        n = int(inverse.max()) + 1
        counts = np.bincount(inverse, minlength=n).astype(np.float64)
        sums = [np.bincount(inverse, weights=verts[:, k], minlength=n) for k in range(3)]
        new_verts = np.stack(sums, axis=1) / counts[:, None]
        f = inverse[faces]
        keep = (f[:, 0] != f[:, 1]) & (f[:, 1] != f[:, 2]) & (f[:, 0] != f[:, 2])
        f = f[keep]
        if len(f):
            _, first = np.unique(np.sort(f, axis=1), axis=0, return_index=True)
            f = f[np.sort(first)]
        return new_verts, f

    low, high = 1, 1024
    best = cluster(low)
    while low < high:
        mid = (low + high + 1) // 2
        candidate = cluster(mid)
        if len(candidate[1]) <= max_faces:
            low, best = mid, candidate
        else:
            high = mid - 1
    new_verts, new_faces = best
    out = trimesh.Trimesh(vertices=new_verts, faces=new_faces, process=True)
    out.remove_unreferenced_vertices()
    return out


# -- content-addressed GLB ---------------------------------------------------------------------

SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
GLB_MEDIA_TYPE = "model/gltf-binary"
#: One year, the longest max-age that caches are asked to honour.
IMMUTABLE_MAX_AGE_S = 31_536_000


def to_glb(mesh: Any) -> bytes:
    """The GLB bytes of one mesh, as a one-node scene named ``mesh``.

    For a given trimesh version the same geometry gives the same bytes.
    """
    import trimesh

    scene = trimesh.Scene()
    scene.add_geometry(mesh, geom_name="mesh", node_name="mesh")
    data = scene.export(file_type="glb")  # type: ignore[no-untyped-call]
    if not isinstance(data, bytes):  # pragma: no cover - trimesh returns bytes for glb
        raise TypeError(f"trimesh returned {type(data).__name__} for a GLB export")
    return data


def box_mesh(size: Vec3) -> Any:
    """A box of ``size`` (x, y, z) metres centred on its footprint with its base at z = 0."""
    import trimesh

    box = trimesh.creation.box(extents=size)
    box.apply_translation((0.0, 0.0, size[2] / 2.0))
    box.metadata = {}
    return box


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def cache_headers(sha256: str, *, size: int | None = None) -> dict[str, str]:
    """HTTP response headers for the asset ``<sha256>.glb``: cacheable forever, since its name
    is its content. ``size`` adds ``Content-Length``."""
    _check_sha(sha256)
    headers = {
        "Cache-Control": f"public, max-age={IMMUTABLE_MAX_AGE_S}, immutable",
        "ETag": f'"{sha256}"',
        "Content-Type": GLB_MEDIA_TYPE,
    }
    if size is not None:
        headers["Content-Length"] = str(size)
    return headers


def not_modified(if_none_match: str | None, sha256: str) -> bool:
    """Whether a request's ``If-None-Match`` header already names this asset (answer 304)."""
    if not if_none_match:
        return False
    tags = {t.strip().removeprefix("W/") for t in if_none_match.split(",")}
    return "*" in tags or f'"{sha256}"' in tags


def _check_sha(sha256: str) -> None:
    if not SHA256_RE.match(sha256):
        raise ValueError(f"not a lowercase hex sha256: {sha256!r}")


class AssetStore:
    """A directory of content-addressed GLB files, ``<sha256>.glb``.

    Writes are atomic (a temporary file renamed into place) and idempotent: putting the same
    bytes twice writes once. Lookups validate the name, so a request path cannot escape the
    directory.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, sha256: str) -> Path:
        """Where the asset ``sha256`` lives (whether or not it exists). ``ValueError`` for a
        string that is not a sha256."""
        _check_sha(sha256)
        return self.root / f"{sha256}.glb"

    def put(self, data: bytes) -> str:
        """Store GLB bytes; return their sha256."""
        if data[:4] != b"glTF":
            raise ValueError("not GLB data (no 'glTF' magic)")
        sha = sha256_hex(data)
        target = self.path(sha)
        if target.exists():
            return sha
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".tmp-", suffix=".glb")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, target)
        finally:
            Path(tmp).unlink(missing_ok=True)  # gone after the rename; left only on failure
        return sha

    def get(self, sha256: str) -> bytes:
        """The bytes of asset ``sha256``; ``KeyError`` if it is not in the store."""
        p = self.path(sha256)
        try:
            return p.read_bytes()
        except FileNotFoundError:
            raise KeyError(sha256) from None

    def __contains__(self, sha256: object) -> bool:
        return (
            isinstance(sha256, str) and bool(SHA256_RE.match(sha256)) and self.path(sha256).exists()
        )

    def publish_mesh(self, mesh: Any) -> str:
        """Store one (already normalized) mesh as GLB; return its sha256."""
        return self.put(to_glb(mesh))


@dataclass(frozen=True, slots=True, kw_only=True)
class MeshAsset:
    """A published mesh: its GLB ``sha256``, normalized ``size`` (x, y, z metres), ``faces``
    and how it was simplified (``None``: not simplified)."""

    sha256: str
    size: Vec3
    faces: int
    simplified: SimplifyMethod | None = None


def prepare_mesh(
    path: str | Path,
    *,
    scale: float = 1.0,
    up: UpAxis | None = None,
    max_faces: int | None = None,
) -> tuple[Any, SimplifyMethod | None]:
    """Load, normalize and (with ``max_faces``) simplify a mesh file. ``up`` defaults to
    :func:`up_axis_for` the file. Raises :class:`MeshLoadError`."""
    mesh = normalize_mesh(load_mesh(path), scale=scale, up=up or up_axis_for(path))
    method = None
    if max_faces is not None:
        result = simplify_mesh(mesh, max_faces)
        method = result.method
        if method is not None:
            mesh = normalize_mesh(result.mesh)
    return mesh, method


def publish_mesh_file(
    store: AssetStore,
    path: str | Path,
    *,
    scale: float = 1.0,
    up: UpAxis | None = None,
    max_faces: int | None = None,
) -> MeshAsset:
    """Load, normalize, optionally simplify, and publish a mesh file into ``store``."""
    mesh, method = prepare_mesh(path, scale=scale, up=up, max_faces=max_faces)
    sha = store.publish_mesh(mesh)
    return MeshAsset(sha256=sha, size=mesh_size(mesh), faces=len(mesh.faces), simplified=method)


def publish_box(store: AssetStore, size: Vec3) -> str:
    """Publish a box of ``size`` (base at z = 0) as GLB; return its sha256."""
    return store.publish_mesh(box_mesh(size))


def publish_scene(spec: LineSpec, store: AssetStore, *, max_faces: int | None = None) -> SceneGraph:
    """Publish every geometry of a line into ``store`` and return its scene graph with asset
    hashes filled in.

    Mesh stations are loaded, normalized,
    simplified to ``max_faces`` when given, and published; boxes (stations and buffers) are
    published as box GLBs, so a viewer loads every solid the same way. Conveyors stay
    procedural (a viewer builds the belt from its path).
    """
    published: dict[str, str] = {}
    sizes: dict[str, Vec3] = {}
    for st in spec.stations:
        if st.geometry.mesh is not None:
            asset = publish_mesh_file(
                store, st.geometry.mesh, scale=st.geometry.scale, max_faces=max_faces
            )
            published[station_id(st.id)] = asset.sha256
            sizes[st.id] = asset.size
    graph = build_graph(spec, mesh_sizes=sizes)
    boxes: dict[Vec3, str] = {}
    for e in graph.entities:
        if isinstance(e.geometry, BoxGeometry):
            size = e.geometry.size
            if size not in boxes:
                boxes[size] = publish_box(store, size)
            published[e.id] = boxes[size]
    return with_assets(graph, published)
