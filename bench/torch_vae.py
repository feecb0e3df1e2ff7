#!/usr/bin/python3
"""The PyTorch peer of cuvae-bench: the same VAE, data, loss and optimiser as cuvae, timed step by step.

    /usr/bin/python3 bench/torch_vae.py --config configs/bench/A.ini [--steps 50] [--warmup 10] [--threads 2]
                                        [--device cpu|cuda] [--json OUT.json]

Model (cuvae's layout, include/cuvae/model.h), for [model] hidden = h0,...,h(k-1) and latent = Z:
  encoder  Linear(784, h0)+ReLU, ..., Linear(h(k-2), h(k-1))+ReLU, then ONE head Linear(h(k-1), 2Z) whose output
           row is split into [mu | logvar];
  sampling z = mu + exp(0.5 logvar) * eps, eps ~ N(0, I)             (docs/MATH.md section 2)
  decoder  Linear(Z, h(k-1))+ReLU, ..., Linear(h1, h0)+ReLU, Linear(h0, 784) -> Bernoulli logits l.
Loss per step (nats per data point, docs/MATH.md sections 3 and 4), the batch mean of
  recon_b + KL_b,  recon_b = sum_d BCE-with-logits(l_bd, x_bd) = sum_d [softplus(l_bd) - x_bd l_bd],
                   KL_b = 0.5 sum_j (mu_bj^2 + exp(lv_bj) - 1 - lv_bj);
optimiser Adam(lr, betas, eps) from the config (docs/MATH.md section 7), nn.Linear's own initialisation.
Data: Fashion-MNIST train images (IDX, .gz or plain) scaled to [0, 1] float32, one random permutation of the
training set per epoch (torch.randperm on a seeded generator), each batch gathered by index: x[idx].

Precision ([train] precision of the config): fp32; tf32 (CUDA: TF32 matmuls; the CPU computes fp32); bf16: the
forward pass and the loss run under torch.autocast(<device>, dtype=torch.bfloat16), PyTorch's own mixed precision
(nn.Linear's matmul and bias in bf16 with fp32 accumulation, fp32 parameters and Adam state), with mu, logvar and the
logits cast back to float32 (.float()) so that the sampling, the KL and the likelihood are fp32 as in cuvae
(docs/MATH.md (8.2)); the backward pass runs outside the autocast region, as torch's documentation prescribes.

Timing: W warm-up steps, then N steps each timed alone with time.perf_counter (on CUDA the device is synchronised
before every clock read). Reports the median step time and samples/s = batch / median step time.

BLAS: Debian's torch does its dense layers in whatever libblas.so.3 the loader finds (OpenBLAS). On virtual CPUs
OpenBLAS may fall back to its generic Prescott kernels; cuvae then re-executes itself with OPENBLAS_CORETYPE set
from the CPU flags (src/core/blas.c), and --openblas-core auto (the default) does exactly the same here, so both sides
use the same kernels. The BLAS actually mapped into the process (from /proc/self/maps) is reported.
"""
import argparse
import configparser
import contextlib
import gzip
import json
import math
import os
import re
import statistics
import struct
import sys
import time

GENERIC_OPENBLAS_CORES = {"Prescott", "Core2", "Penryn", "Dunnington", "Nehalem", "Sandybridge"}
DEFAULT_DATA_DIR = "/usr/share/datasets/fashion-mnist"
REEXEC_MARK = "TORCH_VAE_BLAS_SELECTED"


def fail(msg):
    sys.stderr.write(f"torch_vae: error: {msg}\n")
    sys.exit(2)


