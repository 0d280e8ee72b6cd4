"""The synthetic vision-language world: determinism, formats, vocabulary, and that every label is true.

The checks of captions, answers and NLVR labels re-derive the truth from the scene specs with their own small
parsers (they do not call the generator's helpers), and the layout checks look at rendered pixels.
"""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from openblip.data import synthetic as syn
from openblip.tokenizer import get_tokenizer

N = {"train": 80, "val": 40, "test": 40}
SEED = 3
SIZE_WORDS, COLOR_WORDS, SHAPE_WORDS = set(syn.SIZES), set(syn.COLORS), set(syn.SHAPES)
PLURAL_TO_SHAPE = {v: k for k, v in syn.SHAPE_PLURALS.items()}


def _generate(path: Path, seed: int = SEED, image_size: int = 64) -> syn.WorldInfo:
    return syn.generate_world(
        path, n_train=N["train"], n_val=N["val"], n_test=N["test"], image_size=image_size, seed=seed
    )


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> syn.WorldInfo:
    return _generate(tmp_path_factory.mktemp("world"))


def _load(world: syn.WorldInfo, name: str):
    with open(world.root / "annotations" / f"{name}.json", encoding="utf-8") as f:
        return json.load(f)


def _scenes(world: syn.WorldInfo, split: str) -> dict[str, list[dict]]:
    """image path -> objects (plain dicts, sorted left to right) from the scene file."""
    return {e["image"]: sorted(e["objects"], key=lambda o: o["x"]) for e in _load(world, f"scenes_{split}")}


def _all_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# --- independent truth from the scene specs --------------------------------------------------------------------


def _triples(caption: str) -> list[tuple[str, str, str]]:
    """Objects named by a caption, left to right: (size, color, shape)."""
    words = caption.split()
    if words[:2] == ["there", "is"]:
        words = words[2:]
    direction = "right" if "right" in words else "left"
    phrases = " ".join(words).split(f" {direction} of ")
    out = []
    for p in phrases:
        art, size, color, shape = p.split()
        assert art == ("an" if size[0] in "aeiou" else "a")
        out.append((size, color, shape))
    return out[::-1] if direction == "right" else out


def _truth(objects: list[dict]) -> list[tuple[str, str, str]]:
    return [(o["size"], o["color"], o["shape"]) for o in objects]


def _matches(obj: dict, words: list[str]) -> bool:
    return all(w in (obj["size"], obj["color"], obj["shape"]) for w in words if w != "object")


def _resolve(objects: list[dict], ref: str) -> dict:
    found = [o for o in objects if _matches(o, ref.split())]
    assert len(found) == 1, f"reference {ref!r} is ambiguous or empty in {objects}"
    return found[0]


def _answer(objects: list[dict], question: str) -> str:
    if question == "how many objects are there?":
        return str(len(objects))
    if m := re.fullmatch(r"how many (\w+) are there\?", question):
        return str(sum(o["shape"] == PLURAL_TO_SHAPE[m[1]] for o in objects))
    if m := re.fullmatch(r"what color is the (.+)\?", question):
        return _resolve(objects, m[1])["color"]
    if m := re.fullmatch(r"what shape is the (.+) object\?", question):
        return _resolve(objects, m[1])["shape"]
    if m := re.fullmatch(r"what size is the (.+)\?", question):
        return _resolve(objects, m[1])["size"]
    if m := re.fullmatch(r"is there an? (.+)\?", question):
        return "yes" if any(_matches(o, m[1].split()) for o in objects) else "no"
    if m := re.fullmatch(r"what is (left|right) of the (.+)\?", question):
        ref = _resolve(objects, m[2])
        side = [o for o in objects if (o["x"] < ref["x"]) == (m[1] == "left") and o is not ref]
        assert len(side) == 1, f"{question!r}: {len(side)} objects on that side"
        return side[0]["shape"]
    if m := re.fullmatch(r"is the (.+) (left|right) of the (.+)\?", question):
        a, b = _resolve(objects, m[1]), _resolve(objects, m[3])
        assert a is not b
        return "yes" if (a["x"] < b["x"]) == (m[2] == "left") else "no"
    raise AssertionError(f"unknown question form {question!r}")


