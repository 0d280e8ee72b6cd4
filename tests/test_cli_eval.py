"""``openblip world`` and ``openblip eval``: real numbers on a tiny synthetic world, tiny models end to end,
one-line usage errors."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from click.testing import CliRunner

from openblip.cli import main
from openblip.data.synthetic import generate_world, image_id_from_path, load_world
from tests.helpers import tiny_model

CAPTION_KEYS = {"bleu1", "bleu2", "bleu3", "bleu4", "meteor", "rouge_l", "cider"}
RETRIEVAL_KEYS = {"txt_r1", "txt_r5", "txt_r10", "txt_r_mean", "img_r1", "img_r5", "img_r10", "img_r_mean", "r_mean"}
needs_java = pytest.mark.skipif(shutil.which("java") is None, reason="the caption metrics need Java")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """4 test scenes at 48 px with one reference caption each, 8 test questions, 4 NLVR pairs; tiny models."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("eval_world")
    generate_world(root / "world", 4, 0, 4, image_size=48, seed=0, captions_per_image=1, vqa_per_scene=2)
    for task in ("caption", "retrieval", "vqa", "nlvr"):
        tiny_model(task).save_pretrained(root / task)
    return root


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)


def ok(res) -> dict:
    assert res.exit_code == 0, res.output
    return json.loads(res.stdout)


def one_line_error(res, code: int, *needles: str) -> str:
    assert res.exit_code == code, res.output
    assert res.stdout == ""
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


def ann(world, name: str):
    return world / "world" / "annotations" / f"{name}.json"


def write(path, obj):
    path.write_text(json.dumps(obj))
    return path


def references(world) -> list[tuple[int, list[str]]]:
    return [(image_id_from_path(a["image"]), a["caption"]) for a in json.loads(ann(world, "caption_test").read_text())]


# ---- openblip world --------------------------------------------------------------------------------------------


def test_help_of_the_new_commands():
    for cmd in (["world"], ["world", "generate"], ["world", "info"], ["eval"]):
        assert run(*cmd, "--help").exit_code == 0
    for sub in ("caption", "retrieval", "vqa", "nlvr"):
        res = run("eval", sub, "--help")
        assert res.exit_code == 0 and "--annotations" in res.output and "--max-items" in res.output


def test_world_generate_and_info(tmp_path):
    out = tmp_path / "w"
    args = ["--n-train", 3, "--n-val", 1, "--n-test", 2, "--image-size", 48, "--seed", 3, "--vqa-per-scene", 2]
    summary = ok(run("world", "generate", out, *args, "--n-nlvr", 3, "--captions-per-image", 1))
    info = load_world(out)
    assert summary["root"] == str(out.resolve())
    assert summary["splits"] == {"train": 3, "val": 1, "test": 2} and summary["seed"] == 3
    assert summary["image_size"] == 48
    assert summary["config"]["captions_per_image"] == 1 and summary["config"]["vqa_per_scene"] == 2
    assert summary["baselines"] == info.baselines and summary["counts"] == info.counts
    assert set(summary["files"]) == set(info.files)
    vqa_test = json.loads((out / "annotations" / "vqa_test.json").read_text())
    assert summary["files"]["vqa_test"] == str((out / "annotations" / "vqa_test.json").resolve())
    assert summary["counts"]["test"]["questions"] == len(vqa_test) == 4
    assert summary["counts"]["train"]["nlvr_pairs"] == 3
    assert len(json.loads((out / "annotations" / "caption_test.json").read_text())[0]["caption"]) == 1
    assert 0 <= summary["baselines"]["test"]["vqa"]["question_only_accuracy"] <= 100
    assert ok(run("world", "info", out)) == summary
    assert ok(run("world", "info", out / "world.json")) == summary


def test_world_errors_are_one_line(tmp_path):
    one_line_error(run("world", "generate", tmp_path / "a", "--n-train", 1), 2, "n_train")
    one_line_error(run("world", "generate", tmp_path / "a", "--image-size", 20), 2, "image_size")
    one_line_error(run("world", "generate", tmp_path / "a", "--n-nlvr", -1), 2, "--n-nlvr")
    assert not (tmp_path / "a").exists()  # nothing written for bad sizes
    (tmp_path / "file").write_text("x")
    one_line_error(run("world", "generate", tmp_path / "file"), 2, "not a directory")
    one_line_error(run("world", "info", tmp_path / "missing"), 2, "no such directory")
    (tmp_path / "empty").mkdir()
    one_line_error(run("world", "info", tmp_path / "empty"), 2, "no world.json")


