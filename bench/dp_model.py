#!/usr/bin/env python3
"""Data-parallel step time against ranks for benchmark config D, on paper (docs/PERFORMANCE.md, "Data parallel").

The model (one step, every rank):
    step = forward + max(backward, all-reduce) + Adam
  forward  = 1/3 of the GEMM time plus the elementwise kernels' memory time of the rank's rows,
  backward = 2/3 of the GEMM time (dW and dX are each as large as the forward),
  all-reduce = ring: 2 (N - 1) / N x gradient bytes / bus bandwidth + 2 (N - 1) x per-hop latency,
               started in buckets as the backward finishes each layer (overlapped; the last bucket, the first
               encoder layer's 25 MB, cannot be hidden and is counted in full),
  Adam     = the gradient norm (reads g) and Adam (reads p, g, m, v; writes p, m, v) over all parameters on every
             rank (not sharded): 32 bytes per parameter at HBM speed.
Strong scaling: the global batch stays 4096, so each rank computes 4096 / N rows. Weak scaling: 4096 rows per rank.

Inputs (each can be changed on the command line):
  D: 784-8192-8192-4096 (encoder 784-8192-8192-[mu|lv] 8192, decoder 4096-8192-8192-784), 247,767,824 fp32
     parameters (cuvae's layout, tensors aligned), gradient 991 MB.
  The single-GPU step time: --step-ms (the GPU bundle's measured D step once it exists). Until then an ESTIMATE:
     the step's GEMM FLOPs (6,036 GFLOP at B = 4096, counted from the layer shapes as cuvae-bench does) at a stated
     fraction of the H100 SXM peak (fp32: 67 TFLOP/s; tf32 tensor cores: 495 TFLOP/s dense), plus the elementwise
     traffic at HBM speed.
  NVLink4 within a node: 370 GB/s bus bandwidth, ring algorithm (NCCL maintainer, NVIDIA/nccl-tests issue 212:
     450 GB/s line rate, ~20% protocol overhead; NVLink SHARP can reach ~480 GB/s busbw on 8 GPUs, not assumed).
  InfiniBand NDR 400 Gb/s = 50 GB/s line rate; 45 GB/s bus bandwidth assumed (90%; an assumption, not measured).
"""
import argparse
import sys

P = 247_767_824             # D's parameters (fp32)
B_GLOBAL = 4096
D_IN, H, Z = 784, 8192, 4096
H100_FP32, H100_TF32 = 67e12, 495e12   # FLOP/s, datasheet peaks (bench/bench_model.h)
H100_HBM = 3.35e12                       # bytes/s (bench/bench_model.h)
# cuvae-bench's count of D's elementwise traffic (12,390 MB at B = 4096), less the per-step part (gradient norm and
# Adam: 8 x 4 bytes per parameter), per row.
ELEMENTWISE_BYTES_PER_ROW = (12_390e6 - 32.0 * P) / 4096


def layers():
    """(in, out) of every dense layer of D; the first encoder layer has no input gradient."""
    return [(D_IN, H), (H, H), (H, 2 * Z), (Z, H), (H, H), (H, D_IN)]


def gemm_flops(rows):
    """Forward x W^T, weight gradient dy^T x, input gradient dy W: 2 rows in out each (no dX for layer 0)."""
    f = 0.0
    for i, (a, b) in enumerate(layers()):
        f += 2 * rows * a * b * (2 if i == 0 else 3)
    return f


def single_gpu(args):
    """(gemm seconds at 4096 rows, elementwise seconds at 4096 rows, source text)."""
    ew = ELEMENTWISE_BYTES_PER_ROW * B_GLOBAL / (H100_HBM * args.hbm_fraction)
    if args.step_ms is not None:
        gemm = args.step_ms * 1e-3 - ew - adam_seconds(args)
        return gemm, ew, "measured step %.1f ms (--step-ms), less Adam and the elementwise part" % args.step_ms
    peak = H100_TF32 if args.precision == "tf32" else H100_FP32
    gemm = gemm_flops(B_GLOBAL) / (peak * args.peak_fraction)
    return gemm, ew, ("ESTIMATE: %.0f GFLOP at %.0f%% of the H100 SXM %s peak (%.0f TFLOP/s)"
                      % (gemm_flops(B_GLOBAL) * 1e-9, 100 * args.peak_fraction, args.precision, peak * 1e-12))


def adam_seconds(args):
    """Gradient norm (reads g) and Adam (reads p, g, m, v; writes p, m, v): 32 bytes per parameter."""
    return 32.0 * P / (H100_HBM * args.hbm_fraction)


def allreduce_seconds(n, busbw, hop_latency):
    if n == 1:
        return 0.0
    return 2.0 * (n - 1) / n * 4.0 * P / busbw + 2 * (n - 1) * hop_latency


def step(args, n, rows, busbw, hop_latency):
    gemm, ew, _ = single_gpu(args)
    scale = rows / B_GLOBAL
    fwd = gemm * scale / 3 + ew * scale
    bwd = gemm * scale * 2 / 3
    ar = allreduce_seconds(n, busbw, hop_latency)
    tail = ar * 4.0 * D_IN * H / (4.0 * P)  # the first encoder layer's bucket starts after the whole backward
    return fwd + max(bwd, ar - tail) + tail + adam_seconds(args), fwd, bwd, ar


