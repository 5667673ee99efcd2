"""Synthetic dense multi-task scenes, ray-cast in numpy: one scene → an image and six labels.

A pinhole camera looks at a floor, a back wall and 3–6 convex objects (sphere, box, cylinder,
cone) with random colours and solid textures, lit by one directional light with cast shadows,
plus fog and sensor noise. Every label comes from the same ray cast, so the labels agree by
construction:

    seg       class per pixel: floor 0, wall 1, sphere 2, box 3, cylinder 4, cone 5
    depth     camera-frame z in metres (the z-buffer)
    normal    unit normals in the camera frame (x right, y down, z forward)
    edge      occlusion and crease edges (instance change or a normal crease > 32°); every object
              is convex, so a depth jump always coincides with an instance change
    edge2d    Sobel magnitude of the clean render (before noise), clipped to [0, 1]
    keypoint  Gaussian heatmaps at visible box corners, cone apices, cylinder top centres and
              sphere centres (occlusion-tested against the z-buffer)

A scene is a pure function of (seed, split, index), with no global RNG and no BLAS, so
generation is independent of worker count and order. docs/synthetic-data.md describes the
scenes, the labels, the splits and seeding, and what makes the tasks conflict. The package,
bottom to top:

    geometry.py   elementwise ray and quadric maths
    textures.py   plain, stripe and checker solid textures
    objects.py    the four object kinds: ray intersection, normals, keypoints; class names
    scene.py      every random draw of a scene (camera, room, objects, light, fog, noise)
    labels.py     edge, texture-edge and keypoint maps from the ray cast
    render.py     one scene → image and labels as float arrays
    generate.py   (seed, split, index) → RNG; quantisation; `generate_scenes`
"""

from automtl_cli.data.synthetic.generate import (
    GENERATOR_VERSION,
    SPLIT_OFFSETS,
    generate_scenes,
    quantise_scene,
    scene_rng,
)
from automtl_cli.data.synthetic.objects import CLASS_NAMES
from automtl_cli.data.synthetic.render import render_scene

__all__ = [
    "CLASS_NAMES",
    "GENERATOR_VERSION",
    "SPLIT_OFFSETS",
    "generate_scenes",
    "quantise_scene",
    "render_scene",
    "scene_rng",
]
