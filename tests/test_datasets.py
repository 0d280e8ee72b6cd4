"""Datasets in BLIP's annotation formats and generic formats, on tiny files written in tmp_path."""

from __future__ import annotations

import io
import json
import logging
import os

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from openblip.data import datasets as D
from openblip.data.augment import train_transform
from openblip.image import ImageLoadError
from openblip.transforms import eval_transform

COLORS = {
    "red": (255, 0, 0),
    "green": (0, 255, 0),
    "blue": (0, 0, 255),
    "white": (255, 255, 255),
}


def _png(path, color, size=(12, 10)) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.new("RGB", size, color).save(path)
    return str(path)


def _json(path, obj) -> str:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f)
    return str(path)


def _color(image) -> tuple[int, int, int]:
    """The colour of a plain-colour PIL image."""
    return tuple(int(v) for v in np.asarray(image)[0, 0])


@pytest.fixture
def root(tmp_path):
    for name, color in COLORS.items():
        _png(tmp_path / "img" / f"{name}.png", color)
    with open(tmp_path / "img" / "corrupt.png", "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n this is not a png")
    return tmp_path


# --------------------------------------------------------------------------------------------------------------------
# BLIP formats
# --------------------------------------------------------------------------------------------------------------------


def test_caption_train_dataset(root):
    ann = _json(
        root / "train.json",
        [
            {"image": "red.png", "caption": "A Red square.", "image_id": "coco_5"},
            {"image": "green.png", "caption": "a green  square!", "image_id": "coco_9"},
            {"image": "red.png", "caption": "Another (red) one", "image_id": "coco_5"},
            {"image": "blue.png", "caption": "blue", "image_id": 7},
        ],
    )
    ds = D.CaptionTrainDataset(ann, root / "img", None)
    assert len(ds) == 4
    assert [ds[i][2] for i in range(4)] == [0, 1, 0, 2]
    assert ds.img_ids == {"coco_5": 0, "coco_9": 1, 7: 2}
    image, caption, idx = ds[0]
    assert _color(image) == COLORS["red"] and caption == "a picture of a red square" and idx == 0
    assert ds[1][1] == "a picture of a green square"
    plain = D.CaptionTrainDataset([ann, ann], str(root / "img"), eval_transform(8), prompt="", max_words=2)
    assert len(plain) == 8 and plain[2][1] == "another red"
    assert plain[0][0].shape == (3, 8, 8)


def test_caption_eval_dataset(root):
    coco_dir = root / "img" / "val2014"
    _png(coco_dir / "COCO_val2014_000000391895.jpg.png", COLORS["red"])
    os.rename(coco_dir / "COCO_val2014_000000391895.jpg.png", coco_dir / "COCO_val2014_000000391895.jpg")
    ann = _json(
        root / "val.json",
        [
            {"image": "val2014/COCO_val2014_000000391895.jpg", "caption": ["A man.", "Two  men!"]},
            {"image": "green.png", "caption": ["x", "y", "z"]},
            {"image": "blue.png", "caption": ["only one"], "img_id": 42},
        ],
    )
    ds = D.CaptionEvalDataset(ann, root / "img", None)
    assert len(ds) == 3
    assert ds.text == ["a man", "two men", "x", "y", "z", "only one"]
    assert ds.img2txt == {0: [0, 1], 1: [2, 3, 4], 2: [5]}
    assert ds.txt2img == {0: 0, 1: 0, 2: 1, 3: 1, 4: 1, 5: 2}
    assert ds.image == ["val2014/COCO_val2014_000000391895.jpg", "green.png", "blue.png"]
    assert ds.image_ids == [391895, None, 42]
    image, index = ds[1]
    assert _color(image) == COLORS["green"] and index == 1
    with_ids = D.CaptionEvalDataset(ann, root / "img", None, return_image_id=True)
    assert with_ids[0][1] == 391895 and with_ids[2][1] == 42


def test_parse_image_id():
    assert D.parse_image_id("val2014/COCO_val2014_000000391895.jpg") == 391895
    assert D.parse_image_id("flickr30k-images/1000092795.jpg") == 1000092795
    assert D.parse_image_id("cat.png") is None


