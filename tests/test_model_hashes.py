"""Model file hashes in Fooocus image metadata: SHA-256 prefixes (oracle: hashlib over the whole
file), the memory + JSON cache keyed by path, size and mtime, and the hashes a real text-to-image
job over the demo models writes into its PNG in both metadata schemes."""
import hashlib
import json
import os
import threading
from pathlib import Path

from PIL import Image

from server.folders import ModelFolders
from server.fooocus.api import FooocusImageWriter
from server.fooocus.hashes import ModelHashes, file_sha256
from server.fooocus.metadata import read_metadata
from server.fooocus.outputs import OutputStore

from test_fooocus_t2i import BASE, fetch, generate, models_dir, start, tiny  # noqa: F401 (fixture)

LORA = "tiny-sdxl-lora.safetensors"


def expected_prefix(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:10]


class CountingHasher:
    """The real hasher, counting the files it reads."""

    def __init__(self) -> None:
        self.reads: list[Path] = []
        self.lock = threading.Lock()

    def __call__(self, path: Path) -> str:
        with self.lock:
            self.reads.append(path)
        return file_sha256(path)


def test_prefix_is_sha256_of_the_whole_file_read_in_chunks(tmp_path):
    data = os.urandom(10_000)
    model = tmp_path / "model.safetensors"
    model.write_bytes(data)
    hashes = ModelHashes(tmp_path / "cache.json")
    assert hashes.sha256_prefix(model) == hashlib.sha256(data).hexdigest()[:10]
    assert len(hashes.sha256_prefix(str(model))) == 10
    # chunk boundaries that do not divide the size still cover every byte
    assert file_sha256(model, chunk_size=777) == hashlib.sha256(data).hexdigest()
    empty = tmp_path / "empty.bin"
    empty.write_bytes(b"")
    assert hashes.sha256_prefix(empty) == hashlib.sha256(b"").hexdigest()[:10]