def _nlvr_truth(left: list[dict], right: list[dict], sentence: str) -> bool:
    sides = {"left": left, "right": right}
    numbers = {"one": 1, "two": 2, "three": 3}
    if sentence == "the left image contains more objects than the right image":
        return len(left) > len(right)
    if sentence == "the right image contains more objects than the left image":
        return len(right) > len(left)
    if sentence == "both images contain the same number of objects":
        return len(left) == len(right)
    if m := re.fullmatch(r"the (left|right) image contains exactly (one|two|three) objects?", sentence):
        return len(sides[m[1]]) == numbers[m[2]]
    if m := re.fullmatch(r"both images contain an? (\w+) object", sentence):
        return all(any(o["color"] == m[1] for o in s) for s in (left, right))
    if m := re.fullmatch(r"exactly one image contains an? (\w+) object", sentence):
        return sum(any(o["color"] == m[1] for o in s) for s in (left, right)) == 1
    if m := re.fullmatch(r"both images contain an? (\w+)", sentence):
        return all(any(o["shape"] == m[1] for o in s) for s in (left, right))
    if m := re.fullmatch(r"the (left|right) image contains an? (\w+) (\w+)", sentence):
        return any(o["color"] == m[2] and o["shape"] == m[3] for o in sides[m[1]])
    if m := re.fullmatch(r"the (left|right) image contains an? (\w+)", sentence):
        return any(o["shape"] == m[2] for o in sides[m[1]])
    raise AssertionError(f"unknown NLVR sentence {sentence!r}")


# --- determinism -----------------------------------------------------------------------------------------------


def test_same_seed_gives_identical_bytes_and_other_seed_differs(world, tmp_path):
    again = _generate(tmp_path / "again")
    assert again.to_dict() == world.to_dict()
    files, files_again = _all_files(world.root), _all_files(again.root)
    assert files.keys() == files_again.keys()
    assert all(files[k] == files_again[k] for k in files)

    other = _generate(tmp_path / "other", seed=SEED + 1)
    other_files = _all_files(other.root)
    assert other_files.keys() == files.keys()
    assert other_files["annotations/caption_train.json"] != files["annotations/caption_train.json"]
    assert other_files["images/train/scene_000001.png"] != files["images/train/scene_000001.png"]


def test_scene_level_helpers_are_deterministic():
    a, b = syn.sample_scene(7), syn.sample_scene(7)
    assert a == b and syn.sample_scene(8) != a
    assert np.array_equal(np.asarray(syn.render_scene(a, 64, 1)), np.asarray(syn.render_scene(b, 64, 1)))
    assert syn.Scene.from_dict(json.loads(json.dumps(a.to_dict()))) == a


def test_layout_is_independent_of_image_size(world, tmp_path):
    big = _generate(tmp_path / "big", image_size=96)
    for name in ("caption_train", "vqa_val", "nlvr_test", "hard_negatives_test", "scenes_val"):
        assert _load(big, name) == _load(world, name)
    assert Image.open(big.root / "images/test/scene_000121.png").size == (96, 96)


# --- formats ---------------------------------------------------------------------------------------------------


