"""The pretrained table and the download code; every network call is replaced by an in-memory fake."""

from __future__ import annotations

import dataclasses
import hashlib
import io
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import huggingface_hub
import pytest
from huggingface_hub import constants as hf_constants
from huggingface_hub.errors import LocalEntryNotFoundError

from openblip import pretrained
from openblip.pretrained import (
    DEFAULT_MODELS,
    OFFICIAL_BASE_URL,
    PRETRAINED,
    TASKS,
    DownloadError,
    PretrainedEntry,
    UnknownModelError,
    cache_dir,
    download,
    get_pretrained,
    is_cached,
    list_pretrained,
)

OFFICIAL_FILES = {
    "blip-base-pretrain-14m": ("model_base_14M.pth", "pretrain", "blip-base", 224),
    "blip-base-pretrain": ("model_base.pth", "pretrain", "blip-base", 224),
    "blip-base-pretrain-capfilt-l": ("model_base_capfilt_large.pth", "pretrain", "blip-base", 224),
    "blip-large-pretrain": ("model_large.pth", "pretrain", "blip-large", 224),
    "blip-base-retrieval-coco": ("model_base_retrieval_coco.pth", "retrieval", "blip-base", 384),
    "blip-large-retrieval-coco": ("model_large_retrieval_coco.pth", "retrieval", "blip-large", 384),
    "blip-base-retrieval-flickr": ("model_base_retrieval_flickr.pth", "retrieval", "blip-base", 384),
    "blip-large-retrieval-flickr": ("model_large_retrieval_flickr.pth", "retrieval", "blip-large", 384),
    "blip-base-caption-coco": ("model_base_caption_capfilt_large.pth", "caption", "blip-base", 384),
    "blip-large-caption-coco": ("model_large_caption.pth", "caption", "blip-large", 384),
    "blip-base-vqa": ("model_vqa.pth", "vqa", "blip-base", 480),
    "blip-base-vqa-capfilt-l": ("model_base_vqa_capfilt_large.pth", "vqa", "blip-base", 480),
    "blip-base-nlvr": ("model_base_nlvr.pth", "nlvr", "blip-base", 384),
}
HF_REPOS = {
    "Salesforce/blip-image-captioning-base": ("caption", "blip-base"),
    "Salesforce/blip-image-captioning-large": ("caption", "blip-large"),
    "Salesforce/blip-itm-base-coco": ("retrieval", "blip-base"),
    "Salesforce/blip-itm-large-coco": ("retrieval", "blip-large"),
    "Salesforce/blip-itm-base-flickr": ("retrieval", "blip-base"),
    "Salesforce/blip-itm-large-flickr": ("retrieval", "blip-large"),
    "Salesforce/blip-vqa-base": ("vqa", "blip-base"),
    "Salesforce/blip-vqa-capfilt-large": ("vqa", "blip-base"),
}
REAL_SNAPSHOT_DOWNLOAD = huggingface_hub.snapshot_download
PAYLOAD = b"not really a checkpoint " * 5000  # ~120 kB: several chunks once _CHUNK is shrunk


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Caches under tmp_path, online mode, and no real network (any unpatched request fails the test)."""
    monkeypatch.setenv("OPENBLIP_CACHE", str(tmp_path / "openblip"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(pretrained, "_CHUNK", 4096)

    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("a test touched the network")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", no_network)
    return tmp_path


class FakeResponse(io.BytesIO):
    def __init__(self, data: bytes, length: int | None = None) -> None:
        super().__init__(data)
        self.headers = {"Content-Length": str(len(data) if length is None else length)}


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Serves PAYLOAD for every URL and records the URLs requested."""
    requested: list[str] = []

    def urlopen(request: urllib.request.Request | str, timeout: float | None = None) -> FakeResponse:
        requested.append(request.full_url if isinstance(request, urllib.request.Request) else request)
        return FakeResponse(PAYLOAD)

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    return requested


