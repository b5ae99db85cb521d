"""Mesh assets: normalization (scale, up axis, footprint, base), simplification, and
content-addressed GLB publishing with its cache headers."""

from __future__ import annotations

import hashlib
import shutil
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import trimesh

from scenes.assets import (
    AssetStore,
    MeshLoadError,
    SimplifyMethod,
    SimplifyUnavailableError,
    UpAxis,
    box_mesh,
    cache_headers,
    load_mesh,
    mesh_size,
    normalize_mesh,
    not_modified,
    publish_box,
    publish_mesh_file,
    publish_scene,
    quadric_available,
    simplify_mesh,
    to_glb,
    up_axis_for,
)
from scenes.graph import BoxGeometry, MeshGeometry
from scenes.lineparse import load_line

REPO = Path(__file__).resolve().parent.parent
FILLER = REPO / "scenes" / "examples" / "meshes" / "filler.stl"


def y_up_block() -> Any:
    """A 1 (x) by 3 (y, up) by 2 (z) block, off-centre, floating: as a Y-up OBJ would hold it."""
    block = trimesh.creation.box(extents=(1.0, 3.0, 2.0))
    block.apply_translation((5.0, 7.0, -4.0))
    return block


def write_obj(path: Path, mesh: Any) -> Path:
    mesh.export(path)
    return path


# -- normalization -----------------------------------------------------------------------------


def test_y_up_becomes_z_up_centred_on_the_footprint_with_base_at_zero() -> None:
    out = normalize_mesh(y_up_block(), up=UpAxis.Y)
    assert mesh_size(out) == pytest.approx((1.0, 2.0, 3.0))  # y (3) became height
    lo, hi = out.bounds
    assert lo[2] == pytest.approx(0.0)
    assert (lo[0] + hi[0]) / 2 == pytest.approx(0.0)
    assert (lo[1] + hi[1]) / 2 == pytest.approx(0.0)


def test_y_up_rotation_is_a_rotation_that_sends_gltf_front_to_minus_y() -> None:
    # one triangle facing +z (a glTF model's front), wound counter-clockwise seen from +z
    tri = trimesh.Trimesh(
        vertices=[[0, 0, 1], [1, 0, 1], [0, 1, 1]], faces=[[0, 1, 2]], process=False
    )
    out = normalize_mesh(tri, up=UpAxis.Y)
    assert out.vertices[2][2] == pytest.approx(1.0)  # the vertex highest in y is now on top
    assert out.vertices[0][2] == pytest.approx(0.0)
    # it faces -y, and its winding agrees: a rotation, not a mirror image
    assert out.face_normals[0] == pytest.approx((0.0, -1.0, 0.0))


def test_scale_converts_units() -> None:
    mm = trimesh.creation.box(extents=(1000.0, 500.0, 250.0))
    out = normalize_mesh(mm, scale=0.001, up=UpAxis.Z)
    assert mesh_size(out) == pytest.approx((1.0, 0.5, 0.25))
    assert out.bounds[0][2] == pytest.approx(0.0)
    with pytest.raises(ValueError, match="scale"):
        normalize_mesh(mm, scale=0.0)


def test_normalize_does_not_touch_its_input() -> None:
    block = y_up_block()
    before = block.vertices.copy()
    normalize_mesh(block, scale=2.0, up=UpAxis.Y)
    assert np.array_equal(block.vertices, before)


def test_up_axis_by_suffix() -> None:
    assert up_axis_for("a/b.GLB") is UpAxis.Y
    assert up_axis_for("x.gltf") is UpAxis.Y
    assert up_axis_for("x.obj") is UpAxis.Y
    assert up_axis_for("x.stl") is UpAxis.Z
    assert up_axis_for("x.ply") is UpAxis.Z


def test_example_filler_mesh_normalizes_to_its_documented_size() -> None:
    out = normalize_mesh(load_mesh(FILLER), up=up_axis_for(FILLER))
    assert mesh_size(out) == pytest.approx((2.2, 2.2, 2.1), abs=1e-6)
    assert out.bounds[0][2] == pytest.approx(0.0)


# -- loading errors ----------------------------------------------------------------------------