def test_file_formats_have_the_exact_keys(world):
    n_total = sum(N.values())
    train = _load(world, "caption_train")
    assert all(set(e) == {"image", "caption", "image_id"} and isinstance(e["caption"], str) for e in train)
    assert len(train) == 2 * N["train"]
    assert all(e["image_id"] == Path(e["image"]).stem for e in train)
    assert _load(world, "pretrain") == [{"image": e["image"], "caption": e["caption"]} for e in train]

    qids = []
    for split in syn.SPLITS:
        scenes = _load(world, f"scenes_{split}")
        assert len(scenes) == N[split]
        for e in scenes:
            assert e["image"] == f"images/{split}/scene_{e['image_id']:06d}.png"
            assert syn.image_id_from_path(e["image"]) == e["image_id"]
        if split != "train":
            caps = _load(world, f"caption_{split}")
            assert all(set(e) == {"image", "caption"} and len(e["caption"]) == 2 for e in caps)
            gt = _load(world, f"caption_{split}_gt")
            assert set(gt) == {"annotations", "images"}
            assert [im["id"] for im in gt["images"]] == [syn.image_id_from_path(e["image"]) for e in caps]
            assert all(set(a) == {"image_id", "caption", "id"} for a in gt["annotations"])
            assert len({a["id"] for a in gt["annotations"]}) == len(gt["annotations"]) == 2 * N[split]
            by_id = defaultdict(list)
            for a in gt["annotations"]:
                by_id[a["image_id"]].append(a["caption"])
            assert all(by_id[syn.image_id_from_path(e["image"])] == e["caption"] for e in caps)
        negs = _load(world, f"hard_negatives_{split}")
        assert len(negs) == N[split] and all(set(e) == {"image", "caption", "negative"} for e in negs)
        vqa = _load(world, f"vqa_{split}")
        keys = {"question_id", "question", "answer", "image", "dataset", "question_type"}
        assert all(set(q) == keys and q["dataset"] == "vqa" for q in vqa)
        assert all(len(q["answer"]) == 10 and len(set(q["answer"])) == 1 for q in vqa)
        assert {q["question_type"] for q in vqa} == set(syn.QUESTION_TYPES)
        qids += [q["question_id"] for q in vqa]
        nlvr = _load(world, f"nlvr_{split}")
        assert len(nlvr) == N[split]
        assert all(set(e) == {"images", "sentence", "label"} and e["label"] in ("True", "False") for e in nlvr)
        assert all(len(e["images"]) == 2 and e["images"][0] != e["images"][1] for e in nlvr)
        assert all(p.startswith(f"images/{split}/") for e in nlvr for p in e["images"])
    assert len(set(qids)) == len(qids)

    answer_list = _load(world, "answer_list")
    assert answer_list == world.answer_list and len(set(answer_list)) == len(answer_list)
    assert {q["answer"][0] for s in syn.SPLITS for q in _load(world, f"vqa_{s}")} <= set(answer_list)

    info = json.loads((world.root / "world.json").read_text())
    assert info["seed"] == SEED and info["image_size"] == 64 and info["splits"] == N
    assert info["baselines"] == world.baselines and info["vocabulary"] == world.vocabulary
    assert syn.load_world(world.root).to_dict() == world.to_dict()
    for rel in world.files.values():
        assert (world.root / rel).is_file()
    images = sorted(p.relative_to(world.root).as_posix() for p in (world.root / "images").rglob("*.png"))
    assert len(images) == n_total
    img = Image.open(world.root / images[0])
    assert img.size == (64, 64) and img.mode == "RGB"


def test_all_text_is_whole_known_words():
    tok = get_tokenizer()
    for word in syn.VOCABULARY:
        assert tok.tokenize(word) == [word], word


def test_every_text_tokenizes_without_unk(world):
    texts = set(world.answer_list)
    for split in syn.SPLITS:
        texts |= {c for e in _load(world, f"caption_{split}") for c in np.atleast_1d(e["caption"]).tolist()}
        texts |= {e["negative"] for e in _load(world, f"hard_negatives_{split}")}
        texts |= {q["question"] for q in _load(world, f"vqa_{split}")}
        texts |= {e["sentence"] for e in _load(world, f"nlvr_{split}")}
    tok = get_tokenizer()
    vocab = set(syn.VOCABULARY) | {"?"}
    for text in sorted(texts):
        assert 100 not in tok.encode(text), text
        assert set(text.replace("?", " ?").split()) <= vocab, text


# --- captions and hard negatives ------------------------------------------------------------------------------


def test_captions_describe_the_scene(world):
    for split in syn.SPLITS:
        scenes = _scenes(world, split)
        by_image = defaultdict(list)
        for e in _load(world, f"caption_{split}"):
            by_image[e["image"]] += e["caption"] if isinstance(e["caption"], list) else [e["caption"]]
        assert by_image.keys() == scenes.keys()
        for image, caps in by_image.items():
            canonical, paraphrase = caps
            assert canonical != paraphrase
            assert _triples(canonical) == _triples(paraphrase) == _truth(scenes[image])
            assert (" right of " in paraphrase) or paraphrase.startswith("there is ")
            assert " right of " not in canonical