@pytest.fixture
def fake_entry(monkeypatch: pytest.MonkeyPatch) -> Callable[[str | None], PretrainedEntry]:
    """Registers a copy of blip-base-caption-coco with a chosen sha256 under the name 'fake'."""

    def make(sha256: str | None) -> PretrainedEntry:
        entry = dataclasses.replace(PRETRAINED["blip-base-caption-coco"], name="fake", sha256=sha256)
        monkeypatch.setitem(PRETRAINED, "fake", entry)
        return entry

    return make


# --- the table ----------------------------------------------------------------------------------------------------


def test_table_has_exactly_the_released_checkpoints() -> None:
    assert set(PRETRAINED) == set(OFFICIAL_FILES) | set(HF_REPOS)
    assert len([e for e in PRETRAINED.values() if e.source == "official"]) == 13
    assert len([e for e in PRETRAINED.values() if e.source == "hf"]) == 8


@pytest.mark.parametrize("name", sorted(OFFICIAL_FILES))
def test_official_entries(name: str) -> None:
    filename, task, arch, image_size = OFFICIAL_FILES[name]
    entry = PRETRAINED[name]
    assert entry.name == name
    assert (entry.filename, entry.task, entry.arch, entry.image_size) == (filename, task, arch, image_size)
    assert entry.source == "official" and entry.hf_repo is None
    assert entry.url == OFFICIAL_BASE_URL + filename == entry.location
    assert OFFICIAL_BASE_URL == "https://storage.googleapis.com/sfr-vision-language-research/BLIP/models/"
    assert entry.sha256 is None
    assert entry.description


@pytest.mark.parametrize("repo", sorted(HF_REPOS))
def test_hf_entries(repo: str) -> None:
    entry = PRETRAINED[repo]
    assert (entry.task, entry.arch) == HF_REPOS[repo]
    assert entry.source == "hf" and entry.hf_repo == repo == entry.location
    assert entry.url is None and entry.filename is None and entry.sha256 is None
    assert entry.image_size == 384
    assert entry.description


def test_entry_descriptions_carry_the_traps() -> None:
    assert "model_base_capfilt_large.pth" in PRETRAINED["Salesforce/blip-image-captioning-base"].description
    assert "pre-trained" in PRETRAINED["Salesforce/blip-image-captioning-base"].description
    assert "480" in PRETRAINED["Salesforce/blip-vqa-base"].description
    assert "384" in PRETRAINED["Salesforce/blip-vqa-capfilt-large"].description
    assert "133.3" in PRETRAINED["blip-base-caption-coco"].description


def test_entries_are_validated_and_frozen() -> None:
    entry = PRETRAINED["blip-base-nlvr"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        entry.task = "vqa"  # type: ignore[misc]
    with pytest.raises(ValueError, match="task"):
        dataclasses.replace(entry, task="itm")
    with pytest.raises(ValueError, match="arch"):
        dataclasses.replace(entry, arch="blip-huge")
    with pytest.raises(ValueError, match="official"):
        dataclasses.replace(entry, url=None)
    with pytest.raises(ValueError, match="hf"):
        dataclasses.replace(PRETRAINED["Salesforce/blip-vqa-base"], filename="x.pth")


def test_defaults() -> None:
    assert DEFAULT_MODELS == {
        "caption": "blip-base-caption-coco",
        "retrieval": "blip-base-retrieval-coco",
        "vqa": "blip-base-vqa-capfilt-l",
        "nlvr": "blip-base-nlvr",
        "pretrain": "blip-base-pretrain-capfilt-l",
    }
    assert set(DEFAULT_MODELS) == set(TASKS)
    for task, name in DEFAULT_MODELS.items():
        assert PRETRAINED[name].task == task and PRETRAINED[name].source == "official"


def test_list_pretrained() -> None:
    assert list_pretrained() == list(PRETRAINED)
    assert list_pretrained()[:13] == [n for n in PRETRAINED if PRETRAINED[n].source == "official"]
    assert set(list_pretrained("nlvr")) == {"blip-base-nlvr"}
    assert set(list_pretrained("vqa")) == {
        "blip-base-vqa",
        "blip-base-vqa-capfilt-l",
        "Salesforce/blip-vqa-base",
        "Salesforce/blip-vqa-capfilt-large",
    }
    assert sum(len(list_pretrained(t)) for t in TASKS) == len(PRETRAINED)
    with pytest.raises(ValueError, match="unknown task"):
        list_pretrained("itm")


# --- lookups ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "name"),
    [
        ("blip-base-caption-coco", "blip-base-caption-coco"),
        ("Salesforce/blip-vqa-base", "Salesforce/blip-vqa-base"),
        ("salesforce/BLIP-vqa-base", "Salesforce/blip-vqa-base"),
        ("model_base_caption_capfilt_large.pth", "blip-base-caption-coco"),
        ("model_base.pth", "blip-base-pretrain"),
        ("model_vqa.pth", "blip-base-vqa"),
        (OFFICIAL_BASE_URL + "model_large_retrieval_flickr.pth", "blip-large-retrieval-flickr"),
        ("model*_base_caption.pth", "blip-base-caption-coco"),
        # the '*' names were the CapFilt-L column (renamed in salesforce/BLIP 17dcdd9): not model_base / model_vqa
        ("model*_base.pth", "blip-base-pretrain-capfilt-l"),
        ("model*_vqa.pth", "blip-base-vqa-capfilt-l"),
        (OFFICIAL_BASE_URL + "model*_vqa.pth", "blip-base-vqa-capfilt-l"),
    ],
)
def test_get_pretrained(query: str, name: str) -> None:
    assert get_pretrained(query) is PRETRAINED[name]


