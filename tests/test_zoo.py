"""Tests of the trained-model cache (stdyn.training.zoo), with stand-in models and worlds."""
from __future__ import annotations

import importlib
import json
import os
import sys

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

from stdyn import cli, tasks, training
from stdyn.training import profiles, zoo

torch.set_num_threads(1)

# The stand-in world's class is the direction of a brightness ramp, which a recolouring that
# inverts brightness would reverse: it trains without appearance randomisation.
TINY = profiles.get("smoke").replace(name="tiny", frames=8, size=4, n_train=64, n_val=32, n_measure=16,
                                     epochs=2, batch_size=16, appearance=0.0, model_kwargs={"tiny": {"hidden": 8}})


class TinyNet(nn.Module):
    def __init__(self, num_classes: int, hidden: int = 8) -> None:
        super().__init__()
        self.conv = nn.Conv3d(3, hidden, kernel_size=3, padding=1)
        self.post = nn.Identity()
        self.head = nn.Linear(hidden, num_classes)

    def forward(self, clips: torch.Tensor) -> torch.Tensor:
        return self.head(self.post(F.relu(self.conv(clips - 0.5)).mean((2, 3, 4))))


class RampWorld(TensorDataset):
    """Brightness ramps up or down: a two-class world whose label is in the frame order."""

    classes = ["up", "down"]

    def __init__(self, split: str, n: int, frames: int, size: int, seed: int, noise: float = 0.05) -> None:
        generator = torch.Generator().manual_seed(seed * 2 + (split == "val"))
        labels = torch.randint(0, 2, (n,), generator=generator)
        ramp = 0.5 + 0.3 * (1 - 2 * labels.float())[:, None] * torch.linspace(-1, 1, frames)[None]
        clips = ramp[:, None, :, None, None].expand(n, 3, frames, size, size).clone()
        clips += noise * torch.randn(clips.shape, generator=generator)
        super().__init__(clips.clamp(0, 1), labels)


@pytest.fixture
def stand_ins(monkeypatch, tmp_path):
    """Stand-in registry and worlds, a private cache, and a count of trainings and world builds."""
    monkeypatch.setenv("STDYN_CACHE", str(tmp_path / "cache"))
    counts = {"fit": 0, "world": 0}

    def new_model(name, num_classes, seed, kwargs):
        assert name == "tiny"
        torch.manual_seed(seed)
        return TinyNet(num_classes, **kwargs)

    def make_dataset(world, split, progress, **kwargs):
        assert world == "ramp"
        counts["world"] += 1
        return RampWorld(split, **kwargs)

    real_fit = training.fit

    def counting_fit(*args, **kwargs):
        counts["fit"] += 1
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(zoo, "_new_model", new_model)
    monkeypatch.setattr(zoo, "_make_dataset", make_dataset)
    monkeypatch.setattr(tasks.ACTION, "owns_world", lambda world: world == "ramp")  # an action world
    monkeypatch.setattr(zoo, "_code_fingerprint", lambda model, world, callbacks: "code-v1")
    monkeypatch.setattr(training, "fit", counting_fit)
    zoo._RECENT_SPLITS.clear()
    yield counts
    zoo._RECENT_SPLITS.clear()


def get(**options):
    return zoo.get("tiny", "ramp", profile=options.pop("profile", TINY), progress=False, **options)