def test_broken_mesh_files_raise_mesh_load_error(tmp_path: Path) -> None:
    garbage = tmp_path / "broken.stl"
    garbage.write_bytes(b"solid x\n facet normal 0 0 1\n  outer loop\n   vertex 1 2\nendsolid\n")
    with pytest.raises(MeshLoadError, match=r"broken\.stl"):
        load_mesh(garbage)
    empty = tmp_path / "empty.obj"
    empty.write_text("# nothing here\n")
    with pytest.raises(MeshLoadError, match=r"empty\.obj"):
        load_mesh(empty)
    glb = tmp_path / "truncated.glb"
    glb.write_bytes(to_glb(box_mesh((1.0, 1.0, 1.0)))[:40])
    with pytest.raises(MeshLoadError, match=r"truncated\.glb"):
        load_mesh(glb)


def test_missing_mesh_file_raises_mesh_load_error(tmp_path: Path) -> None:
    with pytest.raises(MeshLoadError):
        load_mesh(tmp_path / "nope.stl")


# -- simplification ----------------------------------------------------------------------------


def test_small_mesh_is_left_alone() -> None:
    box = box_mesh((1.0, 1.0, 1.0))
    result = simplify_mesh(box, 100)
    assert result.method is None
    assert result.mesh is box
    assert result.faces_before == result.faces_after == 12


def test_cluster_simplification_reduces_faces_and_keeps_the_shape() -> None:
    sphere = trimesh.creation.icosphere(subdivisions=5, radius=1.0)
    result = simplify_mesh(sphere, 2000, method=SimplifyMethod.CLUSTER)
    assert result.method is SimplifyMethod.CLUSTER
    assert result.faces_before == len(sphere.faces) == 20480
    assert 500 < result.faces_after <= 2000
    assert mesh_size(result.mesh) == pytest.approx((2.0, 2.0, 2.0), abs=0.1)
    # deterministic: the same input gives the same faces
    again = simplify_mesh(sphere, 2000, method=SimplifyMethod.CLUSTER)
    assert np.array_equal(again.mesh.faces, result.mesh.faces)


def test_default_method_says_which_it_used() -> None:
    sphere = trimesh.creation.icosphere(subdivisions=4)
    result = simplify_mesh(sphere, 1000)
    expected = SimplifyMethod.QUADRIC if quadric_available() else SimplifyMethod.CLUSTER
    assert result.method is expected
    assert result.faces_after <= 1000


def test_quadric_without_its_package_says_what_to_install() -> None:
    sphere = trimesh.creation.icosphere(subdivisions=4)
    if quadric_available():
        result = simplify_mesh(sphere, 1000, method=SimplifyMethod.QUADRIC)
        assert result.method is SimplifyMethod.QUADRIC
        assert result.faces_after <= 1000
    else:
        with pytest.raises(SimplifyUnavailableError, match="fast-simplification"):
            simplify_mesh(sphere, 1000, method=SimplifyMethod.QUADRIC)


def test_simplify_rejects_silly_targets() -> None:
    with pytest.raises(ValueError, match="max_faces"):
        simplify_mesh(box_mesh((1.0, 1.0, 1.0)), 2)


# -- publishing --------------------------------------------------------------------------------


def test_published_mesh_is_named_by_the_hash_of_its_bytes(tmp_path: Path) -> None:
    src = write_obj(tmp_path / "block.obj", y_up_block())
    store = AssetStore(tmp_path / "assets")
    asset = publish_mesh_file(store, src)
    path = store.path(asset.sha256)
    assert path.name == f"{asset.sha256}.glb"
    data = path.read_bytes()
    assert hashlib.sha256(data).hexdigest() == asset.sha256
    assert data[:4] == b"glTF"
    assert asset.size == pytest.approx((1.0, 2.0, 3.0))  # OBJ is taken as Y-up
    assert asset.faces == 12
    assert asset.simplified is None
    # the GLB holds the normalized mesh
    back = trimesh.load(path, force="mesh")
    assert back.bounds[0][2] == pytest.approx(0.0)
    assert mesh_size(back) == pytest.approx((1.0, 2.0, 3.0))


def test_same_mesh_gives_the_same_hash_wherever_it_comes_from(tmp_path: Path) -> None:
    a = write_obj(tmp_path / "a.obj", y_up_block())
    other = tmp_path / "elsewhere"
    other.mkdir()
    b = other / "renamed.obj"
    shutil.copy(a, b)
    store = AssetStore(tmp_path / "assets")
    first = publish_mesh_file(store, a)
    second = publish_mesh_file(store, b)
    assert first.sha256 == second.sha256
    assert sorted(p.name for p in store.root.iterdir()) == [f"{first.sha256}.glb"]
    # different geometry, different name
    third = publish_mesh_file(store, a, scale=2.0)
    assert third.sha256 != first.sha256
    assert len(list(store.root.glob("*.glb"))) == 2