def test_every_official_filename_resolves() -> None:
    for name, (filename, *_) in OFFICIAL_FILES.items():
        assert get_pretrained(filename).name == name


def test_unknown_name_suggests_close_matches() -> None:
    with pytest.raises(UnknownModelError) as info:
        get_pretrained("blip-base-captoin-coco")
    assert isinstance(info.value, KeyError)
    assert info.value.name == "blip-base-captoin-coco"
    assert "blip-base-caption-coco" in info.value.suggestions
    message = str(info.value)
    assert "blip-base-captoin-coco" in message and "did you mean" in message and "'blip-base-caption-coco'" in message
    assert not message.startswith('"')  # not KeyError's repr()-quoted message

    with pytest.raises(UnknownModelError) as info:
        get_pretrained("model_base_caption.pth")  # the star-less spelling of a historical name
    assert "blip-base-caption-coco" in info.value.suggestions

    with pytest.raises(UnknownModelError) as info:
        get_pretrained("zzzz")
    assert info.value.suggestions == [] and "did you mean" not in str(info.value)


# --- cache location -----------------------------------------------------------------------------------------------


def test_cache_dir_override(isolated: Path) -> None:
    assert cache_dir() == isolated / "openblip"


def test_cache_dir_follows_hf_home_and_hf_hub_cache(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENBLIP_CACHE")
    assert cache_dir() == isolated / "hf" / "hub" / "openblip" / "official"
    monkeypatch.setenv("HF_HUB_CACHE", str(isolated / "hubcache"))
    assert cache_dir() == isolated / "hubcache" / "openblip" / "official"
    monkeypatch.delenv("HF_HUB_CACHE")
    monkeypatch.delenv("HF_HOME")
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(isolated / "constant"))
    assert cache_dir() == isolated / "constant" / "openblip" / "official"


def make_hub_cache(hub: Path, repo: str, commit: str = "0123456789abcdef0123456789abcdef01234567") -> Path:
    """Lays out a repo in the huggingface_hub cache format (refs/main -> snapshots/<commit>/config.json)."""
    repo_dir = hub / ("models--" + repo.replace("/", "--"))
    snapshot = repo_dir / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (snapshot / "config.json").write_text("{}")
    (snapshot / "model.safetensors").write_bytes(b"")
    (repo_dir / "refs").mkdir()
    (repo_dir / "refs" / "main").write_text(commit)
    return snapshot