def test_hard_negatives_are_false_for_the_scene(world):
    kinds = Counter()
    for split in syn.SPLITS:
        scenes = _scenes(world, split)
        for e in _load(world, f"hard_negatives_{split}"):
            truth = _truth(scenes[e["image"]])
            assert _triples(e["caption"]) == truth
            assert e["negative"] != e["caption"]
            neg = _triples(e["negative"])
            assert neg != truth and len(neg) == len(truth) and len(set(neg)) == len(neg)
            diff = [i for i in range(len(neg)) if neg[i] != truth[i]]
            if sorted(neg) == sorted(truth):  # a swap: exactly two objects exchanged
                kinds["swap"] += 1
                assert len(diff) == 2 and neg[diff[0]] == truth[diff[1]] and neg[diff[1]] == truth[diff[0]]
            else:  # one attribute of one object
                assert len(diff) == 1
                changed = sum(a != b for a, b in zip(neg[diff[0]], truth[diff[0]]))
                assert changed == 1 and neg[diff[0]] not in truth
                kinds["attribute"] += 1
    assert kinds["swap"] > 0 and kinds["attribute"] > 0


def test_corrupt_caption_kinds():
    rng = np.random.default_rng(0)
    pool = [syn.sample_scene(rng) for _ in range(20)]
    scene = syn.sample_scene(rng, n_objects=3)
    for kind in ("attribute", "color", "shape", "size", "swap", "other_scene"):
        for _ in range(10):
            caption = syn.corrupt_caption(scene, rng, kind, pool=pool)
            assert caption != syn.scene_caption(scene) and not syn.caption_is_true(scene, caption)
            assert _triples(caption) != _truth([o.to_dict() for o in scene.objects])
    single = syn.sample_scene(rng, n_objects=1)
    with pytest.raises(ValueError):
        syn.corrupt_caption(single, rng, "swap")
    with pytest.raises(ValueError):
        syn.corrupt_caption(single, rng, "other_scene", pool=[single])
    with pytest.raises(ValueError):
        syn.corrupt_caption(single, rng, "nonsense")
    assert syn.caption_is_true(scene, syn.scene_caption(scene, paraphrase=True))


# --- layout: geometry and pixels -------------------------------------------------------------------------------


def _check_pixels(objects: list[syn.SceneObject], image: np.ndarray) -> None:
    size = image.shape[0]
    masks = [syn.object_mask(o, size) for o in objects]
    palette = {name: np.asarray(rgb, dtype=float) for name, rgb in syn.COLORS.items()}
    union = np.zeros((size, size), dtype=bool)
    grown_masks = []
    for obj, mask in zip(objects, masks):
        assert mask.sum() > 20, obj
        grown = mask.copy()  # dilated by one pixel (4-neighbourhood and diagonals)
        grown[1:] |= mask[:-1]
        grown[:-1] |= mask[1:]
        grown[:, 1:] |= grown[:, :-1].copy()
        grown[:, :-1] |= grown[:, 1:].copy()
        grown_masks.append(grown)
        union |= grown
        mean = image[mask].astype(float).mean(axis=0)
        nearest = min(palette, key=lambda c: np.linalg.norm(palette[c] - mean))
        assert nearest == obj.color, (obj, mean)
    for i in range(len(objects)):
        for j in range(len(objects)):
            assert i == j or not (grown_masks[i] & masks[j]).any(), "objects touch or overlap"
    background = image[~union].astype(float)
    assert background.mean() > 215 and background.min(axis=1).mean() > 200
    # left/right from pixels: each centroid lies beyond the other object's column extent
    cols = [np.nonzero(m.any(axis=0))[0] for m in masks]
    centroids = [np.nonzero(m)[1].mean() for m in masks]
    for i in range(len(objects) - 1):
        assert centroids[i] < cols[i + 1].min() and centroids[i + 1] > cols[i].max()


def test_generated_layouts_are_unambiguous(world):
    for split in syn.SPLITS:
        for image, scene in syn.load_scenes(world.root, split):
            objs = scene.objects
            assert not syn.layout_problems(objs)
            assert len({o.key for o in objs}) == len(objs) and [o.x for o in objs] == sorted(o.x for o in objs)
            for a in objs:
                assert syn.EDGE_MARGIN <= a.x - a.radius and a.x + a.radius <= 1 - syn.EDGE_MARGIN
                assert syn.EDGE_MARGIN <= a.y - a.radius and a.y + a.radius <= 1 - syn.EDGE_MARGIN
            for a, b in zip(objs, objs[1:]):
                reach = a.radius + b.radius
                assert b.x - a.x >= 0.75 * reach - 1e-9
                assert max(b.x - a.x, abs(b.y - a.y)) >= reach + syn.BOX_GAP - 1e-9
            _check_pixels(list(objs), np.asarray(Image.open(world.root / image)))