def test_pretrain_dataset(root):
    img = root / "img"
    ann = _json(
        root / "pretrain.json",
        [
            {"image": str(img / "red.png"), "caption": "A RED thing."},
            {"image": str(img / "green.png"), "caption": ["green one", "green two", "green three"]},
        ],
    )
    ds = D.PretrainDataset(ann, None, None)
    image, caption = ds[0]
    assert _color(image) == COLORS["red"] and caption == "a red thing"

    def picks(seed):
        torch.manual_seed(seed)
        d = D.PretrainDataset(ann, None, None)
        return [d[1][1] for _ in range(30)]

    assert set(picks(0)) == {"green one", "green two", "green three"}
    assert picks(0) == picks(0) and picks(0) != picks(1)
    # relative paths with an image root; LAION shards cycled per epoch
    laion = root / "laion"
    laion.mkdir()
    _json(laion / "a.json", [{"image": "blue.png", "caption": "shard a"}])
    _json(laion / "b.json", [{"image": "white.png", "caption": "shard b"}, {"image": "blue.png", "caption": "b2"}])
    rel = D.PretrainDataset([{"image": "red.png", "caption": "r"}], img, None, laion_path=laion)
    assert len(rel) == 2 and rel[1][1] == "shard a"
    rel.reload_laion(1)
    assert len(rel) == 3 and rel[1][1] == "shard b" and _color(rel[1][0]) == COLORS["white"]
    rel.reload_laion(2)
    assert rel[1][1] == "shard a"


def _vqa_records():
    return [
        {
            "question_id": 1,
            "question": "What colour is it?",
            "answer": ["red"] * 6 + ["orange"] * 3 + ["pink"],
            "image": "red.png",
            "dataset": "vqa",
        },
        {"question": "Is it green?", "answer": "yes", "image": "green.png", "dataset": "vg"},
    ]


def test_vqa_train_weights_and_collate(root):
    vg_root = root / "vg"
    _png(vg_root / "green.png", COLORS["green"])
    ann = _json(root / "vqa_train.json", _vqa_records())
    ds = D.VQADataset(ann, {"vqa_root": root / "img", "vg_root": vg_root}, eval_transform(8), split="train")
    image, question, answers, weights = ds[0]
    assert question == "what colour is it?"
    assert answers == ["red", "orange", "pink"]
    assert weights == pytest.approx([0.6, 0.3, 0.1])
    image, question, answers, weights = ds[1]
    assert question == "is it green?" and answers == ["yes"] and weights == [0.2]
    images, questions, flat_answers, flat_weights, n = D.vqa_collate_fn([ds[0], ds[1]])
    assert images.shape == (2, 3, 8, 8)
    assert questions == ["what colour is it?", "is it green?"]
    assert flat_answers == ["red", "orange", "pink", "yes"]
    assert torch.allclose(flat_weights, torch.tensor([0.6, 0.3, 0.1, 0.2]))
    assert n == [3, 1]
    loader = DataLoader(ds, batch_size=2, collate_fn=D.vqa_collate_fn)
    assert next(iter(loader))[4] == [3, 1]


def test_vqa_test_split_and_answer_list(root):
    ann = _json(root / "vqa_test.json", [{"question_id": 77, "question": "How many dogs?", "image": "blue.png"}])
    answer_list = _json(root / "answer_list.json", ["1", "2", "yes"])
    ds = D.VQADataset(ann, root / "img", None, split="test", answer_list=answer_list)
    image, question, qid = ds[0]
    assert _color(image) == COLORS["blue"] and question == "how many dogs?" and qid == 77
    assert ds.answer_list == ["1", "2", "yes"]
    with pytest.raises(ValueError):
        D.VQADataset(ann, root / "img", None, split="val")


def test_vqa_flip_swaps_question_and_answers_together(root):
    records = [
        {
            "question_id": 1,
            "question": "Which side is the cup on?",
            "answer": ["left"] * 7 + ["right"] * 3,
            "image": "red.png",
            "dataset": "vqa",
        },
        {"question": "Is the cup on the left?", "answer": "yes", "image": "red.png", "dataset": "vqa"},
    ]
    torch.manual_seed(0)
    ds = D.VQADataset(records, root / "img", train_transform(8, randaug=False), split="train")
    seen = set()
    for _ in range(40):
        _, question, answers, weights = ds[0]
        assert question == "which side is the cup on?"
        other = "right" if answers[0] == "left" else "left"
        assert answers == [answers[0], other] and weights == pytest.approx([0.7, 0.3])
        seen.add(answers[0])
        _, question, answers, weights = ds[1]
        assert question in ("is the cup on the left?", "is the cup on the right?") and answers == ["yes"]
    assert seen == {"left", "right"}