def test_is_cached(isolated: Path) -> None:
    assert not is_cached("blip-base-nlvr")
    (isolated / "openblip").mkdir()
    (isolated / "openblip" / "model_base_nlvr.pth").write_bytes(b"x")
    assert is_cached("blip-base-nlvr") and is_cached("model_base_nlvr.pth")

    repo = "Salesforce/blip-vqa-base"
    assert not is_cached(repo)
    snapshot = make_hub_cache(isolated / "hf" / "hub", repo)
    assert is_cached(repo)
    assert not is_cached("Salesforce/blip-vqa-capfilt-large")
    (snapshot / "model.safetensors").unlink()  # the config alone (an interrupted fetch) is not a usable model
    assert not is_cached(repo)
    (snapshot / "pytorch_model.bin").write_bytes(b"")
    assert is_cached(repo)


# --- official downloads -------------------------------------------------------------------------------------------


def test_download_writes_file_atomically(isolated: Path, server: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    replaced: list[tuple[str, str]] = []
    real_replace = pretrained.os.replace

    def spy_replace(src: str, dst: str) -> None:
        assert Path(src).read_bytes() == PAYLOAD and not Path(dst).exists()  # complete before it becomes visible
        replaced.append((str(src), str(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(pretrained.os, "replace", spy_replace)
    path = download("blip-base-nlvr", progress=False)
    assert path == isolated / "openblip" / "model_base_nlvr.pth"
    assert path.read_bytes() == PAYLOAD
    assert server == [OFFICIAL_BASE_URL + "model_base_nlvr.pth"]
    assert replaced == [(str(path) + ".part", str(path))]
    assert [p for p in path.parent.iterdir() if p.name != ".locks"] == [path]
    assert is_cached("blip-base-nlvr")


def test_download_shows_progress_on_stderr(server: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    download("blip-base-nlvr", progress=True)
    captured = capsys.readouterr()
    assert "model_base_nlvr.pth" in captured.err and captured.out == ""


def test_cached_file_is_returned_without_network(server: list[str]) -> None:
    first = download("blip-base-caption-coco", progress=False)
    second = download("model_base_caption_capfilt_large.pth", progress=False)
    assert first == second and len(server) == 1


def test_sha256_match(server: list[str], fake_entry: Callable[[str | None], PretrainedEntry]) -> None:
    fake_entry(hashlib.sha256(PAYLOAD).hexdigest().upper())  # case of the stored digest does not matter
    path = download("fake", progress=False)
    assert path.read_bytes() == PAYLOAD and len(server) == 1


def test_sha256_mismatch_leaves_no_file(
    isolated: Path, server: list[str], fake_entry: Callable[[str | None], PretrainedEntry]
) -> None:
    wrong = hashlib.sha256(b"something else").hexdigest()
    fake_entry(wrong)
    with pytest.raises(DownloadError) as info:
        download("fake", progress=False)
    message = str(info.value)
    assert wrong in message and hashlib.sha256(PAYLOAD).hexdigest() in message
    assert "model_base_caption_capfilt_large.pth" in message
    assert not [
        p for p in (isolated / "openblip").iterdir() if p.name != ".locks"
    ]  # neither the final file nor the .part


def test_force_rechecks_the_cached_hash(
    isolated: Path, server: list[str], fake_entry: Callable[[str | None], PretrainedEntry]
) -> None:
    good = hashlib.sha256(PAYLOAD).hexdigest()
    fake_entry(good)
    path = download("fake", progress=False)
    download("fake", progress=False, force=True)  # hash matches: still no request
    assert len(server) == 1
    path.write_bytes(b"corrupted")
    assert download("fake", progress=False) == path and path.read_bytes() == b"corrupted"  # not checked without force
    download("fake", progress=False, force=True)  # mismatch: fetched again
    assert len(server) == 2 and path.read_bytes() == PAYLOAD


def test_force_without_hash_downloads_again(server: list[str]) -> None:
    download("blip-base-nlvr", progress=False)
    download("blip-base-nlvr", progress=False, force=True)
    assert len(server) == 2


def test_offline_without_cache(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # urlopen still raises AssertionError if it is called
    with pytest.raises(DownloadError) as info:
        download("blip-base-caption-coco", progress=False)
    message = str(info.value)
    assert OFFICIAL_BASE_URL + "model_base_caption_capfilt_large.pth" in message
    assert str(isolated / "openblip" / "model_base_caption_capfilt_large.pth") in message
    assert "openblip.load('/path/to/model_base_caption_capfilt_large.pth')" in message
    assert "--model PATH" in message and "HF_HUB_OFFLINE" in message


def test_offline_from_huggingface_hub_constant(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(DownloadError, match="HF_HUB_OFFLINE"):
        download("blip-base-nlvr", progress=False)


def test_concurrent_downloads_of_one_file_all_succeed(
    isolated: Path, server: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # torchrun starts every rank on the same checkpoint: one fetches, the others wait for it and reuse the file
    import concurrent.futures
    import time

    class SlowResponse(FakeResponse):
        def read(self, *args: object) -> bytes:
            time.sleep(0.002)  # downloads overlap in time
            return super().read(*args)

    fast = urllib.request.urlopen
    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: SlowResponse(fast(*a, **k).getvalue()))

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        paths = list(pool.map(lambda _: download("blip-base-nlvr", progress=False), range(4)))
    assert paths == [isolated / "openblip" / "model_base_nlvr.pth"] * 4
    assert paths[0].read_bytes() == PAYLOAD and len(server) == 1
    assert not list((isolated / "openblip").glob("*.part"))


def test_offline_with_cache(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "true")
    (isolated / "openblip").mkdir()
    (isolated / "openblip" / "model_base_vqa_capfilt_large.pth").write_bytes(b"x")
    assert download("model*_vqa.pth") == isolated / "openblip" / "model_base_vqa_capfilt_large.pth"


@pytest.mark.parametrize(
    "error",
    [
        urllib.error.URLError("Name or service not known"),
        urllib.error.HTTPError(OFFICIAL_BASE_URL, 404, "Not Found", None, None),  # type: ignore[arg-type]
        TimeoutError("timed out"),
        ConnectionResetError("reset"),
    ],
)
def test_network_error(isolated: Path, monkeypatch: pytest.MonkeyPatch, error: Exception) -> None:
    def urlopen(request: object, timeout: float | None = None) -> None:
        raise error

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    with pytest.raises(DownloadError) as info:
        download("blip-base-retrieval-coco", progress=False)
    assert info.value.__cause__ is error
    assert OFFICIAL_BASE_URL + "model_base_retrieval_coco.pth" in str(info.value)
    assert "local path" in str(info.value)
    assert not is_cached("blip-base-retrieval-coco")


def test_truncated_download_leaves_no_file(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(
        urllib.request, "urlopen", lambda request, timeout=None: FakeResponse(PAYLOAD, len(PAYLOAD) + 1)
    )
    with pytest.raises(DownloadError, match="connection closed"):
        download("blip-base-nlvr", progress=False)
    assert not [p for p in (isolated / "openblip").iterdir() if p.name != ".locks"]


def test_error_while_streaming_leaves_no_file(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class Broken(FakeResponse):
        def read(self, size: int | None = -1) -> bytes:
            if self.tell() > 0:
                raise ConnectionResetError("peer went away")
            return super().read(size)

    monkeypatch.setattr(urllib.request, "urlopen", lambda request, timeout=None: Broken(PAYLOAD))
    with pytest.raises(DownloadError, match="ConnectionResetError"):
        download("blip-base-nlvr", progress=False)
    assert not [p for p in (isolated / "openblip").iterdir() if p.name != ".locks"]


# --- Hugging Face downloads ---------------------------------------------------------------------------------------


def test_hf_download(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[tuple[str, dict]] = []
    snapshot = isolated / "snapshot"
    snapshot.mkdir()
    (snapshot / "model.safetensors").write_bytes(b"")

    def snapshot_download(repo_id: str, **kwargs: object) -> str:
        calls.append((repo_id, kwargs))
        return str(snapshot)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    assert download("Salesforce/blip-vqa-base") == snapshot
    [(repo, kwargs)] = calls
    assert repo == "Salesforce/blip-vqa-base"
    assert kwargs["allow_patterns"] == ["config.json", "*.safetensors", "*.safetensors.index.json"]  # not the .bin
    assert Path(kwargs["cache_dir"]) == isolated / "hf" / "hub"
    assert kwargs["local_files_only"] is False and kwargs["force_download"] is False

    download("salesforce/blip-vqa-base", force=True)
    assert calls[-1][0] == "Salesforce/blip-vqa-base" and calls[-1][1]["force_download"] is True


def test_hf_pytorch_weights_only_when_there_are_no_safetensors(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    snapshot = isolated / "snapshot"
    snapshot.mkdir()
    patterns: list[list[str]] = []

    def snapshot_download(repo_id: str, **kwargs: object) -> str:
        patterns.append(list(kwargs["allow_patterns"]))  # type: ignore[call-overload]
        if "pytorch_model.bin" in patterns[-1]:
            (snapshot / "pytorch_model.bin").write_bytes(b"")
        return str(snapshot)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    assert download("Salesforce/blip-vqa-base") == snapshot
    assert patterns == [pretrained.HF_ALLOW_PATTERNS, ["config.json", "pytorch_model.bin"]]
    (snapshot / "pytorch_model.bin").unlink()
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda repo_id, **kwargs: str(snapshot))
    with pytest.raises(DownloadError, match="no weights"):
        download("Salesforce/blip-vqa-base")


def test_hf_offline_uses_local_files_only(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict = {}

    def snapshot_download(repo_id: str, **kwargs: object) -> str:
        seen.update(kwargs)
        if kwargs["local_files_only"]:
            raise LocalEntryNotFoundError("Cannot find the requested files in the disk cache")
        return "unreachable"

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DownloadError) as info:
        download("Salesforce/blip-itm-base-coco")
    assert seen["local_files_only"] is True
    message = str(info.value)
    assert "Salesforce/blip-itm-base-coco" in message and str(isolated / "hf" / "hub") in message
    assert "HF_HUB_OFFLINE" in message and "--model PATH" in message
    assert "openblip.load('/path/to/blip-itm-base-coco')" in message
    assert isinstance(info.value.__cause__, LocalEntryNotFoundError)


@pytest.mark.parametrize(
    "error",
    [
        LocalEntryNotFoundError("connection error and nothing cached"),
        ConnectionError("no route to host"),
    ],
)
def test_hf_network_error(monkeypatch: pytest.MonkeyPatch, error: Exception) -> None:
    def snapshot_download(repo_id: str, **kwargs: object) -> str:
        raise error

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    with pytest.raises(DownloadError, match="Salesforce/blip-image-captioning-large") as info:
        download("Salesforce/blip-image-captioning-large")
    assert info.value.__cause__ is error
    assert "download failed" in str(info.value)


def test_hf_http_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub.errors import HfHubHTTPError

    def snapshot_download(repo_id: str, **kwargs: object) -> str:
        # A stand-in for the HTTP client's response object: all the error reads from it is headers and request.
        raise HfHubHTTPError("502 Bad Gateway", response=SimpleNamespace(headers={}, request=None))

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    with pytest.raises(DownloadError, match="HfHubHTTPError"):
        download("Salesforce/blip-itm-large-flickr")


def test_hf_programming_errors_are_not_swallowed(monkeypatch: pytest.MonkeyPatch) -> None:
    def snapshot_download(repo_id: str, **kwargs: object) -> str:
        raise TypeError("unexpected keyword")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    with pytest.raises(TypeError):
        download("Salesforce/blip-itm-large-flickr")


def test_hf_offline_with_the_real_snapshot_download(isolated: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """In offline mode huggingface_hub reads only its cache, so the real function can run here."""
    monkeypatch.setattr(huggingface_hub, "snapshot_download", REAL_SNAPSHOT_DOWNLOAD)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DownloadError) as info:
        download("Salesforce/blip-vqa-base")
    assert isinstance(info.value.__cause__, LocalEntryNotFoundError)

    snapshot = make_hub_cache(isolated / "hf" / "hub", "Salesforce/blip-vqa-base")
    assert download("Salesforce/blip-vqa-base") == snapshot