def test_sampled_scenes_are_valid_even_when_crowded():
    rng = np.random.default_rng(1)
    for _ in range(100):
        scene = syn.sample_scene(rng, n_objects=3)
        assert not scene.problems()
        _check_pixels(list(scene.objects), np.asarray(syn.render_scene(scene, 64, rng)))
    crowded = [syn.SceneObject(s, c, "large", 0.5, 0.5) for s, c in zip(syn.SHAPES, syn.COLORS)][:3]
    placed = syn.Scene(tuple(crowded))
    assert placed.problems()  # same position: overlapping and ambiguous
    big = syn.sample_scene(rng, n_objects=3)
    _check_pixels(list(big.objects), np.asarray(syn.render_scene(big, 96, rng)))


# --- VQA -------------------------------------------------------------------------------------------------------


def test_vqa_answers_follow_from_the_scene(world):
    for split in syn.SPLITS:
        scenes = _scenes(world, split)
        per_image = Counter()
        for q in _load(world, f"vqa_{split}"):
            assert _answer(scenes[q["image"]], q["question"]) == q["answer"][0], q
            per_image[q["image"]] += 1
        assert set(per_image) == set(scenes) and max(per_image.values()) <= 4


def test_yes_no_answers_are_balanced(world):
    for split in syn.SPLITS:
        vqa = _load(world, f"vqa_{split}")
        for qtype in ("exists", "relation_yn"):
            answers = [q["answer"][0] for q in vqa if q["question_type"] == qtype]
            assert set(answers) == {"yes", "no"}
            assert abs(answers.count("yes") / len(answers) - 0.5) <= 0.1, (split, qtype)


# --- NLVR2 -----------------------------------------------------------------------------------------------------


def test_nlvr_labels_are_true_and_balanced(world):
    for split in syn.SPLITS:
        scenes = _scenes(world, split)
        nlvr = _load(world, f"nlvr_{split}")
        for e in nlvr:
            truth = _nlvr_truth(scenes[e["images"][0]], scenes[e["images"][1]], e["sentence"])
            assert str(truth) == e["label"], e
            # no left/right inside an image, so the NLVR flip augmentation keeps the label
            assert not re.search(r"(left|right) of", e["sentence"])
        labels = [e["label"] for e in nlvr]
        assert abs(labels.count("True") / len(labels) - 0.5) <= 0.1


# --- baselines -------------------------------------------------------------------------------------------------


def test_baselines_are_computed_and_in_range(world):
    b = world.baselines
    assert b["itm_chance"] == 0.5
    train_caps = Counter(e["caption"] for e in _load(world, "caption_train"))
    top = min(train_caps, key=lambda c: (-train_caps[c], c))
    train_vqa = _load(world, "vqa_train")
    overall = Counter(q["answer"][0] for q in train_vqa)
    most = min(overall, key=lambda a: (-overall[a], a))
    for split in ("val", "test"):
        s = b[split]
        caps = _load(world, f"caption_{split}")
        r = s["retrieval"]
        assert r["n_images"] == N[split] and r["n_texts"] == 2 * N[split]
        assert r["ir_chance_r1"] == pytest.approx(1 / N[split])
        assert r["chance_r1_unique"] == pytest.approx(1 / len({c for e in caps for c in e["caption"]}))
        assert r["tr_chance_r1"] == pytest.approx(2 / (2 * N[split]))
        for k in (1, 5, 10):
            assert 0 < r[f"ir_chance_r{k}"] <= r[f"ir_ceiling_r{k}"] <= 1
            assert 0 < r[f"tr_chance_r{k}"] <= r[f"tr_ceiling_r{k}"] <= 1
        assert s["caption"]["most_frequent_train_caption"] == top
        assert s["caption"]["exact_match"] == pytest.approx(np.mean([top in e["caption"] for e in caps]))

        v = s["vqa"]
        vqa = _load(world, f"vqa_{split}")
        assert v["most_frequent_answer"] == most
        assert v["chance_accuracy"] == pytest.approx(np.mean([q["answer"][0] == most for q in vqa]))
        assert set(v["per_type"]) == set(syn.QUESTION_TYPES)
        for qtype, t in v["per_type"].items():
            assert t["n"] == sum(q["question_type"] == qtype for q in vqa)
            for name in ("chance", "type_prior", "question_only"):
                assert 0 <= t[name] <= 1
        assert v["per_type"]["color"]["type_prior"] < 0.6
        assert 0.3 <= v["per_type"]["exists"]["type_prior"] <= 0.7
        assert 0 <= v["chance_accuracy"] <= v["type_prior_accuracy"] < 0.7

        n = s["nlvr"]
        labels = Counter(e["label"] for e in _load(world, "nlvr_train"))
        majority = min(labels, key=lambda x: (-labels[x], x))
        assert n["majority_label"] == majority
        nlvr = _load(world, f"nlvr_{split}")
        assert n["majority_accuracy"] == pytest.approx(np.mean([e["label"] == majority for e in nlvr]))
        assert 0.35 <= n["majority_accuracy"] <= 0.65 and 0 <= n["sentence_only_accuracy"] <= 1
        itm = s["itm_hard_negative"]
        assert itm["chance"] == 0.5 and 0 <= itm["text_prior_accuracy"] <= 1


