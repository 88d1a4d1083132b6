import io
from collections import defaultdict

import cv2
import numpy as np
from PIL import Image

from flywheel.detect.hog import HogPersonDetector
from flywheel.synthetic.attributes import sample_answers
from flywheel.synthetic.figure import COLORS, COCO_KEYPOINTS
from flywheel.synthetic.scene import render_people
from flywheel.synthetic.source import DEFECTS, SyntheticConfig, encode_parsing, render_sample

CLASS = {"hat": 1, "sunglasses": 3, "upper": 4, "skirt": 5, "pants": 6, "dress": 7, "belt": 8, "bag": 16, "scarf": 17}


def decode(data: bytes):
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    return None if img is None else cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def test_rendering_is_deterministic_by_seed_and_index(protocol):
    cfg = SyntheticConfig(seed=3)
    a, b = render_sample(cfg, protocol, 5), render_sample(cfg, protocol, 5)
    assert a.data == b.data and a.truth == b.truth
    assert np.array_equal(a.parsing, b.parsing)
    assert render_sample(SyntheticConfig(seed=4), protocol, 5).data != a.data
    assert render_sample(cfg, protocol, 6).data != a.data


def test_parsing_map_matches_the_attributes(protocol):
    checked = defaultdict(int)
    for i in range(80):
        rng = np.random.default_rng([11, i])
        image, labels, people, _ = render_people(rng, protocol, 192, 288, person_type="full body")
        a = people[0].answers
        present = set(np.unique(labels).tolist())
        assert present <= set(range(18))
        for key in ("hat", "sunglasses", "scarf", "belt", "bag"):
            assert (CLASS[key] in present) == (a[key] == "yes"), (i, key, a[key])
            checked[key] += 1
        assert (CLASS["dress"] in present) == (a["dress"] == "yes")
        if a["dress"] == "no":
            bottom = {"skirt": CLASS["skirt"], "trousers": CLASS["pants"], "shorts": CLASS["pants"]}[a["bottom_type"]]
            assert bottom in present
            assert CLASS["upper"] in present
        if a["hair_length"] == "bald":
            assert 2 not in present
        # a solid top's pixels carry the named colour (image and labels are aligned)
        if a["top"] == "yes" and a["top_pattern"] == "solid":
            px = image[labels == CLASS["upper"]].astype(float)
            assert np.abs(np.median(px, axis=0) - COLORS[a["top_color"]]).max() < 45, (i, a["top_color"])
            checked["colour"] += 1
        # keypoints: visible ones inside the image and inside the person box
        kp = people[0].keypoints
        vis = kp[:, 2] > 0
        assert vis.sum() == len(COCO_KEYPOINTS)  # a framed full-body person is entirely in view
        x0, y0, x1, y1 = people[0].person_box
        assert (kp[vis, 0] >= x0 - 2).all() and (kp[vis, 0] <= x1 + 2).all()
        assert (kp[vis, 1] >= y0 - 2).all() and (kp[vis, 1] <= y1 + 2).all()
        # the left shoulder is on the image's right for a person facing the camera
        assert kp[5, 0] > kp[6, 0]
    assert checked["colour"] >= 10


def test_every_category_gets_several_answers(protocol):
    seen = defaultdict(set)
    rng = np.random.default_rng(0)
    for _ in range(600):
        for k, v in sample_answers(rng, protocol).items():
            if v is not None:
                seen[k].add(v)
    for name, cat in protocol.categories.items():
        assert len(seen[name]) >= 2, f"{name} only saw {seen[name]}"


def test_each_defect_is_rendered_with_its_reason(protocol):
    cfg = SyntheticConfig(seed=2, bad_fraction=1.0, width=160, height=240)
    by_defect = {}
    for i in range(1, 90):
        s = render_sample(cfg, protocol, i)
        by_defect.setdefault(s.truth["defect"], s)
    assert set(by_defect) == set(DEFECTS)
    assert decode(by_defect["truncated"].data) is None
    small = decode(by_defect["too_small"].data)
    assert small.shape[0] < 240 // 2
    assert by_defect["no_person"].truth["n_persons"] == 0 and not (by_defect["no_person"].parsing > 0).any()
    assert by_defect["multiple_people"].truth["n_persons"] >= 2
    tiny = by_defect["tiny_face"].truth["face_boxes"][0]
    assert tiny[3] - tiny[1] < 240 * 0.05
    dup = by_defect["exact_duplicate"]
    assert dup.data == render_sample(cfg, protocol, dup.truth["duplicate_of"]).data
    near = by_defect["near_duplicate"]
    original = render_sample(cfg, protocol, near.truth["duplicate_of"])
    assert near.data != original.data
    if decode(original.data) is not None:
        diff = np.abs(decode(near.data).astype(int) - decode(original.data).astype(int)).mean()
        assert diff < 40
    blurred = decode(by_defect["blurred"].data)
    assert cv2.Laplacian(cv2.cvtColor(blurred, cv2.COLOR_RGB2GRAY), cv2.CV_64F).var() < 50


def test_parsing_png_round_trips(protocol):
    s = render_sample(SyntheticConfig(seed=5, bad_fraction=0), protocol, 0)
    back = np.array(Image.open(io.BytesIO(encode_parsing(s.parsing))))
    assert back.dtype == np.uint8 and np.array_equal(back, s.parsing)


def test_hog_finds_most_clean_full_body_people(protocol):
    detector = HogPersonDetector()
    found = 0
    n = 40
    for i in range(n):
        rng = np.random.default_rng([2026, i])
        image, _, people, _ = render_people(rng, protocol, 256, 384, person_type="full body")
        found += bool(detector.detect(image))
    assert found / n >= 0.8, f"HOG found {found}/{n}"


def test_hog_stays_quiet_on_empty_scenes(protocol):
    detector = HogPersonDetector()
    hits = sum(bool(detector.detect(render_people(np.random.default_rng([7, i]), protocol, 256, 384, n_people=0)[0])) for i in range(20))
    assert hits <= 1
