"""The DALI loader (CPU) and the reference loader: same tensors, sharding, determinism, bad videos."""

from __future__ import annotations

import itertools
import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from qslr.pipelines.augmentation import ClipSettings
from qslr.pipelines.batch import UnknownGlossError
from qslr.pipelines.clip_source import ClipSource
from qslr.pipelines.epoch_plan import Sharding, epoch_batches
from qslr.pipelines.loaders import build_loader
from qslr.pipelines.prepare import PrepareSettings, prepare_corpus
from qslr.pipelines.prepared import PreparedDataset
from qslr.pipelines.temporal_padding import padded_length
from qslr.pipelines.video_io import VideoDecodeError
from qslr.tools.damaged_videos import mutant_pool

SETTINGS = ClipSettings(crop_size=64, flip_prob=0.5, temporal_rescale=0.2, min_frames=16, max_frames=230)
# Both decode the same VP9 bits (decoding is normative); the reference converts YUV to RGB the way DALI's
# decoder does, and the two conversions differ by at most one level of 255 in rare pixels.
ONE_LEVEL = 1 / 127.5 + 1e-5


def loaders(root: Path, split: str, train: bool, batch_size: int = 3, seed: int = 5, settings=SETTINGS):
    source = ClipSource.open(root, split, settings, train=train, seed=seed)
    return (build_loader("dali", source, batch_size, shuffle=train, drop_last=False, workers=2),
            build_loader("reference", source, batch_size, shuffle=train, drop_last=False, workers=0))


def assert_same_batches(dali, reference, epochs=(0, 1), tolerance: float = ONE_LEVEL) -> int:
    count = 0
    for epoch in epochs:
        dali.set_epoch(epoch)
        reference.set_epoch(epoch)
        pairs = list(zip(dali, reference, strict=True))
        assert len(pairs) == len(dali) == len(reference)
        for a, b in pairs:
            assert a.ids == b.ids
            assert torch.equal(a.lengths, b.lengths) and torch.equal(a.targets, b.targets)
            assert torch.equal(a.target_lengths, b.target_lengths)
            assert a.videos.shape == b.videos.shape
            assert (a.videos - b.videos).abs().max().item() <= tolerance
            count += len(a)
    return count


@pytest.mark.parametrize("train", [False, True], ids=["eval", "train-augmented"])
def test_dali_cpu_equals_the_reference_loader_on_the_synthetic_dataset(tiny_corpus, train):
    count = assert_same_batches(*loaders(tiny_corpus[0], "train", train))
    assert count == 2 * len(PreparedDataset(tiny_corpus[0]).records("train"))


def test_dali_cpu_equals_the_reference_loader_with_photometric_jitter(tiny_corpus):
    settings = replace(SETTINGS, contrast_jitter=0.3, brightness_jitter=0.2)
    dali, reference = loaders(tiny_corpus[0], "train", True, settings=settings)
    # A gain of up to 1.3 stretches the decoders' one-level difference by as much.
    assert assert_same_batches(dali, reference, tolerance=1.3 * ONE_LEVEL) > 0
    plain = loaders(tiny_corpus[0], "train", True)[0]
    dali.set_epoch(0)
    plain.set_epoch(0)
    for jittered, unjittered in zip(dali, plain, strict=True):
        assert jittered.ids == unjittered.ids and torch.equal(jittered.lengths, unjittered.lengths)
        assert (jittered.videos - unjittered.videos).abs().max() > 0.05


@pytest.mark.slow
def test_dali_cpu_equals_the_reference_loader_on_a_prepared_phoenix_layout(raw_phoenix, tmp_path):
    prepare_corpus("phoenix2014", raw_phoenix[1], tmp_path / "phoenix", PrepareSettings(80, 80, workers=2),
                   show_progress=False)
    settings = ClipSettings(crop_size=70, flip_prob=0.5, temporal_rescale=0.2, min_frames=16, max_frames=230)
    for split, train in (("train", True), ("dev", False)):
        assert_same_batches(*loaders(tmp_path / "phoenix", split, train, settings=settings), epochs=(0,))


def test_each_dali_batch_carries_its_own_videos_ids_however_often_dali_asks_its_source(tiny_corpus, monkeypatch):
    """The sample indices travel through the pipeline with the frames, so a batch's ids are those of the
    frames it holds whatever the calls to the external source: here each iteration is asked for twice and
    three batches are prefetched. Indices kept aside, one entry per call, would label batches with others'."""
    from qslr.pipelines.dali_loader import DaliLoader, _Feeder

    feed = _Feeder.__call__
    iterations = []

    def asked_twice(self, info):
        feed(self, info)
        iterations.append(info.iteration)
        return feed(self, info)

    monkeypatch.setattr(_Feeder, "__call__", asked_twice)
    source = ClipSource.open(tiny_corpus[0], "train", SETTINGS, train=True, seed=5)
    dali = DaliLoader(source, 2, shuffle=True, drop_last=False, num_threads=2, prefetch=3)
    reference = build_loader("reference", source, 2, shuffle=True, drop_last=False, workers=0)
    assert assert_same_batches(dali, reference) == 2 * len(source)
    assert iterations.count(0) == 2 and len(dali) > 3  # both epochs, each longer than the prefetch