def parse_args(argv):
    p = argparse.ArgumentParser(
        description="Time training steps of cuvae's VAE written in PyTorch (the peer of build/cuvae-bench).")
    p.add_argument("--config", required=True, help="cuvae INI file ([model] hidden/latent, [train] batch_size, lr...)")
    p.add_argument("--steps", type=int, default=50, help="timed steps (default 50)")
    p.add_argument("--warmup", type=int, default=10, help="untimed steps before them (default 10)")
    p.add_argument("--threads", type=int, default=2, help="CPU threads for torch and its BLAS (default 2)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="default cpu")
    p.add_argument("--json", metavar="OUT", help="also write the result object to this file")
    p.add_argument("--adam", choices=["default", "foreach", "fused"], default="default",
                   help="torch.optim.Adam implementation: the library default, foreach=True, or fused=True (CUDA)")
    p.add_argument("--openblas-core", default="auto", metavar="auto|default|NAME",
                   help="auto (default): like cuvae, replace a generic OpenBLAS core (Prescott...) by the one the CPU "
                        "flags allow; default: leave OpenBLAS's own choice; NAME: force OPENBLAS_CORETYPE=NAME")
    a = p.parse_args(argv)
    if a.steps < 1 or a.warmup < 0 or a.threads < 1:
        p.error("--steps and --threads must be >= 1, --warmup >= 0")
    if a.adam == "fused" and a.device != "cuda":
        p.error("--adam fused needs --device cuda (torch's fused Adam is CUDA-only)")
    return a


# ---------------------------------------------------------------------------------------------- config
def read_config(path):
    """The keys the peer needs from a cuvae INI, with cuvae's defaults (docs/CONFIG.md)."""
    if not os.path.isfile(path):
        fail(f"config file not found: {path}")
    cp = configparser.ConfigParser(inline_comment_prefixes=(";", "#"), comment_prefixes=(";", "#"))
    try:
        cp.read(path)
    except configparser.Error as e:
        fail(f"{path}: {e}")

    def get(section, key, default):
        return cp.get(section, key, fallback=default).strip()

    try:
        cfg = {
            "hidden": [int(v) for v in get("model", "hidden", "400").split(",") if v.strip()],
            "latent": int(get("model", "latent", "20")),
            "likelihood": get("model", "likelihood", "bernoulli"),
            "activation": get("model", "activation", "relu"),
            "init": get("model", "init", "torch"),
            "batch": int(get("train", "batch_size", "128")),
            "lr": float(get("train", "lr", "1e-3")),
            "beta1": float(get("train", "beta1", "0.9")),
            "beta2": float(get("train", "beta2", "0.999")),
            "adam_eps": float(get("train", "adam_eps", "1e-8")),
            "clip_norm": float(get("train", "clip_norm", "0")),
            "seed": int(get("train", "seed", "1")),
            "precision": get("train", "precision", "fp32"),
            "dataset": get("data", "dataset", "fashion-mnist"),
            "train_images": get("data", "train_images", ""),
        }
    except ValueError as e:
        fail(f"{path}: bad value: {e}")
    if not cfg["hidden"] or min(cfg["hidden"]) < 1 or cfg["latent"] < 1 or cfg["batch"] < 1:
        fail(f"{path}: [model] hidden, latent and [train] batch_size must be positive")
    # The peer implements only what the benchmark suite uses; refuse the rest rather than time something else.
    for key, want in (("likelihood", "bernoulli"), ("activation", "relu")):
        if cfg[key] != want:
            fail(f"{path}: [model] {key} = {cfg[key]} is not supported by the peer (only {want})")
    if cfg["clip_norm"] != 0:
        fail(f"{path}: [train] clip_norm must be 0 for the peer")
    return cfg


def train_images_path(cfg, config_path):
    if cfg["dataset"] == "fashion-mnist":
        d = os.environ.get("CUVAE_DATA_DIR") or DEFAULT_DATA_DIR
        for name in ("train-images-idx3-ubyte.gz", "train-images-idx3-ubyte"):
            if os.path.isfile(os.path.join(d, name)):
                return os.path.join(d, name)
        fail(f"Fashion-MNIST train images not found in {d} (install dataset-fashion-mnist or set CUVAE_DATA_DIR)")
    if cfg["dataset"]:
        fail(f"{config_path}: [data] dataset = {cfg['dataset']} is not known to the peer")
    p = cfg["train_images"]
    if not p:
        fail(f"{config_path}: [data] needs dataset = fashion-mnist or train_images = PATH")
    if not os.path.isfile(p):
        fail(f"train images not found: {p}")
    return p


def load_images(path):
    """uint8 images -> [N, D] float32 in [0, 1]. IDX (magic 0x00000803, big-endian dims) or .npy."""
    import numpy as np
    if path.endswith(".npy"):
        a = np.load(path)
        a = a.reshape(a.shape[0], -1)
        return (a.astype(np.float32) / 255.0) if a.dtype == np.uint8 else a.astype(np.float32)
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 16 or struct.unpack(">I", raw[:4])[0] != 0x803:
        fail(f"{path}: not an IDX file of uint8 images (magic 0x00000803)")
    n, rows, cols = struct.unpack(">III", raw[4:16])
    if len(raw) != 16 + n * rows * cols:
        fail(f"{path}: truncated IDX file ({len(raw)} bytes for {n} images of {rows}x{cols})")
    return np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(n, rows * cols).astype(np.float32) / 255.0


# ---------------------------------------------------------------------------------------------- BLAS
def cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def wanted_core():
    """cuvae's rule (src/core/blas.c): SkylakeX with AVX-512 F/BW/VL/DQ, else Haswell with AVX2+FMA, else none."""
    f = cpu_flags()
    if {"avx512f", "avx512bw", "avx512vl", "avx512dq"} <= f:
        return "SkylakeX"
    if {"avx2", "fma"} <= f:
        return "Haswell"
    return None


def reexec_with_core(core):
    os.environ["OPENBLAS_CORETYPE"] = core
    os.environ[REEXEC_MARK] = core  # never loop, even if OpenBLAS ignores the request
    sys.stdout.flush()
    os.execv(sys.executable, [sys.executable] + sys.argv)


def mapped_libraries(pattern):
    """Paths of the shared objects mapped into this process whose file name matches pattern."""
    seen = []
    with open("/proc/self/maps") as f:
        for line in f:
            parts = line.split(None, 5)
            if len(parts) == 6:
                path = parts[5].strip()
                if re.search(pattern, os.path.basename(path)) and path not in seen:
                    seen.append(path)
    return seen


def openblas_handle():
    """(path, ctypes handle) of the OpenBLAS mapped into the process, or (None, None)."""
    import ctypes
    for path in mapped_libraries(r"^lib(open)?blas"):
        try:
            lib = ctypes.CDLL(path)
            lib.openblas_get_corename.restype = ctypes.c_char_p
            lib.openblas_get_config.restype = ctypes.c_char_p
            return path, lib
        except (OSError, AttributeError):
            continue
    return None, None


def describe_blas(device):
    """What really does the GEMMs, from /proc/self/maps (call after the first matmul)."""
    if device == "cuda":
        libs = mapped_libraries(r"^libcublas(Lt)?\.so")
        return {"blas": "cuBLAS: " + (", ".join(libs) or "not found in /proc/self/maps"), "blas_libs": libs}
    path, lib = openblas_handle()
    if lib is not None:
        text = (f"{lib.openblas_get_config().decode()} | core {lib.openblas_get_corename().decode()} | "
                f"{lib.openblas_get_num_threads()} threads | {path}")
        return {"blas": text, "blas_libs": [path]}
    libs = mapped_libraries(r"^lib(blas|cblas|openblas|mkl|blis)")
    return {"blas": ", ".join(libs) or "no BLAS library mapped (torch's own kernels?)", "blas_libs": libs}


# ---------------------------------------------------------------------------------------------- model
def build_model(torch, cfg, d_in):
    nn = torch.nn
    h, z = cfg["hidden"], cfg["latent"]
    enc, prev = [], d_in
    for w in h:                              # encoder hidden layers, input side first
        enc += [nn.Linear(prev, w), nn.ReLU()]
        prev = w
    enc.append(nn.Linear(prev, 2 * z))       # one head: output row = [mu | logvar]
    dec, prev = [], z
    for w in reversed(h):                    # the decoder mirrors the encoder
        dec += [nn.Linear(prev, w), nn.ReLU()]
        prev = w
    dec.append(nn.Linear(prev, d_in))        # Bernoulli logits
    return nn.Sequential(*enc), nn.Sequential(*dec)


def make_step(torch, enc, dec, opt, z_dim, autocast):
    """One training step; autocast() is the forward pass's context (torch.autocast for bf16, else a no-op)."""
    F = torch.nn.functional

    def step(x):
        opt.zero_grad(set_to_none=True)
        with autocast():
            mu, lv = enc(x).float().split(z_dim, dim=1)  # .float(): a no-op in fp32, bf16 -> fp32 under autocast
            eps = torch.randn_like(mu)                   # eps ~ N(0, I)
            z = mu + torch.exp(0.5 * lv) * eps           # reparameterization
            logits = dec(z).float()
            b = x.shape[0]
            # sum over pixels of softplus(l) - x*l, then the batch mean
            recon = F.binary_cross_entropy_with_logits(logits, x, reduction="sum") / b
            # closed-form KL(N(mu, exp(lv)) || N(0, I)), batch mean
            kl = 0.5 * (mu * mu + torch.exp(lv) - 1.0 - lv).sum() / b
            loss = recon + kl
        loss.backward()
        opt.step()
        return loss
    return step


# ---------------------------------------------------------------------------------------------- main
def main(argv):
    args = parse_args(argv)
    cfg = read_config(args.config)
    img_path = train_images_path(cfg, args.config)

    core_mode = args.openblas_core
    if core_mode not in ("auto", "default") and os.environ.get("OPENBLAS_CORETYPE") != core_mode:
        if os.environ.get(REEXEC_MARK):
            fail(f"OPENBLAS_CORETYPE={core_mode} did not survive the re-exec")
        reexec_with_core(core_mode)            # OpenBLAS reads the variable only when it is loaded

    import torch
    if args.device == "cuda" and not torch.cuda.is_available():
        fail("--device cuda: this torch has no usable CUDA device (torch.cuda.is_available() is False)")
    torch.set_num_threads(args.threads)
    # The first matmul makes sure the BLAS is loaded and initialised before it is inspected.
    torch.ones(8, 8) @ torch.ones(8, 8)
    _, ob = openblas_handle()
    if ob is not None:
        core = ob.openblas_get_corename().decode()
        if (core_mode == "auto" and core in GENERIC_OPENBLAS_CORES and not os.environ.get("OPENBLAS_CORETYPE")
                and not os.environ.get(REEXEC_MARK)):
            want = wanted_core()
            if want:
                reexec_with_core(want)
        ob.openblas_set_num_threads(args.threads)  # the pthread build keeps its own pool; size it too

    dev = torch.device(args.device)
    if cfg["precision"] not in ("fp32", "tf32", "bf16"):
        fail(f"{args.config}: [train] precision = {cfg['precision']} is not supported by the peer (fp32, tf32, bf16)")
    if cfg["precision"] == "bf16":
        autocast = lambda: torch.autocast(args.device, dtype=torch.bfloat16)  # noqa: E731
    else:
        autocast = contextlib.nullcontext
    if args.device == "cuda":
        # cuvae's [train] precision: fp32 (default) or tf32 cuBLAS math
        torch.backends.cuda.matmul.allow_tf32 = cfg["precision"] == "tf32"
        torch.backends.cudnn.allow_tf32 = cfg["precision"] == "tf32"

    x_all = torch.from_numpy(load_images(img_path)).to(dev)
    n, d_in = x_all.shape
    b, z_dim = cfg["batch"], cfg["latent"]
    if b > n:
        fail(f"batch_size {b} is larger than the training set ({n})")

    torch.manual_seed(cfg["seed"])             # parameters (nn.Linear's init) and eps
    enc, dec = build_model(torch, cfg, d_in)
    enc.to(dev)
    dec.to(dev)
    kw = {}
    if args.adam == "foreach":
        kw["foreach"] = True
    elif args.adam == "fused":
        kw["fused"] = True
    opt = torch.optim.Adam(list(enc.parameters()) + list(dec.parameters()), lr=cfg["lr"],
                           betas=(cfg["beta1"], cfg["beta2"]), eps=cfg["adam_eps"], **kw)
    step = make_step(torch, enc, dec, opt, z_dim, autocast)

    # One random permutation per epoch; full batches only (the last n % b examples of an epoch are skipped).
    perm_gen = torch.Generator().manual_seed(cfg["seed"])
    batches_per_epoch = n // b
    state = {"perm": None, "k": batches_per_epoch}

    def next_batch():
        if state["k"] == batches_per_epoch:
            state["perm"] = torch.randperm(n, generator=perm_gen).to(dev)
            state["k"] = 0
        idx = state["perm"][state["k"] * b:(state["k"] + 1) * b]
        state["k"] += 1
        return x_all[idx]

    sync = torch.cuda.synchronize if args.device == "cuda" else (lambda: None)
    for _ in range(args.warmup):
        step(next_batch())
    first_loss = None
    times = []
    for i in range(args.steps):
        sync()
        t0 = time.perf_counter()
        loss = step(next_batch())
        sync()
        times.append(time.perf_counter() - t0)
        if i == 0:
            first_loss = float(loss)
    last_loss = float(loss)
    if not math.isfinite(last_loss):
        fail(f"the loss is not finite: {last_loss}")

    med = statistics.median(times)
    result = {
        "impl": "pytorch",
        "config": os.path.splitext(os.path.basename(args.config))[0],
        "device": args.device if args.device == "cpu" else f"cuda ({torch.cuda.get_device_name(0)})",
        "threads": args.threads,
        "batch": b,
        "hidden": cfg["hidden"],
        "latent": z_dim,
        "steps": args.steps,
        "warmup": args.warmup,
        "median_step_ms": med * 1e3,
        "mean_step_ms": statistics.fmean(times) * 1e3,
        "min_step_ms": min(times) * 1e3,
        "step_ms": [round(t * 1e3, 4) for t in times],
        "samples_per_s": b / med,
        "loss_first_timed": first_loss,
        "loss_last": last_loss,
        "torch_version": torch.__version__,
        "adam": args.adam,
        "precision": cfg["precision"],
        "autocast": "bfloat16" if cfg["precision"] == "bf16" else "off",
    }
    result.update(describe_blas(args.device))
    if cfg["precision"] == "bf16" and args.device == "cpu":
        # torch's bf16 matmuls on the CPU go to oneDNN (mkldnn), not to the BLAS: name the library mapped
        dnnl = mapped_libraries(r"^lib(dnnl|mkldnn)")
        result["blas"] = (f"bf16 matmuls: oneDNN ({', '.join(dnnl) or 'built into torch'}; "
                          f"torch.backends.mkldnn {'on' if torch.backends.mkldnn.is_available() else 'off'}); "
                          f"fp32: {result['blas']}")
    result["openblas_coretype_env"] = os.environ.get("OPENBLAS_CORETYPE", "")
    print(f"pytorch {result['config']} {result['device']} {cfg['precision']} threads={args.threads} batch={b}: "
          f"median {result['median_step_ms']:.3f} ms/step, {result['samples_per_s']:.0f} samples/s "
          f"(loss {first_loss:.2f} -> {last_loss:.2f}) | {result['blas']}")
    if args.json:
        try:
            with open(args.json, "w") as f:
                json.dump(result, f, indent=1)
                f.write("\n")
        except OSError as e:
            fail(f"cannot write {args.json}: {e}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
