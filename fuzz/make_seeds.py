#!/usr/bin/env python3
"""Writes the hand-made seed inputs of the IDX, .npy and config fuzz corpora (fuzz/corpus/PARSER/seed-*).

Usage: fuzz/make_seeds.py [CORPUS_DIR]   (default: fuzz/corpus next to this script). Standard library only.
The checkpoint and import seeds come from the cuvae program itself (docs/FUZZING.md)."""
import gzip
import os
import struct
import sys


def idx(type_code, shape, payload):
    return bytes([0, 0, type_code, len(shape)]) + b"".join(struct.pack(">I", d) for d in shape) + payload


def npy(descr, shape, major=1, fortran=False):
    dims = ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "")
    d = "{'descr': '%s', 'fortran_order': %s, 'shape': (%s), }" % (descr, "True" if fortran else "False", dims)
    pre = 10 if major == 1 else 12
    d += " " * ((64 - (pre + len(d) + 1) % 64) % 64) + "\n"
    hl = struct.pack("<H", len(d)) if major == 1 else struct.pack("<I", len(d))
    return b"\x93NUMPY" + bytes([major, 0]) + hl + d.encode()


def seeds_idx():
    u8 = bytes(range(0, 240, 20))
    return {
        "u8-2x2x3.idx": idx(0x08, [2, 2, 3], u8),
        "u8-labels.idx": idx(0x08, [4], bytes([0, 9, 3, 1])),
        "i32-labels.idx": idx(0x0C, [3], struct.pack(">3i", 1, 0, 7)),
        "f32-2x3.idx": idx(0x0D, [2, 3], struct.pack(">6f", 0, 0.25, 0.5, 0.75, 1, 0.125)),
        "f32-nan.idx": idx(0x0D, [1, 2], struct.pack(">2f", 0.5, float("nan"))),
        "u8-4d.idx": idx(0x08, [1, 1, 2, 2], bytes([1, 2, 3, 4])),
        "u8-2x2x3.idx.gz": gzip.compress(idx(0x08, [2, 2, 3], u8), mtime=0),
        "short-dims.idx": bytes([0, 0, 8, 3, 0, 0, 0, 2]),
        "absurd.idx": idx(0x08, [0xFFFFFFFF, 0xFFFFFFFF], b""),
    }


def seeds_npy():
    f4 = struct.pack("<6f", 0, 0.25, 0.5, 0.75, 1, 0.125)
    return {
        "f4-2x3.npy": npy("<f4", [2, 3]) + f4,
        "u1-2x2x2.npy": npy("|u1", [2, 2, 2]) + bytes([0, 255, 1, 2, 3, 4, 5, 6]),
        "i4-labels.npy": npy("<i4", [3]) + struct.pack("<3i", 1, 0, 2),
        "i8-labels.npy": npy("<i8", [2]) + struct.pack("<2q", 5, 1),
        "f8-2x2.npy": npy("<f8", [2, 2]) + struct.pack("<4d", 0, 0.1, 1e-300, 1),
        "f8-big.npy": npy(">f8", [1, 2]) + struct.pack(">2d", 0.5, 3e38),
        "f4-big.npy": npy(">f4", [2, 1]) + struct.pack(">2f", 0.5, 1),
        "f2-1x4.npy": npy("<f2", [1, 4]) + struct.pack("<4e", 0, 0.5, 65504, 6e-8),
        "i1-labels.npy": npy("|i1", [3]) + struct.pack("<3b", 0, 5, -1),
        "u2-labels.npy": npy("<u2", [2]) + struct.pack("<2H", 3, 65535),
        "u8-labels.npy": npy(">u8", [2]) + struct.pack(">2Q", 3, 2**63),
        "v2-f4.npy": npy("<f4", [1, 2], major=2) + struct.pack("<2f", 0.5, 1),
        "v3-f4.npy": npy("<f4", [2], major=3) + struct.pack("<2f", 0.5, 1),
        "fortran.npy": npy("<f4", [1, 1], fortran=True) + struct.pack("<f", 1),
    }


def seeds_config(configs_dir):
    out = {}
    for name in sorted(os.listdir(configs_dir)):
        if name.endswith(".ini"):
            with open(os.path.join(configs_dir, name), "rb") as f:
                out["cfg-" + name] = f.read()
    out["set-lines.txt"] = (b"train.lr=3e-4\nmodel.hidden=64,32\ndata.corrupt=mask:0.25\n"
                            b"train.seed=18446744073709551615\nmodel.latent = 4\ndata.binarize=static\n")
    out["explicit-paths.ini"] = (b"[data]\ndataset =\ntrain_images = a.npy\ntest_images = b.idx.gz\n"
                                 b"[model]\nhidden =\nlatent = 2\nlikelihood = gaussian\n"
                                 b"gaussian_variance = learned_per_dim\n[train]\nobjective = iwae\nsamples = 5\n")
    return out


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    corpus = sys.argv[1] if len(sys.argv) > 1 else os.path.join(here, "corpus")
    sets = {"idx": seeds_idx(), "npy": seeds_npy(),
            "config": seeds_config(os.path.join(here, "..", "configs"))}
    for parser, files in sets.items():
        os.makedirs(os.path.join(corpus, parser), exist_ok=True)
        for name, data in files.items():
            with open(os.path.join(corpus, parser, "seed-" + name), "wb") as f:
                f.write(data)


if __name__ == "__main__":
    main()