@pytest.mark.parametrize("kind", ["dali", "reference"])
def test_a_video_holding_more_frames_than_its_row_declares_is_an_error_naming_it(tiny_corpus, tmp_path, kind):
    copy = tmp_path / "copy"
    shutil.copytree(tiny_corpus[0], copy)
    rows = [json.loads(line) for line in (copy / "dev.jsonl").read_text().splitlines()]
    rows[-1]["num_frames"] -= 3
    (copy / "dev.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    source = ClipSource.open(copy, "dev", SETTINGS, train=False)
    loader = build_loader(kind, source, 2, shuffle=False, drop_last=False, workers=1)
    with pytest.raises(VideoDecodeError, match=f"video {rows[-1]['id']}: .* declares {rows[-1]['num_frames']}"):
        list(loader)


def test_batch_layout(tiny_corpus):
    dataset = PreparedDataset(tiny_corpus[0])
    records = {r.id: r for r in dataset.records("dev")}
    dali, _ = loaders(tiny_corpus[0], "dev", train=False)
    for batch in dali:
        assert batch.lengths.tolist() == sorted(batch.lengths.tolist(), reverse=True)
        assert batch.videos.dtype == torch.float32 and batch.videos.abs().max() <= 1.0
        for row, video_id in enumerate(batch.ids):
            length = int(batch.lengths[row])
            assert length == padded_length(records[video_id].num_frames, SETTINGS.kernels)
            assert torch.all(batch.videos[row, length:] == 0)
            # The replicate padding: the 6 first frames equal the clip's first frame.
            assert torch.equal(batch.videos[row, 0], batch.videos[row, 6])
        expected = [dataset.vocab[g] for video_id in batch.ids for g in records[video_id].gloss_list()]
        assert batch.targets.tolist() == expected
        assert batch.target_lengths.tolist() == [len(records[v].gloss_list()) for v in batch.ids]


def test_same_seed_same_batches_and_epochs_reshuffle(tiny_corpus):
    first, _ = loaders(tiny_corpus[0], "train", True)
    second, _ = loaders(tiny_corpus[0], "train", True)
    a, b = list(first), list(second)
    assert [x.ids for x in a] == [x.ids for x in b]
    assert all(torch.equal(x.videos, y.videos) for x, y in zip(a, b, strict=True))
    first.set_epoch(1)
    assert [x.ids for x in first] != [x.ids for x in a]


def test_ranks_read_disjoint_shards_and_eval_reads_everything_once():
    shards = [epoch_batches(10, 3, 0, 0, True, False, Sharding(r, 3)) for r in range(3)]
    seen = [i for shard in shards for batch in shard for i in batch]
    assert len({len(s) for s in shards}) == 1 and set(seen) == set(range(10))
    evaluation = [epoch_batches(10, 3, 0, 0, False, False, Sharding(r, 3), even=False) for r in range(3)]
    assert sorted(i for shard in evaluation for batch in shard for i in batch) == list(range(10))
    with pytest.raises(ValueError, match="outside a world"):
        Sharding(3, 3)


def _damaged_copy(root: Path, tmp_path: Path, damage) -> tuple[Path, str]:
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    record = PreparedDataset(copy).records("dev")[0]
    damage(copy / record.video)
    return copy, record.id


def _garble(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 3:] = bytes(len(data) - len(data) // 3)
    path.write_bytes(bytes(data))


@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind", ["dali", "reference", "reference-workers"])
@pytest.mark.parametrize("damage", [
    pytest.param(lambda p: p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2]), id="truncated"),
    pytest.param(_garble, id="corrupt"),
    pytest.param(lambda p: p.write_bytes(b""), id="empty"),
    pytest.param(lambda p: p.unlink(), id="missing"),
])
@pytest.mark.slow
def test_a_bad_video_is_an_error_naming_it(tiny_corpus, tmp_path, kind, damage):
    root, video_id = _damaged_copy(tiny_corpus[0], tmp_path, damage)
    source = ClipSource.open(root, "dev", SETTINGS, train=False)
    loader = build_loader(kind.split("-")[0], source, 2, shuffle=False, drop_last=False,
                          workers=2 if kind == "reference-workers" else 1)
    with pytest.raises((VideoDecodeError, RuntimeError), match=f"video {video_id}"):
        list(loader)


def test_an_unknown_gloss_names_the_video(tiny_corpus):
    vocab = dict(PreparedDataset(tiny_corpus[0]).vocab)
    record = PreparedDataset(tiny_corpus[0]).records("test")[0]
    del vocab[record.gloss_list()[0]]
    with pytest.raises(UnknownGlossError, match=f"video {record.id}: gloss"):
        ClipSource.open(tiny_corpus[0], "test", SETTINGS, train=False, vocab=vocab)