# ---- eval caption ----------------------------------------------------------------------------------------------


@needs_java
def test_eval_caption_results_at_maximum_and_lower_when_wrong(world, tmp_path):
    refs = references(world)
    exact = write(tmp_path / "exact.json", [{"image_id": i, "caption": c[0]} for i, c in refs])
    best = ok(run("eval", "caption", "--annotations", ann(world, "caption_test"), "--results", exact))
    assert CAPTION_KEYS <= set(best) and best["n_images"] == 4
    # one reference per image, repeated verbatim: every n-gram matches, CIDEr-D is 10 (pycocoevalcap's scale)
    assert best["bleu4"] == pytest.approx(100.0) and best["bleu1"] == pytest.approx(100.0)
    assert best["cider"] == pytest.approx(1000.0)
    assert best["meteor"] == pytest.approx(100.0) and best["rouge_l"] == pytest.approx(100.0)
    # one caption wrong (ids given as strings are matched too)
    rows = [{"image_id": str(i), "caption": c[0]} for i, c in refs]
    rows[0]["caption"] = "a large purple cross left of a small green circle"
    wrong = ok(
        run(
            "eval",
            "caption",
            "--annotations",
            ann(world, "caption_test"),
            "--results",
            write(tmp_path / "w.json", rows),
        )
    )
    assert wrong["bleu4"] < best["bleu4"] - 1 and wrong["cider"] < best["cider"] - 100
    assert wrong["rouge_l"] < 100.0


def test_eval_caption_results_errors(world, tmp_path):
    a = ann(world, "caption_test")
    refs = references(world)
    rows = [{"image_id": i, "caption": c[0]} for i, c in refs]
    line = one_line_error(
        run("eval", "caption", "--annotations", a, "--results", write(tmp_path / "m.json", rows[1:])), 2, "no result"
    )
    assert str(refs[0][0]) in line
    extra = rows + [{"image_id": 999, "caption": "a red circle"}]
    one_line_error(run("eval", "caption", "--annotations", a, "--results", write(tmp_path / "e.json", extra)), 2, "999")
    dup = rows + [rows[0]]
    one_line_error(
        run("eval", "caption", "--annotations", a, "--results", write(tmp_path / "d.json", dup)), 2, "more than once"
    )
    bad = write(tmp_path / "b.json", {"5": "a caption"})
    one_line_error(run("eval", "caption", "--annotations", a, "--results", bad), 2, "JSON list")
    one_line_error(run("eval", "caption", "--annotations", a), 2, "--model", "--results")
    one_line_error(run("eval", "caption", "--annotations", a, "--results", bad, "--num-beams", 5), 2, "--num-beams")
    one_line_error(
        run("eval", "caption", "--annotations", tmp_path / "none.json", "--results", bad), 2, "does not exist"
    )
    (tmp_path / "broken.json").write_text("[{")
    one_line_error(
        run("eval", "caption", "--annotations", tmp_path / "broken.json", "--results", bad), 2, "invalid JSON"
    )
    one_line_error(
        run("eval", "caption", "--annotations", ann(world, "caption_train"), "--results", bad), 2, "'image_id'"
    )
    one_line_error(run("eval", "caption", "--annotations", ann(world, "vqa_test"), "--results", bad), 2, "'caption'")


@needs_java
def test_eval_caption_model_end_to_end(world, tmp_path):
    out = tmp_path / "sub" / "captions.json"
    common = ["--annotations", ann(world, "caption_test"), "--max-items", 3]
    m = ok(
        run(
            "eval",
            "caption",
            *common,
            "--image-root",
            world / "world",
            "--model",
            world / "caption",
            "--num-beams",
            2,
            "--max-length",
            12,
            "--results",
            out,
        )
    )
    assert CAPTION_KEYS <= set(m) and m["n_images"] == 3
    assert all(0.0 <= m[k] <= (1000.0 if k == "cider" else 100.0) for k in CAPTION_KEYS)
    rows = json.loads(out.read_text())
    assert [r["image_id"] for r in rows] == [i for i, _ in references(world)[:3]]
    assert all(isinstance(r["caption"], str) and r["caption"] for r in rows)
    assert ok(run("eval", "caption", *common, "--results", out)) == m  # the written file scores the same


# ---- eval vqa --------------------------------------------------------------------------------------------------


