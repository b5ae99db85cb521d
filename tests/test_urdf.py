"""Robot visuals from URDF files: one GLB per link in the link frame; bad files get clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import trimesh

from scenes.assets import AssetStore
from scenes.errors import ConfigError
from scenes.urdf import publish_urdf_links

URDF = """<robot name="two">
  <link name="base">
    <visual><origin xyz="0 0 0.5" rpy="0 0 0"/><geometry><box size="1 2 1"/></geometry></visual>
  </link>
  <link name="arm">
    <visual><origin xyz="0 0 0" rpy="0 1.5707963 0"/>
      <geometry><cylinder radius="0.1" length="2"/></geometry></visual>
  </link>
  <link name="empty"/>
</robot>"""


def test_each_link_becomes_one_glb_in_its_frame(tmp_path: Path) -> None:
    urdf = tmp_path / "two.urdf"
    urdf.write_text(URDF)
    store = AssetStore(tmp_path / "assets")
    links = publish_urdf_links(str(urdf), store)
    assert set(links) == {"base", "arm"}  # a link without visuals is left out
    assert links["base"].size == pytest.approx((1.0, 2.0, 1.0))
    # the cylinder's axis is turned from z to x by the visual origin's pitch
    assert links["arm"].size == pytest.approx((2.0, 0.2, 0.2), abs=1e-6)
    mesh = trimesh.load(store.path(links["base"].asset), file_type="glb", force="mesh")
    assert mesh.bounds[0][2] == pytest.approx(0.0) and mesh.bounds[1][2] == pytest.approx(1.0)


def test_the_iiwa_from_pybullet_data(tmp_path: Path) -> None:
    links = publish_urdf_links("kuka_iiwa/model.urdf", AssetStore(tmp_path))
    assert len(links) == 8


def test_bad_urdf_files_get_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"no/such\.urdf.*no such file"):
        publish_urdf_links("no/such.urdf", AssetStore(tmp_path))
    broken = tmp_path / "broken.urdf"
    broken.write_text("<robot><link name='a'>")
    with pytest.raises(ConfigError, match=r"broken\.urdf: not a URDF"):
        publish_urdf_links(str(broken), AssetStore(tmp_path))