def test_nlvr_dataset(root):
    ann = _json(
        root / "nlvr.json",
        [
            {"images": ["red.png", "blue.png"], "sentence": "The LEFT image has a red dog.", "label": "True"},
            {"images": ["green.png", "white.png"], "sentence": "Both images show cats", "label": "False"},
        ],
    )
    ds = D.NLVRDataset(ann, root / "img", None)
    image0, image1, sentence, label = ds[0]
    assert (_color(image0), _color(image1)) == (COLORS["red"], COLORS["blue"])
    assert sentence == "the left image has a red dog" and label == 1
    assert ds[1][3] == 0
    for _ in range(10):  # not training: never swapped
        assert _color(ds[0][0]) == COLORS["red"]

    torch.manual_seed(0)
    train = D.NLVRDataset(ann, root / "img", None, train=True)
    outcomes = set()
    for _ in range(40):
        image0, image1, sentence, label = train[0]
        swapped = _color(image0) == COLORS["blue"]
        assert _color(image1) == (COLORS["red"] if swapped else COLORS["blue"])
        assert sentence == ("the right image has a red dog" if swapped else "the left image has a red dog")
        assert label == 1
        outcomes.add(swapped)
    assert outcomes == {True, False}
    tensors = D.NLVRDataset(ann, root / "img", train_transform(8), train=True)[1]
    assert tensors[0].shape == (3, 8, 8) and tensors[2] == "both images show cats"


# --------------------------------------------------------------------------------------------------------------------
# Generic formats
# --------------------------------------------------------------------------------------------------------------------


def test_jsonl_caption_dataset(root):
    path = root / "caps.jsonl"
    lines = [
        {"image": "red.png", "caption": "A red square."},
        {"image": "green.png", "caption": ["first green", "Second green"]},
        {"image": "red.png", "caption": "red again"},
    ]
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    ds = D.JsonlCaptionDataset(path, root / "img", None)
    assert len(ds) == 4
    assert [ds[i][1] for i in range(4)] == ["a red square", "first green", "second green", "red again"]
    assert _color(ds[1][0]) == COLORS["green"]
    with_idx = D.JsonlCaptionDataset(path, root / "img", None, prompt="a picture of ", return_img_idx=True)
    assert [with_idx[i][2] for i in range(4)] == [0, 1, 1, 0]
    assert with_idx[0][1] == "a picture of a red square"
    bad = root / "bad.jsonl"
    bad.write_text('{"image": "red.png", "caption": "x"}\n{not json\n')
    with pytest.raises(ValueError, match="bad.jsonl:2"):
        D.JsonlCaptionDataset(bad, root / "img", None)


def test_mirrored_items_with_a_rewritten_caption_get_their_own_retrieval_idx(root):
    # the idx-aware ITC treats equal idx as positives: "a red square left of a blue circle" mirrored becomes
    # "... right of ...", false for the unmirrored image, so it must not share the image's idx
    from openblip.data.augment import TrainTransform

    records = [
        {"image": "red.png", "caption": "a red square left of a blue circle", "image_id": 5},
        {"image": "red.png", "caption": "a red square", "image_id": 5},
        {"image": "green.png", "caption": "a green square", "image_id": 6},
    ]
    always = TrainTransform(8, 1.0, randaug=False, flip_p=1.0)
    never = TrainTransform(8, 1.0, randaug=False, flip_p=0.0)
    flipped = D.CaptionTrainDataset(records, root / "img", always, prompt="")
    assert flipped[0][1] == "a red square right of a blue circle" and flipped[0][2] == 0 + 2  # idx + n_images
    assert flipped[1][2] == 0 and flipped[2][2] == 1  # captions the mirror does not change keep the image's idx
    assert [D.CaptionTrainDataset(records, root / "img", never, prompt="")[i][2] for i in range(3)] == [0, 0, 1]
    listed = D.JsonlCaptionDataset(records, root / "img", always, return_img_idx=True)
    assert [listed[i][2] for i in range(3)] == [0 + 2, 0, 1]