def test_eval_vqa_results_true_answers_and_hand_computed_mix(world, tmp_path):
    qs = json.loads(ann(world, "vqa_test").read_text())
    true = write(tmp_path / "t.json", [{"question_id": q["question_id"], "answer": q["answer"][0]} for q in qs[::-1]])
    m = ok(run("eval", "vqa", "--annotations", ann(world, "vqa_test"), "--results", true))
    assert m["acc"] == 100.0 and m["n_questions"] == 8
    assert set(m["per_question_type"]) == {q["question_type"] for q in qs}
    assert set(m["per_question_type"].values()) == {100.0}
    records = [
        {"question_id": 1, "question": "is there a circle?", "answer": ["yes"] * 10, "question_type": "exists"},
        {"question_id": 2, "question": "how many?", "answer": ["2"] * 2 + ["3"] * 8, "question_type": "count"},
        {"question_id": 3, "question": "what color?", "answer": ["red"] * 10, "question_type": "color"},
        {"question_id": 4, "question": "what shape?", "answer": ["circle"] * 9 + ["square"], "question_type": "shape"},
    ]
    preds = [
        {"question_id": 1, "answer": "Yes."},
        {"question_id": 2, "answer": "two"},
        {"question_id": 3, "answer": "blue"},
        {"question_id": 4, "answer": "circle"},
    ]  # 100, 60, 0, 100
    mix = ok(
        run(
            "eval",
            "vqa",
            "--annotations",
            write(tmp_path / "a.json", records),
            "--results",
            write(tmp_path / "p.json", preds),
        )
    )
    assert mix["acc"] == pytest.approx(65.0) and mix["n_questions"] == 4
    assert mix["per_question_type"] == pytest.approx({"color": 0.0, "count": 60.0, "exists": 100.0, "shape": 100.0})
    first = ok(
        run(
            "eval",
            "vqa",
            "--annotations",
            write(tmp_path / "a.json", records),
            "--results",
            write(tmp_path / "p2.json", preds[:2]),
            "--max-items",
            2,
        )
    )
    assert first["acc"] == pytest.approx(80.0)


def test_eval_vqa_errors(world, tmp_path):
    a = ann(world, "vqa_test")
    qs = json.loads(a.read_text())
    rows = [{"question_id": q["question_id"], "answer": q["answer"][0]} for q in qs]
    line = one_line_error(run("eval", "vqa", "--annotations", a, "--results", write(tmp_path / "m.json", rows[:-1])), 2)
    assert str(qs[-1]["question_id"]) in line
    extra = rows + [{"question_id": 12345, "answer": "yes"}]
    one_line_error(run("eval", "vqa", "--annotations", a, "--results", write(tmp_path / "e.json", extra)), 2, "12345")
    one_line_error(
        run("eval", "vqa", "--annotations", a, "--results", write(tmp_path / "s.json", [{"question_id": 9}])),
        2,
        "'answer'",
    )
    one_line_error(run("eval", "vqa", "--annotations", a), 2, "--results")
    one_line_error(run("eval", "vqa", "--annotations", a, "--model", world / "vqa"), 2, "--answers")
    one_line_error(run("eval", "vqa", "--annotations", a, "--results", tmp_path / "m.json", "--k", 3), 2, "--k only")
    listed = ["--results", tmp_path / "m.json", "--answers", ann(world, "answer_list")]
    one_line_error(run("eval", "vqa", "--annotations", a, *listed), 2, "--answers only")
    testdev = write(tmp_path / "dev.json", [{k: v for k, v in q.items() if k != "answer"} for q in qs])
    one_line_error(
        run("eval", "vqa", "--annotations", testdev, "--model", world / "vqa", "--answers", ann(world, "answer_list")),
        2,
        "no ground-truth answers",
    )
    empty_list = write(tmp_path / "answers.json", [])
    one_line_error(
        run("eval", "vqa", "--annotations", a, "--model", world / "vqa", "--answers", empty_list), 2, "empty"
    )


