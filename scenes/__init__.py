"""Line files, the scene graph and mesh assets: declarative, with no simulation and no servers.

Import what you need from the submodules: ``scenes.lineparse.load_line``, ``scenes.spec``,
``scenes.graph``, ``scenes.assets``, ``scenes.render``. Nothing heavy is imported here.
"""