def test_csv_caption_dataset(root):
    path = root / "caps.csv"
    path.write_text('image,caption,extra\nred.png,"A red, square.",1\nblue.png,Blue!,2\nred.png,red two,3\n')
    ds = D.CsvCaptionDataset(path, root / "img", None, return_img_idx=True)
    assert len(ds) == 3
    image, caption, idx = ds[0]
    assert _color(image) == COLORS["red"] and caption == "a red, square" and idx == 0
    assert ds[1][1:] == ("blue", 1) and ds[2][2] == 0
    wrong = root / "wrong.csv"
    wrong.write_text("path,text\nred.png,x\n")
    with pytest.raises(ValueError, match="missing column"):
        D.CsvCaptionDataset(wrong, root / "img", None)


def test_image_folder_caption_dataset(tmp_path, caplog):
    folder = tmp_path / "folder"
    _png(folder / "a.png", COLORS["red"])
    (folder / "a.txt").write_text("A red one.\n\nsecond caption for a\n")
    _png(folder / "sub" / "b.png", COLORS["blue"])
    (folder / "sub" / "b.txt").write_text("blue\n")
    _png(folder / "c.png", COLORS["green"])  # no caption file
    with caplog.at_level(logging.WARNING, logger="openblip.data.datasets"):
        ds = D.ImageFolderCaptionDataset(folder, None, return_img_idx=True)
    assert len(ds) == 3
    assert [ds[i][1] for i in range(3)] == ["a red one", "second caption for a", "blue"]
    assert [ds[i][2] for i in range(3)] == [0, 0, 1]
    assert _color(ds[2][0]) == COLORS["blue"]
    assert ds.uncaptioned == [str(folder / "c.png")]
    assert any("without a .txt caption" in r.getMessage() for r in caplog.records)


def _encoded(color, fmt="PNG") -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (9, 7), color).save(buf, format=fmt)
    return buf.getvalue()


def test_webdataset_shards(tmp_path, caplog):
    import webdataset as wds

    shards = []
    for s, samples in enumerate(
        [
            [
                {"__key__": "s0", "png": _encoded(COLORS["red"]), "txt": "A red tile."},
                {"__key__": "s1", "jpg": _encoded(COLORS["blue"], "JPEG"), "json": json.dumps({"caption": "Blue!"})},
                {"__key__": "s2", "png": b"\x89PNG broken", "txt": "corrupt"},
            ],
            [
                {"__key__": "s3", "png": _encoded(COLORS["green"]), "json": json.dumps("green tile")},
                {"__key__": "s4", "txt": "no image here"},
                {"__key__": "s5", "png": _encoded(COLORS["white"])},
            ],
        ]
    ):
        path = str(tmp_path / f"shard-{s:04d}.tar")
        with wds.TarWriter(path) as sink:
            for sample in samples:
                sink.write(sample)
        shards.append(path)

    with caplog.at_level(logging.WARNING, logger="openblip.data.datasets"):
        ds = D.make_webdataset(shards, None, prompt="a picture of ")
        items = list(ds)
    assert [cap for _, cap in items] == ["a picture of a red tile", "a picture of blue", "a picture of green tile"]
    assert _color(items[0][0]) == COLORS["red"] and _color(items[2][0]) == COLORS["green"]
    assert np.abs(np.subtract(_color(items[1][0]), COLORS["blue"])).max() <= 3  # JPEG
    assert ds.failure_count == 3
    reasons = {f.path.rsplit("/", 1)[-1]: f.reason for f in ds.failures}
    assert set(reasons) == {"shard-0000.tar:s2.png", "shard-0001.tar:s4", "shard-0001.tar:s5"}
    assert "no image" in reasons["shard-0001.tar:s4"] and "no caption" in reasons["shard-0001.tar:s5"]
    assert sum("shard-0000.tar:s2.png" in r.getMessage() for r in caplog.records) == 1

    tensors = list(D.make_webdataset(shards[:1], train_transform(8), shuffle=10))
    assert len(tensors) == 2 and all(t.shape == (3, 8, 8) for t, _ in tensors)
    with pytest.raises(ImageLoadError, match="s2.png"):
        list(D.make_webdataset(shards, None, strict=True))
    brace = str(tmp_path / "shard-{0000..0001}.tar")
    loader = DataLoader(D.make_webdataset(brace, eval_transform(8)), batch_size=None, num_workers=2)
    assert sorted(cap for _, cap in loader) == ["a red tile", "blue", "green tile"]