def test_eval_vqa_model_end_to_end(world, tmp_path):
    out = tmp_path / "answers.json"
    args = [
        "--annotations",
        ann(world, "vqa_test"),
        "--image-root",
        world / "world",
        "--model",
        world / "vqa",
        "--answers",
        ann(world, "answer_list"),
        "--k",
        4,
    ]
    m = ok(run("eval", "vqa", *args, "--results", out))
    assert set(m) == {"acc", "n_questions", "per_question_type"} and m["n_questions"] == 8
    assert 0.0 <= m["acc"] <= 100.0
    rows = json.loads(out.read_text())
    assert len(rows) == 8 and all(r["answer"] in json.loads(ann(world, "answer_list").read_text()) for r in rows)
    assert ok(run("eval", "vqa", "--annotations", ann(world, "vqa_test"), "--results", out))["acc"] == m["acc"]
    assert ok(run("eval", "vqa", *args))["acc"] == m["acc"]  # no --results: the same numbers, nothing written
    # test-dev style (no answers): only the result file
    qs = json.loads(ann(world, "vqa_test").read_text())[:2]
    dev = write(tmp_path / "dev.json", [{k: v for k, v in q.items() if k != "answer"} for q in qs])
    res = run("eval", "vqa", *args[2:], "--annotations", dev, "--results", tmp_path / "dev_out.json")
    assert ok(res) == {"n_questions": 2}
    assert len(json.loads((tmp_path / "dev_out.json").read_text())) == 2


# ---- eval retrieval / nlvr -------------------------------------------------------------------------------------


def test_eval_retrieval_model_end_to_end(world):
    from openblip.api import load
    from openblip.train.hooks import RetrievalEval, run_hook

    a = ann(world, "caption_test")
    m = ok(
        run(
            "eval",
            "retrieval",
            "--annotations",
            a,
            "--image-root",
            world / "world",
            "--model",
            world / "retrieval",
            "--k",
            2,
            "--batch-size",
            3,
        )
    )
    assert set(m) == RETRIEVAL_KEYS | {f"itc_{k}" for k in RETRIEVAL_KEYS} | {"n_images", "n_texts", "k"}
    assert (m["n_images"], m["n_texts"], m["k"]) == (4, 4, 2)
    assert m["txt_r10"] == m["img_r10"] == m["itc_txt_r10"] == 100.0  # 4 candidates: always within the top 10
    assert all(v % 25 == 0 for k, v in m.items() if k.endswith(("r1", "r5", "r10")))
    hook = RetrievalEval(a, world / "world", k_test=2)
    expected = run_hook(hook, load(world / "retrieval"), step=0, epoch=0)
    assert {k: m[k] for k in RETRIEVAL_KEYS} == pytest.approx(expected)


def test_eval_nlvr_model_end_to_end(world):
    from openblip.api import load
    from openblip.train.hooks import NLVREval, run_hook

    a = ann(world, "nlvr_test")
    m = ok(run("eval", "nlvr", "--annotations", a, "--image-root", world / "world", "--model", world / "nlvr"))
    assert set(m) == {"acc", "n_pairs"} and m["n_pairs"] == 4 and m["acc"] % 25 == 0
    assert m["acc"] == run_hook(NLVREval(a, world / "world"), load(world / "nlvr"), step=0, epoch=0)["acc"]


def test_eval_model_errors(world, tmp_path):
    a = ann(world, "nlvr_test")
    root = world / "world"
    one_line_error(run("eval", "nlvr", "--annotations", a, "--image-root", root), 2, "--model")
    one_line_error(run("eval", "retrieval", "--annotations", ann(world, "caption_test")), 2, "--model")
    one_line_error(
        run("eval", "nlvr", "--annotations", a, "--image-root", tmp_path / "nope", "--model", world / "nlvr"),
        2,
        "--image-root",
    )
    records = json.loads(a.read_text())
    records[1]["label"] = "maybe"
    one_line_error(
        run("eval", "nlvr", "--annotations", write(tmp_path / "l.json", records), "--model", world / "nlvr"),
        2,
        "record 1",
        "'label'",
    )
    one_line_error(run("eval", "retrieval", "--annotations", a, "--model", world / "retrieval"), 2, "record 0 has no")
    # unreadable images: the loader's error naming the file, exit 1
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    records = json.loads(a.read_text())
    records[2]["images"][1] = str(tmp_path / "broken.png")
    one_line_error(
        run(
            "eval",
            "nlvr",
            "--annotations",
            write(tmp_path / "n.json", records),
            "--image-root",
            root,
            "--model",
            world / "nlvr",
        ),
        1,
        "broken.png",
    )
    one_line_error(
        run(
            "eval",
            "retrieval",
            "--annotations",
            ann(world, "caption_test"),
            "--image-root",
            tmp_path,
            "--model",
            world / "retrieval",
        ),
        1,
        "scene_000005.png",
        "file not found",
    )
    one_line_error(run("eval", "nlvr", "--annotations", a, "--model", tmp_path / "no_model"), 1, "cannot load model")