def same_weights(a: nn.Module, b: nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_first_call_trains_and_the_second_only_loads(stand_ins):
    first = get()
    assert stand_ins["fit"] == 1
    assert not first.model.training
    assert first.metrics["epoch"].tolist() == [1, 2]
    assert first.val_accuracy == first.metrics["val_acc"].iloc[-1]
    assert first.classes == ["up", "down"]
    assert first.epochs == [0, 1, 2]
    assert first.run_dir.parent.name == "zoo"
    assert first.config["model_kwargs"] == {"hidden": 8}

    zoo._RECENT_SPLITS.clear()
    builds = stand_ins["world"]
    second = get()
    assert stand_ins["fit"] == 1  # no retraining
    assert stand_ins["world"] == builds  # a cache hit does not even generate the data
    assert second.key == first.key
    assert same_weights(second.model, first.model)
    assert second.metrics.equals(first.metrics)

    listed = zoo.list_cached()
    assert len(listed) == 1
    row = listed.iloc[0]
    assert (row["key"], row["model"], row["world"], row["profile"], row["epochs"]) == (first.key, "tiny", "ramp", "tiny", 2)
    assert row["val_score"] == pytest.approx(first.val_accuracy) and row["task"] == "action"


def test_checkpoints_of_every_epoch_load_as_models(stand_ins):
    entry = get()
    initial = entry.checkpoint(0)
    torch.manual_seed(0)
    assert same_weights(initial, TinyNet(2))
    assert same_weights(entry.checkpoint(2), entry.model)
    assert not same_weights(entry.checkpoint(1), entry.model)
    assert not entry.checkpoint(1).training
    with pytest.raises(FileNotFoundError, match="intact epochs: \\[0, 1, 2\\]"):
        entry.checkpoint(7)


@pytest.mark.parametrize("change", [
    {"seed": 1},
    {"shuffle_frames": True},
    {"model_kwargs": {"hidden": 4}},
    {"train_overrides": {"lr": 1e-2}},
    {"world_kwargs": {"noise": 0.1}},
    {"data_seed": 1},
    {"profile": TINY.replace(n_train=48)},
    {"callbacks": [training.Callback()]},
])
def test_every_part_of_the_configuration_enters_the_key(stand_ins, change):
    base = get()
    changed = get(**change)
    assert changed.key != base.key
    assert changed.run_dir != base.run_dir
    assert stand_ins["fit"] == 2


def test_device_and_profile_name_do_not_enter_the_key(stand_ins):
    base = get()
    assert get(device="cpu").key == base.key
    assert get(profile=TINY.replace(name="renamed")).key == base.key
    assert stand_ins["fit"] == 1


def test_a_code_change_retrains(stand_ins, monkeypatch):
    base = get()
    monkeypatch.setattr(zoo, "_code_fingerprint", lambda model, world, callbacks: "code-v2")
    assert get().key != base.key
    assert stand_ins["fit"] == 2


def test_a_corrupt_or_partial_entry_is_retrained_never_read(stand_ins):
    reference = get()
    final = training.checkpoint_path(reference.run_dir, 2)
    final.write_bytes(final.read_bytes()[:-50])  # truncated weights: the checksum fails
    again = get()
    assert stand_ins["fit"] == 2
    assert same_weights(again.model, reference.model)  # retraining is deterministic

    (reference.run_dir / zoo.ENTRY_FILE).unlink()  # training stopped before the entry was complete
    assert zoo.list_cached().empty
    get()
    assert stand_ins["fit"] == 3

    (reference.run_dir / zoo.ENTRY_FILE).write_text("{}")  # edited by hand: checksum fails
    get()
    assert stand_ins["fit"] == 4


class Scale(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("factor", torch.tensor(1.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor


class InsertScale(training.Callback):
    """Puts a layer with a buffer into the model; fine-tuning takes it out again."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def on_build(self, model: nn.Module) -> None:
        model.post = Scale()

    def on_step(self, state, clips, labels) -> None:
        self.seen.append(type(state.model.post).__name__)
        if isinstance(state.model.post, Scale):
            state.model.post.factor += 0.01

    def on_phase_change(self, model: nn.Module) -> None:
        model.post = nn.Identity()


def test_models_changed_by_callbacks_are_rebuilt_for_every_checkpoint(stand_ins):
    callback = InsertScale()
    entry = get(callbacks=[callback], train_overrides={"finetune_epochs": 1})
    assert callback.seen == ["Scale"] * 8 + ["Identity"] * 4  # 2 epochs of 4 steps, then fine-tuning
    assert entry.epochs == [0, 1, 2, 3]
    factors = [entry.checkpoint(epoch).post.factor.item() for epoch in (0, 1, 2)]
    assert factors == pytest.approx([1.0, 1.04, 1.08])  # the buffer was saved and loads back
    assert isinstance(entry.checkpoint(3).post, nn.Identity)
    assert isinstance(entry.model.post, nn.Identity)
    again = get(callbacks=[InsertScale()], train_overrides={"finetune_epochs": 1})
    assert stand_ins["fit"] == 1 and same_weights(again.model, entry.model)


def test_datasets_are_the_ones_the_models_train_on(stand_ins):
    train_set, val_set = zoo.datasets("ramp", TINY)
    assert (len(train_set), len(val_set)) == (TINY.n_train, TINY.n_val)
    assert train_set.tensors[0].shape[1:] == (3, TINY.frames, TINY.size, TINY.size)
    assert not torch.equal(train_set.tensors[0][:8], val_set.tensors[0][:8])
    builds = stand_ins["world"]
    assert zoo.datasets("ramp", TINY)[1] is val_set  # reused within a session
    get()
    assert stand_ins["world"] == builds
    assert len(zoo.measure_set("ramp", TINY)) == TINY.n_measure


def test_a_finished_run_gives_the_accuracy_that_evaluate_measures(stand_ins):
    entry = get(train_overrides={"epochs": 8, "lr": 3e-2})
    _, val_set = zoo.datasets("ramp", TINY)
    assert training.evaluate(entry.model, val_set) == pytest.approx(entry.val_accuracy)
    assert entry.val_accuracy > 0.8  # the stand-in world is learnable


def test_unavailable_device_and_unknown_profile_fail_with_a_way_out(stand_ins):
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="device='cpu'"):
            get(device="cuda")
    with pytest.raises(ValueError, match="smoke, quick, full"):
        get(profile="huge")
    assert stand_ins["fit"] == 0


def test_the_code_fingerprint_covers_every_submodule_of_a_package(tmp_path, monkeypatch):
    package = tmp_path / "userpkg"
    (package / "nets").mkdir(parents=True)
    (package / "__init__.py").write_text('"""A user package."""\n')
    (package / "nets" / "__init__.py").write_text("")  # empty: nothing to hash
    (package / "nets" / "blocks.py").write_text("WIDTH = 8\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    names = [module.__name__ for module in zoo._package_modules("userpkg")]
    assert names == ["userpkg", "userpkg.nets.blocks"]
    before = zoo.source_hash(*zoo._package_modules("userpkg"))
    (package / "nets" / "blocks.py").write_text("WIDTH = 16\n")
    importlib.invalidate_caches()
    after = zoo.source_hash(*zoo._package_modules("userpkg"))
    assert before != after
    for name in [n for n in sys.modules if n.startswith("userpkg")]:
        del sys.modules[name]


def _registry_and_worlds_ready() -> bool:
    try:
        models = importlib.import_module("stdyn.models")
        worlds = importlib.import_module("stdyn.data.worlds")
    except ImportError:
        return False
    return hasattr(models, "create") and hasattr(worlds, "make")


@pytest.mark.skipif(not _registry_and_worlds_ready(), reason="stdyn.models / stdyn.data.worlds not available")
def test_a_registry_model_on_a_real_world_at_smoke_scale(monkeypatch, tmp_path):
    monkeypatch.setenv("STDYN_CACHE", str(tmp_path))
    zoo._RECENT_SPLITS.clear()
    entry = zoo.get("i3d", "ssv2", profile="smoke", progress=False)
    assert entry.model.stages
    assert 0.0 <= entry.val_accuracy <= 1.0
    assert entry.epochs == list(range(profiles.get("smoke").epochs + 1))
    again = zoo.get("i3d", "ssv2", profile="smoke", progress=False)
    assert again.key == entry.key and same_weights(again.model, entry.model)
    assert json.loads((entry.run_dir / zoo.ENTRY_FILE).read_text())["config"]["model"] == "i3d"
    zoo._RECENT_SPLITS.clear()


@pytest.mark.skipif(not _registry_and_worlds_ready(), reason="stdyn.models / stdyn.data.worlds not available")
def test_the_code_fingerprint_follows_the_world_generator():
    ssv2 = zoo._code_fingerprint("i3d", "ssv2", [])
    assert zoo._code_fingerprint("c2d", "ssv2", []) == ssv2  # one fingerprint for the model package
    assert zoo._code_fingerprint("i3d", "kinetics", []) == ssv2  # same generator module
    assert zoo._code_fingerprint("i3d", "diving48", []) != ssv2  # another generator
    assert zoo._code_fingerprint("i3d", "ssv2", [training.Callback()]) == ssv2  # train is hashed already


@pytest.mark.skipif(not _registry_and_worlds_ready(), reason="stdyn.models / stdyn.data.worlds not available")
def test_the_command_line_prints_accuracy_and_chance_per_model_and_world(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("STDYN_CACHE", str(tmp_path))
    zoo._RECENT_SPLITS.clear()
    assert cli.zoo(["--models", "c2d", "--worlds", "ssv2", "--profile", "smoke"]) == 0
    out = capsys.readouterr().out
    lines = out[out.index("model "):].splitlines()  # after the "training ..." line
    assert lines[0].split() == ["model", "world", "val_acc", "chance", "train_seconds", "styled_acc"]
    model, world, val_acc, chance = lines[1].split()[:4]
    entry = zoo.get("c2d", "ssv2", profile="smoke", progress=False)
    assert (model, world, float(chance)) == ("c2d", "ssv2", 0.1)
    assert float(val_acc) == pytest.approx(entry.val_accuracy, abs=1e-3)
    with pytest.raises(ValueError, match="ssv2"):
        cli.zoo(["--worlds", "ssv3", "--profile", "smoke"])
    # regression: c2d trained, then the run died on c2dd and left an empty folder with a lock
    before = sorted((tmp_path / "zoo").iterdir())
    with pytest.raises(SystemExit):
        cli.zoo(["--models", "c2d", "c2dd", "--worlds", "kinetics", "--profile", "smoke"])
    assert "unknown model(s) c2dd; available: " in capsys.readouterr().err
    assert sorted((tmp_path / "zoo").iterdir()) == before
    zoo._RECENT_SPLITS.clear()


def test_get_many_reads_each_cached_entry_once_and_trains_nothing(stand_ins, monkeypatch):
    trained = [get(seed=seed) for seed in (0, 1)]
    loads = []
    real_load = zoo._load
    monkeypatch.setattr(zoo, "_load", lambda *args: loads.append(args[0]) or real_load(*args))
    entries = zoo.get_many([dict(model="tiny", world="ramp", profile=TINY, seed=seed) for seed in (0, 1)],
                           jobs=2, progress=False)
    assert [entry.key for entry in entries] == [entry.key for entry in trained]
    assert all(same_weights(a.model, b.model) for a, b in zip(entries, trained))
    assert len(loads) == 2 and stand_ins["fit"] == 2


def test_get_many_trains_missing_entries_side_by_side_as_this_process_would(tmp_path, monkeypatch):
    """Entries trained in get_many's worker processes (the parent trains none) equal the ones
    this process trains, and are what get() then loads."""
    small = profiles.get("smoke").replace(n_train=32, n_val=16, n_measure=16, epochs=1)
    requests = [dict(model="c2d", world="ssv2", profile=small, seed=seed) for seed in (0, 1)]
    monkeypatch.setenv("STDYN_CACHE", str(tmp_path / "side-by-side"))
    zoo._RECENT_SPLITS.clear()
    with monkeypatch.context() as patch:
        patch.setattr(zoo, "_train", lambda *args, **kwargs: pytest.fail("trained in the parent process"))
        entries = zoo.get_many(requests, jobs=2, progress=False)
    assert [entry.key for entry in entries] == [zoo.get(**request, progress=False).key for request in requests]
    assert entries[0].key != entries[1].key

    monkeypatch.setenv("STDYN_CACHE", str(tmp_path / "in-process"))
    zoo._RECENT_SPLITS.clear()
    alone = zoo.get(**requests[1], progress=False)
    zoo._RECENT_SPLITS.clear()
    assert alone.key == entries[1].key
    for (name, mine), theirs in zip(alone.model.state_dict().items(), entries[1].model.state_dict().values()):
        assert torch.equal(mine, theirs), name


def test_get_many_runs_from_a_plain_script_and_names_a_failing_worker(tmp_path):
    """A script without a main guard trains side by side (worker processes never re-run it), and a
    worker that fails says which model and why."""
    import subprocess

    script = tmp_path / "script.py"
    script.write_text(
        "from stdyn.training import profiles, zoo\n"
        "small = profiles.get('smoke').replace(n_train=32, n_val=16, n_measure=16, epochs=1)\n"
        "entries = zoo.get_many([dict(model='c2d', world='ssv2', profile=small, seed=s) for s in (0, 1)], jobs=2,"
        " progress=False)\n"
        "print('trained', len({entry.key for entry in entries}))\n"
        "zoo.get_many([dict(model='c2d', world='ssv2', profile=small, seed=s, model_kwargs={'widht': 8})"
        " for s in (0, 1)], jobs=2, progress=False)\n")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path,
                          env={**os.environ, "STDYN_CACHE": str(tmp_path / "cache")})
    assert "trained 2" in done.stdout, done.stderr[-2000:]
    assert done.returncode != 0
    assert "training c2d on ssv2 in a worker process failed" in done.stderr
    assert "widht" in done.stderr  # the worker's own error travels with it


def test_a_failing_worker_stops_the_others_which_leave_no_entry(tmp_path, monkeypatch):
    """get_many raises as soon as one worker fails and kills the rest: a long training left
    running would keep the caller waiting (an interrupted one resumes on the next call)."""
    monkeypatch.setenv("STDYN_CACHE", str(tmp_path / "cache"))
    zoo._RECENT_SPLITS.clear()
    long = profiles.get("smoke").replace(n_train=3000, n_val=16, n_measure=16, epochs=8)
    requests = [dict(model="c2d", world="ssv2", profile=long, seed=0),
                dict(model="c2d", world="ssv2", profile=long, seed=1, model_kwargs={"widht": 8})]
    with pytest.raises(RuntimeError, match="widht"):
        zoo.get_many(requests, jobs=2, progress=False)
    spec, _, run_dir = zoo._locate("c2d", "ssv2", long, seed=0)
    assert zoo._load(run_dir, spec, []) is None
    zoo._RECENT_SPLITS.clear()


def test_default_jobs_one_per_core_on_cpu_one_on_an_accelerator_or_as_set(monkeypatch):
    monkeypatch.delenv("STDYN_JOBS", raising=False)
    assert zoo.default_jobs(["cpu"]) >= 1
    assert zoo.default_jobs(["cpu", "cuda:0"]) == 1
    monkeypatch.setenv("STDYN_JOBS", "3")
    assert zoo.default_jobs(["cuda"]) == 3
    for bad in ("0", "two"):
        monkeypatch.setenv("STDYN_JOBS", bad)
        with pytest.raises(ValueError, match="STDYN_JOBS"):
            zoo.default_jobs()
