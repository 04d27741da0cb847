"""Fuzz-style test of every input reader through the CLI (issue 9, "Done when").

Each reader (npz keypoints, COCO JSON, BVH, 3d-pose-baseline H5, dataset manifest, index manifest) gets its
valid file truncated, byte-flipped and with wrong-typed content. Every case must end with exit status 2 and
exactly one line on stderr naming the file, no traceback, and no change outside the command's output path.
A byte flip may leave a file valid (slack space; HDF5 data, which has no checksum): then the command must
succeed; it may never end in a traceback or an "unexpected" error.
Commands run in-process (``prpose.cli.main``); the packaged model (NumPy forward, no JAX) serves the query.
"""

import hashlib
import json
import pathlib
import shutil

import h5py
import numpy as np
import pytest

from prpose.cli import main
from test_skeletons import BANDAI_JOINTS, make_bvh


def _truncate(data: bytes) -> bytes:
    return data[: len(data) // 2]


def _flip(seed: int):
    """XOR 0xFF into 8 bytes at seeded positions (a bad disk or a broken copy)."""
    def mutate(data: bytes) -> bytes:
        out = bytearray(data)
        for i in np.random.default_rng(seed).choice(len(out), size=min(8, len(out)), replace=False):
            out[i] ^= 0xFF
        return bytes(out)
    return mutate


def _flip_middle(data: bytes) -> bytes:
    """Flip a run of bytes in the middle of the file (array data for binary formats)."""
    out = bytearray(data)
    mid = len(out) // 2
    for i in range(mid, min(mid + 16, len(out))):
        out[i] ^= 0xFF
    return bytes(out)


# HDF5 keeps no checksum of its data: a flipped byte there changes a value and cannot be told from data.
NO_CHECKSUM = {"h5"}
BYTE_MUTATIONS = {"truncated": _truncate, "empty": lambda d: b"", "flipped-1": _flip(1), "flipped-2": _flip(2),
                  "flipped-3": _flip(3), "flipped-middle": _flip_middle}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Valid inputs of every kind, in one folder whose every other file must stay untouched."""
    root = tmp_path_factory.mktemp("fuzz")
    assert main(["prep", "synthetic", "--out", str(root / "data"), "--sequences", "4", "--frames", "10"]) == 0
    from prpose.dataset import load_dataset

    dataset = load_dataset(root / "data")
    points = np.asarray(dataset.keypoints2d[:3, 0])
    np.savez(root / "poses.npz", keypoints=points, profile="h36m17")
    coco = [{"image_id": i, "keypoints": np.concatenate([p, np.ones((17, 1))], 1).ravel().tolist(), "score": 1.0}
            for i, p in enumerate(np.asarray(dataset.keypoints2d[:3, 0])[:, :17])]
    (root / "poses.json").write_text(json.dumps(coco))  # 17 plausible points per record, read as coco17
    (root / "take.bvh").write_text(make_bvh(BANDAI_JOINTS, frames=24, root_pos=(150, 0, -80),
                                            end_sites={"Head": (0, 0, 0)}))
    poses = np.asarray(dataset.poses3d[:12], np.float64)
    h5_dir = root / "h36m" / "S1" / "MyPoses" / "3D_positions"
    h5_dir.mkdir(parents=True)
    from prpose.keypoints import H36M32_TO_H36M17

    p32 = np.zeros((len(poses), 32, 3))
    p32[:, list(H36M32_TO_H36M17)] = poses
    with h5py.File(h5_dir / "Walking.h5", "w") as f:
        f["3D_positions"] = (p32 * 1000.0).reshape(len(p32), 96).T
    from prpose.index import PoseIndex
    from prpose.inference import load_model

    model = load_model("prpose-cmu-v1")
    rng = np.random.default_rng(0)
    index = PoseIndex(model.embedding_dim, model.num_samples, model.match_params, model.fingerprint)
    means = rng.normal(size=(40, model.embedding_dim)).astype(np.float32)
    index.add(means, means[:, None] + 0.1 * rng.normal(size=(40, model.num_samples, model.embedding_dim)),
              {"source": np.full(40, "s"), "subject": np.full(40, "a"), "sequence": np.full(40, "q"),
               "frame": np.arange(40), "camera": np.full(40, "c")})
    index.save(root / "index")
    # Each valid input works before it is damaged (or the test would prove nothing).
    for argv in _commands(root).values():
        assert main(argv(root)) == 0, argv(root)
    shutil.rmtree(root / "out")
    return root


def _commands(root):
    """reader -> function(root of a copy) -> argv that reads that reader's file (outputs under root/out*)."""
    return {
        "npz": lambda r: ["embed", "--model", "prpose-cmu-v1", "--input", str(r / "poses.npz"),
                          "--output", str(r / "out" / "e.npz")],
        "json": lambda r: ["embed", "--model", "prpose-cmu-v1", "--input", str(r / "poses.json"),
                           "--output", str(r / "out" / "e.npz")],
        "bvh": lambda r: ["prep", "bvh", str(r / "take.bvh"), "--out", str(r / "out" / "bvh"), "--rig", "ring",
                          "--cameras", "3"],
        "h5": lambda r: ["prep", "h36m", str(r / "h36m"), "--out", str(r / "out" / "h36m")],
        "dataset": lambda r: ["summary", str(r / "data")],
        "index": lambda r: ["query", "--index", str(r / "index"), "--model", "prpose-cmu-v1",
                            "--input", str(r / "poses.npz"), "--k", "2"],
    }


FILES = {"npz": "poses.npz", "json": "poses.json", "bvh": "take.bvh", "h5": "h36m/S1/MyPoses/3D_positions/Walking.h5",
         "dataset": "data/manifest.json", "index": "index/manifest.json"}


def _wrong_types(reader: str, path: pathlib.Path) -> dict:
    """name -> function writing a file of the right syntax with wrong-typed content at ``path``."""
    if reader == "npz":
        return {"strings": lambda: np.savez(path, keypoints=np.full((3, 17, 2), "x"), profile="h36m17"),
                "scalar": lambda: np.savez(path, keypoints=np.float32(3.0), profile="h36m17"),
                "profile-number": lambda: np.savez(path, keypoints=np.zeros((3, 17, 2)), profile=np.arange(3))}
    if reader == "json":
        return {name: (lambda v=value: path.write_text(json.dumps(v))) for name, value in {
            "string-keypoints": [{"image_id": 1, "keypoints": "x" * 51}],
            "number-records": [1, 2, 3], "dict": {"a": 1},
            "nested-lists": [{"image_id": 1, "keypoints": [[1, 2, 3]] * 17}],
            "object-image-id": [{"image_id": {"a": 1}, "keypoints": [1.0] * 51}]}.items()}
    if reader == "bvh":
        text = path.read_text()
        return {"words": lambda: path.write_text(text.replace(" 0", " zero")),
                "frames-word": lambda: path.write_text(text.replace("Frames: 24", "Frames: many")),
                "no-motion": lambda: path.write_text(text.split("MOTION")[0])}
    if reader == "h5":
        def strings():
            with h5py.File(path, "w") as f:
                f["3D_positions"] = np.array([b"x"] * 96)

        def group():
            with h5py.File(path, "w") as f:
                f.create_group("3D_positions")

        def ints():
            with h5py.File(path, "w") as f:
                f["3D_positions"] = np.zeros((96,), np.int8)
        return {"strings": strings, "group": group, "vector": ints}
    manifest = json.loads(path.read_text())

    def replaced(key, value):
        return lambda: path.write_text(json.dumps({**manifest, key: value}))
    cases = {"list": lambda: path.write_text("[1, 2]"), "number": lambda: path.write_text("7")}
    for key, value in manifest.items():
        wrong = "x" if not isinstance(value, str) else [1]
        cases[f"{key}-wrong-type"] = replaced(key, wrong)
        if isinstance(value, dict) and key != "info":  # "info" is free-form provenance: any JSON is valid
            for sub in list(value)[:3]:
                cases[f"{key}.{sub}-wrong-type"] = replaced(key, {**value, sub: 12345})
    return cases


def _snapshot(root: pathlib.Path) -> dict:
    return {p.relative_to(root).as_posix(): (hashlib.sha256(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file() and not p.relative_to(root).as_posix().startswith("out")}


def _cases():
    for reader in FILES:
        for name in BYTE_MUTATIONS:
            yield reader, name
        yield reader, "wrong-types"


@pytest.mark.parametrize("reader, mutation", list(_cases()))
def test_damaged_input_is_one_line_naming_the_file(world, tmp_path, capsys, reader, mutation):
    root = tmp_path / "copy"
    shutil.copytree(world, root)
    target = root / FILES[reader]
    argv = _commands(root)[reader](root)
    if mutation == "wrong-types":
        variants = _wrong_types(reader, target)
    else:
        original = target.read_bytes()
        variants = {mutation: lambda: target.write_bytes(BYTE_MUTATIONS[mutation](original))}
    outcomes = {}
    for name, damage in variants.items():
        damage()
        before = _snapshot(root)
        capsys.readouterr()
        code = main(argv)
        err = capsys.readouterr().err
        outcomes[name] = (code, err)
        assert "Traceback" not in err, (name, err)
        assert _snapshot(root) == before, name  # nothing but the output path was touched
        # A damaged file may still happen to be valid (a flipped byte in slack space): then it must work.
        if code == 0:
            assert mutation.startswith("flipped") and err.count("\n") <= 1, (name, err)
            continue
        assert code == 2, (name, code, err)
        assert err.count("\n") == 1 and err.startswith(f"prpose {argv[0]}"), (name, err)
        named = str(target) in err or str(target.parent) in err
        assert named, (name, err)
        assert not (root / "out" / "bvh").exists() and not (root / "out" / "h36m").exists()  # nothing written
    refused = sum(code == 2 for code, _ in outcomes.values())
    if not mutation.startswith("flipped"):
        assert refused == len(outcomes), outcomes
    elif reader not in NO_CHECKSUM:
        assert refused >= 1, outcomes