def table(args, title, ranks, busbw, hop_latency, note):
    print("### " + title)
    print()
    print(note)
    print()
    print("| GPUs | strong: rows/GPU | fwd ms | bwd ms | all-reduce ms | step ms | samples/s | speed-up | efficiency "
          "| weak (4096/GPU): step ms | samples/s | efficiency |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    base = step(args, 1, B_GLOBAL, busbw, hop_latency)[0]
    for n in ranks:
        s, fwd, bwd, ar = step(args, n, B_GLOBAL / n, busbw, hop_latency)
        w = step(args, n, B_GLOBAL, busbw, hop_latency)[0]
        print("| %d | %d | %.1f | %.1f | %.1f | %.1f | %.0f | %.2f | %.0f%% | %.1f | %.0f | %.0f%% |" % (
            n, B_GLOBAL // n, 1e3 * fwd, 1e3 * bwd, 1e3 * ar, 1e3 * s, B_GLOBAL / s, base / s,
            100 * base / s / n, 1e3 * w, n * B_GLOBAL / w, 100 * base / w))
    print()


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--step-ms", type=float, help="measured single-H100 step time of D (the GPU bundle's)")
    ap.add_argument("--precision", choices=["fp32", "tf32"], default="fp32",
                    help="the estimate's GEMM peak: fp32 (cuvae's default precision) or tf32 (default fp32)")
    ap.add_argument("--peak-fraction", type=float, default=0.7,
                    help="fraction of the GEMM peak the estimate assumes (default 0.7)")
    ap.add_argument("--hbm-fraction", type=float, default=0.8,
                    help="fraction of HBM bandwidth for Adam and the elementwise kernels (default 0.8)")
    ap.add_argument("--nvlink-gbs", type=float, default=370.0, help="NVLink ring bus bandwidth, GB/s (370)")
    ap.add_argument("--ib-gbs", type=float, default=45.0, help="400 Gb/s InfiniBand bus bandwidth, GB/s (45)")
    args = ap.parse_args(argv)
    for name in ("peak_fraction", "hbm_fraction"):
        v = getattr(args, name)
        if not 0 < v <= 1:
            ap.error("--%s: %g is not in (0, 1]" % (name.replace("_", "-"), v))
    for name in ("nvlink_gbs", "ib_gbs", "step_ms"):
        v = getattr(args, name)
        if v is not None and v <= 0:
            ap.error("--%s: %g is not positive" % (name.replace("_", "-"), v))
    gemm, ew, src = single_gpu(args)
    if gemm <= 0:
        ap.error("--step-ms %g is not more than Adam and the elementwise part (%.1f ms)"
                 % (args.step_ms, 1e3 * (ew + adam_seconds(args))))
    print("D: %d parameters, gradient %.0f MB; single H100 step: GEMMs %.1f ms + elementwise %.1f ms + Adam %.1f ms "
          "= %.1f ms (%s; HBM at %.0f%% of 3.35 TB/s)" % (P, 4e-6 * P, 1e3 * gemm, 1e3 * ew, 1e3 * adam_seconds(args),
                                                         1e3 * (gemm + ew + adam_seconds(args)), src,
                                                         100 * args.hbm_fraction))
    print()
    nv = args.nvlink_gbs * 1e9
    ib = args.ib_gbs * 1e9
    table(args, "(a) 1-8 H100 in one node, NVLink4 (NCCL ring)", [1, 2, 4, 8], nv, 2e-6,
          "Ring bus bandwidth %.0f GB/s, 2 us per hop." % args.nvlink_gbs)
    table(args, "(b) 2-16 nodes, one H100 each, one 400 Gb/s InfiniBand NIC per node (NCCL ring)",
          [1, 2, 4, 8, 16], ib, 5e-6, "Ring bus bandwidth %.0f GB/s, 5 us per hop." % args.ib_gbs)
    # 8 GPUs per node, one NIC per node: the ring over all 8M GPUs crosses each node's NIC once per direction, so
    # every byte of the ring's 2 (N-1)/N x bytes passes that NIC: the NIC is the bottleneck, NVLink is not.
    print("### (c) 2-16 nodes x 8 H100, one 400 Gb/s NIC per node (the inter-node ring is the bottleneck)")
    print()
    print("The ring over all 8M GPUs sends 2 (N-1)/N x 991 MB through every node's NIC (NVLink inside the node is "
          "8x faster and not the limit). A DGX H100 has 8 NICs (one per GPU): NCCL then runs 8 rings, one per NIC, and "
          "the inter-node bandwidth is about 8x this, close to NVLink's; see (a) for that bound.")
    print()
    print("| nodes | GPUs | strong: rows/GPU | all-reduce ms | step ms | samples/s | speed-up over 1 GPU | efficiency "
          "| weak: step ms | samples/s | efficiency |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    base = step(args, 1, B_GLOBAL, ib, 5e-6)[0]
    for nodes in [2, 4, 8, 16]:
        n = 8 * nodes
        s, _, _, ar = step(args, n, B_GLOBAL / n, ib, 5e-6)
        w = step(args, n, B_GLOBAL, ib, 5e-6)[0]
        print("| %d | %d | %d | %.1f | %.1f | %.0f | %.2f | %.0f%% | %.1f | %.0f | %.0f%% |" % (
            nodes, n, B_GLOBAL // n, 1e3 * ar, 1e3 * s, B_GLOBAL / s, base / s, 100 * base / s / n, 1e3 * w,
            n * B_GLOBAL / w, 100 * base / w))
    print()
    print("Strong scaling keeps the global batch at 4096 (the same training); weak scaling gives each GPU 4096 rows "
          "(global batch 4096 N: a different training, learning rate to retune). Adam runs on every GPU over all "
          "parameters (%.1f ms); ZeRO-1 ([train] shard_optimizer) would divide it by N." % (1e3 * adam_seconds(args)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