def test_publishing_with_a_face_budget_simplifies(tmp_path: Path) -> None:
    src = tmp_path / "ball.stl"
    trimesh.creation.icosphere(subdivisions=4).export(src)
    store = AssetStore(tmp_path / "assets")
    asset = publish_mesh_file(store, src, max_faces=500)
    assert asset.faces <= 500
    assert asset.simplified is not None
    full = publish_mesh_file(store, src)
    assert full.faces == 5120 and full.sha256 != asset.sha256


def test_store_put_get_and_contains(tmp_path: Path) -> None:
    store = AssetStore(tmp_path / "s")
    data = to_glb(box_mesh((1.0, 2.0, 3.0)))
    sha = store.put(data)
    assert store.put(data) == sha  # idempotent
    assert store.get(sha) == data
    assert sha in store
    assert ("0" * 64) not in store
    assert "../etc/passwd" not in store
    with pytest.raises(KeyError):
        store.get("0" * 64)
    with pytest.raises(ValueError, match="sha256"):
        store.path("../" + "a" * 61)
    with pytest.raises(ValueError, match="sha256"):
        store.path("A" * 64)
    with pytest.raises(ValueError, match="GLB"):
        store.put(b"not a glb")
    assert not list(store.root.glob(".tmp-*"))


def test_box_glb_is_stable_and_based_at_zero(tmp_path: Path) -> None:
    store = AssetStore(tmp_path)
    sha = publish_box(store, (2.0, 1.0, 0.5))
    assert publish_box(store, (2.0, 1.0, 0.5)) == sha
    assert publish_box(store, (2.0, 1.0, 0.6)) != sha
    back = trimesh.load(store.path(sha), force="mesh")
    assert back.bounds[0] == pytest.approx((-1.0, -0.5, 0.0))
    assert back.bounds[1] == pytest.approx((1.0, 0.5, 0.5))


def test_cache_headers() -> None:
    sha = hashlib.sha256(b"x").hexdigest()
    assert cache_headers(sha) == {
        "Cache-Control": "public, max-age=31536000, immutable",
        "ETag": f'"{sha}"',
        "Content-Type": "model/gltf-binary",
    }
    assert cache_headers(sha, size=123)["Content-Length"] == "123"
    with pytest.raises(ValueError):
        cache_headers("not-a-hash")
    assert not_modified(f'"{sha}"', sha)
    assert not_modified(f'W/"{sha}", "other"', sha)
    assert not_modified("*", sha)
    assert not not_modified('"other"', sha)
    assert not not_modified(None, sha)


def test_publish_scene_gives_every_solid_an_asset(tmp_path: Path) -> None:
    meshes = tmp_path / "meshes"
    meshes.mkdir()
    shutil.copy(FILLER, meshes / "filler.stl")
    line = tmp_path / "line.yaml"
    line.write_text(
        textwrap.dedent(
            """\
            line: published
            stations:
              - {id: a, process_time: 1, position: [0, 0, 0], box: [2, 2, 2]}
              - {id: f, process_time: 1, position: [6, 0, 0], mesh: meshes/filler.stl}
              - {id: c, process_time: 1, position: [12, 0, 0], box: [2, 2, 2]}
            buffers:
              - {id: b1, from: a, to: f, capacity: 3}
              - {id: c1, from: f, to: c, conveyor: {length: 4, speed: 1}}
            """
        )
    )
    spec = load_line(line)
    store = AssetStore(tmp_path / "assets")
    graph = publish_scene(spec, store)
    a = graph.entity("station/a").geometry
    c = graph.entity("station/c").geometry
    f = graph.entity("station/f").geometry
    b1 = graph.entity("buffer/b1").geometry
    assert isinstance(a, BoxGeometry) and isinstance(c, BoxGeometry)
    assert a.asset is not None and a.asset == c.asset  # same box, one asset
    assert isinstance(f, MeshGeometry) and f.asset is not None
    assert f.size == pytest.approx((2.2, 2.2, 2.1), abs=1e-6)
    assert isinstance(b1, BoxGeometry) and b1.asset not in (None, a.asset)
    for sha in (a.asset, f.asset, b1.asset):
        assert sha is not None and sha in store
        assert hashlib.sha256(store.get(sha)).hexdigest() == sha
    # the belt starts at the filler's real footprint edge (1.1 m from its centre)
    assert graph.conveyor_path("c1").points[0][0] == pytest.approx(6.0 + 1.1)
    # publishing again changes nothing
    assert publish_scene(spec, store) == graph