# --------------------------------------------------------------------------------------------------------------------
# Bad images
# --------------------------------------------------------------------------------------------------------------------


def _bad_records():
    return [
        {"image": "red.png", "caption": "zero", "image_id": 0},
        {"image": "missing.png", "caption": "one", "image_id": 1},
        {"image": "corrupt.png", "caption": "two", "image_id": 2},
        {"image": "blue.png", "caption": "three", "image_id": 3},
    ]


def test_bad_images_are_counted_logged_and_skipped(root, caplog):
    ds = D.CaptionTrainDataset(_bad_records(), root / "img", None, prompt="")
    with caplog.at_level(logging.WARNING, logger="openblip.data.datasets"):
        image, caption, idx = ds[1]
    assert caption == "three" and idx == 3 and _color(image) == COLORS["blue"]  # the next loadable item
    assert ds.failure_count == 2
    paths = [f.path for f in ds.failures]
    assert paths == [str(root / "img" / "missing.png"), str(root / "img" / "corrupt.png")]
    assert ds.failures[0].reason == "file not found" and ds.failures[0].index == 1
    assert ds.failures[1].index == 2
    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2 and all("\n" not in m for m in messages)
    assert "missing.png" in messages[0] and "file not found" in messages[0]
    assert "corrupt.png" in messages[1]
    assert ds[2][1] == "three" and ds.failure_count == 3  # every failing access is counted
    assert ds[0][1] == "zero" and ds.failure_count == 3


def test_bad_images_wrap_around_and_give_up(root):
    records = _bad_records()[1:3] + [{"image": "red.png", "caption": "ok", "image_id": 9}]
    ds = D.CaptionTrainDataset(records, root / "img", None, prompt="")
    assert ds[0][1] == "ok"
    wrap = D.CaptionTrainDataset(list(reversed(records)), root / "img", None, prompt="")
    assert wrap[1][1] == "ok"  # index 1 and 2 fail, wraps around to index 0
    all_bad = D.CaptionTrainDataset(_bad_records()[1:3], root / "img", None)
    with pytest.raises(D.TooManyBadImages, match="corrupt.png"):
        all_bad[0]
    capped = D.CaptionTrainDataset(records, root / "img", None, max_consecutive_failures=1)
    with pytest.raises(D.TooManyBadImages):
        capped[0]


def test_strict_raises_with_path(root):
    ds = D.CaptionTrainDataset(_bad_records(), root / "img", None, strict=True)
    assert ds.strict
    with pytest.raises(ImageLoadError, match="missing.png") as e:
        ds[1]
    assert e.value.source == str(root / "img" / "missing.png")
    with pytest.raises(ImageLoadError, match="corrupt.png"):
        ds[2]
    pair = [{"images": ["red.png", "missing.png"], "sentence": "x", "label": "True"}]
    nlvr = D.NLVRDataset(pair, root / "img", None, train=True)
    with pytest.raises(D.TooManyBadImages):
        nlvr[0]
    assert nlvr.failures[0].path.endswith("missing.png")


def test_evaluation_datasets_are_strict_by_default(root):
    # a skipped eval item would be replaced by the next one: one image/question scored twice, one never
    records = [{"image": "red.png", "caption": ["a"]}, {"image": "missing.png", "caption": ["b"]}]
    assert D.CaptionEvalDataset(records, root / "img", None).strict
    with pytest.raises(ImageLoadError, match="missing.png"):
        D.CaptionEvalDataset(records, root / "img", None)[1]
    lenient = D.CaptionEvalDataset(records, root / "img", None, strict=False)
    assert lenient[1][1] == 0 and lenient.failure_count == 1  # opted in: the substitute is item 0
    questions = [{"image": "missing.png", "question": "what?", "question_id": 7}]
    with pytest.raises(ImageLoadError, match="missing.png"):
        D.VQADataset(questions, root / "img", None, split="test")[0]
    assert not D.VQADataset(questions, root / "img", None, split="train").strict
    pair = [{"images": ["red.png", "missing.png"], "sentence": "x", "label": "True"}]
    with pytest.raises(ImageLoadError, match="missing.png"):
        D.NLVRDataset(pair, root / "img", None)[0]