def test_cache_skips_unchanged_files_and_rehashes_changed_ones(tmp_path):
    model = tmp_path / "model.safetensors"
    model.write_bytes(b"first version")
    cache_file = tmp_path / "cache.json"
    hasher = CountingHasher()
    hashes = ModelHashes(cache_file, hasher=hasher)
    first = hashes.sha256_prefix(model)
    assert hashes.sha256_prefix(model) == first and hashes.sha256_prefix(tmp_path / "." / model.name) == first
    assert hasher.reads == [model.resolve()]

    # same size, new content and mtime
    model.write_bytes(b"other version")
    stat = model.stat()
    os.utime(model, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    assert hashes.sha256_prefix(model) == expected_prefix(model) != first
    assert len(hasher.reads) == 2
    # new size
    model.write_bytes(b"a longer third version")
    assert hashes.sha256_prefix(model) == expected_prefix(model)
    assert len(hasher.reads) == 3
    assert hashes.sha256_prefix(model) == expected_prefix(model) and len(hasher.reads) == 3

    # a new ModelHashes over the same cache file reads nothing for the unchanged file
    stored = json.loads(cache_file.read_text())
    assert list(stored["entries"]) == [str(model.resolve())]
    assert stored["entries"][str(model.resolve())]["sha256"] == hashlib.sha256(model.read_bytes()).hexdigest()
    fresh_hasher = CountingHasher()
    assert ModelHashes(cache_file, hasher=fresh_hasher).sha256_prefix(model) == expected_prefix(model)
    assert fresh_hasher.reads == []


def test_corrupt_cache_file_is_ignored_and_rewritten(tmp_path):
    model = tmp_path / "model.safetensors"
    model.write_bytes(b"weights")
    cache_file = tmp_path / "cache.json"
    for corrupt in ("{not json", "[1, 2]", '{"version": 1, "entries": [3]}',
                    json.dumps({"version": 1, "entries": {str(model.resolve()): {"size": "x"}}})):
        cache_file.write_text(corrupt)
        hasher = CountingHasher()
        hashes = ModelHashes(cache_file, hasher=hasher)
        assert hashes.sha256_prefix(model) == expected_prefix(model) and len(hasher.reads) == 1
        assert json.loads(cache_file.read_text())["entries"][str(model.resolve())]["size"] == len(b"weights")
    # a forged entry with a stale size is not trusted
    cache_file.write_text(json.dumps({"version": 1, "entries": {str(model.resolve()): {
        "size": 999, "mtime_ns": model.stat().st_mtime_ns, "sha256": "0" * 64}}}))
    assert ModelHashes(cache_file).sha256_prefix(model) == expected_prefix(model)


def test_threads_hash_a_new_file_once(tmp_path):
    model = tmp_path / "model.safetensors"
    model.write_bytes(os.urandom(50_000))
    hasher = CountingHasher()
    hashes = ModelHashes(tmp_path / "cache.json", hasher=hasher)
    results: list[str] = []
    threads = [threading.Thread(target=lambda: results.append(hashes.sha256_prefix(model))) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [expected_prefix(model)] * 8 and len(hasher.reads) == 1


def test_writer_gives_missing_models_an_empty_hash(tmp_path):
    root = tmp_path / "models"
    (root / "checkpoints").mkdir(parents=True)
    (root / "checkpoints" / "base.safetensors").write_bytes(b"base weights")
    writer = FooocusImageWriter(OutputStore(tmp_path / "out", "http://x"), ModelHashes(tmp_path / "cache.json"),
                                ModelFolders(root))
    metadata = {"prompt": "p", "negative_prompt": "", "styles": [], "performance": "Speed", "steps": 2,
                "width": 8, "height": 8, "guidance_scale": 7.0, "sharpness": 2.0, "adm_guidance": [1.5, 0.8, 0.3],
                "base_model": "base.safetensors", "sampler": "euler", "scheduler": "karras", "seed": 1,
                "refiner_model": "gone.safetensors", "loras": [["../escape.safetensors", 0.5], ["absent", 1.0]]}
    saved = writer.save(Image.new("RGB", (8, 8)), job_id="j", index=0, extension="png", save_name="", scheme="fooocus",
                        metadata=metadata)
    logged = read_metadata(saved["fooocus"]["path"]).parsed
    assert logged["base_model_hash"] == expected_prefix(root / "checkpoints" / "base.safetensors")
    assert logged["refiner_model_hash"] == ""
    assert logged["loras"] == [["escape", 0.5, ""], ["absent", 1.0, ""]]


async def test_job_writes_model_and_lora_hashes_in_both_schemes(aiohttp_client, models_dir, tmp_path):
    client, app, api = await start(aiohttp_client, models_dir, tmp_path)
    base_hash = expected_prefix(models_dir / "checkpoints" / BASE)
    lora_hash = expected_prefix(models_dir / "loras" / LORA)
    body = tiny({"prompt": "a cat", "style_selections": [], "image_seed": 3,
                 "loras": [{"model_name": LORA, "weight": 0.5}]})

    [item] = await generate(client, {**body, "meta_scheme": "fooocus"})
    logged = read_metadata(await fetch(client, item["url"])).parsed
    assert logged["base_model"] == "tiny-sdxl" and logged["base_model_hash"] == base_hash
    assert ["tiny-sdxl-lora", 0.5, lora_hash] in logged["loras"]

    [item] = await generate(client, {**body, "meta_scheme": "a1111"})
    meta = read_metadata(await fetch(client, item["url"]))
    assert f"Model: tiny-sdxl, Model hash: {base_hash}," in meta.text
    assert meta.parsed["parameters"]["Model hash"] == base_hash
    assert meta.parsed["parameters"]["Lora hashes"] == f"tiny-sdxl-lora: {lora_hash}"

    # hashed once per file, kept next to the outputs for the next start
    cache = json.loads((Path(app.config.output_dir) / "model_hashes.json").read_text())
    assert {Path(path).name for path in cache["entries"]} == {BASE, LORA}