def test_vqa_accuracy_and_image_ids():
    assert syn.vqa_accuracy("2", ["2"] * 10) == 1.0
    assert syn.vqa_accuracy("3", ["2"] * 10) == 0.0
    # the official leave-one-out average, not min(1, matches / 3): 2 of 10 subsets keep one "2", 8 keep two
    assert syn.vqa_accuracy("2", ["2", "2"] + ["3"] * 8) == pytest.approx((2 * 1 / 3 + 8 * 2 / 3) / 10)
    assert syn.vqa_accuracy("two", ["2"] * 3 + ["3"] * 7) == pytest.approx(0.9)  # normalised; 3 of 10 -> 0.9
    assert syn.image_id_from_path("images/val/scene_000123.png") == 123


def test_invalid_arguments(tmp_path):
    with pytest.raises(ValueError):
        syn.generate_world(tmp_path, n_train=1)
    with pytest.raises(ValueError):
        syn.generate_world(tmp_path, n_train=4, image_size=16)
    with pytest.raises(ValueError):
        syn.SceneObject("hexagon", "red", "small", 0.5, 0.5)
    with pytest.raises(ValueError):
        syn.parse_caption("a large green circle next to a small red square")


def test_world_without_questions_has_no_vqa_baselines(tmp_path):
    from openblip.data.synthetic import generate_world

    info = generate_world(tmp_path, n_train=12, n_val=4, n_test=4, vqa_per_scene=0)
    assert info.baselines["test"]["vqa"]["chance_accuracy"] is None


# --- world.json is the completion marker ------------------------------------------------------------------------


class _Interrupt(Exception):
    pass


def _interrupt_after(monkeypatch, n_images: int) -> list[int]:
    """Make generate_world's n_images+1-th render raise, as a Ctrl-C half-way through would."""
    real, rendered = syn.render_scene, []

    def render(*args, **kwargs):
        if len(rendered) >= n_images:
            raise _Interrupt
        rendered.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(syn, "render_scene", render)
    return rendered


def test_interrupted_generation_leaves_no_world_json(tmp_path, monkeypatch):
    root = tmp_path / "w"
    syn.generate_world(root, n_train=12, n_val=0, n_test=6, seed=0)
    old_json = (root / "world.json").read_bytes()
    old_image = (root / "images/train/scene_000001.png").read_bytes()
    rendered = _interrupt_after(monkeypatch, 10)
    with pytest.raises(_Interrupt):
        syn.generate_world(root, n_train=12, n_val=0, n_test=6, seed=1)
    assert len(rendered) == 10
    # images were overwritten with seed 1's, so the seed-0 world.json must not survive to claim otherwise
    assert (root / "images/train/scene_000001.png").read_bytes() != old_image
    assert not (root / "world.json").exists()
    assert not list(root.glob("world.json*"))  # nor a half-written one

    monkeypatch.undo()
    info = syn.generate_world(root, n_train=12, n_val=0, n_test=6, seed=0)
    assert (root / "world.json").read_bytes() == old_json and info.seed == 0
    assert (root / "images/train/scene_000001.png").read_bytes() == old_image
    assert not (root / "world.json.partial").exists()