@pytest.mark.parametrize(
    ("label", "expected"), [("True", 1), ("False", 0), (True, 1), (False, 0), (1, 1), (0, 0), (" true ", 1)]
)
def test_nlvr_labels_follow_the_metric_parser(root, label, expected):
    pair = [{"images": ["red.png", "red.png"], "sentence": "x", "label": label}]
    assert D.NLVRDataset(pair, root / "img", None)[0][3] == expected


def test_nlvr_unknown_label_is_an_error(root):
    pair = [{"images": ["red.png", "red.png"], "sentence": "x", "label": "maybe"}]
    with pytest.raises(ValueError, match="maybe"):
        D.NLVRDataset(pair, root / "img", None)[0]


class _PathDataset(torch.utils.data.Dataset):
    def __init__(self, paths):
        self.paths = paths
        self.note = "forwarded"

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        from openblip.image import load_image

        return torch.tensor(_color(load_image(self.paths[i]))), i


def test_skip_bad_images_wrapper(root):
    img = root / "img"
    inner = _PathDataset([str(img / "red.png"), str(img / "nope.png"), str(img / "green.png")])
    ds = D.SkipBadImages(inner)
    assert len(ds) == 3 and ds.note == "forwarded"
    assert ds[1][1] == 2 and ds.failure_count == 1 and ds.failures[0].path.endswith("nope.png")
    with pytest.raises(ImageLoadError):
        D.SkipBadImages(inner, strict=True)[1]
    with pytest.raises(IndexError):
        ds[3]


def test_failures_counted_across_workers(root, tmp_path):
    records = [
        {"image": name, "caption": name, "image_id": i}
        for i, name in enumerate(["red.png", "missing.png", "green.png", "corrupt.png"] * 2)
    ]
    log = tmp_path / "failures.jsonl"
    ds = D.CaptionTrainDataset(records, root / "img", eval_transform(8), failure_log=log)
    loader = DataLoader(ds, batch_size=2, num_workers=2)
    captions = [c for _, batch, _ in loader for c in batch]
    # 1 -> 2 (missing), 3 -> 4 (corrupt), 5 -> 6, 7 -> wraps around to 0
    assert captions == [f"a picture of {c} png" for c in ["red", "green", "green", "red"] * 2]
    assert ds.failure_count == 4  # counted in the workers, visible here
    assert sorted(os.path.basename(f.path) for f in ds.failures) == ["corrupt.png"] * 2 + ["missing.png"] * 2


# --------------------------------------------------------------------------------------------------------------------
# Determinism and worker safety
# --------------------------------------------------------------------------------------------------------------------


def test_augmented_loading_is_reproducible_and_differs_per_worker(root):
    _png(root / "img" / "grad.png", (0, 0, 0), size=(40, 30))
    grad = np.zeros((30, 40, 3), np.uint8)
    grad[..., 0] = np.arange(40) * 6
    grad[..., 1] = np.arange(30)[:, None] * 8
    Image.fromarray(grad).save(root / "img" / "grad.png")
    records = [{"image": "grad.png", "caption": "the left part", "image_id": i} for i in range(8)]
    ds = D.CaptionTrainDataset(records, root / "img", train_transform(16))

    def run(seed):
        torch.manual_seed(seed)
        return [batch for batch in DataLoader(ds, batch_size=2, num_workers=2)]

    a, b, c = run(0), run(0), run(1)
    assert all(torch.equal(x[0], y[0]) and x[1] == y[1] for x, y in zip(a, b))
    assert not all(torch.equal(x[0], y[0]) for x, y in zip(a, c))
    images = torch.cat([batch[0] for batch in a])
    # batches 0 and 1 come from different workers: their first items must not be augmented identically
    assert not torch.equal(images[0], images[2])