def test_gpu_decoding_refuses_frames_below_nvdec_minimum_in_one_line(tiny_corpus):
    from qslr.pipelines.dali_loader import NVDEC_VP9_MIN_SIZE, FramesTooSmallForNvdecError

    source = ClipSource.open(tiny_corpus[0], "train", ClipSettings(crop_size=64), train=True)
    assert all(r.width < NVDEC_VP9_MIN_SIZE[0] for r in source.records)  # the tiny corpus is rendered at 72x72
    with pytest.raises(FramesTooSmallForNvdecError) as error:
        build_loader("dali", source, 2, shuffle=False, drop_last=False, device="cuda")
    message = str(error.value)
    assert "\n" not in message and "72x72" in message and "128x128" in message and "--size 128" in message


def _epoch(loader, epoch: int) -> list:
    loader.set_epoch(epoch)
    return [(b.ids, b.lengths.clone(), b.videos.clone()) for b in loader]


def _same_epochs(got: list, expected: list) -> None:
    assert [ids for ids, _, _ in got] == [ids for ids, _, _ in expected]
    for (_, lengths, videos), (_, want_lengths, want_videos) in zip(got, expected, strict=True):
        assert torch.equal(lengths, want_lengths) and torch.equal(videos, want_videos)


@pytest.mark.parametrize("kind", ["dali", "reference"])
@pytest.mark.slow
def test_leaving_an_epoch_early_leaves_the_next_one_whole(tiny_corpus, kind):
    source = ClipSource.open(tiny_corpus[0], "train", SETTINGS, train=True, seed=7)

    def make():
        return build_loader(kind, source, 2, shuffle=True, drop_last=False, workers=2)

    fresh = make()
    expected = {epoch: _epoch(fresh, epoch) for epoch in (1, 2)}
    batches = len(expected[1])
    loader = make()
    for stop in (0, 1, batches - 1, batches):
        loader.set_epoch(0)
        iterator = iter(loader)
        assert len(list(itertools.islice(iterator, stop))) == stop
        iterator.close()  # what a `break` out of a for loop leads to
        _same_epochs(_epoch(loader, 1), expected[1])
    # An exception raised inside the consumer's loop, with the iterator still referenced.
    loader.set_epoch(0)
    iterator = iter(loader)
    with pytest.raises(ZeroDivisionError):
        for _ in iterator:
            raise ZeroDivisionError
    _same_epochs(_epoch(loader, 2), expected[2])
    del iterator
    _same_epochs(_epoch(loader, 1), expected[1])


@pytest.mark.timeout(300)
@pytest.mark.parametrize("kind", ["dali", "reference"])
@pytest.mark.slow
def test_damaged_videos_in_a_dataset_are_refused_by_name(tiny_corpus, tmp_path, kind, escaped_mutants):
    """Seeded mutants of one dev video (and the mutants that once escaped the servers' isolation) in its place:
    each epoch either reads every video whole or stops with an error naming that video, never another error."""
    copy, video_id = _damaged_copy(tiny_corpus[0], tmp_path, lambda path: None)
    target = copy / PreparedDataset(copy).records("dev")[0].video
    pool = [m.data for m in mutant_pool({"webm": target.read_bytes()}, seed=7)]
    refused = 0
    for data in [*pool, *(p.read_bytes() for p in escaped_mutants)]:
        target.write_bytes(data)
        source = ClipSource.open(copy, "dev", SETTINGS, train=False)
        loader = build_loader(kind, source, 2, shuffle=False, drop_last=False, workers=int(kind == "dali"))
        try:
            assert sum(len(batch) for batch in loader) == len(source)
        except (VideoDecodeError, RuntimeError) as exc:
            assert f"video {video_id}" in str(exc), str(exc)
            refused += 1
    assert refused >= len(pool) // 2


def _forkserver_children() -> set[int]:
    """Processes forked by this process's multiprocessing fork server: the reference loader's workers."""
    import multiprocessing.forkserver as forkserver

    server = getattr(forkserver._forkserver, "_forkserver_pid", None)
    children = set()
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(state[1]) == server and state[0] != "Z":
            children.add(int(entry.name))
    return children


def test_a_reference_loader_read_once_lets_its_workers_go(tiny_corpus):
    """Evaluation reads its loader once: its workers go when it is done, not when it is collected (a persistent
    worker takes PyTorch's 5-s join timeout then)."""
    source = ClipSource.open(tiny_corpus[0], "dev", SETTINGS, train=False)
    before = _forkserver_children()
    once = build_loader("reference", source, 2, shuffle=False, drop_last=False, workers=1, reuse_workers=False)
    during = [len(_forkserver_children() - before) for _ in once]
    assert during and all(count == 1 for count in during)
    assert not _forkserver_children() - before
